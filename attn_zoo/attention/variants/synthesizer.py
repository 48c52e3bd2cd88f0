"""`synthesizer`: attention weights not computed from q·k (Tay et al. 2021).

Synthetic logits G [B|1, H, L, S], per `mode`:
  dense:             G[i] = MLP(q_i) [S]: a per-token two-layer ReLU MLP to max_length logits, the
                     first S kept (the token's query vector stands in for its layer input);
  random:            G = R[:L, :S], R [H, max_length, max_length] learned (or fixed: fixed=True);
  factorized_random: G = R1[:L] R2[:S]ᵀ with R1, R2 [H, max_length, factors];
  factorized_dense:  G[i, j] = A(q_i)[j mod a] · B(q_i)[j div a], two per-token MLPs with
                     a = factors outputs and ⌈max_length/a⌉ outputs.
With mix_dot, G + q·k/√D. Key mask and causal mask apply to the logits (masked softmax), so
padded keys and the future get exact zeros. Learned L×S parameters cap the length: `max_length`
(spec.max_length); longer inputs raise. O(N²) time. In `dense` and `factorized_random` modes G is
itself a dot product (G = [h, 1]·[W2ᵀ, b2] with h the MLP's hidden layer; G = R1·R2ᵀ), so those
run on the exact engine (`block_sparse.full`: the fused CPU kernel in fp32 on CPU) in O(N)
memory; `random` and `factorized_dense` build G, O(N²).
`init_scale` scales the initial synthetic parameters (0: G = 0, i.e. dense attention under mix_dot).
"""
from __future__ import annotations

import dataclasses
import jax
import jax.numpy as jnp

from attn_zoo.attention.core import block_sparse as bs
from attn_zoo.attention.core import decode
from attn_zoo.attention.core import masks
from attn_zoo.attention.core.options import option
from attn_zoo.attention.core.registry import register

F32 = jnp.float32
MODES = ("dense", "random", "factorized_random", "factorized_dense")
@dataclasses.dataclass(frozen=True)
class Options:
    mode: str = option("dense", "how the synthetic logits are made", choices=MODES)
    max_length: int = option(512, "the longest input (learned length-sized parameters)", min=1)
    hidden: int = option(64, "hidden size of the per-token MLPs", min=1)
    factors: int = option(8, "rank of the factorized modes", min=1)
    mix_dot: bool = option(False, "add q·k/√D to the synthetic logits")
    fixed: bool = option(False, "random mode: the logits are not trained")
    init_scale: float = option(1.0, "scale of the initial synthetic parameters", min=0.0)
    block: int = option(512, "tile size of the exact engine", min=1)
PRODUCT_MODES = ("dense", "factorized_random")  # G = q'·k'ᵀ: computed blockwise, never built


def _mlp_init(rng, H, D, hidden, out, scale):
    r1, r2 = jax.random.split(rng)
    return {"w1": jax.random.normal(r1, (H, D, hidden), F32) * D ** -0.5 * scale,
            "b1": jnp.zeros((H, hidden), F32),
            "w2": jax.random.normal(r2, (H, hidden, out), F32) * hidden ** -0.5 * scale,
            "b2": jnp.zeros((H, out), F32)}


