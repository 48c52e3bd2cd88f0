"""Log-sum-exp bookkeeping: finishing a softmax row, and merging softmaxes over disjoint key sets.

Every engine that splits a query's keys (tiles, bands, hash rounds, global columns) returns
(out, lse) per part; `merge` is the one exact way to put the parts back together.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp

F32 = jnp.float32


def normalize(acc, m, l):
    """Finish a query row's softmax: (acc / l, lse = m + log l); a row with no visible key
    (l == 0) gets zeros and lse = -inf, a NaN row (l NaN) NaN in both, as the fused kernel."""
    l_safe = jnp.where(l == 0, 1.0, l)
    return acc / l_safe[..., None], jnp.where(l == 0, -jnp.inf, m + jnp.log(l_safe))


def merge(outs, lses, return_lse=False):
    """Exact softmax attention over the union of disjoint key sets from per-set (out, lse) pairs.

    outs [R, ..., Dv] (or a sequence of R arrays [..., Dv]); lses fp32 [R, ...] (-inf: that set
    had no visible key). A query that sees no key in any set gets zeros; gradients stay finite.
    The result has the parts' dtype; return_lse: also the union's lse (-inf: no key at all).
    """
    outs, lses = jnp.stack(list(outs)), jnp.stack(list(lses)).astype(F32)
    m = jax.lax.stop_gradient(jnp.max(lses, axis=0))
    m = jnp.where(jnp.isfinite(m), m, 0.0)
    w = jnp.exp(lses - m)
    total = jnp.sum(w, axis=0)
    out = jnp.sum(w[..., None] * outs.astype(F32), axis=0) / jnp.where(total > 0, total, 1.0)[..., None]
    if not return_lse:
        return out.astype(outs.dtype)
    lse = jnp.where(total > 0, m + jnp.log(jnp.where(total > 0, total, 1.0)), -jnp.inf)
    return out.astype(outs.dtype), lse
