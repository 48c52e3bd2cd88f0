"""The fused CPU attention kernel (`flash_cpu.cc`): built on first use, called through jax.ffi.

`attention(...)` is exact softmax attention over the band dlo <= i - j <= dhi (plus key_mask)
with a custom VJP, the same contract as the XLA engines in `attention/core/block_sparse.py` and
`attention/core/band.py`, which use it on CPU for fp32 inputs when it is available. The C++ source is
compiled once per machine into a cache directory (`$ATTN_ZOO_KERNEL_CACHE`, default
`~/.cache/attn_zoo`) against jaxlib's FFI headers and the OpenBLAS of the `scipy-openblas32`
wheel. Without a C++ compiler the engines fall back to XLA, with one warning naming the reason;
`ATTN_ZOO_CPU_KERNEL=0` turns the kernel off.
"""
from __future__ import annotations

import ctypes
import functools
import hashlib
import logging
import os
import platform
import shutil
import subprocess
import tempfile
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from attn_zoo.kernels.vjp import lse_kernel

F32 = jnp.float32
SOURCE = Path(__file__).with_name("flash_cpu.cc")
_FORWARD, _BACKWARD = "attn_zoo_flash_forward", "attn_zoo_flash_backward"
log = logging.getLogger(__name__)


def _cpu_signature() -> str:
    """What `-march=native` compiled for: a cached build is reused only on the same CPU."""
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
        return "\n".join(sorted({l for l in lines if l.startswith(("model name", "flags"))}))
    except OSError:
        return platform.processor() + platform.machine()


def compiler() -> str | None:
    """The C++ compiler the kernel is built with: $CXX, else g++, c++ or clang++ on PATH."""
    return os.environ.get("CXX") or shutil.which("g++") or shutil.which("c++") or shutil.which("clang++")


def _build() -> Path:
    import scipy_openblas32 as blas

    cxx = compiler()
    if cxx is None:
        raise RuntimeError("no C++ compiler (set CXX or install g++)")
    flags = ["-w", "-O3", "-march=native", "-std=c++17", "-shared", "-fPIC", "-pthread"]
    libdir = blas.get_lib_dir()
    cmd = [cxx, *flags, "-I", jax.ffi.include_dir(), "-I", blas.get_include_dir(), str(SOURCE),
           "-L", libdir, f"-l{blas.get_library()}", f"-Wl,-rpath,{libdir}"]
    key = hashlib.sha256("\0".join([SOURCE.read_text(), *cmd, jax.__version__, _cpu_signature()])
                         .encode()).hexdigest()[:16]
    cache = Path(os.environ.get("ATTN_ZOO_KERNEL_CACHE", Path.home() / ".cache" / "attn_zoo"))
    target = cache / f"flash_cpu-{key}.so"
    if target.exists():
        return target
    cache.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=cache) as tmp:  # concurrent builders never see half a file
        built = Path(tmp) / target.name
        res = subprocess.run([*cmd, "-o", str(built)], capture_output=True, text=True)
        if res.returncode != 0:
            raise RuntimeError(f"compiling {SOURCE.name} failed:\n{res.stderr[-2000:]}")
        os.replace(built, target)
    return target


@functools.cache
def status() -> tuple[bool, str]:
    """(available, why not): builds and registers the kernel on first call."""
    if os.environ.get("ATTN_ZOO_CPU_KERNEL", "1") == "0":
        return False, "ATTN_ZOO_CPU_KERNEL=0"
    try:
        lib = ctypes.CDLL(str(_build()))
        jax.ffi.register_ffi_target(_FORWARD, jax.ffi.pycapsule(lib.AttnZooFlashForward), platform="cpu")
        jax.ffi.register_ffi_target(_BACKWARD, jax.ffi.pycapsule(lib.AttnZooFlashBackward), platform="cpu")
    except Exception as e:  # noqa: BLE001 - any failure means: use the XLA engine instead
        log.warning("attn_zoo: fused CPU attention kernel unavailable, using XLA (%s)", e)
        return False, str(e)
    return True, ""


def use(engine: str, *arrays) -> bool:
    """An engine option's answer for these inputs: "auto" takes the kernel for fp32 arrays on
    the CPU backend when it is built; "xla" never does."""
    if engine not in ("auto", "xla"):
        raise ValueError(f"engine must be 'auto' or 'xla', got {engine!r}")
    return (engine == "auto" and jax.default_backend() == "cpu"
            and all(a.dtype == F32 for a in arrays) and status()[0])


