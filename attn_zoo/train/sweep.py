"""Fair comparisons: per variant, a grid over config fields tuned on validation, then seeds.

    sweep("configs/mqar.py:cpu", "blockwise,linear", grid=["train.learning_rate=1e-3,3e-3"],
          seeds=[0, 1, 2], workdir="runs/sweep")

Per variant, every grid point is trained at the first seed (the tuning runs); the point with the
best validation score (best_val_accuracy; best_val_loss, lower, for language models) is chosen,
and the other seeds are trained there. Each finished run leaves a record, `<records>/<variant>-
<key>.json`, keyed by a hash of its full config: a run whose record exists is never trained again,
wherever its workdir was, so records committed by earlier sessions extend a suite instead of
redoing it. `shard=(i, n)` runs every n-th tuning run and every n-th seed run (disjoint parts); a
seed run waits for its variant's tuning records, so a shard that finds them missing says so and a
later call (any shard) finishes it. `summarize_records(records)` rebuilds the leaderboard from the
records alone: n shards, or n sessions, merge into the leaderboard of one run.
"""
from __future__ import annotations

import functools
import hashlib
import itertools
import json
import math
import os
import re
import subprocess

import ml_collections

from attn_zoo import attention, configs
from attn_zoo.attention.core.options import parse_literal
from attn_zoo.train import compare


def parse_grid(specs) -> list[tuple[str, list]]:
    """['train.learning_rate=1e-3,3e-3', 'model.emb_dim=64'] -> [(field, [values...]), ...]."""
    grid = []
    for spec in specs:
        field, sep, values = spec.partition("=")
        if not sep or not field or not values:
            raise ValueError(f"grid entry {spec!r}: expected field=v1,v2,... (e.g. train.learning_rate=1e-3,3e-3)")
        field = field.removeprefix("--").removeprefix("config.")
        if field in (f for f, _ in grid):
            raise ValueError(f"grid field {field!r} is given twice")
        grid.append((field, [parse_literal(v) for v in values.split(",")]))
    return grid


def points(grid) -> list[dict]:
    """The grid's points in order (the first field varies slowest); [{}] for no grid."""
    fields = [f for f, _ in grid]
    return [dict(zip(fields, combo)) for combo in itertools.product(*(vs for _, vs in grid))]


def label(point: dict) -> str:
    return ",".join(f"{f.rsplit('.', 1)[-1]}={v}" for f, v in point.items()) or "default"


def overrides_for(point: dict, seed: int) -> list[str]:
    return [f"--config.{f}={v}" for f, v in point.items()] + [f"--config.train.seed={seed}"]


