"""`longformer`: sliding window |i − j| <= window plus global positions (Beltagy et al. 2020).

A global position sees every key and is seen by every query (causal: only j <= i either way).
Global positions are the first `num_global` (the model's prepended global tokens, or CLS at 0)
or, when `global_indices` is non-empty, exactly those positions (existing tokens). Three parts,
none of them L×S: the band on the band engine (as `local`), all queries against the G global keys
outside their band (merged with the band by log-sum-exp), and the G global queries against
all keys (written over their rows). Cost O(N·(window + G)).

The paper uses separate projections Qg, Kg, Vg for the global attention. global_projections=False
(default) reuses the local q, k, v there. True gives the global rows their own q, k, v as in
allenai's implementation (the global queries against all keys use Qg, Kg, Vg; every query's
attention to the global keys keeps the local ones), but as per-head maps of the local q, k, v:
x + x·Δ with Δ [H, D, D] ([H, Dv, Dv] for v) in params, zero at init (= the shared form), since
an attention function never sees the hidden states the paper projects from.
"""
from __future__ import annotations

import dataclasses

import jax.numpy as jnp
import numpy as np

from attn_zoo.attention.core import band as band_engine
from attn_zoo.attention.core import decode
from attn_zoo.attention.core import lse
from attn_zoo.attention.core import masks
from attn_zoo.attention.core import sinks
from attn_zoo.attention.core import sparse_common
from attn_zoo.attention.core.options import option
from attn_zoo.attention.core.registry import register

@dataclasses.dataclass(frozen=True)
class Options:
    window: int = option(128, "keys on each side of a query (causal: before it)", min=0)
    num_global: int = option(1, "global positions: the first num_global (unless global_indices)", min=0)
    global_indices: tuple[int, ...] = option((), "explicit global positions (overrides num_global)")
    block: int = option(128, "query block of the band engine", min=1)
    global_projections: bool = option(False, "global rows use their own q, k, v: x + x·Δ per head, Δ "
                                             "in params (the paper's separate global projections)")
    sink: bool = sinks.sink_option()

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


def init(rng, q, k, v, *, global_projections, **_):
    """{} or, with global_projections, the per-head maps Δ of the global q, k, v (zeros)."""
    del rng
    if not global_projections:
        return {}
    (H, D), (Hk, Dv) = q.shape[2:], v.shape[2:]  # k, v may have Hk < H heads
    return {"global_q": jnp.zeros((H, D, D), jnp.float32), "global_k": jnp.zeros((Hk, D, D), jnp.float32),
            "global_v": jnp.zeros((Hk, Dv, Dv), jnp.float32)}


def _global_qkv(params, q, k, v):
    """q, k, v of the global rows: x + x·Δ per head (Δ from params)."""
    def proj(x, delta):
        return x + jnp.einsum("bshd,hde->bshe", x, delta.astype(x.dtype))
    return proj(q, params["global_q"]), proj(k, params["global_k"]), proj(v, params["global_v"])


def attention(params, q, k, v, *, key_mask, causal, rng, window, num_global, global_indices, block,
              global_projections, sink, segment_ids=None, alibi_slopes=None):
    del rng
    L, S = q.shape[1], k.shape[1]
    dlo, dhi = (0 if causal else -window), window
    extra = dict(segments=segment_ids, alibi_slopes=alibi_slopes)
    band = band_engine.attention(q, k, v, key_mask, dlo=dlo, dhi=dhi, block=block, return_lse=True,
                                 **extra)
    out, out_lse = band
    gk = global_positions(S, num_global, global_indices)
    if len(gk):  # global columns outside each query's band (inside it the band has them)
        outside = lambda qp, kp: ((qp - kp) < dlo) | ((qp - kp) > dhi)  # noqa: E731
        cols = sparse_common.subset_attention(q, k, v, key_mask, kidx=gk, visible=outside,
                                              causal=causal, block=block, return_lse=True, **extra)
        out = lse.merge([band[0], cols[0]], [band[1], cols[1]], return_lse=sink)
        out, out_lse = out if sink else (out, None)
    gq = global_positions(L, num_global, global_indices)
    if len(gq):  # global rows see every key
        qg, kg, vg = _global_qkv(params, q, k, v) if global_projections else (q, k, v)
        rows = sparse_common.subset_attention(qg, kg, vg, key_mask, qidx=gq, visible=None,
                                              causal=causal, block=block, return_lse=sink, **extra)
        rows, rows_lse = rows if sink else (rows, None)
        out = out.at[:, gq].set(rows)
        if sink:
            out_lse = out_lse.at[:, gq].set(rows_lse)
    return sinks.apply(out, out_lse, params["sink"]) if sink else out


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


def _global_table(params, max_length, H, rng, *, num_global, global_indices, **_):
    """bool [max_length]: the global positions (the decoding rule's table)."""
    is_global = np.zeros(max_length, bool)
    is_global[global_positions(max_length, num_global, global_indices)] = True
    return jnp.asarray(is_global)


def _visible(t, pos, is_global, *, window, **_):
    return (t - pos <= window) | is_global[jnp.maximum(pos, 0)] | is_global[t]


def _decodable(H, Hk, *, global_projections, **_):
    if global_projections:
        raise ValueError("attention 'longformer': global_projections=True cannot decode token by token "
                         "(the cache holds the local keys and values only); decode with "
                         "global_projections=False")


def _slot_of(max_length, /, *, window, num_global, global_indices, **_):
    """int32 [max_length]: when every global position lies in the first window + 1 (a global query
    then sees only keys still in the ring) and the ring is shorter than the sequence, a global
    position's own slot (its rank) and any other position t ring slot G + t mod (window + 1); a
    ring slot whose position left the window is masked by the window rule, since no later query
    is global. Otherwise slot t: every key."""
    g = global_positions(max_length, num_global, global_indices)
    if (len(g) and int(g.max()) > window) or len(g) + window + 1 >= max_length:
        return np.arange(max_length, dtype=np.int32)
    slot = len(g) + np.arange(max_length) % (window + 1)
    slot[g] = np.arange(len(g))
    return slot.astype(np.int32)


# the global keys and a ring buffer of the window when the globals come first; else every key (a
# global query still to come sees them all)
DECODER = decode.kv_decoder(None, _visible, table=_global_table, check=_decodable, slot_of=_slot_of)

SPEC = register(
    "longformer", family="pattern", exact=True, supports_causal=True, impl=attention,
    kv_heads="native", segments=True, alibi=True,
    options=Options, init_fn=init, pattern_fn=pattern, state_size=state_size, complexity="O(N·(w+G))",
    decode_init_fn=DECODER[0], decode_step_fn=DECODER[1],
    description="Sliding window plus global positions (first G or listed) that see and are seen by all.",
    test_options=({"window": 2, "num_global": 3, "block": 8},
                  {"window": 4, "global_indices": (0, 9, 17), "block": 4}),
    bench_options={"window": 256, "num_global": 16, "block": 128},
    departures="global attention reuses the local q, k, v by default; global_projections=True gives "
               "the global rows their own, as per-head maps x + x·Δ of the local q, k, v (not "
               "projections of the hidden states as in the paper)",
)
