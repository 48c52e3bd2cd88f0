r"""Zoology's multi-query associative recall (MQAR): causal recall of N key-value pairs.

The context k1 v1 ... kN vN, then every key queried once at a power-law gap, among 0s or random
tokens (attn_zoo/data/mqar.py has the exact definition); the model ('lm' head: causal
attention, logits over the V tokens) is scored only at the N queries, on their values. Accuracy
is per query; a guess among the V/2 values scores 2/V. Causal variants only: a variant without
causal support is refused here (it is skipped for this task; the bidirectional `recall` task,
configs/recall.py, is the one for it).

`get_config("<variant>[,preset...]")`; the default is Zoology's figure-2 cell (L, N) = (64, 4),
V = 8192, d_model 64, 2 layers, 1 head, 100k train / 1k val / 3k test examples, batch 256, lr 1e-3
(Zoology sweeps it over logspace(-4, -2, 4)), AdamW weight decay 0.1, cosine, 64 epochs (25k
steps); not run here (no measured time or accuracy). Like Zoology's models, every block starts
with a short causal convolution (model.short_conv = 3, depthwise; Zoology's BaseConv is gated);
unlike them, every block keeps a small MLP (mlp_dim = d_model).
    attn-zoo train --config configs/mqar.py:blockwise --workdir runs/mqar-blockwise
Presets (combine them; later ones win, e.g. `blockwise,cpu,L128,d128`):
  L64, L128, L256, L512   (L, N) = (64, 4), (128, 8), (256, 16), (512, 64): Zoology's grid;
  d64, d128, d256         d_model (emb = qkv = mlp = d);
  smoke                   1 layer, d 16, L 32, V 64, 3 steps: ~6 s for the command below;
  cpu                     V 256, batch 64, 1500 steps, lr 3e-3 (warmup 50 + cosine), 256 val / 512
                          test examples, the short pattern options (configs.short_options): sized
                          for a shared 2-core CPU (experiments/zoo_cpu.sh sweeps lr 3e-3 and 1e-2).
Smoke: attn-zoo train --config configs/mqar.py:blockwise,smoke --workdir /tmp/mqar-smoke
CPU:   attn-zoo train --config configs/mqar.py:blockwise,cpu --workdir /tmp/mqar-cpu
  What the preset needs (experiments/results/zoo-cpu/calibration.md has the runs): at batch 32 the
  lookup never formed within 2000 steps (val stuck at 1/N); at batch 64 it forms between steps 500
  and 800, while the learning rate is still high (a 600-step cosine run stays at 1/N); without the
  short convolution N = 8 stayed at 1/N for 2000 steps at L = 64 and L = 128. Measured cost
  (blockwise, 2 shared cores): L64 d64 ~26-40 steps/s unloaded, ~10 under load (180 s per run).
Every example is a pure function of (data.seed, split, index): no files.
"""
import ml_collections

from attn_zoo import attention, configs


def get_config(arg: str = "dense") -> ml_collections.ConfigDict:
    c, spec, presets = configs.start(arg)
    if not spec.supports_causal:
        causal = [n for n in attention.names() if attention.get(n).supports_causal]
        raise ValueError(f"mqar is causal (Zoology's MQAR), but variant {spec.name!r} does not support "
                         f"causal=True, so it is skipped for this task; the bidirectional recall task "
                         f"(configs/recall.py:{spec.name}) exists for it. "
                         f"Causal variants: {', '.join(causal)}")
    c.model = ml_collections.ConfigDict(dict(
        num_layers=2, emb_dim=64, qkv_dim=64, mlp_dim=64, num_heads=1, dropout=0.0,
        attention_dropout=0.0, positions="sinusoidal", pooling="mean", num_global_tokens=0,
        head="lm", layer_attention=(), dtype="float32", short_conv=3))
    c.data = ml_collections.ConfigDict(dict(
        task="mqar", max_length=64, num_kv_pairs=4, vocab_size=8192, power_a=0.01,
        random_non_queries=True, seed=0, train_size=100_000, val_size=1_000, test_size=3_000))
    c.train = ml_collections.ConfigDict(dict(
        seed=0, batch_size=256, num_steps=25_000, learning_rate=1e-3, schedule="cosine",
        warmup_steps=0, weight_decay=0.1, grad_clip=1.0, eval_every=1000, log_every=100,
        checkpoint_every=1000, keep_checkpoints=2, multihost=False))
    return configs.finish(c, spec, presets, PRESETS, "mqar.py:" + arg, extra_tokens=0)


def _grid(length, pairs):
    return lambda c: c.data.update(max_length=length, num_kv_pairs=pairs)


def _width(d):
    return lambda c: c.model.update(emb_dim=d, qkv_dim=d, mlp_dim=d)


def _smoke(c):
    c.model.update(num_layers=1, emb_dim=16, qkv_dim=16, mlp_dim=16, num_heads=1)
    c.data.update(max_length=32, num_kv_pairs=4, vocab_size=64, val_size=16, test_size=16)
    c.train.update(batch_size=8, num_steps=3, warmup_steps=1, eval_every=3, log_every=1, checkpoint_every=3)


def _cpu(c):
    c.data.update(vocab_size=256, val_size=256, test_size=512)
    c.train.update(batch_size=64, num_steps=1500, learning_rate=3e-3, warmup_steps=50, eval_every=250,
                   log_every=50, checkpoint_every=500)
    configs.short_options(c, 256)


PRESETS = {"L64": _grid(64, 4), "L128": _grid(128, 8), "L256": _grid(256, 16), "L512": _grid(512, 64),
           "d64": _width(64), "d128": _width(128), "d256": _width(256), "smoke": _smoke, "cpu": _cpu}
