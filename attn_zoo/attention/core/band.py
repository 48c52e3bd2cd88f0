"""Exact banded attention: query i sees key j iff dlo <= i - j <= dhi (plus key_mask).

The band engine behind `local`. Queries are cut into blocks of `block`; block i sees one
contiguous key span [i·b - dhi, i·b + b - dlo), so each block is a single [b, b + dhi - dlo]
tile against a static band mask: a plain softmax, no online rescaling, no per-tile loop or
branch (the general block-sparse engine pays those on every tile). Memory O(N·D + b·span) in the
forward and the backward pass: a custom VJP recomputes each tile from the saved log-sum-exp.

Layout inside: [B, H, N, D]; keys are padded by the band on both sides (padding is masked).
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from attn_zoo.attention.core import block_sparse as bs
from attn_zoo.attention.core import masks
from attn_zoo.attention.core.lse import normalize
from attn_zoo.kernels import flash_cpu
from attn_zoo.kernels.vjp import lse_kernel

F32 = jnp.float32


def attention(q, k, v, key_mask, *, dlo: int, dhi: int, block: int, scale: float | None = None,
              return_lse: bool = False, engine: str = "auto", segments=None, alibi_slopes=None):
    """q [B, L, H, D], k [B, S, Hk, D], v [B, S, Hk, Dv], key_mask [B, S] bool or None -> [B, L, H, Dv].

    Query position i sees key position j iff dlo <= i - j <= dhi (dlo <= dhi, both finite).
    H % Hk == 0: query head h reads key head h // G (G = H // Hk); the G query heads of a key head
    are extra rows of its tiles, never a repeated K/V.
    segments: (q_ids [B, L], kv_ids [B, S]) int32 or None: also q_ids[i] == kv_ids[j], in the tile.
    alibi_slopes: [H] fp32 or None: the scaled logit gets − slope_h·|i − j|, from the tile's
    static offsets (no L×S array).
    return_lse: also return the differentiable fp32 log-sum-exp [B, L, H] (-inf: no visible key),
    to merge with attention over other keys (`lse.merge`).
    engine: "auto" runs fp32 on CPU through the fused kernel (`kernels/flash_cpu.cc`) with the
    same tiles (query block × its key span; the backward takes key block × its query span).
    """
    B, L, H, D = q.shape
    S, Hk, Dv = k.shape[1], k.shape[2], v.shape[-1]
    G = H // Hk
    b = bs.fit_block(block, L)
    nq = bs.num_blocks(L, b)
    span = b + dhi - dlo
    scale = D ** -0.5 if scale is None else scale
    kmask = masks.key_mask_or_ones(key_mask, B, S)
    if flash_cpu.use(engine, q, k, v):
        out, lse = flash_cpu.attention(q, k, v, kmask, dlo=dlo, dhi=dhi, scale=scale,
                                       blocks=(b, span), bwd_blocks=(span, b), segments=segments,
                                       alibi_slopes=alibi_slopes)
        return (out, lse) if return_lse else out
    k, v = masks.hide_masked(key_mask, k, v)  # a masked key's NaN must not reach p·v or ds·k
    # padded key coordinates: c = j + dhi; block i reads [i·b, i·b + span)
    right = max(0, nq * b + span - dhi - S)
    kmask = jnp.pad(kmask, ((0, 0), (dhi, right)))  # [B, Sp], pads invisible
    heads_first = lambda x, before, after: jnp.pad(  # noqa: E731
        x.transpose(0, 2, 1, 3), ((0, 0), (0, 0), (before, after), (0, 0)))
    qb = heads_first(q, 0, nq * b - L)
    if G == 1:
        qb = qb.reshape(B, H, nq, b, D)
    else:  # [B, Hk, nq, G·b, D]: row g·b + r is query head g of the group at offset r
        qb = qb.reshape(B, Hk, G, nq, b, D).transpose(0, 1, 3, 2, 4, 5).reshape(B, Hk, nq, G * b, D)
    kp, vp = heads_first(k, dhi, right), heads_first(v, dhi, right)
    r = np.arange(b)[:, None]
    c = np.arange(span)[None, :]
    band = (c >= r) & (c <= r + dhi - dlo)  # static [b, span]: i - j within [dlo, dhi]
    aux = {"kmask": kmask}
    if segments is not None:
        qs = jnp.pad(segments[0], ((0, 0), (0, nq * b - L))).reshape(B, nq, b)
        aux["qseg"] = qs if G == 1 else jnp.tile(qs, (1, 1, G))
        aux["kseg"] = jnp.pad(segments[1], ((0, 0), (dhi, right)))
    if alibi_slopes is not None:  # − slope · |i − j| with i − j = r − c + dhi in the tile
        dist = np.abs(r - c + dhi).astype(np.float32)
        slopes = jnp.repeat(jnp.asarray(alibi_slopes, F32).reshape(Hk, G), b, axis=1)  # [Hk, G·b]
        aux["bias"] = -slopes[None, :, :, None] * np.tile(dist, (G, 1))[None, None]
    out, lse = _kernel(np.tile(band, (G, 1)), b=b, span=span, scale=float(scale))(qb, kp, vp, aux)
    if G == 1:  # today's layout ops, unchanged
        out = out.reshape(B, H, nq * b, Dv)[:, :, :L].transpose(0, 2, 1, 3).astype(q.dtype)
        if not return_lse:
            return out
        return out, lse.reshape(B, H, nq * b)[:, :, :L].transpose(0, 2, 1)

    def unblock(x):  # [B, Hk, nq, G·b, ...] -> [B, L, H, ...]
        x = x.reshape(B, Hk, nq, G, b, *x.shape[4:])
        x = jnp.moveaxis(x, (2, 4), (1, 2)).reshape(B, nq * b, H, *x.shape[5:])
        return x[:, :L]

    out = unblock(out).astype(q.dtype)
    return (out, unblock(lse)) if return_lse else out


def _kernel(band, *, b, span, scale):
    """Custom-VJP kernel on qb [B, Hk, nq, R, D] (R = G·b rows), kp/vp [B, Hk, Sp, D], aux
    {kmask [B, Sp], optional qseg [B, nq, R], kseg [B, Sp], bias [1, Hk, R, span]}."""

    def visible(aux, i, start, transposed=False):
        """bool mask of one tile, [B, 1, R, span] ([B, 1, span, R] transposed); applied with
        jnp.where, not added as a 0/-inf bias (NaN + -inf is NaN: as the fused kernel, a NaN
        row stays NaN at its visible keys only)."""
        km = jax.lax.dynamic_slice_in_dim(aux["kmask"], start, span, 1)
        vis = jnp.asarray(band)[None, None] & km[:, None, None, :]
        if "qseg" in aux:
            ks = jax.lax.dynamic_slice_in_dim(aux["kseg"], start, span, 1)
            vis = vis & (aux["qseg"][:, i][:, None, :, None] == ks[:, None, None, :])
        return jnp.swapaxes(vis, -1, -2) if transposed else vis

    def span_of(x, start, axis):
        return jax.lax.dynamic_slice_in_dim(x, start, span, axis)

    def forward(qb, kp, vp, aux):
        kt = jnp.swapaxes(kp, -1, -2)  # [B, H, D, Sp]: plain (non-transposed) matmuls on XLA:CPU

        def q_block(i):
            s = jnp.einsum("bhqd,bhdk->bhqk", qb[:, :, i], span_of(kt, i * b, 3),
                           preferred_element_type=F32) * scale
            if "bias" in aux:
                s = s + aux["bias"]
            s = jnp.where(visible(aux, i, i * b), s, -jnp.inf)
            m = jnp.max(s, axis=-1)
            m_safe = jnp.where(m == -jnp.inf, 0.0, m)  # NaN and +inf stay
            p = jnp.exp(s - m_safe[..., None])
            l = jnp.sum(p, axis=-1)
            o = jnp.einsum("bhqk,bhkd->bhqd", p.astype(vp.dtype), span_of(vp, i * b, 2),
                           preferred_element_type=F32)
            o, lse = normalize(o, m_safe, l)
            return o.astype(vp.dtype), lse

        out, lse = jax.lax.map(q_block, jnp.arange(qb.shape[2]))  # [nq, B, H, b, ...]
        return jnp.moveaxis(out, 0, 2), jnp.moveaxis(lse, 0, 2)

    def backward(qb, kp, vp, aux, out, lse, dout, dlse):
        # d lse_i / d s_ij = p_ij, so a cotangent on lse shifts delta: ds = p (dp - delta + dlse).
        delta = jnp.sum(dout.astype(F32) * out.astype(F32), axis=-1) - dlse  # [B, H, nq, b]
        lse = jnp.where(lse == -jnp.inf, 0.0, lse)  # rows with no visible key: p == 0 anyway
        qt, dot = jnp.swapaxes(qb, -1, -2), jnp.swapaxes(dout, -1, -2)  # [B, H, nq, D, b]
        kt = jnp.swapaxes(kp, -1, -2)

        def step(carry, i):
            dk, dv = carry  # [B, H, Sp, D] fp32, accumulated over overlapping spans
            start = i * b
            kj, vj, ktj = span_of(kp, start, 2), span_of(vp, start, 2), span_of(kt, start, 3)
            st = jnp.einsum("bhkd,bhdq->bhkq", kj, qt[:, :, i], preferred_element_type=F32) * scale
            if "bias" in aux:
                st = st + jnp.swapaxes(aux["bias"], -1, -2)
            pt = jnp.where(visible(aux, i, start, transposed=True),
                           jnp.exp(st - lse[:, :, i][:, :, None, :]), 0.0)
            dvj = jnp.einsum("bhkq,bhqd->bhkd", pt.astype(dout.dtype), dout[:, :, i],
                             preferred_element_type=F32)
            dpt = jnp.einsum("bhkd,bhdq->bhkq", vj, dot[:, :, i], preferred_element_type=F32)
            dst = (pt * (dpt - delta[:, :, i][:, :, None, :]) * scale).astype(qb.dtype)
            dkj = jnp.einsum("bhkq,bhqd->bhkd", dst, qb[:, :, i], preferred_element_type=F32)
            dqt = jnp.einsum("bhdk,bhkq->bhdq", ktj, dst, preferred_element_type=F32)
            dk = jax.lax.dynamic_update_slice_in_dim(dk, span_of(dk, start, 2) + dkj, start, 2)
            dv = jax.lax.dynamic_update_slice_in_dim(dv, span_of(dv, start, 2) + dvj, start, 2)
            return (dk, dv), dqt

        zeros = (jnp.zeros(kp.shape, F32), jnp.zeros(vp.shape, F32))
        (dk, dv), dqt = jax.lax.scan(step, zeros, jnp.arange(qb.shape[2]))
        dq = jnp.swapaxes(jnp.moveaxis(dqt, 0, 2), -1, -2)
        return dq.astype(qb.dtype), dk.astype(kp.dtype), dv.astype(vp.dtype)

    return lse_kernel(forward, backward)
