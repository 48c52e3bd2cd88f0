"""Plot validation accuracy and training loss against step (and wall time) for training workdirs.

    python experiments/plot_curves.py --out curves.png --table table.md runs/recall-dense runs/recall-local

Reads each workdir's metrics.jsonl (and results.json when the run finished).
"""
import argparse
import json
import os

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def read(workdir):
    with open(os.path.join(workdir, "metrics.jsonl"), encoding="utf-8") as f:
        events = [json.loads(x) for x in f if x.strip()]
    results = None
    if os.path.exists(os.path.join(workdir, "results.json")):
        with open(os.path.join(workdir, "results.json"), encoding="utf-8") as f:
            results = json.load(f)
    with open(os.path.join(workdir, "config.json"), encoding="utf-8") as f:
        config = json.load(f)
    return events, results, config


def main():
    p = argparse.ArgumentParser()
    p.add_argument("workdirs", nargs="+")
    p.add_argument("--out", required=True)
    p.add_argument("--table")
    p.add_argument("--title", default="")
    args = p.parse_args()
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4))
    rows = ["| variant | steps | best val acc | test acc | steps/s | train wall s |", "|---|---|---|---|---|---|"]
    for w in args.workdirs:
        events, results, config = read(w)
        name = config["attention"]["name"]
        val = [e for e in events if e.get("split") == "val"]
        tr = [e for e in events if e.get("split") == "train"]
        ax1.plot([e["step"] for e in val], [e["accuracy"] for e in val], marker="o", ms=3, label=name)
        ax2.plot([e["step"] for e in tr], [e["loss"] for e in tr], label=name)
        sps = tr[-1].get("steps_per_sec") if tr else float("nan")
        steps = tr[-1]["step"] if tr else 0
        test = f"{results['test_accuracy']:.3f}" if results else "(not finished)"
        best = max((e["accuracy"] for e in val), default=float("nan"))
        rows.append(f"| {name} | {steps} | {best:.3f} | {test} | {sps:.2f} | {steps / sps:.0f} |")
    chance = 1.0 / config["data"].get("num_values", 2)
    ax1.axhline(chance, color="gray", ls="--", lw=1, label=f"chance {chance:.3f}")
    ax1.set(xlabel="step", ylabel="validation accuracy (per query)", ylim=(0, 1.02), title=args.title)
    ax2.set(xlabel="step", ylabel="training loss", title="training loss")
    ax1.legend()
    ax2.legend()
    fig.tight_layout()
    fig.savefig(args.out, dpi=110)
    print(f"wrote {args.out}")
    if args.table:
        with open(args.table, "w", encoding="utf-8") as f:
            f.write("\n".join(rows) + "\n")
        print("\n".join(rows))


if __name__ == "__main__":
    main()
