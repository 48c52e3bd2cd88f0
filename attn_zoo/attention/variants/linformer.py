"""`linformer`: keys and values projected along the sequence (Wang 2020), softmax(q (Eᵀk)ᵀ/√D)(Fᵀv).

E, F [max_length, R] (or [H, max_length, R] unless share_heads; F = E with share_kv) are learned;
an input longer than max_length is an error (the projection has max_length rows). Padded keys are
zeroed before the projection, and a projected row that no real key reaches (all its E entries at
real keys are 0, e.g. identity E on padding) is masked, so padding never takes softmax mass:
with R = S and E = F = I (init='identity') this is exactly dense attention. The softmax over the
R projected keys runs on the exact engine (`block_sparse.full`): O(N·R) time, O(N·D + R·D) memory. Not causal.
"""
from __future__ import annotations

import dataclasses
import jax
import jax.numpy as jnp

from attn_zoo.attention.core import block_sparse as bs
from attn_zoo.attention.core import masks
from attn_zoo.attention.core.options import option
from attn_zoo.attention.core.registry import register

F32 = jnp.float32
@dataclasses.dataclass(frozen=True)
class Options:
    proj_dim: int = option(256, "R: projected length of keys and values", min=1)
    max_length: int = option(4096, "rows of the projections: the longest input", min=1)
    share_kv: bool = option(False, "F = E (one projection for keys and values)")
    share_heads: bool = option(True, "one projection for all heads")
    init: str = option("normal", "'normal' random; 'identity' (needs proj_dim == max_length): dense",
                       choices=("normal", "identity"))
    block: int = option(512, "tile size of the exact engine", min=1)

    def check(self):
        if self.init == "identity" and self.proj_dim != self.max_length:
            raise ValueError(f"init='identity' needs proj_dim == max_length, got {self.proj_dim} "
                             f"and {self.max_length}")


def init(rng, q, k, v, *, proj_dim, max_length, share_kv, share_heads, init, **_):
    shape = (max_length, proj_dim) if share_heads else (q.shape[2], max_length, proj_dim)
    if init == "identity":
        ef = jnp.broadcast_to(jnp.eye(max_length, dtype=F32), (2, *shape))
    else:  # normal: Σ_s E_sr k_s keeps the scale of one key for ~max_length keys
        ef = jax.random.normal(rng, (2, *shape), F32) * max_length ** -0.5
    return {"E": ef[0]} if share_kv else {"E": ef[0], "F": ef[1]}


def attention(params, q, k, v, *, key_mask, causal, rng, proj_dim, max_length, share_kv,
              share_heads, init, block):
    del causal, rng, max_length, init  # causal is refused by the registry
    B, S, H, _ = k.shape
    e = params["E"][..., :S, :]
    f = e if share_kv else params["F"][..., :S, :]
    km = masks.key_mask_or_ones(key_mask, B, S)
    kz = jnp.where(km[:, :, None, None], k, 0)
    vz = jnp.where(km[:, :, None, None], v, 0)
    sub = "sr" if share_heads else "hsr"
    kp = jnp.einsum(f"bshd,{sub}->brhd", kz, e, preferred_element_type=F32)
    vp = jnp.einsum(f"bshd,{sub}->brhd", vz, f, preferred_element_type=F32)
    # A projected row is real iff some real key reaches it (in some head, through E or F).
    reach = jax.lax.stop_gradient((e != 0) | (f != 0)).astype(F32)
    if not share_heads:
        reach = jnp.max(reach, axis=0)
    row_mask = jnp.einsum("bs,sr->br", km.astype(F32), reach) > 0
    return bs.full(q, kp.astype(q.dtype), vp.astype(v.dtype), row_mask, causal=False,
                   block_q=block, block_k=block)


SPEC = register(
    "linformer", family="low_rank", exact=False, supports_causal=False, impl=attention,
    options=Options, init_fn=init, complexity="O(N·R)", max_length="max_length",
    description="Keys and values projected along the sequence to R rows by learned E, F.",
    test_options=({"proj_dim": 6, "max_length": 24, "share_kv": True, "share_heads": False,
                   "block": 8},),
    bench_options={"proj_dim": 256, "max_length": 8192, "block": 512},
    exact_limit=lambda L, S: {"proj_dim": S, "max_length": S, "init": "identity", "block": 8},
)
