"""The train-step suite (`attn-zoo bench --mode train-step`): LRA's efficiency table, a whole model
training step per variant.

LRA timed training steps of its byte-level text model (4 layers, emb 256, qkv 256, mlp 1024, 4 heads)
at input lengths 1K-4K and reported steps/s and peak memory. Here every registered variant trains
that model (`--config`, default configs/text.py, with the config's own attention options) on a
random batch; `measure` runs each (variant, length) in its own worker process, as in the attention
suite, and the driver's passes over all variants are merged by `merge_rounds`. The sequence the
attention sees is exactly N long: the input is N minus the model's CLS/global tokens.

Each step's FLOPs are set against the machine's fp32 GEMM rate measured in the same worker process
(a 2048³ product timed before and after the steps): XLA's cost analysis of the compiled step counts
what XLA runs (its matmuls and elementwise ops), and the attention inside the fused CPU kernel (a
custom call, which XLA counts as unknown) is counted analytically from each call's shapes and band
(`kernel_flops`). The fraction achieved / GEMM is how far a step is from this machine's rate.
"""
from __future__ import annotations

import math
import os
import re
import statistics
import sys
import time

from attn_zoo.bench.common import cpu_name, fmt, malloc_of, median_seconds, peak_rss_delta_mb

# LRA paper, Table 2 (byte-level text, batch 32 on 4x4 TPU v3): steps/s at 1K/2K/3K/4K and peak
# memory per device (GB) at 1K and 4K, under the attn_zoo name of each model.
LRA_PUBLISHED = {
    "dense": ((8.1, 4.9, 2.3, 1.4), (0.85, 9.48)),
    "local": ((9.2, 8.4, 7.4, 7.4), (0.42, 1.37)),
    "linformer": ((9.3, 9.1, 8.5, 7.7), (0.37, 0.99)),
    "reformer": ((4.4, 2.2, 1.5, 1.1), (0.48, 2.28)),
    "sinkhorn": ((9.1, 7.9, 6.6, 5.3), (0.47, 1.48)),
    "synthesizer": ((8.7, 5.7, 6.6, 1.9), (0.65, 6.99)),
    "bigbird": ((7.4, 3.9, 2.7, 1.5), (0.77, 2.88)),
    "linear": ((9.1, 9.3, 8.6, 7.8), (0.37, 1.03)),
    "performer": ((9.5, 9.4, 8.7, 8.0), (0.37, 1.06)),
}
LRA_LENGTHS = (1024, 2048, 3072, 4096)
REFERENCE = "dense"
# The same model with attention replaced by out = v (projections, MLP, dropout, optimizer all kept):
# what the rest of the step costs, so dense / none bounds every variant's speedup on this machine.
CEILING = "none"


def _register_ceiling():
    from attn_zoo import attention

    if CEILING not in attention.names():
        attention.register(CEILING, family="dense", exact=False, supports_causal=True,
                           impl=lambda params, q, k, v, *, key_mask, causal, rng: v, defaults={},
                           complexity="O(N)", description="no attention: out = v")


# The fused CPU kernel's custom-call targets (kernels/flash_cpu.py).
FLASH_FORWARD, FLASH_BACKWARD = "attn_zoo_flash_forward", "attn_zoo_flash_backward"
GEMM_N = 2048  # the yardstick: an fp32 GEMM_N³ product, as the attention suite's `gemm`
GEMM_CALLS = 3  # timed before and after the steps each


def measure(cfg):
    """Compile seconds, median seconds per step, peak RSS of the first step, the step's FLOPs and
    the fp32 GEMM rate measured in this process around the timed steps, for one variant."""
    import jax

    call, result = compiled_step(cfg)
    gemm, gemm_flops = gemm_call(GEMM_N, GEMM_N, GEMM_N)
    m, k, n = result.pop("shape_gemm")
    shape, shape_flops = gemm_call(m, k, n)
    gemm()
    shape()
    result["peak_mb"] = peak_rss_delta_mb(call)
    before = [median_seconds(gemm, 1) for _ in range(GEMM_CALLS)]
    result["step_s"] = median_seconds(call, cfg["repeats"])
    after = [median_seconds(gemm, 1) for _ in range(GEMM_CALLS)]
    rates = [gemm_flops / t / 1e9 for t in before + after]
    result["gemm_gflops"] = statistics.median(rates)
    result["gemm_gflops_range"] = [min(rates), max(rates)]
    result["fraction"] = step_rates(result)["fraction"]  # of the GEMM rate in this same process
    result["shape_gemm"] = [m, k, n]
    result["shape_gemm_gflops"] = shape_flops / min(median_seconds(shape, 1) for _ in range(7)) / 1e9
    result["device"] = jax.devices()[0].device_kind
    return result


