"""The decode suite (`attn-zoo bench --mode decode`): token-by-token decoding against context length.

Per decodable variant (its `bench_options`) and context N: the median wall time of one jitted
`spec.decode_step` (cache donated, after warmup steps) on a cache sized for N tokens, the cache's
bytes per layer and sequence (all its leaves: keys, values, states, position tables) beside the
registry's `state_size` (floats, as bytes of the dtype), and the parallel causal forward's time
per token at the same N (`spec.apply(causal=True)` on N tokens, divided by N; only up to
--parallel-max, as the quadratic variants' forward outgrows memory). The decoders do the same
fixed-shape work at every position (a KV cache's step reads all N slots, masked), so a step timed
from an empty cache costs what it costs at position N − 1. One process, variants one after another
(fewer timed steps for a faster run: --repeats).
"""
from __future__ import annotations

import os
import time

from attn_zoo.bench.common import fmt, median_seconds, options_cell, report_head, write_csv

WARMUP = 2  # untimed steps after the compiling one


def configs(args):
    """[(name, options)]: the decodable variants among args.variants ('all': every one)."""
    from attn_zoo import attention

    names = attention.names() if args.variants == "all" else [v for v in args.variants.split(",") if v]
    out = []
    for name in names:
        spec = attention.get(name)
        if not spec.decodable:
            print(f"{name}: not decodable ({spec.why_not_decodable()}), skipped")
            continue
        out.append((name, dict(spec.bench_options)))
    return out


def measure(name, options, n, *, batch, heads, head_dim, dtype, repeats, parallel_max) -> dict:
    """One row: decode step seconds, cache bytes, parallel causal forward seconds per token."""
    import jax
    import jax.numpy as jnp

    from attn_zoo import attention
    from attn_zoo.attention.core import decode

    spec = attention.get(name)
    B, H, D, dt = batch, heads, head_dim, jnp.dtype(dtype)
    rng = jax.random.key(0) if spec.needs_rng else None
    full = [jax.random.normal(jax.random.key(i), (B, n, H, D), dt) for i in range(3)]
    params = spec.init(jax.random.key(1), *full, **options)
    cache = spec.decode_init(params, B, n, H, H, D, D, dt, rng=rng, **options)
    row = {"variant": name, "options": options, "length": n,
           "cache_bytes": sum(x.nbytes for x in jax.tree.leaves(cache)) // B,
           "cache_floats": decode.cache_floats(cache, B)}
    claim = spec.decoding_state(n, H, D, **options)
    row["state_size_bytes"] = None if claim is None else claim * dt.itemsize
    step = jax.jit(lambda p, c, q, k, v: spec.decode_step(p, c, q, k, v, **options), donate_argnums=1)
    q, k, v = (x[:, :1] for x in full)
    start = time.perf_counter()
    out, cache = step(params, cache, q, k, v)
    jax.block_until_ready(out)
    row["decode_compile_s"] = time.perf_counter() - start
    state = {"cache": cache}

    def one():
        o, state["cache"] = step(params, state["cache"], q, k, v)
        jax.block_until_ready(o)

    for _ in range(WARMUP):
        one()
    row["decode_step_s"] = median_seconds(one, min(repeats, max(n - 1 - WARMUP, 1)))
    del state
    if n <= parallel_max:
        fwd = jax.jit(lambda p, q, k, v: spec.apply(p, q, k, v, causal=True, rng=rng, **options))
        start = time.perf_counter()
        jax.block_until_ready(fwd(params, *full))
        row["parallel_compile_s"] = time.perf_counter() - start
        row["parallel_per_token_s"] = median_seconds(
            lambda: jax.block_until_ready(fwd(params, *full)), max(1, min(repeats, 3))) / n
    row["device"] = jax.devices()[0].platform
    return row


def run(args):
    """Measure every (variant, length), shortest first; a failing one is an error row."""
    lengths = sorted(int(x) for x in args.lengths.split(","))
    start, rows = time.time(), []
    sizes = dict(batch=args.batch, heads=args.heads, head_dim=args.head_dim, dtype=args.dtype,
                 repeats=args.repeats, parallel_max=args.parallel_max)
    for name, options in configs(args):
        for n in lengths:
            try:
                row = measure(name, options, n, **sizes)
            except (ValueError, TypeError, MemoryError) as e:  # e.g. a length-limited variant
                row = {"variant": name, "options": options, "length": n, "error": str(e).split("\n")[0][:200]}
            rows.append(row)
            status = row.get("error") or (f"step {1e3 * row['decode_step_s']:.3f} ms, cache "
                                          f"{row['cache_bytes'] / 2**20:.2f} MiB")
            print(f"{name:>20} N={n:<6} {status}", flush=True)
    text = report(rows, args, time.time() - start)
    if args.out:
        os.makedirs(args.out, exist_ok=True)
        with open(os.path.join(args.out, f"{args.name}.md"), "w") as f:
            f.write(text)
        write_csv(rows, os.path.join(args.out, f"{args.name}.csv"))
    print(text)
    return rows


def _mib(x):
    return "—" if x is None else f"{x / 2**20:.3g}"


def report(rows, args, wall_s) -> str:
    """Markdown: machine, command, one row per (variant, length)."""
    lines = report_head("decode benchmark", rows) + [
        f"Settings: B={args.batch}, H={args.heads}, D={args.head_dim}, {args.dtype}; decode step: "
        f"median of {args.repeats} jitted steps after {WARMUP} warmup steps, cache donated; parallel: "
        f"causal apply on N tokens (median of {max(1, min(args.repeats, 3))} calls) / N, up to "
        f"N={args.parallel_max}; wall time {wall_s / 60:.1f} min.",
        "Cache MiB: every leaf of the decoder's cache per sequence and layer (a KV cache is sized "
        "for N tokens); state_size MiB: the registry's floats a decoder needs after N tokens.",
        "", "| variant | options | N | decode ms/token | parallel ms/token | decode / parallel | "
        "cache MiB | state_size MiB | compile s (decode / parallel) |", "|" + "---|" * 9]
    for r in rows:
        opts = options_cell(r)
        if "error" in r:
            lines.append(f"| {r['variant']} | {opts} | {r['length']} | {r['error']} ||||||")
            continue
        par = r.get("parallel_per_token_s")
        ratio = r["decode_step_s"] / par if par else None
        lines.append(
            f"| {r['variant']} | {opts} | {r['length']} | {fmt(1e3 * r['decode_step_s'])} | "
            f"{fmt(None if par is None else 1e3 * par)} | {fmt(ratio)} | {_mib(r['cache_bytes'])} | "
            f"{_mib(r['state_size_bytes'])} | {r['decode_compile_s']:.1f} / "
            f"{fmt(r.get('parallel_compile_s'), 2)} |")
    return "\n".join(lines) + "\n"
