"""The contract's extensions as conformance checks: grouped K/V heads, segment_ids, sinks, ALiBi.

Each `check_*` takes a spec and one option set, like those of `conformance`, and is listed in
`conformance.CHECKS`, so tests/test_conformance.py runs it for every registered variant:

  gqa       Hk = 1 and Hk = H/2 equal the same variant on K/V repeated to H heads (same params
            and rng; outputs and dq, dk, dv, fp32); exact variants also equal dense.
  segments  changing the q, k, v tokens of other segments changes no output (or gradient) of a
            segment, causal and not; exact variants equal dense restricted to pattern ∧ segment;
            the pair form (q_ids, kv_ids) once. A variant without segment support refuses them.
  sink      with sink=True, equal to dense with an explicit virtual key (logit sink_h, value 0):
            outputs and dq, dk, dv, d sink. A variant without the option rejects it.
  alibi     equal to dense with the explicit bias − slope_h·|i − j| on the scaled logits, outputs
            and gradients, causal and not. A variant without ALiBi support refuses it.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Mapping

import jax
import jax.numpy as jnp
import numpy as np

from attn_zoo.conformance import base as C
from attn_zoo.attention.core import alibi, contract, masks
from attn_zoo.attention.core.registry import AttentionSpec
from attn_zoo.attention.variants import dense

B, L, D = C.B, C.L, C.D
ATOL = C.ATOL
LEAK_ATOL = 1e-6  # another segment's tokens reach a segment's output not at all (exact zeros)
_JITTED: dict = {}


def _key(*parts):
    return repr(parts)


def _inputs(H, Hk, seed=11, length=L):
    r = np.random.RandomState(seed)
    q, ct = (jnp.asarray(r.randn(B, length, H, D), jnp.float32) for _ in range(2))
    k, v = (jnp.asarray(r.randn(B, length, Hk, D), jnp.float32) for _ in range(2))
    mask = r.rand(B, length) >= 0.25
    mask[:, 0] = True
    return q, k, v, jnp.asarray(mask), ct


def _apply_fn(spec, options, causal, **extra_static):
    """Jitted (params, q, k, v, km, extra) -> out, extra a dict of segment_ids / alibi_slopes."""
    key = _key("apply", spec.name, id(spec), sorted(options.items()), causal)
    if key not in _JITTED:
        def f(params, q, k, v, km, extra):
            return spec.apply(params, q, k, v, key_mask=km, causal=causal, rng=C.RNG, **extra,
                              **options)
        _JITTED[key] = jax.jit(f)
    return _JITTED[key]


def _value_and_grads(f, params, q, k, v, km, extra, ct, argnums=(1, 2, 3)):
    """(out, grads of sum(out · ct) wrt `argnums` of f(params, q, k, v, km, extra))."""
    key = ("grad", f, argnums)
    if key not in _JITTED:
        def loss(*a):
            return jnp.sum(f(*a[:-1]).astype(jnp.float32) * a[-1])
        _JITTED[key] = jax.jit(jax.grad(loss, argnums=argnums))
    return f(params, q, k, v, km, extra), _JITTED[key](params, q, k, v, km, extra, ct)


def _heads(spec, options):
    """4 heads (so that Hk = 1 and Hk = H/2 differ) unless the option set fixes H (a mixture's
    head counts, split heads): then the suite's H = 2."""
    q, k, v, km, _ = _inputs(4, 4)
    try:
        jax.eval_shape(lambda q, k, v: spec.apply(spec.init(jax.random.PRNGKey(1), q, k, v, **options),
                                                  q, k, v, key_mask=km, rng=C.RNG, **options), q, k, v)
    except ValueError:
        return C.H
    return 4


