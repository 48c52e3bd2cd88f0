"""`dense` against formulas written out in numpy: the reference must itself be right."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from attn_zoo import attention
from attn_zoo.conformance import make_inputs

DENSE = attention.get("dense")


def np_softmax(x, mask):
    x = np.where(mask, x, -np.inf)
    m = np.max(x, axis=-1, keepdims=True)
    m = np.where(np.isfinite(m), m, 0)
    p = np.where(mask, np.exp(x - m), 0)
    d = p.sum(-1, keepdims=True)
    return p / np.where(d > 0, d, 1)


def np_logits(q, k, score, params=None, cosine_temperature=0.1):
    if score == "scaled_dot":
        return np.einsum("blhd,bshd->bhls", q, k) / np.sqrt(q.shape[-1])
    if score == "dot":
        return np.einsum("blhd,bshd->bhls", q, k)
    if score == "cosine":
        qn = q / np.linalg.norm(q, axis=-1, keepdims=True)
        kn = k / np.linalg.norm(k, axis=-1, keepdims=True)
        return np.einsum("blhd,bshd->bhls", qn, kn) / cosine_temperature
    p = {n: np.asarray(a) for n, a in params.items()}
    qa = np.einsum("blhd,hda->bhla", q, p["w_q"])
    ka = np.einsum("bshd,hda->bhsa", k, p["w_k"])
    return np.einsum("bhlsa,ha->bhls", np.tanh(qa[:, :, :, None] + ka[:, :, None]), p["v"])


@pytest.mark.parametrize("score", ["scaled_dot", "dot", "cosine", "additive"])
@pytest.mark.parametrize("causal", [False, True])
def test_dense_matches_numpy(score, causal):
    x = make_inputs()
    q, k, v, km = (np.asarray(a, np.float64) for a in (x.q, x.k, x.v, x.key_mask))
    params = DENSE.init(jax.random.PRNGKey(0), x.q, x.k, x.v, score=score)
    out = DENSE.apply(params, x.q, x.k, x.v, key_mask=x.key_mask, causal=causal, score=score)
    L = q.shape[1]
    mask = km.astype(bool)[:, None, None, :] & (np.tril(np.ones((L, L), bool)) if causal else True)
    w = np_softmax(np_logits(q, k, score, params), mask)
    np.testing.assert_allclose(out, np.einsum("bhls,bshd->blhd", w, v), atol=1e-5)


def test_hard_is_one_hot_forward_with_softmax_gradient():
    x = make_inputs()
    hard = lambda q: DENSE.apply({}, q, x.k, x.v, key_mask=x.key_mask, normalize="hard")
    soft = lambda q: DENSE.apply({}, q, x.k, x.v, key_mask=x.key_mask)
    logits = np_logits(np.asarray(x.q), np.asarray(x.k), "scaled_dot")
    logits = np.where(np.asarray(x.key_mask)[:, None, None, :], logits, -np.inf)
    idx = logits.argmax(-1)  # [B, H, L]
    want = np.take_along_axis(np.asarray(x.v).transpose(0, 2, 1, 3), idx[..., None], axis=2)
    np.testing.assert_allclose(hard(x.q), want.transpose(0, 2, 1, 3), atol=1e-6)
    g_hard = jax.grad(lambda q: jnp.sum(hard(q) * x.ct))(x.q)
    g_soft = jax.grad(lambda q: jnp.sum(soft(q) * x.ct))(x.q)
    np.testing.assert_allclose(g_hard, g_soft, atol=1e-5)  # straight-through: softmax gradient


def test_gumbel_noise_comes_from_rng():
    x = make_inputs()
    f = lambda rng: DENSE.apply({}, x.q, x.k, x.v, key_mask=x.key_mask, rng=rng, normalize="gumbel")
    a, b, c = f(jax.random.PRNGKey(0)), f(jax.random.PRNGKey(0)), f(jax.random.PRNGKey(1))
    np.testing.assert_array_equal(a, b)
    assert float(jnp.max(jnp.abs(a - c))) > 1e-3
    # Without rng there is no noise: Gumbel-softmax at temperature 1 is the softmax.
    np.testing.assert_allclose(f(None), DENSE.apply({}, x.q, x.k, x.v, key_mask=x.key_mask), atol=1e-6)


def test_stable_for_large_logits_and_bf16():
    x = make_inputs()
    big = x.q * 1e4
    out = DENSE.apply({}, big, x.k, x.v, key_mask=x.key_mask, score="dot")
    assert np.all(np.isfinite(np.asarray(out)))
    out16 = DENSE.apply({}, (big).astype(jnp.bfloat16), x.k.astype(jnp.bfloat16),
                        x.v.astype(jnp.bfloat16), key_mask=x.key_mask, score="dot")
    assert out16.dtype == jnp.bfloat16 and np.all(np.isfinite(np.asarray(out16, np.float32)))


def test_bad_option_values_raise():
    x = make_inputs()
    with pytest.raises(ValueError, match="score must be"):
        DENSE.apply({}, x.q, x.k, x.v, score="nope")
    with pytest.raises(ValueError, match="normalize must be"):
        DENSE.apply({}, x.q, x.k, x.v, normalize="nope")
