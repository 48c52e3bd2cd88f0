"""The benchmark's worker: one measurement per process, so peak memory and out-of-memory are isolated.

`python -m attn_zoo.bench.worker '{"variant": "local", "length": 8192, ...}'` prints one JSON line:
the configuration, what its suite measured (train_step.measure when "mode" is "train-step", else
attention_alone.measure) and the malloc this process runs under. The driver (run.py) spawns it.
"""
from __future__ import annotations

import json
import sys

from attn_zoo.bench import attention_alone, train_step
from attn_zoo.bench.common import malloc_name


def main(argv):
    cfg = json.loads(argv[1])
    suite = train_step if cfg.get("mode") == "train-step" else attention_alone
    print(json.dumps({**cfg, **suite.measure(cfg), "malloc": malloc_name()}), flush=True)


if __name__ == "__main__":
    main(sys.argv)
