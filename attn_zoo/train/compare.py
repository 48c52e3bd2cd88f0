"""Compare variants on one task: train each (per seed, resumable), then a leaderboard and Pareto plot.

    compare("configs/listops.py:smoke", ["dense", "local"], seeds=[0, 1], workdir="runs/cmp")

Each run is an ordinary workdir `<workdir>/<variant>/seed<k>`: a finished one (results.json
present) is summarized without retraining, an interrupted one resumes. `summarize(dirs)` reads any
finished workdirs below `dirs` and writes leaderboard.md / .csv, pareto.png and curves.png
(validation accuracy per variant, mean and range over seeds): per variant the
mean ± 95% Student's t interval over seeds of test accuracy (higher is better) or, for language
models, bits per byte (lower is better), whether it is tied with the best (intervals overlap) and
whether it ever left chance (`chance=`, or results.json's chance_<metric>; else "chance: unknown").
"""
from __future__ import annotations

import csv
import glob
import json
import os
import statistics

from attn_zoo import attention, configs
from attn_zoo.train.stats import t_interval

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


def check_seeds(seeds) -> list[int]:
    """`seeds` as a list of ints; ValueError in one line when it is empty or holds a non-integer."""
    seeds = list(seeds)
    bad = [s for s in seeds if not isinstance(s, int) or isinstance(s, bool)]
    if not seeds or bad:
        raise ValueError(f"seeds {seeds!r}: expected one or more integers, e.g. 0,1,2"
                         + (f" ({bad[0]!r} is not one)" if bad else ""))
    return seeds


def check_variants(names) -> list[str]:
    """`names` as a list of registered variant names; ValueError naming the first unknown one."""
    names = list(names)
    if not names:
        raise ValueError("no variants given; give comma-separated names, or 'all'")
    for name in names:
        attention.get(name)  # ValueError: unknown attention 'foo'; known: ...
    return names


def compare(config_spec, variants, seeds, workdir, overrides=(), train_fn=None, chance=None):
    """Train every (variant, seed) not already finished, then summarize; returns the rows.

    Every run's config is loaded (and so checked) before any is trained: an unknown variant, a bad
    seed or override fails at once, in one line, rather than after the runs before it."""
    if train_fn is None:
        from attn_zoo.train import train_and_evaluate as train_fn
    seeds = check_seeds(seeds)
    names = check_variants(select_variants(variants, config_spec, overrides)
                           if isinstance(variants, str) else variants)
    runs = [(name, seed, configs.load(variant_spec(config_spec, name), [*overrides, f"--config.train.seed={seed}"]))
            for name in names for seed in seeds]
    for name, seed, config in runs:
        run_dir = os.path.join(workdir, name, f"seed{seed}")
        if os.path.exists(os.path.join(run_dir, "results.json")):
            print(f"{name} seed {seed}: finished, summarizing {run_dir}")
            continue
        print(f"{name} seed {seed}: training in {run_dir}", flush=True)
        stop_if_interrupted(train_fn(config, run_dir), "compare")
    return summarize([workdir], out=workdir, chance=chance)


def stop_if_interrupted(result, what):
    """A run that SIGINT/SIGTERM interrupted (checkpointed) stops the whole `what` too: exit 130
    or 143, and the same command resumes it."""
    if isinstance(result, dict) and result.get("status") == "interrupted":
        print(f"{what} stopped by {result.get('reason')}: run the same command again to resume", flush=True)
        raise SystemExit(130 if result.get("reason") == "SIGINT" else 143)


def _finished(dirs):
    found = []
    for d in dirs:
        found += sorted(glob.glob(os.path.join(d, "**", "results.json"), recursive=True))
    return [os.path.dirname(p) for p in dict.fromkeys(found)]


def read_json(path, what="a JSON file"):
    """The JSON object in `path`; FileNotFoundError or ValueError naming the file (one line) when
    it is missing, not JSON or not an object."""
    try:
        with open(path, encoding="utf-8") as f:
            value = json.load(f)
    except FileNotFoundError:
        raise FileNotFoundError(f"{path}: no such file; expected {what}") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ValueError(f"{path}: not valid JSON ({e}); expected {what}") from None
    if not isinstance(value, dict):
        raise ValueError(f"{path}: holds a JSON {type(value).__name__}, not an object; expected {what}")
    return value


