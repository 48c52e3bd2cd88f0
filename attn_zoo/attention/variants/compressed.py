"""`compressed`: memory-compressed attention (Liu 2018), keys and values shortened by a learned
strided convolution with kernel = stride = c, then softmax attention over the S/c compressed keys.

Padded keys are zeroed before the convolution; a compressed block with no real key is masked; a
ragged tail is padded to a multiple of c (masked). Causal: query i sees the compressed blocks that
end at or before i (blocks j < ⌊(i+1)/c⌋) plus, exactly and uncompressed, the keys of its own
unfinished block (⌊(i+1)/c⌋·c <= s <= i), one softmax over both, so every key s <= i is seen once,
compressed or raw, and nothing later. Runs on the block-sparse engine: O(N·N/c) time (plus
O(N·c) causal), O(N·D) memory; no L×S matrix.
"""
from __future__ import annotations

import dataclasses
import jax
import jax.numpy as jnp
import numpy as np

from attn_zoo.attention.core import block_sparse as bs
from attn_zoo.attention.core import decode
from attn_zoo.attention.core import masks
from attn_zoo.attention.core.options import option
from attn_zoo.attention.core.registry import register

F32 = jnp.float32
@dataclasses.dataclass(frozen=True)
class Options:
    compression: int = option(4, "c: kernel and stride of the key/value convolution", min=1)
    init: str = option("normal", "'mean': block means; 'normal': block means plus noise",
                       choices=("normal", "mean"))
    block: int = option(256, "tile size of the exact engine", min=1)


def init(rng, q, k, v, *, compression, init, **_):
    """Conv kernels: W_k [H, c, D, D] mixes key channels (as in the paper); W_v [H, c] weighs the c
    values of a block per head, channels kept (params may not depend on Dv, which can change at
    apply time). Both start as the block mean (I/c, 1/c), plus small noise for init='normal';
    with c = 1 and init='mean' the variant is dense attention."""
    H, D, c = q.shape[2], k.shape[3], compression
    w_k = jnp.broadcast_to(jnp.eye(D, dtype=F32) / c, (H, c, D, D))
    w_v = jnp.full((H, c), 1.0 / c, F32)
    if init == "normal":  # one draw for both kernels
        noise = jax.random.normal(rng, (H, c, D * D + 1), F32) * 0.1
        w_k = w_k + noise[..., :-1].reshape(H, c, D, D) * (c * D) ** -0.5
        w_v = w_v + noise[..., -1] / c
    return {"w_k": w_k, "w_v": w_v}


