"""LRA Image: CIFAR-10 as a sequence of 1024 grayscale pixel tokens, 10 classes.

Files: `cifar-10-batches-py/{data_batch_1..5,test_batch}` (the "CIFAR-10 python version"
pickles: dict with b'data' [10000, 3072] uint8 in RGB planes and b'labels'). `dir` may be that
folder or its parent. Gray = round(0.2989 R + 0.5870 G + 0.1140 B) (tf.image.rgb_to_grayscale's
weights), pixel value = token id (vocab 256). Split 45k train (batches 1-5, first 45,000) / 5k
val (last 5,000) / 10k test. The mask is all True: a black pixel is a real token (LRA masked
`token > 0`, i.e. every black pixel).
"""
from __future__ import annotations

import os
import pickle

import numpy as np

from attn_zoo.data.dataset import Split, Task
from attn_zoo.data.text import missing

TRAIN_FILES = tuple(f"data_batch_{i}" for i in range(1, 6))
TEST_FILE = "test_batch"
URL = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"
WEIGHTS = np.array([0.2989, 0.5870, 0.1140])
NUM_CLASSES = 10


def folder(d):
    sub = os.path.join(d, "cifar-10-batches-py")
    return sub if os.path.isdir(sub) else d


def read_batch(path):
    """(rgb [n, 32, 32, 3] uint8, labels [n] int32); raises naming the file when malformed."""
    try:
        with open(path, "rb") as f:
            batch = pickle.load(f, encoding="bytes")
    except (pickle.UnpicklingError, EOFError, ValueError, AttributeError, ImportError, IndexError,
            KeyError, TypeError) as e:  # what pickle raises on bytes that are not a pickle
        raise ValueError(f"{path}: not a CIFAR-10 python pickle ({type(e).__name__}: {e})") from None
    if not isinstance(batch, dict) or b"data" not in batch or b"labels" not in batch:
        keys = sorted(batch) if isinstance(batch, dict) else type(batch).__name__
        raise ValueError(f"{path}: expected a dict with b'data' and b'labels', got {keys}")
    data, labels = np.asarray(batch[b"data"]), np.asarray(batch[b"labels"])
    if data.ndim != 2 or data.shape[1] != 3072 or data.dtype != np.uint8:
        raise ValueError(f"{path}: b'data' must be uint8 [n, 3072], got {data.dtype} {list(data.shape)}")
    if not len(data):
        raise ValueError(f"{path}: holds no images; every batch file needs at least one")
    if labels.shape != (len(data),) or labels.min() < 0 or labels.max() >= NUM_CLASSES:
        raise ValueError(f"{path}: b'labels' must be {len(data)} ints in 0..9, got shape {list(labels.shape)} "
                         f"range {labels.min()}..{labels.max()}")
    return data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1), labels.astype(np.int32)


def gray(rgb):
    """[n, 32, 32, 3] uint8 -> [n, 1024] uint8."""
    g = np.rint(rgb.astype(np.float32) @ WEIGHTS.astype(np.float32)).clip(0, 255)
    return g.astype(np.uint8).reshape(len(rgb), -1)


def _split(rgb, labels) -> Split:
    pixels = gray(rgb)
    return Split(inputs=pixels, mask=np.ones(pixels.shape, bool), labels=labels)


def load(c) -> Task:
    if c.get("fixture", False) and not os.path.isdir(c.dir):
        write_fixture(c.dir, per_batch=max(8, c.get("val_size", 5000) // 5 + 2))  # smoke: tiny stand-in
    d = folder(c.dir)
    paths = [os.path.join(d, f) for f in TRAIN_FILES + (TEST_FILE,)]
    absent = [p for p in paths if not os.path.exists(p)]
    if absent:
        raise missing("CIFAR-10", c.dir, f"missing {', '.join(absent)}",
                      f"Download and unpack {URL} (the python version) and point config.data.dir at it")
    parts = [read_batch(p) for p in paths[:-1]]
    rgb, labels = np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])
    n_val = c.get("val_size", 5000)
    if not 1 <= n_val < len(labels):
        raise ValueError(f"config.data.val_size={n_val} is not allowed with the {len(labels):,} training "
                         f"images in {d}; allowed: 1 <= val_size < {len(labels):,} (train and val non-empty)")
    test = read_batch(paths[-1])
    splits = {"train": _split(rgb[:-n_val], labels[:-n_val]), "val": _split(rgb[-n_val:], labels[-n_val:]),
              "test": _split(*test)}
    return Task(name="image", splits=splits, vocab_size=256, num_classes=NUM_CLASSES)


def write_fixture(d, per_batch=8, seed=0):
    """cifar-10-batches-py with tiny batches: the class decides the brightness of the top rows."""
    rng = np.random.default_rng(seed)
    sub = os.path.join(d, "cifar-10-batches-py")
    os.makedirs(sub, exist_ok=True)
    for name in TRAIN_FILES + (TEST_FILE,):
        labels = rng.integers(NUM_CLASSES, size=per_batch)
        data = rng.integers(0, 256, (per_batch, 3, 32, 32)).astype(np.uint8)
        data[:, :, :4] = (labels * 25)[:, None, None, None]
        data[0, :, 8:16] = 0  # black pixels are tokens too
        with open(os.path.join(sub, name), "wb") as f:
            pickle.dump({b"data": data.reshape(per_batch, -1), b"labels": labels.tolist(),
                         b"batch_label": name.encode()}, f)
