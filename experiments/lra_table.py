"""Tables of experiments/lra_cpu.sh: every variant × the CPU-sized tasks, from the compare leaderboards.

    python experiments/lra_table.py        # runs/lra-cpu/<task> -> experiments/results/lra-cpu.{md,csv}
    python experiments/lra_table.py --task recall configs/recall.py:smoke /tmp/t/recall --out /tmp/t/lra

Per task: its compare workdir (leaderboard.csv written by `attn-zoo compare`, wall_s written by
lra_cpu.sh) and its config (the preset's settings; the task's test split for the majority rate).
The .csv (variant, task, mean, std, n_seeds, steps_per_s, wall_s; accuracies as fractions, wall_s
the mean wall time of one run) is what the README's front table reads (attn_zoo/bench/front.py).
"""
from __future__ import annotations

import argparse
import collections
import csv
import os
import pathlib

import numpy as np

TASKS = (("listops", "ListOps"), ("pathfinder", "Pathfinder-32"), ("recall", "recall"),
         ("bytelm", "byte LM"))
CSV_FIELDS = ("variant", "task", "mean", "std", "n_seeds", "steps_per_s", "wall_s")


def read_leaderboard(workdir):
    """Rows of <workdir>/leaderboard.csv (attn_zoo.train.compare.summarize), numbers as floats."""
    with open(os.path.join(workdir, "leaderboard.csv"), newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    num = lambda v: None if v in (None, "") else float(v)  # noqa: E731
    return [{k: (v if k == "variant" else num(v)) for k, v in r.items()} for r in rows]


def majority_rate(task, head):
    """Frequency of the most common target in the test split (per example, per scored token, or
    per predicted next byte): the accuracy of always answering the same class."""
    split = task.splits["test"]
    idx = np.arange(len(split))
    if head == "lm":
        targets = np.asarray(split.inputs[idx])[:, 1:][np.asarray(split.mask[idx])[:, 1:]]
    else:
        labels = np.asarray(split.labels[idx])
        targets = labels[labels >= 0] if head == "token" else labels
    return collections.Counter(targets.ravel().tolist()).most_common(1)[0][1] / targets.size


def task_info(name, config_spec, workdir):
    """{name, config, settings, chance, rows, wall_s} for one task (loads its data for the chance)."""
    from attn_zoo import configs, data
    from attn_zoo.train.compare import variant_spec
    c = configs.load(variant_spec(config_spec, "dense"))
    task = data.load(c.data)
    m, t = c.model, c.train
    settings = {"length": c.data.max_length, "layers": m.num_layers, "emb": m.emb_dim,
                "heads": m.num_heads, "mlp": m.mlp_dim, "steps": t.num_steps, "batch": t.batch_size,
                "train size": len(task.splits["train"]), "test size": len(task.splits["test"])}
    wall = pathlib.Path(workdir, "wall_s")
    wall_s = float(wall.read_text()) if wall.exists() else None
    return {"name": name, "config": config_spec, "workdir": workdir, "settings": settings,
            "chance": majority_rate(task, m.head), "rows": read_leaderboard(workdir), "wall_s": wall_s}


def _num(x, spec):
    return "—" if x is None else format(x, spec)


def build(tasks, machine, command, compare_args):
    """(markdown text, csv rows) from task_info dicts (rows: leaderboard rows, best first)."""
    label = dict(TASKS)
    lines = ["# Every variant on CPU-sized LRA-style tasks", "", f"Machine: {machine}.", "",
             "Command:", "", f"    {command}", "", "which runs, two at a time:", ""]
    lines += [f"    attn-zoo compare --config {t['config']} {compare_args} --workdir {t['workdir']}"
              for t in tasks]
    keys = list(tasks[0]["settings"]) if tasks else []
    lines += ["", "Settings (preset of each config; wall s: the task's whole compare, every variant and "
              "seed, beside the other compare):", "",
              "| task | " + " | ".join(keys) + " | chance (majority rate, test) | wall s |",
              "|" + "---|" * (len(keys) + 3)]
    for t in tasks:
        cells = [f"{v:,}" if isinstance(v, int) else str(v) for v in t["settings"].values()]
        lines.append(f"| {label.get(t['name'], t['name'])} | " + " | ".join(cells) +
                     f" | {t['chance']:.4f} | {_num(t['wall_s'], '.0f')} |")
    variants = sorted({r["variant"] for t in tasks for r in t["rows"]})
    by = {(t["name"], r["variant"]): r for t in tasks for r in t["rows"]}
    best = {t["name"]: max((r["test_accuracy"] for r in t["rows"] if r["test_accuracy"] is not None),
                           default=None) for t in tasks}
    heads = [label.get(t["name"], t["name"]) + (" (next-byte acc)" if t["name"] == "bytelm" else "")
             for t in tasks]
    lines += ["", "Test accuracy, mean ± std over seeds (n seeds in brackets when not all ran); best "
              "mean per task in bold; — = not run (byte LM is causal: non-causal variants skipped).", "",
              "| variant | " + " | ".join(heads) + " |", "|" + "---|" * (len(tasks) + 1)]
    csv_rows = []
    for v in variants:
        cells = []
        for t in tasks:
            r = by.get((t["name"], v))
            if r is None or r["test_accuracy"] is None:
                cells.append("—")
                continue
            cell = f"{r['test_accuracy']:.3f} ± {_num(r['test_accuracy_std'], '.3f')}"
            most = max(x["seeds"] for x in t["rows"])
            cell += f" ({r['seeds']:.0f})" if r["seeds"] < most else ""
            cells.append(f"**{cell}**" if r["test_accuracy"] == best[t["name"]] else cell)
            csv_rows.append({"variant": v, "task": t["name"], "mean": r["test_accuracy"],
                             "std": r["test_accuracy_std"] or 0.0, "n_seeds": int(r["seeds"]),
                             "steps_per_s": r["steps_per_sec"], "wall_s": r["wall_time_s"]})
        lines.append(f"| {v} | " + " | ".join(cells) + " |")
    lines += ["", "Per task, best validation accuracy, parameters, steps/s, peak memory and wall time per "
              "run: `lra-cpu/<task>.md` (each task's leaderboard.md); every cell above, with steps/s and mean wall s per run: "
              "`lra-cpu.csv`."]
    text = "\n".join(lines) + "\n"
    return text, csv_rows


def machine():
    info = pathlib.Path("/proc/cpuinfo")
    lines = info.read_text().splitlines() if info.exists() else []
    model = next((x.split(":", 1)[1].strip() for x in lines if x.startswith("model name")), "unknown CPU")
    return f"{model}, {os.cpu_count()} cores"


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--task", nargs=3, action="append", metavar=("NAME", "CONFIG", "WORKDIR"),
                   help="default: the four tasks, configs/<task>.py:cpu, <root>/<task>")
    p.add_argument("--root", default="runs/lra-cpu")
    p.add_argument("--out", default="experiments/results/lra-cpu", help="writes OUT.md and OUT.csv")
    p.add_argument("--command", default="bash experiments/lra_cpu.sh")
    p.add_argument("--compare-args", default="--variants all --seeds 0,1,2")
    args = p.parse_args()
    specs = args.task or [(n, f"configs/{n}.py:cpu", os.path.join(args.root, n)) for n, _ in TASKS]
    tasks = [task_info(*s) for s in specs]
    text, rows = build(tasks, machine(), args.command, args.compare_args)
    os.makedirs(os.path.dirname(args.out) or ".", exist_ok=True)
    with open(args.out + ".md", "w", encoding="utf-8") as f:
        f.write(text)
    with open(args.out + ".csv", "w", newline="", encoding="utf-8") as f:
        w = csv.DictWriter(f, fieldnames=CSV_FIELDS)
        w.writeheader()
        w.writerows(rows)
    print(text)
    print(f"wrote {args.out}.md and {args.out}.csv")


if __name__ == "__main__":
    main()
