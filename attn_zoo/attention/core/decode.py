"""Token-by-token causal decoding: the generic decoders and `decode` (a whole sequence under lax.scan).

Letters: B batch, H query heads, Hk key/value heads (H % Hk == 0; query head h reads kv head
h // (H // Hk)), D head dim, Dv value dim, N cache slots, M kernel features, t the position.
A decoder is a pair of pure functions a variant registers (`decode_init_fn`, `decode_step_fn`):

    cache = init(params, B, max_length, H, Hk, D, Dv, dtype, /, *, rng, **options)   # a pytree
    out_t, cache = step(params, cache, q_t, k_t, v_t, **options)
    # q_t [B, 1, H, D], k_t [B, 1, Hk, D], v_t [B, 1, Hk, Dv] -> out_t [B, 1, H, Dv]

Every cache holds its own position counter `t` (int32) and has fixed shapes, so a step jits once
and runs under lax.scan. Key and value caches are [B·Hk, N, D] (`kv_buffer`; batch and kv head
merged, heads-major): the step's products are batched over B·Hk with no transpose, and one
program both writes slot t in place and reads the buffer. ([B, N, Hk, D] made XLA:CPU transpose
both caches for the products every step, and [B, Hk, N, D] made it copy them, since the product
reads a bitcast of the update: 33 and 58 ms against 2.5 ms per step at N = 8192, H = 8.) Decoding
feeds real tokens only: there is no key_mask (a padded prompt is decoded from its first real
token). `rng` stands for apply's rng where it picks structure (bigbird's random blocks, Reformer's
rehash, Sinkhorn's noise). Decoding equals apply(..., causal=True, rng=rng) on max_length tokens;
for most variants also on any prefix, but where the pattern depends on the whole length
(bigbird's global_at='ends' last blocks and rng-drawn random blocks, routing's window 0 =
⌈L/K⌉) only on max_length.

Two builders cover the softmax variants and the kernel attentions:
- `kv_decoder`: a KV cache of N slots, position t written to slot t mod N (N = max_length: every
  key; N = window + 1: a ring buffer), and the variant's pattern rule evaluated on the slots'
  positions at each step (`visible(t, pos, table, **options) -> bool [N] | [H, N]`), so no L×S
  array is built per step; `table` is what the rule needs precomputed (bigbird's block table).
- `bucket_decoder`: a full KV cache plus each position's buckets (LSH rounds, k-means clusters):
  position t sees, in any round, the `window` most recent positions of its own bucket, itself
  included (bucketing's causal window rule; the union over rounds, each pair counted once).
- `kernel_decoder`: the running state S = Σ φ(k) vᵀ [B, Hk, M, Dv] and z = Σ φ(k) [B, Hk, M]
  (fp32), with a running max for log-features, rescaled as in kernelized's chunked form.
"""
from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np

from attn_zoo.attention.core import masks
from attn_zoo.attention.core import sinks

F32 = jnp.float32


def decode(spec, params, q, k, v, *, rng=None, alibi_slopes=None, **options):
    """out [B, L, H, Dv]: q [B, L, H, D], k and v [B, L, Hk, D|Dv] decoded token by token with
    spec's decoder (lax.scan over L; max_length = L). Equals spec.apply(..., causal=True, rng=rng,
    alibi_slopes=alibi_slopes)."""
    B, L, H, D = q.shape
    Hk, Dv = k.shape[2], v.shape[3]
    extra = {} if alibi_slopes is None else {"alibi_slopes": alibi_slopes}
    cache = spec.decode_init(params, B, L, H, Hk, D, Dv, k.dtype, rng=rng, **extra, **options)

    def body(cache, xs):
        q_t, k_t, v_t = (x[:, None] for x in xs)
        out, cache = spec.decode_step(params, cache, q_t, k_t, v_t, **options)
        return cache, out[:, 0]

    _, out = jax.lax.scan(body, cache, tuple(jnp.swapaxes(x, 0, 1) for x in (q, k, v)))
    return jnp.swapaxes(out, 0, 1)


