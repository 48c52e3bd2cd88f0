"""Token-by-token decoding (attention.decode, spec.decode_init / decode_step): grouped kv heads and
Dv != D against apply, the ring buffer's size, refusals, a planted off-by-one that the conformance
check must catch, and `attn-zoo list`. The per-variant equality is conformance's 'decode' check."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from attn_zoo import attention
from attn_zoo.conformance import decode as conformance_decode
from attn_zoo.attention.core import alibi, decode, table
from attn_zoo.attention.variants import local

B, L, H, HK, D, DV = 2, 13, 4, 2, 8, 5


def _qkv(seed=0, hk=HK):
    r = np.random.RandomState(seed)
    return tuple(jnp.asarray(r.randn(B, L, h, d), jnp.float32) for h, d in ((H, D), (hk, D), (hk, DV)))


@pytest.mark.parametrize("name,options", [
    ("local", {"window": 3, "block": 4}),
    ("performer", {"num_features": 12, "chunk": 4}),
    ("reformer", {"n_hashes": 2, "n_buckets": 4, "chunk": 3}),
    ("compressed", {"compression": 3, "block": 4}),
    ("mixture", {"groups": "local(window=2, block=4)*1 + dense*3"}),  # a group across a kv head
])
def test_grouped_kv_heads_and_value_dim_equal_apply(name, options):
    spec = attention.get(name)
    q, k, v = _qkv()
    params = spec.init(jax.random.key(1), q, k, v, **options)
    ref = jax.jit(lambda p, q, k, v: spec.apply(p, q, k, v, causal=True, **options))(params, q, k, v)
    out = jax.jit(lambda p, q, k, v: attention.decode(spec, p, q, k, v, **options))(params, q, k, v)
    assert out.shape == (B, L, H, DV)
    np.testing.assert_allclose(out, ref, atol=1e-5)


@pytest.mark.parametrize("name,options", [
    ("dense", {}), ("local", {"window": 3, "block": 4}),
    ("longformer", {"window": 2, "num_global": 2, "block": 4}),
    ("mixture", {"groups": "local(window=2, block=4)*1 + strided(stride=2, span=7, block=4)*3"})])
def test_alibi_and_sinks_equal_apply(name, options):
    spec, (q, k, v) = attention.get(name), _qkv(2)
    options = {**options, "sink": True} if spec.sinks else options
    params = spec.init(jax.random.key(1), q, k, v, **options)
    if spec.sinks:
        params = {**params, "sink": jnp.asarray([0.5, -1.0, 2.0, 0.0])}
    slopes = jnp.asarray(alibi.slopes(H))
    ref = spec.apply(params, q, k, v, causal=True, alibi_slopes=slopes, **options)
    out = jax.jit(lambda p, q, k, v: attention.decode(spec, p, q, k, v, alibi_slopes=slopes, **options))(
        params, q, k, v)
    np.testing.assert_allclose(out, ref, atol=1e-5)
    with pytest.raises(ValueError, match="does not support alibi_slopes"):
        attention.get("linear").decode_init({}, B, L, H, H, D, D, jnp.float32, alibi_slopes=slopes)


def test_local_keeps_a_ring_of_window_plus_one_and_wraps():
    spec = attention.get("local")
    cache = spec.decode_init({}, B, L, H, HK, D, DV, jnp.float32, window=3)
    assert cache["k"].shape == (B * HK, 4, D) and cache["v"].shape == (B * HK, 4, DV)
    assert decode.cache_floats(cache, B) == 4 * HK * (D + DV)
    q, k, v = _qkv()
    out, c = spec.decode_step({}, cache, q[:, :1], k[:, :1], v[:, :1], window=3)
    assert out.shape == (B, 1, H, DV) and int(c["t"]) == 1 and c["pos"].tolist() == [0, -1, -1, -1]


@pytest.mark.parametrize("options,slots", [({"window": 3, "num_global": 2}, 2 + 4),  # globals first: a ring
                                           ({"window": 3, "global_indices": (0, 9)}, L)])  # a late global: every key
def test_longformer_keeps_its_globals_and_a_ring_when_the_globals_come_first(options, slots):
    spec, (q, k, v) = attention.get("longformer"), _qkv(3)
    options = {**options, "block": 4}
    cache = spec.decode_init({}, B, L, H, HK, D, DV, jnp.float32, **options)
    assert cache["k"].shape == (B * HK, slots, D) and cache["v"].shape == (B * HK, slots, DV)
    ref = spec.apply({}, q, k, v, causal=True, **options)  # L = 13: the ring wraps twice
    out = jax.jit(lambda q, k, v: attention.decode(spec, {}, q, k, v, **options))(q, k, v)
    np.testing.assert_allclose(out, ref, atol=1e-5)


@pytest.mark.parametrize("options,slots", [({"block": 4, "summary": 1}, 4 * 1 + 3),  # summaries + a ring
                                           ({"block": 4, "summary": 1, "split_heads": H}, 7),
                                           ({"layout": "strided", "block": 4}, L)])  # every key
def test_sparse_transformer_fixed_keeps_the_summaries_and_a_ring_of_the_block(options, slots):
    spec, (q, k, v) = attention.get("sparse_transformer"), _qkv(4)
    options = {**options, "tile": 4}
    cache = spec.decode_init({}, B, L, H, HK, D, DV, jnp.float32, **options)
    assert cache["k"].shape == (B * HK, slots, D)
    ref = spec.apply({}, q, k, v, causal=True, **options)  # L = 13: blocks 0-3, the ring wraps
    out = jax.jit(lambda q, k, v: attention.decode(spec, {}, q, k, v, **options))(q, k, v)
    np.testing.assert_allclose(out, ref, atol=1e-5)


def test_refusals_are_one_line():
    spec = attention.get("local")
    with pytest.raises(ValueError, match="num_heads=4 must be a multiple of num_kv_heads=3"):
        spec.decode_init({}, B, L, H, 3, D, D, jnp.float32, window=3)
    with pytest.raises(ValueError, match="integer sizes >= 1"):
        spec.decode_init({}, B, 0, H, HK, D, D, jnp.float32)
    cache = spec.decode_init({}, B, L, H, HK, D, D, jnp.float32)
    q, k, v = _qkv()
    with pytest.raises(ValueError, match=r"decode_step takes q_t \[B, 1, H, D\]"):
        spec.decode_step({}, cache, q[:, :2], k[:, :2], v[:, :2])
    with pytest.raises(ValueError, match="cannot decode token by token: no causal form"):
        attention.get("nystrom").decode_init({}, B, L, H, H, D, D, jnp.float32)
    with pytest.raises(ValueError, match="synthesizer' was built for length <= max_length=8"):
        attention.get("synthesizer").decode_init({}, B, 9, H, H, D, D, jnp.float32, max_length=8)
    with pytest.raises(ValueError, match="decoding draws no Gumbel noise"):
        attention.get("dense").decode_init({}, B, L, H, H, D, D, jnp.float32, rng=jax.random.key(0),
                                           normalize="gumbel")


def _register(name, **fields):
    return attention.register(name, family="pattern", exact=True, supports_causal=True,
                              impl=local.attention, options=local.Options, pattern_fn=local.pattern,
                              state_size=local.state_size, replace=True, **fields)


def test_a_causal_variant_without_decoder_says_so():
    spec = _register("no_decoder_test")
    try:
        assert not spec.decodable and spec.why_not_decodable() == "no decoder registered"
        conformance_decode.check_decode(spec, {"window": 3})  # checks the refusal
        assert table.causal_cell(spec) == "yes (no decoding)"
        assert "Decoding: not token by token: no decoder registered" in table.variant_table("no_decoder_test")
    finally:
        attention.unregister("no_decoder_test")
    assert "Decoding: token by token" in table.variant_table("local")


def test_conformance_catches_a_planted_off_by_one_and_a_false_size_claim():
    short = decode.kv_decoder(local._ring, lambda t, pos, table, *, window, **_: t - pos < window)
    spec = _register("off_by_one_test", decode_init_fn=short[0], decode_step_fn=short[1])
    try:
        with pytest.raises(AssertionError, match="decode vs apply"):
            conformance_decode.check_decode(spec, {"window": 3, "block": 8})
    finally:
        attention.unregister("off_by_one_test")
    full = decode.kv_decoder(decode.full_length, local._in_window)  # right outputs, 21 slots
    spec = _register("false_claim_test", decode_init_fn=full[0], decode_step_fn=full[1],
                     decode_minimal=True)
    try:
        with pytest.raises(AssertionError, match="state_size claims"):
            conformance_decode.check_decode(spec, {"window": 3, "block": 8})
    finally:
        attention.unregister("false_claim_test")
