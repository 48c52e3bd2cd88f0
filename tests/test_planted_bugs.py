"""The conformance suite must catch a planted bug: a causal leak, a padded key in the normalizer, a
padded value multiplied by its zero weight (0·NaN), and a softmax that drops a NaN logit."""
import jax.numpy as jnp
import numpy as np
import pytest

from attn_zoo import attention, conformance
from attn_zoo.attention.core import masks
from attn_zoo.attention.variants import dense


def _leaky_causal(params, q, k, v, *, key_mask, causal, rng):
    """Dense attention whose causal mask lets query i see key i + 1."""
    L = q.shape[1]
    pattern = np.tril(np.ones((L, L), bool), k=1) if causal else None
    return dense.attention(params, q, k, v, key_mask=key_mask, causal=False, rng=rng, pattern=pattern)


def _pad_in_normalizer(params, q, k, v, *, key_mask, causal, rng):
    """Dense attention that zeroes padded keys' weights *after* normalizing over all keys."""
    L, S = q.shape[1], k.shape[1]
    logits = jnp.einsum("blhd,bshd->bhls", q, k) * q.shape[-1] ** -0.5
    w = masks.masked_softmax(logits, masks.visible_mask(L, S, causal=causal))
    w = jnp.where(masks.visible_mask(L, S, key_mask=key_mask), w, 0.0)
    return jnp.einsum("bhls,bshd->blhd", w, v)


def _mask_by_multiplying(params, q, k, v, *, key_mask, causal, rng):
    """Dense attention whose padded values are zeroed by their weight alone: 0·NaN reaches out."""
    L, S = q.shape[1], k.shape[1]
    logits = jnp.einsum("blhd,bshd->bhls", q, k) * q.shape[-1] ** -0.5
    w = masks.masked_softmax(logits, masks.visible_mask(L, S, key_mask=key_mask, causal=causal))
    return jnp.einsum("bhls,bshd->blhd", w, v)


def _nan_dropping(params, q, k, v, *, key_mask, causal, rng):
    """Dense attention whose softmax treats a NaN logit as masked (as a max that skips NaN)."""
    L, S = q.shape[1], k.shape[1]
    k, v = masks.hide_masked(key_mask, k, v)
    logits = jnp.einsum("blhd,bshd->bhls", q, k) * q.shape[-1] ** -0.5
    vis = masks.visible_mask(L, S, key_mask=key_mask, causal=causal) & ~jnp.isnan(logits)
    return jnp.einsum("bhls,bshd->blhd", masks.masked_softmax(logits, vis), v)


@pytest.fixture
def planted():
    made = []

    def make(name, impl):
        made.append(name)
        return attention.register(name, family="dense", exact=True, supports_causal=True, impl=impl,
                                  pattern_fn=lambda L, S, **_: np.ones((L, S), bool))
    yield make
    for name in made:
        attention.unregister(name)


def test_causal_leak_is_caught(planted):
    spec = planted("planted_causal_leak", _leaky_causal)
    with pytest.raises(AssertionError, match="causal leak"):
        conformance.check_causal(spec, {})


def test_padded_key_in_normalizer_is_caught(planted):
    spec = planted("planted_pad_leak", _pad_in_normalizer)
    with pytest.raises(AssertionError, match="masked keys/values changed"):
        conformance.check_key_mask(spec, {})


def test_masking_by_multiplying_is_caught(planted):
    spec = planted("planted_zero_times_nan", _mask_by_multiplying)
    conformance.check_key_mask(spec, {})  # finite values: nothing to see
    with pytest.raises(AssertionError, match="NaN in k and v at masked keys"):
        conformance.check_nan(spec, {})


def test_a_dropped_nan_is_caught(planted):
    spec = planted("planted_nan_dropping", _nan_dropping)
    with pytest.raises(AssertionError, match="the NaN must reach it"):
        conformance.check_nan(spec, {})


def test_correct_variant_passes_the_same_checks(planted):
    spec = planted("planted_none", dense.attention)
    conformance.check_causal(spec, {})
    conformance.check_key_mask(spec, {})
    conformance.check_nan(spec, {})
