"""`blockwise`: exact softmax attention, online softmax over key blocks (Rabe & Staats; Dao).

Every (query block, key block) tile is computed once and discarded; the backward pass recomputes
tiles from the saved log-sum-exp, so memory is O(N·D + block_q·block_k), never O(L·S). Under
`causal`, tiles above the diagonal are never visited, and tiles of all-padding keys are skipped.

engine="auto" runs fp32 inputs on CPU through the fused C++ kernel (`kernels/flash_cpu.cc`: the
same algorithm, each tile a few sgemm calls and one vectorised softmax pass); engine="xla", and
every other dtype or backend, runs the lax.scan engine of `core/block_sparse.py`.
"""
from __future__ import annotations

import dataclasses
import numpy as np

from attn_zoo.attention.core import block_sparse as bs
from attn_zoo.attention.core import sinks
from attn_zoo.attention.core import decode
from attn_zoo.attention.core.options import ENGINE_DOC, ENGINES, option
from attn_zoo.attention.core.registry import kv_cache, register

@dataclasses.dataclass(frozen=True)
class Options:
    block_q: int = option(512, "query block (tile rows)", min=1)
    block_k: int = option(512, "key block (tile columns)", min=1)
    engine: str = option("auto", ENGINE_DOC, choices=ENGINES)
    sink: bool = sinks.sink_option()


def attention(params, q, k, v, *, key_mask, causal, rng, block_q, block_k, engine, sink,
              segment_ids=None, alibi_slopes=None):
    del rng
    out = bs.full(q, k, v, key_mask, causal=causal, block_q=block_q, block_k=block_k, engine=engine,
                  return_lse=sink, segments=segment_ids, alibi_slopes=alibi_slopes)
    return sinks.apply(*out, params["sink"]) if sink else out


DECODER = decode.kv_decoder(decode.full_length, decode.everything)  # a full KV cache

SPEC = register(
    "blockwise", family="exact", exact=True, supports_causal=True, impl=attention,
    kv_heads="native", segments=True, alibi=True,
    options=Options, state_size=kv_cache, pattern_fn=lambda L, S, **_: np.ones((L, S), dtype=bool),
    decode_init_fn=DECODER[0], decode_step_fn=DECODER[1], decode_minimal=True,
    complexity="O(N²) time, O(N) memory",
    description="Exact attention with an online softmax over key blocks and a recomputing backward.",
    test_options=({"block_q": 8, "block_k": 8}, {"block_q": 16, "block_k": 8},
                  {"block_q": 8, "block_k": 8, "engine": "xla"}),
    bench_options={},
)
