"""Synthetic long-range tasks: associative recall and selective copy, generated from (seed, index)."""
import ml_collections
import numpy as np
import pytest

from attn_zoo import data
from attn_zoo.data import synthetic


def _recall(**kw):
    c = dict(task="recall", max_length=64, num_pairs=4, num_queries=6, num_keys=8, num_values=5, seed=3,
             train_size=1000, val_size=10, test_size=10, pair_tokens=False)
    c.update(kw)
    return data.load(ml_collections.ConfigDict(c))


def test_recall_answers_are_the_values_bound_to_the_keys():
    task = _recall()
    assert task.vocab_size == 1 + 8 + 5 and task.num_classes == 5 and task.max_length == 64
    batch = data.train_batch(task.splits["train"], 7, 16, seed=0)
    assert batch["inputs"].shape == batch["labels"].shape == (16, 64) and batch["mask"].all()
    for x, y in zip(batch["inputs"], batch["labels"]):
        pairs = {int(k): int(v) - 9 for k, v in zip(x[0:8:2], x[1:8:2])}
        assert len(pairs) == 4 and all(1 <= k <= 8 for k in pairs)
        q = np.flatnonzero(y >= 0)
        assert len(q) == 6 and q.min() >= 8  # queries come after the pairs
        assert [pairs[int(x[i])] for i in q] == y[q].tolist()
        assert (x[8:][y[8:] < 0] == synthetic.BLANK).all()


def test_recall_pair_tokens():
    task = _recall(pair_tokens=True)
    x, y = (task.splits["test"].inputs[np.array([0])][0], task.splits["test"].labels[np.array([0])][0])
    pairs = {(int(t) - 9) // 5 + 1: (int(t) - 9) % 5 for t in x[:4]}
    q = np.flatnonzero(y >= 0)
    assert [pairs[int(x[i])] for i in q] == y[q].tolist() and task.vocab_size == 1 + 8 + 40


def test_examples_are_a_pure_function_of_seed_split_and_index():
    a, b = _recall(), _recall()
    idx = np.array([5, 1, 5])
    np.testing.assert_array_equal(a.splits["train"].inputs[idx], b.splits["train"].inputs[idx])
    np.testing.assert_array_equal(a.splits["train"].inputs[idx][0], a.splits["train"].inputs[idx][2])
    assert not np.array_equal(a.splits["train"].inputs[idx], a.splits["val"].inputs[idx])
    assert not np.array_equal(a.splits["train"].inputs[idx], _recall(seed=4).splits["train"].inputs[idx])
    evals = list(data.eval_batches(a.splits["val"], 4))
    assert sum(int(e["weight"].sum()) for e in evals) == 10


def test_copy_targets_are_the_data_tokens_in_order():
    c = ml_collections.ConfigDict(dict(task="copy", max_length=40, num_tokens=5, num_values=7, seed=0,
                                       train_size=100, val_size=4, test_size=4))
    task = data.load(c)
    assert task.vocab_size == 9 and task.num_classes == 7
    batch = data.train_batch(task.splits["train"], 0, 8, seed=1)
    for x, y in zip(batch["inputs"], batch["labels"]):
        assert (x[-5:] == 1).all() and (y[:-5] == -1).all()
        data_tokens = x[:-5][x[:-5] > 1] - 2
        assert data_tokens.tolist() == y[-5:].tolist()


def test_settings_that_do_not_fit_fail_clearly():
    with pytest.raises(ValueError, match="does not fit in length 16"):
        _recall(max_length=16, num_pairs=6, num_queries=6)
    with pytest.raises(ValueError, match="num_pairs 9 > num_keys 8"):
        _recall(num_pairs=9)
