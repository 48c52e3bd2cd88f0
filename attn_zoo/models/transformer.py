"""One Transformer encoder (Flax NNX) whose attention is any registered variant, by name.

Letters: B batch, N input tokens, L = N + extra (CLS, global) tokens, H heads, Hk key/value heads,
D head dim, E emb dim.
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
from flax import nnx

from attn_zoo import attention, configs
from attn_zoo.models.dropout import dropout
from attn_zoo.models.positions import KINDS, rope, segment_positions, sinusoidal


HEADS = configs.HEADS  # ("classifier", "dual", "token", "lm"), checked at config load too


class AttentionState(nnx.Variable):
    """Non-gradient attention state (e.g. k-means centroids), changed only by `spec.update`."""


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
    """Q/K/V/out projections around `attention.get(name).apply`; the variant's params are Params.

    Hk = num_kv_heads key/value heads (None or 0: H), H % Hk == 0: the key and value projections
    give Hk·D features, and query head h reads key/value head h // (H // Hk) (grouped-query
    attention; Hk = 1: multi-query). positions='rope': q and k are rotated (`positions.rope`,
    `rope` = (base, fraction)) after the projections and before the variant, so a kernel
    variant's feature map sees rotated vectors, φ(rope(q))·φ(rope(k)); this is not RoFormer's form
    for linear attention, which rotates after the feature map. positions='alibi': the variant gets
    `alibi_slopes` (the geometric slopes of Press et al. 2022, one per query head).
    """

    def __init__(self, attn_config: dict, *, emb_dim, qkv_dim, num_heads, length, dropout_rate,
                 dtype, rngs: nnx.Rngs, num_kv_heads=None, positions="sinusoidal", rope_base=10000.0,
                 rope_fraction=1.0):
        if qkv_dim % num_heads:
            raise ValueError(f"qkv_dim {qkv_dim} must be divisible by num_heads {num_heads}")
        kv_heads = num_kv_heads or num_heads
        if num_heads % kv_heads:
            raise ValueError(f"model.num_kv_heads={kv_heads} is not allowed with model.num_heads="
                             f"{num_heads}; allowed: a divisor of num_heads (0: num_heads)")
        opts = dict(attn_config)
        self.name = opts.pop("name")
        spec = attention.get(self.name)
        self.options = tuple(sorted(spec.options(**opts).items()))
        self.num_heads, self.num_kv_heads, self.dropout_rate = num_heads, kv_heads, dropout_rate
        head_dim = qkv_dim // num_heads
        self.rope = (float(rope_base), float(rope_fraction)) if positions == "rope" else None
        self.alibi_slopes = None
        if positions == "alibi":
            from attn_zoo.attention.core import alibi, registry
            if not spec.alibi:
                registry.refuse(self.name, "alibi")  # before any call: a one-line ValueError
            self.alibi_slopes = tuple(float(m) for m in alibi.slopes(num_heads))
        dense = lambda i, o: nnx.Linear(i, o, dtype=dtype, rngs=rngs)  # noqa: E731
        self.query, self.key, self.value = (dense(emb_dim, n) for n in
                                            (qkv_dim, kv_heads * head_dim, kv_heads * head_dim))
        self.out = dense(qkv_dim, emb_dim)
        dummy_q = jnp.zeros((1, length, num_heads, head_dim), jnp.float32)
        dummy_kv = jnp.zeros((1, length, kv_heads, head_dim), jnp.float32)
        params = spec.init(rngs.params(), dummy_q, dummy_kv, dummy_kv, **dict(self.options))
        leaves, self.treedef = jax.tree.flatten(params)
        self.is_state = _state_mask(params, spec.state_paths(**dict(self.options)))
        self.attn_params = nnx.Param([x for x, s in zip(leaves, self.is_state) if not s])
        self.attn_state = AttentionState([x for x, s in zip(leaves, self.is_state) if s])

    def _params(self):
        p, s = iter(self.attn_params.get_value()), iter(self.attn_state.get_value())
        return jax.tree.unflatten(self.treedef, [next(s) if st else next(p) for st in self.is_state])

    def __call__(self, x, key_mask, *, causal, rng, train, segment_ids=None):
        """x [B, L, E], key_mask [B, L], segment_ids [B, L] int or None -> [B, L, E]; in training
        also applies spec.update. RoPE positions restart at each segment start."""
        B, L, _ = x.shape
        spec, opts = attention.get(self.name), dict(self.options)
        q = self.query(x).reshape(B, L, self.num_heads, -1)
        k = self.key(x).reshape(B, L, self.num_kv_heads, -1)
        v = self.value(x).reshape(B, L, self.num_kv_heads, -1)
        if self.rope is not None:
            pos = jnp.arange(L) if segment_ids is None else segment_positions(segment_ids)
            base, fraction = self.rope
            q, k = rope(q, pos, base=base, fraction=fraction), rope(k, pos, base=base, fraction=fraction)
        extra = {}  # passed only when used: the defaults call spec.apply exactly as before
        if segment_ids is not None:
            extra["segment_ids"] = segment_ids
        if self.alibi_slopes is not None:
            extra["alibi_slopes"] = jnp.asarray(self.alibi_slopes, jnp.float32)
        r_attn, r_drop = jax.random.split(rng) if rng is not None else (None, None)
        if not train and spec.needs_rng:
            r_attn = jax.random.key(0)  # fixed at eval: deterministic, but the variant still runs
        params = self._params()
        out = spec.apply(params, q, k, v, key_mask=key_mask, causal=causal, rng=r_attn, **extra, **opts)
        if train and spec.update is not None:  # the registry repeats K/V for it where needed
            sg = jax.lax.stop_gradient
            new = spec.update(params, sg(q), sg(k), sg(v), key_mask=key_mask, **opts)
            self.attn_state.set_value(
                [sg(x) for x, st in zip(jax.tree.leaves(new), self.is_state) if st])
        out = dropout(out, self.dropout_rate, r_drop)
        return self.out(out.reshape(B, L, -1))


class ShortConv(nnx.Module):
    """Depthwise causal convolution over the sequence, kernel K: x [B, L, E] -> [B, L, E], out[t]
    mixing x[t-K+1..t] per channel (Zoology's short convolution, which gives attention a previous-
    token feature for free; Mamba, GLA and DeltaNet put one before their mixers too). With
    segment_ids [B, L], out[t] mixes only the x[s] of t's own segment (packed rows)."""

    def __init__(self, emb_dim, kernel, *, dtype, rngs):
        self.kernel = kernel
        self.conv = nnx.Conv(emb_dim, emb_dim, kernel_size=(kernel,), padding=((kernel - 1, 0),),
                             feature_group_count=emb_dim, dtype=dtype, rngs=rngs)

    def __call__(self, x, segment_ids=None):
        # K shifted products, fused by XLA into a few elementwise ops; nnx.Conv only holds the
        # parameters: XLA:CPU's grouped convolution took half of a d_model-128 MQAR training step
        K, L = self.kernel, x.shape[1]
        w = self.conv.kernel[...][:, 0].astype(self.conv.dtype or x.dtype)  # [K, E]; w[K-1] reads x[t]
        x = x.astype(w.dtype)
        out = x * w[K - 1]
        for j in range(1, K):  # w[K-1-j] reads x[t-j] (0 before the row starts)
            shifted = jnp.pad(x, ((0, 0), (j, 0), (0, 0)))[:, :L]
            if segment_ids is not None:
                same = ((jnp.pad(segment_ids, ((0, 0), (j, 0)))[:, :L] == segment_ids)
                        & (jnp.arange(L) >= j))  # x[t-j] exists and lies in t's segment
                shifted = jnp.where(same[..., None], shifted, 0)
            out = out + shifted * w[K - 1 - j]
        return out + self.conv.bias[...].astype(w.dtype)


