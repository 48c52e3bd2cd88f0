"""`performer`: FAVOR+ (Choromanski 2021), softmax attention through positive random features.

exp(q·k/√D) = E_w[φ(q)·φ(k)] with φ(x) = exp(Wx − ‖x‖²/2)/√M, x = q/D^¼ (or k/D^¼), W [M, D]
rows drawn as blocks of D orthogonal, uniformly (Haar) distributed directions with chi-distributed
norms, so that every row is marginally N(0, I_D) and the estimate unbiased. The random rows live in
params["features"] (fixed per layer, declared non-gradient state) or, with `redraw=True`, are
drawn fresh from `rng` on every call. kernel='relu' uses φ(x) = relu(Wx) + 1e-3 instead (the
paper's generalized ReLU kernel), on the unscaled input (x = q or k, no D^¼) and without a 1/√M
factor: a common factor of φ cancels in the ratio, except against the 1e-3, which is therefore
relative to relu(Wx) itself. Stabilizer: each query's features are divided by their max (cancels
per query), keys' by a stop-gradient max over the keys a query can see (global, or causal: each
position's prefix max), which cancels exactly in the ratio.
Attention itself runs through `kernelized` (shared with `linear`): O(N·M·Dv), causal chunked.
"""
from __future__ import annotations

import dataclasses
import jax
import jax.numpy as jnp

from attn_zoo.attention.core import decode
from attn_zoo.attention.core import kernelized
from attn_zoo.attention.core.options import option
from attn_zoo.attention.core.registry import register

F32 = jnp.float32
KERNELS = ("softmax", "relu")
RELU_EPS = 1e-3
@dataclasses.dataclass(frozen=True)
class Options:
    num_features: int = option(256, "M: random features", min=1)
    kernel: str = option("softmax", "softmax (FAVOR+) or relu (generalized ReLU kernel)", choices=KERNELS)
    redraw: bool = option(False, "draw new features from rng on every call")
    orthogonal: bool = option(True, "orthogonal random directions (else iid Gaussian)")
    chunk: int = option(128, "causal: tokens per chunk of the prefix scan", min=1)


