r"""Text (LRA): IMDb sentiment from raw bytes, length 1000 as released (the paper's 4000: `paper`).

`get_config("<variant>[,preset...]")`; the default is LRA's released setup: 4 layers, emb 256,
qkv 256, mlp 1024, 4 heads, CLS pooling, sinusoidal positions, dropout 0.1/0.1, batch 32, 20k
steps, lr 0.05·min(1,t/8000)·rsqrt(max(t,8000)), weight decay 0.1, validation = test set (LRA).

Data: unpack https://ai.stanford.edu/~amaas/data/sentiment/aclImdb_v1.tar.gz so that
`data/aclImdb/{train,test}/{pos,neg}/*.txt` exist (`attn-zoo data text --check data/aclImdb`).
Full run (GPU): attn-zoo train --config configs/text.py:dense --workdir runs/text-dense
  Expected: ~64% test accuracy (LRA: Transformer 64.27, Local 52.98, Performer 65.40).
Smoke (writes a tiny stand-in aclImdb/ of random reviews itself, ~20 s on CPU):
    attn-zoo train --config configs/text.py:local,smoke --workdir /tmp/text-smoke
Presets: smoke; paper (length 4000); holdout (validate on 2,500 held-out training reviews).
"""
import ml_collections

from attn_zoo import configs


def get_config(arg: str = "dense") -> ml_collections.ConfigDict:
    c, spec, presets = configs.start(arg)
    c.model = ml_collections.ConfigDict(dict(
        num_layers=4, emb_dim=256, qkv_dim=256, mlp_dim=1024, num_heads=4, dropout=0.1,
        attention_dropout=0.1, positions="sinusoidal", pooling="cls", num_global_tokens=0,
        head="classifier", layer_attention=(), dtype="float32"))
    c.data = ml_collections.ConfigDict(dict(task="text", dir="data/aclImdb", max_length=1000,
                                            validation="test", holdout=2500, seed=0, fixture=False))
    c.train = ml_collections.ConfigDict(dict(
        seed=0, batch_size=32, num_steps=20_000, learning_rate=0.05, schedule="rsqrt",
        warmup_steps=8000, weight_decay=0.1, grad_clip=0.0, eval_every=1000, log_every=100,
        checkpoint_every=1000, keep_checkpoints=3, multihost=False))
    return configs.finish(c, spec, presets, PRESETS, "text.py:" + arg)


def _smoke(c):
    c.model.update(num_layers=1, emb_dim=16, qkv_dim=16, mlp_dim=16, num_heads=2)
    c.data.update(dir="runs/data/text-smoke", max_length=128, fixture=True)
    c.train.update(batch_size=4, num_steps=3, warmup_steps=1, eval_every=3, log_every=1, checkpoint_every=3)


PRESETS = {"smoke": _smoke, "paper": lambda c: c.data.update(max_length=4000),
           "holdout": lambda c: c.data.update(validation="holdout")}
