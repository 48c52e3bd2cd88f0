"""The paper's forms offered where a variant departs from its paper (issue 18, item 10b): Longformer's
separate global projections; each departure is said by `attn-zoo list` (BigBird's first-and-last
global blocks: test_patterns::test_bigbird_global_blocks_are_the_first_and_the_last)."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from attn_zoo import attention, cli

RNG = jax.random.PRNGKey(0)


def _qkv(L=12, H=2, D=4):
    q, k, v = jax.random.normal(RNG, (3, 2, L, H, D))
    return q, k, v


def test_longformer_global_projections_are_the_global_rows_own():
    spec = attention.get("longformer")
    q, k, v = _qkv()
    mask = jnp.arange(12)[None, :] < jnp.array([[12], [9]])
    opts = dict(window=2, global_indices=(0, 7), block=4)
    params = spec.init(RNG, q, k, v, global_projections=True, **opts)
    assert {n: p.shape for n, p in params.items()} == {"global_q": (2, 4, 4), "global_k": (2, 4, 4),
                                                       "global_v": (2, 4, 4)}
    shared = spec.apply({}, q, k, v, key_mask=mask, **opts)
    f = jax.jit(lambda p: spec.apply(p, q, k, v, key_mask=mask, global_projections=True, **opts))
    np.testing.assert_allclose(f(params), shared, atol=1e-6)  # Δ = 0: the shared form
    params = jax.tree.map(lambda d: 0.3 * jax.random.normal(jax.random.PRNGKey(d.size), d.shape), params)
    out = f(params)
    proj = lambda x, d: x + jnp.einsum("bshd,hde->bshe", x, d)  # noqa: E731
    qg, kg, vg = (proj(x, params[f"global_{n}"]) for x, n in ((q, "q"), (k, "k"), (v, "v")))
    rows = attention.get("dense").apply({}, qg, kg, vg, key_mask=mask)  # global rows: every key
    glob = np.array([0, 7])
    np.testing.assert_allclose(out[:, glob], rows[:, glob], atol=1e-5)
    others = np.setdiff1d(np.arange(12), glob)  # the other rows keep the local q, k, v
    np.testing.assert_allclose(out[:, others], shared[:, others], atol=1e-6)
    grads = jax.grad(lambda p: jnp.sum(f(p) ** 2))(params)
    assert all(float(jnp.abs(g).max()) > 0 for g in jax.tree.leaves(grads))
    with pytest.raises(ValueError, match="global_projections=True cannot decode token by token"):
        spec.decode_init(params, 2, 12, 2, 2, 4, 4, jnp.float32, global_projections=True, **opts)


@pytest.mark.parametrize("name,says", [("bigbird", "random blocks are shared"),
                                       ("longformer", "global_projections=True"),
                                       ("reformer", "look back")])
def test_list_says_each_departure(name, says, capsys):
    assert cli.main(["list", name]) == 0
    out = capsys.readouterr().out
    assert "Departs from the paper: " in out and says in out, out
