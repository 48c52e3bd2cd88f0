"""`strided` (dilated): query i sees keys j with (i − j) mod stride == 0, optionally |i − j| <= span.

Causal: also j <= i. Positions are regrouped so each residue class mod `stride` is contiguous
and folded into the batch (an O(N·D) transpose); within a class the pattern is a dense (or,
with a span, banded) attention of length N/stride, computed in tiles of `block` by the
block-sparse engine. Cost O(N²/stride) (O(N·span/stride) with a span); no L×S array anywhere.
"""
from __future__ import annotations

import dataclasses
import numpy as np

from attn_zoo.attention.core import block_sparse as bs
from attn_zoo.attention.core import decode
from attn_zoo.attention.core import sinks
from attn_zoo.attention.core import sparse_common
from attn_zoo.attention.core.options import option
from attn_zoo.attention.core.registry import register

@dataclasses.dataclass(frozen=True)
class Options:
    stride: int = option(64, "query i sees keys j with (i − j) mod stride == 0", min=1)
    span: int = option(-1, "also |i − j| <= span (-1: unbounded)", min=-1)
    block: int = option(128, "tile size of the exact engine", min=1)
    sink: bool = sinks.sink_option()


def class_band(stride, span, causal):
    """(dlo, dhi) on a − b for i = a·stride + r, j = b·stride + r; span < 0 means unbounded."""
    reach = bs.BIG if span < 0 else span // stride
    return (0 if causal else -reach), reach


def attention(params, q, k, v, *, key_mask, causal, rng, stride, span, block, sink,
              segment_ids=None, alibi_slopes=None):
    del rng
    dlo, dhi = class_band(stride, span, causal)
    out = sparse_common.residue_attention(q, k, v, key_mask, stride=stride, dlo=dlo, dhi=dhi,
                                          block=block, return_lse=sink, segments=segment_ids,
                                          alibi_slopes=alibi_slopes)
    return sinks.apply(*out, params["sink"]) if sink else out


def pattern(L, S, *, causal, stride, span, **_):
    d = np.arange(L)[:, None] - np.arange(S)[None, :]
    mask = d % stride == 0
    if span >= 0:
        mask &= np.abs(d) <= span
    return mask & (d >= 0) if causal else mask


def state_size(L, H, D, *, stride, span, **_):
    """2·H·D·min(L, ⌊span/stride⌋·stride + 1); with no span 2·L·H·D, as every key j is seen
    again by query j + m·stride: a decoder keeps the keys some query >= L − 1 still reaches."""
    return 2 * H * D * (L if span < 0 else min(L, span // stride * stride + 1))


def _slots(max_length, *, stride, span, **_):
    """Decoding keeps every key (no span), or a ring of the ⌊span/stride⌋·stride + 1 latest."""
    return max_length if span < 0 else min(max_length, span // stride * stride + 1)


def _visible(t, pos, table, *, stride, span, **_):
    d = t - pos
    return (d % stride == 0) & ((d <= span) | (span < 0))


DECODER = decode.kv_decoder(_slots, _visible)

SPEC = register(
    "strided", family="pattern", exact=True, supports_causal=True, impl=attention,
    kv_heads="native", segments=True, alibi=True,
    options=Options, pattern_fn=pattern, state_size=state_size, complexity="O(N²/stride)",
    decode_init_fn=DECODER[0], decode_step_fn=DECODER[1], decode_minimal=True,
    description="Dilated: (i−j) mod stride == 0 (optionally |i−j| ≤ span); residue classes made contiguous.",
    test_options=({"stride": 3, "block": 4}, {"stride": 2, "span": 9, "block": 4}),
    bench_options={"stride": 64, "block": 128},
)
