"""The mask contract as executable checks, run on every registered variant by tests/.

Each `check_*` takes a spec and one option set, raises AssertionError on a violation, and returns
nothing. They are library functions so that a researcher can run them on a new variant directly
(`conformance.run_all(spec)`), and so that a test can show a planted bug is caught.

Shapes are small (B=2, L=S=21, H=2, D=8): 21 is a multiple of no block size the tests use, so
internal padding is always exercised.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Callable, Mapping

import jax
import jax.numpy as jnp
import numpy as np

from attn_zoo.attention.core.registry import AttentionSpec
from attn_zoo.attention.variants import dense

B, L, H, D = 2, 21, 2, 8
ATOL = 1e-5  # fp32 agreement with dense, outputs and gradients (DESIGN: never loosened)


@dataclasses.dataclass
class Inputs:
    q: jax.Array
    k: jax.Array
    v: jax.Array
    key_mask: jax.Array
    ct: jax.Array  # a random cotangent for gradient checks


def make_inputs(seed=0, length=L, dtype=jnp.float32, pad_fraction=0.3) -> Inputs:
    r = np.random.RandomState(seed)
    q, k, v, ct = (jnp.asarray(r.randn(B, length, H, D), dtype) for _ in range(4))
    mask = r.rand(B, length) >= pad_fraction
    mask[:, 0] = True  # every row keeps a real key, so "no visible key" is tested on purpose only
    return Inputs(q, k, v, jnp.asarray(mask), ct)


RNG = jax.random.PRNGKey(2)
# Inputs of the reference check: unit Gaussians whose relu features leave no query with a
# near-zero normalizer (seed 9 has one: there fp32 itself loses 1e-5 against float64 in dq).
REFERENCE_SEED = 1


def _params(spec, x: Inputs, options):
    return spec.init(jax.random.PRNGKey(1), x.q, x.k, x.v, **options)


# Jitted functions are memoized per configuration so that the checks of one variant share their
# compiled executables (compiling dominates the suite's time); tests group a variant's checks on
# one worker for the same reason.
_JITTED: dict = {}


def _fn(spec, options, causal):
    """A jitted (params, q, k, v, key_mask) -> out for one configuration."""
    key = ("fwd", spec.name, id(spec), repr(sorted(options.items())), causal)
    if key not in _JITTED:
        def f(params, q, k, v, km):
            return spec.apply(params, q, k, v, key_mask=km, causal=causal, rng=RNG, **options)
        _JITTED[key] = jax.jit(f)
    return _JITTED[key]


def _grads(f, params, x: Inputs, key_mask, ct=None):
    """d sum(f(...) * ct) / d (q, k, v), jitted once per f."""
    if ("grad", f) not in _JITTED:
        def loss(params, q, k, v, km, ct):
            return jnp.sum(f(params, q, k, v, km).astype(jnp.float32) * ct.astype(jnp.float32))
        _JITTED[("grad", f)] = jax.jit(jax.grad(loss, argnums=(1, 2, 3)))
    return _JITTED[("grad", f)](params, x.q, x.k, x.v, key_mask, x.ct if ct is None else ct)


def _causal_modes(spec):
    return (False, True) if spec.supports_causal else (False,)


def _close(a, b, what, atol=ATOL):
    a, b = np.asarray(a, np.float32), np.asarray(b, np.float32)
    err = float(np.max(np.abs(a - b))) if a.size else 0.0
    assert a.shape == b.shape, f"{what}: shapes {a.shape} vs {b.shape}"
    assert err <= atol, f"{what}: max abs difference {err:.3g} > {atol:g}"


# ---------------------------------------------------------------------------------------- checks

def check_shapes(spec: AttentionSpec, options: Mapping[str, Any]):
    """1. Shapes and dtype (Dv may differ from D); jit == eager; same inputs and rng, same output."""
    x = make_inputs()
    params = _params(spec, x, options)
    eager = spec.apply(params, x.q, x.k, x.v, key_mask=x.key_mask, rng=RNG, **options)
    assert eager.shape == (B, L, H, D), f"output shape {eager.shape} != {(B, L, H, D)}"
    assert eager.dtype == x.q.dtype, f"output dtype {eager.dtype} != {x.q.dtype}"
    jitted = _fn(spec, options, False)(params, x.q, x.k, x.v, x.key_mask)
    _close(jitted, eager, "jit vs eager")
    _close(_fn(spec, options, False)(params, x.q, x.k, x.v, x.key_mask), jitted,
           "same inputs and rng, different output", 0.0)
    v = jnp.concatenate([x.v, x.v[..., :3]], axis=-1)
    for causal in _causal_modes(spec):
        out = _fn(spec, options, causal)(params, x.q, x.k, v, x.key_mask)
        assert out.shape == (B, L, H, D + 3), f"Dv = D + 3: output shape {out.shape} (causal={causal})"


def check_vmap(spec: AttentionSpec, options: Mapping[str, Any]):
    """1. vmap over a stack of batches equals a Python loop over them (causal when supported)."""
    xs = [make_inputs(seed) for seed in (3, 4)]
    params = _params(spec, xs[0], options)
    for causal in _causal_modes(spec)[-1:]:
        f = _fn(spec, options, causal)
        stack = lambda name: jnp.stack([getattr(x, name) for x in xs])
        batched = jax.jit(jax.vmap(f, in_axes=(None, 0, 0, 0, 0)))(
            params, stack("q"), stack("k"), stack("v"), stack("key_mask"))
        for n, x in enumerate(xs):
            _close(batched[n], f(params, x.q, x.k, x.v, x.key_mask), f"vmap vs loop (causal={causal})")


def check_key_mask(spec: AttentionSpec, options: Mapping[str, Any]):
    """2. Changing k or v at masked positions changes no output and gets zero gradient."""
    x = make_inputs()
    params = _params(spec, x, options)
    pad = ~x.key_mask[:, :, None, None]
    r = np.random.RandomState(7)
    noise = lambda: jnp.asarray(10 * r.randn(*x.k.shape), x.k.dtype)
    k2, v2 = jnp.where(pad, noise(), x.k), jnp.where(pad, noise(), x.v)
    for causal in _causal_modes(spec):
        f = _fn(spec, options, causal)
        _close(f(params, x.q, k2, v2, x.key_mask), f(params, x.q, x.k, x.v, x.key_mask),
               f"output changed when masked keys/values changed (causal={causal})")
        _, dk, dv = _grads(f, params, x, x.key_mask)
        _close(jnp.where(pad, dk, 0), 0 * dk, f"nonzero gradient at masked keys (causal={causal})")
        _close(jnp.where(pad, dv, 0), 0 * dv, f"nonzero gradient at masked values (causal={causal})")


def check_causal(spec: AttentionSpec, options: Mapping[str, Any]):
    """3. Under causal, changing q, k or v at positions > i changes no output at i."""
    if not spec.supports_causal:
        with _raises(ValueError):
            x = make_inputs()
            spec.apply(_params(spec, x, options), x.q, x.k, x.v, causal=True, rng=RNG, **options)
        return
    x = make_inputs()
    params = _params(spec, x, options)
    f = _fn(spec, options, True)
    base = f(params, x.q, x.k, x.v, x.key_mask)
    r = np.random.RandomState(8)
    for t in (0, L // 2, L - 2):
        future = (jnp.arange(L) > t)[None, :, None, None]
        pert = [jnp.where(future, a + jnp.asarray(5 * r.randn(*a.shape), a.dtype), a)
                for a in (x.q, x.k, x.v)]
        out = f(params, *pert, x.key_mask)
        _close(out[:, : t + 1], base[:, : t + 1], f"causal leak: output at <= {t} changed")
        ct = jnp.where((jnp.arange(L) <= t)[None, :, None, None], x.ct, 0)
        for g, name in zip(_grads(f, params, x, x.key_mask, ct), "qkv"):
            _close(jnp.where(future, g, 0), 0 * g, f"causal leak: d out[<= {t}] / d {name}[> {t}] != 0")


def check_empty_rows(spec: AttentionSpec, options: Mapping[str, Any]):
    """4. A query with no visible key is finite (zeros for exact variants); nothing is NaN."""
    x = make_inputs()
    km = x.key_mask.at[1].set(False)  # batch row 1 has no real key at all
    params = _params(spec, x, options)
    for causal in _causal_modes(spec):
        if causal:
            km = km.at[0, :3].set(False)  # queries 0..2 of row 0 see nothing under causal
        f = _fn(spec, options, causal)
        out = np.asarray(f(params, x.q, x.k, x.v, km))
        assert np.all(np.isfinite(out)), f"non-finite output with empty rows (causal={causal})"
        grads = _grads(f, params, x, km)
        assert all(np.all(np.isfinite(np.asarray(g))) for g in grads), "non-finite gradient"
        if spec.exact:
            _close(out[1], 0 * out[1], "exact variant: a query with no visible key must output 0")
            if causal:
                _close(out[0, :3], 0 * out[0, :3], "exact causal: empty prefix must output 0")


def check_bf16(spec: AttentionSpec, options: Mapping[str, Any]):
    """5. bf16 inputs give bf16, finite outputs and finite gradients (causal when supported: the
    mode with the most masking)."""
    x = make_inputs(dtype=jnp.bfloat16)
    params = _params(spec, x, options)
    for causal in _causal_modes(spec)[-1:]:
        f = _fn(spec, options, causal)
        out = f(params, x.q, x.k, x.v, x.key_mask)
        assert out.dtype == jnp.bfloat16, f"bf16 in, {out.dtype} out"
        assert np.all(np.isfinite(np.asarray(out, np.float32))), "non-finite bf16 output"
        for g in _grads(f, params, x, x.key_mask):
            assert np.all(np.isfinite(np.asarray(g, np.float32))), "non-finite bf16 gradient"


def check_matches_dense(spec: AttentionSpec, options: Mapping[str, Any]):
    """6. Exact variants equal dense restricted to pattern(...), outputs and gradients (fp32),
    at a length that is a multiple of the test block sizes (16) and one that is not (21)."""
    for length in (16, L):
        x = make_inputs(seed=5, length=length)
        params = _params(spec, x, options)
        for causal in _causal_modes(spec):
            if length == 16 and causal:
                continue  # causal runs at L=21 (padded tail), non-causal at both lengths
            pattern = spec.pattern(length, length, causal=causal, rng=RNG, **options)
            assert pattern is not None, "an exact variant must have a pattern"
            f = _fn(spec, options, causal)
            ref = _reference(pattern, causal)
            what = f"vs dense on pattern (L={length}, causal={causal})"
            _close(f(params, x.q, x.k, x.v, x.key_mask), ref(params, x.q, x.k, x.v, x.key_mask), what)
            for g, gr, n in zip(_grads(f, params, x, x.key_mask), _grads(ref, params, x, x.key_mask), "qkv"):
                _close(g, gr, f"d{n} {what}")


def _reference(pattern, causal):
    """Jitted dense attention restricted to `pattern` (None: unrestricted), memoized."""
    key = ("ref", None if pattern is None else (pattern.shape, pattern.tobytes()), causal)
    if key not in _JITTED:
        _JITTED[key] = jax.jit(lambda p, q, k, v, km: dense.attention(
            {}, q, k, v, key_mask=km, causal=causal, pattern=pattern))
    return _JITTED[key]


def check_exact_limit(spec: AttentionSpec, options: Mapping[str, Any]):
    """7. An approximate variant equals dense in its documented exact limit."""
    del options  # the limit fixes its own options
    x = make_inputs(seed=6)
    limit = dict(spec.exact_limit(L, L))
    atol = limit.pop("_atol", ATOL)
    params = _params(spec, x, limit)
    for causal in _causal_modes(spec):
        f = _fn(spec, limit, causal)
        ref = _reference(None, causal)
        what = f"exact limit {limit} vs dense (causal={causal})"
        _close(f(params, x.q, x.k, x.v, x.key_mask), ref(params, x.q, x.k, x.v, x.key_mask), what, atol)


def check_reference(spec: AttentionSpec, options: Mapping[str, Any]):
    """7. A variant with a registered reference (a plain formula: a kernel's quadratic form, a
    naive recurrence) equals it on outputs and gradients, within `spec.reference_atol`, with q
    and k scaled by `spec.reference_scale` (> 1 makes running stabilizers change between chunks)."""
    x = make_inputs(seed=REFERENCE_SEED)
    x = dataclasses.replace(x, q=spec.reference_scale * x.q, k=spec.reference_scale * x.k)
    params = _params(spec, x, options)
    for causal in _causal_modes(spec):
        f = _fn(spec, options, causal)
        key = ("reference", spec.name, id(spec), repr(sorted(options.items())), causal)
        if key not in _JITTED:
            _JITTED[key] = jax.jit(lambda p, q, k, v, km: spec.reference(
                p, q, k, v, key_mask=km, causal=causal, rng=RNG, **spec.options(**options)))
        ref = _JITTED[key]
        what = f"vs its reference (causal={causal})"
        _close(f(params, x.q, x.k, x.v, x.key_mask), ref(params, x.q, x.k, x.v, x.key_mask), what,
               spec.reference_atol)
        for g, gr, n in zip(_grads(f, params, x, x.key_mask), _grads(ref, params, x, x.key_mask), "qkv"):
            _close(g, gr, f"d{n} {what}", spec.reference_atol)


def _nan_query(x: Inputs) -> tuple[int, int, int]:
    """(b, i, h) of the query the NaN check poisons: batch row 0, the first position from the
    middle on whose own key is real (so it sees at least itself under every pattern), last head."""
    km = np.asarray(x.key_mask[0])
    return 0, next(t for t in range(L // 2, L) if km[t]), H - 1


def check_nan(spec: AttentionSpec, options: Mapping[str, Any]):
    """8. NaN reaches what it should and nothing else (fp32, outputs and gradients).

    (a) A NaN in one coordinate of one query q[b, i, h] makes every coordinate of that query's
        output out[b, i, h] non-finite, and reaches the gradients (a training loop's NaN guard
        must see it; a kernel whose max or exp drops NaN returns a finite row instead). Exact
        variants: every coordinate of dq[b, i, h] is non-finite, and nothing else changes: every
        other query's output and dq equal the clean run's. Approximate variants may spread it
        further (Nyström's landmarks are means of q), and may lose it on dq itself (JAX's relu
        has derivative 0 at NaN: performer's relu kernel, synthesizer's MLPs), so they need their
        own output row and some non-finite gradient (of q, k or v). A variant whose output does
        not read q at these options (`spec.ignores_query`: synthesizer's factorized_random
        without mix_dot) must instead be left entirely unchanged.
    (b) NaN in k and v at every masked key (key_mask False) changes no output, no gradient of
        the unmasked inputs (dq everywhere, dk and dv at real keys: all finite and equal to the
        clean run's) and no state update (`spec.update`). A masked key must not contribute even
        0·NaN: a zero weight times its value, a zero ds times its key; mask with jnp.where (or
        zero masked k and v first: `masks.hide_masked`), never by multiplying. The masked keys'
        own gradients are not checked: their true value is 0, but autodiff multiplies that 0 by
        the derivative of whatever was computed from the NaN (elu'(NaN) in a feature map)."""
    x = make_inputs()
    params = _params(spec, x, options)
    b, i, h = _nan_query(x)
    others = np.ones((B, L, H), bool)
    others[b, i, h] = False
    xa = dataclasses.replace(x, q=x.q.at[b, i, h, 0].set(jnp.nan))
    pad = ~x.key_mask[:, :, None, None]
    xb = dataclasses.replace(x, k=jnp.where(pad, jnp.nan, x.k), v=jnp.where(pad, jnp.nan, x.v))
    ignores_q = spec.ignores_query is not None and bool(spec.ignores_query(**spec.options(**options)))
    for causal in _causal_modes(spec):
        f = _fn(spec, options, causal)
        out = np.asarray(f(params, x.q, x.k, x.v, x.key_mask))
        grads = [np.asarray(g) for g in _grads(f, params, x, x.key_mask)]

        what = f"a NaN in q[{b}, {i}, {h}, 0] (causal={causal})"
        out_a = np.asarray(f(params, xa.q, xa.k, xa.v, xa.key_mask))
        grads_a = [np.asarray(g) for g in _grads(f, params, xa, x.key_mask)]
        dq_a = grads_a[0]
        if ignores_q:
            _close(out_a, out, f"{what}: output changed, but spec.ignores_query says q is unread")
            _close(dq_a, grads[0], f"{what}: dq changed, but spec.ignores_query says q is unread")
        else:
            row = f"[{b}, {i}, {h}]"
            assert not np.isfinite(out_a[b, i, h]).any(), (
                f"{what}: out{row} has finite entries {out_a[b, i, h]}; the NaN must reach it")
            assert not all(np.isfinite(g).all() for g in grads_a), (
                f"{what}: every gradient is finite; the NaN must reach them")
            if spec.exact:
                assert not np.isfinite(dq_a[b, i, h]).any(), (
                    f"{what}: dq{row} has finite entries {dq_a[b, i, h]}; the NaN must reach it")
                _close(out_a[others], out[others], f"{what}: other queries' outputs changed (exact)")
                _close(dq_a[others], grads[0][others], f"{what}: other queries' dq changed (exact)")

        what = f"NaN in k and v at masked keys (causal={causal})"
        out_b = np.asarray(f(params, xb.q, xb.k, xb.v, xb.key_mask))
        assert np.isfinite(out_b).all(), f"{what}: non-finite output at {_where_nonfinite(out_b)}"
        _close(out_b, out, f"{what}: output changed")
        for g_b, g, n in zip(_grads(f, params, xb, x.key_mask), grads, "qkv"):
            if n != "q":  # the unmasked inputs: dk and dv at real keys
                g_b, g = np.where(pad, 0.0, g_b), np.where(pad, 0.0, g)
            g_b = np.asarray(g_b)
            assert np.isfinite(g_b).all(), f"{what}: non-finite d{n} at {_where_nonfinite(g_b)}"
            _close(g_b, g, f"{what}: d{n} changed")
    if spec.update is not None:
        opts = spec.options(**options)
        new, new_b = (spec.update(params, y.q, y.k, y.v, key_mask=y.key_mask, **opts) for y in (x, xb))
        for (path, leaf), leaf_b in zip(jax.tree_util.tree_leaves_with_path(new),
                                        jax.tree_util.tree_leaves(new_b)):
            what = f"NaN in k and v at masked keys: params{jax.tree_util.keystr(path)} after spec.update"
            assert np.isfinite(np.asarray(leaf_b)).all(), f"{what} is not finite"
            _close(leaf_b, leaf, f"{what} changed")


def _where_nonfinite(a, most=4):
    """The first few [b, n, h] indices of non-finite entries, for a message."""
    idx = np.argwhere(~np.isfinite(np.asarray(a)))[:, :3]
    idx = np.unique(idx, axis=0)
    return f"{len(idx)} [b, n, h] rows, e.g. {idx[:most].tolist()}"


def check_no_key_mask(spec: AttentionSpec, options: Mapping[str, Any]):
    """2. key_mask=None means every key is real: the output equals an all-True mask's."""
    x = make_inputs()
    params = _params(spec, x, options)
    ones = jnp.ones(x.key_mask.shape, bool)
    for causal in _causal_modes(spec):
        out = spec.apply(params, x.q, x.k, x.v, key_mask=None, causal=causal, rng=RNG, **options)
        assert out.shape == (B, L, H, D), f"key_mask=None: output shape {out.shape} (causal={causal})"
        _close(out, _fn(spec, options, causal)(params, x.q, x.k, x.v, ones),
               f"key_mask=None vs an all-True key_mask (causal={causal})")


def check_defaults(spec: AttentionSpec, options: Mapping[str, Any]):
    """The defaults run at any head count and length: (H, L) = (1, 1) and (3, 7), finite."""
    del options  # the defaults are the point
    for h, n in ((1, 1), (3, 7)):
        r = np.random.RandomState(10)
        q, k, v = (jnp.asarray(r.randn(1, n, h, D), jnp.float32) for _ in range(3))
        params = spec.init(jax.random.PRNGKey(1), q, k, v)
        for causal in _causal_modes(spec):
            out = spec.apply(params, q, k, v, causal=causal, rng=RNG)
            assert out.shape == (1, n, h, D), f"defaults at H={h}, L={n}: output shape {out.shape}"
            assert np.all(np.isfinite(np.asarray(out))), f"defaults at H={h}, L={n}: non-finite output"


def check_bad_input(spec: AttentionSpec, options: Mapping[str, Any]):
    """Bad calls fail with a clear error: shapes, key_mask shape, causal with L != S, options."""
    x = make_inputs()
    params = _params(spec, x, options)
    apply = lambda *a, **kw: spec.apply(params, *a, rng=RNG, **{**options, **kw})
    with _raises(ValueError, "shapes do not agree"):
        apply(x.q, x.k[:, :, :1], x.v)
    with _raises(ValueError, "key_mask must be"):
        apply(x.q, x.k, x.v, key_mask=x.key_mask[:, :-1])
    with _raises(TypeError, "has no option"):
        apply(x.q, x.k, x.v, no_such_option=1)
    if spec.supports_causal:
        with _raises(ValueError, "needs L == S"):
            apply(x.q[:, :-1], x.k, x.v, causal=True)


class _raises:
    def __init__(self, exc, match=""):
        self.exc, self.match = exc, match

    def __enter__(self):
        return self

    def __exit__(self, typ, value, tb):
        assert typ is not None, f"expected {self.exc.__name__}, nothing was raised"
        if not issubclass(typ, self.exc) or self.match not in str(value):
            return False
        return True


# The contract's extensions, checks 8-10 (grouped K/V heads, segment_ids, sinks, ALiBi: contract.py;
# decoding: decode.py), join CHECKS in the package's __init__ (they build on this module).
CONTRACT_CHECKS = ("gqa", "segments", "sink", "alibi")


CHECKS: dict[str, Callable[[AttentionSpec, Mapping[str, Any]], None]] = {
    "shapes": check_shapes, "vmap": check_vmap, "key_mask": check_key_mask,
    "causal": check_causal, "empty_rows": check_empty_rows, "bf16": check_bf16,
    "matches_dense": check_matches_dense, "exact_limit": check_exact_limit,
    "reference": check_reference, "no_key_mask": check_no_key_mask, "defaults": check_defaults,
    "bad_input": check_bad_input, "nan": check_nan,
}


def applicable(spec: AttentionSpec) -> list[str]:
    """The checks that apply to a spec (dense is the reference itself: tested on formulas)."""
    out = ["shapes", "vmap", "key_mask", "no_key_mask", "causal", "empty_rows", "nan", "bf16",
           "defaults", "bad_input", "decode", *CONTRACT_CHECKS]
    if spec.exact and spec.name != "dense":
        out.append("matches_dense")
    if not spec.exact and spec.exact_limit is not None:
        out.append("exact_limit")
    if spec.reference is not None:
        out.append("reference")
    return out


def cases(specs) -> list[tuple[str, int, str]]:
    """(variant name, option-set index, check name) for every applicable check."""
    out = []
    for spec in specs:
        for i in range(len(spec.test_options)):
            for check in applicable(spec):
                if check in ("exact_limit", "bad_input", "defaults") and i > 0:
                    continue  # independent of the option set
                if check in CONTRACT_CHECKS and i > 0 and "engine" not in spec.test_options[i]:
                    continue  # the first option set, and those that pick another engine
                out.append((spec.name, i, check))
    return out


def run_all(spec: AttentionSpec) -> None:
    """Run every applicable check on every test option set of `spec`."""
    for name, i, check in cases([spec]):
        CHECKS[check](spec, spec.test_options[i])
