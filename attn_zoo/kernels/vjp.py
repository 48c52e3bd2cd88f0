"""The custom-VJP wiring shared by every exact attention kernel (fused C++ and the XLA engines).

An exact kernel saves the fp32 log-sum-exp of each query row instead of its probabilities, and
its backward recomputes what it needs from it (FlashAttention-2). This module sits below the
engines so that the fused kernel's binding and the XLA engines wire their VJPs the same way.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp


def lse_kernel(forward, backward):
    """The custom-VJP kernel(q, k, v, kmask) -> (out, lse).

    forward(q, k, v, kmask) -> (out, lse); backward(q, k, v, kmask, out, lse, dout, dlse) ->
    (dq, dk, dv), recomputing what it needs from the saved log-sum-exp. kmask gets no cotangent.
    """
    @jax.custom_vjp
    def kernel(q, k, v, kmask):
        return forward(q, k, v, kmask)

    def kernel_fwd(q, k, v, kmask):
        out, lse = forward(q, k, v, kmask)
        return (out, lse), (q, k, v, kmask, out, lse)

    def kernel_bwd(res, cts):
        dout, dlse = cts
        return (*backward(*res, dout, dlse.astype(jnp.float32)), None)

    kernel.defvjp(kernel_fwd, kernel_bwd)
    return kernel
