"""Data-driven and learned attention: reformer, routing, sinkhorn, synthesizer.

Exact limits (issue 6), "computes exactly the pairs it says" checks against a dense reference
restricted to the variant's own `chosen_pattern`, padding that cannot move a real token's
bucket / cluster / sorted block, the Sinkhorn permutation test, k-means updates, synthesizer
formulas. Tiny shapes; every reference is jitted.
"""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from attn_zoo import attention
from attn_zoo.attention.core import masks
from attn_zoo.attention.variants import reformer, routing, sinkhorn

B, N, H, D = 2, 21, 2, 8
ATOL = 1e-5
RNG = jax.random.PRNGKey(3)


def _inputs(seed=0, n=N, pad=0.3):
    r = np.random.RandomState(seed)
    q, k, v, ct = (jnp.asarray(r.randn(B, n, H, D), jnp.float32) for _ in range(4))
    km = r.rand(B, n) >= pad
    km[:, 0] = True
    return q, k, v, ct, jnp.asarray(km)


def _normalize(x):
    return x / jnp.maximum(jnp.linalg.norm(x, axis=-1, keepdims=True), 1e-6)


@jax.jit
def _dense_on(q, k, v, vis):
    """softmax(q·k/√D) v restricted to a per-(b, h) pattern vis [B, H, L, S]."""
    s = jnp.einsum("blhd,bshd->bhls", q, k) * q.shape[-1] ** -0.5
    return jnp.einsum("bhls,bshd->blhd", masks.masked_softmax(s, vis), v)


def _no_self(vis):
    eye = jnp.eye(vis.shape[-1], dtype=bool)
    return vis & (~eye | ~jnp.any(vis & ~eye, axis=-1, keepdims=True))


def _close(a, b, what):
    err = float(jnp.max(jnp.abs(a - b)))
    assert err <= ATOL, f"{what}: max abs difference {err:.3g}"


def _check_vs_dense(f, ref, q, k, v, ct, what):
    """Outputs and gradients (q, k, v) of f equal those of ref."""
    _close(f(q, k, v), ref(q, k, v), what)
    grads = [jax.grad(lambda *a: jnp.sum(g(*a) * ct), argnums=(0, 1, 2))(q, k, v) for g in (f, ref)]
    for a, b, name in zip(*grads, "qkv"):
        _close(a, b, f"d{name} {what}")


# ------------------------------------------------------------------------------------ reformer

@pytest.mark.parametrize("causal", [False, True])
def test_reformer_one_bucket_equals_dense_shared_qk(causal):
    """One bucket, a chunk covering the sequence: dense on (q, q/‖q‖), self only when alone."""
    spec = attention.get("reformer")
    q, k, v, ct, km = _inputs(1)
    opts = dict(n_hashes=2, n_buckets=1, chunk=N)
    params = spec.init(RNG, q, k, v, **opts)
    vis = masks.visible_mask(N, N, key_mask=km, causal=causal)
    vis = _no_self(jnp.broadcast_to(vis, (B, H, N, N)))
    f = jax.jit(lambda q, k, v: spec.apply(params, q, k, v, key_mask=km, causal=causal, **opts))
    ref = lambda q, k, v: _dense_on(q, _normalize(q), v, vis)  # noqa: E731
    _check_vs_dense(f, ref, q, k, v, ct, f"reformer one bucket (causal={causal})")


@pytest.mark.parametrize("causal,wrap", [(False, True), (False, False), (True, True)])
def test_reformer_computes_its_chosen_pairs_once(causal, wrap):
    """Several rounds, several buckets, padding: the output is the softmax over the union of the
    pairs it reports (each pair once, self only when alone) — outputs and gradients."""
    spec = attention.get("reformer")
    q, k, v, ct, km = _inputs(2)
    opts = dict(n_hashes=3, n_buckets=4, chunk=4, wrap=wrap)
    params = spec.init(RNG, q, k, v, **opts)
    vis = spec.chosen_pattern(params, q, k, v, key_mask=km, causal=causal, rng=None,
                              **spec.options(**opts))
    assert vis.shape == (B, H, N, N)
    assert not bool(jnp.all(vis | ~km[:, None, None, :])), "the pattern should be sparse"
    f = jax.jit(lambda q, k, v: spec.apply(params, q, k, v, key_mask=km, causal=causal, **opts))
    ref = lambda q, k, v: _dense_on(q, _normalize(q), v, vis)  # noqa: E731
    # the pattern is a function of q: hold it fixed for the gradient comparison (hashes are
    # piecewise constant, so the variant's own gradient treats it as fixed too)
    _check_vs_dense(f, ref, q, k, v, ct, f"reformer vs its pattern (causal={causal})")


