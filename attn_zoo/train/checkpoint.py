"""Orbax checkpoints in a workdir: `checkpoints/` (the last few) and `best/` (best validation).

Each checkpoint holds the train state pytree and a small JSON `meta` (best validation accuracy
and its step), so a resumed run continues best-model tracking where it stopped.
"""
from __future__ import annotations

import os

import jax
import orbax.checkpoint as ocp


def _manager(directory, keep):
    options = ocp.CheckpointManagerOptions(max_to_keep=keep, create=True,
                                           enable_async_checkpointing=False)
    return ocp.CheckpointManager(os.path.abspath(directory), options=options)


class Checkpoints:
    def __init__(self, workdir, keep=3):
        self.latest = _manager(os.path.join(workdir, "checkpoints"), keep)
        self.best = _manager(os.path.join(workdir, "best"), 1)

    def save(self, state, meta, *, best=False):
        """Save at step state['step'] (replacing a checkpoint already at that step)."""
        mngr = self.best if best else self.latest
        step = int(jax.device_get(state["step"]))
        if step in mngr.all_steps():
            mngr.delete(step)
        mngr.save(step, args=ocp.args.Composite(state=ocp.args.StandardSave(state),
                                                meta=ocp.args.JsonSave(dict(meta))))
        mngr.wait_until_finished()

    def restore(self, like, *, best=False):
        """(state, meta) of the newest checkpoint, shaped and sharded like `like`; None if none."""
        mngr = self.best if best else self.latest
        step = mngr.latest_step()
        if step is None:
            return None
        abstract = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding), like)
        got = mngr.restore(step, args=ocp.args.Composite(state=ocp.args.StandardRestore(abstract),
                                                         meta=ocp.args.JsonRestore()))
        return got["state"], dict(got["meta"])

    def drop_best_after(self, step):
        """Forget best checkpoints newer than `step` (written after the checkpoint we resume)."""
        for s in self.best.all_steps():
            if s > step:
                self.best.delete(s)

    def close(self):
        self.latest.close()
        self.best.close()