# The kernel reads q, k, v in the caller's [B, N, H, D] layout when a token's row of all heads,
# H·D floats, is at most this long; longer rows are transposed to [B, H, N, D] first (a head's
# rows contiguous: OpenBLAS packing rows 2 KB apart thrashes the caches). Reading them in place
# saves XLA's transposes of q, k, v, out and their gradients (8 per layer; about 1% of a
# `configs/listops.py:small` training step, H·D = 64: experiments/results/small-model-steps.md).
TOKENS_FIRST_MAX = 256


def attention(q, k, v, key_mask, *, dlo: int, dhi: int, scale: float,
              blocks: tuple[int, int] = (512, 512), bwd_blocks: tuple[int, int] | None = None,
              tokens_first: bool | None = None, segments=None, alibi_slopes=None):
    """q [B, L, H, D], k [B, S, Hk, D], v [B, S, Hk, Dv] fp32 (H % Hk == 0: query head h reads
    key head h // (H // Hk), indexed in the kernel, never repeated), key_mask [B, S] bool ->
    (out [B, L, H, Dv], lse [B, L, H]), both differentiable; query i sees key j iff
    dlo <= i - j <= dhi and key_mask[j] (and q_ids[i] == kv_ids[j] with segments = (q_ids [B, L],
    kv_ids [B, S]) int32). alibi_slopes [H] fp32: the scaled logit of (i, j) gets
    − slope_h·|i − j| in the tile (no gradient). lse is -inf (and out 0) for a query with no visible key;
    NaN and Inf propagate as in the XLA engines (a non-finite logit: that row's out and lse NaN),
    and a masked key's k and v reach nothing, not even as 0·NaN.

    blocks: (query, key) tile of the forward pass; bwd_blocks: of the backward (default: the
    same). The backward loops over key blocks outside, so a band wants its transpose there.
    tokens_first: let the kernel read this layout in place (None: when H·D <= TOKENS_FIRST_MAX).
    """
    ok, why = status()
    if not ok:
        raise RuntimeError(f"the fused CPU attention kernel is unavailable: {why}")
    if tokens_first is None:
        tokens_first = max(q.shape[-2] * q.shape[-1], v.shape[-2] * v.shape[-1]) <= TOKENS_FIRST_MAX
    kernel = _kernel(float(scale), int(dlo), int(dhi), tuple(blocks), tuple(bwd_blocks or blocks),
                     bool(tokens_first), segments is not None, alibi_slopes is not None)
    lead, (L, H), S = q.shape[:-3], q.shape[-3:-1], k.shape[-3]
    if segments is None:  # unread placeholders (the kernel's arity is fixed)
        segments = (jnp.zeros(lead + (L,), jnp.int32), jnp.zeros(lead + (S,), jnp.int32))
    slopes = jnp.zeros((H,), F32) if alibi_slopes is None else jnp.asarray(alibi_slopes, F32)
    aux = (key_mask, segments[0].astype(jnp.int32), segments[1].astype(jnp.int32),
           jnp.broadcast_to(slopes, lead + (H,)))
    if tokens_first:
        return kernel(q, k, v, aux)
    heads_first = lambda x: jnp.swapaxes(x, -3, -2)  # noqa: E731  [.., N, H, D] <-> [.., H, N, D]
    out, lse = kernel(heads_first(q), heads_first(k), heads_first(v), aux)
    return heads_first(out), jnp.swapaxes(lse, -1, -2)


@functools.cache
def _kernel(scale, dlo, dhi, blocks, bwd_blocks, tokens_first=False, segments=False, alibi=False):
    def attrs(bq, bk):
        return dict(scale=np.float32(scale), dlo=np.int64(dlo), dhi=np.int64(dhi),
                    block_q=np.int64(bq), block_k=np.int64(bk), tokens_first=np.int64(tokens_first),
                    use_segments=np.int64(segments), use_alibi=np.int64(alibi))

    def forward(q, k, v, aux):  # aux: (key_mask, q_ids, kv_ids, slopes), no cotangent
        out = jax.ShapeDtypeStruct(q.shape[:-1] + v.shape[-1:], F32)  # [B, H, L, Dv] / [B, L, H, Dv]
        lse = jax.ShapeDtypeStruct(q.shape[:-1], F32)  # [B, H, L] / [B, L, H]
        return jax.ffi.ffi_call(_FORWARD, (out, lse), vmap_method="broadcast_all")(
            q, k, v, *aux, **attrs(*blocks))

    def backward(q, k, v, aux, out, lse, dout, dlse):
        shapes = tuple(jax.ShapeDtypeStruct(x.shape, F32) for x in (q, k, v))
        return jax.ffi.ffi_call(_BACKWARD, shapes, vmap_method="broadcast_all")(
            q, k, v, *aux, out, lse, dout, dlse, **attrs(*bwd_blocks))

    return lse_kernel(forward, backward)