@pytest.mark.parametrize("wrap", [True, False])
def test_reformer_look_back_rule(wrap):
    """Non-causal, one round: query i sees key j iff j is real and j's chunk of the sorted stream
    is i's or the one before; with wrap, chunk 0's 'before' is the last chunk (trax's roll)."""
    spec = attention.get("reformer")
    q, k, v, _, km = _inputs(4, pad=0.0)
    opts = spec.options(n_hashes=1, n_buckets=4, chunk=4, wrap=wrap)
    params = spec.init(RNG, q, k, v, **opts)
    _, _, valid, plan, c = reformer._plan(params, q, km, None, causal=False, n_hashes=1, n_buckets=4,
                                          chunk=4, rehash=False)
    spos = np.asarray(plan["spos"][0])  # [B, H, Np]
    n = spos.shape[-1] // c
    cq, ck = spos[..., :N, None] // c, spos[..., None, :N] // c
    want = (cq == ck) | (cq - 1 == ck) | (wrap & (cq == 0) & (ck == n - 1))
    want = np.asarray(_no_self(jnp.asarray(want & np.asarray(km)[:, None, None, :])))
    got = np.asarray(spec.chosen_pattern(params, q, k, v, key_mask=km, causal=False, rng=None, **opts))
    np.testing.assert_array_equal(got, want)
    assert wrap == bool(np.any(want & (cq == 0) & (ck == n - 1))), "no wrapped pair in this draw"


def test_reformer_padding_cannot_move_real_tokens():
    """Changing padded queries (its keys) and values changes no real token's output or pairs."""
    spec = attention.get("reformer")
    q, k, v, _, km = _inputs(3, pad=0.4)
    opts = spec.options(n_hashes=2, n_buckets=4, chunk=4)
    params = spec.init(RNG, q, k, v, **opts)
    pad = ~km[:, :, None, None]
    r = np.random.RandomState(9)
    q2 = jnp.where(pad, jnp.asarray(10 * r.randn(*q.shape), jnp.float32), q)
    v2 = jnp.where(pad, jnp.asarray(10 * r.randn(*v.shape), jnp.float32), v)
    for causal in (False, True):
        run = lambda q, v: spec.apply(params, q, k, v, key_mask=km, causal=causal, **opts)  # noqa: E731
        pat = lambda q: spec.chosen_pattern(params, q, k, v, key_mask=km, causal=causal,  # noqa: E731
                                            rng=None, **opts)
        real = km[:, :, None, None]
        _close(jnp.where(real, run(q2, v2), 0), jnp.where(real, run(q, v), 0), f"causal={causal}")
        same = jnp.where(km[:, None, :, None], pat(q2) == pat(q), True)
        assert bool(jnp.all(same)), f"padding moved a real token's pairs (causal={causal})"


def test_reformer_hashes_differ_per_layer_and_rehash_uses_rng():
    spec = attention.get("reformer")
    q, k, v, _, km = _inputs(4)
    opts = spec.options(n_hashes=1, n_buckets=4, chunk=4, rehash=True)
    p1 = spec.init(jax.random.PRNGKey(1), q, k, v, **opts)
    p2 = spec.init(jax.random.PRNGKey(2), q, k, v, **opts)
    assert not np.allclose(p1["rotations"], p2["rotations"])
    pat = lambda p, rng: spec.chosen_pattern(p, q, k, v, key_mask=km, causal=False, rng=rng, **opts)  # noqa: E731
    assert bool(jnp.all(pat(p1, None) == pat(p1, None)))
    assert bool(jnp.any(pat(p1, None) != pat(p2, None)))
    assert bool(jnp.any(pat(p1, jax.random.PRNGKey(5)) != pat(p1, jax.random.PRNGKey(6))))
    assert bool(jnp.all(pat(p1, jax.random.PRNGKey(5)) == pat(p2, jax.random.PRNGKey(5))))


# ------------------------------------------------------------------------------------- routing

