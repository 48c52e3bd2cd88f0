"""Contract 10 as a conformance check: token-by-token decoding equals the parallel causal call.

`check_decode(spec, options)` (conformance.CHECKS["decode"], run for every registered variant):
- a decodable variant: `attention.decode` (jitted, lax.scan) equals spec.apply(..., causal=True)
  in fp32 within 1e-5 at every position; on the first option set, with one kv head
  (Hk = 1 < H = 2), it equals apply on the repeated keys and values (contract 8) or refuses
  Hk < H in one line; the cache's floats per sequence equal `spec.decoding_state` where the
  variant declares its cache minimal (`decode_minimal`), and are never fewer than it claims;
- any other variant: decode_init raises a ValueError that gives the reason.
Inputs and the apply function are the causal check's (compiled once; tests/test_decode.py has
Dv != D). Both sides get the suite's rng (bigbird's random blocks, Reformer's rehash, Sinkhorn's noise),
or None where a decoder refuses it (dense's Gumbel noise). There is no key_mask (decoding feeds
real tokens only): apply gets an all-True one.
"""
from __future__ import annotations

from typing import Any, Mapping

import jax
import jax.numpy as jnp
import numpy as np

from attn_zoo.conformance import base as cf
from attn_zoo.attention.core import decode as dec
from attn_zoo.attention.core.registry import AttentionSpec


def _decoded(spec, options, rng):
    """A jitted (params, q, k, v) -> decode(...), memoized with the suite's functions."""
    key = ("decode", spec.name, id(spec), repr(sorted(options.items())), rng is None)
    if key not in cf._JITTED:
        cf._JITTED[key] = jax.jit(lambda p, q, k, v: dec.decode(spec, p, q, k, v, rng=rng, **options))
    return cf._JITTED[key]


def _applied(spec, options, rng):
    """A jitted (params, q, k, v) -> apply(..., causal=True, rng=rng), memoized."""
    key = ("decode-ref", spec.name, id(spec), repr(sorted(options.items())), rng is None)
    if key not in cf._JITTED:
        cf._JITTED[key] = jax.jit(lambda p, q, k, v: spec.apply(p, q, k, v, causal=True, rng=rng,
                                                                 **options))
    return cf._JITTED[key]


def check_decode(spec: AttentionSpec, options: Mapping[str, Any]):
    """10. Decoding token by token equals apply(causal=True); its cache is the size it claims."""
    x = cf.make_inputs()
    q, k, v = x.q, x.k, x.v
    B, L, H, D = q.shape
    if not spec.decodable:
        assert spec.why_not_decodable(), f"{spec.name}: not decodable and no reason given"
        with cf._raises(ValueError, "cannot decode token by token"):
            spec.decode_init({}, B, L, H, H, D, D, jnp.float32, **options)
        return
    params = cf._params(spec, x, options)
    causal = cf._fn(spec, options, True)
    rng, apply = cf.RNG, lambda p, q, k, v: causal(p, q, k, v, jnp.ones((B, L), bool))
    try:  # the suite's compiled causal apply (an all-True key_mask), when decoding takes its rng
        spec.decode_init(params, B, L, H, H, D, D, jnp.float32, rng=rng, **options)
    except ValueError as e:  # a decoder that cannot reproduce apply's rng noise: both without
        assert "rng" in str(e), f"{spec.name}: decode_init failed: {e}"
        rng, apply = None, _applied(spec, options, None)
    _close_or_fail(spec, _decoded(spec, options, rng)(params, q, k, v), apply(params, q, k, v),
                   "decode vs apply(causal)")

    k1, v1 = k[:, :, :1], v[:, :, :1]  # Hk = 1 kv head read by both query heads
    try:
        first = options == spec.test_options[0]
        out = _decoded(spec, options, rng)(params, q, k1, v1) if first else None
    except ValueError as e:  # a decoder that documents Hk == H only must say so in one line
        assert "Hk" in str(e) and "\n" not in str(e), f"{spec.name}: unclear Hk < H refusal: {e}"
    else:
        if out is not None:
            ref1 = apply(params, q, *(jnp.repeat(a, H, axis=2) for a in (k1, v1)))
            _close_or_fail(spec, out, ref1, "decode with Hk=1 vs apply on repeated k, v")

    cache = jax.eval_shape(lambda p: spec.decode_init(p, B, L, H, H, D, D, jnp.float32, rng=rng,
                                                      **options), params)
    floats, claim = dec.cache_floats(cache, B), spec.decoding_state(L, H, D, **options)
    if spec.decode_is_minimal(**options):
        assert floats == claim, (f"{spec.name} {dict(options)}: the cache keeps {floats} floats per "
                                 f"sequence at L={L}, H={H}, D={D}; state_size claims {claim}")
    else:
        assert claim is None or floats >= claim, (
            f"{spec.name} {dict(options)}: the cache keeps {floats} floats, fewer than the "
            f"{claim} state_size says a decoder needs")


def _close_or_fail(spec, out, ref, what):
    out, ref = np.asarray(out), np.asarray(ref)
    assert out.shape == ref.shape, f"{spec.name}: {what}: shape {out.shape} != {ref.shape}"
    err = np.abs(out - ref).max(axis=(0, 2, 3))  # per position
    bad = np.nonzero(~(err <= cf.ATOL))[0]
    assert not len(bad), (f"{spec.name}: {what}: positions {bad[:6].tolist()} differ by up to "
                          f"{float(np.nanmax(err)):.3g} (atol {cf.ATOL})")
