"""`longformer`: sliding window |i − j| <= window plus global positions (Beltagy et al. 2020).

A global position sees every key and is seen by every query (causal: only j <= i either way).
Global positions are the first `num_global` (the model's prepended global tokens, or CLS at 0)
or, when `global_indices` is non-empty, exactly those positions (existing tokens). Three parts,
none of them L×S: the band on the band engine (as `local`), all queries against the G global keys
outside their band (merged with the band by log-sum-exp), and the G global queries against
all keys (written over their rows). Cost O(N·(window + G)).
"""
from __future__ import annotations

import dataclasses
import numpy as np

from attn_zoo.attention.core import band as band_engine
from attn_zoo.attention.core import lse
from attn_zoo.attention.core import masks
from attn_zoo.attention.core import sparse_common
from attn_zoo.attention.core.options import option
from attn_zoo.attention.core.registry import register

@dataclasses.dataclass(frozen=True)
class Options:
    window: int = option(128, "keys on each side of a query (causal: before it)", min=0)
    num_global: int = option(1, "global positions: the first num_global (unless global_indices)", min=0)
    global_indices: tuple[int, ...] = option((), "explicit global positions (overrides num_global)")
    block: int = option(128, "query block of the band engine", min=1)

    def check(self):
        if any(g < 0 for g in self.global_indices):
            raise ValueError(f"global_indices must be >= 0, got {self.global_indices}")


def global_positions(n, num_global, global_indices):
    """Sorted unique global positions below n (static numpy int array)."""
    if global_indices:
        idx = np.asarray(sorted(set(int(g) for g in global_indices)), dtype=np.int64)
    else:
        idx = np.arange(num_global)
    return idx[idx < n]


def attention(params, q, k, v, *, key_mask, causal, rng, window, num_global, global_indices, block):
    del params, rng
    L, S = q.shape[1], k.shape[1]
    dlo, dhi = (0 if causal else -window), window
    band = band_engine.attention(q, k, v, key_mask, dlo=dlo, dhi=dhi, block=block, return_lse=True)
    out = band[0]
    gk = global_positions(S, num_global, global_indices)
    if len(gk):  # global columns outside each query's band (inside it the band has them)
        outside = lambda qp, kp: ((qp - kp) < dlo) | ((qp - kp) > dhi)  # noqa: E731
        cols = sparse_common.subset_attention(q, k, v, key_mask, kidx=gk, visible=outside,
                                              causal=causal, block=block, return_lse=True)
        out = lse.merge([band[0], cols[0]], [band[1], cols[1]])
    gq = global_positions(L, num_global, global_indices)
    if len(gq):  # global rows see every key
        rows = sparse_common.subset_attention(q, k, v, key_mask, qidx=gq, visible=None,
                                              causal=causal, block=block)
        out = out.at[:, gq].set(rows)
    return out


def pattern(L, S, *, causal, window, num_global, global_indices, **_):
    mask = masks.band_pattern(L, S, window, causal=causal)
    mask[global_positions(L, num_global, global_indices), :] = True
    mask[:, global_positions(S, num_global, global_indices)] = True
    return mask


def state_size(L, H, D, *, window, num_global, global_indices, **_):
    """2·H·D·(min(window + 1, L) + globals before the band), or 2·L·H·D while a global query
    (one that sees every key) is still to come at a position >= L − 1."""
    future = max(global_indices) >= L - 1 if global_indices else num_global >= L
    lo = max(L - 1 - window, 0)  # the band of queries >= L - 1 starts here
    kept = L if future else L - lo + int(np.sum(global_positions(L, num_global, global_indices) < lo))
    return 2 * H * D * kept


SPEC = register(
    "longformer", family="pattern", exact=True, supports_causal=True, impl=attention,
    options=Options, pattern_fn=pattern, state_size=state_size, complexity="O(N·(w+G))",
    description="Sliding window plus global positions (first G or listed) that see and are seen by all.",
    test_options=({"window": 2, "num_global": 3, "block": 8},
                  {"window": 4, "global_indices": (0, 9, 17), "block": 4}),
    bench_options={"window": 256, "num_global": 16, "block": 128},
)
