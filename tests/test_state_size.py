"""Decoding-state metadata: every causal variant declares it, the formulas, and a check against the
patterns: the declared state holds every key that query L − 1 or a later one attends."""
import jax
import numpy as np
import pytest

from attn_zoo import attention
from attn_zoo.attention.core import table
from attn_zoo.attention.variants import compressed

H, D = 2, 4


def test_every_causal_builtin_declares_its_state_and_noncausal_ones_have_none():
    for name in attention.names(builtin=True):
        spec = attention.get(name)
        if spec.supports_causal:
            assert spec.state_size is not None and spec.state_size.__doc__, name
            assert spec.decoding_state(64, H, D) > 0, name
        else:
            assert spec.decoding_state(64, H, D) is None, name
    assert attention.state_size({"name": "linformer"}, 64, H, D) is None
    assert attention.state_size({"name": "nystrom", "num_landmarks": 8}, 64, H, D) is None


def test_formulas():
    L, H8, D64 = 1024, 8, 64
    get = attention.get
    assert get("dense").decoding_state(L, H8, D64) == 2 * L * H8 * D64
    assert get("blockwise").decoding_state(L, H8, D64) == 2 * L * H8 * D64
    assert get("local").decoding_state(L, H8, D64, window=64) == 2 * H8 * D64 * 65  # itself + 64
    assert get("local").decoding_state(10, H8, D64, window=64) == 2 * 10 * H8 * D64  # capped at L
    assert get("linear").decoding_state(L, H8, D64) == H8 * (D64 * D64 + D64)
    assert get("linear").decoding_state(7, H8, D64, feature_map="relu") == H8 * (D64 * D64 + D64)
    assert get("performer").decoding_state(L, H8, D64, num_features=32) == H8 * (32 * D64 + 32)
    assert get("compressed").decoding_state(10, H8, D64, compression=4) == 2 * H8 * D64 * (2 + 2)
    assert get("synthesizer").decoding_state(100, H8, D64) == 100 * H8 * D64  # values only
    assert get("synthesizer").decoding_state(100, H8, D64, mix_dot=True) == 2 * 100 * H8 * D64
    assert get("routing").decoding_state(L, H8, D64, num_clusters=3, window=5) == 2 * 15 * H8 * D64
    assert get("reformer").decoding_state(L, H8, D64, n_buckets=1, chunk=4) == 2 * 4 * H8 * D64
    bigbird = get("bigbird").decoding_state(L, H8, D64, num_random=0, block=8, global_at="start")
    assert bigbird == 2 * (16 + 8) * H8 * D64  # blocks 126, 127 and the global block 0
    # the paper's form: the last block, still to come while decoding, sees every past key
    assert get("bigbird").decoding_state(L, H8, D64, num_random=0, block=8) == 2 * L * H8 * D64
    with pytest.raises(ValueError, match="max_length=512"):
        get("synthesizer").decoding_state(1024, H8, D64)


@pytest.mark.parametrize("groups,H_", [
    (None, 8), ("local(window=3)*2 + performer(num_features=6)*1 + dense*rest", 5)])
def test_mixture_is_the_sum_of_its_groups(groups, H_):
    from attn_zoo.attention.variants import mixture
    spec = attention.get("mixture")
    opts = {} if groups is None else {"groups": groups}
    groups = spec.options(**opts)["groups"]
    want = sum(attention.get(n).decoding_state(50, c, D, **dict(o))
               for (n, _, o), c in zip(mixture.parse(groups), mixture.head_counts(groups, H_)))
    assert spec.decoding_state(50, H_, D, **opts) == want > 0


def test_helper_takes_a_config_and_refuses_bad_ones():
    assert attention.state_size({"name": "local", "window": 5}, 100, H, D) == 2 * H * D * 6
    with pytest.raises(ValueError, match="unknown attention 'nope'"):
        attention.state_size({"name": "nope"}, 10, H, D)
    with pytest.raises(TypeError, match="windw"):
        attention.state_size({"name": "local", "windw": 5}, 10, H, D)
    with pytest.raises(ValueError, match="no 'name'"):
        attention.state_size({"window": 5}, 10, H, D)


