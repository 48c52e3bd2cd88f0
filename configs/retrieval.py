r"""Retrieval (LRA): do two AAN papers cite each other? Byte pairs, 4000 bytes per document.

`get_config("<variant>[,preset...]")`; the default is LRA's released setup: 4 layers, emb 128,
qkv 128, mlp 512, 4 heads, CLS pooling, dual encoder (one shared encoder; [u, v, u·v, u−v] →
MLP → 2 classes), sinusoidal positions, dropout 0.1/0.1, batch 32, 5k steps, rsqrt lr 0.05,
weight decay 0.1, except the warmup: 1000 steps, not LRA's 8000 (longer than its 5000 steps, so
its learning rate never finished warming up).

Data: LRA's release (https://storage.googleapis.com/long-range-arena/lra_release.gz) has
`lra_release/tsv_data/new_aan_pairs.{train,eval,test}.tsv`; point data.dir at tsv_data/ or its parent
(`attn-zoo data retrieval --check DIR`).
Full run (GPU): attn-zoo train --config configs/retrieval.py:dense --workdir runs/aan-dense
  Expected: ~57% test accuracy (LRA: Transformer 57.46, BigBird 59.29; re-tuned ~80).
Smoke (writes tiny stand-in TSVs itself, ~20 s on CPU):
    attn-zoo train --config configs/retrieval.py:local,smoke --workdir /tmp/aan-smoke
Presets: smoke; lra_warmup (LRA's 8000 warmup steps, to reproduce its numbers).
"""
import ml_collections

from attn_zoo import configs


def get_config(arg: str = "dense") -> ml_collections.ConfigDict:
    c, spec, presets = configs.start(arg)
    c.model = ml_collections.ConfigDict(dict(
        num_layers=4, emb_dim=128, qkv_dim=128, mlp_dim=512, num_heads=4, dropout=0.1,
        attention_dropout=0.1, positions="sinusoidal", pooling="cls", num_global_tokens=0,
        head="dual", layer_attention=(), dtype="float32"))
    c.data = ml_collections.ConfigDict(dict(task="retrieval", dir="data/aan", max_length=4000,
                                            limit=0, fixture=False))
    c.train = ml_collections.ConfigDict(dict(
        seed=0, batch_size=32, num_steps=5000, learning_rate=0.05, schedule="rsqrt",
        warmup_steps=1000, weight_decay=0.1, grad_clip=0.0, eval_every=500, log_every=100,
        checkpoint_every=500, keep_checkpoints=3, multihost=False))
    return configs.finish(c, spec, presets, PRESETS, "retrieval.py:" + arg)


def _smoke(c):
    c.model.update(num_layers=1, emb_dim=16, qkv_dim=16, mlp_dim=16, num_heads=2)
    c.data.update(dir="runs/data/aan-smoke", max_length=64, fixture=True)
    c.train.update(batch_size=4, num_steps=3, warmup_steps=1, eval_every=3, log_every=1, checkpoint_every=3)


PRESETS = {"smoke": _smoke, "lra_warmup": lambda c: c.train.update(warmup_steps=8000)}
