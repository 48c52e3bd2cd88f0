r"""Byte-level language modelling (causal variants only): bits per byte on a directory of text.

Reads every text file under data.dir ('' = the Python standard library's sources, present on
every machine), split into train/val/test by a hash of each file's path (5% / 5%), and packs each
split's files, each ended by byte 0, into rows of max_length bytes (data.pack=True; a row's files
see each other, so every causal variant fits). Reported: loss in nats per predicted byte and test
bits per byte (= loss/ln 2).
A variant without causal support is refused here, before any data is read.

`get_config("<variant>[,preset...]")`; the default: 4 layers, emb 256, qkv 256, mlp 1024,
4 heads, length 1024, dropout 0.1, batch 32, 20k steps, lr 1e-3 warmup 1000 + cosine, weight
decay 0.1, up to 64 MB of training text.
    attn-zoo train --config configs/bytelm.py:dense --workdir runs/bytelm-dense
Smoke (~20 s on CPU): attn-zoo train --config configs/bytelm.py:local,smoke --workdir /tmp/lm-smoke
Presets: smoke; cpu (1 layer, emb 64, 2 heads, length 256, 2 MB of training text, 64 kB val/test,
batch 8, 300 steps, lr 3e-3; dense ~11 s per run on 2 CPU cores, next-byte test accuracy ~0.23 vs
0.20 for the most frequent byte), used by experiments/lra_cpu.sh; isolated (data.isolate=True:
segment_ids keep a row's files apart, no target scored across files; for the variants that take
segment_ids); windowed (data.pack=False: each file cut into its own windows, the last one padded);
rope (model.positions='rope', adding model.rope_base and
model.rope_fraction to override); gqa (model.num_kv_heads=1: one key/value head; override it
for grouped heads). Other positions: --config.model.positions=alibi|nope|sinusoidal|learned.
The rope and gqa presets add fields, so configs without them (the suites' records) keep their keys.
"""
import ml_collections

from attn_zoo import attention, configs


def get_config(arg: str = "dense") -> ml_collections.ConfigDict:
    c, spec, presets = configs.start(arg)
    if not spec.supports_causal:
        causal = [n for n in attention.names() if attention.get(n).supports_causal]
        raise ValueError(f"bytelm is causal language modelling, but variant {spec.name!r} does not "
                         f"support causal=True; causal variants: {', '.join(causal)}")
    c.model = ml_collections.ConfigDict(dict(
        num_layers=4, emb_dim=256, qkv_dim=256, mlp_dim=1024, num_heads=4, dropout=0.1,
        attention_dropout=0.1, positions="sinusoidal", pooling="mean", num_global_tokens=0,
        head="lm", layer_attention=(), dtype="float32"))
    c.data = ml_collections.ConfigDict(dict(
        task="bytelm", dir="", max_length=1024, val_percent=5, test_percent=5,
        max_train_bytes=64_000_000, max_eval_bytes=2_000_000, pack=True, isolate=False))
    c.train = ml_collections.ConfigDict(dict(
        seed=0, batch_size=32, num_steps=20_000, learning_rate=1e-3, schedule="cosine",
        warmup_steps=1000, weight_decay=0.1, grad_clip=1.0, eval_every=1000, log_every=100,
        checkpoint_every=1000, keep_checkpoints=3, multihost=False))
    return configs.finish(c, spec, presets, PRESETS, "bytelm.py:" + arg, extra_tokens=0)


def _smoke(c):
    c.model.update(num_layers=1, emb_dim=16, qkv_dim=16, mlp_dim=16, num_heads=2)
    c.data.update(max_length=64, max_train_bytes=100_000, max_eval_bytes=4_000)
    c.train.update(batch_size=8, num_steps=3, warmup_steps=1, eval_every=3, log_every=1, checkpoint_every=3)


def _cpu(c):
    c.model.update(num_layers=1, emb_dim=64, qkv_dim=64, mlp_dim=128, num_heads=2, dropout=0.0,
                   attention_dropout=0.0)
    c.data.update(max_length=256, max_train_bytes=2_000_000, max_eval_bytes=64_000)
    c.train.update(batch_size=8, num_steps=300, learning_rate=3e-3, warmup_steps=30, eval_every=100,
                   log_every=50, checkpoint_every=300)
    configs.short_options(c, 256)


def _isolated(c):
    c.data.isolate = True


def _windowed(c):
    c.data.pack = False


def _rope(c):
    c.model.positions, c.model.rope_base, c.model.rope_fraction = "rope", 10000.0, 1.0


def _gqa(c):
    c.model.num_kv_heads = 1


PRESETS = {"smoke": _smoke, "cpu": _cpu, "isolated": _isolated, "windowed": _windowed, "rope": _rope, "gqa": _gqa}
