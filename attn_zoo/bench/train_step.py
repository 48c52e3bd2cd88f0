"""The train-step suite (`attn-zoo bench --mode train-step`): LRA's efficiency table, a whole model
training step per variant.

LRA timed training steps of its byte-level text model (4 layers, emb 256, qkv 256, mlp 1024, 4 heads)
at input lengths 1K-4K and reported steps/s and peak memory. Here every registered variant trains
that model (`--config`, default configs/text.py, with the config's own attention options) on a
random batch; `measure` runs each (variant, length) in its own worker process, as in the attention
suite, and the driver's passes over all variants are merged by `merge_rounds`. The sequence the
attention sees is exactly N long: the input is N minus the model's CLS/global tokens.
"""
from __future__ import annotations

import os
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


def measure(cfg):
    """Compile seconds, median seconds per step and peak RSS of the first step for one variant."""
    import jax

    call, result = compiled_step(cfg)
    result["peak_mb"] = peak_rss_delta_mb(call)
    result["step_s"] = median_seconds(call, cfg["repeats"])
    result["device"] = jax.devices()[0].device_kind
    return result


def compiled_step(cfg):
    """(call, {compile_s, num_params}): `call()` runs one jitted training step of cfg["variant"]
    at cfg["length"] on a random batch of cfg["batch"] and waits for it."""
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
             "mask": np.ones((B, n_in), bool), "labels": r.randint(0, 2, (B,)).astype(np.int32),
             "weight": np.ones(B, np.float32)}
    step = jax.jit(steps.make_train_step(graphdef, tx, config, config.model.head), donate_argnums=0)
    t = time.perf_counter()
    compiled = step.lower(state, batch).compile()
    result = {"compile_s": time.perf_counter() - t,
              "num_params": int(sum(x.size for x in jax.tree.leaves(state["params"])))}
    holder = [state]

    def call():
        holder[0], metrics = compiled(holder[0], batch)
        jax.block_until_ready(metrics)

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
        f"Model: `{args.config}` (LRA text: 4 layers, emb 256, qkv 256, mlp 1024, 4 heads) with each "
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
    lines += lra_comparison(rows)
    return "\n".join(lines) + "\n"


def merge_rounds(rounds):
    """One row per (variant, N): the median over rounds of each round's median step (an error in any
    round stands); compile seconds likewise, peak memory the largest."""
    import numpy as np

    out = []
    for i, first in enumerate(rounds[0]):
        same = [rows[i] for rows in rounds]
        bad = next((r for r in same if "error" in r), None)
        if bad is not None or len(same) == 1:
            out.append({k: v for k, v in (bad or first).items() if k != "round"})
            continue
        out.append({**{k: v for k, v in first.items() if k != "round"},
                    "step_s": float(np.median([r["step_s"] for r in same])),
                    "step_s_rounds": [r["step_s"] for r in same],
                    "compile_s": float(np.median([r["compile_s"] for r in same])),
                    "peak_mb": max(r["peak_mb"] for r in same)})
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

