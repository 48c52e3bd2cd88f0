"""Kernelized attention machinery shared by `linear` and `performer`.

Both compute  out_l = Σ_s (φ(q_l)·φ(k_s)) v_s / Σ_s φ(q_l)·φ(k_s)  for non-negative features
φ [.., M]. Reassociating as φ(q)(φ(k)ᵀ v) makes it O(N·M·Dv) instead of O(L·S). Causal uses the
chunked form: exact quadratic attention inside a chunk of C positions, plus a carried M×Dv state
(and M normalizer) from earlier chunks with `lax.scan`; the scan body is rematerialized so memory
is O(N·M + (N/C)·M·Dv + C²), never the O(N·M·Dv) of per-position prefix sums.

Padded keys get φ(k) = 0 (and v = 0): they reach neither numerator nor normalizer. A query with no
visible key has normalizer 0 and outputs zeros. Everything is accumulated in fp32.

Exponential features (FAVOR+) can be passed as log-features u (φ = exp(u)); they are stabilized by
subtracting a stop-gradient max over the keys a query may see (global; causal: each position's
prefix max, the carried state rescaled as in an online softmax), which cancels exactly in the ratio.

Features that come from a matmul per head (FAVOR+) can be given as functions of the head index:
non-causal then runs head by head on [B, N, M] slices, the normalizer a ones column of v. XLA:CPU
batches a dot only over leading dimensions, so H-batched einsums over [B, N, H, M] transpose every
operand; with M = 256 features that costs more than the products. With elementwise features
(linear, M = D) the batched einsums stay: head by head, the per-head slices' gradients were slower
in the model (the measurements: experiments/results/kernelized-layout.md).
"""
from __future__ import annotations

import jax
import jax.numpy as jnp

from attn_zoo.attention.core import masks

F32 = jnp.float32
FEATURE_MAPS = ("elu", "relu")


def feature_map(name, x):
    """φ(x) for the Linear Transformer: 'elu' = elu(x) + 1 (Katharopoulos 2020), 'relu'."""
    x = x.astype(F32)
    if name == "elu":
        return jax.nn.elu(x) + 1.0
    if name == "relu":
        return jax.nn.relu(x)
    raise ValueError(f"feature map must be one of {FEATURE_MAPS}, got {name!r}")


def nonzero(den):
    """The normalizer with 0 (no visible key: the output is 0/1 = 0) replaced by 1. Features are
    non-negative, so den >= 0; a NaN den (a NaN query) stays NaN, so that the NaN reaches every
    coordinate of that query's gradient through den too (`den > 0` would swap it for 1 and cut
    that path: dq kept finite entries). Unchanged wherever den > 0."""
    return jnp.where(den == 0, 1.0, den)


@jax.custom_jvp
def divide(num, den):
    """num / den, differentiated as (dnum − out·dden) / den: the default rule forms num / den²,
    which overflows fp32 once den < 1e-19 although out stays a bounded average of the values."""
    return num / den


@divide.defjvp
def _divide_jvp(primals, tangents):
    (num, den), (dnum, dden) = primals, tangents
    out = num / den
    return out, (dnum - out * dden) / den


def quadratic(fq, fk, v, key_mask, causal):
    """The explicit O(L·S) form Σ_s a_ls v_s / Σ_s a_ls with a = φ(q)φ(k)ᵀ masked: the reference
    every kernel attention is checked against. fq [B, L, H, M], fk [B, S, H, M], v [B, S, H, Dv]."""
    vis = masks.visible_mask(fq.shape[1], fk.shape[1], key_mask=key_mask, causal=causal)
    a = jnp.where(vis, jnp.einsum("blhm,bshm->bhls", fq, fk), 0.0)
    den = jnp.sum(a, axis=-1)
    out = jnp.einsum("bhls,bshd->blhd", a, v.astype(F32))
    return out / nonzero(den).transpose(0, 2, 1)[..., None]


def attention(fq, fk, v, key_mask, *, causal, chunk, log_k=False):
    """Normalized kernel attention.

    fq [B, L, H, M] query features (>= 0), fk [B, S, H, M] key features (>= 0), or log-features
    when `log_k`; or both functions h -> [B, N, M] (head h's features). v [B, S, H, Dv]; key_mask
    [B, S] bool or None. Returns fp32 [B, L, H, Dv].
    """
    B, S, H = v.shape[:3]
    km = masks.key_mask_or_ones(key_mask, B, S)[:, :, None]
    v = jnp.where(km[..., None], v, 0).astype(F32)
    if callable(fq):
        if not causal:
            return _per_head(fq, fk, v, km, log_k=log_k)
        fq, fk = (jnp.stack([f(h) for h in range(H)], axis=2) for f in (fq, fk))
    fq = fq.astype(F32)
    fk = jnp.where(km[..., None], fk.astype(F32), -jnp.inf if log_k else 0.0)  # pads vanish
    if causal:
        return _causal(fq, fk, v, chunk=chunk, log_k=log_k)
    if log_k:
        fk = _exp_stable(fk, axis=(1, 3))  # max per (batch, head)
    kv = jnp.einsum("bshm,bshd->bhmd", fk, v)
    z = jnp.sum(fk, axis=1)  # [B, H, M]
    num = jnp.einsum("blhm,bhmd->blhd", fq, kv)
    den = jnp.einsum("blhm,bhm->blh", fq, z)
    return divide(num, nonzero(den)[..., None])


