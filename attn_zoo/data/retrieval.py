"""LRA Retrieval: do two ACL Anthology (AAN) papers cite each other? Byte-level document pairs.

Files: `new_aan_pairs.{train,eval,test}.tsv` in `dir` (or `dir/tsv_data/`, as in LRA's release):
tab-separated, no header, columns `label, id1, id2, text1, text2`; label 0 or 1 (written "0",
"1", "0.0" or "1.0"). Each document is truncated to max_length bytes (LRA: 4000).

A split's inputs are [N, 2, max_length] uint8 (document 1, document 2) with an explicit
[N, 2, max_length] mask; the model's 'dual' head encodes both with one shared encoder.
"""
from __future__ import annotations

import os

import numpy as np

from attn_zoo.data.dataset import Split, Task
from attn_zoo.data.text import VOCAB_SIZE, LengthMask, encode, missing

FILES = {"train": "new_aan_pairs.train.tsv", "val": "new_aan_pairs.eval.tsv", "test": "new_aan_pairs.test.tsv"}
HOW = ("LRA's release (lra_release.gz, https://storage.googleapis.com/long-range-arena/lra_release.gz) "
       "holds them under lra_release/tsv_data/; point config.data.dir there")


def folder(d):
    return os.path.join(d, "tsv_data") if os.path.isdir(os.path.join(d, "tsv_data")) else d


def paths(d):
    return {s: os.path.join(folder(d), f) for s, f in FILES.items()}


def parse_label(text, where):
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if value not in (0.0, 1.0):
        raise ValueError(f"{where}: expected label 0 or 1 in column 1, got {text[:20]!r}")
    return int(value)


def read_tsv(path, max_length, limit=None) -> Split:
    """One TSV -> Split with inputs [N, 2, max_length]; raises naming file:line on a bad row."""
    docs1, docs2, labels = [], [], []
    with open(path, "rb") as f:
        for lineno, line in enumerate(f, start=1):
            if limit is not None and len(labels) >= limit:
                break
            line = line.rstrip(b"\r\n")
            if not line:
                continue
            fields = line.split(b"\t")
            if len(fields) != 5:
                raise ValueError(f"{path}:{lineno}: expected 5 tab-separated columns "
                                 f"(label, id1, id2, text1, text2), got {len(fields)}")
            labels.append(parse_label(fields[0].decode("utf-8", "replace"), f"{path}:{lineno}"))
            docs1.append(fields[3])
            docs2.append(fields[4])
    if not labels:
        raise ValueError(f"{path}: no rows; every split needs at least one")
    (a, la), (b, lb) = encode(docs1, max_length), encode(docs2, max_length)
    return Split(inputs=np.stack([a, b], axis=1), mask=LengthMask(np.stack([la, lb], axis=1), max_length),
                 labels=np.asarray(labels, np.int32))


def load(c) -> Task:
    if c.get("fixture", False) and not os.path.isdir(c.dir):
        write_fixture(c.dir)  # smoke preset: a tiny stand-in in the real format
    p = paths(c.dir)
    absent = [x for x in p.values() if not os.path.exists(x)]
    if absent:
        raise missing("AAN retrieval", c.dir, f"missing {', '.join(absent)}", HOW)
    limit = c.get("limit", 0) or None
    splits = {s: read_tsv(x, c.max_length, limit) for s, x in p.items()}
    return Task(name="retrieval", splits=splits, vocab_size=VOCAB_SIZE, num_classes=2)


def write_fixture(d, rows=16, seed=0):
    """Tiny TSVs in the real format: label 1 iff both documents share their first word."""
    rng = np.random.default_rng(seed)
    os.makedirs(d, exist_ok=True)
    for split, name in FILES.items():
        with open(os.path.join(d, name), "w", encoding="utf-8") as f:
            for i in range(rows):
                label = i % 2
                w1 = f"topic{rng.integers(50)}"
                w2 = w1 if label else f"other{rng.integers(50)}"
                t1 = w1 + " " + " ".join(f"w{x}" for x in rng.integers(100, size=int(rng.integers(5, 30))))
                t2 = w2 + " " + " ".join(f"w{x}" for x in rng.integers(100, size=int(rng.integers(5, 30))))
                f.write(f"{float(label)}\tdoc{2 * i}\tdoc{2 * i + 1}\t{t1}\t{t2}\n")
