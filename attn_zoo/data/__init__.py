"""Tasks by name: `load(config.data)` returns a Task with train/val/test Splits.

A task module provides `load(data_config) -> Task`; register it in TASKS.
"""
from __future__ import annotations

from attn_zoo.data import bytelm, image, listops, pathfinder_io, retrieval, synthetic, text
from attn_zoo.data.dataset import Split, Task, eval_batches, train_batch

TASKS = {"listops": listops, "pathfinder": pathfinder_io, "text": text, "retrieval": retrieval,
         "image": image, "recall": synthetic.recall, "copy": synthetic.copy, "bytelm": bytelm}


def load(data_config) -> Task:
    try:
        module = TASKS[data_config.task]
    except KeyError:
        raise ValueError(f"unknown task {data_config.task!r}; known: {', '.join(sorted(TASKS))}") from None
    return module.load(data_config)


__all__ = ["TASKS", "Split", "Task", "eval_batches", "load", "train_batch"]
