"""Where one training step's time goes, per variant: XLA:CPU thunk times from a profiler trace.

    python experiments/profile_step.py performer [none local ...] [--length 4096] [--top 12]

Builds the step `attn-zoo bench --mode train-step` times (configs/text.py, batch 2), runs it 2 times
to warm up and 3 timed, prints the times, the minor page faults and CPU seconds per step, then
traces one more step with `jax.profiler` and sums its thunks' durations by kind (an HLO op's name
without its number: ynn_fusion = XNNPACK dots with fused elementwise ops, ffi_call = the fused CPU
attention kernel, transpose/copy fusions = layout changes). Compare a variant with `none` (the step
without attention) to see what its attention costs inside the model.
It runs under this process's malloc: prefix LD_PRELOAD=libtcmalloc_minimal.so.4 to match
`attn-zoo bench`, which uses tcmalloc when installed (under glibc's, dense's steps are mostly
page faults: see the sys CPU column).
"""
import argparse
import collections
import glob
import gzip
import json
import re
import resource
import tempfile
import time

import jax

from attn_zoo.bench import train_step


def thunk_times(trace_dir):
    """{thunk kind: total ms} from the perfetto trace jax.profiler wrote under trace_dir."""
    path = glob.glob(f"{trace_dir}/**/*.trace.json.gz", recursive=True)[0]
    events = json.load(gzip.open(path))
    events = events["traceEvents"] if isinstance(events, dict) else events
    skip = re.compile(r"^\$|Thunk|Pjit|Slinky|Execute|ParseArguments")
    kinds = collections.Counter()
    for e in events:
        if e.get("ph") == "X" and not skip.search(e["name"]):
            kinds[re.sub(r"\.\d+$", "", e["name"])] += e.get("dur", 0) / 1e3
    return kinds


def profile(variant, length, top):
    call, _ = train_step.compiled_step(dict(config="configs/text.py", variant=variant, length=length, batch=2))
    call(), call()
    r0, times = resource.getrusage(resource.RUSAGE_SELF), []
    for _ in range(3):
        t = time.perf_counter()
        call()
        times.append(time.perf_counter() - t)
    r1 = resource.getrusage(resource.RUSAGE_SELF)
    with tempfile.TemporaryDirectory() as d:
        with jax.profiler.trace(d, create_perfetto_trace=True):
            call()
        kinds = thunk_times(d)
    print(f"{variant} N={length}: step s {', '.join(f'{t:.3f}' for t in times)}; per step "
          f"{(r1.ru_minflt - r0.ru_minflt) / 3:.0f} minor page faults, "
          f"{(r1.ru_utime - r0.ru_utime) / 3:.2f} s user, {(r1.ru_stime - r0.ru_stime) / 3:.2f} s sys CPU")
    print(f"  traced step: thunks sum to {sum(kinds.values()):.0f} ms")
    for kind, ms in kinds.most_common(top):
        print(f"  {ms:9.1f} ms  {kind}")


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("variants", nargs="+")
    p.add_argument("--length", type=int, default=4096)
    p.add_argument("--top", type=int, default=12)
    a = p.parse_args()
    for v in a.variants:
        profile(v, a.length, a.top)
