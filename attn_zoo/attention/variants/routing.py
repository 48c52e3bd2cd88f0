"""`routing`: Routing Transformer attention (Roy et al. 2021), online k-means routing.

Queries and keys are L2-normalized and scored against `num_clusters` unit centroids. Each
centroid takes its top-w queries and top-w keys (balanced, fixed capacity: static shapes);
attention runs inside each cluster (logits q·k/√D) and results are scattered back; a query
chosen by several centroids gets their softmaxes combined with weights exp(lse), i.e. attention
over all the keys it was routed to; a query no centroid chose outputs zeros. Padded tokens score
−∞, so they fill a cluster only after every real token and never push one out.
Causal: a top-w choice depends on later tokens (a leak), so each token instead joins the centroid
nearest its query q̂ (as a query and as a key) and a query sees the w most recent real keys
j <= i of its cluster, itself included (`bucketing.causal_window_attention`).
Cost: O(N·K·D) routing + O(N·w·D) attention.

State: params["centroids"] [H, K, D], unit rows, non-gradient (stop_gradient); `update` is the pure
exponential-moving-average k-means step the train step applies. Random unit centroids from `init`
route sensibly before any training.
"""
from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp

from attn_zoo.attention.core import bucketing as bk
from attn_zoo.attention.core import decode
from attn_zoo.attention.core import masks
from attn_zoo.attention.core.options import option
from attn_zoo.attention.core.registry import register

F32 = jnp.float32
@dataclasses.dataclass(frozen=True)
class Options:
    num_clusters: int = option(4, "K: k-means centroids", min=1)
    window: int = option(0, "w: queries and keys per cluster (0: N/K)", min=0)
    decay: float = option(0.999, "EMA decay of the k-means update", min=0.0, max=1.0)


def _normalize(x):
    return x * jax.lax.rsqrt(jnp.maximum(jnp.sum(x * x, axis=-1, keepdims=True), 1e-12))


def init(rng, q, k, v, *, num_clusters, **_):
    H, D = q.shape[2], q.shape[3]
    return {"centroids": _normalize(jax.random.normal(rng, (H, num_clusters, D), F32))}


def _centroids(params, H, D, num_clusters):
    mu = params["centroids"]
    if mu.shape != (H, num_clusters, D):
        raise ValueError(f"routing: params['centroids'] is {mu.shape}, expected {(H, num_clusters, D)}")
    return jax.lax.stop_gradient(mu.astype(F32))


def update(params, q, k, v, *, key_mask=None, num_clusters, decay, **_):
    """One EMA k-means step: each centroid moves toward the mean of the real normalized queries
    and keys nearest to it, μ ← normalize(decay·μ + (1 − decay)·mean); unchosen ones stay."""
    B, L, H, D = q.shape
    mu = _centroids(params, H, D, num_clusters)
    x = jnp.concatenate([_normalize(q.astype(F32)), _normalize(k.astype(F32))], axis=1)
    kv = jnp.ones((B, k.shape[1]), bool) if key_mask is None else key_mask
    qv = kv if L == k.shape[1] else jnp.ones((B, L), bool)
    valid = jnp.concatenate([qv, kv], axis=1)
    x = jnp.where(valid[:, :, None, None], x, 0.0)  # a masked key's NaN must not reach the sums
    nearest = jnp.argmax(jnp.einsum("bnhd,hkd->bhnk", x, mu), axis=-1)
    onehot = jax.nn.one_hot(nearest, num_clusters, dtype=F32) * valid[:, None, :, None]
    sums = jnp.einsum("bhnk,bnhd->hkd", onehot, x)
    counts = jnp.sum(onehot, axis=(0, 2))[..., None]
    moved = _normalize(decay * mu + (1 - decay) * sums / jnp.maximum(counts, 1.0))
    return {**params, "centroids": jax.lax.stop_gradient(jnp.where(counts > 0, moved, mu))}


