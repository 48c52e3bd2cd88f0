"""Fixed sparse patterns: reference definitions, random blocks, head splits, the mixture grammar,
the engine's log-sum-exp output, and true sparsity at N=8192 (traced, never run)."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from attn_zoo import attention
from attn_zoo.attention.core import block_sparse, masks
from attn_zoo.attention.variants import bigbird, dense, mixture

RNG = jax.random.PRNGKey(3)


def _inputs(B=1, L=13, H=2, D=4, seed=0):
    r = np.random.RandomState(seed)
    return [jnp.asarray(r.randn(B, L, H, D), jnp.float32) for _ in range(4)]


def _brute(L, S, fn):
    return np.array([[bool(fn(i, j)) for j in range(S)] for i in range(L)])


# ------------------------------------------------------------------ pattern definitions (papers)

@pytest.mark.parametrize("causal", [False, True])
def test_strided_pattern(causal):
    spec = attention.get("strided")
    for stride, span in ((3, -1), (4, 9), (1, 2)):
        got = spec.pattern(11, 14, causal=causal, stride=stride, span=span) if not causal else \
            spec.pattern(14, 14, causal=True, stride=stride, span=span)
        L, S = got.shape
        want = _brute(L, S, lambda i, j: (i - j) % stride == 0 and (span < 0 or abs(i - j) <= span)
                      and (not causal or j <= i))
        np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("causal", [False, True])
def test_sparse_transformer_patterns(causal):
    spec = attention.get("sparse_transformer")
    l, c, n = 4, 2, 13
    ok = lambda i, j: (not causal) or j <= i  # noqa: E731
    fixed = _brute(n, n, lambda i, j: ok(i, j) and (i // l == j // l or j % l >= l - c))
    np.testing.assert_array_equal(spec.pattern(n, n, causal=causal, block=l, summary=c), fixed)
    strided = _brute(n, n, lambda i, j: ok(i, j) and (abs(i - j) < l or (i - j) % l == 0))
    np.testing.assert_array_equal(
        spec.pattern(n, n, causal=causal, layout="strided", block=l), strided)
    split = spec.pattern(n, n, causal=causal, block=l, summary=c, split_heads=4)
    assert split.shape == (4, n, n)
    np.testing.assert_array_equal(split[0], _brute(n, n, lambda i, j: ok(i, j) and i // l == j // l))
    np.testing.assert_array_equal(split[3], _brute(n, n, lambda i, j: ok(i, j) and j % l >= l - c))


def test_longformer_pattern_and_globals():
    spec = attention.get("longformer")
    w, n = 2, 12
    got = spec.pattern(n, n, window=w, global_indices=(5, 0))
    want = _brute(n, n, lambda i, j: abs(i - j) <= w or i in (0, 5) or j in (0, 5))
    np.testing.assert_array_equal(got, want)
    # an existing CLS token at 0 is the same as one prepended global token
    np.testing.assert_array_equal(spec.pattern(n, n, window=w, num_global=1),
                                  spec.pattern(n, n, window=w, global_indices=(0,)))
    causal = spec.pattern(n, n, causal=True, window=w, num_global=2)
    want = _brute(n, n, lambda i, j: j <= i and (i - j <= w or i < 2 or j < 2))
    np.testing.assert_array_equal(causal, want)


# ------------------------------------------------------------------------------ bigbird blocks

@pytest.mark.parametrize("causal", [False, True])
def test_bigbird_random_blocks(causal):
    nq = nk = 12
    kw = dict(num_sliding=3, num_global=1, num_random=3, causal=causal)
    scores = jax.random.uniform(RNG, (nq, nk))
    idx, valid = map(np.asarray, bigbird.random_blocks(scores, nq, nk, **kw))
    static = bigbird.static_blocks(nq, nk, num_sliding=3, num_global=1, causal=False)
    for i in range(nq):
        picks = idx[i][valid[i]]
        cand = [j for j in range(nk) if not static[i, j] and (not causal or j < i)]
        assert len(picks) == min(3, len(cand)), (i, picks, cand)
        assert len(set(picks)) == len(picks) and set(picks) <= set(cand)
    spec = attention.get("bigbird")
    opts = dict(block=3, num_random=2)
    a = spec.pattern(30, 30, causal=causal, rng=RNG, **opts)
    assert np.array_equal(a, spec.pattern(30, 30, causal=causal, rng=RNG, **opts))
    assert not np.array_equal(a, spec.pattern(30, 30, causal=causal, rng=jax.random.PRNGKey(9), **opts))


def test_bigbird_global_blocks_are_the_first_and_the_last():
    """The paper's ITC form (google-research's code): the first and last blocks are global, as
    queries and as keys; global_at='start' keeps the first num_global only."""
    spec = attention.get("bigbird")
    opts = dict(block=3, num_sliding=1, num_random=0, rng=RNG)
    ends, start = (spec.pattern(15, 15, global_at=g, **opts) for g in ("ends", "start"))
    blocks = lambda m: m[::3, ::3].astype(int)  # noqa: E731 (one entry per block pair)
    np.testing.assert_array_equal(blocks(ends), [[1, 1, 1, 1, 1], [1, 1, 0, 0, 1], [1, 0, 1, 0, 1],
                                                 [1, 0, 0, 1, 1], [1, 1, 1, 1, 1]])
    np.testing.assert_array_equal(blocks(start), [[1, 1, 1, 1, 1], [1, 1, 0, 0, 0], [1, 0, 1, 0, 0],
                                                  [1, 0, 0, 1, 0], [1, 0, 0, 0, 1]])
    causal = spec.pattern(15, 15, causal=True, **opts)
    assert causal[12:].sum() == np.tril(np.ones((15, 15), bool))[12:].sum()  # the last block sees all past


def test_bigbird_params_blocks_are_fixed_and_exact():
    """random_source='params': the same blocks whatever the rng, equal to dense on chosen_pattern."""
    spec = attention.get("bigbird")
    opts = dict(block=3, num_random=2, random_source="params")
    q, k, v, ct = _inputs(L=17)
    params = spec.init(jax.random.PRNGKey(0), q, k, v, **opts)
    assert set(params) == {"random_scores"} and params["random_scores"].dtype == jnp.float32
    assert spec.pattern(17, 17, **opts) is None  # the blocks live in params
    f = jax.jit(lambda p, q, k, v, r: spec.apply(p, q, k, v, rng=r, **opts))
    out = f(params, q, k, v, RNG)
    np.testing.assert_array_equal(out, f(params, q, k, v, jax.random.PRNGKey(7)))
    chosen = spec.chosen_pattern(params, q, k, v, rng=None, **spec.options(**opts))[0, 0]
    ref = dense.attention({}, q, k, v, pattern=chosen)
    np.testing.assert_allclose(out, ref, atol=1e-5)
    with pytest.raises(ValueError, match="needs an rng"):
        spec.apply({}, q, k, v, block=3)


# --------------------------------------------------------------- split heads, exact vs dense

def test_sparse_transformer_split_heads_matches_dense():
    spec = attention.get("sparse_transformer")
    opts = dict(block=4, summary=1, split_heads=2, tile=4)
    q, k, v, ct = _inputs(L=13)
    km = jnp.asarray(np.arange(13) != 6)[None]
    pat = spec.pattern(13, 13, causal=True, **opts)
    f = lambda q, k, v: spec.apply({}, q, k, v, key_mask=km, causal=True, **opts)  # noqa: E731
    g = lambda q, k, v: dense.attention({}, q, k, v, key_mask=km, causal=True, pattern=pat)  # noqa: E731
    np.testing.assert_allclose(jax.jit(f)(q, k, v), g(q, k, v), atol=1e-5)
    loss = lambda fn: jax.jit(jax.grad(lambda q, k, v: jnp.sum(fn(q, k, v) * ct), argnums=(0, 1, 2)))  # noqa: E731
    for a, b in zip(loss(f)(q, k, v), loss(g)(q, k, v)):
        np.testing.assert_allclose(a, b, atol=1e-5)
    with pytest.raises(ValueError, match="split_heads"):
        spec.apply({}, *_inputs(H=4)[:3], **opts)


# ------------------------------------------------------------------------------------ mixture

def test_mixture_grammar():
    got = mixture.parse("local(window=64)*4 + strided(stride=64, span=(1, 2))*2+performer*2")
    assert got == (("local", 4, (("window", 64),)), ("strided", 2, (("stride", 64), ("span", (1, 2)))),
                   ("performer", 2, ()))
    assert mixture.parse("sparse_transformer(layout=strided)") == (
        ("sparse_transformer", 1, (("layout", "strided"),)),)
    as_list = [{"name": "local", "heads": 4, "window": 64}, {"name": "strided", "heads": 2}]
    assert mixture.parse(as_list) == mixture.parse("local(window=64)*4+strided*2")
    assert mixture.parse(mixture.to_string(as_list)) == mixture.parse(as_list)
    for bad in ("local(64)", "local(window=64", "local*0", "local(window=foo())"):
        with pytest.raises(ValueError):
            mixture.parse(bad)


@pytest.mark.parametrize("H", [1, 2, 3, 4, 8])
def test_mixture_defaults_run_at_any_head_count(H):
    spec = attention.get("mixture")
    q, k, v, _ = _inputs(L=9, H=H)
    out = spec.apply(spec.init(RNG, q, k, v), q, k, v, rng=RNG)
    assert out.shape == q.shape and np.all(np.isfinite(np.asarray(out)))
    # half local (rounded up), the rest strided: head 0 is local, the last head strided when H > 1
    counts = mixture.head_counts(spec.defaults["groups"], H)
    assert counts == [H - H // 2, H // 2]
    ref = attention.get("local").apply({}, q[:, :, :1], k[:, :, :1], v[:, :, :1], window=64)
    np.testing.assert_allclose(out[:, :, :1], ref, atol=1e-5)


def test_mixture_relative_counts():
    assert mixture.head_counts("dense*2 + local*1/4 + strided*rest", 8) == [2, 2, 4]
    assert mixture.head_counts("dense*1/3 + local*rest", 1) == [1, 0]
    with pytest.raises(ValueError, match="at most one group"):
        mixture.parse("dense*rest + local*rest")


def test_mixture_heads_and_late_registration():
    spec = attention.get("mixture")
    q, k, v, _ = _inputs(L=9, H=3)
    with pytest.raises(ValueError, match="cover 2 heads"):
        spec.apply(spec.init(RNG, q[:, :, :2], k[:, :, :2], v[:, :, :2], groups="dense*2"),
                   q, k, v, groups="dense*2")
    with pytest.raises(TypeError, match="has no option"):
        spec.apply({}, q, k, v, groups="local(no_such=1)*3")
    pat = spec.pattern(9, 9, groups="local(window=1)*2+strided(stride=3)")
    assert pat.shape == (3, 9, 9)
    np.testing.assert_array_equal(pat[1], masks.band_pattern(9, 9, 1))
    # a variant registered after mixture was imported is found at call time
    attention.register("late_dense", family="dense", exact=True, supports_causal=True,
                       impl=lambda p, q, k, v, **kw: dense.attention({}, q, k, v, key_mask=kw["key_mask"]),
                       pattern_fn=lambda L, S, **_: np.ones((L, S), bool))
    try:
        out = spec.apply({"g0": {}, "g1": {}}, q, k, v, groups="late_dense*2+local(window=1)")
        np.testing.assert_allclose(out[:, :, :2], dense.attention({}, q, k, v)[:, :, :2], atol=1e-5)
    finally:
        attention.unregister("late_dense")


# ------------------------------------------------------------------- engine log-sum-exp output

def test_block_sparse_lse_and_its_gradient():
    """lse == logsumexp of the visible logits (-inf when none); d(lse) is exact."""
    q, k, v, ct = _inputs(L=11, D=4)
    km = jnp.asarray(np.arange(11) >= 3)[None]  # keys 0..2 padded: causal rows 0..2 see nothing
    cl = jnp.asarray(np.random.RandomState(1).randn(1, 11, 2), jnp.float32)

    def mine(q, k, v):
        return block_sparse.attention(
            q, k, v, km, block_mask_fn=lambda nq, nk, bq, bk: block_sparse.band_block_mask(
                nq, nk, bq, bk, 0, 3), mask_fn=block_sparse.band_mask_fn(0, 3),
            block_q=4, block_k=4, return_lse=True)

    def ref(q, k, v):
        vis = masks.visible_mask(11, 11, key_mask=km, causal=True, pattern=masks.band_pattern(11, 11, 3))
        s = jnp.einsum("blhd,bshd->bhls", q, k) * 4 ** -0.5
        lse = jax.nn.logsumexp(jnp.where(vis, s, -jnp.inf), axis=-1).transpose(0, 2, 1)
        return dense.attention({}, q, k, v, key_mask=km, causal=True, pattern=masks.band_pattern(11, 11, 3)), lse

    (o1, l1), (o2, l2) = jax.jit(mine)(q, k, v), ref(q, k, v)
    np.testing.assert_allclose(o1, o2, atol=1e-5)
    assert np.all(np.isneginf(l1[0, :3])) and np.all(np.isneginf(l2[0, :3]))
    np.testing.assert_allclose(l1[0, 3:], l2[0, 3:], atol=1e-5)

    def loss(fn):
        def f(q, k, v):
            o, l = fn(q, k, v)
            return jnp.sum(o * ct[..., :4]) + jnp.sum(jnp.where(jnp.isfinite(l), l, 0.0) * cl)
        return jax.jit(jax.grad(f, argnums=(0, 1, 2)))

    for a, b in zip(loss(mine)(q, k, v), loss(ref)(q, k, v)):
        np.testing.assert_allclose(a, b, atol=1e-5)


# ------------------------------------------------- true sparsity at N = 8192 (traced, not run)

N = 8192


def _walk(jaxpr, sizes):
    for eqn in jaxpr.eqns:
        for var in eqn.outvars:
            sizes.append(int(np.prod(getattr(var.aval, "shape", ()), dtype=np.int64)))
        for p in eqn.params.values():
            for sub in (p if isinstance(p, (list, tuple)) else [p]):
                inner = getattr(sub, "jaxpr", sub)
                if hasattr(inner, "eqns"):
                    _walk(inner, sizes)


@pytest.mark.parametrize("name", ["strided", "sparse_transformer", "longformer", "bigbird"])
def test_truly_sparse_at_bench_options(name, monkeypatch):
    """Forward+backward at N=8192 never holds an array of N²/2 elements (an L×S matrix of one head has N²), and the tiles the
    engine visits cover at most 1/5 of the N² pairs (what makes it ≥5× cheaper than dense)."""
    spec = attention.get(name)
    opts = dict(spec.bench_options)
    pairs = []
    real = block_sparse.attention

    def counting(q, k, v, key_mask, *, block_mask_fn, **kw):
        def bm(nq, nk, bq, bk):
            m = block_mask_fn(nq, nk, bq, bk)
            pairs.append(int(np.sum(m)) * bq * bk * q.shape[0])  # batch folds count too
            return m
        return real(q, k, v, key_mask, block_mask_fn=bm, **kw)

    monkeypatch.setattr(block_sparse, "attention", counting)
    x = jax.ShapeDtypeStruct((1, N, 8, 64), jnp.float32)
    km = jax.ShapeDtypeStruct((1, N), jnp.bool_)
    for causal in (False, True):
        pairs.clear()
        loss = lambda q, k, v, m: jnp.sum(spec.apply({}, q, k, v, key_mask=m, causal=causal,  # noqa: E731
                                                     rng=RNG, **opts))
        sizes = []
        _walk(jax.make_jaxpr(jax.grad(loss, argnums=(0, 1, 2)))(x, x, x, km).jaxpr, sizes)
        assert max(sizes) < N * N // 2, f"{name}: an array of {max(sizes)} elements (N² = {N * N})"
        frac = sum(pairs) / (N * N)  # pairs in visited tiles, all engine calls of one apply
        assert 0 < frac <= 1 / 5, f"{name} (causal={causal}): visits {frac:.3f} of the N² pairs"
