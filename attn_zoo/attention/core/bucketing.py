"""Static-shape bucketing shared by the data-driven variants (`reformer`, `routing`, `sinkhorn`).

JAX needs static shapes, so ragged groups (LSH buckets, k-means clusters, sorted blocks) become
fixed-capacity tiles: tokens are gathered into [B, H, n, C, D] tiles, attention runs inside each
tile, and results are scattered back. Layouts:
  * sort-and-chunk (`sorted_chunk_attention`): tokens sorted by (bucket, position) (O(N log N)),
    cut into chunks of C; a query chunk sees its own and the previous chunk (wrap: the first
    chunk's previous is the last). O(N·C).
  * causal window (`causal_window_attention`): a query sees the C most recent real keys j <= i of
    its own bucket, a set no later token can change (chunk membership after a sort can: a leak).
  * top-w membership (`scatter_combine`): each centroid takes a fixed number of tokens; a token in
    several groups gets the softmax over the union of what it saw.
Tiles return their log-sum-exp, so partial softmaxes combine exactly (`lse.merge`); over several
hash rounds a pair seen n times has its logit lowered by log n, so it counts once.
Layout inside: heads first, x [B, H, N, D]; token attributes [B, H, N] (rounds: [R, B, H, N]).
"""
from __future__ import annotations

import jax
import jax.numpy as jnp

F32 = jnp.float32
SELF_LOGIT = -1e5  # Reformer's "not to itself unless alone": a logit no real score goes below


def heads_first(x):
    """[B, N, H, D] -> [B, H, N, D] in fp32 (all bucketed math accumulates in fp32)."""
    return jnp.swapaxes(x, 1, 2).astype(F32)


def gather(x, idx):
    """x [B, H, N, ...], idx int [B, H, M] -> [B, H, M, ...] (rows idx of each (b, h))."""
    idx = idx.reshape(idx.shape + (1,) * (x.ndim - 3))
    return jnp.take_along_axis(x, idx, axis=2)


def sort_by_bucket(buckets):
    """buckets int [..., N] -> (perm, spos) int [..., N]: perm[p] = token at sorted place p,
    sorted by (bucket, position); spos[t] = sorted place of token t. O(N log N)."""
    n = buckets.shape[-1]
    iota = jnp.broadcast_to(jnp.arange(n, dtype=jnp.int32), buckets.shape)
    _, perm = jax.lax.sort((buckets.astype(jnp.int32), iota), dimension=buckets.ndim - 1, num_keys=2)
    _, spos = jax.lax.sort((perm, iota), dimension=buckets.ndim - 1, num_keys=1)
    return perm, spos


