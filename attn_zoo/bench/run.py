"""`attn-zoo bench`: speed and memory of attention variants against sequence length.

Each (variant, length) runs in a fresh process (attn_zoo.bench.worker) so that peak memory is its
own and an out-of-memory kill is reported as such while the run goes on. Baselines: `xla`
(jax.nn.dot_product_attention), `cudnn` (GPU only) and `torch` (PyTorch's SDPA, when installed).
Ratios in the report compare numbers taken in the same run; times are medians of several calls.

Workers run under a caching malloc (tcmalloc or jemalloc, LD_PRELOAD) when one is installed:
glibc's malloc hands XLA:CPU's large per-call temp buffers back to the OS, so every call faults
them in again, page by page. On this project's 2-core VM that was 6.4 s of system CPU in an 11 s
dense training step at 4K (dense 6.4 s per step under tcmalloc); it slows big-temp baselines most.
"""
from __future__ import annotations

import csv
import ctypes.util
import importlib.util
import json
import os
import platform
import re
import subprocess
import sys
import time

EXACT_BASELINES = ("xla", "cudnn", "dense", "blockwise")
# name -> (library to find, its Debian package)
ALLOCATORS = {"tcmalloc": ("tcmalloc_minimal", "libtcmalloc-minimal4"), "jemalloc": ("jemalloc", "libjemalloc2")}


def malloc_preload(choice):
    """(allocator name, library for LD_PRELOAD or None): 'system' = glibc's malloc; 'auto' = the
    first of ALLOCATORS installed, else system; a named one must be installed."""
    if choice == "system":
        return "system", None
    for name, (lib, package) in ALLOCATORS.items():
        if choice in ("auto", name):
            path = ctypes.util.find_library(lib)
            if path:
                return name, path
            if choice == name:
                raise SystemExit(f"--allocator {name}: lib{lib} not found (Debian: apt install {package})")
    return "system", None


def _last_error(stderr):
    """The exception line of a worker's traceback (JAX prints a notice after it), else the last line."""
    lines = [line.strip() for line in stderr.strip().splitlines() if line.strip()]
    errors = [line for line in lines if re.match(r"^[\w.]+(Error|Exception)\b", line)]
    return (errors or lines or [""])[-1]


