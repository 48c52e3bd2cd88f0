"""Tasks by name: `load(config.data)` returns a Task with train/val/test Splits.

A task module provides `load(data_config) -> Task`; register it in TASKS. Length extrapolation:
`at_length(data_config, length)` is the data config for inputs of another length; a task whose
inputs have a fixed size is listed in FIXED_LENGTH, and a module may define
`at_length(data_config, length)` when more than data.max_length must follow the length.
"""
from __future__ import annotations

import copy

from attn_zoo.data import bytelm, image, listops, mqar, pathfinder_io, retrieval, synthetic, text
from attn_zoo.data.dataset import Split, Task, chance, eval_batches, train_batch

TASKS = {"listops": listops, "pathfinder": pathfinder_io, "text": text, "retrieval": retrieval,
         "image": image, "recall": synthetic.recall, "copy": synthetic.copy, "bytelm": bytelm,
         "mqar": mqar}

# Tasks whose input length is not a setting, and why.
FIXED_LENGTH = {"pathfinder": "its inputs are images of data.resolution² pixels",
                "image": "its inputs are 32×32 CIFAR-10 images"}


def load(data_config) -> Task:
    try:
        module = TASKS[data_config.task]
    except KeyError:
        raise ValueError(f"unknown task {data_config.task!r}; known: {', '.join(sorted(TASKS))}") from None
    return module.load(data_config)


def at_length(data_config, length: int):
    """A copy of `data_config` whose inputs are `length` tokens (data.max_length = length, and
    whatever the task's generator must change with it); ValueError if the task's length is fixed.

    Synthetic tasks (recall, copy, mqar) generate examples of any length with the same settings; text,
    retrieval and bytelm read the same documents truncated (or windowed) at the new length.
    """
    task = data_config.task
    if task not in TASKS:
        raise ValueError(f"unknown task {task!r}; known: {', '.join(sorted(TASKS))}")
    if task in FIXED_LENGTH or "max_length" not in data_config:
        why = FIXED_LENGTH.get(task, "its data config has no max_length")
        raise ValueError(f"task '{task}' cannot change its input length ({why}); "
                         f"it cannot be evaluated at length {length}")
    if int(length) < 1:
        raise ValueError(f"length must be a positive number of tokens, got {length}")
    c = copy.deepcopy(data_config)
    rule = getattr(TASKS[task], "at_length", None)
    if rule is not None:
        rule(c, int(length))
    else:
        c.max_length = int(length)
    return c


__all__ = ["FIXED_LENGTH", "TASKS", "Split", "Task", "at_length", "chance", "eval_batches", "load", "train_batch"]
