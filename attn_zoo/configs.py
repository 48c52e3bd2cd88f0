"""Load `path.py:arg` config files and apply `--config.a.b=value` overrides (big_vision style).

    config = configs.load("configs/listops.py:local,smoke", ["--config.model.num_layers=1"])

The file's `get_config(arg)` returns a ConfigDict; overrides are parsed by the type of the field
they replace and the result is locked, so a mistyped name fails with the list of valid fields.
"""
from __future__ import annotations

import importlib.util
import os

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


# Pattern sizes for the CPU presets' 256-token sequences: the defaults' windows and blocks would
# cover the whole sequence and make these variants compute dense attention.
SHORT_OPTIONS = {"local": {"window": 32}, "longformer": {"window": 32}, "bigbird": {"block": 16},
                 "mixture": {"groups": "local(window=32)*1/2 + strided(stride=32)*rest"}}


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


def check(config) -> None:
    """Refuse, in one line, attention options that their variants' declarations do not allow
    (type, range, unknown name) in config.attention and every per-layer entry."""
    from attn_zoo import attention

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
    module_spec = importlib.util.spec_from_file_location(f"attn_zoo_config_{abs(hash(path))}", path)
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)
    config = module.get_config(arg) if arg else module.get_config()
    apply_overrides(config, overrides)
    config.lock()
    if "attention" in config:
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
