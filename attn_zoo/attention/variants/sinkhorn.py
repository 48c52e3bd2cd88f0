"""`sinkhorn`: Sparse Sinkhorn attention (Tay et al. 2020), block sorting.

The sequence is cut into contiguous blocks of `block` (padded and masked to a multiple). A
sorting network scores block-to-block: R[i, j] = (q̄_i W_q)·(k̄_j W_k)/√D on block means of the
real tokens (params "sort_q", "sort_k" [H, D, D]); Gumbel noise (when an rng is given: training),
then `sinkhorn_iters` log-domain Sinkhorn normalizations at `temperature` give a soft permutation.
Forward uses a real permutation (greedy matching on the Sinkhorn plan: each query block gets a
different key block); gradients reach the sorting network straight through the soft one. Query
block i attends to its own block and to key block π(i) — gathered, not a weighted sum of blocks —
(once when π(i) = i). Causal: no permutation fits "only earlier blocks", so block i picks one
block j < i by a row softmax (causal Sinkhorn: column normalization would let later blocks change
earlier choices) using the means of block i − 1, which lies wholly in the past of every query in
block i; own block under the causal mask. O(N·block) attention + O((N/block)²·block·D) sorting.
"""
from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp

from attn_zoo.attention.core import bucketing as bk
from attn_zoo.attention.core import decode
from attn_zoo.attention.core import masks
from attn_zoo.attention.core.options import option
from attn_zoo.attention.core.registry import register

F32 = jnp.float32
@dataclasses.dataclass(frozen=True)
class Options:
    block: int = option(64, "block size of the sorting", min=1)
    sinkhorn_iters: int = option(8, "Sinkhorn normalizations", min=0)
    temperature: float = option(0.75, "Sinkhorn temperature", gt=0)


def init(rng, q, k, v, **_):
    H, D = q.shape[2], q.shape[3]
    r1, r2 = jax.random.split(rng)
    return {"sort_q": jax.random.normal(r1, (H, D, D), F32) * D ** -0.5,
            "sort_k": jax.random.normal(r2, (H, D, D), F32) * D ** -0.5}


def block_scores(params, qbar, kbar):
    """The sorting network: fp32 [B, H, n, n], score of query block i taking key block j."""
    a = jnp.einsum("bhid,hde->bhie", qbar, params["sort_q"].astype(F32))
    c = jnp.einsum("bhjd,hde->bhje", kbar, params["sort_k"].astype(F32))
    return jnp.einsum("bhie,bhje->bhij", a, c) * qbar.shape[-1] ** -0.5


