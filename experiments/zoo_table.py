"""Rebuild experiments/results/zoo-cpu.{md,csv} and the MQAR figure from the suite's records.

    python experiments/zoo_table.py --root experiments/results/zoo-cpu

Every <root>/<entry>/records/ directory (written by experiments/zoo_cpu.sh through attn-zoo
sweep) becomes one leaderboard (<root>/<entry>/leaderboard.md, tuning.md); zoo-cpu.md gathers
them after the calibration notes (<root>/calibration.md) and the wall times (<root>/wall.log);
zoo-cpu.csv has one row per (entry, variant): the source of the README front table's accuracy
columns. The MQAR entries also make <root>/mqar_state.png (accuracy against decoding state).
"""
from __future__ import annotations

import argparse
import collections
import csv
import os
import re
import statistics
import sys

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

from attn_zoo.train import compare, state_figure, sweep  # noqa: E402

COLUMNS = ("entry", "task", "variant", "metric", "mean", "ci_half_width", "n", "std", "chance",
           "tied_with_best", "left_chance", "point", "state_floats", "steps_per_sec")


def entries(root):
    return sorted(d for d in os.listdir(root) if sweep.is_records(os.path.join(root, d, "records")))


def build(root, out_stem):
    sections, table, boards_all, costs = [], [], {}, {}
    for name in entries(root):
        records = sweep.load_records(os.path.join(root, name, "records"))
        costs[name] = run_cost(records)
        boards = sweep.leaderboards(records)
        for sid, rows in boards.items():
            boards_all[f"{name} {sid}"] = rows
            plain = [{k: v for k, v in r.items() if k != "config"} for r in rows]
            compare.write_leaderboard(plain, os.path.join(root, name),
                                      extra={"tuning.md": sweep.tuning_table(records)})
            sections.append(f"### {name}\n\n`{sid}`; {len(records)} runs recorded.\n\n"
                            f"{compare.markdown(plain)}\nTuning runs (validation, first seed):\n\n"
                            f"{sweep.tuning_table(records)}")
            for r in rows:
                table.append({"entry": name, "task": r["config"]["data"]["task"],
                              **{k: r.get(k) for k in COLUMNS if k not in ("entry", "task")}})
    figure = None
    if state_figure.has_mqar(boards_all):
        figure = os.path.join(root, "mqar_state.png")
        state_figure.draw(boards_all, figure)
    with open(out_stem + ".csv", "w", newline="", encoding="utf-8") as f:
        w = csv.DictWriter(f, fieldnames=COLUMNS)
        w.writeheader()
        w.writerows([{k: int(v) if isinstance(v, bool) else v for k, v in r.items()} for r in table])
    parts = ["# attn_zoo CPU suite (zoo-cpu)\n",
             "Made by `bash experiments/zoo_cpu.sh` (records under "
             f"`{os.path.relpath(root, os.path.dirname(out_stem))}/<entry>/records/`), tabulated by "
             "`python experiments/zoo_table.py`. Each leaderboard: the variant's learning rate chosen "
             "on validation at the first seed, then every seed at that rate.\n"]
    for extra in ("calibration.md", "wall.log"):
        path = os.path.join(root, extra)
        if os.path.exists(path):
            with open(path, encoding="utf-8") as f:
                body = f.read()
            parts.append(body if extra.endswith(".md") else
                         "## Wall time per sweep call\n\n```\n" + body + "```\n")
    parts.append(status(root, table, costs))
    if figure:
        parts.append(f"## MQAR: accuracy against decoding state\n\n"
                     f"![MQAR accuracy against state size]({os.path.relpath(figure, os.path.dirname(out_stem))})\n")
    parts.append("## Leaderboards\n\n" + "\n".join(sections))
    with open(out_stem + ".md", "w", encoding="utf-8") as f:
        f.write("\n".join(parts))
    print(f"wrote {out_stem}.md/.csv ({len(table)} rows from {len(entries(root))} entries)")


_ENTRY = re.compile(r"(?:\w+=\S+\s+)*entry\s+(\S+)")


def run_cost(records):
    """(median wall seconds of a run, median runs per variant) over an entry's records."""
    per_variant = collections.Counter(r["variant"] for r in records)
    walls = [r["results"]["wall_time_s"] for r in records if r["results"].get("wall_time_s")]
    return (statistics.median(walls) if walls else None,
            statistics.median(per_variant.values()) if per_variant else None)


def status(root, table, costs=None) -> str:
    """What the suite has not run yet: zoo_cpu.sh's entries without records, and per entry the
    registered variants that fit it (causal ones for MQAR and byte LM) without a result, with
    what they would cost at the entry's median run (its records' wall times, each run on one
    core of a loaded 2-core machine: lanes side by side)."""
    from attn_zoo import attention
    script = os.path.join(os.path.dirname(os.path.abspath(__file__)), "zoo_cpu.sh")
    with open(script, encoding="utf-8") as f:
        # "entry NAME ..." lines, optionally after VAR=value assignments (LRS=... entry NAME ...)
        planned = list(dict.fromkeys(m[1] for m in map(_ENTRY.match, f) if m))
    done = {(r["entry"], r["variant"]) for r in table}
    lines = ["## Status: what has not run yet\n",
             "The suite is cumulative: `bash experiments/zoo_cpu.sh` runs what has no record.\n"]
    total = 0.0
    for entry in planned:
        causal = entry.startswith(("mqar", "bytelm"))
        fits = [n for n in attention.names(builtin=True) if not causal or attention.get(n).supports_causal]
        missing = [n for n in fits if (entry, n) not in done]
        wall, runs = (costs or {}).get(entry, (None, None))
        cost = ""
        if missing and wall:
            hours = len(missing) * runs * wall / 3600
            total += hours
            cost = f" (~{hours:.1f} h: {runs:g} runs a variant at {wall / 60:.0f} min, the median run)"
        if len(missing) == len(fits):
            lines.append(f"- {entry}: not run")
        elif missing:
            lines.append(f"- {entry}: not run for {', '.join(missing)}{cost}")
    if total:
        lines.append(f"\nIn all ~{total:.0f} run-hours where a median run is known (about half that in "
                     f"wall time with two lanes).")
    return "\n".join(lines) + "\n"


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--root", default="experiments/results/zoo-cpu")
    p.add_argument("--out", default="experiments/results/zoo-cpu", help="stem of the .md/.csv files")
    args = p.parse_args()
    build(args.root, args.out)


if __name__ == "__main__":
    main()
