"""attn-zoo sweep: grid parsing, selection on validation, seeds at the chosen point, records
that make finished runs free, and shards that merge into the leaderboard of one run."""
import json
import os

import pytest

from attn_zoo.train import sweep

SPEC = "configs/mqar.py:smoke"
GRID = ["train.learning_rate=1e-3,3e-3,1e-2"]
BEST_LR = {"blockwise": 3e-3, "linear": 1e-2}  # the fake trainer's validation optimum per variant


class FakeTrainer:
    """Results as a function of (variant, lr, seed): validation peaks at BEST_LR[variant]; test
    accuracy adds a seed effect. Counts calls, so reruns can be seen to train nothing."""

    def __init__(self):
        self.calls = []

    def __call__(self, config, run_dir):
        v, lr, seed = config.attention.name, config.train.learning_rate, config.train.seed
        self.calls.append((v, lr, seed))
        val = 0.9 - abs(lr - BEST_LR[v]) * 10
        return {"status": "done", "test_accuracy": val - 0.01 * seed, "best_val_accuracy": val,
                "chance_accuracy": 0.01, "steps_per_sec": 10.0, "num_params": 100,
                "peak_memory_mb": None, "wall_time_s": 1.0}


def test_parse_grid_and_points():
    grid = sweep.parse_grid(["train.learning_rate=1e-3,3e-3", "--config.model.emb_dim=64,128"])
    assert grid == [("train.learning_rate", [1e-3, 3e-3]), ("model.emb_dim", [64, 128])]
    pts = sweep.points(grid)
    assert len(pts) == 4 and pts[1] == {"train.learning_rate": 1e-3, "model.emb_dim": 128}
    assert sweep.points([]) == [{}]
    with pytest.raises(ValueError, match="expected field=v1,v2"):
        sweep.parse_grid(["train.learning_rate"])
    with pytest.raises(ValueError, match="given twice"):
        sweep.parse_grid(["train.seed=1", "train.seed=2"])


def test_selects_best_validation_point_then_runs_seeds_there(tmp_path):
    fake = FakeTrainer()
    rows = sweep.sweep(SPEC, "blockwise,linear", GRID, seeds=[0, 1, 2], workdir=str(tmp_path),
                       train_fn=fake)
    # 3 tuning runs per variant at seed 0, then seeds 1 and 2 at the chosen point only
    assert len(fake.calls) == 2 * (3 + 2)
    for v, lr in BEST_LR.items():
        assert sorted(s for (n, r, s) in fake.calls if n == v and r == lr) == [0, 1, 2]
        assert {s for (n, r, s) in fake.calls if n == v and r != lr} == {0}
    by = {r["variant"]: r for r in rows}
    # linear's optimum is the grid's top point: marked, since its best may lie beyond the grid
    assert by["blockwise"]["point"] == "learning_rate=0.003"
    assert by["linear"]["point"] == "learning_rate=0.01 (the highest learning_rate tried)"
    assert by["blockwise"]["n"] == 3 and by["blockwise"]["mean"] == pytest.approx(0.89)
    assert os.path.exists(tmp_path / "leaderboard.md") and os.path.exists(tmp_path / "tuning.md")
    # a rerun trains nothing: every run has a record
    again = FakeTrainer()
    sweep.sweep(SPEC, "blockwise,linear", GRID, seeds=[0, 1, 2], workdir=str(tmp_path), train_fn=again)
    assert again.calls == []


def test_records_are_keyed_by_the_full_config(tmp_path):
    fake = FakeTrainer()
    sweep.sweep(SPEC, "blockwise", GRID, seeds=[0], workdir=str(tmp_path), train_fn=fake)
    sweep.sweep(SPEC, "blockwise", GRID, seeds=[0], workdir=str(tmp_path), train_fn=fake,
                overrides=["--config.train.num_steps=4"])  # another config: trained again
    assert len(fake.calls) == 6
    records = sweep.Records(str(tmp_path / "records")).all()
    assert len({r["key"] for r in records}) == 6
    assert all(json.dumps(r["config"]) for r in records)


