"""The README's front table: registry features beside the committed CPU results, never typed by hand.

Sources (all under experiments/results/, each naming the command that made it):
  bench-cpu.csv       attention alone, fwd+bwd time and peak memory against jax.nn.dot_product_attention
  efficiency-cpu.csv  a whole training step at LRA text sizes against `dense`
  zoo-cpu.csv         the calibrated CPU suite (experiments/zoo_cpu.sh): per entry and variant the
                      mean ± 95% t-interval half-width over seeds at the learning rate chosen on
                      validation, with the number of seeds
A variant missing from a benchmark source shows "—" there, and `missing(...)` names it (a test
fails on it). The suite is cumulative (records committed as runs finish): a (variant, entry) it
has not run yet shows "not run", and `not_run(...)` lists them.
A later run of some variants (with its own baseline rows) goes to `<source>-update.csv`; its ratios,
each computed within that run, replace the main file's for those variants.
"""
from __future__ import annotations

import csv
import os

from attn_zoo import attention
from attn_zoo.attention.core.table import length_cell
from attn_zoo.bench.train_step import speedups

START, END = "<!-- front:start -->", "<!-- front:end -->"
ATTENTION_N, TRAIN_N = 8192, 4096
# zoo-cpu entries shown, and their column headers (accuracy in %, byte LM in bits per byte)
ENTRIES = (("mqar-L64-N4-d64", "MQAR L64 N4 acc %"), ("mqar-L64-N8-d64", "MQAR L64 N8 acc %"),
           ("mqar-L64-N16-d64", "MQAR L64 N16 acc %"), ("mqar-L128-N8-d64", "MQAR L128 N8 acc %"),
           ("mqar-L128-N32-d64", "MQAR L128 N32 acc %"), ("mqar-L256-N16-d64", "MQAR L256 N16 acc %"),
           ("recall", "recall acc %"), ("bytelm", "byte LM bits/byte"), ("copy", "copy acc %"),
           ("listops", "ListOps acc %"))


def _read(path):
    if not os.path.exists(path):
        return []
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def _ok(row, key):
    return not row.get("error") and row.get(key) not in (None, "")


def attention_ratios(rows, n=ATTENTION_N):
    """{variant: (fwd+bwd speedup, memory ratio)} against xla at length n (one run's rows)."""
    at = {r["variant"]: r for r in rows if int(r["length"]) == n and _ok(r, "fwdbwd_s")}
    if "xla" not in at:
        return {}
    base = at["xla"]
    return {v: (float(base["fwdbwd_s"]) / float(r["fwdbwd_s"]),
                float(r["fwdbwd_peak_mb"]) / max(float(base["fwdbwd_peak_mb"]), 1e-9)) for v, r in at.items()}


def train_ratios(rows, n=TRAIN_N):
    """{variant: step speedup over dense} at length n (train_step.speedups on the CSV's rows)."""
    parsed = [{"variant": r["variant"], "length": int(r["length"]), "step_s": float(r["step_s"])}
              for r in rows if _ok(r, "step_s")]
    return {v: per_n[n] for v, per_n in speedups(parsed).items() if n in per_n}


def accuracies(rows):
    """{(variant, entry): 'mean ± half-width (n)'}: accuracy in percent, bits as they are."""
    def cell(r):
        scale = 1 if r["metric"].startswith("test_bits") else 100
        half = r.get("ci_half_width")
        digits = 3 if scale == 1 else 1
        body = f"{scale * float(r['mean']):.{digits}f}"
        if half not in (None, ""):
            body += f" ± {scale * float(half):.{digits}f}"
        return f"{body} (n={r['n']})"
    return {(r["variant"], r["entry"]): cell(r) for r in rows if r.get("mean") not in (None, "")}


def _sources(results_dir):
    """(attention ratios, train-step ratios, accuracies) from the committed files."""
    def ratios(stem, fn):
        out = {}
        for path in (f"{stem}.csv", f"{stem}-update.csv"):  # each file's ratios are its own run's
            out.update(fn(_read(os.path.join(results_dir, path))))
        return out

    return (ratios("bench-cpu", attention_ratios), ratios("efficiency-cpu", train_ratios),
            accuracies(_read(os.path.join(results_dir, "zoo-cpu.csv"))))


def table(results_dir) -> str:
    attn, train, acc = _sources(results_dir)
    head = (["variant", "exact", "causal", "padding", "length", "complexity",
             f"attn fwd+bwd speedup @{ATTENTION_N // 1024}K", f"attn memory @{ATTENTION_N // 1024}K",
             f"train step speedup @{TRAIN_N // 1024}K"] + [label for _, label in ENTRIES])
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for name in attention.names(builtin=True):
        spec = attention.get(name)
        speed, mem = attn.get(name, (None, None))
        cells = [name, "yes" if spec.exact else "no", "yes" if spec.supports_causal else "no",
                 "yes",  # key_mask: every registered variant passes the conformance suite's check
                 length_cell(spec), spec.complexity,
                 "—" if speed is None else f"{speed:.1f}×",
                 "—" if mem is None else (f"1/{1 / mem:.0f}" if mem < 1 else f"{mem:.1f}"),
                 "—" if name not in train else f"{train[name]:.1f}×"]
        cells += [acc.get((name, entry), "—" if _unfit(name, entry) else "not run")
                  for entry, _ in ENTRIES]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _unfit(name, entry) -> bool:
    """Causal-only entries (MQAR, byte LM) do not fit a variant without causal support."""
    return entry.startswith(("mqar", "bytelm")) and not attention.get(name).supports_causal


def missing(results_dir) -> dict[str, list[str]]:
    """Registered variants absent from each benchmark source."""
    attn, train, _ = _sources(results_dir)
    out = {"bench-cpu.csv": [n for n in attention.names(builtin=True) if n not in attn],
           "efficiency-cpu.csv": [n for n in attention.names(builtin=True) if n not in train]}
    return {k: v for k, v in out.items() if v}


def not_run(results_dir) -> dict[str, list[str]]:
    """{zoo-cpu entry: the registered variants that fit it and have no result yet}."""
    acc = _sources(results_dir)[2]
    out = {e: [n for n in attention.names(builtin=True) if not _unfit(n, e) and (n, e) not in acc]
           for e, _ in ENTRIES}
    return {k: v for k, v in out.items() if v}


def update_readme(text: str, results_dir: str) -> str:
    head, rest = text.split(START, 1)
    _, tail = rest.split(END, 1)
    return f"{head}{START}\n{table(results_dir)}\n{END}{tail}"