def init(rng, q, k, v, *, mode, max_length, hidden, factors, init_scale, **_):
    H, D = q.shape[2], q.shape[3]
    r1, r2 = jax.random.split(rng)
    if mode == "dense":
        return {"mlp": _mlp_init(r1, H, D, hidden, max_length, init_scale)}
    if mode == "random":
        return {"random": jax.random.normal(r1, (H, max_length, max_length), F32) * init_scale}
    if mode == "factorized_random":
        return {"r1": jax.random.normal(r1, (H, max_length, factors), F32) * init_scale,
                "r2": jax.random.normal(r2, (H, max_length, factors), F32) * init_scale}
    if mode == "factorized_dense":
        return {"mlp_a": _mlp_init(r1, H, D, hidden, factors, init_scale),
                "mlp_b": _mlp_init(r2, H, D, hidden, -(-max_length // factors), init_scale)}
    raise ValueError(f"synthesizer: mode must be one of {MODES}, got {mode!r}")


def _hidden(p, q):
    """The MLP's hidden layer: q [B, L, H, D] -> [B, L, H, hidden]."""
    return jax.nn.relu(jnp.einsum("blhd,hde->blhe", q, p["w1"]) + p["b1"])


def _mlp(p, q):
    """Per-token MLP over heads: q [B, L, H, D] -> [B, H, L, out]."""
    return jnp.einsum("blhe,heo->bhlo", _hidden(p, q), p["w2"]) + p["b2"][:, None]


def product_form(params, q, k, *, mode, mix_dot, fixed):
    """(q' [B, L, H, E], k' [B, S, H, E]) with G (+ q·k/√D under mix_dot) = q'·k'ᵀ, fp32."""
    B, L, H, D = q.shape
    S = k.shape[1]
    if mode == "dense":
        p = params["mlp"]
        h = _hidden(p, q.astype(F32))
        qs = jnp.concatenate([h, jnp.ones((B, L, H, 1), F32)], axis=-1)
        ks = jnp.concatenate([p["w2"][:, :, :S], p["b2"][:, None, :S]], axis=1).transpose(2, 0, 1)
    else:  # factorized_random
        r1, r2 = params["r1"], params["r2"]
        if fixed:
            r1, r2 = jax.lax.stop_gradient(r1), jax.lax.stop_gradient(r2)
        qs, ks = jnp.broadcast_to(r1[:, :L].transpose(1, 0, 2), (B, L, H, r1.shape[-1])), r2[:, :S].transpose(1, 0, 2)
    ks = jnp.broadcast_to(ks[None], (B, *ks.shape))
    if mix_dot:
        qs = jnp.concatenate([qs, q.astype(F32) * D ** -0.5], axis=-1)
        ks = jnp.concatenate([ks, k.astype(F32)], axis=-1)
    return qs, ks


def synthetic_logits(params, q, S, *, mode, factors, fixed, **_):
    """fp32 [B|1, H, L, S] synthetic logits (see the module docstring)."""
    L = q.shape[1]
    q = q.astype(F32)
    if mode == "dense":
        return _mlp(params["mlp"], q)[..., :S]
    if mode == "random":
        r = params["random"]
        return (jax.lax.stop_gradient(r) if fixed else r)[None, :, :L, :S]
    if mode == "factorized_random":
        r1, r2 = params["r1"], params["r2"]
        if fixed:
            r1, r2 = jax.lax.stop_gradient(r1), jax.lax.stop_gradient(r2)
        return jnp.einsum("hlf,hsf->hls", r1[:, :L], r2[:, :S])[None]
    if mode == "factorized_dense":
        a = _mlp(params["mlp_a"], q)  # [B, H, L, factors]
        b = _mlp(params["mlp_b"], q)  # [B, H, L, ⌈max_length/factors⌉]
        j = jnp.arange(S)
        return a[..., j % factors] * b[..., j // factors]
    raise ValueError(f"synthesizer: mode must be one of {MODES}, got {mode!r}")


def state(*, mode, fixed, **_):
    """With fixed=True the random matrices are non-gradient state, kept as drawn."""
    if not fixed:
        return ()
    return {"random": (("random",),), "factorized_random": (("r1",), ("r2",))}.get(mode, ())


def attention(params, q, k, v, *, key_mask, causal, rng, mode, max_length, hidden, factors,
              mix_dot, fixed, init_scale, block):
    del rng, hidden, init_scale
    L, S = q.shape[1], k.shape[1]
    if max(L, S) > max_length:  # registry checks too; direct calls of this function get it here
        raise ValueError(f"synthesizer: built for length <= max_length={max_length}, got L={L}, S={S}")
    k, v = masks.hide_masked(key_mask, k, v)  # weights of masked keys are 0, and 0·NaN is NaN
    if mode in PRODUCT_MODES:
        qs, ks = product_form(params, q, k, mode=mode, mix_dot=mix_dot, fixed=fixed)
        out = bs.full(qs, ks, v.astype(F32), key_mask, causal=causal, block_q=block,
                      block_k=block, scale=1.0)
        return out.astype(q.dtype)
    g = synthetic_logits(params, q, S, mode=mode, factors=factors, fixed=fixed)
    if mix_dot:
        g = g + jnp.einsum("blhd,bshd->bhls", q, k, preferred_element_type=F32) * q.shape[-1] ** -0.5
    w = masks.masked_softmax(g, masks.visible_mask(L, S, key_mask=key_mask, causal=causal))
    out = jnp.einsum("bhls,bshd->blhd", w, v.astype(F32))
    return out.astype(q.dtype)


def state_size(L, H, D, *, mix_dot, **_):
    """L·H·D (values only: synthetic logits come from q_i or params, never from keys); 2·L·H·D
    with mix_dot (q·k needs the keys too)."""
    return (2 if mix_dot else 1) * L * H * D


def _decode_logits(params, q_t, cache, *, mode, factors, mix_dot, **_):
    """fp32 [B, H, 1, N]: row t of G over the N cached positions (+ q·k/√D under mix_dot)."""
    N, t = cache["v"].shape[1], cache["t"]
    q = q_t.astype(F32)
    if mode == "dense":
        g = _mlp(params["mlp"], q)[..., :N]
    elif mode == "random":
        g = jax.lax.dynamic_slice_in_dim(params["random"][:, :, :N], t, 1, axis=1)[None]
    elif mode == "factorized_random":
        r1 = jax.lax.dynamic_slice_in_dim(params["r1"], t, 1, axis=1)
        g = jnp.einsum("hlf,hsf->hls", r1, params["r2"][:, :N])[None]
    else:  # factorized_dense
        j = jnp.arange(N)
        g = _mlp(params["mlp_a"], q)[..., j % factors] * _mlp(params["mlp_b"], q)[..., j // factors]
    g = jnp.broadcast_to(g, (q_t.shape[0],) + g.shape[1:])  # the random modes' rows are per head only
    return g + decode.scaled_dot(params, q_t, cache) if mix_dot else g


# values (and keys under mix_dot) of every position: the logits row of t reaches any earlier one
DECODER = decode.kv_decoder(decode.full_length, decode.everything, score=_decode_logits,
                            keys=lambda mix_dot, **_: mix_dot)

SPEC = register(
    "synthesizer", family="learned", exact=False, supports_causal=True, impl=attention,
    options=Options, init_fn=init, state=state, state_size=state_size,
    decode_init_fn=DECODER[0], decode_step_fn=DECODER[1], decode_minimal=True,
    complexity="O(N²) time, O(N) memory (dense)",
    description="Synthesizer: logits from a per-token MLP or a learned (factorized) L×S matrix, optionally + q·k.",
    test_options=({"mode": "dense", "max_length": 24, "hidden": 8, "mix_dot": True, "block": 8},
                  {"mode": "factorized_random", "max_length": 24, "factors": 4, "block": 8},
                  {"mode": "factorized_dense", "max_length": 24, "hidden": 8, "factors": 5}),
    bench_options={"mode": "factorized_random", "max_length": 16384, "factors": 32},
    exact_limit=lambda L, S: {"mode": "random", "max_length": max(L, S), "mix_dot": True,
                              "init_scale": 0.0},
    max_length="max_length",
    # random and factorized_random logits are parameters alone: without mix_dot nothing reads q
    ignores_query=lambda mode, mix_dot, **_: mode in ("random", "factorized_random") and not mix_dot,
)
