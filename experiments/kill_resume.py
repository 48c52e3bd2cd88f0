"""Issue 18's resume probes, end to end: python experiments/kill_resume.py [--kills 6] [--out FILE]

1. An uninterrupted MQAR smoke run (checkpoint every step) gives the reference results.json.
2. The same run killed with SIGKILL at random steps (`--kills` times, each a random fraction of
   a step after it; it saves every step, so many land inside a save), resumed after each kill,
   then run to the end.
3. The same run killed two thirds of the way, its newest checkpoint truncated, then resumed.
4. Two trainers started on one workdir at once: the second must be refused in one line.
Every finished run must equal the reference (every field but wall-clock ones). Prints a markdown
report (also to --out).
"""
import argparse
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time

CONFIG = "configs/mqar.py:blockwise,smoke"
STEPS = 120
ARGS = [f"--config.train.num_steps={STEPS}", "--config.train.checkpoint_every=1",
        "--config.train.eval_every=40", "--config.train.log_every=1", "--config.train.keep_checkpoints=2"]
TIMING = {"steps_per_sec", "wall_time_s", "peak_memory_mb", "cpu_time_s", "malloc"}
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def command(workdir, extra=()):
    return [sys.executable, "-m", "attn_zoo.cli", "train", "--config", CONFIG, "--workdir", workdir,
            *ARGS, *extra]


def train(workdir, extra=()):
    done = subprocess.run(command(workdir, extra), cwd=ROOT, capture_output=True, text=True)
    return done.returncode, done.stdout + done.stderr


def results(workdir):
    with open(os.path.join(workdir, "results.json")) as f:
        return {k: v for k, v in json.load(f).items() if k not in TIMING}


def run_until(workdir, step, rng):
    """Start a trainer and SIGKILL it once metrics.jsonl has reached `step`, after a random
    fraction of a step (so kills land anywhere, often inside a save: it saves every step)."""
    p = subprocess.Popen(command(workdir), cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    while p.poll() is None and (last_step(workdir) or 0) < step:
        time.sleep(0.02)
    time.sleep(rng.uniform(0.0, 0.1))
    p.kill()
    p.wait()
    return last_step(workdir)


def killed_run(workdir, kills, rng):
    """`kills` SIGKILLs at increasing random steps, resuming after each, then the run to its end.
    Returns the last logged step when each kill landed."""
    targets = sorted(rng.sample(range(5, STEPS - 5), kills))
    landed = [run_until(workdir, t, rng) for t in targets]
    rc, out = train(workdir)
    return rc, out, landed


def last_step(workdir):
    path = os.path.join(workdir, "metrics.jsonl")
    if not os.path.exists(path):
        return None
    steps = []
    with open(path) as f:
        for line in f:
            try:
                steps.append(json.loads(line).get("step") or 0)
            except ValueError:
                pass  # a line torn by the kill (resume drops it, and says so)
    return max(steps) if steps else None


def truncate_newest_checkpoint(workdir):
    ckpt = os.path.join(workdir, "checkpoints")
    newest = max((d for d in os.listdir(ckpt) if d.isdigit()), key=int)
    cut = 0
    for base, _, files in os.walk(os.path.join(ckpt, newest)):
        for name in files:
            path = os.path.join(base, name)
            size = os.path.getsize(path)
            with open(path, "r+b") as f:
                f.truncate(size // 2)
            cut += 1
    return newest, cut


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--kills", type=int, default=6)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    rng = random.Random(args.seed)
    tmp = tempfile.mkdtemp(prefix="kill_resume_")
    lines = [f"# Resume probes (`python experiments/kill_resume.py --kills {args.kills}`)", "",
             f"`{CONFIG}` {' '.join(ARGS)}; results compared on every field but {sorted(TIMING)}.", ""]
    ok = True
    try:
        ref_dir = os.path.join(tmp, "reference")
        rc, out = train(ref_dir)
        assert rc == 0, out
        ref = results(ref_dir)

        kill_dir = os.path.join(tmp, "killed")
        rc, out, landed = killed_run(kill_dir, args.kills, rng)
        same = rc == 0 and results(kill_dir) == ref
        ok &= same
        lines.append(f"- {args.kills} SIGKILLs, landing after logged steps {landed}; resumed each time: "
                     f"exit {rc}, final results.json {'equal to' if same else 'DIFFERENT from'} the reference.")

        trunc_dir = os.path.join(tmp, "truncated")
        stopped = run_until(trunc_dir, STEPS * 2 // 3, rng)
        newest, cut = truncate_newest_checkpoint(trunc_dir)
        rc, out = train(trunc_dir)
        note = next((ln for ln in out.splitlines() if "checkpoint" in ln.lower() and newest in ln), "")
        same = rc == 0 and results(trunc_dir) == ref
        ok &= same
        lines.append(f"- Killed after logged step {stopped}, newest checkpoint {newest} truncated ({cut} files "
                     f"cut in half), resumed: exit {rc}, said {note.strip()!r}; final results.json "
                     f"{'equal to' if same else 'DIFFERENT from'} the reference.")

        lock_dir = os.path.join(tmp, "locked")
        first = subprocess.Popen(command(lock_dir), cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        time.sleep(4.0)
        rc2, out2 = train(lock_dir)
        first_out, _ = first.communicate()
        second_lines = [ln for ln in out2.strip().splitlines() if ln.strip()]
        same = first.returncode == 0 and results(lock_dir) == ref
        refused = rc2 != 0 and len(second_lines) == 1
        ok &= same and refused
        lines.append(f"- Two trainers on one workdir: the second exited {rc2} with "
                     f"{len(second_lines)} line(s): {second_lines[-1] if second_lines else ''!r}; the first "
                     f"exited {first.returncode}, its results.json {'equal to' if same else 'DIFFERENT from'} "
                     f"the reference.")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    lines.append("")
    lines.append("All equal." if ok else "NOT all equal: see above.")
    report = "\n".join(lines) + "\n"
    print(report)
    if args.out:
        with open(args.out, "w") as f:
            f.write(report)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
