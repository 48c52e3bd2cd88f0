"""The contract's extensions inside the exact engines: grouped K/V heads are indexed, never
repeated, and segment ids and ALiBi live in the tile (no L×S array), in the band engine, the
block-sparse tile engine and the fused CPU kernel; plus the variants' own GQA paths that the
conformance suite's option sets do not reach."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from attn_zoo import attention
from attn_zoo.attention.core import alibi, band, block_sparse as bs, contract
from attn_zoo.kernels import flash_cpu

B, L, S, H, Hk, D = 2, 24, 40, 6, 2, 5


def _avals(jaxpr):
    """Every intermediate shape of a jaxpr, sub-jaxprs (scan, cond, custom_vjp) included."""
    for eqn in jaxpr.eqns:
        for var in eqn.outvars:
            yield tuple(getattr(var.aval, "shape", ()))
        for p in eqn.params.values():
            for sub in p if isinstance(p, (tuple, list)) else (p,):
                inner = getattr(sub, "jaxpr", sub)
                if hasattr(inner, "eqns"):
                    yield from _avals(inner)


def _inputs(Lq=L):
    r = np.random.RandomState(0)
    q = jnp.asarray(r.randn(B, Lq, H, D), jnp.float32)
    k, v = (jnp.asarray(r.randn(B, S, Hk, D), jnp.float32) for _ in range(2))
    ids = jnp.asarray(np.sort(r.randint(0, 3, (B, S)), axis=1), jnp.int32)
    return q, k, v, (ids[:, :Lq], ids), jnp.asarray(alibi.slopes(H))


ENGINES = {
    "tiles": lambda q, k, v, seg, sl: bs.full(q, k, v, None, causal=False, block_q=8, block_k=8,
                                              engine="xla", segments=seg, alibi_slopes=sl),
    "band": lambda q, k, v, seg, sl: band.attention(q, k, v, None, dlo=-5, dhi=9, block=8,
                                                    engine="xla", segments=seg, alibi_slopes=sl),
    "kernel": lambda q, k, v, seg, sl: bs.full(q, k, v, None, causal=False, block_q=8, block_k=8,
                                               engine="auto", segments=seg, alibi_slopes=sl),
}


def _offending(fn, q, k, v, seg, sl):
    """Shapes that hold a repeated K/V ([.., >= S, .., H, ..]) or an L×S array, in fn and its
    gradient."""
    loss = lambda q, k, v: jnp.sum(fn(q, k, v, seg, sl))  # noqa: E731
    shapes = set(_avals(jax.make_jaxpr(jax.grad(loss, (0, 1, 2)))(q, k, v).jaxpr))
    repeated = [s for s in shapes if H in s and any(n >= S for n in s)]
    quadratic = [s for s in shapes if sum(n >= L for n in s) >= 2]
    return repeated, quadratic


@pytest.mark.parametrize("engine", sorted(ENGINES))
def test_engines_index_kv_heads_and_mask_in_the_tile(engine):
    if engine == "kernel" and not flash_cpu.status()[0]:
        pytest.skip("the fused CPU kernel is unavailable")
    repeated, quadratic = _offending(ENGINES[engine], *_inputs())
    assert not repeated, f"{engine}: repeated K/V materialized: {repeated}"
    assert not quadratic, f"{engine}: an L×S array materialized: {quadratic}"


def test_the_shape_check_catches_a_repeat_and_a_dense_mask():
    """The check above fails on what it forbids: K/V repeated by the registry, a dense mask."""
    def repeating(q, k, v, seg, sl):
        G = H // Hk
        return ENGINES["tiles"](q, contract.repeat_kv(k, G), contract.repeat_kv(v, G), None, None)

    def dense_mask(q, k, v, seg, sl):
        vis = seg[0][:, :, None] == seg[1][:, None, :]  # [B, L, S]
        return ENGINES["tiles"](q, k, v, None, None) * jnp.any(vis, -1)[..., None, None]

    assert _offending(repeating, *_inputs())[0]
    assert _offending(dense_mask, *_inputs())[1]


def _repeated_equal(spec, options, q, k, v, causal):
    """spec on Hk heads == spec on K/V repeated to H heads: outputs and dq, dk, dv."""
    G = q.shape[2] // k.shape[2]
    params = spec.init(jax.random.PRNGKey(1), q, k, v, **options)
    rng = jax.random.PRNGKey(2)
    f = lambda q, k, v: spec.apply(params, q, k, v, causal=causal, rng=rng, **options)  # noqa: E731
    rep = lambda q, k, v: f(q, contract.repeat_kv(k, G), contract.repeat_kv(v, G))  # noqa: E731
    ct = jnp.asarray(np.random.RandomState(3).randn(*q.shape), jnp.float32)
    np.testing.assert_allclose(jax.jit(f)(q, k, v), jax.jit(rep)(q, k, v), atol=1e-5)
    grads = [jax.jit(jax.grad(lambda *x, fn=fn: jnp.sum(fn(*x) * ct), (0, 1, 2)))(q, k, v) for fn in (f, rep)]
    for x, y in zip(*grads):
        np.testing.assert_allclose(x, y, atol=1e-5)


@pytest.mark.parametrize("name,options,kv_heads", [
    ("sparse_transformer", {"block": 4, "summary": 2, "tile": 8, "split_heads": 4}, 2),  # halves slice
    ("sparse_transformer", {"layout": "strided", "block": 4, "tile": 4, "split_heads": 4}, 1),  # repeat
    ("mixture", {"groups": "local(window=3, block=8)*1 + strided(stride=3, block=4)*3"}, 2),  # straddles
])
def test_gqa_paths_outside_the_suites_option_sets(name, options, kv_heads):
    r = np.random.RandomState(4)
    q = jnp.asarray(r.randn(2, 13, 4, 8), jnp.float32)
    k, v = (jnp.asarray(r.randn(2, 13, kv_heads, 8), jnp.float32) for _ in range(2))
    _repeated_equal(attention.get(name), options, q, k, v, causal=True)
