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


# --- honest leaderboards: 95% Student-t intervals, ties with the best, chance, bits per byte ---

import csv  # noqa: E402

from attn_zoo.train import stats  # noqa: E402


def _runs(tmp_path, per_variant, head="classifier", extra=None):
    """Fake finished workdirs: {variant: [metric per seed]} (accuracy, or bits per byte for lm)."""
    for name, values in per_variant.items():
        for seed, x in enumerate(values):
            d = tmp_path / name / f"seed{seed}"
            d.mkdir(parents=True)
            (d / "config.json").write_text(json.dumps({"attention": {"name": name}, "model": {"head": head}}))
            res = {"test_accuracy": x, "best_val_accuracy": x, "num_params": 10, "steps_per_sec": 2.0,
                   "peak_memory_mb": 100.0, "wall_time_s": 5.0, **(extra or {})}
            if head == "lm":
                res |= {"test_accuracy": 0.3, "test_bits_per_token": x, "test_bits_per_byte": x}
            (d / "results.json").write_text(json.dumps(res))
    return str(tmp_path)


@pytest.mark.parametrize("df,t", [(1, 12.7062), (2, 4.3027), (3, 3.1824), (4, 2.7764), (9, 2.2622),
                                  (10, 2.2281), (29, 2.0452), (30, 2.0423), (120, 1.9799)])
def test_t_quantile_matches_the_table(df, t):
    assert stats.t_quantile(0.975, df) == pytest.approx(t, abs=1e-4)


def test_t_interval_by_hand():
    ci = stats.t_interval([0.5, 0.6, 0.7])  # mean 0.6, s = 0.1, t_{0.975,2} = 4.303
    assert ci.n == 3 and ci.mean == pytest.approx(0.6) and ci.std == pytest.approx(0.1)
    assert ci.half == pytest.approx(4.302653 * 0.1 / 3 ** 0.5) == pytest.approx(0.2484, abs=1e-4)
    assert (ci.low, ci.high) == (pytest.approx(0.3516, abs=1e-4), pytest.approx(0.8484, abs=1e-4))
    one = stats.t_interval([0.42, None])
    assert one.n == 1 and one.mean == 0.42 and one.low is None and one.high is None and one.half is None


def test_ties_chance_and_csv(tmp_path):
    out = tmp_path / "out"
    root = _runs(tmp_path / "runs", {"dense": [0.5, 0.6, 0.7], "local": [0.45, 0.5, 0.55],
                                     "linear": [0.10, 0.12, 0.14], "lsh": [0.3]})
    rows = compare.summarize([root], out=str(out), chance=0.16)
    by = {r["variant"]: r for r in rows}
    assert [r["variant"] for r in rows] == ["dense", "local", "lsh", "linear"]  # highest mean first
    d = by["dense"]
    assert d["n"] == 3 and d["mean"] == pytest.approx(0.6) and d["ci_half_width"] == pytest.approx(0.2484, abs=1e-4)
    assert d["tied_with_best"] and d["is_best"]
    assert by["local"]["tied_with_best"] and not by["local"]["is_best"]  # [0.376, 0.624] overlaps dense
    assert not by["linear"]["tied_with_best"]  # [0.070, 0.170] lies below dense's [0.352, 0.848]
    assert not by["lsh"]["tied_with_best"]  # one seed: its mean 0.3 is a point outside dense's interval
    assert by["lsh"]["n"] == 1 and by["lsh"]["ci_low"] is None
    assert by["dense"]["left_chance"] and by["lsh"]["left_chance"]
    assert by["linear"]["left_chance"]  # upper end 0.170 > 0.16
    rows2 = compare.summarize([root], chance=0.2)
    assert not {r["variant"]: r for r in rows2}["linear"]["left_chance"]  # upper end 0.170 <= 0.2
    text = (out / "leaderboard.md").read_text()
    assert "test accuracy, higher is better" in text and "chance: 0.1600" in text
    assert "| dense | 3 | 0.6000 ± 0.2484 | [0.3516, 0.8484] | best | left chance |" in text
    assert "| local | 3 | 0.5000 ± 0.1242 |" in text and "| ≈ best |" in text
    assert "| linear | 3 | 0.1200 ± 0.0497 | [0.0703, 0.1697] | worse | ≈ chance |" in text  # contains 0.16
    assert "| lsh | 1 | 0.3000 | none (n = 1) | worse | left chance |" in text
    with open(out / "leaderboard.csv", newline="") as f:
        table = {r["variant"]: r for r in csv.DictReader(f)}
    for col in ("mean", "ci_low", "ci_high", "n", "tied_with_best", "left_chance", "chance", "higher_is_better"):
        assert col in table["dense"], col
    assert table["local"]["tied_with_best"] == "1" and table["linear"]["tied_with_best"] == "0"
    assert table["lsh"]["ci_low"] == "" and table["lsh"]["n"] == "1"
    assert float(table["dense"]["ci_high"]) == pytest.approx(0.8484, abs=1e-4)
    # every column but the variant is a number or empty (experiments/lra_table.py reads them as floats)
    assert all(v == "" or float(v) is not None for r in table.values() for k, v in r.items() if k != "variant")