def test_routing_causal_computes_its_chosen_pairs():
    """Causal routing: each query sees exactly the w most recent keys of its cluster."""
    spec = attention.get("routing")
    q, k, v, ct, km = _inputs(5)
    opts = dict(num_clusters=3, window=4)
    params = spec.init(RNG, q, k, v, **opts)
    vis = spec.chosen_pattern(params, q, k, v, key_mask=km, causal=True, rng=None,
                              **spec.options(**opts))
    assert bool(jnp.all(jnp.sum(vis, axis=-1) <= 4))
    assert not bool(jnp.any(vis & ~jnp.tril(jnp.ones((N, N), bool))))
    f = jax.jit(lambda q, k, v: spec.apply(params, q, k, v, key_mask=km, causal=True, **opts))
    _check_vs_dense(f, lambda q, k, v: _dense_on(q, k, v, vis), q, k, v, ct, "routing causal")


def test_routing_clusters_one_cluster_each_equals_dense_on_pattern():
    """Non-causal routing where every query lands in exactly one cluster is dense on the pattern."""
    spec = attention.get("routing")
    q, k, v, ct, km = _inputs(6)
    # two centroids, e and -e: the top-w of each are disjoint halves when w = N/2 is fine
    e = jnp.zeros((H, D)).at[:, 0].set(1.0)
    params = {"centroids": jnp.stack([e, -e], axis=1)}
    opts = dict(num_clusters=2, window=0)
    qidx, _ = routing._members(params, q, k, km, 2, 0)
    counts = jax.vmap(jax.vmap(lambda i: jnp.zeros(N, jnp.int32).at[i.reshape(-1)].add(1)))(qidx)
    vis = spec.chosen_pattern(params, q, k, v, key_mask=km, causal=False, rng=None, **spec.options(**opts))
    f = jax.jit(lambda q, k, v: spec.apply(params, q, k, v, key_mask=km, causal=False, **opts))
    out, ref = f(q, k, v), _dense_on(q, k, v, vis)
    once = jnp.swapaxes(counts == 1, 1, 2)[..., None]
    assert int(jnp.sum(once)) > N, "the test needs queries that sit in one cluster"
    _close(jnp.where(once, out, 0), jnp.where(once, ref, 0), "routing single-cluster queries")


def test_routing_padding_cannot_move_real_members():
    spec = attention.get("routing")
    q, k, v, _, km = _inputs(7, pad=0.4)
    opts = spec.options(num_clusters=3, window=5)
    params = spec.init(RNG, q, k, v, **opts)
    pad = ~km[:, :, None, None]
    r = np.random.RandomState(10)
    noisy = lambda x: jnp.where(pad, jnp.asarray(10 * r.randn(*x.shape), jnp.float32), x)  # noqa: E731
    q2, k2, v2 = noisy(q), noisy(k), noisy(v)
    real = km[:, :, None, None]
    for causal in (False, True):
        run = lambda q, k, v: spec.apply(params, q, k, v, key_mask=km, causal=causal, **opts)  # noqa: E731
        _close(jnp.where(real, run(q2, k2, v2), 0), jnp.where(real, run(q, k, v), 0), f"causal={causal}")
        pat = lambda q, k: spec.chosen_pattern(params, q, k, v, key_mask=km, causal=causal,  # noqa: E731
                                               rng=None, **opts)
        same = jnp.where(km[:, None, :, None], pat(q2, k2) == pat(q, k), True)
        assert bool(jnp.all(same)), f"padding moved a real token's cluster (causal={causal})"


def test_routing_update_is_ema_kmeans():
    """update moves each centroid toward the mean of its nearest real tokens; padding is ignored."""
    spec = attention.get("routing")
    q, k, v, _, km = _inputs(8)
    opts = spec.options(num_clusters=3, decay=0.5)
    params = spec.init(RNG, q, k, v, **opts)
    new = spec.update(params, q, k, v, key_mask=km, **opts)
    mu = params["centroids"]
    x = jnp.concatenate([_normalize(q), _normalize(k)], axis=1)  # [B, 2N, H, D]
    valid = jnp.concatenate([km, km], axis=1)
    for h in range(H):
        xs = x[:, :, h][valid]
        near = jnp.argmax(xs @ mu[h].T, axis=-1)
        for c in range(3):
            sel = xs[near == c]
            want = mu[h, c] if len(sel) == 0 else _normalize(0.5 * mu[h, c] + 0.5 * sel.mean(0))
            np.testing.assert_allclose(new["centroids"][h, c], want, atol=1e-5)
    # padded tokens do not move centroids
    noisy = jnp.where(~km[:, :, None, None], 100.0, q)
    np.testing.assert_allclose(spec.update(params, noisy, k, v, key_mask=km, **opts)["centroids"],
                               new["centroids"], atol=1e-6)
    # and the routing state is not a gradient path
    g = jax.grad(lambda p: jnp.sum(spec.apply(p, q, k, v, key_mask=km, **opts)))(params)
    assert float(jnp.max(jnp.abs(g["centroids"]))) == 0.0


