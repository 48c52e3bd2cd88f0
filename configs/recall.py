r"""Multi-query associative recall (synthetic, generated on the fly): a dense-vs-local separator.

P key-value pairs open the sequence; Q queries (keys seen before) sit at random later positions
among blank tokens; the model ('token' head, bidirectional) must output each query's value.
Accuracy is per query; chance is 1/num_values. A local window sees the pairs from almost no query,
so local attention must stay near chance while dense attention can solve it.

`get_config("<variant>[,preset...]")`; the default: length 1024, 8 pairs given as single
key-value tokens (`pair_tokens`; set it False for separate key and value tokens, which needs a
2-layer circuit and far more steps), 128 queries, 16 keys, 16 values (chance 1/16); 1 layer (enough
for given pairs), emb 64, qkv 32, 2 heads, dropout 0, batch 8, 1000 steps, lr 1e-2 warmup 50 +
cosine, clip 1.0: sized for a shared 2-core CPU. Every example is a pure function of
(data.seed, split, index): no files.
    attn-zoo train --config configs/recall.py:dense --workdir runs/recall-dense
  See experiments/results/recall.md for the measured curves (dense vs local vs linear on CPU).
Smoke (~15 s on CPU): attn-zoo train --config configs/recall.py:local,smoke --workdir /tmp/recall-smoke
Presets: smoke; short (length 256); cpu (length 256, 300 steps, 128/256 val/test examples; dense
~10 s per run on 2 CPU cores, test accuracy ~0.15 vs chance 1/16), used by experiments/lra_cpu.sh.
"""
import ml_collections

from attn_zoo import configs


def get_config(arg: str = "dense") -> ml_collections.ConfigDict:
    c, spec, presets = configs.start(arg)
    c.model = ml_collections.ConfigDict(dict(
        num_layers=1, emb_dim=64, qkv_dim=32, mlp_dim=128, num_heads=2, dropout=0.0,
        attention_dropout=0.0, positions="sinusoidal", pooling="mean", num_global_tokens=0,
        head="token", layer_attention=(), dtype="float32"))
    c.data = ml_collections.ConfigDict(dict(
        task="recall", max_length=1024, num_pairs=8, num_queries=128, num_keys=16, num_values=16,
        pair_tokens=True, seed=0, train_size=1_000_000, val_size=128, test_size=512))
    c.train = ml_collections.ConfigDict(dict(
        seed=0, batch_size=8, num_steps=1000, learning_rate=1e-2, schedule="cosine",
        warmup_steps=50, weight_decay=0.0, grad_clip=1.0, eval_every=50, log_every=25,
        checkpoint_every=500, keep_checkpoints=2, multihost=False))
    return configs.finish(c, spec, presets, PRESETS, "recall.py:" + arg)


def _smoke(c):
    c.model.update(num_layers=1, emb_dim=16, qkv_dim=16, mlp_dim=16, num_heads=2)
    c.data.update(max_length=64, num_pairs=4, num_queries=4, num_keys=8, num_values=8, val_size=16, test_size=16)
    c.train.update(batch_size=8, num_steps=3, warmup_steps=1, eval_every=3, log_every=1, checkpoint_every=3)


def _cpu(c):
    c.data.update(max_length=256, val_size=128, test_size=256)
    c.train.update(num_steps=300, eval_every=100, log_every=50, checkpoint_every=300)
    configs.short_options(c, 256)


def _main(c):
    """The README's main job: pairs at the start, queries beyond local's window (8). Every pattern
    variant is sized below the 128 tokens (configs.short_options), the windowed ones at local's 8:
    at their defaults longformer's window and bigbird's sliding blocks cover the whole row, and
    they compute full attention."""
    c.data.update(max_length=128, num_queries=32, val_size=256, test_size=512)
    c.train.update(batch_size=32, num_steps=800, eval_every=100, log_every=50, checkpoint_every=400)
    configs.short_options(c, 128)
    if c.attention.name in ("local", "longformer"):
        c.attention.update(window=8, block=16)
    if c.attention.name == "mixture":
        c.attention.update(groups="local(window=8)*1/2 + strided(stride=8)*rest")


PRESETS = {"main": _main, "smoke": _smoke, "short": lambda c: c.data.update(max_length=256), "cpu": _cpu}