class Block(nnx.Module):
    def __init__(self, attn_config, *, emb_dim, qkv_dim, mlp_dim, num_heads, length, dropout_rate,
                 attention_dropout, dtype, rngs, short_conv=0, **attn_kwargs):
        # short_conv > 0: a residual ShortConv sublayer before the attention (None: none);
        # attn_kwargs: SelfAttention's num_kv_heads, positions, rope_base, rope_fraction
        self.ln0 = nnx.LayerNorm(emb_dim, dtype=dtype, rngs=rngs) if short_conv else None
        self.conv = ShortConv(emb_dim, short_conv, dtype=dtype, rngs=rngs) if short_conv else None
        self.ln1 = nnx.LayerNorm(emb_dim, dtype=dtype, rngs=rngs)
        self.attn = SelfAttention(attn_config, emb_dim=emb_dim, qkv_dim=qkv_dim, num_heads=num_heads,
                                  length=length, dropout_rate=attention_dropout, dtype=dtype, rngs=rngs,
                                  **attn_kwargs)
        self.ln2 = nnx.LayerNorm(emb_dim, dtype=dtype, rngs=rngs)
        self.mlp_in = nnx.Linear(emb_dim, mlp_dim, dtype=dtype, rngs=rngs)
        self.mlp_out = nnx.Linear(mlp_dim, emb_dim, dtype=dtype, rngs=rngs)
        self.dropout_rate = dropout_rate

    def __call__(self, x, key_mask, *, causal, rng, train, segment_ids=None):
        r = jax.random.split(rng, 4) if rng is not None else [None] * 4
        if self.conv is not None:
            x = x + self.conv(self.ln0(x), segment_ids)
        h = self.attn(self.ln1(x), key_mask, causal=causal, rng=r[0], train=train, segment_ids=segment_ids)
        x = x + dropout(h, self.dropout_rate, r[1])
        h = dropout(nnx.gelu(self.mlp_in(self.ln2(x))), self.dropout_rate, r[2])
        return x + dropout(self.mlp_out(h), self.dropout_rate, r[3])