def _variant_label(run_dir):
    from attn_zoo.train.loop import load_plugins
    load_plugins(run_dir)  # a plugin's run: its variant is registered again
    path = os.path.join(run_dir, "config.json")
    config = read_json(path, "the run's config, which the trainer writes beside results.json")
    name = config.get("attention", {}).get("name") if isinstance(config.get("attention"), dict) else None
    if not isinstance(name, str):
        raise ValueError(f"{path}: has no attention.name (not a training workdir's config.json?)")
    return name


def _mean_std(xs):
    xs = [x for x in xs if x is not None]
    if not xs:
        return None, None
    return statistics.fmean(xs), (statistics.stdev(xs) if len(xs) > 1 else 0.0)


# ranking metrics: results.json key -> (label, higher is better). The loop writes
# test_bits_per_token for lm heads and test_bits_per_byte too when tokens are bytes (vocab 256).
METRICS = {"test_accuracy": ("test accuracy", True),
           "test_bits_per_byte": ("test bits per byte", False),
           "test_bits_per_token": ("test bits per token", False)}
LEVEL = 0.95


def pick_metric(results):
    """The runs' own ranking metric (results.json 'metric'), else: bits per byte (else per token)
    for language models, test accuracy otherwise. Runs written before 'metric' existed wrote bits
    for MQAR too (scored on its queries only): MQAR ranks by accuracy."""
    named = {r["metric"] for r in results if r.get("metric")}
    if len(named) == 1:
        return named.pop()
    if any(r.get("task") == "mqar" for r in results):
        return "test_accuracy"
    for key in ("test_bits_per_byte", "test_bits_per_token"):
        if any(r.get(key) is not None for r in results):
            return key
    return "test_accuracy"


def chance_key(metric):
    """The optional results.json field holding chance for `metric` (e.g. 'chance_accuracy': the
    majority rate of the test split; 'chance_bits_per_byte'), in the metric's own units."""
    return "chance_" + metric.removeprefix("test_")


def _chance_from_results(results, metric):
    found = {r[chance_key(metric)] for r in results if r.get(chance_key(metric)) is not None}
    if not found:
        return None
    if len(found) > 1:  # runs disagree (not one test split): the hardest one to leave
        print(f"runs record different {chance_key(metric)} values {sorted(found)}: using the hardest")
    return max(found) if METRICS[metric][1] else min(found)


def _mark(rows, higher, chance):
    """Best (highest or lowest mean), ties (interval overlaps the best's; one seed: the mean as a
    point), and whether each variant left chance (the interval's better end beyond chance)."""
    def span(r):
        return (r["ci_low"], r["ci_high"]) if r["ci_low"] is not None else (r["mean"], r["mean"])

    scored = [r for r in rows if r["mean"] is not None]
    best = (max if higher else min)(scored, key=lambda r: r["mean"]) if scored else None
    for r in rows:
        r["is_best"] = r["tied_with_best"] = r["left_chance"] = r["clear_of_chance"] = None
        if r["mean"] is None:
            continue
        lo, hi = span(r)
        b_lo, b_hi = span(best)
        r["is_best"] = r is best
        r["tied_with_best"] = r is best or (lo <= b_hi and b_lo <= hi)
        if chance is not None:
            # its optimistic end beyond chance (n = 1: lo == hi == the mean)
            r["left_chance"] = hi > chance if higher else lo < chance
            # and its whole interval beyond chance
            r["clear_of_chance"] = lo > chance if higher else hi < chance


def leaderboard(run_dirs, chance=None, metric=None):
    """One row per variant, best first, from finished run workdirs (see `leaderboard_of`)."""
    groups = {}
    for d in run_dirs:
        results = read_json(os.path.join(d, "results.json"), "a finished run's results")
        groups.setdefault(_variant_label(d), []).append(results)
    return leaderboard_of(groups, chance=chance, metric=metric)


