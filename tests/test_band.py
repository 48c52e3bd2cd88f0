"""The band engine (local, longformer's band), in XLA and through the fused CPU kernel, equals the
general tile engine on the same band: outputs, log-sum-exp, and gradients through both (the lse
cotangent is what longformer's merge uses)."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from attn_zoo.attention.core import band
from attn_zoo.attention.core import block_sparse as bs


@pytest.mark.parametrize("L,S,dlo,dhi,block", [(37, 37, -5, 5, 8), (37, 37, 0, 5, 8), (64, 64, -10, 10, 16),
                                               (29, 41, -3, 7, 8), (20, 20, 0, 0, 4)])
@pytest.mark.parametrize("engine", ["auto", "xla"])  # auto: the fused CPU kernel (fp32 on CPU)
def test_band_engine_equals_tile_engine(L, S, dlo, dhi, block, engine):
    r = np.random.RandomState(L + S + dhi)
    q, ct = (jnp.asarray(r.randn(2, L, 3, 8), jnp.float32) for _ in range(2))
    k, v = (jnp.asarray(r.randn(2, S, 3, 8), jnp.float32) for _ in range(2))
    key_mask = jnp.asarray(r.rand(2, S) > 0.3)
    c_lse = jnp.asarray(r.randn(2, L, 3), jnp.float32)

    def engine_band(q, k, v):
        return band.attention(q, k, v, key_mask, dlo=dlo, dhi=dhi, block=block, return_lse=True,
                              engine=engine)

    def engine_tiles(q, k, v):
        return bs.attention(q, k, v, key_mask, mask_fn=bs.band_mask_fn(dlo, dhi), block_q=block, block_k=block,
                            block_mask_fn=lambda nq, nk, bq, bk: bs.band_block_mask(nq, nk, bq, bk, dlo, dhi),
                            return_lse=True)

    def loss(f):
        def total(q, k, v):
            out, lse = f(q, k, v)
            return (out * ct).sum() + (jnp.where(jnp.isfinite(lse), lse, 0.0) * c_lse).sum()
        return jax.jit(jax.grad(total, argnums=(0, 1, 2)))(q, k, v)

    (o1, l1), (o2, l2) = jax.jit(engine_band)(q, k, v), jax.jit(engine_tiles)(q, k, v)
    np.testing.assert_allclose(o1, o2, atol=1e-5)
    np.testing.assert_array_equal(np.isfinite(l1), np.isfinite(l2))
    np.testing.assert_allclose(np.where(np.isfinite(l2), l1, 0), np.where(np.isfinite(l2), l2, 0), atol=1e-5)
    for a, b in zip(loss(engine_band), loss(engine_tiles)):
        np.testing.assert_allclose(a, b, atol=1e-5)
