"""One benchmark measurement, run in its own process so peak memory and out-of-memory are isolated.

`python -m attn_zoo.bench.worker '{"variant": "local", "length": 8192, ...}'` prints one JSON line:
compile seconds, forward and forward+backward median seconds, XLA's compiled memory analysis, and
the process's peak resident memory during one call above the resident memory before it (CPU:
XLA's fused attention buffers are invisible to memory_analysis, so RSS is the honest figure).
"""
from __future__ import annotations

import ctypes
import json
import statistics
import sys
import time



def _rss_mb(field):
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    return float("nan")


# (malloc, a symbol only it exports, the call that returns its free pages to the OS)
MALLOCS = (("tcmalloc", "MallocExtension_ReleaseFreeMemory", ()),
           ("jemalloc", "mallctl", (b"arena.4096.purge", None, None, None, 0)),  # all arenas
           ("system", "malloc_trim", (0,)))  # glibc


def _malloc_name():
    """The malloc this process runs under (as LD_PRELOAD made it), from the symbols it exports."""
    lib = ctypes.CDLL(None)
    return next((name for name, symbol, _ in MALLOCS[:-1] if hasattr(lib, symbol)), "system")


def _release_free_memory():
    """Return memory the allocator keeps for reuse to the OS, so that RSS before a call excludes
    it: tcmalloc and jemalloc keep freed pages resident (glibc unmaps large blocks itself)."""
    lib = ctypes.CDLL(None)
    for _, symbol, args in MALLOCS:
        if hasattr(lib, symbol):
            getattr(lib, symbol)(*args)


def _peak_rss_delta_mb(call):
    """Peak RSS during `call()` above RSS before it (frees the allocator's cache and resets the
    high-water mark first)."""
    _release_free_memory()
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        return float("nan")
    before = _rss_mb("VmRSS")
    call()
    return max(0.0, _rss_mb("VmHWM") - before)


def _median_seconds(call, repeats):
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        call()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def measure_jax(cfg):
    import jax
    import jax.numpy as jnp
    import numpy as np

    B, N, H, D = cfg["batch"], cfg["length"], cfg["heads"], cfg["head_dim"]
    dtype = jnp.dtype(cfg["dtype"])
    r = np.random.RandomState(0)
    q, k, v, ct = (jnp.asarray(r.randn(B, N, H, D), dtype) for _ in range(4))
    causal = cfg["causal"]
    if cfg["variant"] in ("xla", "cudnn"):
        params = {}
        f = lambda p, q, k, v: jax.nn.dot_product_attention(q, k, v, is_causal=causal,
                                                             implementation=cfg["variant"])
    else:
        from attn_zoo import attention
        spec = attention.get(cfg["variant"])
        opts = spec.options(**cfg.get("options", {}))
        params = spec.init(jax.random.PRNGKey(0), q, k, v, **opts)
        rng = jax.random.PRNGKey(1)
        f = lambda p, q, k, v: spec.apply(p, q, k, v, causal=causal, rng=rng, **opts)
    loss = lambda p, q, k, v: jnp.sum(f(p, q, k, v).astype(jnp.float32) * ct)
    modes = {"fwd": jax.jit(f), "fwdbwd": jax.jit(jax.grad(loss, argnums=(1, 2, 3)))}
    result = {}
    for mode, fn in modes.items():
        t = time.perf_counter()
        compiled = fn.lower(params, q, k, v).compile()
        result[f"{mode}_compile_s"] = time.perf_counter() - t
        mem = compiled.memory_analysis()
        if mem is not None:
            result[f"{mode}_xla_temp_mb"] = mem.temp_size_in_bytes / 2**20
        call = lambda: jax.block_until_ready(compiled(params, q, k, v))
        # The first call after compiling: later calls reuse memory the allocator kept.
        result[f"{mode}_peak_mb"] = _peak_rss_delta_mb(call)
        result[f"{mode}_s"] = _median_seconds(call, cfg["repeats"])
    result["device"] = jax.devices()[0].device_kind
    return result


def measure_gemm(cfg):
    """The machine's attainable fp32 GEMM rate (best of several 2048³ products), the yardstick for
    '% of peak': a fixed datasheet figure would be wrong on a machine without AVX-512."""
    import jax
    import jax.numpy as jnp

    n = 2048
    a = jnp.ones((n, n), jnp.float32)
    f = jax.jit(lambda a: a @ a)
    jax.block_until_ready(f(a))
    best = min(_median_seconds(lambda: jax.block_until_ready(f(a)), 1) for _ in range(7))
    return {"gemm_gflops": 2 * n**3 / best / 1e9, "device": jax.devices()[0].device_kind}


def measure_torch(cfg):
    import torch
    import torch.nn.functional as F

    torch.manual_seed(0)
    B, N, H, D = cfg["batch"], cfg["length"], cfg["heads"], cfg["head_dim"]
    dtype = {"float32": torch.float32, "bfloat16": torch.bfloat16}[cfg["dtype"]]
    q, k, v = (torch.randn(B, H, N, D, dtype=dtype, requires_grad=True) for _ in range(3))
    ct = torch.randn(B, H, N, D, dtype=dtype)
    causal = cfg["causal"]

    def fwd():
        with torch.no_grad():
            F.scaled_dot_product_attention(q, k, v, is_causal=causal)

    def fwdbwd():
        out = F.scaled_dot_product_attention(q, k, v, is_causal=causal)
        torch.autograd.grad((out * ct).sum(), (q, k, v))

    result = {}
    for mode, call in (("fwd", fwd), ("fwdbwd", fwdbwd)):
        t = time.perf_counter()
        result[f"{mode}_peak_mb"] = _peak_rss_delta_mb(call)
        result[f"{mode}_compile_s"] = time.perf_counter() - t  # first call: PyTorch compiles nothing
        result[f"{mode}_s"] = _median_seconds(call, cfg["repeats"])
    result["device"] = f"torch {torch.__version__} cpu ({torch.get_num_threads()} threads)"
    return result


def main(argv):
    cfg = json.loads(argv[1])
    if cfg.get("mode") == "train-step":
        from attn_zoo.bench.train_step import measure
    else:
        measure = {"torch": measure_torch, "gemm": measure_gemm}.get(cfg["variant"], measure_jax)
    print(json.dumps({**cfg, **measure(cfg), "malloc": _malloc_name()}), flush=True)


if __name__ == "__main__":
    main(sys.argv)
