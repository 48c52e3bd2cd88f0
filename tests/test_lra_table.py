"""experiments/lra_table.py: the earlier CPU suite's variants × tasks table and CSV (superseded as
the README front table's source by experiments/zoo_table.py)."""
import csv
import importlib.util
import pathlib

import numpy as np
import pytest

from attn_zoo.data.dataset import Split, Task

ROOT = pathlib.Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location("lra_table", ROOT / "experiments" / "lra_table.py")
lra_table = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(lra_table)


def _row(variant, acc, std, seeds=3):
    return {"variant": variant, "seeds": float(seeds), "test_accuracy": acc, "test_accuracy_std": std,
            "best_val_accuracy": acc, "num_params": 100.0, "steps_per_sec": 10.0,
            "peak_memory_mb": 500.0, "wall_time_s": 12.5}


def _task(name, rows, wall_s=600.0):
    settings = {"length": 256, "layers": 1, "emb": 32, "heads": 2, "mlp": 64, "steps": 200,
                "batch": 16, "train size": 2000, "test size": 300}
    return {"name": name, "config": f"configs/{name}.py:cpu", "workdir": f"runs/lra-cpu/{name}",
            "settings": settings, "chance": 0.158, "rows": rows, "wall_s": wall_s}


def test_build_table_and_csv():
    tasks = [_task("listops", [_row("dense", 0.31, 0.01), _row("nystrom", 0.25, 0.02, seeds=2)]),
             _task("bytelm", [_row("dense", 0.42, 0.005)], wall_s=None)]
    text, rows = lra_table.build(tasks, machine="AMD EPYC, 2 cores", command="bash experiments/lra_cpu.sh",
                                 compare_args="--variants all --seeds 0,1,2")
    assert "AMD EPYC, 2 cores" in text and "bash experiments/lra_cpu.sh" in text
    assert "attn-zoo compare --config configs/listops.py:cpu --variants all --seeds 0,1,2" in text
    assert "| ListOps | 256 | 1 | 32 | 2 | 64 | 200 | 16 | 2,000 | 300 | 0.1580 | 600 |" in text
    assert "| byte LM | 256 |" in text and "| 0.1580 | — |" in text  # no wall_s file: a dash
    assert "| dense | **0.310 ± 0.010** | **0.420 ± 0.005** |" in text
    assert "| nystrom | 0.250 ± 0.020 (2) | — |" in text  # fewer seeds shown; non-causal: not run
    assert [(r["variant"], r["task"]) for r in rows] == [("dense", "listops"), ("dense", "bytelm"),
                                                         ("nystrom", "listops")]
    assert rows[0] == {"variant": "dense", "task": "listops", "mean": 0.31, "std": 0.01, "n_seeds": 3,
                       "steps_per_s": 10.0, "wall_s": 12.5}


def test_read_leaderboard_parses_compare_csv(tmp_path):
    rows = [_row("dense", 0.5, 0.0, seeds=1) | {"peak_memory_mb": None}]
    with open(tmp_path / "leaderboard.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    assert lra_table.read_leaderboard(str(tmp_path)) == rows


@pytest.mark.parametrize("head,expected", [("classifier", 0.75), ("token", 2 / 3), ("lm", 0.6)])
def test_majority_rate(head, expected):
    if head == "classifier":
        split = Split(np.zeros((4, 3), np.int32), np.ones((4, 3), bool), np.array([1, 1, 0, 1]))
    elif head == "token":
        split = Split(np.zeros((2, 3), np.int32), np.ones((2, 3), bool), np.array([[2, -1, 2], [-1, 5, -1]]))
    else:  # next bytes: 7 7 | 8 9 | 7 (row 3's last byte is padding)
        split = Split(np.array([[1, 7, 7], [2, 8, 9], [3, 7, 0]]),
                      np.array([[1, 1, 1], [1, 1, 1], [1, 1, 0]], bool), np.zeros(3, np.int32))
    task = Task("t", {"test": split}, vocab_size=10, num_classes=10)
    assert lra_table.majority_rate(task, head) == pytest.approx(expected)


@pytest.mark.parametrize("task", [name for name, _ in lra_table.TASKS])
def test_every_variant_resolves_with_the_cpu_preset(task):
    from attn_zoo import attention, configs
    from attn_zoo.attention.variants import mixture
    for name in attention.names():
        if task == "bytelm" and not attention.get(name).supports_causal:
            continue
        c = configs.load(f"{ROOT}/configs/{task}.py:{name},cpu")
        assert c.data.max_length <= 1024 and c.model.num_layers == 1
        if name == "mixture":  # the groups must cover exactly the model's heads
            assert sum(mixture.head_counts(c.attention.groups, c.model.num_heads)) == c.model.num_heads
