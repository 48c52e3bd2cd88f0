"""The attention-alone suite: speed and memory of one attention call per (variant, length).

`measure` runs in a worker process (attn_zoo.bench.worker): compile seconds, forward and
forward+backward median seconds, XLA's compiled memory analysis, and the process's peak resident
memory during one call above the resident memory before it (CPU: XLA's fused attention buffers are
invisible to memory_analysis, so RSS is the honest figure). Baselines: `xla`
(jax.nn.dot_product_attention), `cudnn` (GPU only) and `torch` (PyTorch's SDPA, when installed);
`gemm` measures the machine's fp32 GEMM rate, the yardstick for "% of peak". The rest builds the
configurations to run and the report: ratios to xla within one run, and crossover lengths.
"""
from __future__ import annotations

import importlib.util
import time

from attn_zoo.bench.common import fmt, malloc_of, median_seconds, options_cell, peak_rss_delta_mb, report_head

EXACT_BASELINES = ("xla", "cudnn", "dense", "blockwise")


def measure(cfg):
    """One worker's measurement of cfg: the torch baseline, the GEMM rate, or a JAX attention."""
    return {"torch": measure_torch, "gemm": measure_gemm}.get(cfg["variant"], measure_jax)(cfg)


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
        result[f"{mode}_peak_mb"] = peak_rss_delta_mb(call)
        result[f"{mode}_s"] = median_seconds(call, cfg["repeats"])
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
    best = min(median_seconds(lambda: jax.block_until_ready(f(a)), 1) for _ in range(7))
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
        result[f"{mode}_peak_mb"] = peak_rss_delta_mb(call)
        result[f"{mode}_compile_s"] = time.perf_counter() - t  # first call: PyTorch compiles nothing
        result[f"{mode}_s"] = median_seconds(call, cfg["repeats"])
    result["device"] = f"torch {torch.__version__} cpu ({torch.get_num_threads()} threads)"
    return result


def useful_flops(row):
    """Forward FLOPs of the exact computation (4·B·H·D·#visible pairs); None for approximations."""
    from attn_zoo import attention

    N, name = row["length"], row["variant"]
    if name in ("xla", "cudnn", "torch"):
        pairs = N * (N + 1) // 2 if row["causal"] else N * N
    else:
        import jax

        spec = attention.get(name)
        if not spec.exact or N > 16384:
            return None
        # The worker's rng, so variants with random patterns (bigbird) count what they computed.
        pattern = spec.pattern(N, N, causal=row["causal"], rng=jax.random.PRNGKey(1),
                               **row.get("options", {}))
        if pattern is None:
            return None
        pairs = int(pattern.sum())
    return 4 * row["batch"] * row["heads"] * row["head_dim"] * pairs


def configs(args):
    from attn_zoo import attention

    names = attention.names() if args.variants == "all" else [v for v in args.variants.split(",") if v]
    baselines = [b for b in args.baselines.split(",") if b]
    if "torch" in baselines and importlib.util.find_spec("torch") is None:
        print("torch not installed: skipping the torch baseline (pip install torch==2.13.0)")
        baselines.remove("torch")
    base = dict(batch=args.batch, heads=args.heads, head_dim=args.head_dim, dtype=args.dtype,
                causal=args.causal, repeats=args.repeats)
    out = []
    for name in baselines + names:
        options = {}
        if name not in ("xla", "cudnn", "torch"):
            spec = attention.get(name)
            if args.causal and not spec.supports_causal:
                print(f"{name}: no causal form, skipped")
                continue
            options = dict(spec.bench_options)
        out.append((name, {**base, "variant": name, "options": options}))
    return out


def crossovers(rows):
    """Per variant: the shortest measured length from which it is at least as fast (fwd+bwd) as the
    best exact baseline measured, at that length and every longer one."""
    best = {}
    for r in rows:
        if r["variant"] in EXACT_BASELINES and "fwdbwd_s" in r:
            best[r["length"]] = min(best.get(r["length"], float("inf")), r["fwdbwd_s"])
    out = {}
    for name in dict.fromkeys(r["variant"] for r in rows):
        mine = {r["length"]: r.get("fwdbwd_s") for r in rows if r["variant"] == name}
        lengths = sorted(n for n in mine if n in best)
        wins = [mine[n] is not None and mine[n] <= best[n] for n in lengths]
        cross = None
        for i, n in enumerate(lengths):
            if all(wins[i:]):
                cross = n
                break
        if not lengths:
            out[name] = "—"
        elif cross is None:
            out[name] = f"> {lengths[-1]}"
        else:
            out[name] = f"≤ {cross}" if cross == lengths[0] else str(cross)
    return out


