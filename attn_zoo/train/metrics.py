"""Workdir records: metrics.jsonl (one JSON object per event), console progress, peak memory."""
from __future__ import annotations

import json
import math
import os
import sys
import time


class MetricsLog:
    """Appends events to `metrics.jsonl`; optional tensorboardX scalars when it is installed.

    enabled=False (every host but the first in a multi-host run) makes it write nothing.
    """

    def __init__(self, workdir, tensorboard=True, enabled=True):
        self.path = os.path.join(workdir, "metrics.jsonl")
        self.tb, self.enabled = None, enabled
        if tensorboard and enabled:
            try:
                from tensorboardX import SummaryWriter
                self.tb = SummaryWriter(os.path.join(workdir, "tb"))
            except ImportError:
                pass

    def write(self, event: dict):
        if not self.enabled:
            return
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(json.dumps(event) + "\n")
        if self.tb is not None and "step" in event:
            for k, v in event.items():
                if isinstance(v, (int, float)) and k != "step":
                    self.tb.add_scalar(f"{event.get('split', 'event')}/{k}", v, event["step"])

    def truncate_after(self, step, warn=print):
        """Drop events after `step`: a resumed run rewrites them, so the log has each step once.
        A line that is not a JSON event (torn by a kill, or garbage) is dropped and reported with
        file:line; the checkpoint, not the log, is what a resume trusts."""
        if self.enabled and os.path.exists(self.path):
            keep = []
            with open(self.path, encoding="utf-8", errors="replace") as f:
                for lineno, ln in enumerate(f, start=1):
                    event = _event(ln)
                    if event is None:
                        if ln.strip():
                            warn(f"{self.path}:{lineno}: not a metrics event, dropped: {ln.strip()[:60]!r}")
                        continue
                    if event.get("step", 0) <= step:
                        keep.append(json.dumps(event) + "\n")
            with open(self.path, "w", encoding="utf-8") as f:
                f.writelines(keep)

    def close(self):
        if self.tb is not None:
            self.tb.close()


def _event(line):
    """The JSON object on `line`, or None when it is not one."""
    try:
        event = json.loads(line)
    except ValueError:
        return None
    return event if isinstance(event, dict) else None


def read(workdir) -> list[dict]:
    """The events of <workdir>/metrics.jsonl (lines that are not events are skipped)."""
    with open(os.path.join(workdir, "metrics.jsonl"), encoding="utf-8", errors="replace") as f:
        return [e for e in map(_event, f) if e is not None]


class Progress:
    """One line per call when stdout is not a TTY; a redrawn bar on a TTY; silent if not enabled."""

    def __init__(self, total, stream=None, enabled=True):
        self.total, self.stream, self.enabled = total, stream or sys.stdout, enabled
        self.tty = self.stream.isatty()
        self.start = time.time()

    def update(self, step, metrics: dict):
        if not self.enabled:
            return
        text = "  ".join(_fmt(k, v) for k, v in metrics.items())
        if self.tty:
            width = 24
            done = int(width * step / max(self.total, 1))
            self.stream.write(f"\r[{'#' * done}{'.' * (width - done)}] {step}/{self.total}  {text}")
            if step >= self.total:
                self.stream.write("\n")
        else:
            self.stream.write(f"step {step}/{self.total}  {text}  ({time.time() - self.start:.0f}s)\n")
        self.stream.flush()

    def message(self, text):
        if not self.enabled:
            return
        self.stream.write(("\n" if self.tty else "") + text + "\n")
        self.stream.flush()


def _fmt(k, v):
    if isinstance(v, float):
        return f"{k} {v:.3g}" if (abs(v) < 1e-2 and v) or not math.isfinite(v) else f"{k} {v:.4f}"
    return f"{k} {v}"


def peak_memory_mb() -> float | None:
    """This process's peak resident memory (VmHWM) in MiB; None where /proc is unavailable."""
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None
