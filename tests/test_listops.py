"""ListOps: generator (LRA algorithm, length rule, determinism), evaluator, reader, batching."""
import os

import ml_collections
import numpy as np
import pytest

from attn_zoo import data
from attn_zoo.data import listops


def _gen(out, **kw):
    args = dict(train=60, val=10, test=10, min_length=8, max_length=64, max_depth=10, max_args=10, seed=0)
    args.update(kw)
    return listops.generate(str(out), **args)


def _rows(path):
    with open(path, encoding="utf-8") as f:
        assert f.readline() == "Source\tTarget\n"
        return [line.rstrip("\n").split("\t") for line in f]


@pytest.mark.parametrize("source,value", [
    ("( ( ( [MAX 2 ) 9 ) ] )", 9),
    ("[MIN 3 [MAX 1 0 ] 2 ]", 1),
    ("[MED 1 2 9 7 ]", 4),  # int(median 4.5)
    ("[MED 8 1 5 ]", 5),
    ("[SM 5 6 7 ]", 8),
    ("[SM [MED 1 5 9 ] [MIN 4 3 ] ]", 8),
    ("7", 7),
])
def test_evaluate_hand_made(source, value):
    assert listops.evaluate(source) == value


def test_evaluate_rejects_unbalanced():
    with pytest.raises(ValueError, match="unbalanced"):
        listops.evaluate("[MAX 1 2")


def test_vocabulary_is_fixed_sorted_and_complete():
    assert listops.VOCAB[0] == listops.PAD
    assert list(listops.VOCAB[1:]) == sorted(listops.VOCAB[1:])
    assert set(listops.VOCAB[1:]) == {str(d) for d in range(10)} | set(listops.OPERATORS) | {"]"}


def test_generator_length_rule_labels_and_arity(tmp_path):
    counts = _gen(tmp_path, max_args=4)
    assert counts == {"train": 60, "val": 10, "test": 10}
    sources = []
    for split in listops.SPLITS:
        for source, target in _rows(tmp_path / f"basic_{split}.tsv"):
            assert 8 < len(listops.tokenize(source)) < 64
            assert listops.evaluate(source) == int(target)
            sources.append(source)
            stack = []  # every operator has 2..max_args arguments
            for tok in listops.tokenize(source):
                if tok in listops.OPERATORS:
                    stack.append(0)
                elif tok == "]":
                    assert 2 <= stack.pop() <= 4
                    if stack:
                        stack[-1] += 1
                elif stack:
                    stack[-1] += 1
    assert len(set(sources)) == len(sources), "duplicates across or within splits"


def test_generator_is_deterministic(tmp_path):
    _gen(tmp_path / "a")
    _gen(tmp_path / "b")
    _gen(tmp_path / "c", seed=1)
    read = lambda d: (tmp_path / d / "basic_train.tsv").read_text()  # noqa: E731
    assert read("a") == read("b")
    assert read("a") != read("c")


def _data_config(d, max_length=64, generate=False):
    return ml_collections.ConfigDict(dict(task="listops", dir=str(d), max_length=max_length, generate=generate))


def test_reader_encodes_with_explicit_mask(tmp_path):
    (tmp_path / "basic_train.tsv").write_text("Source\tTarget\n( ( [MAX 2 ) 9 ] )\t9\n[SM 1 2 ]\t3\n")
    split = listops.read_tsv(str(tmp_path / "basic_train.tsv"), max_length=6)
    ids = listops.TOKEN_ID
    np.testing.assert_array_equal(split.inputs[0], [ids["[MAX"], ids["2"], ids["9"], ids["]"], 0, 0])
    np.testing.assert_array_equal(split.mask[1], [True, True, True, True, False, False])
    np.testing.assert_array_equal(split.labels, [9, 3])


@pytest.mark.parametrize("line,match", [
    ("[MAX 1 2 ]", "basic_train.tsv:3"),            # no Target column
    ("[MAX 1 2 ]\tx", "basic_train.tsv:3"),         # Target not a digit
    ("[MAX 1 2 ]\t12", "basic_train.tsv:3"),        # Target out of range
    ("[MAX 1 foo ]\t2", "basic_train.tsv:3.*foo"),  # unknown token
])
def test_reader_malformed_row_names_file_and_line(tmp_path, line, match):
    path = tmp_path / "basic_train.tsv"
    path.write_text(f"Source\tTarget\n[MIN 1 2 ]\t1\n{line}\n")
    with pytest.raises(ValueError, match=match):
        listops.read_tsv(str(path), max_length=16)


def test_reader_bad_header(tmp_path):
    (tmp_path / "basic_train.tsv").write_text("src\ttgt\n")
    with pytest.raises(ValueError, match="basic_train.tsv:1.*header"):
        listops.read_tsv(str(tmp_path / "basic_train.tsv"), max_length=16)


