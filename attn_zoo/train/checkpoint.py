"""Orbax checkpoints in a workdir: `checkpoints/` (the last few) and `best/` (best validation).

Each checkpoint holds the train state pytree and a small JSON `meta` (best validation accuracy
and its step), so a resumed run continues best-model tracking where it stopped.

A save that fails (disk full, an I/O error) raises CheckpointSaveError in one line naming the
checkpoint, the error and the last good checkpoint, after removing what the failed save left
(Orbax's `<step>.orbax-checkpoint-tmp` directory); the older checkpoints are untouched.
"""
from __future__ import annotations

import contextlib
import functools
import logging
import os
import shutil
import sys
import threading
import time

import jax
import orbax.checkpoint as ocp

TMP_SUFFIX = ".orbax-checkpoint-tmp"  # Orbax writes <step><TMP_SUFFIX>, then renames it to <step>


class CheckpointSaveError(OSError):
    """A checkpoint could not be written; the message names it, the error and the last good one."""


@contextlib.contextmanager
def _quiet_failure(wait_s=60.0):
    """Run a save with Orbax's failure noise held back: its writer threads log each failure with a
    traceback (loggers 'absl', 'asyncio') and tensorstore's late callbacks into a closed event loop
    reach sys.unraisablehook: dozens of tracebacks for one full disk. On success the held records
    are logged. On an exception, Orbax's writer threads that the save started are joined (up to
    `wait_s`), and the stragglers' tracebacks stay muted for the rest of the process (they arrive
    until exit, when the failed futures are collected): the run stops with the caller's one line."""
    held, before = [], set(threading.enumerate())
    loggers, unraisable = [logging.getLogger(n) for n in ("absl", "asyncio")], sys.unraisablehook

    def hold(record):  # a logging filter: keep the record aside, let nothing through now
        held.append(record)
        return False

    for logger in loggers:
        logger.addFilter(hold)
    sys.unraisablehook = held.append
    try:
        yield
    except BaseException:
        deadline = time.monotonic() + wait_s
        for t in set(threading.enumerate()) - before:
            if type(t).__name__ == "_SignalingThread":  # Orbax's writers (not its idle pools' workers)
                with contextlib.suppress(Exception):  # its join re-raises the thread's error: reported
                    t.join(max(0.0, deadline - time.monotonic()))
        for logger in loggers:
            logger.addFilter(_no_traceback)  # once: addFilter skips a filter already there
        if getattr(unraisable, "func", None) is not _unless_closed_loop:
            unraisable = functools.partial(_unless_closed_loop, unraisable)
        raise
    finally:
        for logger in loggers:
            logger.removeFilter(hold)
        sys.unraisablehook = unraisable
    for record in held:  # reached only without an exception
        if isinstance(record, logging.LogRecord):
            logging.getLogger(record.name).handle(record)
        else:
            unraisable(record)


def _no_traceback(record) -> bool:
    """A logging filter dropping records that carry a traceback (a failed save's stragglers)."""
    return not record.exc_info


def _unless_closed_loop(hook, unraisable):
    """sys.unraisablehook less tensorstore's 'Event loop is closed' after a failed save."""
    if not (isinstance(unraisable.exc_value, RuntimeError)
            and "Event loop is closed" in str(unraisable.exc_value)):
        hook(unraisable)


def _manager(directory, keep):
    options = ocp.CheckpointManagerOptions(max_to_keep=keep, create=True,
                                           enable_async_checkpointing=False)
    return ocp.CheckpointManager(os.path.abspath(directory), options=options)


class Checkpoints:
    def __init__(self, workdir, keep=3):
        self.latest = _manager(os.path.join(workdir, "checkpoints"), keep)
        self.best = _manager(os.path.join(workdir, "best"), 1)

    def save(self, state, meta, *, best=False):
        """Save at step state['step'] (replacing a checkpoint already at that step). An OSError or
        Orbax's ValueError (tensorstore's RESOURCE_EXHAUSTED, ...) while writing: what the save
        left is removed and CheckpointSaveError raised (one line; the run should stop)."""
        mngr = self.best if best else self.latest
        step = int(jax.device_get(state["step"]))
        good = self.latest.latest_step()
        if step in mngr.all_steps():
            mngr.delete(step)
        try:
            with _quiet_failure():
                mngr.save(step, args=ocp.args.Composite(state=ocp.args.StandardSave(state),
                                                        meta=ocp.args.JsonSave(dict(meta))))
                mngr.wait_until_finished()
        except (OSError, ValueError) as e:
            _remove_step(mngr.directory, step)
            first = " ".join((str(e).strip() or type(e).__name__).split())[:600]
            last = "none" if good is None else f"{self.latest.directory}/{good} (step {good})"
            raise CheckpointSaveError(
                f"could not save checkpoint {mngr.directory}/{step} ({type(e).__name__}: {first}); "
                f"training stopped. Last good checkpoint: {last}; free space or fix the error, then "
                f"run the same command again to resume") from e

    def restore(self, like, *, best=False, warn=print):
        """(state, meta) of the newest readable checkpoint, shaped and sharded like `like`; None if
        there is none. An unreadable one (truncated, empty metadata) is reported in one line and
        the next older one is tried: one bad file never blocks a resume."""
        mngr = self.best if best else self.latest
        abstract = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding), like)
        for step in sorted(mngr.all_steps(), reverse=True):
            try:
                got = mngr.restore(step, args=ocp.args.Composite(state=ocp.args.StandardRestore(abstract),
                                                                 meta=ocp.args.JsonRestore()))
            except Exception as e:  # noqa: BLE001 (orbax raises many types for a damaged checkpoint)
                first = (str(e).strip().splitlines() or [type(e).__name__])[0][:160]
                warn(f"checkpoint {mngr.directory}/{step} is unreadable ({type(e).__name__}: {first}); "
                     f"trying an older one")
                continue
            return got["state"], dict(got["meta"])
        if mngr.all_steps():
            raise ValueError(f"no readable checkpoint in {mngr.directory} (steps {sorted(mngr.all_steps())}); "
                             f"move it away to start this run over")
        return None

    def drop_best_after(self, step):
        """Forget best checkpoints newer than `step` (written after the checkpoint we resume)."""
        for s in self.best.all_steps():
            if s > step:
                self.best.delete(s)

    def close(self):
        self.latest.close()
        self.best.close()


def _remove_step(directory, step):
    """Remove checkpoint `step` of a failed save: its temporary directory and, if the rename
    happened before the failure, the directory itself."""
    directory = os.fspath(directory)
    for name in os.listdir(directory) if os.path.isdir(directory) else []:
        if name == str(step) or name.startswith(f"{step}{TMP_SUFFIX}"):
            shutil.rmtree(os.path.join(directory, name), ignore_errors=True)