PATTERNS = [  # exact variants with fixed patterns: (name, options)
    ("local", {"window": 3}), ("local", {"window": 0}),
    ("strided", {"stride": 3}), ("strided", {"stride": 3, "span": 7}),
    ("strided", {"stride": 4, "span": 2}), ("longformer", {"window": 2, "num_global": 3}),
    ("longformer", {"window": 4, "global_indices": (0, 9, 17)}),
    ("longformer", {"window": 1, "num_global": 0}),
    ("sparse_transformer", {"block": 5, "summary": 2}), ("sparse_transformer", {"block": 4, "summary": 0}),
    ("sparse_transformer", {"layout": "strided", "block": 4}),
    ("sparse_transformer", {"block": 5, "summary": 2, "split_heads": H}),
    ("sparse_transformer", {"layout": "strided", "block": 3, "split_heads": H}),
    ("bigbird", {"block": 3, "num_random": 0}),
    ("bigbird", {"block": 4, "num_sliding": 1, "num_global": 2, "num_random": 0}),
    ("bigbird", {"block": 4, "num_random": 2}),
    ("bigbird", {"block": 3, "num_random": 0, "global_at": "start"}),
    ("bigbird", {"block": 4, "num_sliding": 1, "num_global": 2, "num_random": 0, "global_at": "start"}),
    ("mixture", {"groups": "local(window=2)*1 + strided(stride=3, span=6)*1"}),
]


@pytest.mark.parametrize("name,options", PATTERNS, ids=[f"{n}-{i}" for i, (n, _) in enumerate(PATTERNS)])
@pytest.mark.parametrize("L", [1, 2, 7, 20, 33])
def test_declared_state_holds_the_keys_the_pattern_reaches(name, options, L):
    """Pattern at a longer length N: the keys j < L of the last query's row, and of every row
    i >= L − 1 (all later queries). The state must hold the first; it is exactly the second."""
    spec = attention.get(name)
    N = 2 * L + 40
    pat = spec.pattern(N, N, causal=True, rng=jax.random.PRNGKey(0), **options)
    pat = np.broadcast_to(pat, (H, N, N)) if pat.ndim == 2 else pat
    last = int(pat[:, L - 1, :L].sum())
    reached = int(pat[:, L - 1:, :L].any(axis=1).sum())
    state = spec.decoding_state(L, H, D, **options)
    assert state >= 2 * D * last, (state, last)
    if options.get("num_random", 0) == 0:  # random blocks: any past block may be drawn later
        assert state == 2 * D * reached, (state, reached)
    else:
        assert state == 2 * L * H * D


@pytest.mark.parametrize("L,c", [(1, 4), (9, 4), (12, 4), (13, 1), (5, 8)])
def test_compressed_state_is_what_its_causal_mask_keeps(L, c):
    """Query L − 1's visible slots in the impl's key layout [L raw keys; ⌈L/c⌉ compressed blocks]."""
    nc = -(-L // c)
    visible = compressed._causal_mask_fn(L, c)(np.full(L + nc, L - 1), np.arange(L + nc))
    assert attention.get("compressed").decoding_state(L, H, D, compression=c) == 2 * H * D * visible.sum()


@pytest.mark.parametrize("name,options", [("reformer", {"n_hashes": 2, "n_buckets": 2, "chunk": 3}),
                                          ("reformer", {"n_hashes": 1, "n_buckets": 1, "chunk": 4}),
                                          ("routing", {"num_clusters": 2, "window": 3})])
def test_bucketed_state_bounds_the_keys_later_queries_attend(name, options):
    """On random data at N = 48: keys j < L attended by a query >= L − 1 fit in the declared state."""
    spec, N, L = attention.get(name), 48, 30
    q, k, v = jax.random.normal(jax.random.PRNGKey(1), (3, 1, N, H, D))
    params = spec.init(jax.random.PRNGKey(0), q, k, v, **options)
    vis = np.asarray(spec.chosen_pattern(params, q, k, v, key_mask=None, causal=True, rng=None,
                                         **spec.options(**options)))[0]
    reached = int(vis[:, L - 1:, :L].any(axis=1).sum())
    assert 0 < 2 * D * reached <= spec.decoding_state(L, H, D, **options) < 2 * L * H * D


def test_list_shows_the_state_column_and_formula():
    text = table.registry_table()
    assert table.STATE in text
    row = lambda n: next(line for line in text.splitlines() if line.startswith(n + " "))  # noqa: E731
    assert "1.0M" in row("dense") and "none" in row("linformer") and "132k" in row("local")
    assert "> max_length" in row("synthesizer")
    assert "2·H·D·min(window + 1, L)" in table.variant_table("local")
    assert "none (not causal)" in table.variant_table("nystrom")


def test_undeclared_plugin_shows_a_question_mark():
    from attn_zoo.attention.variants import dense
    spec = attention.register("state_less_test", family="dense", exact=False, supports_causal=True,
                              impl=dense.attention)
    try:
        assert spec.decoding_state(8, H, D) is None and table.state_cell(spec) == "?"
        assert "not declared" in table.variant_table("state_less_test")
    finally:
        attention.unregister("state_less_test")