def leaderboard_of(groups, chance=None, metric=None):
    """One row per variant of `groups` ({variant: [results.json dicts, one per seed]}), best
    first: mean ± 95% Student-t interval over seeds of the ranking metric (`metric`; default bits
    per byte/token for lm runs, else test accuracy), whether its interval overlaps the best's
    (`tied_with_best`) and whether it left `chance` (`left_chance`; chance in the metric's units,
    default results.json's chance_<metric> field, else unknown), plus means of the other fields."""
    every = [r for results in groups.values() for r in results]
    metric = metric or pick_metric(every)
    if metric not in METRICS:
        raise ValueError(f"unknown metric {metric!r}; known: {', '.join(METRICS)}")
    higher = METRICS[metric][1]
    if chance is None:
        chance = _chance_from_results(every, metric)
    rows = []
    for name, results in groups.items():
        ci = t_interval([r.get(metric) for r in results], LEVEL)
        acc, acc_std = _mean_std([r.get("test_accuracy") for r in results])
        row = {"variant": name, "seeds": len(results), "metric": metric, "higher_is_better": higher,
               "mean": ci.mean, "ci_low": ci.low, "ci_high": ci.high, "ci_half_width": ci.half,
               "n": ci.n, "std": ci.std, "tied_with_best": None, "left_chance": None,
               "clear_of_chance": None, "chance": chance,
               "test_accuracy": acc, "test_accuracy_std": acc_std}
        if metric != "test_accuracy":
            row[metric] = ci.mean
        for key in ("best_val_accuracy", "num_params", "steps_per_sec", "peak_memory_mb", "wall_time_s"):
            row[key] = _mean_std([r.get(key) for r in results])[0]
        rows.append(row)
    _mark(rows, higher, chance)
    missing = float("inf")
    return sorted(rows, key=lambda r: missing if r["mean"] is None else (-r["mean"] if higher else r["mean"]))


def _fmt(x, spec):
    return "—" if x is None else format(x, spec)


def caption(rows):
    """What the table reports: metric and direction, the interval, the tie rule, chance."""
    label, higher = METRICS[rows[0]["metric"]]
    chance = rows[0]["chance"]
    side = "upper" if higher else "lower"
    return (f"{label}, {'higher' if higher else 'lower'} is better: mean ± half-width of the "
            f"{LEVEL:.0%} Student's t interval over seeds (t_{{{(1 + LEVEL) / 2:g}, n-1}} · s / √n; "
            f"n = 1: no interval). ≈ best: the interval overlaps the best variant's (one seed: its "
            f"mean lies in it). chance: {'unknown' if chance is None else format(chance, '.4f')}; "
            f"never left chance: the interval's {side} end (one seed: the mean) is not "
            f"{'above' if higher else 'below'} it; ≈ chance: the interval contains it; left chance: "
            f"the whole interval is {'above' if higher else 'below'} it.")


def _cell(v):
    """An optional column's value: 'none' for a state size that does not exist, else as is."""
    if v is None:
        return "none"
    return f"{v:,}" if isinstance(v, int) else str(v)


def _vs_best(r):
    if r["tied_with_best"] is None:
        return "—"
    return "best" if r["is_best"] else "≈ best" if r["tied_with_best"] else "worse"


def _vs_chance(r):
    if r["mean"] is None:
        return "—"
    if r["left_chance"] is None:
        return "chance unknown"
    if not r["left_chance"]:
        return "never left chance"
    return "left chance" if r["clear_of_chance"] else "≈ chance"


def markdown(rows):
    metric = rows[0]["metric"]
    label, higher = METRICS[metric]
    extra = metric != "test_accuracy"  # lm: next-token accuracy beside bits
    # optional columns: the sweep's chosen point, the decoding state (floats per layer)
    optional = [(k, h) for k, h in (("point", "chosen point"), ("state_floats", "state floats/layer"))
                if any(k in r for r in rows)]
    head = (f"| variant | n | {label} {'↑' if higher else '↓'} (mean ± 95% CI) | 95% CI | vs best | "
            f"vs chance |" + (" test accuracy |" if extra else "") +
            "".join(f" {h} |" for _, h in optional) +
            " best val | params | steps/s | peak MiB | wall s |")
    note = ("" if not any("point" in r for r in rows) else
            " chosen point: the grid point with the best validation score at the tuning seed, where "
            "the other seeds ran; '(tuned k of n points)': its tuning is unfinished; '(the highest … "
            "tried)': strictly best at an end of 3 or more values, so the optimum may lie beyond.")
    lines = [caption(rows) + note, "", head, "|" + "---|" * (head.count("|") - 1)]
    for r in rows:
        if r["mean"] is None:
            value, ci = "—", "—"
        elif r["ci_half_width"] is None:
            value, ci = f"{r['mean']:.4f}", "none (n = 1)"
        else:
            value = f"{r['mean']:.4f} ± {r['ci_half_width']:.4f}"
            ci = f"[{r['ci_low']:.4f}, {r['ci_high']:.4f}]"
        lines.append(
            f"| {r['variant']} | {r['n']} | {value} | {ci} | {_vs_best(r)} | {_vs_chance(r)} |"
            + (f" {_fmt(r['test_accuracy'], '.4f')} |" if extra else "") +
            "".join(f" {_cell(r.get(k))} |" for k, _ in optional) +
            f" {_fmt(r['best_val_accuracy'], '.4f')} | "
            f"{_fmt(r['num_params'], ',.0f')} | {_fmt(r['steps_per_sec'], '.2f')} | "
            f"{_fmt(r['peak_memory_mb'], '.0f')} | {_fmt(r['wall_time_s'], '.0f')} |")
    return "\n".join(lines) + "\n"