def heads(x):
    """[B, N, H, X] -> H arrays [B, N, X] by `jnp.split` (its gradient is one concatenate; indexing
    x[:, :, h] gives a pad per head that XLA:CPU adds up)."""
    return [p[:, :, 0] for p in jnp.split(x, x.shape[2], axis=2)]


def _per_head(fq, fk, v, km, *, log_k):
    """Non-causal attention one head at a time from feature functions h -> [B, N, M]; the
    normalizer is a ones column appended to v (masked v [B, S, H, Dv], km [B, S, 1])."""
    ve = jnp.concatenate([v, jnp.ones_like(v[..., :1])], axis=-1)  # pads' φ(k) = 0: not counted
    out, ves = [], heads(ve)
    for h in range(v.shape[2]):
        fk_h = jnp.where(km, fk(h).astype(F32), -jnp.inf if log_k else 0.0)  # [B, S, M]
        if log_k:
            fk_h = _exp_stable(fk_h, axis=(1, 2))  # max per batch row
        kv = jnp.einsum("bsm,bsd->bmd", fk_h, ves[h])  # [B, M, Dv + 1]: last column Σ_s φ(k_s)
        out.append(jnp.einsum("blm,bmd->bld", fq(h).astype(F32), kv))
    num = jnp.stack(out, axis=2)  # [B, L, H, Dv + 1]
    den = num[..., -1:]
    return divide(num[..., :-1], nonzero(den))


def _exp_stable(u, axis):
    """exp(u - c), c a stop-gradient max of u over `axis` (0 where all -inf); cancels in the ratio."""
    c = jax.lax.stop_gradient(jnp.max(u, axis=axis, keepdims=True))
    return jnp.exp(u - jnp.where(jnp.isfinite(c), c, 0.0))


def _causal(fq, fk, v, *, chunk, log_k):
    """Chunked causal form; L == S, padded to a multiple of the chunk (padding is masked)."""
    B, L, H, M = fq.shape
    Dv = v.shape[-1]
    C = max(1, min(chunk, L))
    n = -(-L // C)

    def chunks(x, fill):  # [B, L, H, X] -> [n, B, H, C, X]
        if n * C != L:
            x = jnp.pad(x, ((0, 0), (0, n * C - L), (0, 0), (0, 0)), constant_values=fill)
        return x.reshape(B, n, C, H, x.shape[-1]).transpose(1, 0, 3, 2, 4)

    tril = jnp.tril(jnp.ones((C, C), dtype=bool))

    def body(carry, xs):
        state, z, m_run = carry  # [B, H, M, Dv], [B, H, M], [B, H]
        q_c, k_c, v_c = xs       # [B, H, C, M], [B, H, C, M], [B, H, C, Dv]
        if log_k:
            # Each query against its own prefix max p_c of the keys it may see (m_run, then this
            # chunk up to c): a chunk-wide max counts later keys, and one large later key
            # underflowed an early query's whole normalizer (terms of exp(-90)), making its output
            # wrong and its gradient non-finite. Query c reads key e <= c as
            # exp(u_e - p_e) * exp(p_e - p_c) and the state (relative to m_run) times
            # exp(m_run - p_c): every factor <= 1, and the key at p_c contributes exp(0).
            p = jax.lax.stop_gradient(jnp.maximum(m_run[..., None], jax.lax.cummax(jnp.max(k_c, axis=3), axis=2)))
            seen = jnp.isfinite(p)  # [B, H, C]: some real key visible (else its features are 0)
            p = jnp.where(seen, p, 0.0)
            pair = jnp.exp(jnp.where(tril & seen[..., None, :], p[..., None, :] - p[..., :, None], -jnp.inf))
            a = jnp.einsum("bhcm,bhem->bhce", q_c, jnp.exp(k_c - p[..., None])) * pair
            carried = jnp.exp(m_run[..., None] - p)  # [B, H, C]; 0 before any real key
            num = jnp.einsum("bhce,bhed->bhcd", a, v_c) + carried[..., None] * jnp.einsum("bhcm,bhmd->bhcd", q_c, state)
            den = jnp.sum(a, axis=-1) + carried * jnp.einsum("bhcm,bhm->bhc", q_c, z)
            end = p[..., -1]  # the state moves to the chunk's last prefix max
            alpha = jnp.exp(m_run - end)
            state, z = state * alpha[..., None, None], z * alpha[..., None]
            k_c = jnp.exp(k_c - end[..., None, None])
            m_run = jnp.where(seen[..., -1], end, -jnp.inf)
        else:
            a = jnp.where(tril, jnp.einsum("bhcm,bhem->bhce", q_c, k_c), 0.0)
            num = jnp.einsum("bhce,bhed->bhcd", a, v_c) + jnp.einsum("bhcm,bhmd->bhcd", q_c, state)
            den = jnp.sum(a, axis=-1) + jnp.einsum("bhcm,bhm->bhc", q_c, z)
        out = divide(num, nonzero(den)[..., None])
        state = state + jnp.einsum("bhcm,bhcd->bhmd", k_c, v_c)
        z = z + jnp.sum(k_c, axis=2)
        return (state, z, m_run), out

    init = (jnp.zeros((B, H, M, Dv), F32), jnp.zeros((B, H, M), F32),
            jnp.full((B, H), -jnp.inf, F32))
    xs = (chunks(fq, 0.0), chunks(fk, -jnp.inf if log_k else 0.0), chunks(v, 0.0))
    _, out = jax.lax.scan(jax.checkpoint(body), init, xs)  # [n, B, H, C, Dv]
    return out.transpose(1, 0, 3, 2, 4).reshape(B, n * C, H, Dv)[:, :L]
