"""The contract's extensions at the API: ALiBi slopes, refusals in one line, argument checks,
the registry's repeat of K/V for `update`, and `attn-zoo list`'s contract column."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from attn_zoo import attention, cli
from attn_zoo.attention.core import alibi, contract


def _reference_slopes(n):
    """Press et al.'s reference code (github.com/ofirpress/attention_with_linear_biases)."""
    def power_of_2(n):
        start = 2 ** (-2 ** -(np.log2(n) - 3))
        return [start * start ** i for i in range(n)]
    if np.log2(n).is_integer():
        return power_of_2(n)
    c = 2 ** int(np.floor(np.log2(n)))
    return power_of_2(c) + _reference_slopes(2 * c)[0::2][: n - c]


@pytest.mark.parametrize("n", [1, 2, 3, 5, 6, 8, 12, 16])
def test_alibi_slopes_follow_the_paper(n):
    np.testing.assert_allclose(alibi.slopes(n), _reference_slopes(n), rtol=1e-6)
    assert alibi.slopes(n).dtype == np.float32 and alibi.slopes(n).shape == (n,)


def test_alibi_slopes_known_values():
    np.testing.assert_allclose(alibi.slopes(8), [2.0 ** -(i + 1) for i in range(8)])
    np.testing.assert_allclose(alibi.slopes(6), [2 ** -2, 2 ** -4, 2 ** -6, 2 ** -8, 2 ** -1, 2 ** -3])
    with pytest.raises(ValueError, match="num_heads must be an integer >= 1"):
        alibi.slopes(0)


def _qkv(H=2, Hk=2, L=9):
    r = np.random.RandomState(0)
    q = jnp.asarray(r.randn(2, L, H, 8), jnp.float32)
    k, v = (jnp.asarray(r.randn(2, L, Hk, 8), jnp.float32) for _ in range(2))
    return q, k, v


def test_refusals_are_one_line_and_name_the_supporters():
    q, k, v = _qkv()
    spec = attention.get("linformer")
    params = spec.init(jax.random.PRNGKey(0), q, k, v, max_length=16, proj_dim=4)
    ids = jnp.zeros((2, 9), jnp.int32)
    for kw, word in ((dict(segment_ids=ids), "segment_ids"),
                     (dict(alibi_slopes=jnp.ones(2)), "alibi_slopes")):
        with pytest.raises(ValueError) as e:
            spec.apply(params, q, k, v, max_length=16, proj_dim=4, **kw)
        msg = str(e.value)
        assert "\n" not in msg and "'linformer'" in msg and word in msg and "local" in msg, msg
    with pytest.raises(TypeError, match=r"has no option \['sink'\]"):
        spec.apply(params, q, k, v, max_length=16, proj_dim=4, sink=True)
    with pytest.raises(ValueError, match="sink=True needs normalize='softmax'"):
        attention.get("dense").options(sink=True, normalize="hard")


def test_argument_checks():
    q, k, v = _qkv(H=4, Hk=2)
    spec = attention.get("local")
    with pytest.raises(ValueError, match="H % Hk == 0"):
        spec.apply({}, q, k[:, :, :1].repeat(3, 2), v[:, :, :1].repeat(3, 2))
    with pytest.raises(ValueError, match="needs L == S"):
        spec.apply({}, q[:, :5], k, v, segment_ids=jnp.zeros((2, 5), jnp.int32))
    with pytest.raises(ValueError, match=r"kv_segment_ids must be \[2, 9\]"):
        spec.apply({}, q, k, v, segment_ids=(jnp.zeros((2, 9), jnp.int32), jnp.zeros((2, 8), jnp.int32)))
    with pytest.raises(TypeError, match="q_segment_ids must be integers"):
        spec.apply({}, q, k, v, segment_ids=jnp.zeros((2, 9)))
    with pytest.raises(ValueError, match=r"alibi_slopes must be \[H\] = \[4\]"):
        spec.apply({}, q, k, v, alibi_slopes=jnp.ones(2))
    with pytest.raises(ValueError, match="kv_heads must be one of"):
        attention.register("bad_kv", family="dense", exact=False, supports_causal=False,
                           impl=lambda *a, **k: None, kv_heads="some")


def test_segment_pair_and_array_agree():
    q, k, v = _qkv(H=4, Hk=2)
    ids = jnp.asarray([[0] * 4 + [1] * 5, [2] * 9], jnp.int32)
    spec = attention.get("local")
    a = spec.apply({}, q, k, v, segment_ids=ids, window=3, block=4)
    b = spec.apply({}, q, k, v, segment_ids=(ids, ids), window=3, block=4)
    np.testing.assert_array_equal(a, b)
    # and the segment boundary matters: a query of segment 1 never sees segment 0
    c = spec.apply({}, q, k.at[0, :4].set(99.0), v.at[0, :4].set(99.0), segment_ids=ids, window=3, block=4)
    np.testing.assert_array_equal(a[0, 4:], c[0, 4:])


def test_repeat_variants_update_reads_repeated_kv():
    """routing's k-means update (kv_heads='repeat') gets K/V repeated, as its apply does."""
    q, k, v = _qkv(H=4, Hk=2)
    spec = attention.get("routing")
    opts = spec.options(num_clusters=3, window=5)
    params = spec.init(jax.random.PRNGKey(0), q, k, v, **opts)
    new = spec.update(params, q, k, v, **opts)
    ref = spec.update(params, q, contract.repeat_kv(k, 2), contract.repeat_kv(v, 2), **opts)
    for a, b in zip(jax.tree_util.tree_leaves(new), jax.tree_util.tree_leaves(ref)):
        np.testing.assert_array_equal(a, b)


def test_list_shows_the_contract(capsys):
    assert cli.main(["list"]) in (0, None)
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split()[-1] == "contract"
    row = {l.split()[0]: l for l in lines[2:]}
    assert row["local"].endswith("kv:native seg alibi sink")
    assert row["linformer"].endswith("kv:repeat")
    assert cli.main(["list", "dense"]) in (0, None)
    assert "Contract: kv:native seg alibi sink" in capsys.readouterr().out
