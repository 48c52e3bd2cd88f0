"""Pure-JAX attention variants behind one registry (no Flax here).

    from attn_zoo import attention
    attention.names(); spec = attention.get("local")
    out = spec.apply(params, q, k, v, key_mask=m, causal=False, window=64)

Importing this package registers every built-in variant; `register` adds your own.
"""
from attn_zoo.attention.registry import AttentionSpec, get, names, register, unregister


def _import_builtins():
    """Every module in this package registers its variants on import: adding a file adds a variant."""
    import importlib
    import pkgutil

    for info in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name):
        importlib.import_module(f"{__name__}.{info.name}")


_import_builtins()

__all__ = ["AttentionSpec", "get", "names", "register", "unregister"]


def _load_plugins():
    """Import out-of-package variants: entry points in group `attn_zoo.attention`, and modules
    named in $ATTN_ZOO_PLUGINS (comma-separated). Importing a module registers its variants."""
    import importlib
    import os
    from importlib.metadata import entry_points

    for ep in entry_points(group="attn_zoo.attention"):
        ep.load()
    for module in filter(None, os.environ.get("ATTN_ZOO_PLUGINS", "").split(",")):
        importlib.import_module(module.strip())


_load_plugins()
