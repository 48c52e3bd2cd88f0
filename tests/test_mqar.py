"""Zoology's MQAR (attn_zoo/data/mqar.py, configs/mqar.py): the generator, the causal scoring, a CLI run."""
import json
import os

import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from attn_zoo import cli, configs, data
from attn_zoo.data import mqar
from attn_zoo.train import steps

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _task(**kw):
    c = dict(task="mqar", max_length=64, num_kv_pairs=6, vocab_size=64, power_a=0.01,
             random_non_queries=False, seed=3, train_size=1000, val_size=10, test_size=10)
    c.update(kw)
    return data.load(ml_collections.ConfigDict(c))


def _rows(task, n=64, split="train"):
    idx = np.arange(n)
    s = task.splits[split]
    return s.inputs[idx], s.labels[idx]


@pytest.mark.parametrize("random_non_queries", [False, True])
def test_every_key_is_queried_once_and_only_queries_are_scored(random_non_queries):
    L, N, V = 64, 6, 64
    task = _task(random_non_queries=random_non_queries)
    assert (task.name, task.vocab_size, task.num_classes, task.max_length) == ("mqar", V, V, L)
    inputs, labels = _rows(task)
    assert inputs.shape == labels.shape == (64, L) and inputs.dtype == labels.dtype == np.int32
    for x, y in zip(inputs, labels):
        keys, values = x[0:2 * N:2], x[1:2 * N:2]
        assert ((1 <= keys) & (keys < V // 2)).all() and ((V // 2 <= values) & (values < V)).all()
        assert len(set(keys.tolist())) == N and len(set(values.tolist())) == N  # Zoology: both distinct
        bound = dict(zip(keys.tolist(), values.tolist()))
        q = np.flatnonzero(y >= 0)
        assert len(q) == N and q.min() >= 2 * N and ((q - 2 * N) % 2 == 0).all()  # context_end + 2*gap
        assert sorted(x[q].tolist()) == sorted(keys.tolist())  # each key queried exactly once
        assert y[q].tolist() == [bound[k] for k in x[q].tolist()]  # the label at a query is its value
        assert (y[:2 * N] == -1).all()  # the context's value-after-key positions are not scored
        assert set(np.unique(y).tolist()) == {-1, *values.tolist()}
        if not random_non_queries:
            rest = np.ones(L, bool)
            rest[:2 * N], rest[q] = False, False
            assert (x[rest] == 0).all()  # the input after a query is 0 too: the answer is only a label


def test_random_non_queries_fill_the_rest_and_leave_no_key_to_mistake_for_a_query():
    N = 6
    plain, rand = _rows(_task()), _rows(_task(random_non_queries=True))
    np.testing.assert_array_equal(plain[1], rand[1])  # same keys, values, gaps: same labels
    filled = plain[0] == 0
    np.testing.assert_array_equal(rand[0][~filled], plain[0][~filled])
    fill = rand[0][filled]
    assert fill.min() >= 0 and fill.max() < 64 and len(np.unique(fill)) > 40  # uniform over [0, V)
    assert (fill >= 32).any() and ((fill >= 1) & (fill < 32)).any()
    for x, y in zip(*rand):
        keys = x[0:2 * N:2]
        after = np.isin(x, keys)
        after[:2 * N] = False
        np.testing.assert_array_equal(np.flatnonzero(after), np.flatnonzero(y >= 0))


def test_gaps_are_drawn_without_replacement_from_the_power_law():
    # L = 4N: the N gaps exhaust the (L - 2N)/2 allowed ones, so every even slot is a query.
    x, y = _rows(_task(max_length=24, num_kv_pairs=6), n=20)
    assert ((y[:, 12::2] >= 0).all() and (y[:, 13::2] == -1).all())
    # Inclusion probability of each gap for N = 2 over space = 5: numpy's sequential choice,
    # P(g in gaps) = p(g) + sum_{h != g} p(h) p(g) / (1 - p(h)).
    space, a = 5, 0.01
    p = mqar.gap_probabilities(space, a)
    np.testing.assert_allclose(p, (np.arange(1, 6) ** (a - 1)) / (np.arange(1, 6) ** (a - 1)).sum())
    expect = np.array([p[g] + sum(p[h] * p[g] / (1 - p[h]) for h in range(space) if h != g)
                       for g in range(space)])
    draws = 4000
    counts = np.zeros(space)
    for i in range(draws):
        _, lab = mqar.mqar_example(np.random.default_rng([7, i]), length=2 * 2 + 2 * space, num_kv_pairs=2,
                                   vocab_size=16, power_a=a, random_non_queries=False)
        q = np.flatnonzero(lab >= 0)
        assert len(q) == 2
        counts[(q - 4) // 2] += 1
    sigma = np.sqrt(draws * expect * (1 - expect))
    assert (np.abs(counts - draws * expect) < 4 * sigma).all(), (counts / draws, expect)
    assert counts[0] > counts[-1]  # p falls with the gap (∝ (g+1)^-0.99)


def test_examples_are_a_pure_function_of_seed_split_and_index():
    a, b = _task(random_non_queries=True), _task(random_non_queries=True)
    idx = np.array([5, 1, 5])
    np.testing.assert_array_equal(a.splits["train"].inputs[idx], b.splits["train"].inputs[idx])
    np.testing.assert_array_equal(a.splits["train"].labels[idx], b.splits["train"].labels[idx])
    np.testing.assert_array_equal(a.splits["train"].inputs[idx][0], a.splits["train"].inputs[idx][2])
    assert not np.array_equal(a.splits["train"].inputs[idx], a.splits["val"].inputs[idx])
    assert not np.array_equal(a.splits["val"].inputs[idx], a.splits["test"].inputs[idx])
    c = _task(random_non_queries=True, seed=4)
    assert not np.array_equal(a.splits["train"].inputs[idx], c.splits["train"].inputs[idx])
    batch = data.train_batch(a.splits["train"], 3, 8, seed=0)
    assert batch["mask"].all() and batch["labels"].shape == (8, 64)


def test_settings_that_do_not_fit_are_refused_in_one_line():
    with pytest.raises(ValueError, match=r"data.num_kv_pairs=5 needs 4\*num_kv_pairs = 20 <= "
                                         r"data.max_length=16; allowed: num_kv_pairs <= 4") as e:
        _task(max_length=16, num_kv_pairs=5)
    assert "\n" not in str(e.value)
    _task(max_length=16, num_kv_pairs=4)  # 4N == L is allowed
    with pytest.raises(ValueError, match="data.vocab_size=8 has 3 key ids"):
        _task(vocab_size=8, num_kv_pairs=4)


def test_lm_loss_scores_per_token_labels_and_keeps_next_token_for_byte_lm():
    B, L, V = 2, 5, 7
    logits = jnp.asarray(np.random.default_rng(0).normal(size=(B, L, V)), jnp.float32)
    inputs = np.array([[1, 2, 3, 4, 5], [6, 5, 4, 3, 2]], np.int32)
    labels = np.full((B, L), -1, np.int32)
    labels[0, 2], labels[1, 4] = int(jnp.argmax(logits[0, 2])), (int(jnp.argmax(logits[1, 4])) + 1) % V
    batch = {"inputs": inputs, "mask": np.ones((B, L), bool), "labels": labels,
             "weight": np.ones(B, np.float32)}
    sums = steps.loss_and_metrics(logits, batch, "lm")
    assert float(sums["count"]) == 2 and float(sums["correct"]) == 1  # only the two labelled positions
    lp = jnp.log(jnp.exp(logits) / jnp.exp(logits).sum(-1, keepdims=True))
    want = -(lp[0, 2, labels[0, 2]] + lp[1, 4, labels[1, 4]])
    np.testing.assert_allclose(float(sums["loss_sum"]), float(want), rtol=1e-5)
    batch["labels"] = np.zeros(B, np.int32)  # byte-LM: next token of the inputs, every position but the last
    assert float(steps.loss_and_metrics(logits, batch, "lm")["count"]) == B * (L - 1)


def test_config_presets_and_causal_only():
    c = configs.load(f"{ROOT}/configs/mqar.py:blockwise")
    assert (c.model.head, c.model.num_layers, c.data.vocab_size, c.data.max_length, c.data.num_kv_pairs,
            c.data.power_a) == ("lm", 2, 8192, 64, 4, 0.01)
    for preset, (L, N) in {"L64": (64, 4), "L128": (128, 8), "L256": (256, 16), "L512": (512, 64)}.items():
        for d in (64, 128, 256):
            c = configs.load(f"{ROOT}/configs/mqar.py:dense,cpu,{preset},d{d}")
            assert (c.data.max_length, c.data.num_kv_pairs, c.model.emb_dim, c.model.qkv_dim) == (L, N, d, d)
    cpu = configs.load(f"{ROOT}/configs/mqar.py:blockwise,cpu")
    assert cpu.data.vocab_size < 8192 and cpu.model.emb_dim == 64
    with pytest.raises(ValueError, match=r"'linformer' does not support causal=True, so it is skipped "
                                         r"for this task; the bidirectional recall task"):
        configs.load(f"{ROOT}/configs/mqar.py:linformer")


def test_cli_trains_blockwise_smoke(tmp_path):
    workdir = str(tmp_path / "w")
    args = ["train", "--config", f"{ROOT}/configs/mqar.py:blockwise,smoke", "--workdir", workdir]
    assert cli.main(args) == 0
    with open(os.path.join(workdir, "results.json")) as f:
        result = json.load(f)
    assert result["status"] == "done" and result["task"] == "mqar" and result["best_step"] == 3
    with open(os.path.join(workdir, "config.json")) as f:
        assert json.load(f)["model"]["head"] == "lm"  # causal attention
    with open(os.path.join(workdir, "metrics.jsonl")) as f:
        test = [e for e in map(json.loads, f) if e.get("split") == "test"][0]
    # accuracy and loss are over the queries only: 4 per example, 16 test examples
    assert test["examples"] == 16 * 4 and 0.0 <= result["test_accuracy"] <= 1.0
