"""Compare variants on one task: train each (per seed, resumable), then a leaderboard and Pareto plot.

    compare("configs/listops.py:smoke", ["dense", "local"], seeds=[0, 1], workdir="runs/cmp")

Each run is an ordinary workdir `<workdir>/<variant>/seed<k>`: a finished one (results.json
present) is summarized without retraining, an interrupted one resumes. `summarize(dirs)` reads any
finished workdirs below `dirs` and writes leaderboard.md / .csv and pareto.png.
"""
from __future__ import annotations

import csv
import glob
import json
import os
import statistics

from attn_zoo import attention, configs

LM_HEADS = ("lm",)


def select_variants(variants, config_spec, overrides=()):
    """Names to train: 'all' = every registered variant that fits the task (causal tasks keep
    causal variants and say which were skipped)."""
    names = attention.names() if variants == "all" else [v for v in variants.split(",") if v]
    if variants != "all":
        return names
    probe = configs.load(variant_spec(config_spec, "dense"), overrides)
    if probe.model.get("head") in LM_HEADS:
        skipped = [n for n in names if not attention.get(n).supports_causal]
        if skipped:
            print(f"causal task: skipping non-causal variants {', '.join(skipped)}")
        names = [n for n in names if attention.get(n).supports_causal]
    return names


def variant_spec(config_spec, variant):
    path, _, arg = config_spec.partition(":")
    presets = [p for p in arg.split(",") if p]
    return f"{path}:{','.join([variant, *presets])}"


def compare(config_spec, variants, seeds, workdir, overrides=(), train_fn=None):
    """Train every (variant, seed) not already finished, then summarize; returns the rows."""
    if train_fn is None:
        from attn_zoo.train import train_and_evaluate as train_fn
    for name in select_variants(variants, config_spec, overrides) if isinstance(variants, str) else variants:
        for seed in seeds:
            run_dir = os.path.join(workdir, name, f"seed{seed}")
            if os.path.exists(os.path.join(run_dir, "results.json")):
                print(f"{name} seed {seed}: finished, summarizing {run_dir}")
                continue
            config = configs.load(variant_spec(config_spec, name),
                                  [*overrides, f"--config.train.seed={seed}"])
            print(f"{name} seed {seed}: training in {run_dir}", flush=True)
            train_fn(config, run_dir)
    return summarize([workdir], out=workdir)


def _finished(dirs):
    found = []
    for d in dirs:
        found += sorted(glob.glob(os.path.join(d, "**", "results.json"), recursive=True))
    return [os.path.dirname(p) for p in dict.fromkeys(found)]


def _variant_label(run_dir):
    from attn_zoo.train.loop import load_plugins
    load_plugins(run_dir)  # a plugin's run: its variant is registered again
    with open(os.path.join(run_dir, "config.json"), encoding="utf-8") as f:
        return json.load(f)["attention"]["name"]


def _mean_std(xs):
    xs = [x for x in xs if x is not None]
    if not xs:
        return None, None
    return statistics.fmean(xs), (statistics.stdev(xs) if len(xs) > 1 else 0.0)


def leaderboard(run_dirs):
    """One row per variant: means (± std over seeds for test accuracy) of results.json fields."""
    groups = {}
    for d in run_dirs:
        with open(os.path.join(d, "results.json"), encoding="utf-8") as f:
            groups.setdefault(_variant_label(d), []).append(json.load(f))
    rows = []
    for name, results in groups.items():
        acc, acc_std = _mean_std([r.get("test_accuracy") for r in results])
        row = {"variant": name, "seeds": len(results), "test_accuracy": acc, "test_accuracy_std": acc_std}
        for key in ("best_val_accuracy", "num_params", "steps_per_sec", "peak_memory_mb", "wall_time_s"):
            row[key] = _mean_std([r.get(key) for r in results])[0]
        rows.append(row)
    return sorted(rows, key=lambda r: -(r["test_accuracy"] or 0.0))


def _fmt(x, spec):
    return "—" if x is None else format(x, spec)


def markdown(rows):
    lines = ["| variant | seeds | test accuracy (mean ± std) | best val | params | steps/s | "
             "peak MiB | wall s |", "|" + "---|" * 8]
    for r in rows:
        lines.append(
            f"| {r['variant']} | {r['seeds']} | {_fmt(r['test_accuracy'], '.4f')} ± "
            f"{_fmt(r['test_accuracy_std'], '.4f')} | {_fmt(r['best_val_accuracy'], '.4f')} | "
            f"{_fmt(r['num_params'], ',.0f')} | {_fmt(r['steps_per_sec'], '.2f')} | "
            f"{_fmt(r['peak_memory_mb'], '.0f')} | {_fmt(r['wall_time_s'], '.0f')} |")
    return "\n".join(lines) + "\n"


def pareto_plot(rows, path):
    """Accuracy against training time per step and against peak memory; the Pareto front joined."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    pts = [r for r in rows if r["test_accuracy"] is not None and r["steps_per_sec"]]
    for ax, key, label in ((axes[0], "time", "seconds per training step"),
                           (axes[1], "peak_memory_mb", "peak memory MiB")):
        xy = [((1 / r["steps_per_sec"]) if key == "time" else r[key], r["test_accuracy"], r["variant"])
              for r in pts if key == "time" or r[key] is not None]
        for x, y, name in xy:
            ax.plot(x, y, "o")
            ax.annotate(name, (x, y), fontsize=7, xytext=(3, 3), textcoords="offset points")
        front, best = [], -1.0
        for x, y, _ in sorted(xy):
            if y > best:
                front.append((x, y))
                best = y
        if front:
            ax.plot(*zip(*front), "--", color="gray", alpha=0.6, label="Pareto front")
            ax.legend(fontsize=7)
        ax.set_xscale("log")
        ax.set(xlabel=label, ylabel="test accuracy")
        ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def summarize(dirs, out=None):
    """Leaderboard of every finished run below `dirs`; writes leaderboard.md/.csv and pareto.png
    into `out` when given. Returns the rows."""
    rows = leaderboard(_finished(dirs))
    if not rows:
        raise FileNotFoundError(f"no finished runs (results.json) below {', '.join(dirs)}")
    text = markdown(rows)
    print(text)
    if out:
        os.makedirs(out, exist_ok=True)
        with open(os.path.join(out, "leaderboard.md"), "w", encoding="utf-8") as f:
            f.write(text)
        with open(os.path.join(out, "leaderboard.csv"), "w", newline="", encoding="utf-8") as f:
            w = csv.DictWriter(f, fieldnames=list(rows[0]))
            w.writeheader()
            w.writerows(rows)
        pareto_plot(rows, os.path.join(out, "pareto.png"))
    return rows