def report(rows, args, wall_s, gemm):
    """Markdown text: machine, command, one row per (variant, length), ratios to xla, crossovers."""
    xla = {r["length"]: r for r in rows if r["variant"] == "xla" and "error" not in r}
    peak = gemm.get("gemm_gflops")
    lines = report_head("attention benchmark", rows) + [
        f"Settings: B={args.batch}, H={args.heads}, D={args.head_dim}, {args.dtype}, "
        f"causal={args.causal}, median of {args.repeats} calls; wall time {wall_s / 60:.1f} min; "
        f"malloc: {malloc_of(rows)}.",
        "Peak MB: process peak RSS during one call above RSS before it. Speedup and memory ratio: "
        "against `xla` (jax.nn.dot_product_attention) at the same length, in this run. "
        "% peak: the exact computation's FLOPs (fwd 4·B·H·D·pairs, fwd+bwd 3×) over the fp32 GEMM "
        f"rate measured on this machine in this run ({fmt(peak)} GFLOP/s, 2048³ matmul).",
        "", "| variant | options | N | compile s | fwd ms | fwd+bwd ms | speedup vs xla | peak MB | "
        "memory vs xla | XLA temp MB | % peak fwd / fwd+bwd |", "|" + "---|" * 11]
    for r in rows:
        opts = options_cell(r)
        if "error" in r:
            lines.append(f"| {r['variant']} | {opts} | {r['length']} | {r['error']} |||||||")
            continue
        base = xla.get(r["length"])
        speed = base["fwdbwd_s"] / r["fwdbwd_s"] if base else None
        mem = r["fwdbwd_peak_mb"] / base["fwdbwd_peak_mb"] if base and base["fwdbwd_peak_mb"] > 0 else None
        flops = useful_flops(r)
        pct = "—" if flops is None or not peak else (
            f"{100 * flops / r['fwd_s'] / 1e9 / peak:.0f} / {100 * 3 * flops / r['fwdbwd_s'] / 1e9 / peak:.0f}")
        lines.append(
            f"| {r['variant']} | {opts} | {r['length']} | {r['fwd_compile_s']:.1f} / {r['fwdbwd_compile_s']:.1f} | "
            f"{1e3 * r['fwd_s']:.0f} | {1e3 * r['fwdbwd_s']:.0f} | {fmt(speed)}× | {r['fwdbwd_peak_mb']:.0f} | "
            f"{fmt(mem, 2)} | {fmt(r.get('fwdbwd_xla_temp_mb'), 4)} | {pct} |")
    lines += summary_at_longest(rows)
    lines += ["", "Crossover length (fwd+bwd at least as fast as the best exact baseline among "
              f"{', '.join(b for b in EXACT_BASELINES)} measured here, from that length on):", "",
              "| variant | crossover N |", "|---|---|"]
    lines += [f"| {name} | {n} |" for name, n in crossovers(rows).items() if name not in EXACT_BASELINES]
    return "\n".join(lines) + "\n"


def summary_at_longest(rows):
    """Ratios at the longest length where xla ran: speed and memory vs xla, speed vs torch."""
    ok = [r for r in rows if "error" not in r]
    lengths = sorted({r["length"] for r in ok if r["variant"] == "xla"})
    if not lengths:
        return []
    n = lengths[-1]
    at = {r["variant"]: r for r in ok if r["length"] == n}
    xla, torch = at["xla"], at.get("torch")
    lines = ["", f"Summary at N={n} (ratios from this run; > 1 = faster / smaller):", "",
             "| variant | fwd+bwd speedup vs xla | fwd speedup vs xla | memory vs xla (fwd+bwd peak) |"
             + (" fwd+bwd speedup vs torch |" if torch else ""),
             "|---|---|---|---|" + ("---|" if torch else "")]
    for name, r in at.items():
        mem = r["fwdbwd_peak_mb"] / xla["fwdbwd_peak_mb"] if xla["fwdbwd_peak_mb"] > 0 else None
        line = (f"| {name} | {xla['fwdbwd_s'] / r['fwdbwd_s']:.2f}× | {xla['fwd_s'] / r['fwd_s']:.2f}× | "
                f"{'—' if mem is None else '0' if mem == 0 else f'1/{1 / mem:.0f}' if mem < 1 else f'{mem:.2f}'} |")
        if torch:
            line += f" {torch['fwdbwd_s'] / r['fwdbwd_s']:.2f}× |"
        lines.append(line)
    return lines


def plot(rows, path):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(12, 4.6))
    names = list(dict.fromkeys(r["variant"] for r in rows))
    colors = plt.get_cmap("tab20")
    for c, name in enumerate(names):
        ok = [r for r in rows if r["variant"] == name and "error" not in r]
        if not ok:
            continue
        n = [r["length"] for r in ok]
        style = dict(linestyle="--" if name in EXACT_BASELINES + ("torch",) else "-",
                     marker="osD^v<>ph*"[c % 10], color=colors(c % 20), label=name)
        axes[0].plot(n, [r["fwdbwd_s"] for r in ok], **style)
        axes[1].plot(n, [max(r["fwdbwd_peak_mb"], 1e-1) for r in ok], **style)
    for ax, label in zip(axes, ("forward+backward seconds", "peak memory MB (RSS)")):
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xlabel("sequence length N")
        ax.set_ylabel(label)
        ax.grid(True, which="both", alpha=0.3)
    axes[1].legend(fontsize=7, ncol=1, loc="center left", bbox_to_anchor=(1.01, 0.5))
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
