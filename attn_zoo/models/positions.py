"""Position information for the Transformer: absolute tables (sinusoidal), rotary embeddings
(RoPE) and positions within packed segments. Pure functions (no Flax).

Letters: B batch, L length, H heads, D head dim, R rotated dims per head (even, R <= D).
`model.positions` picks one: 'sinusoidal' and 'learned' add a table to the embeddings; 'rope'
rotates q and k (`rope`); 'alibi' biases the attention scores by head-wise slopes times the
distance (the attention variant applies it); 'nope' adds nothing (causal attention alone).
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from attn_zoo import configs

KINDS = configs.POSITIONS  # model.positions: checked at config load too


def sinusoidal(length, dim):
    """[length, dim] fixed sin/cos positions (Vaswani 2017)."""
    pos = np.arange(length)[:, None]
    freq = np.exp(-np.log(10_000.0) * np.arange(0, dim, 2) / dim)
    table = np.zeros((length, dim), np.float32)
    table[:, 0::2] = np.sin(pos * freq)
    table[:, 1::2] = np.cos(pos * freq)[:, : dim // 2]
    return jnp.asarray(table)


def rotated_dims(dim, fraction) -> int:
    """R = round(fraction·D / 2)·2: the even number of leading dims of each head that RoPE rotates."""
    return int(round(fraction * dim / 2)) * 2


def rope(x, positions, *, base=10000.0, fraction=1.0):
    """Rotary position embedding (Su et al. 2021): x [B, L, H, D], positions [B, L] or [L] int ->
    x's shape and dtype.

    GPT-NeoX half-split layout: within the first R = rotated_dims(D, fraction) dims, dim i and dim
    i + R/2 (i < R/2) form a pair, rotated by the angle positions·base^(-2i/R); dims R..D-1 pass
    unchanged. Math in float32. The score q·k of two rotated vectors depends on their positions
    only through the difference (the relative property).
    """
    D = x.shape[-1]
    R = rotated_dims(D, fraction)
    if R == 0:
        return x
    half = R // 2
    inv_freq = base ** (-np.arange(half, dtype=np.float64) * 2 / R)  # [R/2]
    pos = jnp.asarray(positions, jnp.float32)
    pos = pos[None] if pos.ndim == 1 else pos  # [B | 1, L]
    angle = pos[..., None, None] * jnp.asarray(inv_freq, jnp.float32)  # [B, L, 1, R/2]
    cos, sin = jnp.cos(angle), jnp.sin(angle)
    xf = x.astype(jnp.float32)
    x1, x2, rest = xf[..., :half], xf[..., half:R], xf[..., R:]
    out = jnp.concatenate([x1 * cos - x2 * sin, x2 * cos + x1 * sin, rest], axis=-1)
    return out.astype(x.dtype)


def segment_positions(segment_ids):
    """segment_ids [B, L] int -> [B, L] int32: each token's index within its segment (a segment is
    a run of equal ids; positions restart at 0 wherever the id changes)."""
    seg = jnp.asarray(segment_ids)
    L = seg.shape[-1]
    idx = jnp.broadcast_to(jnp.arange(L, dtype=jnp.int32), seg.shape)
    starts = jnp.concatenate([jnp.ones_like(seg[:, :1], bool), seg[:, 1:] != seg[:, :-1]], axis=1)
    return idx - jax.lax.cummax(jnp.where(starts, idx, 0), axis=1)
