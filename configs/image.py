r"""Image (LRA): CIFAR-10 as 1024 grayscale pixel tokens, 10 classes, 45k/5k/10k.

`get_config("<variant>[,preset...]")`; the default is LRA's released setup: 1 layer, emb 128,
qkv 64, mlp 128, 8 heads, CLS pooling, learned positions, dropout 0.3/0.2, batch 256, 35k steps,
lr 5e-4 with 175 warmup steps + cosine, weight decay 0. Every pixel is a token (mask all True):
LRA's `token > 0` mask dropped black pixels.

Data: unpack https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz so that
`data/cifar-10-batches-py/` exists (`attn-zoo data image --check data`).
Full run (GPU): attn-zoo train --config configs/image.py:dense --workdir runs/image-dense
  Expected: ~42% test accuracy (LRA: Transformer 42.44, Local 41.46, Performer 42.77).
Smoke (writes tiny stand-in pickles itself, ~20 s on CPU):
    attn-zoo train --config configs/image.py:local,smoke --workdir /tmp/image-smoke
"""
import ml_collections

from attn_zoo import configs


def get_config(arg: str = "dense") -> ml_collections.ConfigDict:
    c, spec, presets = configs.start(arg)
    c.model = ml_collections.ConfigDict(dict(
        num_layers=1, emb_dim=128, qkv_dim=64, mlp_dim=128, num_heads=8, dropout=0.3,
        attention_dropout=0.2, positions="learned", pooling="cls", num_global_tokens=0,
        head="classifier", layer_attention=(), dtype="float32"))
    c.data = ml_collections.ConfigDict(dict(task="image", dir="data", max_length=1024, val_size=5000,
                                            fixture=False))
    c.train = ml_collections.ConfigDict(dict(
        seed=0, batch_size=256, num_steps=35_000, learning_rate=5e-4, schedule="cosine",
        warmup_steps=175, weight_decay=0.0, grad_clip=0.0, eval_every=1000, log_every=100,
        checkpoint_every=1000, keep_checkpoints=3, multihost=False))
    return configs.finish(c, spec, presets, PRESETS, "image.py:" + arg)


def _smoke(c):
    c.model.update(num_layers=1, emb_dim=16, qkv_dim=16, mlp_dim=16, num_heads=2)
    c.data.update(dir="runs/data/cifar-smoke", val_size=8, fixture=True)
    c.train.update(batch_size=8, num_steps=3, warmup_steps=1, eval_every=3, log_every=1, checkpoint_every=3)


PRESETS = {"smoke": _smoke}