def gemm_call(m, k, n):
    """(call, flops): `call()` runs one jitted fp32 [m, k] x [k, n] product and waits for it."""
    import jax
    import jax.numpy as jnp

    a, b = jnp.ones((m, k), jnp.float32), jnp.ones((k, n), jnp.float32)
    compiled = jax.jit(lambda a, b: a @ b).lower(a, b).compile()
    return (lambda: jax.block_until_ready(compiled(a, b))), 2 * m * k * n


def band_pairs(L, S, dlo, dhi):
    """(query i, key j) pairs with dlo <= i - j <= dhi, 0 <= i < L, 0 <= j < S: what one head of
    one fused-kernel call attends to (blockwise: the whole L×S; local: the band |i - j| <= w)."""
    total = 0
    for i in range(L):
        lo, hi = max(0, i - dhi), min(S - 1, i - dlo)
        total += max(0, hi - lo + 1)
    return total


def attention_flops(B, H, pairs, D, Dv, backward=False):
    """FLOPs of exact attention over `pairs` (query, key) pairs per head: forward Q·Kᵀ and P·V,
    2·(D + Dv) per pair; backward recomputes Q·Kᵀ and forms dP = dO·Vᵀ, dV = Pᵀ·dO, dQ = dS·K and
    dK = dSᵀ·Q, 2·(3·D + 2·Dv) per pair (2.5× the forward when Dv = D). Softmax's elementwise
    work is not counted (as in FlashAttention's FLOP counts)."""
    per_pair = 2 * (3 * D + 2 * Dv) if backward else 2 * (D + Dv)
    return B * H * pairs * per_pair


_SHAPE = re.compile(r"[a-z0-9]+\[([0-9,]*)\]")


def kernel_flops(hlo_text):
    """(FLOPs, calls) of the fused CPU attention kernel's custom calls in a compiled HLO text,
    counted analytically from each call's operand shapes (q [..., H, L, D], k [..., H, S, D],
    v [..., H, S, Dv], or [..., N, H, D] when its tokens_first attribute is set) and its band
    (dlo, dhi), all keys unmasked. XLA's cost analysis cannot see inside a custom call."""
    flops, calls = 0, 0
    for line in hlo_text.splitlines():
        target = re.search(r'custom_call_target="([^"]+)"', line)
        if not target or target.group(1) not in (FLASH_FORWARD, FLASH_BACKWARD):
            continue
        operands = re.search(r"operand_layout_constraints=\{(.*?)\}, api_version", line)
        config = dict(re.findall(r"(\w+) = (-?\d+) : i64", line))
        if operands is None or not {"dlo", "dhi"} <= config.keys():
            raise ValueError(f"cannot read the fused kernel's shapes or band from: {line[:300]}")
        shapes = [tuple(int(d) for d in m.split(",") if d) for m in _SHAPE.findall(operands.group(1))]
        q, k, v = shapes[:3]
        n, h = (-3, -2) if int(config.get("tokens_first", 0)) else (-2, -3)
        B = math.prod(q[:-3])
        H, L, S, D, Dv = q[h], q[n], k[n], q[-1], v[-1]
        pairs = band_pairs(L, S, int(config["dlo"]), int(config["dhi"]))
        flops += attention_flops(B, H, pairs, D, Dv, backward=target.group(1) == FLASH_BACKWARD)
        calls += 1
    return flops, calls