def run_one(cfg, timeout, preload=None):
    """Run the worker for one configuration (with `preload` as LD_PRELOAD, see malloc_preload);
    failures come back as {'error': ...}."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    if preload:
        env["LD_PRELOAD"] = " ".join(filter(None, [preload, env.get("LD_PRELOAD")]))
    try:
        proc = subprocess.run([sys.executable, "-m", "attn_zoo.bench.worker", json.dumps(cfg)],
                              capture_output=True, text=True, timeout=timeout, env=env)
    except subprocess.TimeoutExpired:
        return {**cfg, "error": f"timeout > {timeout:.0f}s"}
    if proc.returncode != 0:
        oom = proc.returncode in (-9, 137) or "RESOURCE_EXHAUSTED" in proc.stderr or "MemoryError" in proc.stderr
        return {**cfg, "error": "out of memory" if oom else f"failed: {_last_error(proc.stderr)[:200]}"}
    return json.loads(proc.stdout.strip().splitlines()[-1])


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


def _fmt(x, digits=3):
    return "—" if x is None else f"{x:.{digits}g}"


def report(rows, args, wall_s, gemm):
    """Markdown text: machine, command, one row per (variant, length), ratios to xla, crossovers."""
    xla = {r["length"]: r for r in rows if r["variant"] == "xla" and "error" not in r}
    peak = gemm.get("gemm_gflops")
    lines = [
        "# attention benchmark", "",
        f"Command: `attn-zoo bench {' '.join(sys.argv[2:]) if len(sys.argv) > 1 else ''}`".rstrip(),
        f"Machine: {_cpu_name()}, {os.cpu_count()} cores, {platform.python_version()}, "
        f"device {next((r['device'] for r in rows if 'device' in r), '?')}",
        f"Settings: B={args.batch}, H={args.heads}, D={args.head_dim}, {args.dtype}, "
        f"causal={args.causal}, median of {args.repeats} calls; wall time {wall_s / 60:.1f} min; "
        f"malloc: {malloc_of(rows)}.",
        "Peak MB: process peak RSS during one call above RSS before it. Speedup and memory ratio: "
        "against `xla` (jax.nn.dot_product_attention) at the same length, in this run. "
        "% peak: the exact computation's FLOPs (fwd 4·B·H·D·pairs, fwd+bwd 3×) over the fp32 GEMM "
        f"rate measured on this machine in this run ({_fmt(peak)} GFLOP/s, 2048³ matmul).",
        "", "| variant | options | N | compile s | fwd ms | fwd+bwd ms | speedup vs xla | peak MB | "
        "memory vs xla | XLA temp MB | % peak fwd / fwd+bwd |", "|" + "---|" * 11]
    for r in rows:
        opts = ", ".join(f"{k}={v}" for k, v in r.get("options", {}).items()) or "—"
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
            f"{1e3 * r['fwd_s']:.0f} | {1e3 * r['fwdbwd_s']:.0f} | {_fmt(speed)}× | {r['fwdbwd_peak_mb']:.0f} | "
            f"{_fmt(mem, 2)} | {_fmt(r.get('fwdbwd_xla_temp_mb'), 4)} | {pct} |")
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


def malloc_of(rows):
    """The malloc the workers reported running under (see malloc_preload)."""
    return next((r["malloc"] for r in rows if "malloc" in r), "?")


def _cpu_name():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


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


def write(rows, args, wall_s, gemm, out, name="bench"):
    os.makedirs(out, exist_ok=True)
    text = report(rows, args, wall_s, gemm)
    with open(os.path.join(out, f"{name}.md"), "w") as f:
        f.write(text)
    write_csv(rows, os.path.join(out, f"{name}.csv"))
    plot(rows, os.path.join(out, f"{name}.png"))
    return text


def write_csv(rows, path):
    keys = sorted({k for r in rows for k in r})
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=keys)
        w.writeheader()
        for r in rows:
            w.writerow({k: json.dumps(v) if isinstance(v, dict) else v for k, v in r.items()})


def save_rows(args, rows):
    """Append raw rows to OUT/NAME.jsonl as they come, so a long run is never lost."""
    if args.out:
        os.makedirs(args.out, exist_ok=True)
        with open(os.path.join(args.out, f"{args.name}.jsonl"), "a") as f:
            f.writelines(json.dumps(row) + "\n" for row in rows)


def main(args):
    if args.mode == "train-step":
        from attn_zoo.bench import train_step
        return train_step.main(args)
    lengths = sorted(int(n) for n in args.lengths.split(","))
    start = time.time()
    preload = malloc_preload(args.allocator)[1]
    gemm = run_one({"variant": "gemm"}, args.timeout, preload)
    print(f"fp32 GEMM rate: {gemm.get('gemm_gflops', float('nan')):.0f} GFLOP/s", flush=True)
    rows = []
    for name, cfg in configs(args):
        ended = None  # lengths are run in increasing order: past a timeout or OOM, longer ones would fail too
        for n in lengths:
            if ended:
                row = {**cfg, "length": n, "error": f"not run: {ended}"}
            else:
                row = run_one({**cfg, "length": n}, args.timeout, preload)
                err = row.get("error", "")
                if err.startswith(("timeout", "out of memory")):
                    ended = f"{err} at N={n}"
            rows.append(row)
            save_rows(args, [row])
            status = row.get("error") or f"fwd {row['fwd_s']:.3f}s fwd+bwd {row['fwdbwd_s']:.3f}s " \
                                         f"peak {row['fwdbwd_peak_mb']:.0f}MB"
            print(f"{name:>20} N={n:<6} {status}", flush=True)
    wall_s = time.time() - start
    text = write(rows, args, wall_s, gemm, args.out, args.name) if args.out else report(rows, args, wall_s, gemm)
    print(text)
    return rows
