"""The fused CPU kernel: built here, actually taken by the engines, and left cleanly when it cannot be.

Its numbers are proven elsewhere: the conformance suite runs `blockwise` and `local` through it
(engine="auto", fp32 on CPU) against `dense`, and test_band.py compares it with the tile engine,
lse gradients included. These tests make sure those suites are not silently testing XLA instead.
"""
import functools
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from attn_zoo import attention
from attn_zoo.kernels import flash_cpu

pytestmark = pytest.mark.skipif(os.environ.get("ATTN_ZOO_CPU_KERNEL") == "0",
                                reason="kernel switched off by ATTN_ZOO_CPU_KERNEL=0")


def _ffi_calls(fn, *args):
    return str(jax.make_jaxpr(fn)(*args)).count("ffi_call")


def test_kernel_builds_and_the_engines_take_it():
    if flash_cpu.compiler() is None:  # a machine without one runs the XLA engines (test below)
        pytest.skip("no C++ compiler on this machine")
    assert flash_cpu.status() == (True, "")
    q = jnp.ones((1, 24, 2, 8), jnp.float32)
    for name in ("blockwise", "local", "longformer", "synthesizer"):
        spec = attention.get(name)
        params = spec.init(jax.random.PRNGKey(0), q, q, q, **spec.options())
        fused = lambda q, spec=spec, params=params: spec.apply(params, q, q, q)  # noqa: E731
        assert _ffi_calls(fused, q) == 1, name
        assert _ffi_calls(jax.grad(lambda q: fused(q).sum()), q) == 2, name  # forward + backward
        if name != "synthesizer":  # which computes its synthetic logits in fp32 anyway
            assert _ffi_calls(lambda q: fused(q.astype(jnp.bfloat16)), q) == 0, name  # fp32 only
    for name in ("blockwise", "local"):
        assert _ffi_calls(lambda q: attention.get(name).apply({}, q, q, q, engine="xla"), q) == 0


def test_bad_engine_is_refused():
    q = jnp.ones((1, 8, 1, 4), jnp.float32)
    with pytest.raises(ValueError, match="engine"):
        attention.get("blockwise").apply({}, q, q, q, engine="fused")


def test_vmap_and_jit_through_the_kernel():
    r = np.random.RandomState(0)
    q, k, v = (jnp.asarray(r.randn(3, 2, 19, 2, 8), jnp.float32) for _ in range(3))
    apply = lambda q, k, v: attention.get("blockwise").apply({}, q, k, v, causal=True, block_q=8,  # noqa: E731
                                                              block_k=8)
    batched = jax.jit(jax.vmap(apply))(q, k, v)
    looped = jnp.stack([apply(q[i], k[i], v[i]) for i in range(3)])
    np.testing.assert_allclose(batched, looped, atol=1e-6)


def test_without_a_compiler_the_engines_fall_back_to_xla(tmp_path):
    code = ("import jax.numpy as jnp; from attn_zoo import attention; from attn_zoo.kernels import flash_cpu;"
            "q = jnp.ones((1, 16, 2, 8)); out = attention.get('blockwise').apply({}, q, q, q);"
            "ok, why = flash_cpu.status(); assert not ok and 'failed' in why, why;"
            "assert out.shape == q.shape and bool(jnp.isfinite(out).all()); print('fell back')")
    env = dict(os.environ, CXX="false", ATTN_ZOO_KERNEL_CACHE=str(tmp_path), JAX_PLATFORMS="cpu")
    res = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-2000:]
    assert "fell back" in res.stdout and "unavailable, using XLA" in res.stderr


def _nonfinite_inputs():
    """(name, q, k, v, key_mask): one NaN or Inf in q, k or v at a real token, and NaN/Inf in k and
    v at every masked key (which must reach nothing)."""
    r = np.random.RandomState(0)
    q, k, v = (jnp.asarray(r.randn(2, 21, 2, 8), jnp.float32) for _ in range(3))
    km = jnp.asarray(r.rand(2, 21) > 0.3).at[:, 0].set(True)
    pad = ~km[:, :, None, None]
    return km, [("nan q", q.at[0, 10, 1, 0].set(jnp.nan), k, v), ("inf q", q.at[0, 10, 1, 2].set(jnp.inf), k, v),
                ("nan k", q, k.at[1, 0, 0, 3].set(jnp.nan), v), ("-inf k", q, k.at[0, 0, 1, 0].set(-jnp.inf), v),
                ("inf v", q, k, v.at[0, 0, 1, 0].set(-jnp.inf)),
                ("masked", q, jnp.where(pad, jnp.nan, k), jnp.where(pad, jnp.inf, v))]


