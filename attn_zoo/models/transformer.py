"""One Transformer encoder (Flax NNX) whose attention is any registered variant, by name.

Letters: B batch, N input tokens, L = N + extra (CLS, global) tokens, H heads, D head dim, E emb dim.
Blocks are pre-LayerNorm: x + Drop(Attn(LN(x))), x + Drop(MLP(LN(x))), MLP = Dense→GELU→Dense.
Heads: 'classifier' (CLS or mean pooling, Dense(mlp)→ReLU→Dense(classes)); 'dual' (retrieval:
one shared encoder for both documents, pooled u and v, [u, v, u·v, u−v] → Dense(mlp)→ReLU→
Dense(classes)); 'token' (per-position classes, bidirectional: associative recall, copy); 'lm'
(causal attention, per-token next-token logits). Dropout keys come in as an argument (`rng`), so a jitted step is a
pure function of its inputs; the model holds no RNG state.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from attn_zoo import attention, configs
from attn_zoo.models.dropout import dropout


HEADS = configs.HEADS  # ("classifier", "dual", "token", "lm"), checked at config load too


class AttentionState(nnx.Variable):
    """Non-gradient attention state (e.g. k-means centroids), changed only by `spec.update`."""


def sinusoidal(length, dim):
    """[length, dim] fixed sin/cos positions (Vaswani 2017)."""
    pos = np.arange(length)[:, None]
    freq = np.exp(-np.log(10_000.0) * np.arange(0, dim, 2) / dim)
    table = np.zeros((length, dim), np.float32)
    table[:, 0::2] = np.sin(pos * freq)
    table[:, 1::2] = np.cos(pos * freq)[:, : dim // 2]
    return jnp.asarray(table)


def _state_mask(params, paths) -> tuple[bool, ...]:
    """Per leaf of params (tree order): True if its key path starts with a declared state path."""
    def names(path):
        return tuple(getattr(k, "key", getattr(k, "idx", getattr(k, "name", None))) for k in path)

    leaves = jax.tree_util.tree_flatten_with_path(params)[0]
    return tuple(any(names(path)[: len(p)] == tuple(p) for p in paths) for path, _ in leaves)


def extra_tokens(model_config) -> int:
    """Tokens the model prepends to every input: a CLS vector (classifier heads pooling "cls") and
    the learned global tokens; the attention sees max_length + extra_tokens positions."""
    c = model_config
    return int(c.head in ("classifier", "dual") and c.pooling == "cls") + c.num_global_tokens


class SelfAttention(nnx.Module):
    """Q/K/V/out projections around `attention.get(name).apply`; the variant's params are Params."""

    def __init__(self, attn_config: dict, *, emb_dim, qkv_dim, num_heads, length, dropout_rate,
                 dtype, rngs: nnx.Rngs):
        if qkv_dim % num_heads:
            raise ValueError(f"qkv_dim {qkv_dim} must be divisible by num_heads {num_heads}")
        opts = dict(attn_config)
        self.name = opts.pop("name")
        spec = attention.get(self.name)
        self.options = tuple(sorted(spec.options(**opts).items()))
        self.num_heads, self.dropout_rate = num_heads, dropout_rate
        dense = lambda i, o: nnx.Linear(i, o, dtype=dtype, rngs=rngs)  # noqa: E731
        self.query, self.key, self.value = (dense(emb_dim, qkv_dim) for _ in range(3))
        self.out = dense(qkv_dim, emb_dim)
        dummy = jnp.zeros((1, length, num_heads, qkv_dim // num_heads), jnp.float32)
        params = spec.init(rngs.params(), dummy, dummy, dummy, **dict(self.options))
        leaves, self.treedef = jax.tree.flatten(params)
        self.is_state = _state_mask(params, spec.state_paths(**dict(self.options)))
        self.attn_params = nnx.Param([x for x, s in zip(leaves, self.is_state) if not s])
        self.attn_state = AttentionState([x for x, s in zip(leaves, self.is_state) if s])

    def _params(self):
        p, s = iter(self.attn_params.get_value()), iter(self.attn_state.get_value())
        return jax.tree.unflatten(self.treedef, [next(s) if st else next(p) for st in self.is_state])

    def __call__(self, x, key_mask, *, causal, rng, train):
        """x [B, L, E], key_mask [B, L] -> [B, L, E]; in training also applies spec.update."""
        B, L, _ = x.shape
        spec, opts = attention.get(self.name), dict(self.options)
        heads = lambda t: t.reshape(B, L, self.num_heads, -1)  # noqa: E731
        q, k, v = heads(self.query(x)), heads(self.key(x)), heads(self.value(x))
        r_attn, r_drop = jax.random.split(rng) if rng is not None else (None, None)
        if not train and spec.needs_rng:
            r_attn = jax.random.key(0)  # fixed at eval: deterministic, but the variant still runs
        params = self._params()
        out = spec.apply(params, q, k, v, key_mask=key_mask, causal=causal, rng=r_attn, **opts)
        if train and spec.update is not None:
            sg = jax.lax.stop_gradient
            new = spec.update(params, sg(q), sg(k), sg(v), key_mask=key_mask, **opts)
            self.attn_state.set_value(
                [sg(x) for x, st in zip(jax.tree.leaves(new), self.is_state) if st])
        out = dropout(out, self.dropout_rate, r_drop)
        return self.out(out.reshape(B, L, -1))


class ShortConv(nnx.Module):
    """Depthwise causal convolution over the sequence, kernel K: x [B, L, E] -> [B, L, E], out[t]
    mixing x[t-K+1..t] per channel (Zoology's short convolution, which gives attention a previous-
    token feature for free; Mamba, GLA and DeltaNet put one before their mixers too)."""

    def __init__(self, emb_dim, kernel, *, dtype, rngs):
        self.kernel = kernel
        self.conv = nnx.Conv(emb_dim, emb_dim, kernel_size=(kernel,), padding=((kernel - 1, 0),),
                             feature_group_count=emb_dim, dtype=dtype, rngs=rngs)

    def __call__(self, x):
        return self.conv(x)


class Block(nnx.Module):
    def __init__(self, attn_config, *, emb_dim, qkv_dim, mlp_dim, num_heads, length, dropout_rate,
                 attention_dropout, dtype, rngs, short_conv=0):
        # short_conv > 0: a residual ShortConv sublayer before the attention (None: none)
        self.ln0 = nnx.LayerNorm(emb_dim, dtype=dtype, rngs=rngs) if short_conv else None
        self.conv = ShortConv(emb_dim, short_conv, dtype=dtype, rngs=rngs) if short_conv else None
        self.ln1 = nnx.LayerNorm(emb_dim, dtype=dtype, rngs=rngs)
        self.attn = SelfAttention(attn_config, emb_dim=emb_dim, qkv_dim=qkv_dim, num_heads=num_heads,
                                  length=length, dropout_rate=attention_dropout, dtype=dtype, rngs=rngs)
        self.ln2 = nnx.LayerNorm(emb_dim, dtype=dtype, rngs=rngs)
        self.mlp_in = nnx.Linear(emb_dim, mlp_dim, dtype=dtype, rngs=rngs)
        self.mlp_out = nnx.Linear(mlp_dim, emb_dim, dtype=dtype, rngs=rngs)
        self.dropout_rate = dropout_rate

    def __call__(self, x, key_mask, *, causal, rng, train):
        r = jax.random.split(rng, 4) if rng is not None else [None] * 4
        if self.conv is not None:
            x = x + self.conv(self.ln0(x))
        h = self.attn(self.ln1(x), key_mask, causal=causal, rng=r[0], train=train)
        x = x + dropout(h, self.dropout_rate, r[1])
        h = dropout(nnx.gelu(self.mlp_in(self.ln2(x))), self.dropout_rate, r[2])
        return x + dropout(self.mlp_out(h), self.dropout_rate, r[3])


class Transformer(nnx.Module):
    """inputs [B, N] + mask [B, N] -> logits [B, classes] ('classifier'), [B, N, classes] ('token'),
    [B, N, vocab] ('lm'); 'dual': inputs and mask [B, 2, N] (two documents) -> [B, classes].

    `model_config` fields: num_layers, emb_dim, qkv_dim, mlp_dim, num_heads, dropout,
    attention_dropout, positions ('sinusoidal'|'learned'), pooling ('cls'|'mean'),
    num_global_tokens, head ('classifier'|'dual'|'token'|'lm'), layer_attention (per-layer attention configs;
    empty = every layer uses `attn_config`), dtype ('float32'|'bfloat16', compute dtype),
    short_conv (optional, default 0: a causal depthwise convolution of this kernel size before
    every block's attention, as Zoology's MQAR models have).
    """

    def __init__(self, model_config, attn_config: dict, *, vocab_size, num_classes, max_length, rngs):
        c = model_config
        if c.head not in HEADS:
            raise ValueError(f"model.head must be one of {', '.join(HEADS)}, got {c.head!r}")
        if c.pooling not in ("cls", "mean"):
            raise ValueError(f"model.pooling must be 'cls' or 'mean', got {c.pooling!r}")
        if c.positions not in ("sinusoidal", "learned"):
            raise ValueError(f"model.positions must be 'sinusoidal' or 'learned', got {c.positions!r}")
        if not (isinstance(c.get("short_conv", 0), int) and c.get("short_conv", 0) >= 0):
            raise ValueError(f"model.short_conv must be a kernel size >= 0 (0: none), got {c.short_conv!r}")
        layer_configs = configs.layer_attention(c, attn_config)
        if len(layer_configs) != c.num_layers:
            raise ValueError(f"model.layer_attention has {len(layer_configs)} entries for "
                             f"{c.num_layers} layers; give one per layer or none")
        self.head, self.pooling, self.dropout_rate = c.head, c.pooling, c.dropout
        self.num_extra = extra_tokens(c)
        self.dtype = jnp.dtype(c.dtype)
        length = max_length + self.num_extra
        self.embed = nnx.Embed(vocab_size, c.emb_dim, dtype=self.dtype, rngs=rngs)
        init = nnx.initializers.normal(0.02)
        # Learned CLS/global vectors; None when there are none (orbax cannot save empty arrays).
        self.extra = nnx.Param(init(rngs.params(), (self.num_extra, c.emb_dim))) if self.num_extra else None
        self.positions = (nnx.Param(init(rngs.params(), (length, c.emb_dim)))
                          if c.positions == "learned" else None)
        self.blocks = nnx.List([
            Block(a, emb_dim=c.emb_dim, qkv_dim=c.qkv_dim, mlp_dim=c.mlp_dim, num_heads=c.num_heads,
                  length=length, dropout_rate=c.dropout, attention_dropout=c.attention_dropout,
                  dtype=self.dtype, rngs=rngs, short_conv=c.get("short_conv", 0)) for a in layer_configs])
        self.norm = nnx.LayerNorm(c.emb_dim, dtype=self.dtype, rngs=rngs)
        if c.head in ("classifier", "dual"):
            features = c.emb_dim * (4 if c.head == "dual" else 1)  # dual: [u, v, u·v, u−v]
            self.hidden = nnx.Linear(features, c.mlp_dim, dtype=self.dtype, rngs=rngs)
            self.logits = nnx.Linear(c.mlp_dim, num_classes, dtype=self.dtype, rngs=rngs)
        elif c.head == "token":
            self.logits = nnx.Linear(c.emb_dim, num_classes, dtype=self.dtype, rngs=rngs)
        else:
            self.logits = nnx.Linear(c.emb_dim, vocab_size, dtype=self.dtype, rngs=rngs)

    def __call__(self, inputs, mask, *, rng=None, train=False):
        if self.head == "dual":
            if inputs.ndim != 3 or inputs.shape[1] != 2:
                raise ValueError(f"the dual head takes inputs [B, 2, N], got {list(inputs.shape)}")
            B, _, N = inputs.shape
            pooled = self._pool(self._encode(inputs.reshape(2 * B, N), mask.reshape(2 * B, N), rng, train),
                                mask.reshape(2 * B, N)).reshape(B, 2, -1)
            u, v = pooled[:, 0], pooled[:, 1]
            features = jnp.concatenate([u, v, u * v, u - v], axis=-1)
            return self.logits(nnx.relu(self.hidden(features))).astype(jnp.float32)  # [B, classes]
        x = self._encode(inputs, mask, rng, train)
        if self.head in ("lm", "token"):
            return self.logits(x[:, self.num_extra:]).astype(jnp.float32)  # [B, N, vocab | classes]
        return self.logits(nnx.relu(self.hidden(self._pool(x, mask)))).astype(jnp.float32)  # [B, classes]

    def _pool(self, x, mask):
        """x [B, L, E] -> [B, E]: the CLS vector, or the mean over real tokens."""
        if self.pooling == "cls":
            return x[:, 0]
        w = mask.astype(x.dtype)[..., None]
        return (x[:, self.num_extra:] * w).sum(1) / jnp.maximum(w.sum(1), 1)

    def _encode(self, inputs, mask, rng, train):
        """[B, N] ids and mask -> [B, L, E] final-normed activations (extra tokens first)."""
        B, N = inputs.shape
        x = self.embed(inputs)
        key_mask = mask.astype(bool)
        if self.extra is not None:
            extra = jnp.broadcast_to(self.extra[...].astype(x.dtype), (B, self.num_extra, x.shape[-1]))
            x = jnp.concatenate([extra, x], axis=1)  # [B, L, E]
            key_mask = jnp.concatenate([jnp.ones((B, self.num_extra), bool), key_mask], axis=1)
        L = x.shape[1]
        pos = self.positions[...][:L] if self.positions is not None else sinusoidal(L, x.shape[-1])
        x = x + pos.astype(x.dtype)[None]
        rngs = list(jax.random.split(rng, len(self.blocks) + 1)) if rng is not None else None
        x = dropout(x, self.dropout_rate, rngs.pop() if rngs else None)
        for i, block in enumerate(self.blocks):
            x = block(x, key_mask, causal=self.head == "lm", rng=rngs[i] if rngs else None, train=train)
        return self.norm(x)
