"""What the benchmark's driver, worker and both suites share; no JAX here, not even lazily.

The driver picks the allocator, saves rows and writes CSV before and between its workers, so this
module must not start JAX in the driver's process. The workers time and measure memory with the same
helpers, so the attention suite and the train-step suite measure alike: a median of several calls,
and the process's peak resident memory during one call above its resident memory before it.
"""
from __future__ import annotations

import csv
import ctypes
import ctypes.util
import json
import os
import platform
import statistics
import sys
import time

# Workers run under a caching malloc (LD_PRELOAD) when one is installed: glibc's malloc hands
# XLA:CPU's large per-call temp buffers back to the OS, so every call faults them in again, page by
# page, which slows the baselines with big temps most.
# name -> (library to find, its Debian package)
ALLOCATORS = {"tcmalloc": ("tcmalloc_minimal", "libtcmalloc-minimal4"), "jemalloc": ("jemalloc", "libjemalloc2")}
# (malloc, a symbol only it exports, the call that returns its free pages to the OS)
MALLOCS = (("tcmalloc", "MallocExtension_ReleaseFreeMemory", ()),
           ("jemalloc", "mallctl", (b"arena.4096.purge", None, None, None, 0)),  # all arenas
           ("system", "malloc_trim", (0,)))  # glibc


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


def malloc_name():
    """The malloc this process runs under (as LD_PRELOAD made it), from the symbols it exports."""
    lib = ctypes.CDLL(None)
    return next((name for name, symbol, _ in MALLOCS[:-1] if hasattr(lib, symbol)), "system")


def run_under_malloc(choice, argv) -> None:
    """Re-execute this command (`python -m attn_zoo.cli *argv`) with `choice`'s malloc preloaded
    (see malloc_preload), unless it already runs under it or choice is 'system'. Returns only
    when nothing needs doing. glibc's malloc unmaps XLA:CPU's large per-step temp buffers, so
    every step faults them in again."""
    name, lib = malloc_preload(choice)
    if lib is None or malloc_name() == name or os.environ.get("ATTN_ZOO_MALLOC_EXEC"):
        return
    preload = ":".join(filter(None, [lib, os.environ.get("LD_PRELOAD", "")]))
    env = {**os.environ, "LD_PRELOAD": preload, "ATTN_ZOO_MALLOC_EXEC": "1"}
    os.execve(sys.executable, [sys.executable, "-m", "attn_zoo.cli", *argv], env)


def malloc_of(rows):
    """The malloc the workers reported running under (see malloc_preload)."""
    return next((r["malloc"] for r in rows if "malloc" in r), "?")


def _release_free_memory():
    """Return memory the allocator keeps for reuse to the OS, so that RSS before a call excludes
    it: tcmalloc and jemalloc keep freed pages resident (glibc unmaps large blocks itself)."""
    lib = ctypes.CDLL(None)
    for _, symbol, args in MALLOCS:
        if hasattr(lib, symbol):
            getattr(lib, symbol)(*args)


def _rss_mb(field):
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    return float("nan")


def peak_rss_delta_mb(call):
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


def median_seconds(call, repeats):
    """Median wall seconds of `repeats` calls of `call()`."""
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        call()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def cpu_name():
    """The CPU's model name, for a report's Machine line."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def report_head(title, rows) -> list[str]:
    """A report's first lines: its title, the command that made it and the machine it ran on."""
    device = next((r["device"] for r in rows if "device" in r), "?")
    return [f"# {title}", "",
            f"Command: `attn-zoo bench {' '.join(sys.argv[2:]) if len(sys.argv) > 1 else ''}`".rstrip(),
            f"Machine: {cpu_name()}, {os.cpu_count()} cores, {platform.python_version()}, device {device}"]


def options_cell(row) -> str:
    """A row's options as a table cell: 'k=v, ...', or '—' for none."""
    return ", ".join(f"{k}={v}" for k, v in row.get("options", {}).items()) or "—"


def fmt(x, digits=3):
    """`x` to `digits` significant digits; '—' for None."""
    return "—" if x is None else f"{x:.{digits}g}"


def save_rows(args, rows):
    """Append raw rows to OUT/NAME.jsonl as they come, so a long run is never lost."""
    if args.out:
        os.makedirs(args.out, exist_ok=True)
        with open(os.path.join(args.out, f"{args.name}.jsonl"), "a") as f:
            f.writelines(json.dumps(row) + "\n" for row in rows)


def write_csv(rows, path):
    """One CSV row per row, the union of their keys as columns (sorted); dicts as JSON."""
    keys = sorted({k for r in rows for k in r})
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=keys)
        w.writeheader()
        for r in rows:
            w.writerow({k: json.dumps(v) if isinstance(v, dict) else v for k, v in r.items()})
