"""Masks and the masked softmax shared by every variant.

Convention: a boolean `visible` array, True where query l may see key s, broadcastable to
[B, H, L, S]. Masked logits never reach an exp: probabilities are multiplied by the mask, so a
query with no visible key gets exact zeros (never NaN), in the forward and the backward pass.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np


def visible_mask(L, S, *, key_mask=None, causal=False, pattern=None):
    """bool [B|1, H|1, L, S]: key_mask [B, S], causal (j <= i), pattern [L, S] or [H, L, S]."""
    vis = jnp.ones((1, 1, L, S), dtype=bool)
    if causal:
        vis = vis & jnp.tril(jnp.ones((L, S), dtype=bool))
    if pattern is not None:
        pattern = jnp.asarray(pattern, dtype=bool)
        vis = vis & (pattern[None, None] if pattern.ndim == 2 else pattern[None])
    if key_mask is not None:
        vis = vis & key_mask[:, None, None, :]
    return vis


def masked_softmax(logits, visible):
    """Softmax over the last axis restricted to `visible`; all-masked rows give zeros.

    logits: fp32 [..., S]; visible: bool broadcastable to logits.
    """
    neg = jnp.finfo(logits.dtype).min
    masked = jnp.where(visible, logits, neg)
    m = jax.lax.stop_gradient(jnp.max(masked, axis=-1, keepdims=True))
    p = jnp.where(visible, jnp.exp(masked - m), 0.0)
    denom = jnp.sum(p, axis=-1, keepdims=True)
    return p / jnp.where(denom > 0, denom, 1.0)


def hide_masked(key_mask, *xs):
    """xs [B, S, ...] (keys, values) with the rows of masked keys set to 0 by jnp.where (all of
    xs unchanged when key_mask is None). Weights of masked keys are zero, but 0 · NaN is NaN: a
    masked key's NaN or Inf would still reach every output through a product (p·v, ds·k) unless
    its rows are zero. Their gradient is zero."""
    if key_mask is None:
        return xs
    return tuple(jnp.where(key_mask.reshape(key_mask.shape + (1,) * (x.ndim - 2)), x, 0) for x in xs)


def pad_to_multiple(x, multiple, axis):
    """Zero-pad `axis` of x up to a multiple of `multiple`; returns (padded, original length)."""
    n = x.shape[axis]
    extra = (-n) % multiple
    if extra == 0:
        return x, n
    widths = [(0, 0)] * x.ndim
    widths[axis] = (0, extra)
    return jnp.pad(x, widths), n


def key_mask_or_ones(key_mask, B, S):
    return jnp.ones((B, S), dtype=bool) if key_mask is None else key_mask


def band_pattern(L, S, window, causal=False):
    """np.bool_ [L, S]: |i - j| <= window (causal: 0 <= i - j <= window)."""
    i = np.arange(L)[:, None]
    j = np.arange(S)[None, :]
    d = i - j
    return (d >= 0) & (d <= window) if causal else np.abs(d) <= window
