"""Readers for LRA's real formats (aclImdb, AAN TSV, CIFAR-10 pickles), byte LM, and --check."""
import os
import pickle

import ml_collections
import numpy as np
import pytest

from attn_zoo import data
from attn_zoo.data import bytelm, check, image, retrieval, text


def _cfg(**kw):
    return ml_collections.ConfigDict(kw)


# ---- text (IMDb) -------------------------------------------------------------------------------

def test_text_reads_bytes_with_explicit_mask(tmp_path):
    text.write_fixture(str(tmp_path), per_folder=3)
    task = data.load(_cfg(task="text", dir=str(tmp_path), max_length=300, validation="test", holdout=2, seed=0))
    train = task.splits["train"]
    assert len(train) == 6 and task.num_classes == 2 and task.vocab_size == 256
    assert train.labels.tolist() == [0, 0, 0, 1, 1, 1]  # neg then pos
    first = open(tmp_path / "aclImdb/train/neg/0_2.txt", "rb").read()
    np.testing.assert_array_equal(train.inputs[0, :len(first)], np.frombuffer(first, np.uint8))
    assert train.mask[np.array([0])][0].sum() == len(first)
    assert task.splits["val"] is task.splits["test"]  # LRA validated on the test set
    batch = data.train_batch(train, 0, 2, seed=0)
    assert batch["mask"].shape == (2, 300) and batch["mask"].dtype == bool


def test_text_truncates_and_holds_out(tmp_path):
    text.write_fixture(str(tmp_path), per_folder=4)
    task = data.load(_cfg(task="text", dir=str(tmp_path), max_length=8, validation="holdout", holdout=3, seed=0))
    assert len(task.splits["train"]) == 5 and len(task.splits["val"]) == 3
    assert np.asarray(task.splits["train"].mask).all()  # every review is longer than 8 bytes


def test_text_missing_and_empty_files(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"aclImdb.*pos.*aclImdb_v1.tar.gz"):
        data.load(_cfg(task="text", dir=str(tmp_path / "none"), max_length=8, validation="test"))
    text.write_fixture(str(tmp_path), per_folder=2)
    bad = tmp_path / "aclImdb/train/pos/5_9.txt"
    bad.write_bytes(b"")
    with pytest.raises(ValueError, match=r"5_9.txt:1: empty review"):
        data.load(_cfg(task="text", dir=str(tmp_path), max_length=8, validation="test"))
    report = check.check("text", str(tmp_path))
    assert not report.ok and "5_9.txt: empty review" in str(report)


# ---- retrieval (AAN) ---------------------------------------------------------------------------

def test_retrieval_pairs(tmp_path):
    retrieval.write_fixture(str(tmp_path / "tsv_data"), rows=6)
    task = data.load(_cfg(task="retrieval", dir=str(tmp_path), max_length=40, limit=0))
    s = task.splits["train"]
    assert s.inputs.shape == (6, 2, 40) and s.mask.shape == (6, 2, 40) and task.max_length == 40
    assert s.labels.tolist() == [0, 1, 0, 1, 0, 1]
    row = open(tmp_path / "tsv_data/new_aan_pairs.train.tsv", "rb").readline().rstrip(b"\n").split(b"\t")
    doc2 = row[4][:40]
    np.testing.assert_array_equal(s.inputs[0, 1, :len(doc2)], np.frombuffer(doc2, np.uint8))
    assert s.mask[np.array([0])][0, 1].sum() == len(doc2)
    assert check.check("retrieval", str(tmp_path)).ok


@pytest.mark.parametrize("line,match", [
    ("1\tA\tB\tonly four", r"train.tsv:3: expected 5 tab-separated columns"),
    ("yes\tA\tB\tx\ty", r"train.tsv:3: expected label 0 or 1.*'yes'"),
    ("2.0\tA\tB\tx\ty", r"train.tsv:3: expected label 0 or 1"),
])
def test_retrieval_malformed_names_file_and_line(tmp_path, line, match):
    path = tmp_path / "new_aan_pairs.train.tsv"
    path.write_text(f"1.0\ta\tb\tx y\tx z\n0\tc\td\tp\tq\n{line}\n")
    with pytest.raises(ValueError, match=match):
        retrieval.read_tsv(str(path), 16)


