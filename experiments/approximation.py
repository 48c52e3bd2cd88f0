"""How far each approximate low-rank / kernel variant is from dense attention, as its size grows.

    python experiments/approximation.py [--length 1024] [--out experiments/results]

For every variant and every value of the option that controls its size (Performer features,
Nyström landmarks, Linformer projected length, compressed keys N/c), on three input families:
  random  q, k, v ~ N(0, 1): logits q·k/√D ~ N(0, 1), attention spread out;
  small   q, k ~ N(0, 0.5²), v ~ N(0, 1): logits ~ N(0, 0.25²), near-uniform attention;
  peaked  k, v ~ N(0, 1), q_i = k_π(i) + 0.3·noise: each query has one dominant key (logit ≈ 8).
Errors are against `dense` (fp32, B=1, H=4, D=64): mean and max |out − dense| over all entries,
and the relative Frobenius error ‖out − dense‖/‖dense‖. Random-feature variants are averaged over
3 draws. Untrained parameters: Linformer's E, F are random Gaussian (its approximation guarantee
is for JL-type projections); compressed uses mean-pooling kernels (init='mean'). Writes
approximation.md and approximation.png.
"""
from __future__ import annotations

import argparse
import os
import platform
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

from attn_zoo import attention
from attn_zoo.attention.variants import dense

H, D = 4, 64
KINDS = ("random", "small", "peaked")


def inputs(kind, n, seed=0):
    r = np.random.RandomState(seed)
    k, v = r.randn(1, n, H, D), r.randn(1, n, H, D)
    if kind == "random":
        q = r.randn(1, n, H, D)
    elif kind == "small":
        q, k = 0.5 * r.randn(1, n, H, D), 0.5 * k
    else:
        q = k[:, r.permutation(n)] + 0.3 * r.randn(1, n, H, D)
    return tuple(jnp.asarray(x, jnp.float32) for x in (q, k, v))


def sweeps(n):
    """(variant, label, size option, sizes, fixed options, size -> options, number of draws)."""
    pow2 = lambda lo: [s for s in (2 ** i for i in range(20)) if lo <= s <= n]  # noqa: E731
    return [
        ("performer", "performer (features M)", pow2(16), lambda s: {"num_features": s}, 3),
        ("nystrom", "nystrom (landmarks m, 6 pinv iters)", pow2(4), lambda s: {"num_landmarks": s}, 1),
        ("nystrom", "nystrom (landmarks m, 30 pinv iters)", pow2(4),
         lambda s: {"num_landmarks": s, "pinv_iters": 30}, 1),
        ("linformer", "linformer (projected rows k, random E, F)", pow2(16),
         lambda s: {"proj_dim": s, "max_length": n}, 3),
        ("compressed", "compressed (compressed keys N/c, mean kernel)", pow2(16),
         lambda s: {"compression": n // s, "init": "mean"}, 1),
    ]


def errors(out, ref):
    d = np.abs(np.asarray(out, np.float64) - np.asarray(ref, np.float64))
    return d.mean(), d.max(), np.linalg.norm(d) / np.linalg.norm(np.asarray(ref, np.float64))


def run(n):
    rows = []
    for kind in KINDS:
        q, k, v = inputs(kind, n)
        ref = jax.jit(lambda q, k, v: dense.attention({}, q, k, v))(q, k, v)
        for name, label, sizes, opts_of, draws in sweeps(n):
            spec = attention.get(name)
            for size in sizes:
                opts = opts_of(size)
                f = jax.jit(lambda p, q, k, v: spec.apply(p, q, k, v, **opts))
                errs = [errors(f(spec.init(jax.random.PRNGKey(d), q, k, v, **opts), q, k, v), ref)
                        for d in range(draws)]
                mean, mx, rel = np.mean(errs, axis=0)
                rows.append((kind, label, size, mean, mx, rel))
                print(f"{kind:7s} {label:48s} {size:5d}  mean {mean:.2e}  max {mx:.2e}  rel {rel:.2e}",
                      flush=True)
        for fmap in ("elu", "relu"):  # no size option: a different kernel, not an approximation
            out = attention.get("linear").apply({}, q, k, v, feature_map=fmap)
            rows.append((kind, f"linear ({fmap}; no size option)", n, *errors(out, ref)))
        lim = attention.get("linformer").exact_limit(n, n)
        p = attention.get("linformer").init(jax.random.PRNGKey(0), q, k, v, **lim)
        out = attention.get("linformer").apply(p, q, k, v, **lim)
        rows.append((kind, "linformer (k = N, E = F = I: exact limit)", n, *errors(out, ref)))
    return rows


def plot(rows, path):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(17, 4.8), sharey=True)
    for ax, kind in zip(axes, KINDS):
        labels = [lab for lab in dict.fromkeys(r[1] for r in rows) if "linear" not in lab and "exact" not in lab]
        for lab in labels:
            pts = [(r[2], r[3], r[4]) for r in rows if r[0] == kind and r[1] == lab]
            x, mean, mx = map(np.array, zip(*pts))
            line, = ax.plot(x, mean, "o-", label=lab)
            ax.plot(x, mx, "--", color=line.get_color(), alpha=0.5)
        for r in rows:
            if r[0] == kind and r[1].startswith("linear (elu"):
                ax.axhline(r[3], color="gray", ls=":", label="linear elu+1 (mean)")
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xlabel("size: features / landmarks / projected rows / compressed keys")
        ax.set_title(f"{kind} inputs (solid: mean |err|, dashed: max)")
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("|out − dense|")
    axes[-1].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--length", type=int, default=1024)
    ap.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "results"))
    args = ap.parse_args(argv)
    start = time.time()
    rows = run(args.length)
    wall = time.time() - start
    os.makedirs(args.out, exist_ok=True)
    plot(rows, os.path.join(args.out, "approximation.png"))
    cmd = "python " + " ".join([os.path.relpath(sys.argv[0])] + sys.argv[1:]) if argv is None else str(argv)
    lines = [
        "# Approximation error against dense attention",
        "",
        f"Command: `{cmd}`  ",
        f"Machine: {platform.machine()} {platform.processor() or ''} {os.cpu_count()} CPUs, "
        f"{jax.devices()[0].platform}, jax {jax.__version__}  ",
        f"Wall time: {wall:.0f} s. N = L = S = {args.length}, B = 1, H = {H}, D = {D}, fp32, no padding.",
        "",
        __doc__.split("\n\n", 2)[2].strip(),
        "",
        "| inputs | variant (size option) | size | mean abs err | max abs err | rel. Frobenius |",
        "|---|---|---:|---:|---:|---:|",
    ]
    lines += [f"| {k} | {lab} | {s} | {m:.2e} | {x:.2e} | {r:.2e} |" for k, lab, s, m, x, r in rows]
    lines += ["", "![approximation error](approximation.png)", ""]
    with open(os.path.join(args.out, "approximation.md"), "w") as f:
        f.write("\n".join(lines))
    print(f"wrote {args.out}/approximation.md and .png in {wall:.0f} s")


if __name__ == "__main__":
    main()
