"""Where one training step's time goes, per variant: XLA:CPU thunk times from a profiler trace.

    python experiments/profile_step.py performer [none local ...] [--length 4096] [--top 12]
    python experiments/profile_step.py dense linear --config configs/listops.py:small --batch 32 \
        --length 256 --by-source

Builds the step `attn-zoo bench --mode train-step` times (default configs/text.py, batch 2), runs it
2 times to warm up and 3 timed, prints the times, the minor page faults and CPU seconds per step,
then traces one more step with `jax.profiler` and sums its thunks' durations by kind (an HLO op's
name without its number: ynn_fusion = XNNPACK dots with fused elementwise ops, dot = XLA's own
dot emitter (weight gradients, transposed operands), ffi_call = the fused CPU attention kernel,
transpose/copy fusions = layout changes). `--by-source` sums them instead by the attn_zoo source
line each op came from (the innermost attn_zoo frame of its HLO stack frame; `bwd` marks the
ops of the backward pass), which names the Python line that costs the time.
Compare a variant with `none` (the step without attention) to see what its attention costs
inside the model. It runs under this process's malloc: prefix
LD_PRELOAD=libtcmalloc_minimal.so.4 to match `attn-zoo bench`, which uses tcmalloc when installed
(under glibc's, dense's steps are mostly page faults: see the sys CPU column).
"""
import argparse
import collections
import glob
import gzip
import json
import linecache
import os
import re
import resource
import tempfile
import time

import jax

from attn_zoo.bench import train_step

SKIP = re.compile(r"^\$|Thunk|Pjit|Slinky|Execute|ParseArguments")


def thunk_events(trace_dir):
    """[(thunk name, ms)] of the perfetto trace jax.profiler wrote under trace_dir."""
    path = glob.glob(f"{trace_dir}/**/*.trace.json.gz", recursive=True)[0]
    events = json.load(gzip.open(path))
    events = events["traceEvents"] if isinstance(events, dict) else events
    return [(e["name"], e.get("dur", 0) / 1e3) for e in events
            if e.get("ph") == "X" and not SKIP.search(e["name"])]


def thunk_times(trace_dir):
    """{thunk kind: total ms} from the perfetto trace jax.profiler wrote under trace_dir."""
    kinds = collections.Counter()
    for name, ms in thunk_events(trace_dir):
        kinds[re.sub(r"\.\d+$", "", name)] += ms
    return kinds


def _table(text, header):
    """{id: line} of one of the HLO text's source tables (FileNames, FileLocations, ...)."""
    out, inside = {}, False
    for line in text.splitlines():
        if line == header:
            inside = True
        elif inside and not line.strip():
            break
        elif inside:
            key, _, rest = line.partition(" ")
            out[int(key)] = rest
    return out


def source_of(hlo_text):
    """{instruction name: 'file:line (bwd)'}: the innermost attn_zoo frame (outside attn_zoo/bench)
    of each HLO instruction's stack frame; `bwd` when it belongs to the backward pass."""
    files = {k: v.strip('"') for k, v in _table(hlo_text, "FileNames").items()}
    locs = {k: dict(re.findall(r"(\w+)=(\d+)", v)) for k, v in _table(hlo_text, "FileLocations").items()}
    frames = {k: dict(re.findall(r"(\w+)=(\d+)", v)) for k, v in _table(hlo_text, "StackFrames").items()}
    root = os.path.dirname(os.path.dirname(os.path.abspath(train_step.__file__)))

    def where(frame_id):
        while frame_id:  # parent_frame_id is the parent's id + 1; 0: none
            frame = frames[frame_id]
            loc = locs[int(frame["file_location_id"])]
            path = files[int(loc["file_name_id"])]
            if path.startswith(root) and "/bench/" not in path:
                return os.path.relpath(path, os.path.dirname(root)) + ":" + loc["line"], path, int(loc["line"])
            frame_id = int(frame["parent_frame_id"]) - 1
        return "(elsewhere)", None, 0

    out = {}
    for m in re.finditer(r"^\s*(?:ROOT )?%?([\w.\-]+) = .*?op_name=\"([^\"]*)\"(?: stack_frame_id=(\d+))?",
                         hlo_text, re.M):
        name, op_name, frame = m.group(1), m.group(2), int(m.group(3) or 0)
        label, path, line = where(frame)
        code = linecache.getline(path, line).strip()[:60] if path else ""
        out[name] = f"{label}{' bwd' if 'transpose(' in op_name else ''}  {code}"
    return out


def profile(variant, length, top, config="configs/text.py", batch=2, by_source=False):
    call, _ = train_step.compiled_step(dict(config=config, variant=variant, length=length, batch=batch))
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
        events = thunk_events(d)
    kinds = collections.Counter()
    if by_source:
        where = source_of(call.compiled.as_text())
        for name, ms in events:
            kinds[where.get(name, "(unknown) " + re.sub(r"\.\d+$", "", name))] += ms
    else:
        for name, ms in events:
            kinds[re.sub(r"\.\d+$", "", name)] += ms
    print(f"{variant} N={length}: step s {', '.join(f'{t:.3f}' for t in times)}; per step "
          f"{(r1.ru_minflt - r0.ru_minflt) / 3:.0f} minor page faults, "
          f"{(r1.ru_utime - r0.ru_utime) / 3:.2f} s user, {(r1.ru_stime - r0.ru_stime) / 3:.2f} s sys CPU")
    print(f"  traced step: {len(events)} thunks sum to {sum(kinds.values()):.0f} ms")
    for kind, ms in kinds.most_common(top):
        print(f"  {ms:9.1f} ms  {kind}")


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("variants", nargs="+")
    p.add_argument("--length", type=int, default=4096)
    p.add_argument("--top", type=int, default=12)
    p.add_argument("--config", default="configs/text.py", help="the model's task config[:presets]")
    p.add_argument("--batch", type=int, default=2)
    p.add_argument("--by-source", action="store_true", help="sum thunk times by attn_zoo source line")
    a = p.parse_args()
    for v in a.variants:
        profile(v, a.length, a.top, a.config, a.batch, a.by_source)