def test_missing_data_names_files_and_command(tmp_path):
    with pytest.raises(FileNotFoundError) as e:
        data.load(_data_config(tmp_path / "none"))
    msg = str(e.value)
    assert "basic_train.tsv" in msg and "basic_test.tsv" in msg
    assert f"attn-zoo data listops --out {tmp_path / 'none'}" in msg


def test_load_generates_when_asked(tmp_path):
    cfg = _data_config(tmp_path / "gen", generate=True)
    cfg.generator = dict(train=20, val=5, test=5, min_length=4, max_depth=10, max_args=10, seed=0)
    task = data.load(cfg)
    assert {k: len(v) for k, v in task.splits.items()} == {"train": 20, "val": 5, "test": 5}
    assert task.vocab_size == len(listops.VOCAB) and task.num_classes == 10
    assert sorted(os.listdir(tmp_path / "gen")) == ["basic_test.tsv", "basic_train.tsv", "basic_val.tsv"]


def _split(n=10, length=4):
    return data.Split(inputs=np.arange(n * length, dtype=np.int32).reshape(n, length),
                      mask=np.ones((n, length), bool), labels=np.arange(n, dtype=np.int32))


def test_train_batches_are_a_pure_function_of_seed_and_step():
    split = _split()
    a = [data.train_batch(split, s, 3, seed=5)["labels"] for s in range(6)]
    b = [data.train_batch(split, s, 3, seed=5)["labels"] for s in reversed(range(6))][::-1]
    np.testing.assert_array_equal(a, b)
    epoch0 = np.concatenate(a[:3])  # 10 // 3 = 3 batches per epoch, no repeats inside an epoch
    assert len(set(epoch0.tolist())) == 9
    assert not np.array_equal(np.concatenate(a[3:]), epoch0)  # reshuffled next epoch
    assert not np.array_equal(data.train_batch(split, 0, 3, seed=6)["labels"], a[0])


def test_eval_batches_cover_each_example_once():
    batches = list(data.eval_batches(_split(n=7), 3))
    assert [b["inputs"].shape[0] for b in batches] == [3, 3, 3]
    labels = np.concatenate([b["labels"][b["weight"] > 0] for b in batches])
    np.testing.assert_array_equal(labels, np.arange(7))


def test_reader_names_file_and_line_of_bad_bytes_and_refuses_empty_splits(tmp_path):
    from attn_zoo.data import check, listops
    bad = tmp_path / "basic_train.tsv"
    bad.write_bytes(b"Source\tTarget\n( [MAX 1 2 ] )\t2\n( [MIN 3 \xff ] )\t3\n")
    with pytest.raises(ValueError, match=r"basic_train.tsv:3: not UTF-8 \(byte 0xff at column 10\)"):
        listops.read_tsv(str(bad), 64)
    empty = tmp_path / "basic_val.tsv"
    empty.write_text("Source\tTarget\n")
    with pytest.raises(ValueError, match="basic_val.tsv: no examples after the header"):
        listops.read_tsv(str(empty), 64)
    report = check.check("listops", str(tmp_path))
    assert not report.ok and any("no examples" in p for p in report.problems)


def test_a_long_generation_reports_its_progress(tmp_path, capsys):
    """Every report_every_s seconds (here: every row) a line on stderr says how far it is."""
    listops.generate(str(tmp_path), train=3, val=1, test=1, min_length=8, max_length=64, max_depth=3,
                     max_args=3, seed=0, report_every_s=0.0)
    lines = capsys.readouterr().err.splitlines()
    assert lines and all(line.startswith("listops: generated ") for line in lines), lines
    assert lines[-1].endswith(f"/5 expressions for {tmp_path}"), lines[-1]


def test_baselines_script_reads_rows_like_training(tmp_path):
    """experiments/listops_baselines.py: nesting depth from the reader's ids, and the
    outermost-operator rule on generated data whose operators nest at most 2 deep."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("listops_baselines", "experiments/listops_baselines.py")
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    ids = [listops.TOKEN_ID[t] for t in "[MAX 2 [MIN 3 4 ] [SM 1 [MED 5 6 ] ] ]".split()]
    assert script._depths(np.array([ids + [0, 0], ids[:2] + [0] * len(ids)])).tolist() == [3, 1]
    listops.generate(str(tmp_path), train=200, val=20, test=40, min_length=8, max_length=64,
                     max_depth=3, max_args=10, seed=0)
    out = script.baselines(str(tmp_path), max_length=64)
    assert out["test rows"] == 40 and set(out["train depth (nesting: rows)"]) <= {1, 2}
    assert 0 < out["test majority"] <= 1 and 0 <= out["outermost-operator majority"] <= 1