def test_an_option_left_at_its_default_is_not_part_of_the_key(tmp_path):
    """A record made before a variant gained an option (its default keeping the old behaviour)
    still matches; a non-default value is another config; `rekey` renames old-style records."""
    from attn_zoo import configs

    config = configs.load("configs/mqar.py:local,smoke")
    window = config.attention.window
    key = sweep.config_key(config)
    older = config.to_dict()
    del older["attention"]["block"]  # as if `block` had not existed yet
    import ml_collections
    assert sweep.config_key(ml_collections.ConfigDict(older)) == key
    assert sweep.config_key(configs.load("configs/mqar.py:local,smoke",
                                         [f"--config.attention.window={window + 1}"])) != key
    records = sweep.Records(str(tmp_path))
    records.put({"key": "0" * 16, "variant": "local", "config": config.to_dict(), "results": {},
                 "task": "mqar", "point": "", "seed": 0, "overrides": []})
    assert sweep.rekey(str(tmp_path)) == 1 and sweep.rekey(str(tmp_path)) == 0
    assert records.get("local", key) is not None and records.get("local", "0" * 16) is None


def test_two_shards_merge_into_the_leaderboard_of_one_run(tmp_path):
    whole = sweep.sweep(SPEC, "blockwise,linear", GRID, seeds=[0, 1, 2], workdir=str(tmp_path / "one"),
                        train_fn=FakeTrainer())
    shards = [FakeTrainer(), FakeTrainer()]
    for i in (0, 1):  # each shard on its own machine, with its own records directory
        sweep.sweep(SPEC, "blockwise,linear", GRID, seeds=[0, 1, 2], workdir=str(tmp_path / f"s{i}"),
                    records=str(tmp_path / "shared"), shard=(i, 2), train_fn=shards[i])
    # disjoint: no run trained twice across shards
    calls = shards[0].calls + shards[1].calls
    assert len(calls) == len(set(calls))
    # shard 0 ran before shard 1's tuning records existed: its seed runs for those are pending
    sweep.sweep(SPEC, "blockwise,linear", GRID, seeds=[0, 1, 2], workdir=str(tmp_path / "s0"),
                records=str(tmp_path / "shared"), shard=(0, 2), train_fn=shards[0])
    calls = shards[0].calls + shards[1].calls
    assert len(calls) == len(set(calls)) == 2 * (3 + 2)
    (merged,) = sweep.summarize_records(str(tmp_path / "shared")).values()
    keep = ("variant", "point", "n", "mean", "ci_low", "ci_high", "tied_with_best", "left_chance")
    assert [{k: r[k] for k in keep} for r in merged] == [{k: r[k] for k in keep} for r in whole]


def test_shard_out_of_range_is_refused(tmp_path):
    with pytest.raises(ValueError, match="shard 2/2"):
        sweep.sweep(SPEC, "blockwise", GRID, workdir=str(tmp_path), shard=(2, 2), train_fn=FakeTrainer())


def test_language_models_are_selected_on_validation_loss():
    low, high = ({"best_val_accuracy": 0.5, "best_val_loss": l, "test_bits_per_token": 1.0} for l in (1.0, 2.0))
    tuning = {"a": {"point": {"lr": 1}, "results": high}, "b": {"point": {"lr": 2}, "results": low}}
    assert sweep.choose(tuning) == {"lr": 2}


def test_sweep_command_trains_and_summarizes(tmp_path):
    from attn_zoo import cli
    args = ["sweep", "--config", SPEC, "--variants", "blockwise", "--grid", "train.learning_rate=1e-3,1e-2",
            "--seeds", "0,1", "--workdir", str(tmp_path)]
    assert cli.main(args) == 0
    records = sweep.Records(str(tmp_path / "records")).all()
    assert len(records) == 3 and all(r["results"]["status"] == "done" for r in records)
    assert "chance_accuracy" in records[0]["results"] and "best_val_loss" in records[0]["results"]
    assert cli.main(["summarize", str(tmp_path / "records"), "--out", str(tmp_path / "s")]) == 0
    text = (tmp_path / "s" / "leaderboard.md").read_text()
    assert "chosen point" in text and "blockwise" in text