# ------------------------------------------------------------------------------------ sinkhorn

@pytest.mark.parametrize("causal", [False, True])
def test_sinkhorn_forced_permutation_attends_the_named_block(causal, monkeypatch):
    """With the sorting network forced to a known permutation, query block i attends exactly to
    its own block and to block σ(i) (not a mixture of blocks): outputs and gradients equal dense
    on that pattern, and chosen_pattern names those blocks."""
    spec = attention.get("sinkhorn")
    q, k, v, ct, km = _inputs(11)
    b, n = 4, 6  # 21 = 5 blocks of 4 + 1: internal padding too
    sigma = np.array([0, 0, 1, 0, 2, 3]) if causal else np.array([3, 5, 1, 0, 2, 4])  # 1 -> 1: seen once
    forced = jnp.asarray(50.0 * np.eye(n)[sigma], jnp.float32)
    monkeypatch.setattr(sinkhorn, "block_scores", lambda params, qbar, kbar: jnp.broadcast_to(
        forced, qbar.shape[:2] + (n, n)))
    # a fresh jit, so no program traced with the real sorting network is reused (and none leaks out)
    monkeypatch.setattr(sinkhorn, "_attention", jax.jit(
        sinkhorn._attention.__wrapped__, static_argnames=("causal", "block", "sinkhorn_iters", "temperature")))
    opts = dict(block=b, sinkhorn_iters=8, temperature=0.5)
    params = spec.init(RNG, q, k, v, **opts)
    blk = np.arange(N) // b
    want = (blk[:, None] == blk[None, :]) | (sigma[blk][:, None] == blk[None, :])
    if causal:
        want &= (blk[:, None] > 0) | (blk[:, None] == blk[None, :])
        want &= np.tril(np.ones((N, N), bool))
    want = jnp.asarray(want)[None, None] & km[:, None, None, :]
    vis = spec.chosen_pattern(params, q, k, v, key_mask=km, causal=causal, rng=None,
                              **spec.options(**opts))
    assert bool(jnp.all(vis == want)), "chosen_pattern does not name the forced blocks"
    f = lambda q, k, v: spec.apply(params, q, k, v, key_mask=km, causal=causal, **opts)  # noqa: E731
    _check_vs_dense(f, lambda q, k, v: _dense_on(q, k, v, want), q, k, v, ct,
                    f"sinkhorn forced permutation (causal={causal})")


def test_sinkhorn_is_a_permutation_padding_cannot_move_it_and_the_sort_learns():
    spec = attention.get("sinkhorn")
    q, k, v, _, km = _inputs(12, n=32, pad=0.3)
    opts = spec.options(block=4, sinkhorn_iters=5, temperature=0.75)
    params = spec.init(RNG, q, k, v, **opts)
    pad = ~km[:, :, None, None]
    r = np.random.RandomState(13)
    noisy = lambda x: jnp.where(pad, jnp.asarray(10 * r.randn(*x.shape), jnp.float32), x)  # noqa: E731
    for rng in (None, RNG):
        qb, kb = sinkhorn._blocked(q, 4), sinkhorn._blocked(k, 4)
        valid = sinkhorn._valid(km, B, 32, 4)
        P, perm, _ = sinkhorn._plan(params, qb, kb, valid, rng, causal=False, sinkhorn_iters=5,
                                    temperature=0.75)
        assert bool(jnp.all(jnp.sort(perm, axis=-1) == jnp.arange(8))), "not a permutation"
        np.testing.assert_array_equal(P, jax.nn.one_hot(perm, 8))  # hard in the forward pass
        _, perm2, _ = sinkhorn._plan(params, sinkhorn._blocked(noisy(q), 4), sinkhorn._blocked(noisy(k), 4),
                                     valid, rng, causal=False, sinkhorn_iters=5, temperature=0.75)
        np.testing.assert_array_equal(perm2, perm)
    # the sorting network gets a gradient (straight through the soft permutation)
    g = jax.grad(lambda p: jnp.sum(spec.apply(p, q, k, v, key_mask=km, **opts) ** 2))(params)
    assert float(jnp.max(jnp.abs(g["sort_q"]))) > 0 and float(jnp.max(jnp.abs(g["sort_k"]))) > 0


# --------------------------------------------------------------------------------- synthesizer