def _reference(spec, options, params, causal, length, *, segments=None, slopes=None, sink=None):
    """Dense attention written out: the variant's pattern (exact variants; dense: all pairs),
    key_mask, causal, a per-batch segment mask, the ALiBi bias and a virtual sink key, on K/V
    repeated to H heads. Returns f(params, q, k, v, km, extra) like `_apply_fn`."""
    pattern = spec.pattern(length, length, causal=causal, rng=C.RNG, **options)
    dense_opts = {n: val for n, val in options.items() if n in dense.Options.__dataclass_fields__}
    dense_opts = {**dataclasses.asdict(dense.Options()), **(dense_opts if spec.name == "dense" else {})}

    def f(p, q, k, v, km, extra):
        G = q.shape[2] // k.shape[2]
        k, v = contract.repeat_kv(k, G), contract.repeat_kv(v, G)
        k, v = jnp.where(km[:, :, None, None], k, 0), jnp.where(km[:, :, None, None], v, 0)
        Lq, S = q.shape[1], k.shape[1]
        vis = masks.visible_mask(Lq, S, key_mask=km, causal=causal, pattern=pattern)
        if "segment_ids" in extra:
            qs, ks = contract.segment_pair("reference", extra["segment_ids"], B, Lq, S)
            vis = vis & (qs[:, None, :, None] == ks[:, None, None, :])
        s = dense.logits(p if spec.name == "dense" else {}, q, k, **dense_opts)
        if "alibi_slopes" in extra:
            d = jnp.abs(jnp.arange(Lq)[:, None] - jnp.arange(S)[None, :]).astype(jnp.float32)
            s = s - extra["alibi_slopes"][None, :, None, None] * d
        if sink is not None:  # an explicit extra key: logit sink_h, value 0
            s = jnp.where(vis, s, -jnp.inf)
            virtual = jnp.broadcast_to(p["sink"][None, :, None, None], s.shape[:3] + (1,))
            ext = jnp.concatenate([s, virtual], axis=-1)
            w = jax.nn.softmax(ext, axis=-1)[..., :-1]
        else:
            w = dense.weights(s, vis, normalize=dense_opts["normalize"],
                              temperature=dense_opts["temperature"], rng=C.RNG)
        return jnp.einsum("bhls,bshd->blhd", w, v.astype(jnp.float32))
    return jax.jit(f)


def _compare(f, ref, params, q, k, v, km, extra, ct, what, argnums=(1, 2, 3)):
    out, grads = _value_and_grads(f, params, q, k, v, km, extra, ct, argnums)
    out_r, grads_r = _value_and_grads(ref, params, q, k, v, km, extra, ct, argnums)
    C._close(out, out_r, what)
    names = ["params", "q", "k", "v"]
    for g, gr, n in zip(grads, grads_r, argnums):
        if n == 0:
            g, gr = g["sink"], gr["sink"]
        C._close(g, gr, f"d{names[n] if n else 'sink'} {what}")


# ---------------------------------------------------------------------------------------- checks