def random_features(rng, num_features, dim, orthogonal=True):
    """W [M, D]: stacked blocks of D orthogonal rows, each rescaled to the norm of a D-dim Gaussian
    vector, so every row is marginally N(0, I_D); iid Gaussian if not `orthogonal`. One Gaussian
    draw feeds both directions and norms.

    A block is Q of the QR of a Gaussian matrix with the signs of R's diagonal moved into Q, which
    makes Q Haar-distributed (uniform over orthogonal matrices). Q alone is not: Householder QR
    fixes R's signs by the input's, so row 0 of every block had a negative first coordinate, the
    rows were not isotropic and the estimator was biased (its error stopped falling with M)."""
    if not orthogonal:
        return jax.random.normal(rng, (num_features, dim), F32)
    nblocks = -(-num_features // dim)
    g = jax.random.normal(rng, (nblocks * dim + num_features, dim), F32)
    qmat, r = jnp.linalg.qr(g[: nblocks * dim].reshape(nblocks, dim, dim))  # orthonormal columns
    signs = jnp.where(jnp.diagonal(r, axis1=-2, axis2=-1) < 0, -1.0, 1.0).astype(F32)  # [nblocks, D]
    qmat = qmat * signs[:, None, :]  # column j times sign(R_jj): Q R unchanged, Q now Haar
    rows = jnp.swapaxes(qmat, 1, 2).reshape(nblocks * dim, dim)[:num_features]
    return rows * jnp.linalg.norm(g[nblocks * dim:], axis=-1)[:, None]


def init(rng, q, k, v, *, num_features, orthogonal, **_):
    return {"features": random_features(rng, num_features, q.shape[-1], orthogonal)}


def log_features(w, x):
    """u = Wx − ‖x‖²/2 [..., M] for x [..., D] = input / D^¼ (fp32): φ = exp(u)/√M."""
    x = x.astype(F32) * x.shape[-1] ** -0.25
    return x @ w.T - 0.5 * jnp.sum(x * x, axis=-1, keepdims=True)


def attention(params, q, k, v, *, key_mask, causal, rng, num_features, kernel, redraw, orthogonal,
              chunk):
    if redraw:
        if rng is None:
            raise ValueError("performer: redraw=True draws features from rng; rng is None")
        w = random_features(rng, num_features, q.shape[-1], orthogonal)
    else:
        w = jax.lax.stop_gradient(params["features"])
    if w.shape != (num_features, q.shape[-1]):
        raise ValueError(f"performer: params['features'] is {w.shape}, expected {(num_features, q.shape[-1])}")
    if key_mask is not None:  # pad keys never reach a feature (no inf·0 in the backward pass)
        k = jnp.where(key_mask[:, :, None, None], k, 0)
    # features head by head, from each head's own [B, N, D] slice (see kernelized); split, whose
    # gradient is one concatenate, not a pad and an add per head
    qs, ks = (kernelized.heads(x) for x in (q, k))
    if kernel == "softmax":
        def fq(h):
            uq = log_features(w, qs[h])
            return jnp.exp(uq - jax.lax.stop_gradient(jnp.max(uq, axis=-1, keepdims=True)))

        uk = lambda h: log_features(w, ks[h])  # noqa: E731  the 1/√M factors cancel in the ratio
        return kernelized.attention(fq, uk, v, key_mask, causal=causal, chunk=chunk, log_k=True)
    if kernel == "relu":
        phi = lambda xs: lambda h: jax.nn.relu(xs[h].astype(F32) @ w.T) + RELU_EPS  # noqa: E731
        return kernelized.attention(phi(qs), phi(ks), v, key_mask, causal=causal, chunk=chunk)
    raise ValueError(f"performer: kernel must be one of {KERNELS}, got {kernel!r}")


def reference(params, q, k, v, *, key_mask, causal, rng, num_features, kernel, redraw, orthogonal,
              chunk):
    """The quadratic form φ(q)φ(k)ᵀ of the same random features, built explicitly (no
    stabilizers: they cancel in the ratio)."""
    del chunk
    w = random_features(rng, num_features, q.shape[-1], orthogonal) if redraw else params["features"]
    if kernel == "softmax":
        phi = lambda x: jnp.exp(log_features(w, x))  # noqa: E731
    else:
        phi = lambda x: jax.nn.relu(jnp.einsum("bnhd,md->bnhm", x.astype(F32), w)) + RELU_EPS  # noqa: E731
    return kernelized.quadratic(phi(q), phi(k), v, key_mask, causal)


def state_size(L, H, D, *, num_features, **_):
    """H·(M·D + M), M = num_features: S = Σ φ(k)vᵀ and z = Σ φ(k) per head."""
    return H * (num_features * D + num_features)


def _decode_features(params, x, kind, *, kernel, **_):
    """φ of x [B, 1, heads, D] for decoding: the query features of apply (divided by their max),
    the keys' log-features u (softmax kernel: the decoder keeps a running max), or relu features."""
    w = jax.lax.stop_gradient(params["features"])
    if kernel == "relu":
        return jax.nn.relu(x.astype(F32) @ w.T) + RELU_EPS
    u = log_features(w, x)
    return u if kind == "k" else jnp.exp(u - jnp.max(u, axis=-1, keepdims=True))


_SOFTMAX, _RELU = (decode.kernel_decoder(_decode_features, log_k=log_k) for log_k in (True, False))


def decode_init(params, *args, redraw, kernel, **options):
    """The recurrent state of the kernel's decoder (a running max with the softmax kernel)."""
    if redraw:
        raise ValueError("performer: redraw=True draws new features on every call; decoding needs "
                         "fixed features (redraw=False)")
    return (_SOFTMAX if kernel == "softmax" else _RELU)[0](params, *args, redraw=redraw,
                                                           kernel=kernel, **options)


def decode_step(params, cache, q_t, k_t, v_t, *, kernel, **options):
    """One position through the kernel's decoder (`core/decode.kernel_decoder`)."""
    return (_SOFTMAX if kernel == "softmax" else _RELU)[1](params, cache, q_t, k_t, v_t,
                                                           kernel=kernel, **options)


SPEC = register(
    "performer", family="kernel", exact=False, supports_causal=True, impl=attention,
    options=Options, init_fn=init, state=("features",), reference=reference, reference_atol=2e-5,
    state_size=state_size, decode_init_fn=decode_init, decode_step_fn=decode_step,
    decode_minimal=lambda kernel, **_: kernel == "relu",  # softmax: plus a running max per head
    reference_scale=2.0, complexity="O(N·M·Dv)",
    description="FAVOR+: positive orthogonal random features for the softmax kernel (or ReLU).",
    test_options=({"num_features": 12, "chunk": 8}, {"num_features": 16, "kernel": "relu", "chunk": 8}),
    bench_options={"num_features": 256, "chunk": 128},
)
