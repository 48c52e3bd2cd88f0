"""`blockwise`: exact softmax attention, online softmax over key blocks (Rabe & Staats; Dao).

Every (query block, key block) tile is computed once and discarded; the backward pass recomputes
tiles from the saved log-sum-exp, so memory is O(N·D + block_q·block_k), never O(L·S). Under
`causal`, tiles above the diagonal are never visited, and tiles of all-padding keys are skipped.

engine="auto" runs fp32 inputs on CPU through the fused C++ kernel (`kernels/flash_cpu.cc`: the
same algorithm, each tile a few sgemm calls and one vectorised softmax pass); engine="xla", and
every other dtype or backend, runs the lax.scan engine of `block_sparse.py`.
"""
from __future__ import annotations

import numpy as np

from attn_zoo.attention import block_sparse as bs
from attn_zoo.attention import masks
from attn_zoo.attention.registry import register
from attn_zoo.kernels import flash_cpu

DEFAULTS = dict(block_q=512, block_k=512, engine="auto")


def attention(params, q, k, v, *, key_mask, causal, rng, block_q, block_k, engine):
    del params, rng
    dlo = 0 if causal else -bs.BIG
    if flash_cpu.use(engine, q, k, v):
        B, L, H, D = q.shape
        S = k.shape[1]
        kmask = masks.key_mask_or_ones(key_mask, B, S)
        blocks = (bs.fit_block(block_q, L), bs.fit_block(block_k, S))
        out, _ = flash_cpu.attention(q, k, v, kmask, dlo=dlo, dhi=bs.BIG, scale=D ** -0.5,
                                     blocks=blocks)
        return out
    return bs.attention(
        q, k, v, key_mask,
        block_mask_fn=lambda nq, nk, bq, bk: bs.band_block_mask(nq, nk, bq, bk, dlo, bs.BIG),
        mask_fn=bs.band_mask_fn(dlo, bs.BIG), block_q=block_q, block_k=block_k)


SPEC = register(
    "blockwise", family="exact", exact=True, supports_causal=True, impl=attention,
    defaults=DEFAULTS, pattern_fn=lambda L, S, **_: np.ones((L, S), dtype=bool),
    complexity="O(N²) time, O(N) memory",
    description="Exact attention with an online softmax over key blocks and a recomputing backward.",
    test_options=({"block_q": 8, "block_k": 8}, {"block_q": 16, "block_k": 8},
                  {"block_q": 8, "block_k": 8, "engine": "xla"}),
    bench_options={},
)
