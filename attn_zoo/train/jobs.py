"""Run several `attn-zoo train` commands at once, each in its own process.

Small models use few of a machine's cores in one process (on 2 cores, two recall runs side by side
took 52 s against 44 s for one alone), so `compare --jobs N` trains N runs at a time. Each run is an
ordinary resumable workdir; its output goes to a log beside it. SIGINT/SIGTERM reach every running
run (each checkpoints), then the caller stops as an interrupted run would.
"""
from __future__ import annotations

import os
import subprocess
import sys
import time

from attn_zoo.train.loop import stop_on_signals

POLL_S = 0.2


class RunFailed(RuntimeError):
    """A run's process exited with an error (its log says which)."""


def train_command(config_spec, workdir, overrides=(), plugins=()) -> list[str]:
    """The argv that trains `config_spec` (with its variant) in `workdir` in a fresh process."""
    extra = ["--plugins", ",".join(plugins)] if plugins else []
    return [sys.executable, "-m", "attn_zoo.cli", "train", "--config", config_spec,
            "--workdir", workdir, *extra, *overrides]


def run_all(runs, jobs: int) -> None:
    """`runs`: (label, argv, log path) tuples, at most `jobs` running at a time, in order. Returns
    when all succeeded; RunFailed naming the run and its log when one fails (its log's tail printed,
    the others stopped first, resumable); SystemExit(130 or 143) after a SIGINT/SIGTERM stopped them."""
    if jobs < 1:
        raise ValueError(f"jobs={jobs}: expected 1 or more processes")
    pending, running = list(runs), {}
    with stop_on_signals() as stop:
        while pending or running:
            while pending and len(running) < jobs and stop["signal"] is None:
                label, argv, log = pending.pop(0)
                os.makedirs(os.path.dirname(log) or ".", exist_ok=True)
                print(f"{label}: training (log: {log})", flush=True)
                with open(log, "w") as f:
                    running[label] = (subprocess.Popen(argv, stdout=f, stderr=subprocess.STDOUT), log)
            time.sleep(POLL_S)
            if stop["signal"] is not None:
                _stop(running, stop["signal"])
                print(f"compare stopped by {stop['signal']}: run the same command again to resume", flush=True)
                raise SystemExit(130 if stop["signal"] == "SIGINT" else 143)
            for label, (proc, log) in list(running.items()):
                code = proc.poll()
                if code is None:
                    continue
                del running[label]
                if code != 0:
                    _stop(running, "SIGTERM")
                    print(_tail(log), end="", flush=True)
                    raise RunFailed(f"{label}: training exited with status {code}; its log: {log}")
                print(f"{label}: finished", flush=True)


def _stop(running, signal_name):
    import signal
    for proc, _ in running.values():
        proc.send_signal(getattr(signal, signal_name))
    for proc, _ in running.values():
        proc.wait()


def _tail(path, lines=15) -> str:
    with open(path, errors="replace") as f:
        return "".join(f.readlines()[-lines:])
