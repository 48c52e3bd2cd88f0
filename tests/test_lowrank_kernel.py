"""Low-rank and kernel variants: each against the explicit formula it computes (outputs and
gradients), and each approximation against dense in its exact limit or as its option grows."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from attn_zoo import attention
from attn_zoo.attention.variants import dense, nystrom, performer

B, L, H, D = 2, 21, 2, 8
ATOL = 1e-5


def _inputs(seed=0, length=L, dim=D, scale=1.0, pad=0.3):
    r = np.random.RandomState(seed)
    q, k, v, ct = (jnp.asarray(r.randn(B, length, H, dim) * s, jnp.float32)
                   for s in (scale, scale, 1.0, 1.0))
    km = r.rand(B, length) >= pad
    km[:, 0] = True
    return q, k, v, ct, jnp.asarray(km)


def _value_and_grads(f, q, k, v, ct):
    loss = lambda q, k, v: jnp.sum(f(q, k, v) * ct)
    return jax.jit(lambda q, k, v: (f(q, k, v), jax.grad(loss, argnums=(0, 1, 2))(q, k, v)))(q, k, v)


def _assert_same(f, ref, q, k, v, ct, atol=ATOL):
    (out, grads), (rout, rgrads) = _value_and_grads(f, q, k, v, ct), _value_and_grads(ref, q, k, v, ct)
    np.testing.assert_allclose(out, rout, atol=atol, rtol=0)
    for g, rg in zip(grads, rgrads):
        np.testing.assert_allclose(g, rg, atol=atol, rtol=0)


def test_performer_features_are_orthogonal_and_fixed():
    w = np.asarray(performer.random_features(jax.random.PRNGKey(3), 20, 8))
    block = w[:8] / np.linalg.norm(w[:8], axis=1, keepdims=True)
    np.testing.assert_allclose(block @ block.T, np.eye(8), atol=1e-5)
    spec = attention.get("performer")
    q, k, v, _, km = _inputs(3)
    params = spec.init(jax.random.PRNGKey(0), q, k, v, num_features=8)
    run = lambda rng, **o: spec.apply(params, q, k, v, key_mask=km, rng=rng, num_features=8, **o)
    np.testing.assert_array_equal(run(jax.random.PRNGKey(1)), run(jax.random.PRNGKey(2)))
    assert not np.allclose(run(jax.random.PRNGKey(1), redraw=True), run(jax.random.PRNGKey(2), redraw=True))
    # the features are declared non-gradient state that no update changes
    assert spec.state_paths(num_features=8) == (("features",),) and spec.update is None
    g = jax.grad(lambda p: jnp.sum(spec.apply(p, q, k, v, key_mask=km, num_features=8)))(params)
    assert float(jnp.max(jnp.abs(g["features"]))) == 0.0


def test_performer_error_falls_with_features():
    """Mean |performer - dense| over 4 feature draws falls as num_features goes 64 → 256 → 1024.
    The first m rows of a 1024-row draw are an m-row draw (whole orthogonal blocks, iid norms)."""
    r = np.random.RandomState(4)
    q, k, v = (jnp.asarray(r.randn(1, 64, 2, 16) * s, jnp.float32) for s in (0.6, 0.6, 1.0))
    ref = dense.attention({}, q, k, v)
    spec = attention.get("performer")
    draw = jax.jit(jax.vmap(lambda rng: performer.random_features(rng, 1024, 16)))
    ws = draw(jax.random.split(jax.random.PRNGKey(5), 4))
    errs = []
    for m in (64, 256, 1024):
        f = jax.jit(jax.vmap(lambda w: spec.apply({"features": w}, q, k, v, num_features=m)))
        errs.append(float(jnp.mean(jnp.abs(f(ws[:, :m]) - ref[None]))))
    assert errs[0] > 1.4 * errs[1] > 1.4 ** 2 * errs[2], errs
    assert errs[2] < 0.02, errs


def test_nystrom_landmarks_equal_length_is_dense_when_well_conditioned():
    """With m = S and a well-conditioned softmax matrix (peaked keys), the fp32 limit is ~1e-6;
    the conformance suite checks random inputs (κ up to ~1e3) at the documented 1e-4."""
    r = np.random.RandomState(6)
    x = jnp.asarray(r.randn(B, L, H, D) * 1.5, jnp.float32)
    v = jnp.asarray(r.randn(B, L, H, D), jnp.float32)
    km = jnp.asarray(np.arange(L)[None, :] < np.array([[L], [15]]))
    spec = attention.get("nystrom")
    out = spec.apply({}, x, x, v, key_mask=km, num_landmarks=L, pinv_iters=20)
    ref = dense.attention({}, x, x, v, key_mask=km)
    np.testing.assert_allclose(out, ref, atol=ATOL, rtol=0)


def test_nystrom_segment_means_skip_padding():
    r = np.random.RandomState(7)
    x = r.randn(1, 10, 1, 3).astype(np.float32)
    mask = np.array([[1, 1, 0, 1, 0, 0, 0, 1, 1, 1]], bool)
    means, ok = nystrom.segment_means(jnp.asarray(x * 1.0), jnp.asarray(mask), 4)  # seg = 3
    expect = [x[0, [0, 1]].mean(0), x[0, [3]].mean(0), x[0, [7, 8]].mean(0), x[0, [9]].mean(0)]
    np.testing.assert_allclose(means[0], np.stack(expect), atol=1e-6)
    np.testing.assert_array_equal(ok, [[True, True, True, True]])
    _, ok = nystrom.segment_means(jnp.asarray(x), jnp.asarray(mask & (np.arange(10) < 3)), 4)
    np.testing.assert_array_equal(ok, [[True, False, False, False]])


def test_nystrom_pinv_is_moore_penrose():
    r = np.random.RandomState(8)
    a = r.rand(6, 6).astype(np.float32) + np.eye(6, dtype=np.float32)
    a[4] = 0  # a zero row (a masked query landmark): the pinv of a singular matrix
    z = np.asarray(nystrom.iterative_pinv(jnp.asarray(a), 30))
    np.testing.assert_allclose(z, np.linalg.pinv(a.astype(np.float64)), atol=1e-4)
    np.testing.assert_allclose(a @ z @ a, a, atol=1e-5)


def test_linformer_length_limit_and_projection():
    spec = attention.get("linformer")
    q, k, v, ct, km = _inputs(9)
    with pytest.raises(ValueError, match="max_length"):
        spec.apply({}, q, k, v, max_length=16, proj_dim=4)
    opts = dict(proj_dim=5, max_length=32, block=8)
    p = spec.init(jax.random.PRNGKey(0), q, k, v, **opts)
    f = lambda q, k, v: spec.apply(p, q, k, v, key_mask=km, **opts)
    e, fm = p["E"][:L], p["F"][:L]
    ref = lambda q, k, v: dense.attention(
        {}, q, jnp.einsum("bshd,sr->brhd", jnp.where(km[:, :, None, None], k, 0), e),
        jnp.einsum("bshd,sr->brhd", jnp.where(km[:, :, None, None], v, 0), fm))
    _assert_same(f, ref, q, k, v, ct)


@pytest.mark.parametrize("causal", [False, True])
def test_compressed_matches_explicit_formula(causal):
    q, k, v, ct, km = _inputs(10)
    spec = attention.get("compressed")
    c = 4
    opts = dict(compression=c, block=8)
    p = spec.init(jax.random.PRNGKey(0), q, k, v, **opts)
    f = lambda q, k, v: spec.apply(p, q, k, v, key_mask=km, causal=causal, **opts)
    nc = -(-L // c)
    kmp = np.pad(np.asarray(km), ((0, 0), (0, nc * c - L)))
    cmask = kmp.reshape(B, nc, c).any(-1)
    i = np.arange(L)[:, None]
    if causal:  # raw keys of the unfinished block, then compressed blocks finished by i
        raw = (np.arange(L)[None] >= (i + 1) // c * c) & (np.arange(L)[None] <= i)
        comp = np.arange(nc)[None] < (i + 1) // c
        pattern = np.concatenate([raw, comp], axis=1)
    else:
        pattern = np.ones((L, nc), bool)

    def ref(q, k, v):
        pad = lambda x: jnp.pad(jnp.where(km[:, :, None, None], x, 0), ((0, 0), (0, nc * c - L), (0, 0), (0, 0)))
        blocks = lambda x: pad(x).reshape(B, nc, c, H, D)
        kc = jnp.einsum("bjthd,htde->bjhe", blocks(k), p["w_k"])
        vc = jnp.einsum("bjthd,ht->bjhd", blocks(v), p["w_v"])
        if causal:
            kc, vc = jnp.concatenate([k, kc], 1), jnp.concatenate([v, vc], 1)
            mask = jnp.concatenate([km, jnp.asarray(cmask)], 1)
        else:
            mask = jnp.asarray(cmask)
        return dense.attention({}, q, kc, vc, key_mask=mask, pattern=pattern)

    _assert_same(f, ref, q, k, v, ct)
    if causal:  # query i sees every key <= i exactly once: row i of the pattern covers [0, i]
        covered = raw.sum(1) + comp.sum(1) * c
        np.testing.assert_array_equal(covered, np.arange(L) + 1)


def _array_sizes(jaxpr, sizes):
    for eqn in jaxpr.eqns:
        sizes.extend(int(np.prod(getattr(v.aval, "shape", ()), dtype=np.int64)) for v in eqn.outvars)
        for p in eqn.params.values():
            for sub in (p if isinstance(p, (list, tuple)) else [p]):
                inner = getattr(sub, "jaxpr", sub)
                if hasattr(inner, "eqns"):
                    _array_sizes(inner, sizes)
    return sizes


@pytest.mark.parametrize("name", ["linear", "performer", "linformer", "nystrom", "compressed"])
def test_no_quadratic_array_at_bench_options(name):
    """Forward+backward at N=8192 (traced, not run) holds no array of N²/2 elements or more (one
    head's L×S matrix is N²; the largest legitimate ones are O(N·H·M) features, N²/4 here)."""
    n = 8192
    spec = attention.get(name)
    opts = dict(spec.bench_options)
    x = jax.ShapeDtypeStruct((1, n, 8, 64), jnp.float32)
    km = jax.ShapeDtypeStruct((1, n), jnp.bool_)
    params = jax.eval_shape(lambda: spec.init(jax.random.PRNGKey(0), jnp.zeros(x.shape), jnp.zeros(x.shape),
                                              jnp.zeros(x.shape), **opts))
    for causal in (False, True) if spec.supports_causal else (False,):
        loss = lambda p, q, k, v, m: jnp.sum(spec.apply(p, q, k, v, key_mask=m, causal=causal, **opts))  # noqa: E731
        jaxpr = jax.make_jaxpr(jax.grad(loss, argnums=(1, 2, 3)))(params, x, x, x, km).jaxpr
        biggest = max(_array_sizes(jaxpr, []))
        assert biggest < n * n // 2, f"{name} (causal={causal}): an array of {biggest} elements"
