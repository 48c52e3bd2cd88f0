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

from attn_zoo.attention.core import decode
from attn_zoo.attention.core import masks
from attn_zoo.attention.core import sinks
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
    sink: bool = sinks.sink_option()

    def check(self):
        if self.sink and self.normalize != "softmax":
            raise ValueError(f"sink=True needs normalize='softmax', got {self.normalize!r}")


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
        return _qk(q, k, preferred_element_type=f32) * q.shape[-1] ** -0.5
    if score == "dot":
        return _qk(q, k, preferred_element_type=f32)
    if score == "cosine":
        qn = _l2_normalize(q.astype(f32))
        kn = _l2_normalize(k.astype(f32))
        return _qk(qn, kn) / cosine_temperature
    if score == "additive":  # per-head projections of the keys: k is repeated to H heads
        k = jnp.repeat(k, q.shape[2] // k.shape[2], axis=2)
        qa = jnp.einsum("blhd,hda->bhla", q.astype(f32), params["w_q"])
        ka = jnp.einsum("bshd,hda->bhsa", k.astype(f32), params["w_k"])
        return jnp.einsum("bhlsa,ha->bhls", jnp.tanh(qa[:, :, :, None] + ka[:, :, None]), params["v"])
    raise ValueError(f"dense: score must be one of {SCORES}, got {score!r}")


def _qk(q, k, **kw):
    """q [B, L, H, D] · k [B, S, Hk, D] -> [B, H, L, S]; query head h against key head h // G
    through a group axis (no repeated keys)."""
    B, L, H, D = q.shape
    Hk = k.shape[2]
    if Hk == H:
        return jnp.einsum("blhd,bshd->bhls", q, k, **kw)
    s = jnp.einsum("blkgd,bskd->bkgls", q.reshape(B, L, Hk, H // Hk, D), k, **kw)
    return s.reshape(B, H, L, k.shape[1])


def _pv(w, v):
    """w [B, H, L, S] · v [B, S, Hk, Dv] -> fp32 [B, L, H, Dv] (grouped as `_qk`)."""
    B, H, L, S = w.shape
    Hk = v.shape[2]
    if Hk == H:
        return jnp.einsum("bhls,bshd->blhd", w, v, preferred_element_type=jnp.float32)
    out = jnp.einsum("bkgls,bskd->blkgd", w.reshape(B, Hk, H // Hk, L, S), v,
                     preferred_element_type=jnp.float32)
    return out.reshape(B, L, H, v.shape[-1])


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


def attention(params, q, k, v, *, key_mask=None, causal=False, rng=None, pattern=None,
              segment_ids=None, alibi_slopes=None, **options):
    """Dense attention; `pattern` ([L, S] or [H, L, S] bool) restricts it further (the reference).
    k, v may have Hk < H heads; segment_ids (q_ids [B, L], kv_ids [B, S]) and alibi_slopes [H]
    as in the contract (`core/contract.py`); with sink=True params["sink"] [H] joins each
    softmax denominator."""
    opts = {**dataclasses.asdict(Options()), **options}
    L, S = q.shape[1], k.shape[1]
    k, v = masks.hide_masked(key_mask, k, v)  # weights of masked keys are 0, and 0·NaN is NaN
    vis = masks.visible_mask(L, S, key_mask=key_mask, causal=causal, pattern=pattern)
    if segment_ids is not None:
        vis = vis & (segment_ids[0][:, None, :, None] == segment_ids[1][:, None, None, :])
    scores = logits(params, q, k, **opts)
    if alibi_slopes is not None:
        dist = np.abs(np.arange(L)[:, None] - np.arange(S)[None, :]).astype(np.float32)
        scores = scores - jnp.asarray(alibi_slopes, jnp.float32)[None, :, None, None] * dist
    if opts["sink"]:
        w = sinks.softmax(scores, vis, params["sink"])
    else:
        w = weights(scores, vis, normalize=opts["normalize"], temperature=opts["temperature"], rng=rng)
    return _pv(w.astype(v.dtype), v).astype(q.dtype)


def _decode_score(params, q_t, cache, **options):
    """Logits [B, H, 1, N] of q_t against the cached keys [B·Hk, N, D] (grouped)."""
    if options.get("score", "scaled_dot") == "scaled_dot":
        return decode.scaled_dot(params, q_t, cache)
    return logits(params, q_t, decode.as_bnhd(cache["k"], q_t.shape[0]), **options)


def _decode_weights(scores, visible, *, normalize, temperature, **_):
    """As apply with rng=None: decoding draws no Gumbel noise."""
    return weights(scores, visible, normalize=normalize, temperature=temperature, rng=None)


DECODER = decode.kv_decoder(decode.full_length, decode.everything, score=_decode_score,
                            normalize=_decode_weights)


def decode_init(params, *sizes, rng, normalize, **options):
    if normalize == "gumbel" and rng is not None:
        raise ValueError("dense: decoding draws no Gumbel noise (apply draws it over the whole "
                         "[B, H, L, S] logits); decode with rng=None")
    return DECODER[0](params, *sizes, rng=rng, normalize=normalize, **options)

SPEC = register(
    "dense", family="dense", exact=True, supports_causal=True, impl=attention, options=Options,
    kv_heads="native", segments=True, alibi=True,
    init_fn=init, state_size=kv_cache, pattern_fn=lambda L, S, **_: np.ones((L, S), dtype=bool),
    decode_init_fn=decode_init, decode_step_fn=DECODER[1], decode_minimal=True,
    complexity="O(N²)", description="Full softmax attention (the reference); score and normalizer options.",
    test_options=({}, {"score": "dot"}, {"score": "cosine"}, {"score": "additive", "additive_dim": 4},
                  {"normalize": "hard"}, {"normalize": "gumbel", "temperature": 0.5}),
)
