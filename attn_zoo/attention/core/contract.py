"""The contract's extensions, checked once in `AttentionSpec.apply` for every variant.

Grouped key/value heads: k [B, S, Hk, D], v [B, S, Hk, Dv] with H % Hk == 0, query head h reads
key/value head h // G (G = H // Hk). A variant registered with kv_heads="native" receives Hk heads
and indexes them itself; kv_heads="repeat" (the default) receives K/V repeated to H heads.
segment_ids (packed sequences): a query sees only keys of its own segment; handed to an
implementation as the pair (q_ids [B, L], kv_ids [B, S]) int32. alibi_slopes [H] fp32: the
scaled logit of (i, j) gets − slope_h · |i − j|. A variant registered without segments=True or
alibi=True refuses them in one line naming the variants that support them.
"""
from __future__ import annotations

import jax.numpy as jnp
import numpy as np

KV_HEADS = ("native", "repeat")
FEATURES = {"segments": "segment_ids", "alibi": "alibi_slopes"}


def groups(q, k) -> int:
    """G = H // Hk: query heads per key/value head."""
    return q.shape[2] // k.shape[2]


def repeat_kv(x, G):
    """[B, S, Hk, X] -> [B, S, Hk·G, X]: head h of the result is head h // G of x."""
    return x if G == 1 else jnp.repeat(x, G, axis=2)


def kv_for(spec, q, k, v):
    """(k, v) as spec's implementation takes them: repeated to H heads unless kv_heads='native'."""
    G = groups(q, k)
    if G == 1 or spec.kv_heads == "native":
        return k, v
    return repeat_kv(k, G), repeat_kv(v, G)


def repeating(fn):
    """fn(params, q, k, v, ...) (an `update` or `chosen_pattern` of a kv_heads='repeat' variant)
    called with k, v repeated to q's heads when they have fewer."""
    def wrapped(params, q, k, v, *args, **kwargs):
        G = groups(q, k)
        return fn(params, q, repeat_kv(k, G), repeat_kv(v, G), *args, **kwargs)
    wrapped.__doc__, wrapped.__name__ = fn.__doc__, getattr(fn, "__name__", "fn")
    return wrapped


def segment_pair(name, segment_ids, B, L, S):
    """(q_ids int32 [B, L], kv_ids int32 [B, S]) from an array [B, L] (needs L == S) or a pair."""
    if isinstance(segment_ids, (tuple, list)):
        if len(segment_ids) != 2:
            raise ValueError(f"attention '{name}': segment_ids must be [B, L] or a pair "
                             f"(q_segment_ids [B, L], kv_segment_ids [B, S]), got {len(segment_ids)} items")
        qs, ks = segment_ids
    else:
        if L != S:
            raise ValueError(f"attention '{name}': segment_ids [B, L] needs L == S, got L={L}, S={S}; "
                             f"pass (q_segment_ids, kv_segment_ids)")
        qs = ks = segment_ids
    for what, x, n in (("q_segment_ids", qs, L), ("kv_segment_ids", ks, S)):
        if tuple(x.shape) != (B, n):
            raise ValueError(f"attention '{name}': {what} must be {[B, n]}, got {list(x.shape)}")
        if not jnp.issubdtype(x.dtype, jnp.integer):
            raise TypeError(f"attention '{name}': {what} must be integers, got dtype {np.dtype(x.dtype)}")
    return jnp.asarray(qs, jnp.int32), jnp.asarray(ks, jnp.int32)


def check_slopes(name, slopes, H):
    """alibi_slopes as fp32 [H]."""
    if tuple(np.shape(slopes)) != (H,):
        raise ValueError(f"attention '{name}': alibi_slopes must be [H] = [{H}], "
                         f"got {list(np.shape(slopes))}")
    return jnp.asarray(slopes, jnp.float32)


def extras(spec, q, k, segment_ids, alibi_slopes) -> dict:
    """The keyword arguments beyond the options that spec's implementation gets: segment_ids
    (the pair) and alibi_slopes, each only when given (so the default call is unchanged); the
    registry has refused them already where spec does not support them."""
    out = {}
    B, L, H = q.shape[:3]
    if segment_ids is not None:
        out["segment_ids"] = segment_pair(spec.name, segment_ids, B, L, k.shape[1])
    if alibi_slopes is not None:
        out["alibi_slopes"] = check_slopes(spec.name, alibi_slopes, H)
    return out


def features(spec) -> str:
    """The extensions a spec supports, in a few words (`attn-zoo list`), e.g. 'kv:native seg
    alibi sink' (kv: grouped K/V heads native or repeated by the registry)."""
    words = [f"kv:{spec.kv_heads}"] + [w for w, on in (("seg", spec.segments), ("alibi", spec.alibi),
                                                       ("sink", spec.sinks)) if on]
    return " ".join(words)