def config_key(config) -> str:
    """A stable hash of the full config (every field, the seed included), less the attention
    options left at their variant's default: adding an option to a variant (its default keeping
    the old behaviour) must not orphan the records made before it existed. A changed default
    still changes the key (old records hold the old value, now not the default); an option added
    with a default that changes the old behaviour needs its variant's records deleted. `rekey`
    renames records after a change to this function."""
    fields = json.loads(config.to_json_best_effort())
    attn = fields.get("attention") or {}
    if attn.get("name") in attention.names():
        defaults = attention.get(attn["name"]).defaults
        fields["attention"] = {k: v for k, v in attn.items()
                               if k == "name" or k not in defaults or _jsonable(defaults[k]) != v}
    text = json.dumps(fields, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _jsonable(value):
    return json.loads(json.dumps(value))


def rekey(directory) -> int:
    """Renames every record in `directory` to its config's current key (after a change to
    `config_key`); returns how many changed."""
    records, changed = Records(directory), 0
    for record in records.all():
        key = config_key(ml_collections.ConfigDict(record["config"]))
        if key != record["key"]:
            old = records.path(record["variant"], record["key"])
            records.put({**record, "key": key})
            os.remove(old)
            changed += 1
    return changed


def score(results) -> float:
    """Validation score, higher is better: accuracy, or minus the loss for runs ranked by bits
    (language models), as the leaderboard ranks them; a diverged run scores -inf."""
    if results.get("status") == "diverged":
        return -math.inf
    if compare.pick_metric([results]) != "test_accuracy" and results.get("best_val_loss") is not None:
        return -results["best_val_loss"]
    return results["best_val_accuracy"]


class Records:
    """A directory of run records: {'key', 'variant', 'task', 'point', 'seed', 'config', 'results'}."""

    def __init__(self, directory):
        self.directory = directory

    def path(self, variant, key):
        return os.path.join(self.directory, f"{variant}-{key}.json")

    def get(self, variant, key):
        path = self.path(variant, key)
        return read_record(path) if os.path.exists(path) else None

    def put(self, record):
        os.makedirs(self.directory, exist_ok=True)
        path = self.path(record["variant"], record["key"])
        with open(path + ".tmp", "w", encoding="utf-8") as f:
            json.dump(record, f, indent=1, sort_keys=True)
        os.replace(path + ".tmp", path)  # atomic: a reader never sees half a record

    def all(self):
        if not os.path.isdir(self.directory):
            return []
        return [read_record(os.path.join(self.directory, name))
                for name in sorted(os.listdir(self.directory)) if name.endswith(".json")]


RECORD_FIELDS = ("key", "variant", "task", "point", "seed", "overrides", "results")


def read_record(path) -> dict:
    """One record file; ValueError naming the file when it is not JSON or lacks a record's fields."""
    record = compare.read_json(path, "a sweep record")
    missing = [k for k in RECORD_FIELDS if k not in record]
    if missing:
        raise ValueError(f"{path}: not a sweep record (no {', '.join(missing)})")
    return record


def _run(config, config_spec, variant, point, seed, overrides, workdir, records, train_fn, grid=()):
    """The record of `config`, the run (variant, point, seed): read when it exists, else trained
    and written. None when the run was interrupted (it resumes on the next call)."""
    key = config_key(config)
    found = records.get(variant, key)
    if found is not None:
        return found
    run_dir = os.path.join(workdir, variant, label(point), f"seed{seed}")
    print(f"{variant} {label(point)} seed {seed}: training in {run_dir}", flush=True)
    try:
        results = train_fn(config, run_dir)
    except FloatingPointError as e:  # diverged: a result about this point (too high a rate), kept
        print(f"{variant} {label(point)} seed {seed}: diverged ({e})", flush=True)
        results = {"status": "diverged", "error": str(e)}
    compare.stop_if_interrupted(results, "sweep")
    if results.get("status") not in ("done", "diverged"):
        return None
    record = {"key": key, "variant": variant, "task": config_spec, "point": point, "seed": seed,
              "overrides": list(overrides), "config": json.loads(config.to_json_best_effort()),
              "results": results, "code": code_version(), "grid": list(grid)}
    records.put(record)
    return record


@functools.lru_cache(maxsize=1)
def code_version():
    """The checkout's commit, '+changes' when attn_zoo/ differs from it (None outside git): the
    config keys a record, the code that ran it is recorded beside."""
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    try:
        head = subprocess.run(["git", "-C", root, "rev-parse", "--short=12", "HEAD"], capture_output=True,
                              text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", root, "status", "--porcelain", "--", "attn_zoo"],
                               capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None
    return head + ("+changes" if dirty else "")


def choose(tuning: dict) -> dict:
    """The point whose tuning record scores best on validation (ties: the earlier point)."""
    best = max(range(len(tuning)), key=lambda i: (score(list(tuning.values())[i]["results"]), -i))
    return list(tuning.values())[best]["point"]


def sweep(config_spec, variants, grid=(), seeds=(0,), workdir="runs/sweep", records=None,
          overrides=(), shard=(0, 1), train_fn=None, chance=None, out=None):
    """Tune every variant over `grid` (see the module docstring), run `seeds` at its best point,
    and summarize what is finished. Returns the leaderboard rows (None when nothing finished)."""
    if train_fn is None:
        from attn_zoo.train import train_and_evaluate as train_fn
    index, count = shard
    if not 0 <= index < count:
        raise ValueError(f"shard {index}/{count}: expected i/n with 0 <= i < n")
    seeds = compare.check_seeds(seeds)
    names = compare.check_variants(compare.select_variants(variants, config_spec, overrides)
                                   if isinstance(variants, str) else variants)
    grid_points = points(parse_grid(grid) if grid and isinstance(grid[0], str) else grid)
    # every run's config, loaded (and so checked) before anything trains: a bad variant, grid value
    # or override fails here in one line, not after the runs before it
    loaded = {(v, label(p), s): configs.load(compare.variant_spec(config_spec, v),
                                              [*overrides, *overrides_for(p, s)])
              for v in names for p in grid_points for s in seeds}
    records = Records(records or os.path.join(workdir, "records"))
    tune_seed = seeds[0]

    def run(v, p, s):
        return _run(loaded[v, label(p), s], config_spec, v, p, s, overrides, workdir, records,
                    train_fn, grid_points)

    # variant by variant (its tuning runs, then its seeds), so that rows complete early; the n
    # shards split the tuning runs and the seed runs by their index in these orders
    tuned = len(grid_points) > 1
    pending = []
    for j, v in enumerate(names):
        for k, p in enumerate(grid_points if tuned else []):
            if (j * len(grid_points) + k) % count == index:
                run(v, p, tune_seed)
        for k, s in enumerate(seeds):
            if (j * len(seeds) + k) % count != index:
                continue
            best = _best_point([(p, loaded[v, label(p), tune_seed]) for p in grid_points], v, records)
            if best is None:
                pending.append(v)
                continue
            run(v, best, s)
    if pending:
        print(f"waiting for tuning runs of other shards: {', '.join(dict.fromkeys(pending))}; "
              f"run the sweep again once they finish")
    boards = summarize_records(records.directory, out=out or workdir, chance=chance)
    return None if boards is None else boards.get(" ".join([config_spec, *overrides]))


def _best_point(tuning_runs, variant, records):
    """The chosen point among `tuning_runs` ([(point, its config at the tuning seed)]), or None
    while some tuning record is missing."""
    if len(tuning_runs) == 1:
        return tuning_runs[0][0]
    tuning = {}
    for p, config in tuning_runs:
        found = records.get(variant, config_key(config))
        if found is None:
            return None
        tuning[label(p)] = found
    return choose(tuning)


def select(all_records) -> dict[str, tuple[dict, list[dict]]]:
    """Per variant, (chosen point, its records over seeds) from records alone: the tuning runs are
    the records at the lowest seed; the point with the best validation score among them wins."""
    out = {}
    by_variant = {}
    for r in all_records:
        by_variant.setdefault(r["variant"], []).append(r)
    for v, rs in by_variant.items():
        tuning = {json.dumps(r["point"], sort_keys=True): r for r in _tuning(rs)[1]}
        point = choose(tuning)
        same = [r for r in rs if r["point"] == point]
        out[v] = (point, sorted(same, key=lambda r: r["seed"]))
    return out


def _tuning(records):
    """One variant's records -> (its grid, the longest any record names: [] for older records;
    its tuning records, those at the lowest seed, in grid order). In grid order because `choose`
    breaks exact ties by it, as the sweep did: the records' file order must not pick another
    point than the one the seeds ran at."""
    grid = max((r.get("grid") or [] for r in records), key=len)
    tune_seed = min(r["seed"] for r in records)
    at_seed = [r for r in records if r["seed"] == tune_seed]
    return grid, sorted(at_seed, key=lambda r: grid.index(r["point"]) if r["point"] in grid else len(grid))


def state_floats(config: dict):
    """Floats per layer a causal decoder of this run's attention keeps after data.max_length
    tokens (attention.state_size); None for a non-causal variant or a per-layer mixture."""
    from attn_zoo import attention
    model = config["model"]
    if model.get("layer_attention"):
        return None
    heads = model["num_heads"]
    return attention.state_size(config["attention"], config["data"]["max_length"], heads,
                                model["qkv_dim"] // heads)


def tuning_table(all_records) -> str:
    """Markdown: every variant's validation score at every grid point it ran (tuning seed)."""
    chosen = select(all_records)
    lines = ["| variant | point | seed | best val | chosen |", "|---|---|---|---|---|"]
    for v, (point, _) in chosen.items():
        rs = [r for r in all_records if r["variant"] == v]
        tune_seed = min(r["seed"] for r in rs)
        for r in sorted((r for r in rs if r["seed"] == tune_seed), key=lambda r: label(r["point"])):
            res = r["results"]
            if res.get("status") == "diverged":
                val = "diverged (non-finite loss)"
            elif score(res) != res["best_val_accuracy"]:
                val = f"loss {res['best_val_loss']:.4f}"
            else:
                val = f"{res['best_val_accuracy']:.4f}"
            lines.append(f"| {v} | {label(r['point'])} | {r['seed']} | {val} | "
                         f"{'yes' if r['point'] == point else ''} |")
    return "\n".join(lines) + "\n"


_RECORD = re.compile(r".+-[0-9a-f]{16}\.json$")


def is_records(directory) -> bool:
    """Whether `directory` holds sweep records (`<variant>-<16 hex>.json`)."""
    return os.path.isdir(directory) and any(_RECORD.match(n) for n in os.listdir(directory))


def sweep_id(record) -> str:
    """Which sweep a record belongs to: its task spec and the overrides shared by all its runs."""
    return " ".join([record["task"], *record["overrides"]])


def load_records(directories) -> list[dict]:
    """Every record in `directories` (a record found twice counts once)."""
    unique = {}
    for d in [directories] if isinstance(directories, str) else directories:
        unique.update({(r["variant"], r["key"]): r for r in Records(d).all()})
    return list(unique.values())


def leaderboards(all_records, chance=None, metric=None) -> dict[str, list[dict]]:
    """{sweep id: leaderboard rows} (compare.leaderboard_of's, plus the chosen point, the
    decoding state in floats per layer and the chosen runs' config under 'config')."""
    by_sweep = {}
    for r in all_records:
        by_sweep.setdefault(sweep_id(r), []).append(r)
    out = {}
    for sid, records in by_sweep.items():
        chosen = select(records)
        rows = compare.leaderboard_of({v: [r["results"] for r in rs] for v, (_, rs) in chosen.items()},
                                      chance=chance, metric=metric)
        for row in rows:
            point, rs = chosen[row["variant"]]
            grid, tuning = _tuning([r for r in records if r["variant"] == row["variant"]])
            untuned = _untuned(grid, tuning)
            row.update(point=label(point) + untuned + _edge(tuning, point),
                       untuned=bool(untuned),
                       state_floats=state_floats(rs[0]["config"]), config=rs[0]["config"])
        out[sid] = rows
    return out


def _untuned(grid, tuning) -> str:
    """' (tuned k of n points)' while some point of a variant's grid has no tuning record (`_tuning`'s
    pair; the records name their grid; older ones do not, and get no mark)."""
    if not grid:
        return ""
    tuned = {json.dumps(r["point"], sort_keys=True) for r in tuning}
    done = sum(json.dumps(p, sort_keys=True) in tuned for p in grid)
    return "" if done == len(grid) else f" (tuned {done} of {len(grid)} points)"


def _edge(tuning, point) -> str:
    """' (the highest learning_rate tried)' and the like when the chosen point holds a numeric field
    at an end of the 3 or more values its tuning runs tried and scores strictly above every other
    tuning run: the variant's best may lie beyond the grid. Two values cannot place an optimum
    inside them, and an exact tie (a solved task) is no evidence: both unmarked. `tuning`: the
    variant's tuning records (`_tuning`)."""
    others = [score(r["results"]) for r in tuning if r["point"] != point]
    mine = [score(r["results"]) for r in tuning if r["point"] == point]
    if not others or not mine or not max(mine) > max(others):
        return ""
    marks = []
    for field, value in point.items():
        tried = {r["point"].get(field) for r in tuning}
        if len(tried) < 3 or not all(isinstance(t, (int, float)) and not isinstance(t, bool) for t in tried):
            continue
        name = field.rsplit(".", 1)[-1]
        if value == max(tried):
            marks.append(f"the highest {name} tried")
        elif value == min(tried):
            marks.append(f"the lowest {name} tried")
    return f" ({', '.join(marks)})" if marks else ""


def summarize_records(directories, out=None, chance=None, metric=None):
    """Leaderboards of the records in `directories` (one or several, e.g. one per machine), one
    per sweep; writes leaderboard.md/.csv, tuning.md and pareto.png into `out` (several sweeps:
    one subdirectory each, and an MQAR accuracy-against-state-size figure, mqar_state.png, when
    they are MQAR). Returns {sweep id: rows}, or None when nothing is recorded."""
    from attn_zoo.train import state_figure

    directories = [directories] if isinstance(directories, str) else list(directories)
    all_records = load_records(directories)
    if not all_records:
        print(f"no finished runs recorded in {', '.join(directories)}")
        return None
    boards = leaderboards(all_records, chance=chance, metric=metric)
    for sid, rows in boards.items():
        where = out if out is None or len(boards) == 1 else os.path.join(out, slug(sid))
        print(f"## {sid}\n")
        tuning = tuning_table([r for r in all_records if sweep_id(r) == sid])
        compare.write_leaderboard([{k: v for k, v in r.items() if k != "config"} for r in rows], where,
                                  extra={"tuning.md": tuning})
        print(tuning)
    if out and state_figure.has_mqar(boards):
        path = os.path.join(out, "mqar_state.png")
        state_figure.draw(boards, path)
        print(f"wrote {path}")
    return boards


def slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9.=_-]+", "_", text.replace("configs/", "")).strip("_")[:120]