def grouped(x, Hk):
    """[B, 1, H, X] -> [B, Hk, H/Hk, X]: query heads grouped by the kv head they read."""
    B, _, H, X = x.shape
    return x.reshape(B, Hk, H // Hk, X)


def ungrouped(x):
    """[B, Hk, G, X] -> [B, 1, Hk·G, X]."""
    B, Hk, G, X = x.shape
    return x.reshape(B, 1, Hk * G, X)


def repeat_kv(x, H):
    """[B, 1, Hk, X] -> [B, 1, H, X] (kv head h // (H / Hk) for query head h)."""
    return jnp.repeat(x, H // x.shape[2], axis=2)


def kv_buffer(B, N, Hk, X, dtype):
    """A key or value cache of N slots: [B·Hk, N, X], row b·Hk + h for sequence b, kv head h."""
    return jnp.zeros((B * Hk, N, X), dtype)


def as_bnhd(buf, B):
    """A kv_buffer as [B, N, Hk, X] (a transposed copy: for rules that need that layout)."""
    X, N = buf.shape[0], buf.shape[1]
    return jnp.swapaxes(buf.reshape(B, X // B, N, buf.shape[2]), 1, 2)


def put(buf, x_t, slot):
    """buf [B·Hk, N, X] (`kv_buffer`) with x_t [B, 1, Hk, X] written at slot (in buf's dtype)."""
    B, _, Hk, X = x_t.shape
    return jax.lax.dynamic_update_slice_in_dim(buf, x_t.reshape(B * Hk, 1, X).astype(buf.dtype), slot, axis=1)


def _rows(x_t, BHk):
    """[B, 1, H, X] -> [B·Hk, H/Hk, X]: query heads by the kv row they read."""
    B, _, H, X = x_t.shape
    return x_t.reshape(BHk, B * H // BHk, X)


def scaled_dot(params, q_t, cache, **_):
    """fp32 logits [B, H, 1, N] = q·k/√D of q_t [B, 1, H, D] against the cache's k [B·Hk, N, D]."""
    del params
    k = cache["k"]
    s = jnp.einsum("xgd,xnd->xgn", _rows(q_t, k.shape[0]), k, preferred_element_type=F32)
    return (s * q_t.shape[-1] ** -0.5).reshape(q_t.shape[0], q_t.shape[2], 1, k.shape[1])


def softmax(scores, visible, **_):
    return masks.masked_softmax(scores, visible)


def kv_write(cache, k_t, v_t):
    """The cache with position t's key and value in slot t mod N (or the cache's own slot table's
    entry for t), and pos[slot] = t."""
    t, N = cache["t"], cache["pos"].shape[0]
    slot = cache["slot"][t] if "slot" in cache else t % N
    new = {**cache, "v": put(cache["v"], v_t, slot), "pos": cache["pos"].at[slot].set(t)}
    if "k" in cache:
        new["k"] = put(cache["k"], k_t, slot)
    return new


def kv_decoder(slots: Callable[..., int] | None, visible: Callable, *, table: Callable | None = None,
               score: Callable = scaled_dot, normalize: Callable = softmax,
               keys: Callable[..., bool] | None = None, check: Callable | None = None,
               slot_of: Callable | None = None):
    """(init, step) of a softmax decoder over a KV cache of `slots(max_length, /, **options)` slots
    (the sizes are positional: an option may be called max_length, as synthesizer's).

    visible(t, pos, table, **options) -> bool [N] or [H, N]: which slots position t attends, pos
    int32 [N] the slots' positions (-1: empty; empty and future slots are masked here).
    table(params, max_length, H, rng, /, **options) -> a pytree of arrays the rule reads (kept in the
    cache), or None. score(params, q_t, cache, **options) -> fp32 [B, H, 1, N] (default q·k/√D;
    the cache holds k, v, pos and the counter t, already holding position t);
    normalize(scores, visible, **options) -> weights (default the masked softmax).
    keys(**options) -> False when the scores never read keys (no key cache is kept);
    alibi_slopes [H] at init: the logits get − slope_h·(t − j), as apply's ALiBi; a `sink`
    option (True) adds exp(params['sink'][h]) to each softmax denominator (`core/sinks.py`);
    check(H, Hk, **options) raises ValueError for head counts the options do not allow.
    slot_of(max_length, /, **options) -> int [max_length]: the slot each position is written to
    (default t mod N), for caches that keep some positions apart from a ring (longformer's globals);
    with it, slots is None: the cache has the largest slot + 1.
    """
    def init(params, B, max_length, H, Hk, D, Dv, dtype, /, *, rng, alibi_slopes=None, **options):
        if check is not None:
            check(H, Hk, **options)
        slot = None if slot_of is None else np.asarray(slot_of(max_length, **options), np.int32)
        N = int(slots(max_length, **options)) if slot is None else int(slot.max()) + 1
        cache = {"v": kv_buffer(B, N, Hk, Dv, dtype), "pos": jnp.full((N,), -1, jnp.int32),
                 "t": jnp.zeros((), jnp.int32),
                 "table": None if table is None else table(params, max_length, H, rng, **options)}
        if keys is None or keys(**options):
            cache["k"] = kv_buffer(B, N, Hk, D, dtype)
        if alibi_slopes is not None:
            cache["alibi"] = jnp.asarray(alibi_slopes, F32)
        if slot is not None:
            cache["slot"] = jnp.asarray(slot)
        return cache

    def step(params, cache, q_t, k_t, v_t, **options):
        cache = kv_write(cache, k_t, v_t)
        t, pos = cache["t"], cache["pos"]
        vis = visible(t, pos, cache["table"], **options) & (pos >= 0) & (pos <= t)
        vis = vis[None, :, None, :] if vis.ndim == 2 else vis[None, None, None, :]  # [1, H|1, 1, N]
        s = score(params, q_t, cache, **options)  # [B, H, 1, N]
        if "alibi" in cache:  # ALiBi: − slope_h·(t − j) on the scaled logit
            s = s - cache["alibi"][None, :, None, None] * (t - pos).astype(F32)
        if options.get("sink"):  # a variant's sink option: exp(params['sink'][h]) in each denominator
            w = sinks.softmax(s, vis, params["sink"])
        else:
            w = normalize(s, vis, **options)
        out = weighted_values(w, cache["v"])
        return out.astype(q_t.dtype), {**cache, "t": t + 1}

    return init, step


def weighted_values(w, v):
    """Σ_n w[b, h, 0, n] v[b·Hk + h // G, n] -> [B, 1, H, Dv] fp32 (w [B, H, 1, N], v [B·Hk, N, Dv])."""
    B, H, _, N = w.shape
    out = jnp.einsum("xgn,xnd->xgd", w.reshape(v.shape[0], -1, N).astype(v.dtype), v,
                     preferred_element_type=F32)
    return out.reshape(B, 1, H, v.shape[2])


def everything(t, pos, table, **_):
    """The rule of full causal attention: every earlier key (the masks are applied by the step)."""
    del table
    return jnp.ones(pos.shape, bool)


def full_length(max_length, /, **_):
    return max_length


def kernel_decoder(features: Callable, *, log_k: bool = False):
    """(init, step) of a kernel attention's recurrent form, equal to kernelized's causal scan.

    features(params, x, kind, **options) -> fp32 [B, 1, heads, M] for x [B, 1, heads, D] and kind
    'q' or 'k': φ (>= 0), or for kind 'k' under `log_k` the log-features u (φ = exp u), stabilized
    by a running max m over the keys read so far (S, z rescaled by exp(m_old − m_new)).
    """
    def init(params, B, max_length, H, Hk, D, Dv, dtype, /, *, rng, **options):
        del max_length, rng, dtype
        M = features(params, jnp.zeros((1, 1, 1, D), F32), "k", **options).shape[-1]
        cache = {"s": jnp.zeros((B, Hk, M, Dv), F32), "z": jnp.zeros((B, Hk, M), F32),
                 "t": jnp.zeros((), jnp.int32)}
        if log_k:
            cache["m"] = jnp.full((B, Hk), -jnp.inf, F32)
        return cache

    def step(params, cache, q_t, k_t, v_t, **options):
        s, z = cache["s"], cache["z"]
        fk = features(params, k_t, "k", **options)[:, 0]  # [B, Hk, M]
        new = dict(cache)
        if log_k:
            m_new = jnp.maximum(cache["m"], jnp.max(fk, axis=-1))
            safe = jnp.where(jnp.isfinite(m_new), m_new, 0.0)
            alpha = jnp.exp(cache["m"] - safe)
            s, z = s * alpha[..., None, None], z * alpha[..., None]
            fk = jnp.exp(fk - safe[..., None])
            new["m"] = m_new
        s = s + jnp.einsum("bkm,bkd->bkmd", fk, v_t[:, 0].astype(F32))
        z = z + fk
        fq = grouped(features(params, q_t, "q", **options), s.shape[1])  # [B, Hk, G, M]
        num = jnp.einsum("bkgm,bkmd->bkgd", fq, s)
        den = jnp.einsum("bkgm,bkm->bkg", fq, z)
        out = ungrouped(num / jnp.where(den > 0, den, 1.0)[..., None])
        return out.astype(q_t.dtype), {**new, "s": s, "z": z, "t": cache["t"] + 1}

    return init, step


def bucket_decoder(buckets: Callable, window: Callable[..., int], *, shared_qk=False,
                   self_logit=None):
    """(init, step) of bucketed causal attention (`bucketing.causal_window_attention`'s rule).

    buckets(params, q_t, **options) -> int32 [B, H, R]: position t's bucket in each of R rounds
    (from its query). window(max_length, /, **options) -> the positions each bucket keeps in view.
    shared_qk: the keys are the L2-normalized queries (Reformer; k_t is ignored, the key cache has
    H heads). self_logit: the logit of a position to itself (Reformer's "not itself unless alone").
    """
    def init(params, B, max_length, H, Hk, D, Dv, dtype, /, *, rng, **options):
        R = buckets(params, jnp.zeros((1, 1, H, D), F32), rng=rng, **options).shape[-1]
        return {"k": kv_buffer(B, max_length, H if shared_qk else Hk, D, dtype),
                "v": kv_buffer(B, max_length, Hk, Dv, dtype),
                "bucket": jnp.zeros((B, H, R, max_length), jnp.int32),
                "pos": jnp.full((max_length,), -1, jnp.int32), "t": jnp.zeros((), jnp.int32),
                "rng": rng}

    def step(params, cache, q_t, k_t, v_t, **options):
        t, N = cache["t"], cache["pos"].shape[0]
        bt = buckets(params, q_t, rng=cache["rng"], **options)  # [B, H, R]
        if shared_qk:
            x = q_t.astype(F32)
            k_t = x * jax.lax.rsqrt(jnp.maximum(jnp.sum(x * x, axis=-1, keepdims=True), 1e-12))
        cache = kv_write(cache, k_t, v_t)
        cache["bucket"] = jax.lax.dynamic_update_slice_in_dim(cache["bucket"], bt[..., None], t, axis=3)
        filled = (cache["pos"] >= 0) & (cache["pos"] <= t)  # [N]
        same = (cache["bucket"] == bt[..., None]) & filled  # [B, H, R, N]
        later = jnp.sum(same, axis=-1, keepdims=True) - jnp.cumsum(same, axis=-1)  # same after n
        vis = jnp.any(same & (later < window(N, **options)), axis=2)[:, :, None, :]  # [B, H, 1, N]
        s = scaled_dot(params, q_t, cache)  # shared QK: the key cache has H heads
        if self_logit is not None:
            s = jnp.where(cache["pos"] == t, self_logit, s)
        out = weighted_values(masks.masked_softmax(s, vis), cache["v"])
        return out.astype(q_t.dtype), {**cache, "t": t + 1}

    return init, step


def cache_floats(cache, batch_size) -> int:
    """Floating-point numbers the cache keeps per sequence (integer and bool leaves, the
    positions and pattern tables, are bookkeeping and not counted)."""
    n = sum(x.size for x in jax.tree.leaves(cache) if jnp.issubdtype(x.dtype, jnp.floating))
    return int(n) // batch_size
