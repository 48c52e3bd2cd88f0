"""Attention sinks (gpt-oss, StreamingLLM): a virtual key per head with logit sink_h and value 0.

    out_i = Σ_j e^{s_ij} v_j / (e^{sink_h} + Σ_j e^{s_ij})

Exact for any engine that returns the log-sum-exp of the visible logits: the plain softmax
output times Σ_j e^{s_ij} / (e^{sink_h} + Σ_j e^{s_ij}) = sigmoid(lse_i − sink_h). A query with no
visible key (lse = −inf) gives 0. The gradient reaches sink_h (and the logits through lse).
A variant supports sinks by declaring the option below; `AttentionSpec.init` then adds
params["sink"], fp32 [H] zeros.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp

from attn_zoo.attention.core.options import option

F32 = jnp.float32
DOC = "attention sink: a virtual key per head, logit params['sink'][h], value 0"


def sink_option():
    """The declared `sink: bool = False` option of a softmax-family variant."""
    return option(False, DOC)


def apply(out, lse, sink):
    """out [B, L, H, Dv] (the plain softmax output), lse fp32 [B, L, H], sink [H] -> out with the
    sink in each denominator, in out's dtype."""
    w = jax.nn.sigmoid(lse.astype(F32) - sink.astype(F32))
    return (out.astype(F32) * w[..., None]).astype(out.dtype)


def softmax(logits, visible, sink):
    """Softmax over the last axis restricted to `visible`, with exp(sink_h) added to each
    denominator; logits fp32 [B, H, L, S], visible broadcastable, sink [H]. Rows with no visible
    key give zeros."""
    s = sink.astype(F32)[None, :, None, None]
    neg = jnp.finfo(logits.dtype).min
    masked = jnp.where(visible, logits, neg)
    m = jax.lax.stop_gradient(jnp.maximum(jnp.max(masked, axis=-1, keepdims=True), s))
    p = jnp.where(visible, jnp.exp(masked - m), 0.0)
    return p / (jnp.sum(p, axis=-1, keepdims=True) + jnp.exp(s - m))
