"""Positions: RoPE against the complex-number formula, its relative property and partial rotation;
positions within packed segments; the sinusoidal table."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from attn_zoo.models import positions

B, L, H, D = 2, 7, 2, 8


def _complex_rope(x, pos, base, fraction):
    """The rotation as complex multiplication: pair (x_i, x_{i+R/2}) = x_i + i·x_{i+R/2}, times
    exp(i·p·base^(-2i/R)); float64 numpy."""
    x, pos = np.asarray(x, np.float64), np.broadcast_to(np.asarray(pos), x.shape[:2])
    R = int(round(fraction * x.shape[-1] / 2)) * 2
    z = x[..., :R // 2] + 1j * x[..., R // 2:R]
    theta = base ** (-2.0 * np.arange(R // 2) / R)
    z = z * np.exp(1j * pos[..., None, None] * theta)
    return np.concatenate([z.real, z.imag, x[..., R:]], axis=-1)


@pytest.mark.parametrize("fraction,base", [(1.0, 10000.0), (0.5, 10000.0), (0.75, 500.0)])
@pytest.mark.parametrize("per_row", [False, True])
def test_rope_equals_the_complex_formula(fraction, base, per_row):
    x = jax.random.normal(jax.random.key(0), (B, L, H, D))
    pos = np.random.default_rng(1).integers(0, 300, (B, L) if per_row else (L,))
    out = positions.rope(x, pos, base=base, fraction=fraction)
    assert out.shape == x.shape and out.dtype == x.dtype
    np.testing.assert_allclose(out, _complex_rope(x, pos, base, fraction), atol=2e-5)


def test_rope_partial_fraction_leaves_the_rest_untouched():
    x = jax.random.normal(jax.random.key(0), (B, L, H, D))
    out = positions.rope(x, jnp.arange(L) + 3, fraction=0.5)  # R = 4 of 8 dims
    np.testing.assert_array_equal(out[..., 4:], x[..., 4:])
    assert np.abs(np.asarray(out[..., :4] - x[..., :4])).max() > 0.1
    assert positions.rotated_dims(8, 0.5) == 4 and positions.rotated_dims(8, 0.3) == 2


def test_rope_scores_depend_on_position_differences_only():
    q, k = jax.random.normal(jax.random.key(1), (2, 1, 1, H, D))

    def score(m, n):
        return float(jnp.sum(positions.rope(q, jnp.array([m])) * positions.rope(k, jnp.array([n]))))

    for m, n in [(0, 0), (5, 2), (2, 9), (40, 17)]:
        for shift in (1, 13, 250):
            assert score(m + shift, n + shift) == pytest.approx(score(m, n), abs=1e-4)
    assert abs(score(5, 2) - score(5, 3)) > 1e-3  # and the difference does matter


def test_rope_keeps_dtype_and_computes_in_float32():
    x = jax.random.normal(jax.random.key(2), (B, L, H, D)).astype(jnp.bfloat16)
    out = positions.rope(x, jnp.arange(L))
    assert out.dtype == jnp.bfloat16
    ref = _complex_rope(np.asarray(x, np.float32), np.arange(L), 10000.0, 1.0)
    np.testing.assert_allclose(np.asarray(out, np.float32), ref, atol=0.05)


def test_segment_positions_restart_at_each_segment():
    seg = jnp.array([[3, 3, 3, 5, 5, 0, 0], [1, 2, 2, 2, 2, 2, 7]])
    np.testing.assert_array_equal(positions.segment_positions(seg),
                                  [[0, 1, 2, 0, 1, 0, 1], [0, 0, 1, 2, 3, 4, 0]])


def test_sinusoidal_table():
    t = np.asarray(positions.sinusoidal(10, 6))
    p, i = np.arange(10)[:, None], np.arange(3)
    np.testing.assert_allclose(t[:, 0::2], np.sin(p / 10000 ** (2 * i / 6)), atol=1e-6)
    np.testing.assert_allclose(t[:, 1::2], np.cos(p / 10000 ** (2 * i / 6)), atol=1e-6)
