"""Pure-JAX attention variants behind one registry (no Flax here).

    from attn_zoo import attention
    attention.names(); spec = attention.get("local")
    out = spec.apply(params, q, k, v, key_mask=m, causal=False, window=64)
    attention.state_size({"name": "local", "window": 64}, L, H, D)   # decoding state, floats
    out = attention.decode(spec, params, q, k, v, window=64)  # causal, token by token (lax.scan)

Importing this package registers every built-in variant, then the plugins named in
$ATTN_ZOO_PLUGINS or entry points (`plugins`); `register` adds your own.
"""
from attn_zoo.attention.core.registry import AttentionSpec, get, names, register, unregister
from attn_zoo.attention.core.decode import decode


def _import_builtins():
    """Every module in `variants/` registers its variant on import: adding a file adds a variant."""
    import importlib
    import pkgutil

    from attn_zoo.attention import variants

    for info in sorted(pkgutil.iter_modules(variants.__path__), key=lambda m: m.name):
        importlib.import_module(f"{variants.__name__}.{info.name}")


def state_size(attn_config, L, H, D):
    """Floats a causal decoder of `attn_config` ({'name': ..., **options}) keeps per layer after
    reading L tokens with H heads of head dim D (Dv = D); None for a variant that is not causal."""
    opts = dict(attn_config)
    if "name" not in opts:
        raise ValueError(f"attention config has no 'name'; give a registered variant: "
                         f"{', '.join(names())}")
    return get(opts.pop("name")).decoding_state(L, H, D, **opts)


_import_builtins()

from attn_zoo.attention import plugins  # noqa: E402  (after the built-ins: plugins may use them)

plugins.load_environment()

__all__ = ["AttentionSpec", "decode", "get", "names", "plugins", "register", "state_size", "unregister"]
