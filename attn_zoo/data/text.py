"""LRA Text: IMDb sentiment as byte-level classification, read from the `aclImdb/` layout.

Files: `{dir}/{train,test}/{pos,neg}/*.txt` (Maas et al. 2011; 12,500 per folder). `dir` may
also be the folder that contains `aclImdb/`. Tokens are the raw bytes (ids 0..255), truncated to
max_length; the padding mask comes from each review's length, never from a byte value. Labels:
neg 0, pos 1. Validation is the test set as LRA did (`validation='test'`), or a seeded holdout of
`holdout` reviews from train (`validation='holdout'`).

Also the shared helpers of the byte tasks: `encode`, `LengthMask`, `missing`.
"""
from __future__ import annotations

import os
import re

import numpy as np

from attn_zoo.data.dataset import Split, Task

LABELS = {"neg": 0, "pos": 1}
VOCAB_SIZE = 256
IMDB_URL = "https://ai.stanford.edu/~amaas/data/sentiment/aclImdb_v1.tar.gz"


class LengthMask:
    """Array-like [N, L] bool mask (True = real token) built from lengths at indexing time."""

    def __init__(self, lengths, length):
        self.lengths = np.asarray(lengths, np.int32)
        self.shape = self.lengths.shape + (length,)
        self.dtype, self.ndim = np.dtype(bool), len(self.shape)

    def __len__(self):
        return self.shape[0]

    def __getitem__(self, idx):
        return np.arange(self.shape[-1]) < self.lengths[idx][..., None]

    def __array__(self, dtype=None, copy=None):
        return np.asarray(self[np.arange(len(self))], dtype=dtype)


def encode(docs, max_length):
    """bytes documents -> (ids [N, max_length] uint8, lengths [N]); truncated, zero-filled."""
    ids = np.zeros((len(docs), max_length), np.uint8)
    lengths = np.zeros(len(docs), np.int32)
    for i, d in enumerate(docs):
        d = d[:max_length]
        ids[i, :len(d)] = np.frombuffer(d, np.uint8)
        lengths[i] = len(d)
    return ids, lengths


def missing(task, d, expected, how) -> FileNotFoundError:
    return FileNotFoundError(f"{task} data not found in {os.path.abspath(d)!r}: {expected}. {how}")


def root(d):
    """The aclImdb folder: d itself or d/aclImdb."""
    return os.path.join(d, "aclImdb") if os.path.isdir(os.path.join(d, "aclImdb")) else d


def _key(name):
    m = re.match(r"(\d+)_", name)
    return (int(m.group(1)) if m else -1, name)


def list_split(d, split):
    """[(path, label)] of one split, in a fixed order (label folder, then review number)."""
    out = []
    for folder, label in sorted(LABELS.items()):
        sub = os.path.join(root(d), split, folder)
        if not os.path.isdir(sub):
            raise missing("IMDb", d, f"folder {sub} is missing (expected aclImdb/{{train,test}}/{{pos,neg}}/*.txt)",
                          f"Download and unpack {IMDB_URL}, then point config.data.dir at it")
        out += [(os.path.join(sub, f), label) for f in sorted(os.listdir(sub), key=_key) if f.endswith(".txt")]
    return out


def read_split(d, split, max_length) -> Split:
    docs, labels = [], []
    for path, label in list_split(d, split):
        with open(path, "rb") as f:
            text = f.read()
        if not text.strip():
            raise ValueError(f"{path}:1: empty review")
        docs.append(text)
        labels.append(label)
    if not docs:
        raise ValueError(f"{os.path.join(root(d), split)}: no *.txt reviews under pos/ and neg/; "
                         f"every split needs at least one")
    ids, lengths = encode(docs, max_length)
    return Split(inputs=ids, mask=LengthMask(lengths, max_length), labels=np.asarray(labels, np.int32))


def _subset(split, idx) -> Split:
    return Split(inputs=split.inputs[idx], mask=LengthMask(split.mask.lengths[idx], split.mask.shape[-1]),
                 labels=split.labels[idx])


def load(c) -> Task:
    if c.get("fixture", False) and not os.path.isdir(os.path.join(root(c.dir), "train")):
        write_fixture(c.dir)  # smoke preset: a tiny stand-in in the real layout
    train, test = read_split(c.dir, "train", c.max_length), read_split(c.dir, "test", c.max_length)
    if c.validation == "test":  # LRA's choice: the test set doubles as validation
        val = test
    elif c.validation == "holdout":
        if not 1 <= c.holdout < len(train):
            raise ValueError(f"config.data.holdout={c.holdout} is not allowed with the {len(train):,} "
                             f"training reviews in {root(c.dir)}; allowed: 1 <= holdout < {len(train):,} "
                             f"(train and val non-empty)")
        perm = np.random.default_rng(c.get("seed", 0)).permutation(len(train))
        val, train = _subset(train, np.sort(perm[:c.holdout])), _subset(train, np.sort(perm[c.holdout:]))
    else:
        raise ValueError(f"data.validation must be 'test' or 'holdout', got {c.validation!r}")
    return Task(name="text", splits={"train": train, "val": val, "test": test},
                vocab_size=VOCAB_SIZE, num_classes=2)


def write_fixture(d, per_folder=4, seed=0, length=(20, 200)):
    """A tiny aclImdb layout of random ASCII reviews whose label is readable from one byte."""
    rng = np.random.default_rng(seed)
    for split in ("train", "test"):
        for folder, label in LABELS.items():
            os.makedirs(os.path.join(d, "aclImdb", split, folder), exist_ok=True)
            for i in range(per_folder):
                body = bytes(rng.integers(97, 123, int(rng.integers(*length))).tolist())
                with open(os.path.join(d, "aclImdb", split, folder, f"{i}_{7 if label else 2}.txt"), "wb") as f:
                    f.write((b"good " if label else b"bad ") + body)
