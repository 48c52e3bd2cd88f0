"""`bigbird`: blocked sparse attention of Zaheer et al. 2020 — sliding, global and random blocks.

Positions are cut into blocks of `block` (b; padded internally, the padding masked). Query
block i sees key blocks |i − j| <= num_sliding // 2, the global blocks, and `num_random` random
other blocks; the global query blocks see every key block. The global blocks are the first and
the last `num_global` (global_at='ends': the paper's ITC form, and google-research's code, whose
first and last blocks are global), or the first `num_global` only (global_at='start', this
zoo's form before, kept as an option). Causal: only j <= i (random blocks are drawn among past
blocks, j < i, outside the sliding/global ones); with 'ends' the last query blocks see every
past key, so a causal decoder keeps all of them.
Random blocks are shared by the batch and heads and come from `rng` (random_source='rng':
new each call) or from params (random_source='params': fixed per layer; `random_scores`,
fp32 [nq, nk], stop-gradient, only their order is used, so weight decay leaves it unchanged).
One engine call: the keys are the sequence's blocks followed by each query block's r gathered
random blocks, so cost is O(N·b·(num_sliding + num_global + num_random)).
"""
from __future__ import annotations

import dataclasses
import jax
import jax.numpy as jnp
import numpy as np

from attn_zoo.attention.core import block_sparse as bs
from attn_zoo.attention.core import decode
from attn_zoo.attention.core import masks
from attn_zoo.attention.core import sinks
from attn_zoo.attention.core.options import option
from attn_zoo.attention.core.registry import register

SOURCES = ("rng", "params")
GLOBAL_AT = ("ends", "start")
@dataclasses.dataclass(frozen=True)
class Options:
    block: int = option(64, "block size b of queries and keys", min=1)
    num_sliding: int = option(3, "sliding key blocks around a query block (odd)", min=1)
    num_global: int = option(1, "global blocks at each end (see global_at): see every key, seen by "
                                "every query", min=0)
    global_at: str = option("ends", "'ends': the first and the last num_global blocks are global (the "
                            "paper's and google-research's form); 'start': the first num_global only",
                            choices=GLOBAL_AT)
    num_random: int = option(3, "random key blocks per query block", min=0)
    random_source: str = option("rng", "'rng': new random blocks each call; 'params': fixed per layer",
                                choices=SOURCES)
    sink: bool = sinks.sink_option()

    def check(self):
        if self.num_sliding % 2 == 0:
            raise ValueError(f"num_sliding={self.num_sliding} must be odd (a window centred on the block)")


