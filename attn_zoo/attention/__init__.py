"""Pure-JAX attention variants behind one registry (no Flax here).

    from attn_zoo import attention
    attention.names(); spec = attention.get("local")
    out = spec.apply(params, q, k, v, key_mask=m, causal=False, window=64)

Importing this package registers every built-in variant, then the plugins named in
$ATTN_ZOO_PLUGINS or entry points (`plugins`); `register` adds your own.
"""
from attn_zoo.attention.core.registry import AttentionSpec, get, names, register, unregister


def _import_builtins():
    """Every module in `variants/` registers its variant on import: adding a file adds a variant."""
    import importlib
    import pkgutil

    from attn_zoo.attention import variants

    for info in sorted(pkgutil.iter_modules(variants.__path__), key=lambda m: m.name):
        importlib.import_module(f"{variants.__name__}.{info.name}")


_import_builtins()

from attn_zoo.attention import plugins  # noqa: E402  (after the built-ins: plugins may use them)

plugins.load_environment()

__all__ = ["AttentionSpec", "get", "names", "plugins", "register", "unregister"]
