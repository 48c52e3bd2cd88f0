"""`sparse_transformer`: the factorized patterns of Child et al. 2019, exact and truly sparse.

layout="fixed": A1 = same block of `block` (l) positions, A2 = the last `summary` (c) positions
of every block. layout="strided": A1 = local band |i − j| < l, A2 = (i − j) mod l == 0.
Causal: j <= i in both. split_heads=0: every head sees A1 ∪ A2 (the union is computed as two
disjoint parts merged by log-sum-exp); split_heads=H: heads [0, H/2) see A1, [H/2, H) see A2
(the pattern is then [H, L, S]). Cost O(N·(l + N·c/l)) fixed, O(N·(l + N/l)) strided.
"""
from __future__ import annotations

import dataclasses
import jax.numpy as jnp
import numpy as np

from attn_zoo.attention.core import block_sparse as bs
from attn_zoo.attention.core import decode
from attn_zoo.attention.core import lse
from attn_zoo.attention.core import contract
from attn_zoo.attention.core import sinks
from attn_zoo.attention.core import sparse_common
from attn_zoo.attention.core.options import option
from attn_zoo.attention.core.registry import register

LAYOUTS = ("fixed", "strided")
@dataclasses.dataclass(frozen=True)
class Options:
    layout: str = option("fixed", "fixed (block + summaries) or strided (band + stride)", choices=LAYOUTS)
    block: int = option(128, "l: block (fixed) or band and stride (strided)", min=1)
    summary: int = option(8, "c: summary positions at the end of each block (fixed)", min=0)
    split_heads: int = option(0, "0: every head sees both parts; H: half the heads each", min=0)
    tile: int = option(128, "tile size of the exact engine", min=1)
    sink: bool = sinks.sink_option()

    def check(self):
        if self.layout == "fixed" and self.summary > self.block:
            raise ValueError(f"summary={self.summary} must be <= block={self.block}")
        if self.split_heads % 2:
            raise ValueError(f"split_heads={self.split_heads} must be 0 or an even head count")


def _check_heads(split_heads, H):
    if split_heads and H != split_heads:
        raise ValueError(f"sparse_transformer: split_heads={split_heads} but the input has H={H} heads")


def _same_block(q, k, v, key_mask, *, block, causal, tile, segments, alibi_slopes):
    """A1 of 'fixed': qpos // block == kpos // block, on the tiles that overlap such blocks."""
    def block_mask_fn(nq, nk, bq, bk):
        i, j = np.arange(nq)[:, None], np.arange(nk)[None, :]
        q_lo, q_hi = i * bq // block, (i * bq + bq - 1) // block
        k_lo, k_hi = j * bk // block, (j * bk + bk - 1) // block
        return (q_lo <= k_hi) & (k_lo <= q_hi) & ((j * bk <= i * bq + bq - 1) | (not causal))

    def mask_fn(qp, kp):
        vis = qp // block == kp // block
        return vis & (kp <= qp) if causal else vis

    return bs.attention(q, k, v, key_mask, block_mask_fn=block_mask_fn, mask_fn=mask_fn,
                        block_q=tile, block_k=tile, return_lse=True, segments=segments,
                        alibi=_alibi(q, k, alibi_slopes))


def _alibi(q, k, slopes):
    return None if slopes is None else (slopes, *bs.positions(q.shape[0], q.shape[1], k.shape[1]))