def heavy_loops(hlo_text):
    """While loops of an HLO text whose body holds a dot, a convolution or a custom call (directly
    or in a computation it calls) and runs more than once: XLA's cost analysis counts such a body
    once, so it undercounts them (the RNG's few-round loops on two words are not counted here)."""
    comps, name = {}, None
    for line in hlo_text.splitlines():
        head = re.match(r"^(?:ENTRY )?%?([\w.\-]+) .*\{$", line)
        if head:
            name = head.group(1)
            comps[name] = []
        elif name is not None:
            comps[name].append(line)
    called = {c: set(re.findall(r"(?:calls|to_apply|body|condition|computations?)=\{?%?([\w.\-]+)",
                                 "\n".join(lines))) for c, lines in comps.items()}
    direct = {c for c, lines in comps.items()
              if any(re.search(r" (dot|convolution|custom-call)\(", l) for l in lines)}

    def heavy(c, seen=()):
        return c in direct or any(d not in seen and heavy(d, (*seen, c)) for d in called.get(c, ()))

    count = 0
    for line in hlo_text.splitlines():
        loop = re.search(r" while\(.*body=%?([\w.\-]+)", line)
        trips = re.search(r'"known_trip_count":\{"n":"(\d+)"\}', line)
        if loop and (trips is None or int(trips.group(1)) > 1) and heavy(loop.group(1)):
            count += 1
    return count


def step_flops(compiled):
    """{xla_gflop, kernel_gflop, kernel_calls, custom_calls, loops} of a compiled step: XLA's cost
    analysis (each custom call, which it counts as -1, added back) and the fused kernel's analytic
    count (NaN when a call cannot be read). `loops`: see heavy_loops."""
    cost = compiled.cost_analysis()
    cost = cost[0] if isinstance(cost, (list, tuple)) else cost
    text = compiled.as_text()
    custom = text.count(" custom-call(")
    try:
        kflops, kcalls = kernel_flops(text)
    except ValueError:  # an HLO text this parser does not know: the step is still timed
        kflops, kcalls = float("nan"), text.count(f'custom_call_target="{FLASH_FORWARD}"')
    loops = heavy_loops(text)
    return {"xla_gflop": (float(cost.get("flops", 0.0)) + custom) / 1e9, "kernel_gflop": kflops / 1e9,
            "kernel_calls": kcalls, "custom_calls": custom, "loops": loops}


def compiled_step(cfg):
    """(call, {compile_s, num_params, model, shape_gemm, step_flops' keys}): `call()` runs one
    jitted training step of cfg["variant"] at cfg["length"] on a random batch of cfg["batch"] and
    waits for it; `call.compiled` is the compiled step."""
    import jax
    import numpy as np

    from attn_zoo import configs
    from attn_zoo.train.compare import variant_spec
    from attn_zoo.data.text import VOCAB_SIZE
    from attn_zoo.models.transformer import Transformer, extra_tokens
    from attn_zoo.train import steps

    if cfg["variant"] == CEILING:
        _register_ceiling()  # in this worker process only: never part of the registry users see
    config = configs.load(variant_spec(cfg["config"], cfg["variant"]), [f"--config.train.batch_size={cfg['batch']}"])
    n_in = cfg["length"] - extra_tokens(config.model)
    config.data.max_length = n_in  # options tied to the length follow it (configs.finish)
    from flax import nnx

    model = Transformer(config.model, config.attention.to_dict(), vocab_size=VOCAB_SIZE, num_classes=2,
                        max_length=n_in, rngs=nnx.Rngs(0))
    tx = steps.optimizer(config.train)
    graphdef, state = steps.create_state(model, tx)
    del model
    r = np.random.RandomState(0)
    B = cfg["batch"]
    batch = {"inputs": r.randint(0, VOCAB_SIZE, (B, n_in)).astype(np.int32),
             "mask": np.ones((B, n_in), bool),
             # a token head (copy, recall) scores every position: labels [B, N]
             "labels": r.randint(0, 2, (B, n_in) if config.model.head == "token" else (B,)).astype(np.int32),
             "weight": np.ones(B, np.float32)}
    step = jax.jit(steps.make_train_step(graphdef, tx, config, config.model.head), donate_argnums=0)
    t = time.perf_counter()
    compiled = step.lower(state, batch).compile()
    m = config.model
    result = {"compile_s": time.perf_counter() - t,
              "num_params": int(sum(x.size for x in jax.tree.leaves(state["params"]))),
              "model": f"{m.num_layers} layer{'s' * (m.num_layers != 1)}, emb {m.emb_dim}, qkv {m.qkv_dim}, "
                       f"mlp {m.mlp_dim}, {m.num_heads} heads",
              # the model's widest product: the MLP's input layer over every token of the batch
              "shape_gemm": [B * cfg["length"], m.emb_dim, m.mlp_dim],
              **step_flops(compiled)}
    holder = [state]

    def call():
        holder[0], metrics = compiled(holder[0], batch)
        jax.block_until_ready(metrics)

    call.compiled = compiled  # for profiling (experiments/profile_step.py): its HLO text
    return call, result


