"""Synthetic long-range tasks generated on the fly: multi-query associative recall, selective copy.

Example i of a split is a pure function of (seed, split, i): nothing is stored, any length works,
and a resumed run sees the same examples. Both tasks are per-token classification (model head
'token'): `labels` [N, L] holds the target class at the positions that are scored and -1
elsewhere, so accuracy is per query (recall) or per copied token (copy).

Recall (Zoology's MQAR, non-causal form): P key-value pairs `k1 v1 k2 v2 ...` open the sequence;
Q of those keys appear again as queries at random later positions among blank filler tokens; the
target at a query is the index of the value that followed that key. A query sits on average
~L/2 tokens after its key, so an attention pattern that only sees a local window scores chance
(1/num_values) while dense attention can solve it.

Copy (selective copy, Gu & Dao 2023): M data tokens at random positions among blanks in the first
L - M positions; the last M positions hold a copy marker and must output the data tokens in order.

Token ids: 0 = blank filler (a real token; padding is never used here: the mask is all True).
"""
from __future__ import annotations

import numpy as np

from attn_zoo.data.dataset import Task

SPLIT_IDS = {"train": 0, "val": 1, "test": 2}
KEEP_WHOLE = 4096  # splits up to this many examples are generated once and kept
BLANK = 0


class _Column:
    """Array-like view of one field of a GeneratedSplit: supports len, shape and [index array]."""

    def __init__(self, split, field, shape, dtype):
        self.split, self.field, self.shape, self.dtype = split, field, shape, np.dtype(dtype)
        self.ndim = len(shape)

    def __len__(self):
        return self.shape[0]

    def __getitem__(self, idx):
        idx = np.atleast_1d(np.asarray(idx))
        if idx.dtype == bool:
            idx = np.flatnonzero(idx)
        return self.split.examples(idx)[self.field]

    def __array__(self, dtype=None, copy=None):
        return np.asarray(self[np.arange(self.shape[0])], dtype=dtype)


class GeneratedSplit:
    """A Split whose example i is `make(np.random.default_rng([seed, split_id, i]))`."""

    def __init__(self, make, size, length, seed, split_id):
        self.make, self.size, self.length, self.seed, self.split_id = make, size, length, seed, split_id
        self.inputs = _Column(self, "inputs", (size, length), np.int32)
        self.mask = _Column(self, "mask", (size, length), bool)
        self.labels = _Column(self, "labels", (size, length), np.int32)
        self._cache, self._whole = (None, None), None

    def __len__(self):
        return self.size

    def examples(self, idx) -> dict:
        if len(idx) and (idx.min() < 0 or idx.max() >= self.size):
            raise IndexError(f"example index out of range 0..{self.size - 1}")
        if self.size <= KEEP_WHOLE:  # an eval split, read whole at every evaluation: generate it once
            if self._whole is None:
                self._whole = self._generate(np.arange(self.size))
            return {k: v[idx] for k, v in self._whole.items()}
        key = idx.tobytes()
        if self._cache[0] != key:  # train_batch reads inputs, mask, labels of the same indices
            self._cache = (key, self._generate(idx))
        return self._cache[1]

    def _generate(self, idx) -> dict:
        rows = [self.make(np.random.default_rng([self.seed, self.split_id, int(i)])) for i in idx]
        inputs = np.stack([r[0] for r in rows]) if rows else np.zeros((0, self.length), np.int32)
        labels = np.stack([r[1] for r in rows]) if rows else np.zeros((0, self.length), np.int32)
        return {"inputs": inputs, "labels": labels, "mask": np.ones(inputs.shape, bool)}


def recall_example(rng, *, length, num_pairs, num_queries, num_keys, num_values, pair_tokens=False):
    """(inputs [L], labels [L]): keys are ids 1..K, values K+1..K+V; labels = value index or -1.

    pair_tokens: each pair is one token, id 1 + K + k·V + v (the binding of key and value is given,
    so one attention layer can solve it: what remains is pure retrieval over distance).
    """
    if num_pairs > num_keys:
        raise ValueError(f"recall: num_pairs {num_pairs} > num_keys {num_keys} (keys must be distinct)")
    if 2 * num_pairs + num_queries > length:
        raise ValueError(f"recall: 2*num_pairs + num_queries = {2 * num_pairs + num_queries} "
                         f"does not fit in length {length}")
    keys = rng.choice(num_keys, num_pairs, replace=False)
    values = rng.integers(num_values, size=num_pairs)
    inputs = np.full(length, BLANK, np.int32)
    labels = np.full(length, -1, np.int32)
    width = num_pairs if pair_tokens else 2 * num_pairs
    if pair_tokens:
        inputs[:num_pairs] = 1 + num_keys + keys * num_values + values
    else:
        inputs[0:2 * num_pairs:2] = 1 + keys
        inputs[1:2 * num_pairs:2] = 1 + num_keys + values
    which = rng.choice(num_pairs, num_queries, replace=num_queries > num_pairs)
    where = width + rng.choice(length - width, num_queries, replace=False)
    inputs[where] = 1 + keys[which]
    labels[where] = values[which]
    return inputs, labels


def copy_example(rng, *, length, num_tokens, num_values):
    """(inputs [L], labels [L]): data ids 2..V+1 among blanks, then M copy markers (id 1)."""
    if 2 * num_tokens > length:
        raise ValueError(f"copy: 2*num_tokens = {2 * num_tokens} does not fit in length {length}")
    values = rng.integers(num_values, size=num_tokens)
    where = np.sort(rng.choice(length - num_tokens, num_tokens, replace=False))
    inputs = np.full(length, BLANK, np.int32)
    labels = np.full(length, -1, np.int32)
    inputs[where] = 2 + values
    inputs[length - num_tokens:] = 1
    labels[length - num_tokens:] = values
    return inputs, labels


def _sizes(c):
    return {"train": c.train_size, "val": c.val_size, "test": c.test_size}


def _task(name, make, c, vocab_size, num_classes) -> Task:
    splits = {s: GeneratedSplit(make, n, c.max_length, c.seed, SPLIT_IDS[s]) for s, n in _sizes(c).items()}
    return Task(name=name, splits=splits, vocab_size=vocab_size, num_classes=num_classes)


class recall:  # noqa: N801 (a task module-like namespace for the TASKS registry)
    """data config: task='recall', max_length, num_pairs, num_queries, num_keys, num_values,
    pair_tokens, seed, train_size, val_size, test_size."""

    @staticmethod
    def load(c) -> Task:
        def make(rng):
            return recall_example(rng, length=c.max_length, num_pairs=c.num_pairs,
                                  num_queries=c.num_queries, num_keys=c.num_keys, num_values=c.num_values,
                                  pair_tokens=c.get("pair_tokens", False))
        make(np.random.default_rng(0))  # validate the settings now, with a clear message
        vocab = 1 + c.num_keys + (c.num_keys * c.num_values if c.get("pair_tokens", False) else c.num_values)
        return _task("recall", make, c, vocab, c.num_values)


class copy:  # noqa: N801
    """data config: task='copy', max_length, num_tokens, num_values, seed, *_size."""

    @staticmethod
    def load(c) -> Task:
        def make(rng):
            return copy_example(rng, length=c.max_length, num_tokens=c.num_tokens, num_values=c.num_values)
        make(np.random.default_rng(0))
        return _task("copy", make, c, 2 + c.num_values, c.num_values)