def _summary(q, k, v, key_mask, *, block, summary, causal, tile, exclude_own, segments,
             alibi_slopes):
    """A2 of 'fixed': keys at the last `summary` positions of each block (own block excluded
    when the union with A1 is taken, so the two parts are disjoint)."""
    S = k.shape[1]
    kidx = np.nonzero(np.arange(S) % block >= block - summary)[0]
    if len(kidx) == 0:
        return None
    visible = (lambda qp, kp: qp // block != kp // block) if exclude_own else None
    return sparse_common.subset_attention(q, k, v, key_mask, kidx=kidx, visible=visible,
                                          causal=causal, block=tile, return_lse=True,
                                          segments=segments, alibi_slopes=alibi_slopes)


def _local(q, k, v, key_mask, *, block, causal, tile, segments, alibi_slopes):
    """A1 of 'strided': |i − j| < block (causal 0 <= i − j < block)."""
    dlo, dhi = (0 if causal else -(block - 1)), block - 1
    return bs.attention(
        q, k, v, key_mask,
        block_mask_fn=lambda nq, nk, bq, bk: bs.band_block_mask(nq, nk, bq, bk, dlo, dhi),
        mask_fn=bs.band_mask_fn(dlo, dhi), block_q=tile, block_k=tile, return_lse=True,
        segments=segments, alibi=_alibi(q, k, alibi_slopes))


def _stride(q, k, v, key_mask, *, block, causal, tile, exclude_own, segments, alibi_slopes):
    """A2 of 'strided': (i − j) mod block == 0 (i == j excluded in the union: it is in A1)."""
    return sparse_common.residue_attention(
        q, k, v, key_mask, stride=block, dlo=0 if causal else -bs.BIG, dhi=bs.BIG, block=tile,
        exclude_self=exclude_own, return_lse=True, segments=segments, alibi_slopes=alibi_slopes)


def _parts(q, k, v, key_mask, *, layout, block, summary, causal, tile, union, **extra):
    """[(out, lse) of A1, (out, lse) of A2 or None]; extra: segments, alibi_slopes."""
    if layout == "fixed":
        return [_same_block(q, k, v, key_mask, block=block, causal=causal, tile=tile, **extra),
                _summary(q, k, v, key_mask, block=block, summary=summary, causal=causal, tile=tile,
                         exclude_own=union, **extra)]
    return [_local(q, k, v, key_mask, block=block, causal=causal, tile=tile, **extra),
            _stride(q, k, v, key_mask, block=block, causal=causal, tile=tile, exclude_own=union,
                    **extra)]


def _halves(k, v, H):
    """The key/value heads of query heads [0, H/2) and [H/2, H): Hk/2 each when the groups of
    G = H // Hk heads do not straddle the middle, else K/V repeated to H heads first."""
    G = H // k.shape[2]
    if (H // 2) % G:
        k, v, G = contract.repeat_kv(k, G), contract.repeat_kv(v, G), 1
    hk = H // 2 // G
    return (k[:, :, :hk], v[:, :, :hk]), (k[:, :, hk:], v[:, :, hk:])


def attention(params, q, k, v, *, key_mask, causal, rng, layout, block, summary, split_heads, tile,
              sink, segment_ids=None, alibi_slopes=None):
    del rng
    H = q.shape[2]
    _check_heads(split_heads, H)
    opts = dict(layout=layout, block=block, summary=summary, causal=causal, tile=tile,
                segments=segment_ids)
    if not split_heads:
        parts = [p for p in _parts(q, k, v, key_mask, union=True, alibi_slopes=alibi_slopes, **opts)
                 if p is not None]
        out = lse.merge([o for o, _ in parts], [part_lse for _, part_lse in parts], return_lse=sink)
        return sinks.apply(*out, params["sink"]) if sink else out
    h = H // 2
    zero = jnp.zeros(q.shape[:2] + (h, v.shape[-1]), q.dtype)
    s1, s2 = (None, None) if alibi_slopes is None else (alibi_slopes[:h], alibi_slopes[h:])
    (k1, v1), (k2, v2) = _halves(k, v, H)
    a1, _ = _parts(q[:, :, :h], k1, v1, key_mask, union=False, alibi_slopes=s1, **opts)
    _, a2 = _parts(q[:, :, h:], k2, v2, key_mask, union=False, alibi_slopes=s2, **opts)
    out = jnp.concatenate([a1[0], zero if a2 is None else a2[0]], axis=2)
    if not sink:
        return out
    none = jnp.full(q.shape[:2] + (h,), -jnp.inf, jnp.float32)
    return sinks.apply(out, jnp.concatenate([a1[1], none if a2 is None else a2[1]], axis=2), params["sink"])


def sub_patterns(L, S, *, layout, block, summary):
    """np.bool_ (A1 [L, S], A2 [L, S]) before the causal mask (the reference, tests and pictures)."""
    i, j = np.arange(L)[:, None], np.arange(S)[None, :]
    if layout == "fixed":
        return i // block == j // block, np.broadcast_to(j % block >= block - summary, (L, S))
    return np.abs(i - j) < block, (i - j) % block == 0


def pattern(L, S, *, causal, layout, block, summary, split_heads, **_):
    a1, a2 = sub_patterns(L, S, layout=layout, block=block, summary=summary)
    if causal:
        tril = np.tril(np.ones((L, S), dtype=bool))
        a1, a2 = a1 & tril, a2 & tril
    if not split_heads:
        return a1 | a2
    h = split_heads // 2
    return np.concatenate([np.broadcast_to(a1, (h, L, S)), np.broadcast_to(a2, (h, L, S))])


def state_size(L, H, D, *, layout, block, summary, split_heads, **_):
    """fixed: 2·H·D·((L−1) mod l + 1 + ⌊(L−1)/l⌋·c), the current block and the c summaries of
    each earlier block; strided: 2·L·H·D, as A2 reaches every key again (j + m·l). With
    split_heads each half keeps only its own part's keys (the keys queries >= L − 1 still see)."""
    _check_heads(split_heads, H)
    if layout == "strided":  # A1: the band of the last query; A2: every key
        a1, a2, union = min(block, L), L, L
    else:  # A1: the current block; A2: every summary position j < L
        a1 = (L - 1) % block + 1
        a2 = L // block * summary + max(L % block - (block - summary), 0)
        union = a1 + (L - 1) // block * summary
    return 2 * D * (H // 2 * (a1 + a2) if split_heads else H * union)


def _visible(t, pos, table, *, layout, block, summary, split_heads, **_):
    """The decoding rule: A1 and A2 at position t over the cached positions (bool [N] | [H, N])."""
    if layout == "fixed":
        a1, a2 = t // block == pos // block, pos % block >= block - summary
    else:
        a1, a2 = t - pos < block, (t - pos) % block == 0
    if not split_heads:
        return a1 | a2
    h = split_heads // 2
    return jnp.concatenate([jnp.broadcast_to(a1, (h,) + a1.shape), jnp.broadcast_to(a2, (h,) + a2.shape)])


def _slot_of(max_length, /, *, layout, block, summary, **_):
    """int32 [max_length]: fixed, summary position t (t mod l >= l − c) has its own slot (c per
    block) and any other position slot n + t mod l, n the summary slots (a ring over the current
    block: an earlier block's non-summary key is in neither A1 nor A2 of a later query, so its
    stale slot is masked); strided (A2 reaches every key), or where that is no smaller, slot t."""
    n, t = -(-max_length // block) * summary, np.arange(max_length)
    if layout != "fixed" or n + block - summary >= max_length:
        return t.astype(np.int32)
    r = t % block
    return np.where(r >= block - summary, t // block * summary + r - (block - summary), n + r).astype(np.int32)


# fixed: the summary positions and a ring of the current block; strided: every key (A2 reaches them)
DECODER = decode.kv_decoder(None, _visible, slot_of=_slot_of,
                            check=lambda H, Hk, *, split_heads, **_: _check_heads(split_heads, H))

SPEC = register(
    "sparse_transformer", family="pattern", exact=True, supports_causal=True, impl=attention,
    kv_heads="native", segments=True, alibi=True,
    options=Options, pattern_fn=pattern, state_size=state_size, complexity="O(N·(l + N·c/l))",
    decode_init_fn=DECODER[0], decode_step_fn=DECODER[1],
    decode_minimal=lambda layout, split_heads, **_: layout == "strided" and not split_heads,
    description="Child et al. factorized: fixed (block + summary columns) or strided (band + stride); heads may split.",
    test_options=({"block": 5, "summary": 2, "tile": 8},
                  {"layout": "strided", "block": 4, "tile": 4}),
    bench_options={"layout": "fixed", "block": 128, "summary": 8, "tile": 128},
)