def static_blocks(nq, nk, *, num_sliding, num_global, causal, global_at="ends"):
    """bool [nq, nk]: the sliding and global blocks (block-level, O((N/b)²)); global_at='ends'
    makes the last num_global query and key blocks global too."""
    i, j = np.arange(nq)[:, None], np.arange(nk)[None, :]
    mask = (np.abs(i - j) <= num_sliding // 2) | (j < num_global) | (i < num_global)
    if global_at == "ends":
        mask |= (j >= nk - num_global) | (i >= nq - num_global)
    return mask & (j <= i) if causal else mask


def random_blocks(scores, nq, nk, *, num_sliding, num_global, num_random, causal, global_at="ends"):
    """(idx int32 [nq, r], valid bool [nq, r]): the r highest-scoring candidate blocks per row.

    Candidates are the blocks outside the static part (causal: j < i); rows with fewer than r
    candidates get invalid picks, which are masked. `scores` fp32 [nq, nk] (jax or numpy).
    """
    cand = ~static_blocks(nq, nk, num_sliding=num_sliding, num_global=num_global, causal=False,
                          global_at=global_at)
    if causal:
        cand &= np.arange(nk)[None, :] < np.arange(nq)[:, None]
    r = min(num_random, nk)
    if r == 0:
        return jnp.zeros((nq, 0), jnp.int32), jnp.zeros((nq, 0), bool)
    masked = jnp.where(jnp.asarray(cand), jnp.asarray(scores, jnp.float32), -1.0)
    top, idx = jax.lax.top_k(masked, r)
    return idx.astype(jnp.int32), top >= 0.0


def _scores(params, rng, nq, nk, random_source):
    if random_source == "params":
        s = jax.lax.stop_gradient(params["random_scores"])
        if s.shape[0] < nq or s.shape[1] < nk:
            raise ValueError(f"bigbird: params were built for {s.shape} blocks, input needs "
                             f"{(nq, nk)}; init with the longest length")
        return s[:nq, :nk]
    if rng is None:
        raise ValueError("bigbird: random_source='rng' needs an rng")
    return jax.random.uniform(rng, (nq, nk), jnp.float32)


def init(rng, q, k, v, *, block, random_source, **_):
    if random_source != "params":
        return {}
    nq, nk = bs.num_blocks(q.shape[1], block), bs.num_blocks(k.shape[1], block)
    return {"random_scores": jax.random.uniform(rng, (nq, nk), jnp.float32)}


def attention(params, q, k, v, *, key_mask, causal, rng, block, num_sliding, num_global,
              global_at, num_random, random_source, sink, segment_ids=None, alibi_slopes=None):
    B, L, H, _ = q.shape
    S = k.shape[1]
    b = block
    nq, nk = bs.num_blocks(L, b), bs.num_blocks(S, b)
    km, _ = masks.pad_to_multiple(masks.key_mask_or_ones(key_mask, B, S), b, axis=1)
    qp, _ = masks.pad_to_multiple(q, b, axis=1)
    kp, _ = masks.pad_to_multiple(k, b, axis=1)
    vp, _ = masks.pad_to_multiple(v, b, axis=1)
    static = static_blocks(nq, nk, num_sliding=num_sliding, num_global=num_global, causal=causal,
                           global_at=global_at)
    idx, valid = random_blocks(_scores(params, rng, nq, nk, random_source), nq, nk,
                               num_sliding=num_sliding, num_global=num_global,
                               num_random=num_random, causal=causal, global_at=global_at)
    r = idx.shape[1]
    flat = idx.reshape(-1)

    def gather(x):  # [B, nk·b, ...] -> the random blocks, [B, nq·r·b, ...]
        xb = x.reshape(B, nk, b, *x.shape[2:])
        return jnp.take(xb, flat, axis=1).reshape(B, nq * r * b, *x.shape[2:])

    kr = jnp.concatenate([kp, gather(kp)], axis=1)
    vr = jnp.concatenate([vp, gather(vp)], axis=1)
    rmask = gather(km) & jnp.repeat(valid.reshape(-1), b)[None]
    kmr = jnp.concatenate([km, rmask], axis=1)
    with_random = lambda x: jnp.concatenate([x, gather(x)], axis=1)  # noqa: E731  ids, positions
    segments = alibi = None
    if segment_ids is not None:
        segments = (masks.pad_to_multiple(segment_ids[0], b, axis=1)[0],
                    with_random(masks.pad_to_multiple(segment_ids[1], b, axis=1)[0]))
    if alibi_slopes is not None:  # the gathered keys keep their own positions
        qpos, kpos = bs.positions(B, nq * b, nk * b)
        alibi = (alibi_slopes, qpos, with_random(kpos))

    def block_mask_fn(nqb, nkb, bq, bk):
        assert (nqb, nkb, bq, bk) == (nq, nk + nq * r, b, b), "bigbird: unexpected blocking"
        rand = np.zeros((nq, nq * r), dtype=bool)
        for t in range(r):
            rand[np.arange(nq), np.arange(nq) * r + t] = True
        return np.concatenate([static, rand], axis=1)

    # Only the diagonal blocks need an element mask (causal); random blocks are strictly past.
    mask_fn = (lambda qpos, kpos: (kpos <= qpos) | (kpos >= nk * b)) if causal else None
    out = bs.attention(qp, kr, vr, kmr, block_mask_fn=block_mask_fn, mask_fn=mask_fn,
                       block_q=b, block_k=b, return_lse=sink, segments=segments, alibi=alibi)
    if sink:
        return sinks.apply(out[0][:, :L], out[1][:, :L], params["sink"])
    return out[:, :L]


def pattern(L, S, *, causal, rng, params=None, block, num_sliding, num_global, global_at,
            num_random, random_source, **_):
    """np.bool_ [L, S]: the blocks that apply() computes with the same rng (or params)."""
    if random_source == "params" and params is None:
        return None  # the random blocks live in params: pattern(...) cannot know them
    nq, nk = bs.num_blocks(L, block), bs.num_blocks(S, block)
    blocks = static_blocks(nq, nk, num_sliding=num_sliding, num_global=num_global, causal=causal,
                           global_at=global_at)
    idx, valid = random_blocks(_scores(params, rng, nq, nk, random_source), nq, nk,
                               num_sliding=num_sliding, num_global=num_global,
                               num_random=num_random, causal=causal, global_at=global_at)
    idx, valid = np.asarray(idx), np.asarray(valid)
    for t in range(idx.shape[1]):
        rows = np.nonzero(valid[:, t])[0]
        blocks[rows, idx[rows, t]] = True
    mask = np.kron(blocks, np.ones((block, block), dtype=bool))[:L, :S]
    return mask & np.tril(np.ones((L, S), dtype=bool)) if causal else mask


def chosen_pattern(params, q, k, v, *, key_mask=None, causal=False, rng=None, **options):
    """bool [B, H, L, S] of the pairs computed (pictures; works for random_source='params')."""
    m = pattern(q.shape[1], k.shape[1], causal=causal, rng=rng, params=params, **options)[None]
    if key_mask is not None:
        m = m & np.asarray(key_mask)[:, None, :]
    return np.broadcast_to(m[:, None], (q.shape[0], q.shape[2]) + m.shape[1:])


def state_size(L, H, D, *, block, num_sliding, num_global, global_at, num_random, **_):
    """2·L·H·D with random blocks or global_at='ends' (num_global >= 1); otherwise 2·H·D·(the
    sliding blocks of query L − 1 and on, plus the global blocks before them), or 2·L·H·D while a
    global query block is to come."""
    # A later query block may draw any earlier non-global block at random (from rng, or from
    # params fixed per layer but unknown here), and with 'ends' the last blocks, still to come
    # (the length is not known while decoding), see every past key: no past key can be dropped.
    iq = (L - 1) // block
    if num_random or iq < num_global or (global_at == "ends" and num_global):
        return 2 * L * H * D
    lo = max(iq - num_sliding // 2, 0) * block
    return 2 * H * D * (L - lo + min(num_global * block, lo))


def _block_table(params, max_length, H, rng, *, block, num_sliding, num_global, global_at,
                 num_random, random_source, **_):
    """bool [nq, nk]: the key blocks each query block sees at L = max_length (static and the
    random blocks that apply draws from the same rng or params); (L/b)² bools in the cache.
    Decoding equals apply on max_length tokens: with global_at='ends' (and rng-drawn random
    blocks) the rows of a position depend on that length."""
    n = bs.num_blocks(max_length, block)
    blocks = jnp.asarray(static_blocks(n, n, num_sliding=num_sliding, num_global=num_global,
                                       causal=True, global_at=global_at))
    idx, valid = random_blocks(_scores(params, rng, n, n, random_source), n, n,
                               num_sliding=num_sliding, num_global=num_global,
                               num_random=num_random, causal=True, global_at=global_at)
    rows = jnp.broadcast_to(jnp.arange(n)[:, None], idx.shape)
    return blocks.at[rows, idx].set(blocks[rows, idx] | valid)  # top_k picks are distinct


def _visible(t, pos, table, *, block, **_):
    return table[t // block][jnp.maximum(pos, 0) // block]


# a full KV cache: with random blocks any earlier block may be drawn (= state_size)
DECODER = decode.kv_decoder(decode.full_length, _visible, table=_block_table)

SPEC = register(
    "bigbird", family="pattern", exact=True, supports_causal=True, impl=attention,
    kv_heads="native", segments=True, alibi=True,
    options=Options, init_fn=init, pattern_fn=pattern, state=("random_scores",), needs_rng=True,
    state_size=state_size, decode_init_fn=DECODER[0], decode_step_fn=DECODER[1],
    decode_minimal=lambda num_random, num_global, global_at, **_: bool(
        num_random or (global_at == "ends" and num_global)),
    chosen_pattern=chosen_pattern, complexity="O(N·b·(3+2g+r))",
    description="Blocked: sliding, global and random blocks (random from rng, or fixed in params).",
    test_options=({"block": 4, "num_global": 1, "num_random": 2},
                  {"block": 3, "num_sliding": 1, "num_global": 0, "num_random": 1}),
    departures="random blocks are shared by the batch and the heads (google-research draws them per "
               "head); global_at='start' (only the first num_global blocks global) is an option, "
               "not the paper's form",
    bench_options={"block": 64, "num_sliding": 3, "num_global": 1, "num_random": 3},
)
