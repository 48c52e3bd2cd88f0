"""Byte-level language modelling over every text file under a directory (causal variants only).

Default corpus: the Python standard library's sources (present on every machine that runs
attn_zoo), skipping site-packages/ and __pycache__/. A file counts as text when it has no NUL
byte and decodes as UTF-8. Files are split into train/val/test by a hash of their relative
path (never by position inside a file), then each file is cut into windows of max_length bytes;
a file's last window is padded with an explicit mask. Metric: bits per byte = loss / ln 2 over
predicted bytes (every byte of a window but its first).
"""
from __future__ import annotations

import os
import zlib

import numpy as np

from attn_zoo.data.dataset import Split, Task
from attn_zoo.data.text import VOCAB_SIZE, LengthMask, missing

SKIP_DIRS = {"site-packages", "dist-packages", "__pycache__", ".git"}


def default_dir():
    return os.path.dirname(os.__file__)


def is_text(data: bytes) -> bool:
    if b"\0" in data:
        return False
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def list_files(d):
    """Sorted relative paths of the regular files under d (symlinks and SKIP_DIRS left out)."""
    out = []
    for base, dirs, files in os.walk(d):
        dirs[:] = sorted(x for x in dirs if x not in SKIP_DIRS and not os.path.islink(os.path.join(base, x)))
        for f in sorted(files):
            p = os.path.join(base, f)
            if os.path.isfile(p) and not os.path.islink(p):
                out.append(os.path.relpath(p, d))
    return out


def split_of(relpath, val_percent, test_percent) -> str:
    bucket = zlib.crc32(relpath.replace(os.sep, "/").encode()) % 100
    return "val" if bucket < val_percent else "test" if bucket < val_percent + test_percent else "train"


def windows(data: bytes, length):
    for start in range(0, len(data), length):
        yield data[start:start + length]


def read_corpus(d, *, max_length, val_percent, test_percent, max_bytes):
    """{split: (windows [n, L] uint8, lengths [n])}; each split stops after max_bytes[split] bytes."""
    chunks = {s: [] for s in ("train", "val", "test")}
    used = dict.fromkeys(chunks, 0)
    for rel in list_files(d):
        split = split_of(rel, val_percent, test_percent)
        if used[split] >= max_bytes[split]:
            continue
        with open(os.path.join(d, rel), "rb") as f:
            data = f.read()
        if not data or not is_text(data):
            continue
        data = data[:max_bytes[split] - used[split]]
        used[split] += len(data)
        chunks[split].extend(w for w in windows(data, max_length) if len(w) > 1)
    out = {}
    for s, ws in chunks.items():
        ids = np.zeros((len(ws), max_length), np.uint8)
        for i, w in enumerate(ws):
            ids[i, :len(w)] = np.frombuffer(w, np.uint8)
        out[s] = (ids, np.asarray([len(w) for w in ws], np.int32))
    return out


def load(c) -> Task:
    d = c.dir or default_dir()
    if not os.path.isdir(d):
        raise missing("byte-LM", d, "the directory does not exist",
                      "Set config.data.dir to any folder of text files, or '' for the Python standard library")
    mb = {"train": c.max_train_bytes, "val": c.max_eval_bytes, "test": c.max_eval_bytes}
    corpus = read_corpus(d, max_length=c.max_length, val_percent=c.val_percent,
                         test_percent=c.test_percent, max_bytes=mb)
    empty = [s for s, (ids, _) in corpus.items() if len(ids) == 0]
    if empty:
        raise ValueError(f"byte-LM: no text files fell into the {', '.join(empty)} split(s) under {d!r} "
                         f"({len(list_files(d))} files; split by path hash with val {c.val_percent}% and "
                         f"test {c.test_percent}%): use a directory with more files")
    splits = {s: Split(inputs=ids, mask=LengthMask(n, c.max_length), labels=np.zeros(len(ids), np.int32))
              for s, (ids, n) in corpus.items()}
    return Task(name="bytelm", splits=splits, vocab_size=VOCAB_SIZE, num_classes=VOCAB_SIZE)