def greedy_permutation(scores):
    """One-hot [..., n, n] permutation: repeatedly match the best remaining (row, column)."""
    n = scores.shape[-1]

    def step(_, carry):
        s, hard = carry
        flat = jnp.argmax(s.reshape(s.shape[:-2] + (n * n,)), axis=-1)
        row = jax.nn.one_hot(flat // n, n, dtype=bool)[..., :, None]
        col = jax.nn.one_hot(flat % n, n, dtype=bool)[..., None, :]
        return jnp.where(row | col, -jnp.inf, s), hard | (row & col)

    init = (scores, jnp.zeros(scores.shape, bool))
    return jax.lax.fori_loop(0, n, step, init)[1].astype(F32)


def _blocked(x, b):
    """[B, N, H, D] -> heads-first blocks [B, H, n, b, D] (zero padded)."""
    x, _ = masks.pad_to_multiple(bk.heads_first(x), b, axis=2)
    return bk.chunks(x, b)


def _plan(params, qb, kb, valid, rng, *, causal, sinkhorn_iters, temperature):
    """(P [B, H, n, n] hard forward / soft gradient, perm [B, H, n], has [B, H, n] bool)."""
    n = qb.shape[2]
    w = valid[:, None, :, :, None].astype(F32)  # [B, 1, n, b, 1]
    cnt = jnp.maximum(jnp.sum(w, axis=3), 1.0)
    qbar, kbar = jnp.sum(qb * w, axis=3) / cnt, jnp.sum(kb * w, axis=3) / cnt
    if causal:  # block i is sorted by block i-1: nothing at or after block i decides
        qbar = jnp.pad(qbar, ((0, 0), (0, 0), (1, 0), (0, 0)))[:, :, :n]
    r = block_scores(params, qbar, kbar)
    if rng is not None:
        r = r + jax.random.gumbel(rng, r.shape, F32)
    r = r / temperature
    if causal:
        allowed = jnp.tril(jnp.ones((n, n), bool), -1)
        soft = masks.masked_softmax(r, allowed)
        hard = jax.nn.one_hot(jnp.argmax(jnp.where(allowed, r, -jnp.inf), axis=-1), n, dtype=F32)
        hard = hard * jnp.any(allowed, axis=-1)[:, None]
    else:
        def balance(_, log_p):  # one row and one column normalization, in the log domain
            log_p = log_p - jax.nn.logsumexp(log_p, axis=-1, keepdims=True)
            return log_p - jax.nn.logsumexp(log_p, axis=-2, keepdims=True)

        log_p = jax.lax.fori_loop(0, sinkhorn_iters, balance, r)
        soft = jnp.exp(log_p)
        hard = greedy_permutation(jax.lax.stop_gradient(log_p))
    perm = jnp.argmax(hard, axis=-1)
    has = jnp.any(hard > 0, axis=-1) & (perm != jnp.arange(n))  # own block is seen once
    return hard + (soft - jax.lax.stop_gradient(soft)), perm, has  # exactly hard forward


def _valid(key_mask, B, L, b):
    valid = masks.key_mask_or_ones(key_mask, B, L)
    valid, _ = masks.pad_to_multiple(valid, b, axis=1)
    return valid.reshape(B, -1, b)  # [B, n, b]


@functools.partial(jax.jit, static_argnames=("causal", "block", "sinkhorn_iters", "temperature"))
def _attention(params, q, k, v, key_mask, rng, *, causal, block, sinkhorn_iters, temperature):
    B, L, H, D = q.shape
    b = min(block, L)
    qb, kb, vb = _blocked(q, b), _blocked(k, b), _blocked(v, b)
    valid = _valid(key_mask, B, L, b)
    n = valid.shape[1]
    P, perm, has = _plan(params, qb, kb, valid, rng, causal=causal, sinkhorn_iters=sinkhorn_iters,
                         temperature=temperature)
    vmask = valid[:, None, :, :, None].astype(F32)  # padded rows are zero before any mixing
    ks = jnp.einsum("bhij,bhjtd->bhitd", P, kb * vmask)  # exactly kb[π(i)] in the forward pass
    vs = jnp.einsum("bhij,bhjtd->bhitd", P, vb * vmask)
    svalid = jnp.take_along_axis(jnp.broadcast_to(valid[:, None], (B, H, n, b)), perm[..., None], axis=2)
    own = jnp.broadcast_to(valid[:, None, :, None, :], (B, H, n, 1, b))
    if causal:
        own = own & jnp.tril(jnp.ones((b, b), bool))
    vis = jnp.concatenate([jnp.broadcast_to(own, (B, H, n, b, b)),
                           jnp.broadcast_to((svalid & has[..., None])[..., None, :], (B, H, n, b, b))],
                          axis=-1)
    out, _ = bk.tile_attention(qb, jnp.concatenate([kb, ks], axis=3), jnp.concatenate([vb, vs], axis=3),
                               vis, scale=D ** -0.5)
    return jnp.swapaxes(out.reshape(B, H, n * b, -1)[:, :, :L], 1, 2)


def _check(q, k):
    if q.shape[1] != k.shape[1]:
        raise ValueError(f"sinkhorn: block sorting needs L == S, got L={q.shape[1]}, S={k.shape[1]}")


def attention(params, q, k, v, *, key_mask, causal, rng, block, sinkhorn_iters, temperature):
    _check(q, k)
    k, v = masks.hide_masked(key_mask, k, v)  # masked rows are multiplied by 0: no 0·NaN
    return _attention(params, q, k, v, key_mask, rng, causal=causal, block=block,
                      sinkhorn_iters=sinkhorn_iters, temperature=float(temperature)).astype(q.dtype)


def chosen_pattern(params, q, k, v, *, key_mask, causal, rng, block, sinkhorn_iters, temperature):
    """bool [B, H, L, L]: own block (causal: lower triangle) plus the block π(i) it was given."""
    _check(q, k)
    B, L, H, D = q.shape
    b = min(block, L)
    valid = _valid(key_mask, B, L, b)
    _, perm, has = _plan(params, _blocked(q, b), _blocked(k, b), valid, rng, causal=causal,
                         sinkhorn_iters=sinkhorn_iters, temperature=float(temperature))
    blk = jnp.arange(valid.size // B) // b  # block of each (padded) position
    qblk, kblk = blk[:, None], blk[None, :]
    at = jnp.broadcast_to(blk, (B, H, blk.size))
    sorted_blk, has_q = jnp.take_along_axis(perm, at, axis=2), jnp.take_along_axis(has, at, axis=2)
    vis = (qblk == kblk) | (has_q[..., :, None] & (sorted_blk[..., :, None] == kblk))
    if causal:
        vis = vis & jnp.tril(jnp.ones((blk.size, blk.size), bool))
    vis = vis & valid.reshape(B, 1, 1, -1)
    return vis[:, :, :L, :L]


def state_size(L, H, D, **_):
    """2·L·H·D: a causal query block may be sorted to any earlier block, so every key is kept."""
    return 2 * L * H * D


def decode_init(params, B, max_length, H, Hk, D, Dv, dtype, /, *, rng, block, **_):
    """A full KV cache (n·b slots, H heads: the sorting network is per query head, so apply and
    decoding repeat Hk < H kv heads) and the query sums of each block; with an rng, the Gumbel
    noise that apply adds to the [B, H, n, n] block scores at L = max_length."""
    del Hk
    b = min(block, max_length)
    n = -(-max_length // b)
    return {"k": decode.kv_buffer(B, n * b, H, D, dtype), "v": decode.kv_buffer(B, n * b, H, Dv, dtype),
            "qsum": jnp.zeros((B, n, H, D), F32),
            "t": jnp.zeros((), jnp.int32),
            "noise": None if rng is None else jax.random.gumbel(rng, (B, H, n, n), F32)}


def decode_step(params, cache, q_t, k_t, v_t, *, block, temperature, **_):
    """Position t in block i sees its own block up to t and the block π(i) < i that the sorting
    network picks from block i − 1's query mean and the earlier blocks' key means."""
    t, (B, n, H, D) = cache["t"], cache["qsum"].shape
    b = cache["k"].shape[1] // n
    i = t // b
    k_t, v_t = (decode.repeat_kv(x, H) for x in (k_t, v_t))
    k, v = decode.put(cache["k"], k_t, t), decode.put(cache["v"], v_t, t)
    qsum = cache["qsum"].at[:, i].add(q_t[:, 0].astype(F32))
    kbar = jnp.sum(k.reshape(B, H, n, b, D).astype(F32), axis=3) / b  # [B, H, n, D]
    qprev = (qsum[:, jnp.maximum(i - 1, 0)] / b)[:, :, None]  # [B, H, 1, D]
    r = block_scores(params, qprev, kbar)[:, :, 0]  # [B, H, n]
    if cache["noise"] is not None:
        r = r + jax.lax.dynamic_index_in_dim(cache["noise"], i, axis=2, keepdims=False)
    blk = jnp.arange(n * b) // b
    perm = jnp.argmax(jnp.where(jnp.arange(n) < i, r / temperature, -jnp.inf), axis=-1)  # [B, H]
    own = (blk == i) & (jnp.arange(n * b) <= t)
    vis = own | ((i > 0) & (blk == perm[..., None]))  # [B, H, N]
    w = decode.softmax(decode.scaled_dot(params, q_t, {"k": k}), vis[:, :, None, :])
    out = decode.weighted_values(w, v)
    return out.astype(q_t.dtype), {**cache, "k": k, "v": v, "qsum": qsum, "t": t + 1}


SPEC = register(
    "sinkhorn", family="learned", exact=False, supports_causal=True, impl=attention,
    options=Options, init_fn=init, chosen_pattern=chosen_pattern, state_size=state_size,
    decode_init_fn=decode_init, decode_step_fn=decode_step,  # plus the block query sums
    complexity="O(N·b + (N/b)²·b·D)",
    description="Sparse Sinkhorn: each block attends to itself and to the key block a learned sort gives it.",
    test_options=({"block": 4, "sinkhorn_iters": 4},),
    bench_options={"block": 128},
    exact_limit=lambda L, S: {"block": max(L, S)},
)
