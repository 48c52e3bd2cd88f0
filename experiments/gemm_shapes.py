"""XLA:CPU's fp32 matmul rate by shape: why attention's products run far below the GEMM peak here.

Attention's products contract over the head dim (Q·Kᵀ, dO·Vᵀ: K = 64) or produce it (P·V, dS·K:
N = 64); on XLA:CPU such thin products run at a fraction of a square GEMM's rate. Every exact
tile engine built from jnp products inherits that ceiling; this script measures it.
    python experiments/gemm_shapes.py > experiments/results/gemm-shapes-cpu.md
"""
import os
import platform
import statistics
import time

import jax
import jax.numpy as jnp

SHAPES = [  # (batch, M, K, N): a square GEMM, then the shapes of attention at N=8192, D=64
    (1, 2048, 2048, 2048, "square GEMM (the bench's yardstick)"),
    (1, 8192, 64, 8192, "Q·Kᵀ, whole (one head)"),
    (8, 512, 64, 512, "Q·Kᵀ tile, 512×512 (blockwise), 8 heads"),
    (8, 128, 64, 128, "Q·Kᵀ tile, 128×128 (local), 8 heads"),
    (8, 512, 512, 64, "P·V tile, 512×512, 8 heads"),
    (8, 128, 128, 64, "P·V tile, 128×128, 8 heads"),
    (512, 128, 64, 640, "Q·Kᵀ, 64 blocks × 8 heads against a 640-key band (batched)"),
]


def rate(b, m, k, n, repeats=7):
    x, y = jnp.ones((b, m, k)), jnp.ones((b, k, n))
    f = jax.jit(lambda x, y: jnp.einsum("bmk,bkn->bmn", x, y))
    jax.block_until_ready(f(x, y))
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        jax.block_until_ready(f(x, y))
        times.append(time.perf_counter() - t)
    return 2 * b * m * k * n / statistics.median(times) / 1e9


if __name__ == "__main__":
    cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), "?")
    print("# XLA:CPU fp32 matmul rate by shape\n")
    print(f"Command: `python experiments/gemm_shapes.py`. Machine: {cpu}, {os.cpu_count()} cores, "
          f"jax {jax.__version__}, Python {platform.python_version()}. Median of 7 calls, inputs resident.\n")
    print("| batch | M | K | N | what | GFLOP/s |\n|---|---|---|---|---|---|")
    for b, m, k, n, what in SHAPES:
        print(f"| {b} | {m} | {k} | {n} | {what} | {rate(b, m, k, n):.0f} |", flush=True)
