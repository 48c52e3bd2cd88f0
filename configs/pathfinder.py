r"""Pathfinder-32 (LRA, hard = contour length 14): are the two dots joined by one path? 1024 pixels.

`get_config("<variant>[,preset...]")`; the default is LRA's released setup: 4 layers, emb 32,
qkv 16, mlp 32, 4 heads, mean pooling, sinusoidal positions, dropout 0.2/0.1, batch 512, 62.4k
steps, lr 1e-3 with 312 warmup steps + cosine, weight decay 0, 200k images split 80/10/10.

Data (generated; ~0.03-0.06 s per image on one CPU core, so 200k take 2-3 h; fewer is fine):
    attn-zoo data pathfinder --resolution 32 --difficulty hard --out data/pathfinder32-hard
  or LRA's own files: --config.data.dir=lra_release/pathfinder32/curv_contour_length_14
Full run (GPU): attn-zoo train --config configs/pathfinder.py:dense --workdir runs/pf32-dense
  Expected: ~71% test accuracy (LRA: Transformer 71.40, Performer 77.05, Local 66.63).
Smoke (generates 100 images itself, ~20-40 s on 2 CPU cores):
    attn-zoo train --config configs/pathfinder.py:local,smoke --workdir /tmp/pf-smoke
Presets: smoke; hard|intermediate|baseline (difficulty); r64 (64x64, length 4096); cpu (1 layer,
emb 32, 2 heads, hard, 2000 generated images (~1 min), batch 8, 60 steps; dense ~20 s per run on 2
CPU cores; accuracy stays at chance 0.5: far too few steps to learn Pathfinder, it shows that every
variant trains at length 1024), used by experiments/lra_cpu.sh.
"""
import ml_collections

from attn_zoo import configs


def get_config(arg: str = "dense") -> ml_collections.ConfigDict:
    c, spec, presets = configs.start(arg)
    c.model = ml_collections.ConfigDict(dict(
        num_layers=4, emb_dim=32, qkv_dim=16, mlp_dim=32, num_heads=4, dropout=0.2,
        attention_dropout=0.1, positions="sinusoidal", pooling="mean", num_global_tokens=0,
        head="classifier", layer_attention=(), dtype="float32"))
    c.data = ml_collections.ConfigDict(dict(
        task="pathfinder", dir="data/pathfinder32-hard", resolution=32, difficulty="hard",
        max_length=1024, generate=False, limit=0))
    r = c.data.get_ref("resolution")
    c.data.max_length = r * r  # follows --config.data.resolution
    # Used only when data.generate is True and data.dir is empty.
    c.data.generator = ml_collections.ConfigDict(dict(count=200_000, seed=0, shard_size=2000))
    c.train = ml_collections.ConfigDict(dict(
        seed=0, batch_size=512, num_steps=62_400, learning_rate=1e-3, schedule="cosine",
        warmup_steps=312, weight_decay=0.0, grad_clip=0.0, eval_every=1000, log_every=100,
        checkpoint_every=1000, keep_checkpoints=3, multihost=False))
    return configs.finish(c, spec, presets, PRESETS, "pathfinder.py:" + arg)


def _smoke(c):
    c.model.update(num_layers=1, emb_dim=16, qkv_dim=16, mlp_dim=16, num_heads=2)
    c.data.update(dir="runs/data/pathfinder32-smoke", generate=True)
    c.data.generator.update(count=100, shard_size=50)
    c.train.update(batch_size=8, num_steps=3, warmup_steps=1, eval_every=3, log_every=1, checkpoint_every=3)


def _cpu(c):
    c.model.update(num_layers=1, emb_dim=32, qkv_dim=32, mlp_dim=32, num_heads=2, dropout=0.0,
                   attention_dropout=0.0)
    c.data.update(dir="runs/data/pathfinder32-cpu", difficulty="hard", generate=True)
    c.data.generator.update(count=2000, shard_size=1000)
    c.train.update(batch_size=8, num_steps=60, warmup_steps=6, eval_every=60, log_every=20,
                   checkpoint_every=60)
    configs.short_options(c, 1024)


def _difficulty(name):
    def apply(c):
        c.data.difficulty = name
        c.data.dir = f"data/pathfinder{c.data.resolution}-{name}"
    return apply


def _r64(c):
    c.data.update(resolution=64, dir=f"data/pathfinder64-{c.data.difficulty}")


PRESETS = {"smoke": _smoke, "hard": _difficulty("hard"), "intermediate": _difficulty("intermediate"),
           "baseline": _difficulty("baseline"), "r64": _r64, "cpu": _cpu}
