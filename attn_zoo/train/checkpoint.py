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
