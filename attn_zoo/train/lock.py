"""An exclusive lock on a training workdir: one trainer at a time writes its checkpoints and metrics.

    with workdir_lock("runs/lo"):   # raises WorkdirLocked naming the holder if another has it
        ...

The lock is `fcntl.flock(LOCK_EX | LOCK_NB)` on `<workdir>/.lock`, whose text names the holder
(pid, host, start time) for the error a second trainer gets. flock belongs to the open file, and
the OS releases it when the holding process exits, however it dies (crash, SIGKILL, OOM): a lock
left by a dead process is therefore free, with nothing to detect or clean up; the stale text in
the file is overwritten by the next holder. The file itself is never deleted (deleting it would let
two processes lock two different files of one name). flock works between processes of one machine;
on network file systems that do not support it, it may not exclude trainers on other hosts.
"""
from __future__ import annotations

import contextlib
import datetime
import fcntl
import os
import socket

LOCK_FILE = ".lock"


class WorkdirLocked(RuntimeError):
    """Another live process holds the workdir's lock; the message names it."""


def describe_holder(workdir) -> str:
    """The holder's text in `<workdir>/.lock` ('pid N on HOST since TIME'), or 'unknown'."""
    try:
        with open(os.path.join(workdir, LOCK_FILE), encoding="utf-8") as f:
            return f.read().strip() or "unknown"
    except OSError:
        return "unknown"


@contextlib.contextmanager
def workdir_lock(workdir):
    """Hold `<workdir>/.lock` exclusively for the block (the directory is created if needed);
    WorkdirLocked, at once, when another open file holds it (another process, or another
    `workdir_lock` of this one). Released, and its text cleared, when the block ends."""
    os.makedirs(workdir, exist_ok=True)
    path = os.path.join(workdir, LOCK_FILE)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise WorkdirLocked(
            f"workdir {workdir} is locked by another trainer ({describe_holder(workdir)}); wait for it "
            f"to finish or stop it, or give another --workdir") from None
    except BaseException:
        os.close(fd)
        raise
    try:
        started = datetime.datetime.now().astimezone().isoformat(timespec="seconds")
        os.ftruncate(fd, 0)
        os.write(fd, f"pid {os.getpid()} on {socket.gethostname()} since {started}\n".encode())
        yield path
    finally:
        try:
            os.ftruncate(fd, 0)
        finally:
            os.close(fd)  # closing the last descriptor of the open file releases the flock
