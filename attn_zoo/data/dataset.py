"""In-memory task splits and deterministic batching (no framework imports: plain numpy).

A train batch is a pure function of (seed, step): epoch e uses the permutation drawn from
numpy's RNG seeded with (seed, e), so a run resumed at step s sees exactly the batches an
uninterrupted run would. Eval batches walk the split in order; the last one is padded with
examples of weight 0.
"""
from __future__ import annotations

import dataclasses

import numpy as np


@dataclasses.dataclass
class Split:
    """inputs [N, L] integer token ids, mask [N, L] bool (True = real token), labels [N] int32.

    Retrieval pairs: inputs and mask [N, 2, L]. Per-token tasks (recall, copy): labels [N, L] with
    -1 where nothing is scored. Any array-like with shape and integer-array indexing works
    (synthetic tasks generate their examples when indexed; byte tasks build masks from lengths).
    """

    inputs: np.ndarray
    mask: np.ndarray
    labels: np.ndarray

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


def train_batch(split: Split, step: int, batch_size: int, seed: int) -> dict[str, np.ndarray]:
    """The batch for `step`; whole epochs of `len(split) // batch_size` batches, reshuffled each."""
    per_epoch = len(split) // batch_size
    if per_epoch == 0:
        raise ValueError(f"batch size {batch_size} is larger than the training split ({len(split)})")
    epoch, i = divmod(step, per_epoch)
    idx = np.random.default_rng([seed, epoch]).permutation(len(split))[i * batch_size:(i + 1) * batch_size]
    return {"inputs": split.inputs[idx], "mask": split.mask[idx], "labels": split.labels[idx],
            "weight": np.ones(batch_size, np.float32)}


def eval_batches(split: Split, batch_size: int):
    """Yield every example once, in order, in batches of exactly `batch_size` (tail weight 0)."""
    for start in range(0, len(split), batch_size):
        idx = np.arange(start, start + batch_size)
        weight = (idx < len(split)).astype(np.float32)
        idx = np.minimum(idx, len(split) - 1)
        yield {"inputs": split.inputs[idx], "mask": split.mask[idx], "labels": split.labels[idx],
               "weight": weight}
