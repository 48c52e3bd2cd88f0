r"""Selective copy (synthetic, generated on the fly): copy the scattered data tokens, in order.

M data tokens sit at random positions among blanks in the first L - M positions; the last M
positions hold a copy marker and must output the data tokens in order ('token' head,
bidirectional). Accuracy is per copied token; chance is 1/num_values.

`get_config("<variant>[,preset...]")`; the default: length 1024, 16 tokens, 16 values; 2 layers,
emb 64, 2 heads, dropout 0, batch 32, 3000 steps, lr 2e-3 warmup 200 + cosine. No files.
    attn-zoo train --config configs/copy.py:dense --workdir runs/copy-dense
Smoke (~15 s on CPU): attn-zoo train --config configs/copy.py:local,smoke --workdir /tmp/copy-smoke
CPU preset (the suite's): 128 tokens, 8 data tokens among 16 values, 3 layers, 6000 steps;
~10 min a run on one core of the shared 2-core machine (calibration: zoo-cpu/calibration.md).
"""
import ml_collections

from attn_zoo import configs


def get_config(arg: str = "dense") -> ml_collections.ConfigDict:
    c, spec, presets = configs.start(arg)
    c.model = ml_collections.ConfigDict(dict(
        num_layers=2, emb_dim=64, qkv_dim=64, mlp_dim=128, num_heads=2, dropout=0.0,
        attention_dropout=0.0, positions="sinusoidal", pooling="mean", num_global_tokens=0,
        head="token", layer_attention=(), dtype="float32"))
    c.data = ml_collections.ConfigDict(dict(
        task="copy", max_length=1024, num_tokens=16, num_values=16, seed=0,
        train_size=1_000_000, val_size=256, test_size=1024))
    c.train = ml_collections.ConfigDict(dict(
        seed=0, batch_size=32, num_steps=3000, learning_rate=2e-3, schedule="cosine",
        warmup_steps=200, weight_decay=0.0, grad_clip=1.0, eval_every=250, log_every=50,
        checkpoint_every=500, keep_checkpoints=2, multihost=False))
    return configs.finish(c, spec, presets, PRESETS, "copy.py:" + arg)


def _smoke(c):
    c.model.update(num_layers=1, emb_dim=16, qkv_dim=16, mlp_dim=16, num_heads=2)
    c.data.update(max_length=64, num_tokens=4, num_values=8, val_size=16, test_size=16)
    c.train.update(batch_size=8, num_steps=3, warmup_steps=1, eval_every=3, log_every=1, checkpoint_every=3)


def _cpu(c):  # sized for a shared 2-core CPU: 128 tokens, 8 data tokens among 16 values
    # 2 layers left one seed in three at 0.75-0.82 after 3000 and 6000 steps; 3 layers and 6000
    # steps solved that seed (zoo-cpu/calibration.md)
    c.model.update(num_layers=3)
    c.data.update(max_length=128, num_tokens=8, num_values=16, val_size=256, test_size=512)
    c.train.update(num_steps=6000, warmup_steps=100, eval_every=250, checkpoint_every=500)
    configs.short_options(c, 128)


PRESETS = {"smoke": _smoke, "cpu": _cpu}
