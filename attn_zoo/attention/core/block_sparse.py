"""Exact block-sparse attention with an online softmax and a hand-written backward pass.

The shared engine of every exact efficient variant (`blockwise`, `local`, and the fixed sparse
patterns): queries are cut into blocks of `block_q`, keys into blocks of `block_k`; a static
table lists, for every query block, the key blocks it may see; an element-level `mask_fn` on
positions (plus key_mask) masks inside each tile. Only listed tiles are ever computed, so time
is O(#tiles · block_q · block_k) and memory O(N·D + block_q·block_k) in the forward *and* the
backward pass (a custom VJP recomputes tiles from the saved log-sum-exp instead of storing them,
as in FlashAttention-2). Tiles whose keys are all padding are skipped at run time.

Layout inside: [B, H, nblocks, block, D]; tables are numpy, fixed at trace time.
"""
from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np

from attn_zoo.attention.core import masks
from attn_zoo.attention.core.lse import normalize
from attn_zoo.kernels import flash_cpu
from attn_zoo.kernels.vjp import lse_kernel

F32 = jnp.float32
BIG = 1 << 30  # an "unbounded" band limit (beyond any int32 position difference)


def num_blocks(n: int, block: int) -> int:
    return -(-n // block)


def fit_block(block: int, n: int) -> int:
    """The block size actually used: never (much) longer than the sequence itself."""
    return max(1, min(block, -(-n // 8) * 8))


def band_block_mask(nq, nk, bq, bk, dlo, dhi):
    """bool [nq, nk]: does tile (i, j) hold any pair with dlo <= qpos - kpos <= dhi?"""
    i = np.arange(nq)[:, None]
    j = np.arange(nk)[None, :]
    dmin = i * bq - (j * bk + bk - 1)
    dmax = i * bq + bq - 1 - j * bk
    return (dmax >= dlo) & (dmin <= dhi)


def table_from_block_mask(block_mask):
    """(table [nq, m] int32, counts [nq] int32): each row's listed key blocks, -1 padded."""
    block_mask = np.asarray(block_mask, dtype=bool)
    counts = block_mask.sum(axis=1).astype(np.int32)
    m = max(int(counts.max(initial=0)), 1)
    table = np.full((block_mask.shape[0], m), -1, dtype=np.int32)
    for i, row in enumerate(block_mask):
        idx = np.nonzero(row)[0]
        table[i, : len(idx)] = idx
    return table, counts


def band_mask_fn(dlo, dhi):
    """Element mask for dlo <= qpos - kpos <= dhi (None when the band is unbounded)."""
    if dlo <= -BIG and dhi >= BIG:
        return None

    def fn(qpos, kpos):
        d = qpos - kpos
        if dlo <= -BIG:
            return d <= dhi
        if dhi >= BIG:
            return d >= dlo
        return (d >= dlo) & (d <= dhi)

    return fn


def attention(q, k, v, key_mask, *, block_mask_fn: Callable, mask_fn: Callable | None,
              block_q: int, block_k: int, scale: float | None = None, return_lse: bool = False,
              segments=None, alibi=None):
    """Exact softmax attention over the tiles that `block_mask_fn(nq, nk, bq, bk)` allows.

    q [B, L, H, D], k [B, S, Hk, D], v [B, S, Hk, Dv] (H % Hk == 0: query head h reads key head
    h // G, G = H // Hk; the G query heads of a key head are extra rows of its tiles, never a
    repeated K/V), key_mask [B, S] bool or None.
    mask_fn(qpos [bq, 1], kpos [1, bk]) -> bool, applied inside tiles (None: all visible).
    segments: (q_ids [B, L], kv_ids [B, S]) int32 or None: a query sees keys of its own segment
    only (inside the tile; a tile whose id ranges do not meet is skipped).
    alibi: (slopes [H] fp32, q_pos [B, L], k_pos [B, S] int32) or None: the scaled logit gets
    − slope_h·|q_pos − k_pos|, computed in the tile (positions in the caller's coordinates, so a
    caller that regroups positions passes the original ones).
    return_lse: also return the fp32 log-sum-exp of the visible logits, [B, L, H] (-inf for a
    query with no visible key), differentiable, so that attentions over disjoint key sets can be
    merged exactly (see `merge`).
    """
    B, L, H, D = q.shape
    S, Hk = k.shape[1], k.shape[2]
    G = H // Hk
    bq, bk = fit_block(block_q, L), fit_block(block_k, S)
    nq, nk = num_blocks(L, bq), num_blocks(S, bk)
    table, counts = table_from_block_mask(block_mask_fn(nq, nk, bq, bk))
    kmask = masks.key_mask_or_ones(key_mask, B, S)
    kmask, _ = masks.pad_to_multiple(kmask, bk, axis=1)  # padded keys are masked (False)
    k, v = masks.hide_masked(key_mask, k, v)  # a masked key's NaN must not reach p·v or ds·k

    def blocks(x, b, n):  # [B, N, Hk, D] -> [B, Hk, n, b, D]
        x, _ = masks.pad_to_multiple(x, b, axis=1)
        return x.reshape(B, n, b, Hk, x.shape[-1]).transpose(0, 3, 1, 2, 4)

    def q_blocks(x):  # [B, L, H, D] -> [B, Hk, nq, G·bq, D]: row g·bq + r is head g, position r
        if G == 1:
            return blocks(x, bq, nq)
        x, _ = masks.pad_to_multiple(x, bq, axis=1)
        x = x.reshape(B, nq, bq, Hk, G, x.shape[-1]).transpose(0, 3, 1, 4, 2, 5)
        return x.reshape(B, Hk, nq, G * bq, x.shape[-1])

    def per_block(x, b):  # [B, N] -> [B, n, b], padded
        x, _ = masks.pad_to_multiple(x, b, axis=1)
        return x.reshape(B, -1, b)

    aux = {"kmask": kmask.reshape(B, nk, bk)}
    if segments is not None:
        aux["qseg"], aux["kseg"] = per_block(segments[0], bq), per_block(segments[1], bk)
    if alibi is not None:
        slopes, qpos, kpos = alibi
        aux["slopes"] = jnp.asarray(slopes, F32).reshape(Hk, G)
        aux["qpos"] = per_block(qpos.astype(jnp.int32), bq)
        aux["kpos"] = per_block(kpos.astype(jnp.int32), bk)
    scale = D ** -0.5 if scale is None else scale
    kernel = _kernel(table, counts, nk=nk, bq=bq, bk=bk, G=G, mask_fn=mask_fn, scale=float(scale))
    out, lse = kernel(q_blocks(q), blocks(k, bk, nk), blocks(v, bk, nk), aux)

    def unblock(x):  # [B, Hk, nq, G·bq, ...] -> [B, L, H, ...]
        x = x.reshape(B, Hk, nq, G, bq, *x.shape[4:])
        x = jnp.moveaxis(x, (2, 4), (1, 2))  # [B, nq, bq, Hk, G, ...]
        return x.reshape(B, nq * bq, H, *x.shape[5:])[:, :L]

    if G == 1:  # today's layout ops, unchanged
        out = out.transpose(0, 2, 3, 1, 4).reshape(B, nq * bq, H, v.shape[-1])[:, :L].astype(q.dtype)
        if not return_lse:
            return out
        return out, lse.transpose(0, 2, 3, 1).reshape(B, nq * bq, H)[:, :L]
    out = unblock(out).astype(q.dtype)
    return (out, unblock(lse)) if return_lse else out


def full(q, k, v, key_mask, *, causal: bool, block_q: int, block_k: int, scale: float | None = None,
         engine: str = "auto", return_lse: bool = False, segments=None, alibi_slopes=None):
    """Exact softmax attention over every key (j <= i under causal): the fused CPU kernel
    (`kernels/flash_cpu.cc`) for fp32 on CPU unless engine="xla", else the tile engine above.
    k, v may have Hk < H heads; segments and alibi_slopes as in `attention` (positions 0..N-1)."""
    B, L, H, D = q.shape
    S = k.shape[1]
    dlo = 0 if causal else -BIG
    scale = D ** -0.5 if scale is None else scale
    if flash_cpu.use(engine, q, k, v):
        out, lse = flash_cpu.attention(q, k, v, masks.key_mask_or_ones(key_mask, B, S), dlo=dlo,
                                       dhi=BIG, scale=scale,
                                       blocks=(fit_block(block_q, L), fit_block(block_k, S)),
                                       segments=segments, alibi_slopes=alibi_slopes)
        return (out, lse) if return_lse else out
    alibi = None if alibi_slopes is None else (alibi_slopes, *positions(B, L, S))
    return attention(q, k, v, key_mask, block_q=block_q, block_k=block_k, scale=scale,
                     block_mask_fn=lambda nq, nk, bq, bk: band_block_mask(nq, nk, bq, bk, dlo, BIG),
                     mask_fn=band_mask_fn(dlo, BIG), return_lse=return_lse, segments=segments,
                     alibi=alibi)


def positions(B, L, S):
    """(q_pos int32 [B, L], k_pos int32 [B, S]): 0..L-1 and 0..S-1, the `alibi` positions of a
    caller that does not regroup them."""
    return (jnp.broadcast_to(jnp.arange(L, dtype=jnp.int32), (B, L)),
            jnp.broadcast_to(jnp.arange(S, dtype=jnp.int32), (B, S)))


def _kernel(table, counts, *, nk, bq, bk, G, mask_fn, scale):
    """The custom-VJP kernel on blocked arrays for one static table: q [B, Hk, nq, G·bq, D],
    k/v [B, Hk, nk, bk, D], aux {kmask [B, nk, bk], optional qseg/kseg, slopes/qpos/kpos}."""
    nq = table.shape[0]
    R = G * bq  # rows of a query tile: the G query heads of one key head
    row_pos = np.tile(np.arange(bq), G)  # tile row -> position within the query block
    # Transposed table for the backward pass: for every key block, the query blocks that see it.
    tmask = np.zeros((nq, nk), dtype=bool)
    for i in range(nq):
        tmask[i, table[i, : counts[i]]] = True
    ttable, tcounts = table_from_block_mask(tmask.T)

    def rows(x):  # [B, bq] per-position values -> [B, G·bq] per tile row
        return x if G == 1 else jnp.tile(x, (1, G))

    # Every matmul below is a plain (non-transposed) product: keys are stored as kᵀ [D, bk] for
    # the forward, and the backward works on transposed tiles sᵀ [bk, bq] with qᵀ and doᵀ. On
    # XLA:CPU this is ~2x faster than contracting over the last axis of both operands.
    def visible(aux, i, j, transposed):
        """bool tile, [B, 1, R, bk] (or [B, 1, bk, R] when transposed)."""
        qpos = i * bq + (jnp.arange(bq) if G == 1 else jnp.asarray(row_pos))[:, None]
        kpos = j * bk + jnp.arange(bk)[None, :]
        vis = aux["kmask"][:, j][:, None, None, :]
        if mask_fn is not None:
            vis = vis & mask_fn(qpos, kpos)[None, None]
        if "qseg" in aux:
            vis = vis & (rows(aux["qseg"][:, i])[:, None, :, None] == aux["kseg"][:, j][:, None, None, :])
        return jnp.swapaxes(vis, -1, -2) if transposed else vis

    def bias(aux, i, j, transposed):
        """ALiBi tile − slope·|i − j|, [B, Hk, R, bk] (transposed: [B, Hk, bk, R])."""
        d = jnp.abs(rows(aux["qpos"][:, i])[:, :, None] - aux["kpos"][:, j][:, None, :]).astype(F32)
        slope = jnp.repeat(aux["slopes"], bq, axis=1)  # [Hk, R]
        b = -slope[None, :, :, None] * d[:, None]
        return jnp.swapaxes(b, -1, -2) if transposed else b

    def live(aux, i, j):
        """Does tile (i, j) hold a visible key for some batch row? (padding; segment ranges)"""
        has = jnp.any(aux["kmask"][:, j], axis=-1)  # [B]
        if "qseg" in aux:
            qs, ks = aux["qseg"][:, i], aux["kseg"][:, j]
            has = has & (jnp.min(qs, -1) <= jnp.max(ks, -1)) & (jnp.min(ks, -1) <= jnp.max(qs, -1))
        return jnp.any(has)

    def forward(q, k, v, aux):
        tab, cnt = jnp.asarray(table), jnp.asarray(counts)
        B, H, _, _, Dv = v.shape
        kt = jnp.swapaxes(k, -1, -2)  # [B, H, nk, D, bk]

        def q_block(i):
            qi = q[:, :, i]

            def step(t, carry):
                j = tab[i, t]

                def compute(carry):
                    m, l, acc = carry
                    s = jnp.einsum("bhqd,bhdk->bhqk", qi, kt[:, :, j], preferred_element_type=F32) * scale
                    if "slopes" in aux:
                        s = s + bias(aux, i, j, transposed=False)
                    vis = visible(aux, i, j, transposed=False)
                    m_new = jnp.maximum(m, jnp.max(jnp.where(vis, s, -jnp.inf), axis=-1))
                    m_safe = jnp.where(m_new == -jnp.inf, 0.0, m_new)  # NaN and +inf stay
                    p = jnp.where(vis, jnp.exp(s - m_safe[..., None]), 0.0)
                    alpha = jnp.exp(m - m_safe)
                    l = alpha * l + jnp.sum(p, axis=-1)
                    pv = jnp.einsum("bhqk,bhkd->bhqd", p.astype(v.dtype), v[:, :, j],
                                    preferred_element_type=F32)
                    return m_new, l, alpha[..., None] * acc + pv

                return jax.lax.cond(live(aux, i, j), compute, lambda c: c, carry)

            init = (jnp.full((B, H, R), -jnp.inf, F32), jnp.zeros((B, H, R), F32),
                    jnp.zeros((B, H, R, Dv), F32))
            m, l, acc = jax.lax.fori_loop(0, cnt[i], step, init)
            out, lse = normalize(acc, m, l)
            return out.astype(v.dtype), lse

        out, lse = jax.lax.map(q_block, jnp.arange(nq))  # [nq, B, H, R, ...]
        return out.transpose(1, 2, 0, 3, 4), lse.transpose(1, 2, 0, 3)

    def backward(q, k, v, aux, out, lse, dout, dlse):
        ttab, tcnt = jnp.asarray(ttable), jnp.asarray(tcounts)
        # d lse_i / d s_ij = p_ij, so a cotangent on lse shifts delta: ds = p (dp - delta + dlse).
        delta = jnp.sum(dout.astype(F32) * out.astype(F32), axis=-1) - dlse  # [B, H, nq, R]
        lse = jnp.where(lse == -jnp.inf, 0.0, lse)  # rows with no visible key: p == 0 anyway

        qt, dot, kt = (jnp.swapaxes(x, -1, -2) for x in (q, dout, k))  # [B, H, n, D, b]

        def k_block(dqt, j):
            kj, vj, ktj = k[:, :, j], v[:, :, j], kt[:, :, j]

            def step(t, carry):
                i = ttab[j, t]

                def compute(carry):
                    dqt, dk, dv = carry
                    st = jnp.einsum("bhkd,bhdq->bhkq", kj, qt[:, :, i], preferred_element_type=F32) * scale
                    if "slopes" in aux:
                        st = st + bias(aux, i, j, transposed=True)
                    vis = visible(aux, i, j, transposed=True)
                    pt = jnp.where(vis, jnp.exp(st - lse[:, :, i][:, :, None, :]), 0.0)
                    dv = dv + jnp.einsum("bhkq,bhqd->bhkd", pt.astype(dout.dtype), dout[:, :, i],
                                         preferred_element_type=F32)
                    dpt = jnp.einsum("bhkd,bhdq->bhkq", vj, dot[:, :, i], preferred_element_type=F32)
                    dst = (pt * (dpt - delta[:, :, i][:, :, None, :]) * scale).astype(q.dtype)
                    dk = dk + jnp.einsum("bhkq,bhqd->bhkd", dst, q[:, :, i], preferred_element_type=F32)
                    dqti = jnp.einsum("bhdk,bhkq->bhdq", ktj, dst, preferred_element_type=F32)
                    return dqt.at[:, :, i].add(dqti), dk, dv

                return jax.lax.cond(live(aux, i, j), compute, lambda c: c, carry)

            zeros_k, zeros_v = jnp.zeros(kj.shape, F32), jnp.zeros(vj.shape, F32)
            dqt, dk, dv = jax.lax.fori_loop(0, tcnt[j], step, (dqt, zeros_k, zeros_v))
            return dqt, (dk, dv)

        dqt, (dk, dv) = jax.lax.scan(k_block, jnp.zeros(qt.shape, F32), jnp.arange(nk))
        dk, dv = dk.transpose(1, 2, 0, 3, 4), dv.transpose(1, 2, 0, 3, 4)
        return jnp.swapaxes(dqt, -1, -2).astype(q.dtype), dk.astype(k.dtype), dv.astype(v.dtype)

    return lse_kernel(forward, backward)