def configs_for(args):
    from attn_zoo import attention

    names = attention.names() if args.variants == "all" else [v for v in args.variants.split(",") if v]
    # the reference and the ceiling first, so a partial run has them
    names = [REFERENCE, CEILING] + [n for n in names if n not in (REFERENCE, CEILING)]
    base = dict(mode="train-step", config=args.config, batch=args.batch, repeats=args.repeats)
    return [(name, {**base, "variant": name}) for name in names]


def report(rows, args, wall_s):
    ref = {r["length"]: r for r in rows if r["variant"] == REFERENCE and "error" not in r}
    lines = [
        "# training-step efficiency (LRA's efficiency table)", "",
        f"Command: `attn-zoo bench {' '.join(sys.argv[2:])}`",
        f"Machine: {cpu_name()}, {os.cpu_count()} cores, device "
        f"{next((r['device'] for r in rows if 'device' in r), '?')}; malloc: {malloc_of(rows)}; "
        f"wall time {wall_s / 60:.1f} min.",
        f"Model: `{args.config}` ({next((r['model'] for r in rows if 'model' in r), '?')}) with each "
        f"variant's config options, batch {args.batch}, fp32; one AdamW step on a random batch, median of "
        f"{args.repeats} steps in each of {args.rounds} interleaved passes over all variants (the median of the "
        "passes' medians). N = the length the attention sees (input + CLS). Peak MB: process peak RSS "
        "during the first step above RSS before it. Ratios: against `dense` at the same N, in this run. "
        f"`{CEILING}`: the same step with attention replaced by out = v; dense / {CEILING} bounds the speedup "
        "any attention variant can reach in this model on this machine.",
        "", "| variant | N | compile s | step ms | steps/s | speedup vs dense | peak MB | memory vs dense |",
        "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        if "error" in r:
            lines.append(f"| {r['variant']} | {r['length']} | {r['error']} ||||||")
            continue
        base = ref.get(r["length"])
        speed = base["step_s"] / r["step_s"] if base else None
        mem = r["peak_mb"] / base["peak_mb"] if base and base["peak_mb"] > 0 else None
        lines.append(f"| {r['variant']} | {r['length']} | {r['compile_s']:.1f} | {1e3 * r['step_s']:.0f} | "
                     f"{1 / r['step_s']:.2f} | {fmt(speed)}× | {r['peak_mb']:.0f} | {fmt(mem, 2)} |")
    lines += flops_table(rows)
    lines += lra_comparison(rows)
    return "\n".join(lines) + "\n"


def step_rates(row):
    """{total_gflop, gflops, fraction} of a measured row: the step's FLOPs (XLA's count plus the
    fused kernel's), the rate they ran at and that rate over the GEMM rate measured in its worker."""
    total = row["xla_gflop"] + row["kernel_gflop"]
    gflops = total / row["step_s"]
    return {"total_gflop": total, "gflops": gflops,
            "fraction": row.get("fraction", gflops / row["gemm_gflops"])}


def flops_table(rows):
    """Each step's FLOPs and rate against the fp32 GEMM rate measured in the same worker process."""
    rows = [r for r in rows if "error" not in r and "gemm_gflops" in r]
    if not rows:
        return []
    lines = ["", f"Step FLOPs against the machine's rate. XLA: the compiled step's cost analysis (matmuls and "
             f"elementwise ops XLA runs); kernel: the attention inside the fused CPU kernel, which XLA "
             f"cannot see, counted analytically (forward 2·(D + Dv), backward 2·(3·D + 2·Dv) FLOPs per "
             f"computed (query, key) pair and head; softmax not counted). GEMM: an fp32 {GEMM_N}³ product "
             f"timed {GEMM_CALLS} times before and {GEMM_CALLS} after the steps in the same worker process "
             f"(median, range over the calls and rounds); shape GEMM: the model's widest product "
             f"(M×K×N: the MLP input over all tokens) alone, best of 7. GFLOP/s: total / median step. Fraction: "
             f"achieved / GEMM in each worker process, the median over rounds (the machine's load moves "
             f"both together).", "",
             "| variant | N | step ms | GFLOP XLA | GFLOP kernel | GFLOP total | GFLOP/s | GEMM GFLOP/s "
             "(range) | shape GEMM GFLOP/s | fraction of GEMM |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        x = step_rates(r)
        lo, hi = r["gemm_gflops_range"]
        kernel = f"{r['kernel_gflop']:.2f}" if r["kernel_calls"] else "—"
        lines.append(f"| {r['variant']} | {r['length']} | {1e3 * r['step_s']:.0f} | {r['xla_gflop']:.2f} | "
                     f"{kernel} | {x['total_gflop']:.2f} | {x['gflops']:.1f} | {r['gemm_gflops']:.0f} "
                     f"({lo:.0f}–{hi:.0f}) | {r['shape_gemm_gflops']:.0f} | {x['fraction']:.2f} |")
    looped = [r["variant"] for r in rows if r.get("loops")]
    if looped:
        lines += ["", f"XLA's cost analysis counts a loop body once: the step of {', '.join(looped)} runs "
                  "while loops, so its XLA count is low."]
    return lines


def merge_rounds(rounds):
    """One row per (variant, N): the median over rounds of each round's median step (an error in any
    round stands); compile seconds and the GEMM rates likewise, peak memory the largest."""
    import numpy as np

    out = []
    for i, first in enumerate(rounds[0]):
        same = [rows[i] for rows in rounds]
        bad = next((r for r in same if "error" in r), None)
        if bad is not None or len(same) == 1:
            out.append({k: v for k, v in (bad or first).items() if k != "round"})
            continue
        merged = {**{k: v for k, v in first.items() if k != "round"},
                  "step_s": float(np.median([r["step_s"] for r in same])),
                  "step_s_rounds": [r["step_s"] for r in same],
                  "compile_s": float(np.median([r["compile_s"] for r in same])),
                  "peak_mb": max(r["peak_mb"] for r in same)}
        if all("gemm_gflops" in r for r in same):
            merged.update(gemm_gflops=float(np.median([r["gemm_gflops"] for r in same])),
                          gemm_gflops_rounds=[r["gemm_gflops"] for r in same],
                          gemm_gflops_range=[min(r["gemm_gflops_range"][0] for r in same),
                                             max(r["gemm_gflops_range"][1] for r in same)],
                          shape_gemm_gflops=float(np.median([r["shape_gemm_gflops"] for r in same])),
                          fraction=float(np.median([r["fraction"] for r in same])),
                          fraction_rounds=[r["fraction"] for r in same])
        out.append(merged)
    return out


def speedups(rows):
    """{variant: {N: step-time speedup over dense}} from rows measured in one run."""
    ref = {r["length"]: r["step_s"] for r in rows if r["variant"] == REFERENCE and "error" not in r}
    out = {}
    for r in rows:
        if "error" not in r and r["length"] in ref:
            out.setdefault(r["variant"], {})[r["length"]] = ref[r["length"]] / r["step_s"]
    return out


def lra_comparison(rows):
    """Speedup over dense per length, attn_zoo (this run) beside the LRA paper's (TPU v3)."""
    ours = speedups(rows)
    lengths = [n for n in LRA_LENGTHS if any(n in v for v in ours.values())]
    if not lengths:
        return []
    lines = ["", "Speedup over dense, this run beside the LRA paper's (steps/s ratio to its Transformer; "
             "LRA: TPU v3, batch 32):", "",
             "| variant | " + " | ".join(f"{n // 1024}K ours / LRA" for n in lengths) + " |",
             "|---|" + "---|" * len(lengths)]
    for name, per_n in ours.items():
        published = LRA_PUBLISHED.get(name)
        cells = []
        for n in lengths:
            lra = "—"
            if published:
                i = LRA_LENGTHS.index(n)
                lra = f"{published[0][i] / LRA_PUBLISHED[REFERENCE][0][i]:.1f}×"
            cells.append(f"{per_n[n]:.1f}× / {lra}" if n in per_n else f"— / {lra}")
        label = f"{name} (no attention: the ceiling)" if name == CEILING else name
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return lines