def test_never_left_chance_and_unknown_chance(tmp_path):
    root = _runs(tmp_path, {"dense": [0.8, 0.9], "bad": [0.14, 0.16], "solo": [0.15]})
    by = {r["variant"]: r for r in compare.summarize([root], chance=0.16)}
    assert by["dense"]["left_chance"]
    assert by["bad"]["ci_high"] > 0.16 and by["bad"]["left_chance"]  # wide interval (n = 2) reaches above
    assert not by["bad"]["clear_of_chance"] and by["dense"]["clear_of_chance"]
    # two seeds: t_{0.975,1} = 12.7, so dense's interval [0.2147, 1.4853] reaches bad's: tied
    assert "| bad | 2 | 0.1500 ± 0.1271 | [0.0229, 0.2771] | ≈ best | ≈ chance |" in \
        compare.markdown(list(by.values()))
    assert not by["solo"]["left_chance"]  # n = 1: its mean 0.15 does not exceed chance
    text = compare.markdown(compare.leaderboard(compare._finished([root]), chance=0.16))
    assert "| solo | 1 | 0.1500 | none (n = 1) | worse | never left chance |" in text
    unknown = compare.leaderboard(compare._finished([root]))
    assert all(r["left_chance"] is None and r["chance"] is None for r in unknown)
    text = compare.markdown(unknown)
    assert "chance: unknown" in text and "| chance unknown |" in text


def test_chance_from_results_json(tmp_path):
    root = _runs(tmp_path, {"dense": [0.15, 0.17, 0.16]}, extra={"chance_accuracy": 0.2})
    (row,) = compare.summarize([root])
    assert row["chance"] == 0.2 and not row["left_chance"]  # upper end ~0.185 <= 0.2
    assert compare.summarize([root], chance=0.1)[0]["left_chance"]  # an explicit chance wins


def test_bits_per_byte_lower_is_better(tmp_path):
    out = tmp_path / "out"
    root = _runs(tmp_path / "runs", {"dense": [2.0, 2.1, 2.2], "local": [2.1, 2.2, 2.3], "linear": [3.0, 3.1, 3.2]},
                 head="lm")
    rows = compare.summarize([root], out=str(out), chance=8.0)  # uniform over 256 bytes
    assert [r["variant"] for r in rows] == ["dense", "local", "linear"]  # lowest bits first
    by = {r["variant"]: r for r in rows}
    assert by["dense"]["metric"] == "test_bits_per_byte" and by["dense"]["higher_is_better"] is False
    assert by["dense"]["is_best"] and by["dense"]["mean"] == pytest.approx(2.1)
    assert by["dense"]["ci_half_width"] == pytest.approx(0.2484, abs=1e-4)
    assert by["local"]["tied_with_best"] and not by["linear"]["tied_with_best"]
    assert all(r["left_chance"] for r in rows)  # every lower end below 8 bits
    worse = {r["variant"]: r for r in compare.summarize([root], chance=2.8)}
    assert not worse["linear"]["left_chance"]  # its lower end 2.8516 is not below 2.8 bits
    assert worse["dense"]["left_chance"]  # lower end 1.8516 < 2.8
    text = (out / "leaderboard.md").read_text()
    assert "test bits per byte, lower is better" in text and "chance: 8.0000" in text
    assert "test bits per byte ↓ (mean ± 95% CI)" in text
    assert "| dense | 3 | 2.1000 ± 0.2484 | [1.8516, 2.3484] | best | left chance | 0.3000 |" in text
    assert "| linear | 3 | 3.1000 ± 0.2484 | [2.8516, 3.3484] | worse |" in text
    with open(out / "leaderboard.csv", newline="") as f:
        table = {r["variant"]: r for r in csv.DictReader(f)}
    assert table["dense"]["higher_is_better"] == "0" and float(table["dense"]["test_bits_per_byte"]) == 2.1


def test_chance_is_the_majority_target_and_the_unigram_entropy():
    import numpy as np

    from attn_zoo.data import Split, chance
    cls = Split(inputs=np.zeros((3, 4), np.int32), mask=np.ones((3, 4), bool), labels=np.array([2, 2, 1]))
    assert chance(cls, "cls", 3) == {"accuracy": pytest.approx(2 / 3)}
    # per-token labels (-1 unscored): the majority among the scored ones
    tok = Split(inputs=np.zeros((2, 3), np.int32), mask=np.ones((2, 3), bool),
                labels=np.array([[-1, 5, 5], [-1, -1, 7]]))
    assert chance(tok, "lm", 8) == {"accuracy": pytest.approx(2 / 3)}
    # next-byte LM: targets are inputs[:, 1:] under the mask; bits = their entropy
    inputs = np.array([[9, 1, 1, 2, 2], [9, 1, 2, 0, 0]], np.int32)
    mask = np.array([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0]], bool)
    lm = Split(inputs=inputs, mask=mask, labels=np.zeros(2, np.int32))
    got = chance(lm, "lm", 256)  # targets 1,1,2,2,1,2: p = 1/2, 1/2
    assert got["accuracy"] == pytest.approx(0.5) and got["bits_per_byte"] == pytest.approx(1.0)


def test_ranking_metric_is_the_runs_own_and_mqar_ranks_by_accuracy():
    assert compare.pick_metric([{"metric": "test_accuracy", "test_bits_per_token": 1.0}]) == "test_accuracy"
    assert compare.pick_metric([{"test_bits_per_byte": 1.0, "test_bits_per_token": 1.0}]) == "test_bits_per_byte"
    # records written before results.json named its metric: MQAR (queries only) by accuracy
    assert compare.pick_metric([{"task": "mqar", "test_bits_per_byte": 0.1}]) == "test_accuracy"