class Transformer(nnx.Module):
    """inputs [B, N] + mask [B, N] -> logits [B, classes] ('classifier'), [B, N, classes] ('token'),
    [B, N, vocab] ('lm'); 'dual': inputs and mask [B, 2, N] (two documents) -> [B, classes].

    `model_config` fields: num_layers, emb_dim, qkv_dim, mlp_dim, num_heads, dropout,
    attention_dropout, positions ('sinusoidal'|'learned'|'rope'|'alibi'|'nope', see
    `models.positions`), pooling ('cls'|'mean'), num_global_tokens, head ('classifier'|'dual'|
    'token'|'lm'), layer_attention (per-layer attention configs; empty = every layer uses
    `attn_config`), dtype ('float32'|'bfloat16', compute dtype). Optional (absent: the default):
    short_conv (0: a causal depthwise convolution of this kernel size before every block's
    attention, as Zoology's MQAR models have), num_kv_heads (0: num_heads; grouped-query
    attention), rope_base (10000.0), rope_fraction (1.0: the share of each head's dims RoPE rotates).

    Packed rows ('lm' and 'token' heads): segment_ids [B, N] int; a token attends only to its own
    segment (through every layer's spec.apply and short conv), and its position (sinusoidal,
    learned, rope) is its index within its segment. Refused with CLS/global tokens, which would
    join the segments.
    """

    def __init__(self, model_config, attn_config: dict, *, vocab_size, num_classes, max_length, rngs):
        c = model_config
        if c.head not in HEADS:
            raise ValueError(f"model.head must be one of {', '.join(HEADS)}, got {c.head!r}")
        if c.pooling not in ("cls", "mean"):
            raise ValueError(f"model.pooling must be 'cls' or 'mean', got {c.pooling!r}")
        if c.positions not in KINDS:
            raise ValueError(f"model.positions must be one of {', '.join(KINDS)}, got {c.positions!r}")
        if not (isinstance(c.get("short_conv", 0), int) and c.get("short_conv", 0) >= 0):
            raise ValueError(f"model.short_conv must be a kernel size >= 0 (0: none), got {c.short_conv!r}")
        layer_configs = configs.layer_attention(c, attn_config)
        if len(layer_configs) != c.num_layers:
            raise ValueError(f"model.layer_attention has {len(layer_configs)} entries for "
                             f"{c.num_layers} layers; give one per layer or none")
        self.head, self.pooling, self.dropout_rate = c.head, c.pooling, c.dropout
        self.position_kind = c.positions  # which of positions.KINDS
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
                  dtype=self.dtype, rngs=rngs, short_conv=c.get("short_conv", 0),
                  num_kv_heads=c.get("num_kv_heads", 0), positions=c.positions,
                  rope_base=c.get("rope_base", 10000.0), rope_fraction=c.get("rope_fraction", 1.0))
            for a in layer_configs])
        self.norm = nnx.LayerNorm(c.emb_dim, dtype=self.dtype, rngs=rngs)
        if c.head in ("classifier", "dual"):
            features = c.emb_dim * (4 if c.head == "dual" else 1)  # dual: [u, v, u·v, u−v]
            self.hidden = nnx.Linear(features, c.mlp_dim, dtype=self.dtype, rngs=rngs)
            self.logits = nnx.Linear(c.mlp_dim, num_classes, dtype=self.dtype, rngs=rngs)
        elif c.head == "token":
            self.logits = nnx.Linear(c.emb_dim, num_classes, dtype=self.dtype, rngs=rngs)
        else:
            self.logits = nnx.Linear(c.emb_dim, vocab_size, dtype=self.dtype, rngs=rngs)

    def __call__(self, inputs, mask, *, segment_ids=None, rng=None, train=False):
        if segment_ids is not None:
            self._check_segments(inputs, segment_ids)
        if self.head == "dual":
            if inputs.ndim != 3 or inputs.shape[1] != 2:
                raise ValueError(f"the dual head takes inputs [B, 2, N], got {list(inputs.shape)}")
            B, _, N = inputs.shape
            pooled = self._pool(self._encode(inputs.reshape(2 * B, N), mask.reshape(2 * B, N), rng, train),
                                mask.reshape(2 * B, N)).reshape(B, 2, -1)
            u, v = pooled[:, 0], pooled[:, 1]
            features = jnp.concatenate([u, v, u * v, u - v], axis=-1)
            return self.logits(nnx.relu(self.hidden(features))).astype(jnp.float32)  # [B, classes]
        x = self._encode(inputs, mask, rng, train, segment_ids)
        if self.head in ("lm", "token"):
            return self.logits(x[:, self.num_extra:]).astype(jnp.float32)  # [B, N, vocab | classes]
        return self.logits(nnx.relu(self.hidden(self._pool(x, mask)))).astype(jnp.float32)  # [B, classes]

    def _pool(self, x, mask):
        """x [B, L, E] -> [B, E]: the CLS vector, or the mean over real tokens."""
        if self.pooling == "cls":
            return x[:, 0]
        w = mask.astype(x.dtype)[..., None]
        return (x[:, self.num_extra:] * w).sum(1) / jnp.maximum(w.sum(1), 1)

    def _check_segments(self, inputs, segment_ids):
        if self.head not in ("lm", "token"):
            raise ValueError(f"segment_ids (packed rows) need a per-token head ('lm' or 'token'); "
                             f"model.head={self.head!r} pools each row into one output")
        if self.num_extra:
            raise ValueError(f"segment_ids (packed rows) are not allowed with {self.num_extra} CLS/"
                             f"global token(s), which would join the segments; allowed: none")
        if tuple(segment_ids.shape) != tuple(inputs.shape) or not jnp.issubdtype(segment_ids.dtype, jnp.integer):
            raise ValueError(f"segment_ids must be integers shaped like inputs {list(inputs.shape)}, "
                             f"got {segment_ids.dtype} {list(segment_ids.shape)}")

    def _encode(self, inputs, mask, rng, train, segment_ids=None):
        """[B, N] ids and mask -> [B, L, E] final-normed activations (extra tokens first)."""
        B, N = inputs.shape
        x = self.embed(inputs)
        key_mask = mask.astype(bool)
        if self.extra is not None:
            extra = jnp.broadcast_to(self.extra[...].astype(x.dtype), (B, self.num_extra, x.shape[-1]))
            x = jnp.concatenate([extra, x], axis=1)  # [B, L, E]
            key_mask = jnp.concatenate([jnp.ones((B, self.num_extra), bool), key_mask], axis=1)
        L = x.shape[1]
        if self.position_kind in ("sinusoidal", "learned"):
            table = self.positions[...][:L] if self.positions is not None else sinusoidal(L, x.shape[-1])
            pos = table[None] if segment_ids is None else table[segment_positions(segment_ids)]
            x = x + pos.astype(x.dtype)
        rngs = list(jax.random.split(rng, len(self.blocks) + 1)) if rng is not None else None
        x = dropout(x, self.dropout_rate, rngs.pop() if rngs else None)
        for i, block in enumerate(self.blocks):
            x = block(x, key_mask, causal=self.head == "lm", rng=rngs[i] if rngs else None, train=train,
                      segment_ids=segment_ids)
        return self.norm(x)
