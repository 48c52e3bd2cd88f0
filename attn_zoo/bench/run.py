"""`attn-zoo bench`: the benchmark's driver; runs a suite's configurations and writes its report.

Each (variant, length) runs in a fresh process (`python -m attn_zoo.bench.worker`) so that peak
memory is its own and an out-of-memory kill is reported as such while the run goes on; lengths run
shortest first. Workers run under a caching malloc (tcmalloc or jemalloc, LD_PRELOAD) when one is
installed (see common.ALLOCATORS). The suites (attention_alone, train_step) say what is measured
and build the reports; ratios in a report compare numbers taken in the same run. The decode suite
(`bench/decode.py`) runs in this process.
"""
from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time

from attn_zoo.bench import attention_alone, decode, train_step
from attn_zoo.bench.common import malloc_preload, save_rows, write_csv


def _last_error(stderr):
    """The exception line of a worker's traceback (JAX prints a notice after it) or the fatal error
    faulthandler printed, else the last line."""
    lines = [line.strip() for line in stderr.strip().splitlines() if line.strip()]
    errors = [line for line in lines if re.match(r"^([\w.]+(Error|Exception)\b|Fatal Python error)", line)]
    return (errors or lines or [""])[-1]


def _exit_status(returncode):
    """'exit status N', or the signal that ended the process ('killed by SIGSEGV')."""
    if returncode < 0:
        try:
            return f"killed by {signal.Signals(-returncode).name}"
        except ValueError:
            return f"killed by signal {-returncode}"
    return f"exit status {returncode}"


def run_one(cfg, timeout, preload=None):
    """Run the worker for one configuration (with `preload` as LD_PRELOAD, see
    common.malloc_preload); failures come back as {'error': ...}."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "PYTHONFAULTHANDLER": "1"}  # a crash prints its stack
    if preload:
        env["LD_PRELOAD"] = " ".join(filter(None, [preload, env.get("LD_PRELOAD")]))
    try:
        proc = subprocess.run([sys.executable, "-m", "attn_zoo.bench.worker", json.dumps(cfg)],
                              capture_output=True, text=True, timeout=timeout, env=env)
    except subprocess.TimeoutExpired:
        return {**cfg, "error": f"timeout > {timeout:.0f}s"}
    if proc.returncode != 0:
        oom = proc.returncode in (-9, 137) or "RESOURCE_EXHAUSTED" in proc.stderr or "MemoryError" in proc.stderr
        if oom:
            return {**cfg, "error": "out of memory"}
        why = _last_error(proc.stderr)[:200] or _exit_status(proc.returncode)
        return {**cfg, "error": f"failed: {why}"}
    return json.loads(proc.stdout.strip().splitlines()[-1])


def write(rows, args, wall_s, gemm, out, name="bench"):
    """The attention suite's report as OUT/NAME.md, its rows as NAME.csv, its plot as NAME.png;
    returns the report's text."""
    os.makedirs(out, exist_ok=True)
    text = attention_alone.report(rows, args, wall_s, gemm)
    with open(os.path.join(out, f"{name}.md"), "w") as f:
        f.write(text)
    write_csv(rows, os.path.join(out, f"{name}.csv"))
    attention_alone.plot(rows, os.path.join(out, f"{name}.png"))
    return text


def main(args):
    """Run the suite args.mode names ('attention', 'train-step' or 'decode'); returns its rows."""
    if args.mode == "train-step":
        return run_train_step(args)
    if args.mode == "decode":  # one process (see bench/decode.py)
        return decode.run(args)
    return run_attention(args)


def run_attention(args):
    lengths = sorted(int(n) for n in args.lengths.split(","))
    start = time.time()
    preload = malloc_preload(args.allocator)[1]
    gemm = run_one({"variant": "gemm"}, args.timeout, preload)
    print(f"fp32 GEMM rate: {gemm.get('gemm_gflops', float('nan')):.0f} GFLOP/s", flush=True)
    rows = []
    for name, cfg in attention_alone.configs(args):
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
    text = (write(rows, args, wall_s, gemm, args.out, args.name) if args.out
            else attention_alone.report(rows, args, wall_s, gemm))
    print(text)
    return rows


def run_train_step(args):
    start = time.time()
    preload = malloc_preload(args.allocator)[1]
    rounds = []
    for r in range(args.rounds):  # whole passes, so a slow spell of the machine hits every variant
        rows = []
        for name, cfg in train_step.configs_for(args):
            for n in [int(x) for x in args.lengths.split(",")]:
                row = run_one({**cfg, "length": n}, args.timeout, preload)
                rows.append({**row, "round": r})
                save_rows(args, [rows[-1]])
                status = row.get("error") or f"step {row['step_s']:.3f}s peak {row['peak_mb']:.0f}MB"
                print(f"{name:>20} N={n:<6} round {r} {status}", flush=True)
        rounds.append(rows)
    rows = train_step.merge_rounds(rounds)
    text = train_step.report(rows, args, time.time() - start)
    if args.out:
        with open(os.path.join(args.out, f"{args.name}.md"), "w") as f:
            f.write(text)
        write_csv(rows, os.path.join(args.out, f"{args.name}.csv"))
    print(text)
    return rows