def chunks(x, c, axis=2):
    """[B, H, N, ...] -> [B, H, N//c, c, ...] (the sequence at `axis`)."""
    return x.reshape(x.shape[:axis] + (x.shape[axis] // c, c) + x.shape[axis + 1:])


def look_back(x, c, axis=2):
    """[B, H, N, ...] -> [B, H, N//c, 2c, ...]: each chunk's previous chunk, then itself.
    (Chunk 0's 'previous' is the last chunk: `own_or_back` says whether that slot counts.)"""
    xc = chunks(x, c, axis)
    return jnp.concatenate([jnp.roll(xc, 1, axis=axis), xc], axis=axis + 1)


def own_or_back(n, c, wrap=False):
    """bool [n, 1, 2c]: which look-back slots are real. Without wrap chunk 0 has no previous
    chunk; with it, chunk 0 looks back to chunk n-1, unless n = 1 (that would be itself again)."""
    if wrap and n > 1:
        return jnp.ones((n, 1, 2 * c), bool)
    first = jnp.arange(n)[:, None, None] == 0
    back = jnp.arange(2 * c)[None, None, :] < c
    return ~(first & back)


def chunk_rule(sq, sk, c, n=None, wrap=False):
    """Does a query at sorted place sq see the key at sorted place sk? Own or previous chunk;
    with wrap (n chunks, n > 1), chunk 0's previous is chunk n-1."""
    d = sq // c - sk // c
    seen = (d == 0) | (d == 1)
    return seen | (d == 1 - n) if wrap and n > 1 else seen


def tile_attention(q, k, v, visible, *, scale, bias=None, fixed=None):
    """Softmax attention inside tiles, fp32; returns (out [..., C, Dv], lse [..., C]).

    q [..., C, D], k [..., K, D], v [..., K, Dv], visible bool [..., C, K]; bias (fp32, added to
    the logits) and fixed (bool: logit replaced by SELF_LOGIT) broadcast like visible.
    Rows with no visible key give out = 0 and lse = -inf, with finite gradients.
    """
    s = jnp.einsum("...cd,...kd->...ck", q, k, preferred_element_type=F32) * scale
    if fixed is not None:
        s = jnp.where(fixed, SELF_LOGIT, s)
    if bias is not None:
        s = s + bias
    s = jnp.where(visible, s, jnp.finfo(F32).min)
    m = jax.lax.stop_gradient(jnp.max(s, axis=-1, keepdims=True))
    p = jnp.where(visible, jnp.exp(s - m), 0.0)
    denom = jnp.sum(p, axis=-1)
    safe = jnp.where(denom > 0, denom, 1.0)
    out = jnp.einsum("...ck,...kd->...cd", p, v, preferred_element_type=F32) / safe[..., None]
    lse = jnp.where(denom > 0, m[..., 0] + jnp.log(safe), -jnp.inf)
    return out, lse


def scatter_combine(outs, lses, idx, n):
    """Tile rows back to tokens: outs [B, H, M, Dv], lses [B, H, M], idx [B, H, M] in [0, n).

    A token that appears in several rows gets their softmaxes combined by log-sum-exp (weights
    exp(lse)); a token in no row gets zeros. O(M) scatters.
    """
    B, H, M, Dv = outs.shape
    flat = (idx + n * jnp.arange(B * H).reshape(B, H, 1)).reshape(-1)
    m = jnp.full((B * H * n,), -jnp.inf, F32).at[flat].max(jax.lax.stop_gradient(lses).reshape(-1))
    m = jnp.where(jnp.isfinite(m), m, 0.0)
    w = jnp.exp(lses.reshape(-1) - m[flat])
    num = jnp.zeros((B * H * n, Dv), F32).at[flat].add(w[:, None] * outs.reshape(-1, Dv))
    den = jnp.zeros((B * H * n,), F32).at[flat].add(w)
    out = num / jnp.where(den > 0, den, 1.0)[:, None]
    return out.reshape(B, H, n, Dv)


def sorted_chunk_attention(q, k, v, valid, spos, perm, r, *, chunk, scale, no_self, wrap=False):
    """Round r of sort-and-chunk attention; returns (out [B, H, N, Dv], lse [B, H, N]) by token.

    q, k [B, H, N, D], v [B, H, N, Dv] (N a multiple of chunk), valid bool [B, 1|H, N] (real
    keys), spos/perm int [R, B, H, N] for all R rounds (from `sort_by_bucket`). With R > 1 the
    logit of a pair seen in n rounds is lowered by log n, so combining the rounds with `lse.merge`
    gives the softmax over the union of pairs, each counted once.
    no_self: a token's logit to itself is SELF_LOGIT (used only when it sees nothing else).
    wrap: the first chunk also looks back to the last one (trax's and reformer-pytorch's roll).
    """
    R = spos.shape[0]
    B, H, N, _ = q.shape
    c, n = chunk, N // chunk
    p = perm[r]
    valid_s = jnp.take_along_axis(jnp.broadcast_to(valid, (B, H, N)), p, axis=2)
    vis = look_back(valid_s, c)[..., None, :] & own_or_back(n, c, wrap)
    bias = None
    if R > 1:  # in how many rounds is each pair seen? (all rounds at once: one small graph)
        s_s = jnp.take_along_axis(spos, jnp.broadcast_to(p, spos.shape), axis=3)
        seen = jnp.sum(chunk_rule(chunks(s_s, c, 3)[..., :, None], look_back(s_s, c, 3)[..., None, :], c, n, wrap),
                       axis=0, dtype=jnp.int32)
        bias = -jnp.log(jnp.maximum(seen, 1).astype(F32))
    fixed = (chunks(p, c)[..., :, None] == look_back(p, c)[..., None, :]) if no_self else None
    out, lse = tile_attention(chunks(gather(q, p), c), look_back(gather(k, p), c),
                              look_back(gather(v, p), c), vis, scale=scale, bias=bias, fixed=fixed)
    s_r = spos[r]
    return gather(out.reshape(B, H, N, -1), s_r), jnp.take_along_axis(lse.reshape(B, H, N), s_r, axis=2)


def causal_plan(qbuckets, kbuckets):
    """The sorts behind `causal_window_attention`, for R rounds: int [R, B, H, N] each.

    kbuckets: a token's bucket as a key (padding: a bucket above every query bucket); qbuckets:
    as a query (real tokens: the same bucket). Keys are sorted by (bucket, position); ins[t] is
    the number of keys sorted at or before (qbucket[t], t), so query t's bucket-mates at or before
    it are the keys at sorted places < ins[t] in its bucket.
    """
    N = qbuckets.shape[-1]
    kperm, kplace = sort_by_bucket(kbuckets)
    skey = jnp.take_along_axis(kbuckets, kperm, axis=-1) * N + kperm  # ascending
    qkey = qbuckets * N + jnp.arange(N, dtype=jnp.int32)
    search = jax.vmap(lambda a, x: jnp.searchsorted(a, x, side="right", method="sort"))
    ins = search(skey.reshape(-1, N), qkey.reshape(-1, N)).reshape(qkey.shape).astype(jnp.int32)
    qperm, qspos = sort_by_bucket(qbuckets)
    return dict(qb=qbuckets, kb=kbuckets, kperm=kperm, kplace=kplace, ins=ins, qperm=qperm,
                qspos=qspos)


def _window_rule(qb, ins, kb, kplace, window):
    """Causal: the key is one of the query's `window` most recent bucket-mates (itself included)."""
    return (qb == kb) & (kplace < ins) & (kplace >= ins - window)


def causal_window_attention(q, k, v, valid, plan, r, *, window, scale, no_self):
    """Round r of causal bucketed attention; returns (out [B, H, N, Dv], lse [B, H, N]) by token.

    Query t sees the `window` most recent real keys j <= t of its bucket: a set that no later
    token can change (chunk membership after a sort could). Queries sorted by (bucket, position)
    are cut into chunks of `window`; a chunk's keys lie in 2·window consecutive places of the
    sorted key stream (every real key is also a query of the same bucket), gathered as one tile.
    Pairs seen in several rounds are counted once (as in `sorted_chunk_attention`).
    """
    B, H, N, _ = q.shape
    c, n = window, N // window
    R = plan["qb"].shape[0]
    qp, kp = plan["qperm"][r], plan["kperm"][r]
    pad = lambda x: jnp.pad(x, ((0, 0), (0, 0), (c, c)) + ((0, 0),) * (x.ndim - 3))  # noqa: E731
    ks, vs = pad(gather(k, kp)), pad(gather(v, kp))
    ins_s = jnp.take_along_axis(plan["ins"][r], qp, axis=2)  # nondecreasing along the query sort
    start = chunks(ins_s, c)[..., 0]  # [B, H, n]: the chunk's window is places start - c ... + c
    slot = start[..., None] + jnp.arange(2 * c)  # [B, H, n, 2c] in the padded key stream
    where = slot - c  # sorted key place, -c ... N + c
    inside = (where >= 0) & (where < N)
    kidx = jnp.take_along_axis(jnp.pad(kp, ((0, 0), (0, 0), (c, c))), slot.reshape(B, H, -1), axis=2)
    kidx = kidx.reshape(B, H, n, 2 * c)  # token id of each window slot
    kvalid = jnp.take_along_axis(jnp.broadcast_to(valid, (B, H, N)), kidx.reshape(B, H, -1), axis=2)
    kvalid = kvalid.reshape(B, H, n, 1, 2 * c) & inside[..., None, :]

    def attrs(rounds):
        """Window rule of the given rounds [R', ...] for every (query, window slot) pair."""
        at_q = lambda a: jnp.take_along_axis(  # noqa: E731
            a, jnp.broadcast_to(qp, a.shape), axis=3).reshape(a.shape[:1] + (B, H, n, c))
        flat = kidx.reshape(B, H, -1)
        at_k = lambda a: jnp.take_along_axis(  # noqa: E731
            a, jnp.broadcast_to(flat, a.shape[:1] + flat.shape), axis=3).reshape(a.shape[:1] + (B, H, n, 1, 2 * c))
        return _window_rule(at_q(plan["qb"][rounds])[..., :, None], at_q(plan["ins"][rounds])[..., :, None],
                            at_k(plan["kb"][rounds]), at_k(plan["kplace"][rounds]), c)

    vis = kvalid & attrs(jnp.asarray(r).reshape(1))[0]
    bias = None
    if R > 1:  # in how many rounds is each pair seen? (all rounds at once: one small graph)
        seen = jnp.sum(attrs(jnp.arange(R)) & kvalid, axis=0, dtype=jnp.int32)
        bias = -jnp.log(jnp.maximum(seen, 1).astype(F32))
    fixed = (chunks(qp, c)[..., :, None] == kidx[..., None, :]) if no_self else None
    gslot = lambda x: jnp.take_along_axis(  # noqa: E731
        x, slot.reshape(B, H, -1, 1), axis=2).reshape(B, H, n, 2 * c, x.shape[-1])
    out, lse = tile_attention(chunks(gather(q, qp), c), gslot(ks), gslot(vs), vis, scale=scale,
                              bias=bias, fixed=fixed)
    s_r = plan["qspos"][r]
    return gather(out.reshape(B, H, N, -1), s_r), jnp.take_along_axis(lse.reshape(B, H, N), s_r, axis=2)


def _no_self(vis):
    eye = jnp.eye(vis.shape[-1], dtype=bool)
    alone = ~jnp.any(vis & ~eye, axis=-1, keepdims=True)
    return vis & (~eye | alone)


def sorted_chunk_pattern(valid, spos, *, chunk, no_self, wrap=False):
    """bool [B, H, N, N]: the pairs `sorted_chunk_attention` computes over all rounds, built
    directly from token attributes (O(N²): for pictures and tests only)."""
    seen, n = False, spos.shape[-1] // chunk
    for t in range(spos.shape[0]):
        seen = seen | chunk_rule(spos[t][..., :, None], spos[t][..., None, :], chunk, n, wrap)
    vis = seen & valid[..., None, :]
    return _no_self(vis) if no_self else vis


def causal_window_pattern(valid, plan, *, window, no_self):
    """bool [B, H, N, N]: the pairs `causal_window_attention` computes over all rounds (O(N²))."""
    seen = False
    for t in range(plan["qb"].shape[0]):
        seen = seen | _window_rule(plan["qb"][t][..., :, None], plan["ins"][t][..., :, None],
                                   plan["kb"][t][..., None, :], plan["kplace"][t][..., None, :], window)
    vis = seen & valid[..., None, :]
    return _no_self(vis) if no_self else vis
