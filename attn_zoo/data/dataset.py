"""In-memory task splits and deterministic batching (no framework imports: plain numpy).

A train batch is a pure function of (seed, step): epoch e uses the permutation drawn from
numpy's RNG seeded with (seed, e), so a run resumed at step s sees exactly the batches an
uninterrupted run would. Eval batches walk the split in order; the last one is padded with
examples of weight 0.
"""
from __future__ import annotations

import dataclasses
import functools

import numpy as np


@dataclasses.dataclass
class Split:
    """inputs [N, L] integer token ids, mask [N, L] bool (True = real token), labels [N] int32.

    Retrieval pairs: inputs and mask [N, 2, L]. Per-token tasks (recall, copy): labels [N, L] with
    -1 where nothing is scored. Any array-like with shape and integer-array indexing works
    (synthetic tasks generate their examples when indexed; byte tasks build masks from lengths).
    segment_ids [N, L] int (packed rows: a segment is one document) or None; batches carry it.
    """

    inputs: np.ndarray
    mask: np.ndarray
    labels: np.ndarray
    segment_ids: np.ndarray | None = None

    def __len__(self):
        return len(self.labels)


@dataclasses.dataclass
class Task:
    name: str
    splits: dict[str, Split]
    vocab_size: int
    num_classes: int

    @property
    def max_length(self) -> int:
        return self.splits["train"].inputs.shape[-1]  # retrieval's inputs are [N, 2, L]


@functools.lru_cache(maxsize=2)
def epoch_order(seed: int, epoch: int, size: int) -> np.ndarray:
    """The permutation of epoch `epoch`, drawn once per epoch (not per step: for a 1M-example
    generated split, drawing it cost 24 ms a step, most of a small model's step)."""
    order = np.random.default_rng([seed, epoch]).permutation(size)
    order.flags.writeable = False  # shared by the epoch's steps
    return order


def train_batch(split: Split, step: int, batch_size: int, seed: int) -> dict[str, np.ndarray]:
    """The batch for `step`; whole epochs of `len(split) // batch_size` batches, reshuffled each."""
    per_epoch = len(split) // batch_size
    if per_epoch == 0:
        raise ValueError(f"batch size {batch_size} is larger than the training split ({len(split)})")
    epoch, i = divmod(step, per_epoch)
    idx = epoch_order(seed, epoch, len(split))[i * batch_size:(i + 1) * batch_size]
    return _with_segments(split, idx, {"inputs": split.inputs[idx], "mask": split.mask[idx],
                                       "labels": split.labels[idx], "weight": np.ones(batch_size, np.float32)})


def _with_segments(split, idx, batch):
    """batch plus "segment_ids" when the split has them (packed rows)."""
    if getattr(split, "segment_ids", None) is not None:
        batch["segment_ids"] = np.asarray(split.segment_ids[idx])
    return batch


def eval_batches(split: Split, batch_size: int):
    """Yield every example once, in order, in batches of exactly `batch_size` (tail weight 0)."""
    for start in range(0, len(split), batch_size):
        idx = np.arange(start, start + batch_size)
        weight = (idx < len(split)).astype(np.float32)
        idx = np.minimum(idx, len(split) - 1)
        yield _with_segments(split, idx, {"inputs": split.inputs[idx], "mask": split.mask[idx],
                                          "labels": split.labels[idx], "weight": weight})


def chance(split: Split, head: str, vocab_size: int) -> dict[str, float]:
    """What a model that ignores the input scores on `split`, in the loss's own targets (scored
    positions as `train.steps.loss_and_metrics` picks them): accuracy = the majority target's rate;
    for next-token LMs over bytes also bits_per_byte = the split's own unigram entropy (no unigram
    model fitted elsewhere does better on it)."""
    counts = np.zeros(max(vocab_size, 2), np.int64)
    next_token = None
    for start in range(0, len(split), 256):
        idx = np.arange(start, min(start + 256, len(split)))
        labels = np.asarray(split.labels[idx])
        if next_token is None:
            next_token = head == "lm" and labels.ndim == 1
        if next_token:  # the targets are inputs[:, 1:] where the mask holds (and, packed, in-segment)
            scored = np.asarray(split.mask[idx])[:, 1:]
            if getattr(split, "segment_ids", None) is not None:
                seg = np.asarray(split.segment_ids[idx])
                scored = scored & (seg[:, 1:] == seg[:, :-1])
            targets = np.asarray(split.inputs[idx])[:, 1:][scored]
        else:
            targets = labels[labels >= 0] if labels.ndim > 1 else labels
        counts[:max(vocab_size, 2)] += np.bincount(targets.ravel(), minlength=len(counts))[:len(counts)]
    p = counts / max(counts.sum(), 1)
    out = {"accuracy": float(p.max())}
    if next_token and vocab_size == 256:
        nz = p[p > 0]
        out["bits_per_byte"] = float(-(nz * np.log2(nz)).sum())
    return out


def decode_line(path, lineno, raw: bytes) -> str:
    """One line of a text file as str; a ValueError naming file:line, the byte and its column
    when it is not UTF-8 (the readers' one-line decode error)."""
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise ValueError(f"{path}:{lineno}: not UTF-8 (byte 0x{raw[e.start]:02x} at column "
                         f"{e.start + 1})") from None
