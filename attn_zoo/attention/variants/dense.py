"""`dense`: the reference softmax attention that every exact variant is checked against.

Builds the full [B, H, L, S] logit matrix: O(N²) time and memory. Scores: scaled_dot
(q·k/√D), dot, additive (Bahdanau: vᵀ tanh(W_q q + W_k k), own parameters), cosine
(normalized q and k over a temperature). Normalizers: softmax, hard (one-hot argmax forward,
straight-through softmax gradient), gumbel (Gumbel-softmax; noise from `rng`, none when rng is None).
"""
from __future__ import annotations

import dataclasses
import jax
import jax.numpy as jnp
import numpy as np

from attn_zoo.attention.core import masks
from attn_zoo.attention.core.options import option
from attn_zoo.attention.core.registry import kv_cache, register

SCORES = ("scaled_dot", "dot", "additive", "cosine")
NORMALIZERS = ("softmax", "hard", "gumbel")
@dataclasses.dataclass(frozen=True)
class Options:
    score: str = option("scaled_dot", "logit: q·k/√D, q·k, additive (Bahdanau) or cosine", choices=SCORES)
    normalize: str = option("softmax", "softmax, hard (one-hot, straight-through) or gumbel",
                            choices=NORMALIZERS)
    temperature: float = option(1.0, "logits are divided by it before normalizing", gt=0)
    cosine_temperature: float = option(0.1, "temperature of the cosine score", gt=0)
    additive_dim: int = option(32, "hidden size of the additive score", min=1)


def init(rng, q, k, v, *, score, additive_dim, **_):
    if score != "additive":
        return {}
    H, D = q.shape[2], q.shape[3]
    r1, r2, r3 = jax.random.split(rng, 3)
    std = D ** -0.5
    return {
        "w_q": jax.random.normal(r1, (H, D, additive_dim), jnp.float32) * std,
        "w_k": jax.random.normal(r2, (H, D, additive_dim), jnp.float32) * std,
        "v": jax.random.normal(r3, (H, additive_dim), jnp.float32) * additive_dim ** -0.5,
    }


def logits(params, q, k, *, score, cosine_temperature, **_):
    """fp32 [B, H, L, S] attention logits for the given score."""
    f32 = jnp.float32
    if score == "scaled_dot":
        return jnp.einsum("blhd,bshd->bhls", q, k, preferred_element_type=f32) * q.shape[-1] ** -0.5
    if score == "dot":
        return jnp.einsum("blhd,bshd->bhls", q, k, preferred_element_type=f32)
    if score == "cosine":
        qn = _l2_normalize(q.astype(f32))
        kn = _l2_normalize(k.astype(f32))
        return jnp.einsum("blhd,bshd->bhls", qn, kn) / cosine_temperature
    if score == "additive":
        qa = jnp.einsum("blhd,hda->bhla", q.astype(f32), params["w_q"])
        ka = jnp.einsum("bshd,hda->bhsa", k.astype(f32), params["w_k"])
        return jnp.einsum("bhlsa,ha->bhls", jnp.tanh(qa[:, :, :, None] + ka[:, :, None]), params["v"])
    raise ValueError(f"dense: score must be one of {SCORES}, got {score!r}")


def _l2_normalize(x):
    return x * jax.lax.rsqrt(jnp.maximum(jnp.sum(x * x, axis=-1, keepdims=True), 1e-12))


def weights(scores, visible, *, normalize, temperature, rng):
    """fp32 attention weights [B, H, L, S] from logits under the visible mask."""
    if normalize == "softmax":
        return masks.masked_softmax(scores, visible)
    if normalize == "gumbel":
        if rng is not None:
            u = jax.random.uniform(rng, scores.shape, jnp.float32, minval=1e-10, maxval=1.0)
            scores = scores - jnp.log(-jnp.log(u))
        return masks.masked_softmax(scores / temperature, visible)
    if normalize == "hard":
        soft = masks.masked_softmax(scores, visible)
        neg = jnp.finfo(scores.dtype).min
        idx = jnp.argmax(jnp.where(visible, scores, neg), axis=-1)
        onehot = jax.nn.one_hot(idx, scores.shape[-1], dtype=scores.dtype)
        onehot = onehot * jnp.any(visible, axis=-1, keepdims=True)
        return soft + jax.lax.stop_gradient(onehot - soft)
    raise ValueError(f"dense: normalize must be one of {NORMALIZERS}, got {normalize!r}")


def attention(params, q, k, v, *, key_mask=None, causal=False, rng=None, pattern=None, **options):
    """Dense attention; `pattern` ([L, S] or [H, L, S] bool) restricts it further (the reference)."""
    opts = {**dataclasses.asdict(Options()), **options}
    L, S = q.shape[1], k.shape[1]
    k, v = masks.hide_masked(key_mask, k, v)  # weights of masked keys are 0, and 0·NaN is NaN
    vis = masks.visible_mask(L, S, key_mask=key_mask, causal=causal, pattern=pattern)
    w = weights(logits(params, q, k, **opts), vis, normalize=opts["normalize"],
                temperature=opts["temperature"], rng=rng)
    out = jnp.einsum("bhls,bshd->blhd", w.astype(v.dtype), v, preferred_element_type=jnp.float32)
    return out.astype(q.dtype)


SPEC = register(
    "dense", family="dense", exact=True, supports_causal=True, impl=attention, options=Options,
    init_fn=init, state_size=kv_cache, pattern_fn=lambda L, S, **_: np.ones((L, S), dtype=bool),
    complexity="O(N²)", description="Full softmax attention (the reference); score and normalizer options.",
    test_options=({}, {"score": "dot"}, {"score": "cosine"}, {"score": "additive", "additive_dim": 4},
                  {"normalize": "hard"}, {"normalize": "gumbel", "temperature": 0.5}),
)
