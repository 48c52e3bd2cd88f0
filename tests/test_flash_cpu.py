"""The fused CPU kernel: built here, actually taken by the engines, and left cleanly when it cannot be.

Its numbers are proven elsewhere: the conformance suite runs `blockwise` and `local` through it
(engine="auto", fp32 on CPU) against `dense`, and test_band.py compares it with the tile engine,
lse gradients included. These tests make sure those suites are not silently testing XLA instead.
"""
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
