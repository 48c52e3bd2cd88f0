"""compare/summarize: skip finished runs, aggregate seeds, write leaderboard and Pareto plot."""
import json
import os

import pytest

from attn_zoo.train import compare

CONFIG = "configs/listops.py:smoke"
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _fake_train(accuracies):
    calls = []

    def train(config, workdir):
        calls.append(workdir)
        os.makedirs(workdir, exist_ok=True)
        with open(os.path.join(workdir, "config.json"), "w") as f:
            json.dump(config.to_dict(), f)
        acc = accuracies[(config.attention.name, config.train.seed)]
        with open(os.path.join(workdir, "results.json"), "w") as f:
            json.dump({"test_accuracy": acc, "best_val_accuracy": acc, "num_params": 10,
                       "steps_per_sec": 2.0, "peak_memory_mb": 100.0, "wall_time_s": 5.0}, f)
    return train, calls


def test_compare_trains_once_then_summarizes(tmp_path, monkeypatch):
    monkeypatch.chdir(ROOT)
    accs = {("dense", 0): 0.5, ("dense", 1): 0.7, ("local", 0): 0.4, ("local", 1): 0.4}
    train, calls = _fake_train(accs)
    rows = compare.compare(CONFIG, "dense,local", [0, 1], str(tmp_path), train_fn=train)
    assert len(calls) == 4
    dense = next(r for r in rows if r["variant"] == "dense")
    assert dense["seeds"] == 2 and dense["test_accuracy"] == pytest.approx(0.6)
    assert dense["test_accuracy_std"] == pytest.approx(0.1414, abs=1e-4)
    assert [r["variant"] for r in rows] == ["dense", "local"]  # best first
    for name in ("leaderboard.md", "leaderboard.csv", "pareto.png"):
        assert (tmp_path / name).exists(), name
    compare.compare(CONFIG, "dense,local", [0, 1], str(tmp_path), train_fn=train)
    assert len(calls) == 4  # finished runs are summarized, not retrained


def test_all_variants_on_a_causal_task_skips_noncausal(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(ROOT)
    names = compare.select_variants("all", CONFIG, ["--config.model.head=lm"])
    from attn_zoo import attention
    assert names and all(attention.get(n).supports_causal for n in names)
    assert "skipping non-causal variants" in capsys.readouterr().out


def test_summarize_without_runs_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="no finished runs"):
        compare.summarize([str(tmp_path)])