def csv_rows(rows):
    """Rows as leaderboard.csv holds them: numbers only beyond `variant` (experiments/lra_table.py
    reads every other column as a float): booleans as 1/0, unknown as empty; the metric's name is
    dropped (higher_is_better gives the direction, and the metric's own column is present)."""
    def cell(v):
        return int(v) if isinstance(v, bool) else v
    return [{k: cell(v) for k, v in r.items() if k not in ("metric", "is_best")} for r in rows]


def pareto_plot(rows, path):
    """The ranking metric against training time per step and against peak memory; the Pareto
    front joined (higher accuracy, or lower bits, is better)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    label, higher = METRICS[rows[0]["metric"]]
    sign = 1.0 if higher else -1.0
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    pts = [r for r in rows if r["mean"] is not None and r["steps_per_sec"]]
    for ax, key, xlabel in ((axes[0], "time", "seconds per training step"),
                            (axes[1], "peak_memory_mb", "peak memory MiB")):
        xy = [((1 / r["steps_per_sec"]) if key == "time" else r[key], r["mean"], r["variant"])
              for r in pts if key == "time" or r[key] is not None]
        for x, y, name in xy:
            ax.plot(x, y, "o")
            ax.annotate(name, (x, y), fontsize=7, xytext=(3, 3), textcoords="offset points")
        front, best = [], -float("inf")
        for x, y, _ in sorted(xy):
            if sign * y > best:
                front.append((x, y))
                best = sign * y
        if front:
            ax.plot(*zip(*front), "--", color="gray", alpha=0.6, label="Pareto front")
            ax.legend(fontsize=7)
        ax.set_xscale("log")
        ax.set(xlabel=xlabel, ylabel=f"{label} ({'higher' if higher else 'lower'} is better)")
        ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def summarize(dirs, out=None, chance=None, metric=None):
    """Leaderboard of every finished run below `dirs` (see `leaderboard` for `chance` and
    `metric`); writes leaderboard.md/.csv and pareto.png into `out` when given. Returns the rows.
    FileNotFoundError when a directory is missing or holds no finished run; ValueError naming the
    file when a results.json or config.json is not valid JSON."""
    for d in dirs:
        if not os.path.isdir(d):
            raise FileNotFoundError(f"{d}: no such directory")
    run_dirs = _finished(dirs)
    rows = leaderboard(run_dirs, chance=chance, metric=metric)
    if not rows:
        raise FileNotFoundError(f"no finished runs (results.json) below {', '.join(dirs)}")
    write_leaderboard(rows, out)
    if out:
        from attn_zoo.train.summary import plot_curves
        plot_curves(run_dirs, os.path.join(out, "curves.png"))
    return rows


def write_leaderboard(rows, out, extra=None):
    """Print the markdown table; with `out`, write leaderboard.md/.csv, pareto.png and `extra`
    ({file name: text})."""
    text = markdown(rows)
    print(text)
    if not out:
        return
    os.makedirs(out, exist_ok=True)
    with open(os.path.join(out, "leaderboard.md"), "w", encoding="utf-8") as f:
        f.write(text)
    with open(os.path.join(out, "leaderboard.csv"), "w", newline="", encoding="utf-8") as f:
        table = csv_rows(rows)
        w = csv.DictWriter(f, fieldnames=list(table[0]))
        w.writeheader()
        w.writerows(table)
    for name, body in (extra or {}).items():
        with open(os.path.join(out, name), "w", encoding="utf-8") as f:
            f.write(body)
    pareto_plot(rows, os.path.join(out, "pareto.png"))
