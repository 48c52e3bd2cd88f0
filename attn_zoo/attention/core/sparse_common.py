"""Building blocks the fixed sparse patterns share (strided, sparse_transformer, longformer, bigbird).

Each piece runs the block-sparse engine on exactly the tiles its part of the pattern needs and
can return the log-sum-exp, so a pattern made of disjoint parts is computed exactly by
`lse.merge`. Nothing here builds an L×S array: position tables are O(N) and tile
masks O(N²/block²).

  residue_attention   (i − j) mod stride == 0: positions are regrouped so each residue class is
                      contiguous and folded into the batch, then a band in class coordinates.
  subset_attention    all queries against a static subset of keys (summary / global columns), or
                      a static subset of queries against all keys (global rows).
"""
from __future__ import annotations

from typing import Callable

import jax.numpy as jnp
import numpy as np

from attn_zoo.attention.core import block_sparse as bs
from attn_zoo.attention.core import masks


def _fold_residues(x, stride):
    """[B, N, H, D] -> [B·stride, ceil(N/stride), H, D]: row r holds positions r, r+stride, ..."""
    B, N, H = x.shape[:3]
    x, _ = masks.pad_to_multiple(x, stride, axis=1)
    m = x.shape[1] // stride
    x = x.reshape(B, m, stride, H, *x.shape[3:]).swapaxes(1, 2)
    return x.reshape(B * stride, m, H, *x.shape[4:])


def _unfold_residues(x, B, stride, n):
    """Inverse of `_fold_residues` on [B·stride, m, H, ...], cut back to length n."""
    m = x.shape[1]
    x = x.reshape(B, stride, m, *x.shape[2:]).swapaxes(1, 2)
    return x.reshape(B, m * stride, *x.shape[3:])[:, :n]


def _fold_rows(x, stride):
    """[B, N] per-position values (mask, segment ids, positions) folded as `_fold_residues`."""
    return _fold_residues(x[:, :, None, None], stride)[:, :, 0, 0]


def residue_attention(q, k, v, key_mask, *, stride, dlo, dhi, block, exclude_self=False,
                      return_lse=False, segments=None, alibi_slopes=None):
    """Query i sees key j iff i ≡ j (mod stride) and dlo <= (i − j) / stride <= dhi.

    In class coordinates (i = a·stride + r, j = b·stride + r) the pattern is the band
    dlo <= a − b <= dhi (minus a == b when exclude_self), so each class is a short dense or
    banded attention: N²/stride pairs in all, computed in tiles of `block`. k, v may have Hk < H
    heads; segments (q_ids, kv_ids) and alibi_slopes [H] travel folded with the positions.
    """
    B, L = q.shape[:2]
    S = k.shape[1]
    km = masks.key_mask_or_ones(key_mask, B, S)
    qf, kf, vf = (_fold_residues(x, stride) for x in (q, k, v))
    kmf = _fold_rows(km, stride)  # padding -> False
    segf = None if segments is None else tuple(_fold_rows(s, stride) for s in segments)
    alibi = None
    if alibi_slopes is not None:
        alibi = (alibi_slopes, *(_fold_rows(p, stride) for p in bs.positions(B, L, S)))
    band = bs.band_mask_fn(dlo, dhi)
    mask_fn = band
    if exclude_self:
        mask_fn = (lambda a, b: (a != b)) if band is None else (lambda a, b: band(a, b) & (a != b))
    out = bs.attention(
        qf, kf, vf, kmf,
        block_mask_fn=lambda nq, nk, bq, bk: bs.band_block_mask(nq, nk, bq, bk, dlo, dhi),
        mask_fn=mask_fn, block_q=block, block_k=block, return_lse=return_lse, segments=segf,
        alibi=alibi)
    if not return_lse:
        return _unfold_residues(out, B, stride, L)
    out, lse = out
    return _unfold_residues(out, B, stride, L), _unfold_residues(lse, B, stride, L)


def _tile_ranges(pos, b):
    """Per tile of b consecutive entries of the static position table `pos`: (min, max)."""
    n = -(-len(pos) // b) * b
    p = np.concatenate([pos, np.full(n - len(pos), pos[-1] if len(pos) else 0)]).reshape(-1, b)
    return p.min(axis=1), p.max(axis=1)


def subset_attention(q, k, v, key_mask, *, qidx=None, kidx=None, visible: Callable | None,
                     causal: bool, block: int, return_lse=False, segments=None, alibi_slopes=None):
    """Queries at static positions `qidx` (None: all) against keys at `kidx` (None: all).

    visible(qpos, kpos) -> bool on *original* positions (qpos [bq, 1], kpos [1, bk]); causal
    adds kpos <= qpos and skips tiles that lie wholly in the future. Cost: |qidx|·|kidx|.
    k, v may have Hk < H heads; segments (q_ids, kv_ids) and alibi_slopes [H] on the original
    positions. Returns [B, |qidx|, H, Dv] (and lse [B, |qidx|, H]).
    """
    B, S = k.shape[0], k.shape[1]
    km = masks.key_mask_or_ones(key_mask, B, S)
    qpos = np.arange(q.shape[1]) if qidx is None else np.asarray(qidx, np.int64)
    kpos = np.arange(S) if kidx is None else np.asarray(kidx, np.int64)
    if segments is not None:
        segments = (jnp.take(segments[0], jnp.asarray(qpos), axis=1),
                    jnp.take(segments[1], jnp.asarray(kpos), axis=1))
    alibi = None
    if alibi_slopes is not None:
        alibi = (alibi_slopes, *(jnp.broadcast_to(jnp.asarray(p, jnp.int32), (B, len(p)))
                                 for p in (qpos, kpos)))
    if qidx is not None:
        q = jnp.take(q, jnp.asarray(qpos), axis=1)
    if kidx is not None:
        k, v, km = (jnp.take(x, jnp.asarray(kpos), axis=1) for x in (k, v, km))

    def block_mask_fn(nq, nk, bq, bk):
        if not causal or len(qpos) == 0 or len(kpos) == 0:
            return np.ones((nq, nk), dtype=bool)
        _, qmax = _tile_ranges(qpos, bq)
        kmin, _ = _tile_ranges(kpos, bk)
        return kmin[None, :nk] <= qmax[:nq, None]

    def mask_fn(qi, kj):  # tables become constants here, inside the kernel's own trace
        qtab, ktab = jnp.asarray(qpos, jnp.int32), jnp.asarray(kpos, jnp.int32)
        qp = jnp.take(qtab, qi, mode="clip")  # tail indices are padding: masked or dropped
        kp = jnp.take(ktab, kj, mode="clip")
        vis = jnp.ones(qp.shape[:1] + kp.shape[1:], dtype=bool) if visible is None else visible(qp, kp)
        return (vis & (kp <= qp)) if causal else vis

    return bs.attention(q, k, v, km, block_mask_fn=block_mask_fn, mask_fn=mask_fn,
                        block_q=block, block_k=block, return_lse=return_lse, segments=segments,
                        alibi=alibi)