def check_gqa(spec: AttentionSpec, options: Mapping[str, Any]):
    """Hk = 1 and Hk = H/2 equal the repeated-K/V call (outputs, dq, dk, dv); exact: dense too."""
    H = _heads(spec, options)
    # Hk = 1 non-causal, Hk = H/2 causal (where supported): both groupings, both modes, at the
    # cost of two cases; exact variants against dense at Hk = 1
    for Hk, causal in ((1, False), (H // 2, C._causal_modes(spec)[-1])):
        q, k, v, km, ct = _inputs(H, Hk)
        params = spec.init(jax.random.PRNGKey(1), q, k, v, **options)
        G = H // Hk
        f = _apply_fn(spec, options, causal)
        what = f"Hk={Hk} of H={H} vs K/V repeated (causal={causal})"
        out, (dq, dk, dv) = _value_and_grads(f, params, q, k, v, km, {}, ct)
        kr, vr = contract.repeat_kv(k, G), contract.repeat_kv(v, G)
        out_r, (dq_r, dk_r, dv_r) = _value_and_grads(f, params, q, kr, vr, km, {}, ct)
        group_sum = lambda g: g.reshape(*g.shape[:2], H // G, G, g.shape[-1]).sum(3)  # noqa: E731
        for a, b, n in ((out, out_r, "out"), (dq, dq_r, "dq"), (dk, group_sum(dk_r), "dk"),
                        (dv, group_sum(dv_r), "dv")):
            C._close(a, b, f"{n}: {what}")  # the repeated call's dk, dv summed over each group
        if spec.exact and Hk == 1:
            ref = _reference(spec, options, params, causal, L)
            _compare(f, ref, params, q, k, v, km, {}, ct, f"Hk={Hk} of H={H} vs dense (causal={causal})")
    q, k, v, km, _ = _inputs(4, 3)
    with C._raises(ValueError, "H % Hk == 0"):
        spec.apply(params, q, k, v, rng=C.RNG, **options)


SEGMENTS = np.array([[0] * 7 + [1] * 8 + [2] * 6, [3] * 12 + [5] * 9], np.int32)  # [B, L]


def check_segments(spec: AttentionSpec, options: Mapping[str, Any]):
    """No output (or gradient) of a segment depends on another segment's tokens; exact variants
    equal dense on pattern ∧ segment; the pair form equals the single array."""
    H = C.H
    q, k, v, km, ct = _inputs(H, H)
    params = spec.init(jax.random.PRNGKey(1), q, k, v, **options)
    ids = jnp.asarray(SEGMENTS)
    if not spec.segments:
        with C._raises(ValueError, f"'{spec.name}' does not support segment_ids"):
            spec.apply(params, q, k, v, segment_ids=ids, rng=C.RNG, **options)
        return
    r = np.random.RandomState(12)
    for causal in C._causal_modes(spec):
        f = _apply_fn(spec, options, causal)
        extra = {"segment_ids": ids}
        out = f(params, q, k, v, km, extra)
        for b, seg in ((0, 1), (1, 5)):
            inside = (ids == seg)[:, :, None, None]  # seg occurs in row b only
            outside = ~(ids == seg)[:, :, None, None] & (jnp.arange(B) == b)[:, None, None, None]
            pert = [jnp.where(outside, x + jnp.asarray(3 * r.randn(*x.shape), x.dtype), x) for x in (q, k, v)]
            what = f"segment {seg} of row {b} (causal={causal})"
            C._close(jnp.where(inside, f(params, *pert, km, extra), 0), jnp.where(inside, out, 0),
                     f"{what}: output changed when other segments' tokens changed", LEAK_ATOL)
            _, g_in = _value_and_grads(f, params, q, k, v, km, extra, jnp.where(inside, ct, 0))
            for g, n in zip(g_in, "qkv"):
                C._close(jnp.where(outside, g, 0), 0 * g, f"{what}: d out / d {n} of other segments != 0",
                         LEAK_ATOL)
        if spec.exact:
            _compare(f, _reference(spec, options, params, causal, L), params, q, k, v, km, extra, ct,
                     f"segments vs dense on pattern ∧ segment (causal={causal})")
    f = _apply_fn(spec, options, False)
    kv_ids = jnp.asarray(np.roll(SEGMENTS, 3, axis=1))  # queries and keys with different ids
    extra = {"segment_ids": (ids, kv_ids)}
    if spec.exact:  # outputs only: the gradients of this path were checked above
        C._close(f(params, q, k, v, km, extra), _reference(spec, options, params, False, L)(
            params, q, k, v, km, extra), "pair (q_segment_ids, kv_segment_ids) vs dense")
    else:
        C._close(f(params, q, k, v, km, {"segment_ids": (ids, ids)}),
                 f(params, q, k, v, km, {"segment_ids": ids}), "segment_ids pair (ids, ids) vs ids")


def check_sink(spec: AttentionSpec, options: Mapping[str, Any]):
    """sink=True equals dense with an explicit virtual key (logit sink_h, value 0): outputs and
    dq, dk, dv, d sink (causal where supported: the mode with the most masking); a query with no
    visible key gives 0."""
    H = C.H
    q, k, v, km, ct = _inputs(H, H)
    if not spec.sinks:
        with C._raises(TypeError, "has no option ['sink']"):
            spec.apply(spec.init(jax.random.PRNGKey(1), q, k, v, **options), q, k, v, rng=C.RNG,
                       sink=True, **options)
        return
    opts = {**options, "sink": True}
    try:
        params = spec.init(jax.random.PRNGKey(1), q, k, v, **opts)
    except ValueError as e:  # an option set the sink cannot join (dense's hard normalizer)
        assert "sink" in str(e), f"sink=True refused without naming it: {e}"
        return
    assert params["sink"].shape == (H,), f"params['sink'] is {params['sink'].shape}, expected {(H,)}"
    params = {**params, "sink": jnp.asarray([0.7, -1.3][:H], jnp.float32)}
    km_empty = km.at[1, :].set(False)  # a row with no visible key gives 0
    for causal in C._causal_modes(spec)[-1:]:
        f = _apply_fn(spec, opts, causal)
        ref = _reference(spec, opts, params, causal, L, sink=True)
        _compare(f, ref, params, q, k, v, km, {}, ct, f"sink vs explicit virtual key (causal={causal})",
                 argnums=(0, 1, 2, 3))
        out = f(params, q, k, v, km_empty, {})
        C._close(out[1], 0 * out[1], f"sink: a query with no visible key must give 0 (causal={causal})")


def check_alibi(spec: AttentionSpec, options: Mapping[str, Any]):
    """alibi_slopes equal dense with the explicit bias − slope_h·|i − j| (outputs and gradients)."""
    H = C.H
    q, k, v, km, ct = _inputs(H, H)
    params = spec.init(jax.random.PRNGKey(1), q, k, v, **options)
    slopes = jnp.asarray(alibi.slopes(H) * 4, jnp.float32)  # steep enough to matter at L = 21
    if not spec.alibi:
        with C._raises(ValueError, f"'{spec.name}' does not support alibi_slopes"):
            spec.apply(params, q, k, v, alibi_slopes=slopes, rng=C.RNG, **options)
        return
    assert spec.exact, "alibi needs explicit scores: only exact variants may declare it"
    for causal in C._causal_modes(spec):
        f = _apply_fn(spec, options, causal)
        _compare(f, _reference(spec, options, params, causal, L), params, q, k, v, km,
                 {"alibi_slopes": slopes}, ct, f"alibi vs dense with the explicit bias (causal={causal})")


CHECKS = {"gqa": check_gqa, "segments": check_segments, "sink": check_sink, "alibi": check_alibi}