def _sizes(L, S, num_clusters, window):
    wq = min(window, L) if window else -(-L // num_clusters)
    wk = min(window, S) if window else -(-S // num_clusters)
    return wq, wk


def _valid(key_mask, B, L, S):
    kv = jnp.ones((B, S), bool) if key_mask is None else key_mask
    return (kv if L == S else jnp.ones((B, L), bool)), kv


def _members(params, q, k, key_mask, num_clusters, window):
    """Top-w queries and keys of every centroid: (qidx [B, H, K, wq], kidx [B, H, K, wk])."""
    B, L, H, D = q.shape
    S = k.shape[1]
    wq, wk = _sizes(L, S, num_clusters, window)
    mu = _centroids(params, H, D, num_clusters)
    qv, kv = _valid(key_mask, B, L, S)

    def top(x, valid, w):
        s = jnp.einsum("bhnd,hkd->bhkn", jax.lax.stop_gradient(_normalize(x)), mu)
        return jax.lax.top_k(jnp.where(valid[:, None, None, :], s, -jnp.inf), w)[1]

    return top(bk.heads_first(q), qv, wq), top(bk.heads_first(k), kv, wk)


def _causal_plan(params, q, key_mask, num_clusters, window):
    """Nearest-centroid buckets of the queries (keys of padding: bucket K) and their sorts."""
    B, L, H, D = q.shape
    c = _sizes(L, L, num_clusters, window)[0]
    pad = (-L) % c
    qh = jnp.pad(bk.heads_first(q), ((0, 0), (0, 0), (0, pad), (0, 0)))
    valid = jnp.ones((B, L), bool) if key_mask is None else key_mask
    valid = jnp.pad(valid, ((0, 0), (0, pad)))[:, None, :]
    mu = _centroids(params, H, D, num_clusters)
    x = jax.lax.stop_gradient(_normalize(qh))
    qb = jnp.argmax(jnp.einsum("bhnd,hkd->bhnk", x, mu), axis=-1).astype(jnp.int32)[None]
    plan = bk.causal_plan(qb, jnp.where(valid[None], qb, num_clusters))
    return valid, plan, c, pad


@functools.partial(jax.jit, static_argnames=("causal", "num_clusters", "window"))
def _attention(params, q, k, v, key_mask, *, causal, num_clusters, window):
    B, L, H, D = q.shape
    S = k.shape[1]
    if causal:
        valid, plan, c, pad = _causal_plan(params, q, key_mask, num_clusters, window)
        qh, kh, vh = (jnp.pad(bk.heads_first(x), ((0, 0), (0, 0), (0, pad), (0, 0))) for x in (q, k, v))
        out, _ = bk.causal_window_attention(qh, kh, vh, valid, plan, 0, window=c, scale=D ** -0.5,
                                            no_self=False)
        return jnp.swapaxes(out[:, :, :L], 1, 2)
    qidx, kidx = _members(params, q, k, key_mask, num_clusters, window)
    K, wq, wk = qidx.shape[2], qidx.shape[3], kidx.shape[3]
    flat = lambda i: i.reshape(B, H, -1)  # noqa: E731
    tile = lambda x, i, w: bk.gather(x, flat(i)).reshape(B, H, K, w, x.shape[-1])  # noqa: E731
    kv = _valid(key_mask, B, L, S)[1]
    kvalid = jnp.take_along_axis(jnp.broadcast_to(kv[:, None], (B, H, S)), flat(kidx), axis=2)
    out, lse = bk.tile_attention(tile(bk.heads_first(q), qidx, wq), tile(bk.heads_first(k), kidx, wk),
                                 tile(bk.heads_first(v), kidx, wk),
                                 kvalid.reshape(B, H, K, 1, wk), scale=D ** -0.5)
    out = bk.scatter_combine(out.reshape(B, H, K * wq, -1), lse.reshape(B, H, K * wq), flat(qidx), L)
    return jnp.swapaxes(out, 1, 2)


def attention(params, q, k, v, *, key_mask, causal, rng, num_clusters, window, decay):
    del rng, decay
    _sizes(q.shape[1], k.shape[1], num_clusters, window)
    k, v = masks.hide_masked(key_mask, k, v)  # tiles may hold masked keys: no 0·NaN from them
    return _attention(params, q, k, v, key_mask, causal=causal, num_clusters=num_clusters,
                      window=window).astype(q.dtype)


def chosen_pattern(params, q, k, v, *, key_mask, causal, rng, num_clusters, window, decay):
    """bool [B, H, L, S]: query l and key s share a cluster (causal: the sorted window)."""
    B, L, H, D = q.shape
    S = k.shape[1]
    if causal:
        valid, plan, c, _ = _causal_plan(params, q, key_mask, num_clusters, window)
        vis = bk.causal_window_pattern(valid, plan, window=c, no_self=False)
        return vis[:, :, :L, :L]
    qidx, kidx = _members(params, q, k, key_mask, num_clusters, window)
    in_q = jnp.zeros((B, H, num_clusters, L), bool).at[
        jnp.arange(B)[:, None, None, None], jnp.arange(H)[None, :, None, None],
        jnp.arange(num_clusters)[None, None, :, None], qidx].set(True)
    in_k = jnp.zeros((B, H, num_clusters, S), bool).at[
        jnp.arange(B)[:, None, None, None], jnp.arange(H)[None, :, None, None],
        jnp.arange(num_clusters)[None, None, :, None], kidx].set(True)
    both = jnp.einsum("bhcl,bhcs->bhls", in_q.astype(F32), in_k.astype(F32)) > 0
    return both & _valid(key_mask, B, L, S)[1][:, None, None, :]


def state_size(L, H, D, *, num_clusters, window, **_):
    """2·H·D·min(L, K·w) (window 0, w = ⌈L/K⌉: 2·L·H·D): a causal query sees the w most recent
    keys of its cluster, so a decoder keeps that many per cluster."""
    return 2 * H * D * (min(L, num_clusters * window) if window else L)


def _decode_buckets(params, q_t, *, rng, num_clusters, **_):
    """int32 [B, H, 1]: the centroid nearest position t's normalized query (the causal rule)."""
    del rng
    B, _, H, D = q_t.shape
    mu = _centroids(params, H, D, num_clusters)
    s = jnp.einsum("bhd,hkd->bhk", _normalize(q_t[:, 0].astype(F32)), mu)
    return jnp.argmax(s, axis=-1).astype(jnp.int32)[..., None]


# a full KV cache and each position's cluster (more than state_size's per-cluster windows)
DECODER = decode.bucket_decoder(
    _decode_buckets, lambda n, /, *, num_clusters, window, **_: _sizes(n, n, num_clusters, window)[0])

SPEC = register(
    "routing", family="clustering", exact=False, supports_causal=True, impl=attention,
    options=Options, init_fn=init, state=("centroids",), update=update, chosen_pattern=chosen_pattern,
    state_size=state_size, decode_init_fn=DECODER[0], decode_step_fn=DECODER[1],
    complexity="O(N·K·D + N·w·D)",
    description="Online k-means routing: each centroid's top-w queries and keys attend within the cluster.",
    test_options=({"num_clusters": 3, "window": 5},),
    bench_options={"num_clusters": 90, "window": 0},
    exact_limit=lambda L, S: {"num_clusters": 1, "window": max(L, S)},
)
