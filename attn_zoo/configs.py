"""Load `path.py:arg` config files and apply `--config.a.b=value` overrides (big_vision style).

    config = configs.load("configs/listops.py:local,smoke", ["--config.model.num_layers=1"])

The file's `get_config(arg)` returns a ConfigDict; overrides are parsed by the type of the field
they replace and the result is locked, so a mistyped name fails with the list of valid fields.
`check` then refuses, in one line naming the field, its value and what is allowed, any field out of
its range (FIELD_RULES), fields inconsistent with each other, and data settings the task's
generator cannot meet, before anything reads data, builds a model or writes a workdir.
"""
from __future__ import annotations

import importlib.util
import math
import os
from typing import Any, Callable, NamedTuple

import ml_collections

from attn_zoo.attention.core.options import parse_literal

PREFIX = "--config."


def start(arg: str):
    """Begin a task config from its `variant[,preset...]` argument: (config, spec, presets), with
    config.attention holding the variant's name and every option at its default."""
    from attn_zoo import attention

    variant, *presets = [a.strip() for a in arg.split(",")]
    spec = attention.get(variant)
    config = ml_collections.ConfigDict()
    config.attention = ml_collections.ConfigDict({"name": variant, **spec.defaults})
    return config, spec, presets


def finish(config, spec, presets, table, where: str, extra_tokens: int = 1):
    """Apply the named presets from `table`, and tie a variant's length-sized parameters (its
    `spec.max_length` option) to the data length plus `extra_tokens` (CLS) and global tokens."""
    for p in presets:
        if p not in table:
            raise ValueError(f"unknown preset {p!r} in '{where}'; presets: {', '.join(table)}")
        table[p](config)
    if spec.max_length is not None:
        config.attention[spec.max_length] = (config.data.get_ref("max_length") + extra_tokens
                                             + config.model.get_ref("num_global_tokens"))
    return config


# Pattern sizes for the CPU presets' sequences (64-256 tokens): the defaults' windows, blocks and
# chunks (64-128) would cover much or all of the sequence and make these variants compute dense
# attention (sinkhorn's one 64-token block, sparse_transformer's one 128-token block), or nothing
# (strided's stride 64 leaves a 64-token query only itself); linformer's 256 projected keys would
# outnumber the keys they compress.
SHORT_OPTIONS = {"local": {"window": 32}, "longformer": {"window": 32}, "bigbird": {"block": 16},
                 "linformer": {"proj_dim": 64},
                 "sinkhorn": {"block": 16}, "sparse_transformer": {"block": 16, "summary": 2},
                 "strided": {"stride": 8}, "reformer": {"chunk": 16, "n_buckets": 8},
                 "mixture": {"groups": "local(window=32)*1/2 + strided(stride=8)*rest"}}


def short_options(config, length: int) -> None:
    """Pattern options for the small CPU presets at `length` <= 256 tokens; longer inputs keep
    the defaults."""
    if length <= 256:
        config.attention.update(SHORT_OPTIONS.get(config.attention.name, {}))


def layer_attention(model_config, attn_config) -> list[dict]:
    """Every layer's attention config, {'name': ..., **options}, as the model builds them: the
    entries of model.layer_attention (a variant name, or a mapping with 'name' and options) or,
    when it is empty, `attn_config` for every layer. The one normalizer of per-layer attention."""
    def as_dict(a):
        a = a.to_dict() if isinstance(a, ml_collections.ConfigDict) else a
        return {"name": a} if isinstance(a, str) else dict(a)

    per_layer = [as_dict(a) for a in model_config.get("layer_attention", ())]
    return per_layer or [as_dict(attn_config)] * model_config.num_layers


class Rule(NamedTuple):
    """A field's valid values: `ok(value)`, and what is allowed in words (for the error)."""
    ok: Callable[[Any], bool]
    allowed: str


