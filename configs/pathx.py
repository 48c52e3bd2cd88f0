r"""Path-X (LRA): Pathfinder at 128x128 (hard), a sequence of 16,384 pixels.

`get_config("<variant>[,preset...]")`; the default is LRA's released setup: 1 layer, emb 32,
qkv 16, mlp 32, 2 heads, mean pooling, learned positions, dropout 0.1/0.1, batch 64, 500k
steps, lr 1e-3 with 2500 warmup steps + cosine, gradient clipping 1.0, weight decay 0.

Data: attn-zoo data pathfinder --resolution 128 --difficulty hard --out data/pathfinder128-hard
  (~0.1-0.2 s per image per CPU core) or LRA's lra_release/pathfinder128/curv_contour_length_14.
Full run (GPU): attn-zoo train --config configs/pathx.py:performer --workdir runs/pathx-performer
  Expected: every LRA model FAILED (chance, 50%); a real pass needs far more than the LRA models.
Smoke: attn-zoo train --config configs/pathx.py:local,smoke --workdir /tmp/px-smoke
  The smoke preset uses 32x32 images (length 1024, same model and schedule kind): a 16k-token
  dense step does not fit a CPU smoke budget. Use `smoke128` (60 images, ~1-3 min on CPU with a
  linear-cost variant) to run the real length end to end.
"""
import ml_collections

from attn_zoo import configs


def get_config(arg: str = "dense") -> ml_collections.ConfigDict:
    c, spec, presets = configs.start(arg)
    c.model = ml_collections.ConfigDict(dict(
        num_layers=1, emb_dim=32, qkv_dim=16, mlp_dim=32, num_heads=2, dropout=0.1,
        attention_dropout=0.1, positions="learned", pooling="mean", num_global_tokens=0,
        head="classifier", layer_attention=(), dtype="float32"))
    c.data = ml_collections.ConfigDict(dict(
        task="pathfinder", dir="data/pathfinder128-hard", resolution=128, difficulty="hard",
        max_length=16384, generate=False, limit=0))
    r = c.data.get_ref("resolution")
    c.data.max_length = r * r  # follows --config.data.resolution
    c.data.generator = ml_collections.ConfigDict(dict(count=200_000, seed=0, shard_size=2000))
    c.train = ml_collections.ConfigDict(dict(
        seed=0, batch_size=64, num_steps=500_000, learning_rate=1e-3, schedule="cosine",
        warmup_steps=2500, weight_decay=0.0, grad_clip=1.0, eval_every=5000, log_every=500,
        checkpoint_every=5000, keep_checkpoints=3, multihost=False))
    return configs.finish(c, spec, presets, PRESETS, "pathx.py:" + arg)


def _smoke(c, resolution=32, count=100):
    c.model.update(emb_dim=16, qkv_dim=16, mlp_dim=16, num_heads=2)
    c.data.update(dir=f"runs/data/pathfinder{resolution}-smoke", resolution=resolution, generate=True)
    c.data.generator.update(count=count, shard_size=50)
    c.train.update(batch_size=8, num_steps=3, warmup_steps=1, eval_every=3, log_every=1, checkpoint_every=3)


PRESETS = {"smoke": _smoke, "smoke128": lambda c: _smoke(c, 128, 60)}