def compress(x, w, c):
    """Strided conv along the sequence, x [B, S, H, D] (S % c == 0) -> fp32 [B, S/c, H, E]:
    w [H, c, D, E] mixes channels, w [H, c] weighs positions only."""
    B, S, H, D = x.shape
    blocks = x.reshape(B, S // c, c, H, D)
    sub = "htde" if w.ndim == 4 else "ht"
    out = "bjhe" if w.ndim == 4 else "bjhd"
    return jnp.einsum(f"bjthd,{sub}->{out}", blocks, w.astype(x.dtype), preferred_element_type=F32)


def _causal_block_mask(S0, c, nc):
    """block_mask_fn for keys = [S0 raw positions; nc compressed blocks] under the causal rule."""
    def fn(nq, nk, bq, bk):
        raw = bs.band_block_mask(nq, nk, bq, bk, 0, c - 1) & (np.arange(nk) * bk < S0)[None, :]
        first = np.maximum(np.arange(nk) * bk, S0) - S0           # first compressed index in tile
        has = (np.arange(nk) * bk + bk > S0) & (first < nc)
        qmax = np.arange(nq)[:, None] * bq + bq - 1
        return raw | (has[None, :] & (first[None, :] < (qmax + 1) // c))
    return fn


def _causal_mask_fn(S0, c):
    def fn(qpos, kpos):
        done = (qpos + 1) // c  # number of finished blocks at query qpos
        raw = (kpos < S0) & (kpos >= done * c) & (kpos <= qpos)
        return raw | ((kpos >= S0) & (kpos - S0 < done))
    return fn


def attention(params, q, k, v, *, key_mask, causal, rng, compression, init, block):
    del rng, init
    B, S, H, _ = k.shape
    c = compression
    km = masks.key_mask_or_ones(key_mask, B, S)
    kz = jnp.where(km[:, :, None, None], k, 0)
    vz = jnp.where(km[:, :, None, None], v, 0)
    kz, _ = masks.pad_to_multiple(kz, c, axis=1)
    vz, _ = masks.pad_to_multiple(vz, c, axis=1)
    kmp, _ = masks.pad_to_multiple(km, c, axis=1)
    nc = kz.shape[1] // c
    kc = compress(kz, params["w_k"], c).astype(q.dtype)
    vc = compress(vz, params["w_v"], c).astype(v.dtype)
    cmask = jnp.any(kmp.reshape(B, nc, c), axis=-1)  # a block is real iff it holds a real key
    if not causal:
        return bs.attention(q, kc, vc, cmask,
                            block_mask_fn=lambda nq, nk, *_: np.ones((nq, nk), dtype=bool),
                            mask_fn=None, block_q=block, block_k=block)
    keys = jnp.concatenate([k, kc], axis=1)
    vals = jnp.concatenate([v, vc], axis=1)
    kmask = jnp.concatenate([km, cmask], axis=1)
    return bs.attention(q, keys, vals, kmask, block_mask_fn=_causal_block_mask(S, c, nc),
                        mask_fn=_causal_mask_fn(S, c), block_q=block, block_k=block)


def state_size(L, H, D, *, compression, **_):
    """2·H·D·(⌊L/c⌋ + L mod c): the compressed finished blocks, raw keys of the unfinished one."""
    return 2 * H * D * (L // compression + L % compression)


def decode_init(params, B, max_length, H, Hk, D, Dv, dtype, *, rng, compression, **_):
    """Raw keys and values of the unfinished block (c slots) and the ⌈max_length/c⌉ compressed ones,
    H heads: the convolution is per query head, so apply (and decoding) repeat Hk < H kv heads."""
    del params, rng, Hk
    c, nc = compression, -(-max_length // compression)
    z = lambda n, d: decode.kv_buffer(B, n, H, d, dtype)  # noqa: E731
    return {"rk": z(c, D), "rv": z(c, Dv), "ck": z(nc, D), "cv": z(nc, Dv), "t": jnp.zeros((), jnp.int32)}


def decode_step(params, cache, q_t, k_t, v_t, *, compression, **_):
    """Position t sees the finished compressed blocks and the raw keys of its unfinished block;
    the token that finishes a block compresses it (and then sees it compressed, as apply)."""
    c, t = compression, cache["t"]
    k_t, v_t = (decode.repeat_kv(x, q_t.shape[2]) for x in (k_t, v_t))
    rk, rv = decode.put(cache["rk"], k_t, t % c), decode.put(cache["rv"], v_t, t % c)
    done = (t + 1) // c  # finished blocks after this token
    finished = (t + 1) % c == 0
    slot = jnp.maximum(done - 1, 0)
    B = q_t.shape[0]
    ck = jnp.where(finished, decode.put(cache["ck"], compress(decode.as_bnhd(rk, B), params["w_k"], c), slot),
                   cache["ck"])
    cv = jnp.where(finished, decode.put(cache["cv"], compress(decode.as_bnhd(rv, B), params["w_v"], c), slot),
                   cache["cv"])
    vis = jnp.concatenate([(jnp.arange(c) <= t % c) & ~finished, jnp.arange(ck.shape[1]) < done])
    keys = {"k": jnp.concatenate([rk, ck.astype(rk.dtype)], axis=1)}
    w = decode.softmax(decode.scaled_dot(params, q_t, keys), vis[None, None, None, :])
    out = decode.weighted_values(w, jnp.concatenate([rv, cv.astype(rv.dtype)], axis=1))
    return out.astype(q_t.dtype), {"rk": rk, "rv": rv, "ck": ck, "cv": cv, "t": t + 1}


SPEC = register(
    "compressed", family="low_rank", exact=False, supports_causal=True, impl=attention,
    options=Options, init_fn=init, state_size=state_size, complexity="O(N²/c)",
    decode_init_fn=decode_init, decode_step_fn=decode_step,  # keeps c raw slots: > state_size
    description="Memory-compressed: keys/values shortened by a strided conv (kernel = stride = c).",
    test_options=({"compression": 4, "block": 8},),
    bench_options={"compression": 8, "block": 512},
    exact_limit=lambda L, S: {"compression": 1, "init": "mean", "block": 8},
)