def _integer(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def one_of(*choices) -> Rule:
    return Rule(lambda v: v in choices, "one of " + ", ".join(map(repr, choices)))


SIZE = Rule(lambda v: _integer(v) and v >= 1, "an integer >= 1")
COUNT = Rule(lambda v: _integer(v) and v >= 0, "an integer >= 0")
RATE = Rule(lambda v: _number(v) and v > 0, "a finite number > 0")
NONNEGATIVE = Rule(lambda v: _number(v) and v >= 0, "a finite number >= 0")
DROPOUT = Rule(lambda v: _number(v) and 0 <= v < 1, "a number in [0, 1)")

HEADS = ("classifier", "dual", "token", "lm")  # model.head (models.transformer builds each)
POSITIONS = ("sinusoidal", "learned", "rope", "alibi", "nope")  # model.positions (models.positions)

# field -> rule, checked when present (task configs differ)
FIELD_RULES = {
    "model.num_layers": SIZE, "model.emb_dim": SIZE, "model.qkv_dim": SIZE, "model.mlp_dim": SIZE,
    "model.num_heads": SIZE, "model.dropout": DROPOUT, "model.attention_dropout": DROPOUT,
    "model.num_global_tokens": COUNT, "model.short_conv": COUNT,
    "model.head": one_of(*HEADS), "model.pooling": one_of("cls", "mean"),
    "model.positions": one_of(*POSITIONS),
    "model.num_kv_heads": Rule(lambda v: v is None or (_integer(v) and v >= 0),
                               "an integer >= 0 (0 or None: num_heads) that divides num_heads"),
    "model.rope_base": RATE, "model.rope_fraction": Rule(lambda v: _number(v) and 0 < v <= 1, "a number in (0, 1]"),
    "data.pack": Rule(lambda v: isinstance(v, bool), "True or False"),  # bytelm
    "data.isolate": Rule(lambda v: isinstance(v, bool), "True or False"),
    "train.num_steps": SIZE, "train.batch_size": SIZE, "train.eval_every": SIZE,
    "train.log_every": SIZE, "train.checkpoint_every": SIZE, "train.keep_checkpoints": SIZE,
    "train.learning_rate": RATE, "train.warmup_steps": COUNT, "train.weight_decay": NONNEGATIVE,
    "train.grad_clip": NONNEGATIVE, "train.schedule": one_of("rsqrt", "cosine", "constant"),  # steps.schedule
    "data.max_length": SIZE, "data.limit": COUNT,
    "data.train_size": SIZE, "data.val_size": SIZE, "data.test_size": SIZE,  # generated tasks
    "data.num_kv_pairs": SIZE, "data.vocab_size": SIZE, "data.power_a": RATE,  # mqar
    "data.num_pairs": SIZE, "data.num_queries": SIZE, "data.num_keys": SIZE, "data.num_values": SIZE,
    "data.num_tokens": SIZE,  # recall, copy
    "data.generator.train": SIZE, "data.generator.val": SIZE, "data.generator.test": SIZE,  # listops
    "data.generator.min_length": COUNT, "data.generator.max_depth": SIZE,
    "data.generator.max_args": Rule(lambda v: _integer(v) and v >= 2, "an integer >= 2"),
    "data.generator.count": SIZE, "data.generator.shard_size": SIZE,  # pathfinder
}


def _heads_divide_qkv(config):
    m = config.model
    if m.qkv_dim % m.num_heads:
        near = sorted({m.qkv_dim // m.num_heads * m.num_heads or m.num_heads,
                       -(-m.qkv_dim // m.num_heads) * m.num_heads})
        raise ValueError(f"config.model.qkv_dim={m.qkv_dim} is not allowed with config.model.num_heads="
                         f"{m.num_heads}; allowed: a multiple of num_heads (e.g. {' or '.join(map(str, near))})")


def _kv_heads_divide_heads(config):
    m = config.model
    kv = m.get("num_kv_heads", 0) or m.num_heads
    if m.num_heads % kv:
        raise ValueError(f"config.model.num_kv_heads={kv} is not allowed with config.model.num_heads="
                         f"{m.num_heads}; allowed: a divisor of num_heads (0: num_heads)")


def _variants_support_the_model(config):
    """positions='alibi' and isolated packed rows (data.isolate) need every layer's variant to
    take alibi_slopes and segment_ids (spec.alibi, spec.segments)."""
    from attn_zoo import attention
    from attn_zoo.attention.core import contract, registry
    needs = [(feature, field, value) for feature, field, value, on in (
        ("alibi", "model.positions", "'alibi'", config.model.get("positions") == "alibi"),
        ("segments", "data.isolate", "True", "data" in config and config.data.get("pack", False)
         and config.data.get("isolate", False))) if on]
    for a in layer_attention(config.model, config.attention) if needs else ():
        spec = attention.get(a["name"])
        for feature, field, value in needs:
            if not getattr(spec, feature):
                raise ValueError(f"config.{field}={value} is not allowed with attention '{spec.name}'; allowed: "
                                 f"a variant that takes {contract.FEATURES[feature]}: "
                                 f"{', '.join(registry.supporting(feature))}")


def _one_attention_per_layer(config):
    per_layer = config.model.get("layer_attention", ())
    if per_layer and len(per_layer) != config.model.num_layers:
        raise ValueError(f"config.model.layer_attention has {len(per_layer)} entries for config.model."
                         f"num_layers={config.model.num_layers}; allowed: one per layer, or none")


def _listops_generator(config):
    d, g = config.data, config.data.generator
    if not d.get("generate", False):  # the generator runs only for data.generate
        return
    from attn_zoo.data import listops
    listops.check_generator(
        min_length=g.min_length, max_length=d.max_length, max_depth=g.max_depth, max_args=g.max_args,
        count=g.train + g.val + g.test,
        names={"min_length": "config.data.generator.min_length", "max_length": "config.data.max_length",
               "max_depth": "config.data.generator.max_depth", "max_args": "config.data.generator.max_args",
               "count": "config.data.generator.train + val + test"})


def _mqar(config):
    from attn_zoo.data import mqar
    d = config.data
    mqar.check(length=d.max_length, num_kv_pairs=d.num_kv_pairs, vocab_size=d.vocab_size,
               power_a=d.get("power_a", 0.01))


def _recall(config):
    import numpy as np
    from attn_zoo.data import synthetic
    d = config.data
    synthetic.recall_example(np.random.default_rng(0), length=d.max_length, num_pairs=d.num_pairs,
                             num_queries=d.num_queries, num_keys=d.num_keys, num_values=d.num_values,
                             pair_tokens=d.get("pair_tokens", False))


def _copy(config):
    import numpy as np
    from attn_zoo.data import synthetic
    d = config.data
    synthetic.copy_example(np.random.default_rng(0), length=d.max_length, num_tokens=d.num_tokens,
                           num_values=d.num_values)


# checks between fields: (the sections they need, function raising a one-line ValueError)
CROSS_CHECKS = [(("model",), _heads_divide_qkv), (("model",), _kv_heads_divide_heads),
                (("model",), _one_attention_per_layer), (("model", "attention"), _variants_support_the_model)]
# data.task -> the consistency of its data settings (the generators' own rules)
TASK_CHECKS = {"listops": _listops_generator, "mqar": _mqar, "recall": _recall, "copy": _copy}


def check_fields(config) -> None:
    """Refuse, in one line naming the field, its value and what is allowed, a field outside its
    valid range (FIELD_RULES; fields a config lacks are skipped), fields inconsistent with each
    other (CROSS_CHECKS), or data settings the task's generator cannot meet (TASK_CHECKS)."""
    for dotted, rule in FIELD_RULES.items():
        *parents, leaf = dotted.split(".")
        node = config
        for part in parents:
            node = node.get(part) if isinstance(node, ml_collections.ConfigDict) else None
        if not isinstance(node, ml_collections.ConfigDict) or leaf not in node:
            continue
        value = node[leaf]
        if not rule.ok(value):
            raise ValueError(f"config.{dotted}={value!r} is not allowed; allowed: {rule.allowed}")
    for sections, fn in CROSS_CHECKS:
        if all(s in config for s in sections):
            fn(config)
    if "data" in config and config.data.get("task") in TASK_CHECKS:
        TASK_CHECKS[config.data.task](config)


def check(config) -> None:
    """Refuse, in one line, a config field outside its valid range or inconsistent with others
    (`check_fields`), and attention options that their variants' declarations do not allow (type,
    range, unknown name) in config.attention and every per-layer entry. Called by `load`, and by
    the trainer before it touches data, model or workdir."""
    from attn_zoo import attention

    check_fields(config)
    if "attention" not in config:
        return
    entries = [("config.attention", config.attention.to_dict())]
    if "model" in config and config.model.get("layer_attention"):
        entries += [(f"config.model.layer_attention[{i}]", a)
                    for i, a in enumerate(layer_attention(config.model, config.attention))]
    for where, entry in entries:
        opts = dict(entry)
        if "name" not in opts:
            raise ValueError(f"{where} has no 'name'; give a registered variant: {', '.join(attention.names())}")
        attention.get(opts.pop("name")).options(**opts)


def load(spec: str, overrides=()) -> ml_collections.ConfigDict:
    """`path.py[:arg]` -> locked ConfigDict with `overrides` (argv-style strings) applied."""
    path, _, arg = spec.partition(":")
    if not os.path.isfile(path):
        raise FileNotFoundError(f"config file not found: {path} (expected path/to/file.py[:arg])")
    if not path.endswith(".py"):
        raise ValueError(f"config file {path} is not a Python file (expected path/to/file.py[:arg], "
                         f"e.g. configs/listops.py:dense,smoke)")
    module_spec = importlib.util.spec_from_file_location(f"attn_zoo_config_{abs(hash(path))}", path)
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)
    if not callable(getattr(module, "get_config", None)):
        raise ValueError(f"config file {path} defines no get_config(arg) function")
    config = module.get_config(arg) if arg else module.get_config()
    if not isinstance(config, ml_collections.ConfigDict):
        raise ValueError(f"{path}: get_config() returned a {type(config).__name__}, not an ml_collections.ConfigDict")
    apply_overrides(config, overrides)
    config.lock()
    check(config)
    return config


def apply_overrides(config, overrides) -> None:
    """Apply `--config.a.b=v` / `--config.a.b v` strings in order; raise on anything else."""
    items, args = [], list(overrides)
    while args:
        a = args.pop(0)
        if not a.startswith(PREFIX):
            raise ValueError(f"unrecognized argument {a!r}; overrides look like --config.train.num_steps=100")
        name, eq, value = a[len(PREFIX):].partition("=")
        if not eq:
            if not args:
                raise ValueError(f"override {a} has no value")
            value = args.pop(0)
        items.append((name, value))
    for name, value in items:
        set_field(config, name, value)


def set_field(config, dotted: str, text: str) -> None:
    """Set `config.<dotted>` from text, parsed by the existing field's type."""
    if dotted == "attention.name":
        raise ValueError("the attention variant comes from the config argument, not an override: "
                         "use --config path.py:<variant>[,presets]")
    *parents, leaf = dotted.split(".")
    node, seen = config, "config"
    for part in parents:
        if part not in node or not isinstance(node[part], ml_collections.ConfigDict):
            raise KeyError(f"unknown config section '{seen}.{part}'; {seen} has: {_fields(node)}")
        node, seen = node[part], f"{seen}.{part}"
    if leaf not in node:
        raise KeyError(f"unknown config field '{seen}.{leaf}'; {seen} has: {_fields(node)}")
    old = node[leaf]
    if isinstance(old, ml_collections.ConfigDict):
        raise ValueError(f"'{seen}.{leaf}' is a section; override one of its fields: {_fields(old)}")
    node[leaf] = parse_value(text, old, f"{seen}.{leaf}")


def parse_value(text: str, old, name: str = "value"):
    """Text -> a value of old's type (bool, int, float, str, tuple/list; None: a Python literal)."""
    try:
        if isinstance(old, bool):
            low = text.strip().lower()
            if low not in ("true", "false", "1", "0", "yes", "no"):
                raise ValueError(text)
            return low in ("true", "1", "yes")
        if isinstance(old, int):
            return int(text)
        if isinstance(old, float):
            return float(text)
        if isinstance(old, str):
            return text
        if isinstance(old, (tuple, list)):
            value = parse_literal(text) if text.strip() else ()
            if isinstance(value, str):  # 'local,dense': a comma-separated list of words
                value = tuple(t.strip() for t in value.split(","))
            return type(old)(value if isinstance(value, (tuple, list)) else (value,))
        return parse_literal(text)
    except ValueError:
        kind = type(old).__name__
        raise ValueError(f"cannot parse {text!r} for {name} (a{'n' * (kind[0] in 'aeiou')} {kind}, "
                         f"currently {old!r})") from None


def _fields(node) -> str:
    return ", ".join(sorted(node.keys()))
