"""Token-by-token decoding of the causal LM Transformer (model.head == 'lm').

    cache = init_cache(model, batch_size, max_length)        # the model's extra tokens prefilled
    logits_t, cache = step(model, cache, tokens_t)            # tokens_t [B] int -> [B, vocab] fp32

Each step runs one position through the model as its parallel forward does (eval mode: no
dropout): embedding, the position (the sinusoidal or learned table's row t, RoPE at t, or ALiBi
inside the attention), per block the short convolution (its state: the last K − 1 normed inputs),
the attention variant's decoder (`spec.decode_step`, its cache per layer), the MLP, the final norm
and the logits. Feeding a sequence token by token gives the parallel forward's logits (real
tokens only: decoding has no padding mask). The cache is a pytree of fixed shapes: `jitted(model)`
compiles the step once.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from attn_zoo import attention
from attn_zoo.models.positions import rope, sinusoidal


def _attn_rng(spec):
    """The attention rng the model uses at eval (a fixed key for variants that need one)."""
    return jax.random.key(0) if spec.needs_rng else None


def init_cache(model, batch_size, max_length):
    """An empty cache for up to max_length tokens (after the model's extra tokens, which it feeds)."""
    if model.head != "lm":
        raise ValueError(f"decoding needs the causal LM head (model.head='lm'), got {model.head!r}")
    if not (isinstance(batch_size, int) and batch_size >= 1 and isinstance(max_length, int)
            and max_length >= 1):
        raise ValueError(f"init_cache needs batch_size and max_length >= 1, got {batch_size}, {max_length}")
    length = max_length + model.num_extra
    if model.positions is not None and length > model.positions.shape[0]:
        raise ValueError(f"max_length={max_length} is longer than the model's learned positions allow "
                         f"({model.positions.shape[0] - model.num_extra} tokens)")
    layers = []
    for block in model.blocks:
        a = block.attn
        spec, opts = attention.get(a.name), dict(a.options)
        D = a.query.out_features // a.num_heads
        extra = {} if a.alibi_slopes is None else {"alibi_slopes": jnp.asarray(a.alibi_slopes, jnp.float32)}
        layer = {"attn": spec.decode_init(a._params(), batch_size, length, a.num_heads, a.num_kv_heads,
                                          D, D, model.dtype, rng=_attn_rng(spec), **extra, **opts)}
        if block.conv is not None:
            layer["conv"] = jnp.zeros((batch_size, block.conv.kernel - 1, a.query.in_features), model.dtype)
        layers.append(layer)
    E = model.embed.features
    cache = {"t": jnp.zeros((), jnp.int32), "layers": layers}
    if model.position_kind == "sinusoidal":
        cache["table"] = sinusoidal(length, E)  # [length, E], as the forward pass adds it
    for i in range(model.num_extra):  # CLS / global tokens come first, as in the forward pass
        x = jnp.broadcast_to(model.extra[...][i].astype(model.dtype), (batch_size, E))
        _, cache = _step_embedded(model, cache, x)
    return cache


def step(model, cache, tokens_t):
    """(logits_t [B, vocab] fp32, the next cache) for tokens_t [B] int at the cache's position."""
    return _step_embedded(model, cache, model.embed(tokens_t))


def jitted(model):
    """step as a compiled function (cache, tokens_t) -> (logits_t, cache) of this model's weights."""
    graphdef, state = nnx.split(model)
    fn = jax.jit(lambda state, cache, tokens_t: step(nnx.merge(graphdef, state), cache, tokens_t))
    return lambda cache, tokens_t: fn(state, cache, tokens_t)


def _step_embedded(model, cache, x):
    """One position from its embedding x [B, E] (before positions)."""
    t = cache["t"]
    if model.position_kind in ("sinusoidal", "learned"):
        table = cache["table"] if model.positions is None else model.positions[...]
        x = x + jax.lax.dynamic_index_in_dim(table, t, keepdims=False).astype(x.dtype)
    x = x[:, None]  # [B, 1, E]
    layers = []
    for block, layer in zip(model.blocks, cache["layers"]):
        layer = dict(layer)
        if block.conv is not None:
            x, layer["conv"] = _conv_step(block, layer["conv"], x)
        h, layer["attn"] = _attention_step(block.attn, layer["attn"], block.ln1(x), t)
        x = x + h
        x = x + block.mlp_out(nnx.gelu(block.mlp_in(block.ln2(x))))
        layers.append(layer)
    logits = model.logits(model.norm(x))[:, 0].astype(jnp.float32)
    return logits, {**cache, "t": t + 1, "layers": layers}


def _conv_step(block, state, x):
    """x + ShortConv(LN(x)) at one position; state [B, K − 1, E]: the previous normed inputs."""
    conv = block.conv.conv
    window = jnp.concatenate([state, block.ln0(x).astype(state.dtype)], axis=1)  # [B, K, E], oldest first
    w = conv.kernel[...][:, 0].astype(conv.dtype or x.dtype)  # [K, E]: w[K-1] reads x[t]
    out = jnp.einsum("bke,ke->be", window.astype(w.dtype), w) + conv.bias[...].astype(w.dtype)
    return x + out[:, None].astype(x.dtype), window[:, 1:]


def _attention_step(a, cache, x, t):
    """SelfAttention at one position: x [B, 1, E] -> ([B, 1, E], the variant's next cache)."""
    B = x.shape[0]
    spec = attention.get(a.name)
    q = a.query(x).reshape(B, 1, a.num_heads, -1)
    k = a.key(x).reshape(B, 1, a.num_kv_heads, -1)
    v = a.value(x).reshape(B, 1, a.num_kv_heads, -1)
    if a.rope is not None:
        base, fraction = a.rope
        pos = jnp.reshape(t, (1,))
        q, k = rope(q, pos, base=base, fraction=fraction), rope(k, pos, base=base, fraction=fraction)
    out, cache = spec.decode_step(a._params(), cache, q, k, v, **dict(a.options))
    return a.out(out.reshape(B, 1, -1)), cache