def test_synthesizer_formulas():
    spec = attention.get("synthesizer")
    q, k, v, _, km = _inputs(14)
    vis = masks.visible_mask(N, N, key_mask=km, causal=True)
    attend = lambda g: jnp.einsum("bhls,bshd->blhd", masks.masked_softmax(g, vis), v)  # noqa: E731
    run = lambda p, **o: spec.apply(p, q, k, v, key_mask=km, causal=True, max_length=24, **o)  # noqa: E731

    p = spec.init(RNG, q, k, v, mode="random", max_length=24)
    _close(run(p, mode="random"), attend(p["random"][None, :, :N, :N]), "random")

    p = spec.init(RNG, q, k, v, mode="factorized_random", max_length=24, factors=3)
    r = jnp.einsum("hlf,hsf->hls", p["r1"], p["r2"])
    _close(run(p, mode="factorized_random", factors=3), attend(r[None, :, :N, :N]), "factorized_random")
    _close(run(p, mode="factorized_random", factors=3), run({"random": r}, mode="random"),
           "factorized random is random with R = R1 R2ᵀ")

    def mlp(m, x):
        return jax.nn.relu(x @ m["w1"] + m["b1"]) @ m["w2"] + m["b2"]

    per_head = lambda m, h: jax.tree.map(lambda a: a[h], m)  # noqa: E731
    p = spec.init(RNG, q, k, v, mode="dense", max_length=24, hidden=6)
    g = jnp.stack([mlp(per_head(p["mlp"], h), q[:, :, h])[..., :N] for h in range(H)], axis=1)
    _close(run(p, mode="dense", hidden=6), attend(g), "dense")
    dot = jnp.einsum("blhd,bshd->bhls", q, k) / np.sqrt(D)
    _close(run(p, mode="dense", hidden=6, mix_dot=True), attend(g + dot), "dense + dot")

    p = spec.init(RNG, q, k, v, mode="factorized_dense", max_length=24, hidden=6, factors=5)
    a = jnp.stack([mlp(per_head(p["mlp_a"], h), q[:, :, h]) for h in range(H)], axis=1)
    bb = jnp.stack([mlp(per_head(p["mlp_b"], h), q[:, :, h]) for h in range(H)], axis=1)
    g = jnp.stack([a[..., j % 5] * bb[..., j // 5] for j in range(N)], axis=-1)
    _close(run(p, mode="factorized_dense", hidden=6, factors=5), attend(g), "factorized dense")

    # dense and factorized_random run on the tile engine: their gradients (to the synthesizer's
    # parameters and to q, k, v) equal those through the explicit logits
    ct = jax.random.normal(jax.random.PRNGKey(7), v.shape)
    p = spec.init(RNG, q, k, v, mode="dense", max_length=24, hidden=6)

    def explicit(p, q, k, v):
        g = jnp.stack([mlp(per_head(p["mlp"], h), q[:, :, h])[..., :N] for h in range(H)], axis=1)
        g = g + jnp.einsum("blhd,bshd->bhls", q, k) / np.sqrt(D)
        return jnp.einsum("bhls,bshd->blhd", masks.masked_softmax(g, vis), v)

    engine = lambda p, q, k, v: spec.apply(p, q, k, v, key_mask=km, causal=True, max_length=24,  # noqa: E731
                                           mode="dense", hidden=6, mix_dot=True, block=8)
    grads = [jax.grad(lambda *a: jnp.sum(f(*a) * ct), argnums=(0, 1, 2, 3))(p, q, k, v)
             for f in (engine, explicit)]
    for got, want in zip(jax.tree.leaves(grads[0]), jax.tree.leaves(grads[1])):
        _close(got, want, "dense synthesizer gradient")

    # fixed random matrices get no gradient; learned ones do
    p = spec.init(RNG, q, k, v, mode="random", max_length=24)
    for fixed in (False, True):
        gr = jax.grad(lambda p: jnp.sum(run(p, mode="random", fixed=fixed) ** 2))(p)["random"]
        assert (float(jnp.max(jnp.abs(gr))) == 0.0) == fixed


def test_synthesizer_max_length_is_stated_and_enforced():
    spec = attention.get("synthesizer")
    assert spec.max_length == "max_length"
    q, k, v, _, _ = _inputs(15)
    p = spec.init(RNG, q, k, v, mode="random", max_length=16)
    with pytest.raises(ValueError, match="max_length=16"):
        spec.apply(p, q, k, v, mode="random", max_length=16)
