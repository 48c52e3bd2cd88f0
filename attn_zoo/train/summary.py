"""Compare finished runs: a markdown table from workdirs' results.json, validation-accuracy curves."""
from __future__ import annotations

import json
import os

from attn_zoo.train import metrics

COLUMNS = [("attention", "variant", "{}"), ("test_accuracy", "test acc", "{:.4f}"),
           ("best_val_accuracy", "best val acc", "{:.4f}"), ("best_step", "best step", "{}"),
           ("num_steps", "steps", "{}"), ("steps_per_sec", "steps/s", "{:.2f}"),
           ("wall_time_s", "wall s", "{:.0f}"), ("cpu_time_s", "CPU s", "{:.0f}"),
           ("peak_memory_mb", "peak MiB", "{:.0f}"),
           ("num_params", "params", "{:,}")]


def load(workdirs) -> list[dict]:
    """results.json of each workdir, with 'workdir' added; missing ones are reported, not skipped."""
    rows = []
    for w in workdirs:
        path = os.path.join(w, "results.json")
        if not os.path.exists(path):
            raise FileNotFoundError(f"{path} not found: has `attn-zoo train --workdir {w}` finished?")
        with open(path, encoding="utf-8") as f:
            rows.append({"workdir": w, **json.load(f)})
    return rows


def markdown_table(rows) -> str:
    head = "| " + " | ".join(title for _, title, _ in COLUMNS) + " |"
    rule = "|" + "---|" * len(COLUMNS)
    body = ["| " + " | ".join("-" if r.get(k) is None else fmt.format(r[k]) for k, _, fmt in COLUMNS) + " |"
            for r in rows]
    return "\n".join([head, rule, *body])


def plot_validation(workdirs, path, title="validation accuracy"):
    """PNG of validation accuracy against step, one line per workdir (labelled by its variant)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for i, w in enumerate(workdirs):
        val = [e for e in metrics.read(w) if e.get("split") == "val"]
        with open(os.path.join(w, "config.json"), encoding="utf-8") as f:
            label = json.load(f)["attention"]["name"]
        style = ("-", "--", ":", "-.")[i % 4]  # exact variants overlap: keep each line visible
        ax.plot([e["step"] for e in val], [e["accuracy"] for e in val], style, marker=".", label=label)
    ax.set(xlabel="step", ylabel="accuracy", title=title)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot_curves(run_dirs, path, title="validation accuracy, mean over seeds (band: min–max)"):
    """PNG of validation accuracy against step per variant: the mean over its runs (seeds) and
    the band between the lowest and highest run at each step."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    curves = {}
    for w in run_dirs:
        if not os.path.exists(os.path.join(w, "metrics.jsonl")):
            continue  # a run recorded without its log (e.g. copied results): no curve
        with open(os.path.join(w, "config.json"), encoding="utf-8") as f:
            name = json.load(f)["attention"]["name"]
        val = {e["step"]: e["accuracy"] for e in metrics.read(w) if e.get("split") == "val"}
        curves.setdefault(name, []).append(val)
    if not curves:
        return
    fig, ax = plt.subplots(figsize=(6, 4))
    for i, (name, runs) in enumerate(sorted(curves.items())):
        steps = sorted(set.intersection(*(set(r) for r in runs)))
        ys = [[r[s] for r in runs] for s in steps]
        line, = ax.plot(steps, [sum(y) / len(y) for y in ys], ("-", "--", ":", "-.")[i % 4],
                        marker=".", label=f"{name} (n={len(runs)})")
        ax.fill_between(steps, [min(y) for y in ys], [max(y) for y in ys], color=line.get_color(), alpha=0.2)
    ax.set(xlabel="step", ylabel="validation accuracy", title=title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv=None):
    """`python -m attn_zoo.train.summary [--plot out.png] WORKDIR...`: print the markdown table."""
    import argparse
    p = argparse.ArgumentParser(description=main.__doc__)
    p.add_argument("workdirs", nargs="+")
    p.add_argument("--plot", help="also write validation-accuracy curves to this PNG")
    args = p.parse_args(argv)
    print(markdown_table(load(args.workdirs)))
    if args.plot:
        plot_validation(args.workdirs, args.plot)


if __name__ == "__main__":
    main()