def test_a_diverged_point_is_recorded_and_never_chosen(tmp_path):
    class Diverging(FakeTrainer):
        def __call__(self, config, run_dir):
            if config.train.learning_rate == 1e-2:
                self.calls.append(("diverged", config.train.seed))
                raise FloatingPointError("loss is nan at step 3")
            return super().__call__(config, run_dir)

    fake = Diverging()
    rows = sweep.sweep(SPEC, "linear", GRID, seeds=[0, 1], workdir=str(tmp_path), train_fn=fake)
    assert rows[0]["point"] == "learning_rate=0.003" and rows[0]["n"] == 2
    assert "diverged" in (tmp_path / "tuning.md").read_text()
    again = Diverging()  # the diverged run has a record: not tried again
    sweep.sweep(SPEC, "linear", GRID, seeds=[0, 1], workdir=str(tmp_path), train_fn=again)
    assert again.calls == []


def test_a_signal_stops_the_whole_sweep(tmp_path):
    class Interrupted(FakeTrainer):
        def __call__(self, config, run_dir):
            self.calls.append(config.train.learning_rate)
            return {"status": "interrupted", "reason": "SIGTERM", "step": 1}

    fake = Interrupted()
    with pytest.raises(SystemExit) as stop:
        sweep.sweep(SPEC, "blockwise,linear", GRID, seeds=[0], workdir=str(tmp_path), train_fn=fake)
    assert stop.value.code == 143 and len(fake.calls) == 1  # nothing trained after the signal


def test_a_partly_tuned_variant_is_marked(tmp_path):
    fake = FakeTrainer()
    sweep.sweep(SPEC, "linear", GRID, seeds=[0], workdir=str(tmp_path), train_fn=fake)
    records = sweep.Records(str(tmp_path / "records"))
    for r in records.all():  # drop two of the three tuning runs, as an unfinished sweep leaves them
        if r["point"]["train.learning_rate"] != 1e-2:
            os.remove(records.path(r["variant"], r["key"]))
    (rows,) = sweep.summarize_records(str(tmp_path / "records")).values()
    assert rows[0]["point"] == "learning_rate=0.01 (tuned 1 of 3 points)" and rows[0]["untuned"]
    # the state figure draws chosen points only: not a variant whose tuning is unfinished
    from attn_zoo.train import state_figure
    mqar = {**rows[0], "config": {"data": {"task": "mqar", "max_length": 64, "num_kv_pairs": 4},
                                  "model": {"emb_dim": 64}}}
    assert list(state_figure._mqar_rows({"s": [mqar]})) == []
    assert len(list(state_figure._mqar_rows({"s": [{**mqar, "untuned": False}]}))) == 1


def test_an_exact_tie_is_read_back_at_the_point_the_seeds_ran(tmp_path):
    """Two points tie on validation: the sweep runs the seeds at the earlier grid point, and the
    leaderboard built from the records (in whatever order they are read) chooses that one too."""
    class Tie(FakeTrainer):
        def __call__(self, config, run_dir):
            return {**super().__call__(config, run_dir), "best_val_accuracy": 1.0}

    fake = Tie()
    sweep.sweep(SPEC, "blockwise", GRID, seeds=[0, 1], workdir=str(tmp_path), train_fn=fake)
    assert [(r, s) for _, r, s in fake.calls if s == 1] == [(1e-3, 1)]
    records = sweep.Records(str(tmp_path / "records")).all()
    for order in (records, records[::-1]):
        point, same = sweep.select(order)["blockwise"]
        assert point == {"train.learning_rate": 1e-3} and [r["seed"] for r in same] == [0, 1], order
    # the lowest point wins only by the tie: no edge mark
    (rows,) = sweep.summarize_records(str(tmp_path / "records")).values()
    assert rows[0]["point"] == "learning_rate=0.001"