def _agree(a, b, what, same_mask=True):
    a, b = np.asarray(a), np.asarray(b)
    fa, fb = np.isfinite(a), np.isfinite(b)
    if same_mask:
        assert (fa == fb).all(), f"{what}: non-finite at {(~fa).sum()} entries (kernel), {(~fb).sum()} (xla)"
    both = fa & fb
    np.testing.assert_allclose(a[both], b[both], atol=1e-5, err_msg=what)


@pytest.mark.parametrize("name,options", [("blockwise", {"block_q": 8, "block_k": 8}),
                                          ("blockwise", {"block_q": 16, "block_k": 16}),  # 16 lanes
                                          ("local", {"window": 3, "block": 8})])
@pytest.mark.parametrize("causal", [False, True])
def test_nan_and_inf_propagate_as_in_the_xla_engine(name, options, causal):
    """A NaN or Inf reaches the same outputs through the kernel as through the XLA engine (a NaN
    query gave a row of zeros and finite gradients), and from a masked key nothing at all.

    Outputs agree exactly in where they are non-finite, and so do dv and, for `blockwise` (whose
    engines cut the same tiles), dq and dk. `local`'s engines cut different tiles, and a
    non-finite key or value reaches every query sharing a tile with it as 0·Inf in dS·K and dO·Vᵀ,
    so there dq must only be non-finite at every query whose output is."""
    if not flash_cpu.status()[0]:
        pytest.skip("the fused kernel is unavailable")
    spec = attention.get(name)
    km, cases = _nonfinite_inputs()
    ct = jnp.asarray(np.random.RandomState(1).randn(2, 21, 2, 8), jnp.float32)
    fns = {}
    for engine in ("auto", "xla"):
        f = functools.partial(spec.apply, {}, key_mask=km, causal=causal, engine=engine, **options)
        fns[engine] = jax.jit(f), jax.jit(jax.grad(lambda q, k, v, f=f: jnp.sum(f(q, k, v) * ct), (0, 1, 2)))
    for case, q, k, v in cases:
        (out, dq, dk, dv), (out_x, dq_x, dk_x, dv_x) = (
            (fns[e][0](q, k, v), *fns[e][1](q, k, v)) for e in ("auto", "xla"))
        what = f"{name} causal={causal} {case}"
        _agree(out, out_x, f"{what}: out")
        _agree(dv, dv_x, f"{what}: dv")
        _agree(dq, dq_x, f"{what}: dq", same_mask=name == "blockwise")
        _agree(dk, dk_x, f"{what}: dk", same_mask=name == "blockwise")
        rows = ~np.isfinite(np.asarray(out)).all(axis=-1)
        assert not np.isfinite(np.asarray(dq)[rows]).all(axis=-1).any(), f"{what}: a NaN output row, finite dq"
        if case == "masked":
            assert all(np.isfinite(np.asarray(x)).all() for x in (out, dq, dk, dv)), what
        if case == "nan q" or case == "inf q":
            assert not np.isfinite(np.asarray(out)[0, 10, 1]).any(), f"{what}: the query's own row"


def test_lse_propagates_nan_as_in_the_xla_engine():
    """The band engine's log-sum-exp, -inf for an empty row, is NaN for a NaN row in both engines."""
    if not flash_cpu.status()[0]:
        pytest.skip("the fused kernel is unavailable")
    from attn_zoo.attention.core import band
    km, cases = _nonfinite_inputs()
    km = km.at[1, :8].set(False)  # query 0..4 of batch row 1 see no key: lse -inf
    for case, q, k, v in cases:
        lses = [band.attention(q, k, v, km, dlo=-3, dhi=3, block=8, return_lse=True, engine=e)[1]
                for e in ("auto", "xla")]
        a, b = (np.asarray(x) for x in lses)
        assert (np.isnan(a) == np.isnan(b)).all() and (np.isneginf(a) == np.isneginf(b)).all(), case
        assert np.isneginf(a[1, :5]).all(), case
        np.testing.assert_allclose(a[np.isfinite(a)], b[np.isfinite(a)], atol=1e-5, err_msg=case)