def test_retrieval_missing_files(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"new_aan_pairs.train.tsv.*lra_release"):
        data.load(_cfg(task="retrieval", dir=str(tmp_path), max_length=40))


# ---- image (CIFAR-10) --------------------------------------------------------------------------

def test_image_grayscale_split_and_black_pixels_are_tokens(tmp_path):
    image.write_fixture(str(tmp_path), per_batch=6)
    task = data.load(_cfg(task="image", dir=str(tmp_path), max_length=1024, val_size=4))
    assert {k: len(v) for k, v in task.splits.items()} == {"train": 26, "val": 4, "test": 6}
    train = task.splits["train"]
    assert train.inputs.shape == (26, 1024) and train.inputs.dtype == np.uint8
    assert (train.inputs[0, 8 * 32:16 * 32] == 0).all() and train.mask.all()  # black = real token
    with open(tmp_path / "cifar-10-batches-py/data_batch_1", "rb") as f:
        raw = pickle.load(f, encoding="bytes")
    rgb = raw[b"data"][1].reshape(3, 32, 32).astype(float)
    want = np.rint(0.2989 * rgb[0] + 0.5870 * rgb[1] + 0.1140 * rgb[2]).reshape(-1)
    np.testing.assert_array_equal(train.inputs[1], want)
    assert check.check("image", str(tmp_path)).ok


def test_image_malformed_pickle(tmp_path):
    image.write_fixture(str(tmp_path), per_batch=4)
    path = tmp_path / "cifar-10-batches-py/data_batch_3"
    with open(path, "wb") as f:
        pickle.dump({b"data": np.zeros((4, 100), np.uint8), b"labels": [0, 1, 2, 3]}, f)
    with pytest.raises(ValueError, match=r"data_batch_3: b'data' must be uint8 \[n, 3072\]"):
        data.load(_cfg(task="image", dir=str(tmp_path), max_length=1024, val_size=4))
    (tmp_path / "cifar-10-batches-py/test_batch").write_bytes(b"not a pickle")
    report = check.check("image", str(tmp_path))
    assert len(report.problems) == 2 and "test_batch: not a CIFAR-10 python pickle" in str(report)


# ---- byte LM -----------------------------------------------------------------------------------

def test_bytelm_splits_by_file_and_skips_binary(tmp_path):
    for i in range(40):
        (tmp_path / f"f{i}.txt").write_text(f"file {i} " * (5 + i))
    (tmp_path / "blob.bin").write_bytes(b"\x00\x01\x02" * 50)
    (tmp_path / "__pycache__").mkdir()
    (tmp_path / "__pycache__" / "x.txt").write_text("skipped")
    cfg = _cfg(task="bytelm", dir=str(tmp_path), max_length=32, val_percent=20, test_percent=20,
               max_train_bytes=10**6, max_eval_bytes=10**6)
    task = data.load(cfg)
    where = {s: {bytelm.split_of(f"f{i}.txt", 20, 20) for i in range(40)} for s in ("x",)}
    assert where["x"] == {"train", "val", "test"}
    total = sum(int(np.asarray(s.mask).sum()) for s in task.splits.values())
    assert total == sum(len(f"file {i} " * (5 + i)) for i in range(40))  # every text byte, once
    assert task.vocab_size == 256 and task.max_length == 32


def test_bytelm_default_corpus_is_the_standard_library():
    assert os.path.exists(os.path.join(bytelm.default_dir(), "os.py"))
    assert bytelm.split_of("os.py", 5, 5) == bytelm.split_of("os.py", 5, 5)


def test_check_reports_missing_directory(tmp_path):
    r = check.check("retrieval", str(tmp_path / "nowhere"))
    assert not r.ok and "is not a directory" in str(r)
    r = check.check("listops", str(tmp_path))
    assert len(r.problems) == 3 and "basic_train.tsv is missing" in str(r)
