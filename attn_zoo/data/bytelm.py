"""Byte-level language modelling over every text file under a directory (causal variants only).

Default corpus: the Python standard library's sources (present on every machine that runs
attn_zoo), skipping site-packages/ and __pycache__/. A file counts as text when it has no NUL
byte and decodes as UTF-8. Files are split into train/val/test by a hash of their relative
path (never by position inside a file), then each file is cut into windows of max_length bytes;
a file's last window is padded with an explicit mask. Metric: bits per byte = loss / ln 2 over
predicted bytes (every byte of a window but its first).

data.pack=True (configs/bytelm.py's default; absent: False, the windows above): each split's
files, each followed by the separator byte 0 (text files hold no NUL byte), are concatenated and
cut into rows of max_length bytes (only the last row is padded); every byte of a row but its first
is scored, the separators included. data.isolate=True adds segment_ids per byte (one segment per
file; a file cut by a row's end continues as a new segment in the next row): the model attends
within segments and a byte is predicted only from its own file (every byte of a segment but its
first is scored). Without it a row's files see each other, as in GPT-style packing.
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


SEPARATOR = 0  # ends each file in packed rows (is_text files hold no NUL byte)


class SegmentIds:
    """Array-like [n, L] int32 segment ids of packed rows, computed at indexing time from the file
    start offsets in the concatenated stream: row r holds stream bytes r·L .. r·L + L - 1; the
    padding after the stream's end gets its own id (len(starts))."""

    def __init__(self, starts, total, length):
        self.starts, self.total = np.asarray(starts, np.int64), int(total)
        self.shape = (-(-self.total // length), length)
        self.dtype, self.ndim = np.dtype(np.int32), 2

    def __len__(self):
        return self.shape[0]

    def __getitem__(self, idx):
        offset = np.asarray(idx, np.int64)[..., None] * self.shape[1] + np.arange(self.shape[1])
        ids = np.searchsorted(self.starts, offset, side="right") - 1
        return np.where(offset < self.total, ids, len(self.starts)).astype(np.int32)

    def __array__(self, dtype=None, copy=None):
        return np.asarray(self[np.arange(len(self))], dtype=dtype)


def _files(d, val_percent, test_percent, max_bytes):
    """{split: [file bytes]} in path order; each split stops after max_bytes[split] bytes."""
    files = {s: [] for s in ("train", "val", "test")}
    used = dict.fromkeys(files, 0)
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
        files[split].append(data)
    return files


def read_corpus(d, *, max_length, val_percent, test_percent, max_bytes):
    """{split: (windows [n, L] uint8, lengths [n])}; each split stops after max_bytes[split] bytes."""
    out = {}
    for s, docs in _files(d, val_percent, test_percent, max_bytes).items():
        ws = [w for data in docs for w in windows(data, max_length) if len(w) > 1]
        ids = np.zeros((len(ws), max_length), np.uint8)
        for i, w in enumerate(ws):
            ids[i, :len(w)] = np.frombuffer(w, np.uint8)
        out[s] = (ids, np.asarray([len(w) for w in ws], np.int32))
    return out


def pack_corpus(d, *, max_length, val_percent, test_percent, max_bytes):
    """{split: (rows [n, L] uint8, lengths [n], SegmentIds [n, L])}: the split's files, each
    followed by SEPARATOR, concatenated and cut into rows of max_length bytes."""
    out = {}
    for s, docs in _files(d, val_percent, test_percent, max_bytes).items():
        stream = b"".join(data + bytes([SEPARATOR]) for data in docs)
        starts = np.cumsum([0] + [len(data) + 1 for data in docs[:-1]]) if docs else np.zeros(0)
        n = -(-len(stream) // max_length)
        ids = np.zeros(n * max_length, np.uint8)
        ids[:len(stream)] = np.frombuffer(stream, np.uint8)
        lengths = np.clip(len(stream) - max_length * np.arange(n), 0, max_length).astype(np.int32)
        out[s] = (ids.reshape(n, max_length), lengths, SegmentIds(starts, len(stream), max_length))
    return out


def load(c) -> Task:
    d = c.dir or default_dir()
    if not os.path.isdir(d):
        raise missing("byte-LM", d, "the directory does not exist",
                      "Set config.data.dir to any folder of text files, or '' for the Python standard library")
    mb = {"train": c.max_train_bytes, "val": c.max_eval_bytes, "test": c.max_eval_bytes}
    pack = c.get("pack", False)
    corpus = (pack_corpus if pack else read_corpus)(
        d, max_length=c.max_length, val_percent=c.val_percent, test_percent=c.test_percent, max_bytes=mb)
    empty = [s for s, (ids, *_) in corpus.items() if len(ids) == 0]
    if empty:
        raise ValueError(f"byte-LM: no text files fell into the {', '.join(empty)} split(s) under {d!r} "
                         f"({len(list_files(d))} files; split by path hash with val {c.val_percent}% and "
                         f"test {c.test_percent}%): use a directory with more files")
    isolate = pack and c.get("isolate", False)
    splits = {s: Split(inputs=ids, mask=LengthMask(n, c.max_length), labels=np.zeros(len(ids), np.int32),
                       segment_ids=seg[0] if isolate else None)
              for s, (ids, n, *seg) in corpus.items()}
    return Task(name="bytelm", splits=splits, vocab_size=VOCAB_SIZE, num_classes=VOCAB_SIZE)
