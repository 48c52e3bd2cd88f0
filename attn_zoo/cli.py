"""`attn-zoo <command>`: a thin shell over library functions (no logic lives here).

Every command parses its arguments and calls one function that a test or notebook can call
directly. Add a command by writing `_cmd_<name>(sub)` that registers a subparser with
`set_defaults(run=...)`, and listing it in COMMANDS.

An expected user error (a bad config field, variant, seed, path or file; a locked workdir: the
types in `user_errors()`; a full or failing disk: DISK_ERRNOS) is printed as one line, `error:
...`, with exit code 1; any other exception keeps its traceback. ATTN_ZOO_TRACEBACK=1 shows the
traceback of user errors too.
"""
from __future__ import annotations

import argparse
import errno
import os
import sys


# OSError numbers that say the disk refused a write (full, quota, read-only, failing): one line too
DISK_ERRNOS = (errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EIO)


def user_errors() -> tuple:
    """The exception types that mean a mistake in the command's input, not a bug: `main` prints
    them as one line. KeyError: an unknown config field; TypeError: an attention option of the
    wrong type; FloatingPointError: a diverged loss; WorkdirLocked: another trainer's workdir;
    CheckpointSaveError: a checkpoint the disk could not take (full, an I/O error)."""
    from attn_zoo.train.checkpoint import CheckpointSaveError
    from attn_zoo.train.lock import WorkdirLocked
    return (FileNotFoundError, NotADirectoryError, KeyError, ValueError, TypeError, FloatingPointError,
            WorkdirLocked, CheckpointSaveError)


def _error(e: BaseException) -> int:
    """Print `e` as one `error: ...` line on stderr; returns the exit code 1."""
    message = e.args[0] if isinstance(e, KeyError) and e.args else e
    print("error: " + " ".join(str(message).split("\n")).strip(), file=sys.stderr)
    return 1


def parse_ints(text: str, flag: str, low=None) -> list[int]:
    """'0,1,2' -> [0, 1, 2]; ValueError naming `flag` when it holds no integer, a non-integer, or
    (with `low`) a value below `low`."""
    items = [t.strip() for t in text.split(",") if t.strip()]
    try:
        values = [int(t) for t in items]
    except ValueError:
        bad = next(t for t in items if not t.lstrip("+-").isdigit())
        raise ValueError(f"{flag} {text!r}: {bad!r} is not an integer; expected comma-separated "
                         f"integers, e.g. {flag} 0,1,2") from None
    if not values:
        raise ValueError(f"{flag} {text!r}: expected one or more comma-separated integers")
    if low is not None and min(values) < low:
        raise ValueError(f"{flag} {text!r}: {min(values)} is not allowed; allowed: integers >= {low}")
    return values


def parse_shard(text: str) -> tuple[int, int]:
    """'1/4' -> (1, 4) ('2' -> (2, 1)); ValueError for anything but i/n with 0 <= i < n."""
    index, _, count = text.partition("/")
    try:
        shard = int(index), int(count or 1)
    except ValueError:
        raise ValueError(f"--shard {text!r}: expected I/N, e.g. 0/2 (the first of two parts)") from None
    if not 0 <= shard[0] < shard[1]:
        raise ValueError(f"--shard {text!r}: expected I/N with 0 <= I < N")
    return shard


def _cmd_list(sub):
    p = sub.add_parser("list", help="print the registered attention variants as a table, or one "
                                    "variant's options with their docs")
    _plugins_arg(p)
    p.add_argument("name", nargs="?", help="a registered variant: show its options")
    p.add_argument("--format", choices=["text", "markdown"], default="text")

    def run(args):
        from attn_zoo.attention.core import table
        try:
            print(table.variant_table(args.name, markdown=args.format == "markdown") if args.name
                  else table.registry_table(markdown=args.format == "markdown",
                                            columns=table.LIST_COLUMNS))
        except ValueError as e:
            print(f"error: {e}", file=sys.stderr)
            return 1

    p.set_defaults(run=run)


def _cmd_bench(sub):
    p = sub.add_parser("bench", help="time and memory of attention variants against length")
    _plugins_arg(p)
    p.add_argument("--variants", default="dense,blockwise,local",
                   help="comma-separated registered names, or 'all'")
    p.add_argument("--lengths", default=None,
                   help="comma-separated N (default 1024,2048,4096,8192; decode mode: 1024, 2048, ..., 32768)")
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--heads", type=int, default=8)
    p.add_argument("--head-dim", type=int, default=64)
    p.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    p.add_argument("--causal", action="store_true")
    p.add_argument("--repeats", type=int, default=5, help="timed calls per measurement (median)")
    p.add_argument("--rounds", type=int, default=1,
                   help="train-step mode: passes over all (variant, length) pairs, interleaved; the "
                        "median of the passes is reported")
    p.add_argument("--baselines", default="xla,torch",
                   help="extra baselines: xla (jax.nn.dot_product_attention), cudnn, torch (if installed)")
    p.add_argument("--timeout", type=float, default=900, help="seconds per (variant, length)")
    p.add_argument("--out", default=None, help="directory for NAME.md, NAME.csv, NAME.png")
    p.add_argument("--name", default="bench", help="file stem of the outputs")
    p.add_argument("--mode", default="attention", choices=["attention", "train-step", "decode"],
                   help="attention: the attention call alone; train-step: a whole model training "
                        "step per variant (LRA's efficiency table); decode: one token-by-token "
                        "decoding step and the cache size per decodable variant, against context N")
    p.add_argument("--parallel-max", type=int, default=8192,
                   help="decode mode: time the parallel causal forward beside it up to this N")
    p.add_argument("--config", default="configs/text.py",
                   help="train-step mode: the model's task config (byte inputs, 2 classes)")
    p.add_argument("--allocator", default="auto", choices=["auto", "system", "tcmalloc", "jemalloc"],
                   help="malloc of the worker processes (LD_PRELOAD); auto: tcmalloc or jemalloc when "
                        "installed, else glibc's (whose page faults slow large-temp steps)")

    def run(args):
        from attn_zoo.bench import run as bench
        if args.lengths is None:
            args.lengths = ",".join(str(1024 * 2 ** i) for i in range(6 if args.mode == "decode" else 4))
        _check_bench_args(args)
        bench.main(args)

    p.set_defaults(run=run)


def _check_bench_args(args):
    """Refuse, in one line before any worker starts, unknown variants or baselines, lengths and
    sizes below 1, and (train-step mode) a config that does not load."""
    from attn_zoo import attention, configs
    from attn_zoo.train import compare

    names = [] if args.variants == "all" else [v.strip() for v in args.variants.split(",") if v.strip()]
    if args.variants != "all":
        compare.check_variants(names)
    for b in (b.strip() for b in args.baselines.split(",") if b.strip()):
        if b not in ("xla", "cudnn", "torch") and b not in attention.names():
            raise ValueError(f"--baselines: unknown baseline {b!r}; known: xla, cudnn, torch")
    parse_ints(args.lengths, "--lengths", low=1)
    for flag in ("batch", "heads", "head_dim", "repeats", "rounds", "parallel_max"):
        if getattr(args, flag) < 1:
            raise ValueError(f"--{flag.replace('_', '-')} {getattr(args, flag)} is not allowed; allowed: "
                             f"an integer >= 1")
    if not args.timeout > 0:
        raise ValueError(f"--timeout {args.timeout} is not allowed; allowed: seconds > 0")
    if args.mode == "train-step":
        for name in names or ["dense"]:
            configs.load(compare.variant_spec(args.config, name), [f"--config.train.batch_size={args.batch}"])


def _cmd_train(sub):
    p = sub.add_parser("train", help="train and evaluate a model from a config (resumes in --workdir)",
                       description="Extra --config.a.b=value arguments override config fields.")
    _allocator_arg(p)
    _plugins_arg(p)
    p.add_argument("--config", required=True, help="path/to/config.py[:variant[,preset...]]")
    p.add_argument("--workdir", required=True)

    def run(args):
        from attn_zoo import configs, train
        result = train.train_and_evaluate(configs.load(args.config, args.extra), args.workdir)
        if result["status"] == "interrupted":
            return 130 if result["reason"] == "SIGINT" else 143 if result["reason"] == "SIGTERM" else 1
        return 0

    p.set_defaults(run=run, accepts_extra=True)


def _cmd_eval(sub):
    p = sub.add_parser("eval", help="evaluate a workdir's checkpoint on a split")
    p.add_argument("--workdir", required=True)
    p.add_argument("--split", default="test", choices=["train", "val", "test"])
    p.add_argument("--checkpoint", default="best", choices=["best", "latest"])
    p.add_argument("--length", type=int, default=None,
                   help="evaluate on inputs of this many tokens (length extrapolation); the result "
                        "is also appended to WORKDIR/extrapolation.jsonl")

    def run(args):
        import json

        from attn_zoo import train
        if not os.path.isfile(os.path.join(args.workdir, "config.json")):
            raise FileNotFoundError(f"{args.workdir} holds no config.json: not a training workdir "
                                    f"(attn-zoo train --workdir {args.workdir} makes one)")
        result = train.evaluate(args.workdir, args.split, args.checkpoint, length=args.length)
        print(json.dumps(result, indent=2))

    p.set_defaults(run=run)


def _cmd_generate(sub):
    p = sub.add_parser("generate", help="sample text from a trained byte LM workdir, token by token")
    p.add_argument("--workdir", required=True)
    p.add_argument("--prompt", required=True, help="text to continue (its UTF-8 bytes are the prefill)")
    p.add_argument("--tokens", type=int, required=True, help="bytes to sample")
    p.add_argument("--temperature", type=float, default=0.0, help="0: greedy; > 0: softmax(logits / T)")
    p.add_argument("--seed", type=int, default=0)

    def run(args):
        from attn_zoo.train import generate
        r = generate.generate(args.workdir, args.prompt, args.tokens, temperature=args.temperature,
                              seed=args.seed)
        print(r["prompt"] + r["text"])
        print(f"{r['tokens']} tokens at {r['tokens_per_s']:.1f} tokens/s ({r['attention']}, step "
              f"{r['step']}; prefill {r['prefill_s']:.2f} s)", file=sys.stderr)

    p.set_defaults(run=run)


def _cmd_data(sub):
    p = sub.add_parser("data", help="generate a task's data files, or --check a directory of them")
    tasks = p.add_subparsers(dest="task", required=True)
    lo = tasks.add_parser("listops", help="LRA ListOps generator: basic_{train,val,test}.tsv")
    lo.add_argument("--out", help="directory for the TSV files")
    lo.add_argument("--check", metavar="DIR", help="validate DIR instead of generating")
    lo.add_argument("--train", type=int, default=96_000)
    lo.add_argument("--val", type=int, default=2_000)
    lo.add_argument("--test", type=int, default=2_000)
    lo.add_argument("--min-length", type=int, default=500, help="keep samples longer than this")
    lo.add_argument("--max-length", type=int, default=2000, help="keep samples shorter than this")
    lo.add_argument("--max-depth", type=int, default=10)
    lo.add_argument("--max-args", type=int, default=10)
    lo.add_argument("--seed", type=int, default=0)

    def run(args):
        from attn_zoo.data import listops
        if args.check or not args.out:
            return _check_or_fail(lo, args)
        listops.check_generator(min_length=args.min_length, max_length=args.max_length, max_depth=args.max_depth,
                                max_args=args.max_args, count=args.train + args.val + args.test,
                                names={"min_length": "--min-length", "max_length": "--max-length",
                                       "max_depth": "--max-depth", "max_args": "--max-args",
                                       "count": "--train + --val + --test"})
        counts = listops.generate(args.out, train=args.train, val=args.val, test=args.test,
                                  min_length=args.min_length, max_length=args.max_length,
                                  max_depth=args.max_depth, max_args=args.max_args, seed=args.seed)
        print(f"wrote {counts} rows to {args.out}/basic_{{train,val,test}}.tsv")

    lo.set_defaults(run=run)

    pf = tasks.add_parser("pathfinder", help="Pathfinder generator (LRA settings): compressed numpy shards")
    pf.add_argument("--out", help="directory for meta.json and shard_*.npz (resumes if interrupted)")
    pf.add_argument("--resolution", type=int, choices=[32, 64, 128], default=32)
    pf.add_argument("--difficulty", choices=["baseline", "intermediate", "hard"], default="hard")
    pf.add_argument("--count", type=int, default=200_000, help="images (LRA: 200k, split 80/10/10)")
    pf.add_argument("--seed", type=int, default=0)
    pf.add_argument("--shard-size", type=int, default=2000)
    pf.add_argument("--check", metavar="DIR", help="validate DIR (generated shards or LRA's pathfinder*/ layout)")

    def run_pathfinder(args):
        from attn_zoo.data import pathfinder_io
        if args.check or not args.out:
            return _check_or_fail(pf, args)
        progress = lambda done, total: print(f"{done}/{total} images", flush=True)  # noqa: E731
        pathfinder_io.generate(args.out, resolution=args.resolution, difficulty=args.difficulty,
                               count=args.count, seed=args.seed, shard_size=args.shard_size, progress=progress)
        print(f"wrote {args.count} images ({args.resolution}px, {args.difficulty}) to {args.out}")

    pf.set_defaults(run=run_pathfinder)
    for name, what in (("text", "aclImdb/ (IMDb)"), ("retrieval", "new_aan_pairs.*.tsv (AAN)"),
                       ("image", "cifar-10-batches-py/"), ("bytelm", "a directory of text files")):
        t = tasks.add_parser(name, help=f"validate {what}: attn-zoo data {name} --check DIR")
        t.add_argument("--check", metavar="DIR", required=True)
        t.set_defaults(run=lambda args, t=t: _check_or_fail(t, args))


def _check_or_fail(parser, args):
    """Print the report of `attn-zoo data <task> --check DIR`; 1 when it found problems."""
    if not args.check:
        parser.error("give --out DIR to generate, or --check DIR to validate")
    from attn_zoo.data import check
    report = check.check(args.task, args.check)
    print(report)
    return 0 if report.ok else 1


def _cmd_pattern(sub):
    p = sub.add_parser("pattern", help="draw which (query, key) pairs a variant computes",
                       description="Variant options follow as --name value, e.g. --window 8.")
    _plugins_arg(p)
    p.add_argument("name", help="a registered variant, or 'all' for a composite picture")
    p.add_argument("--length", type=int, default=64)
    p.add_argument("--causal", action="store_true")
    p.add_argument("--out", required=True, help="PNG file to write")

    def run(args):
        from attn_zoo import pictures
        if args.name == "all":
            pictures.draw_all(args.length, args.out)
        else:
            pictures.draw_pattern(args.name, args.length, args.out, causal=args.causal,
                                  **parse_options(args.extra))
        print(f"wrote {args.out}")

    p.set_defaults(run=run, accepts_extra=True)


def parse_options(extra):
    """['--window', '8', '--mode', 'fixed'] -> {'window': 8, 'mode': 'fixed'} (Python literals)."""
    from attn_zoo.attention.core.options import parse_literal

    if len(extra) % 2 or not all(a.startswith("--") for a in extra[::2]):
        raise SystemExit(f"options must come as --name value pairs, got: {' '.join(extra)}")
    return {name[2:].replace("-", "_"): parse_literal(value) for name, value in zip(extra[::2], extra[1::2])}


def _cmd_compare(sub):
    p = sub.add_parser("compare", help="train variants on one task (per seed) and write a leaderboard",
                       description="Extra --config.a.b=value arguments override every run's config.")
    _allocator_arg(p)
    _plugins_arg(p)
    p.add_argument("--config", required=True, help="path/to/task.py[:preset,...] (no variant)")
    p.add_argument("--variants", required=True, help="comma-separated names, or 'all'")
    p.add_argument("--seeds", default="0", help="comma-separated seeds")
    p.add_argument("--workdir", required=True)
    p.add_argument("--chance", type=float, default=None,
                   help="the task's chance or majority rate, in the leaderboard's metric")

    def run(args):
        from attn_zoo.train import compare
        compare.compare(args.config, args.variants, parse_ints(args.seeds, "--seeds"),
                        args.workdir, args.extra, chance=args.chance)

    p.set_defaults(run=run, accepts_extra=True)


def _cmd_sweep(sub):
    p = sub.add_parser("sweep", help="tune each variant over a grid on validation, run seeds at its best "
                                     "point, and write a leaderboard (resumable, shardable, recorded)",
                       description="Extra --config.a.b=value arguments override every run's config.")
    _allocator_arg(p)
    _plugins_arg(p)
    p.add_argument("--config", required=True, help="path/to/task.py[:preset,...] (no variant)")
    p.add_argument("--variants", required=True, help="comma-separated names, or 'all'")
    p.add_argument("--grid", action="append", default=[], metavar="FIELD=V1,V2",
                   help="a config field and its values, e.g. train.learning_rate=1e-3,3e-3 (repeatable)")
    p.add_argument("--seeds", default="0,1,2", help="comma-separated seeds; the first one tunes")
    p.add_argument("--workdir", required=True, help="run workdirs (checkpoints) go below it")
    p.add_argument("--records", default=None,
                   help="directory of finished-run records keyed by config (default WORKDIR/records)")
    p.add_argument("--out", default=None, help="leaderboard files (default WORKDIR)")
    p.add_argument("--shard", default="0/1", metavar="I/N", help="run the I-th of N disjoint parts")
    p.add_argument("--chance", type=float, default=None,
                   help="the task's chance or majority rate, in the leaderboard's metric")

    def run(args):
        from attn_zoo.train import sweep
        sweep.sweep(args.config, args.variants, args.grid, parse_ints(args.seeds, "--seeds"),
                    args.workdir, records=args.records, overrides=args.extra,
                    shard=parse_shard(args.shard), chance=args.chance, out=args.out)

    p.set_defaults(run=run, accepts_extra=True)


def _cmd_summarize(sub):
    p = sub.add_parser("summarize", help="leaderboard of the finished runs below some directories, "
                                         "or of a sweep's records directory")
    p.add_argument("dirs", nargs="+", help="run directories, or sweep records directories")
    p.add_argument("--out", default=None, help="write leaderboard.md/.csv and pareto.png here")
    p.add_argument("--chance", type=float, default=None,
                   help="the task's chance or majority rate, in the leaderboard's metric")

    def run(args):
        from attn_zoo.train import compare, sweep
        if all(sweep.is_records(d) for d in args.dirs):
            return 0 if sweep.summarize_records(args.dirs, out=args.out, chance=args.chance) else 1
        compare.summarize(args.dirs, out=args.out, chance=args.chance)

    p.set_defaults(run=run)


COMMANDS = [_cmd_list, _cmd_bench, _cmd_train, _cmd_eval, _cmd_generate, _cmd_data, _cmd_pattern,
            _cmd_compare, _cmd_sweep, _cmd_summarize]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="attn-zoo", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    for add in COMMANDS:
        add(sub)
    return parser


def _plugins_arg(p):
    p.add_argument("--plugins", default="", metavar="REFS",
                   help="comma-separated attention plugins to load first: module names or .py paths "
                        "(as $ATTN_ZOO_PLUGINS); a training workdir records them for eval/compare/summarize")


def _allocator_arg(p):
    p.add_argument("--allocator", default="auto", choices=["auto", "system", "tcmalloc", "jemalloc"],
                   help="malloc to run under (re-executes with LD_PRELOAD); auto: tcmalloc or jemalloc "
                        "when installed, else glibc's, whose page faults slow large-temp steps")


def main(argv=None) -> int:
    args, extra = build_parser().parse_known_args(argv)
    if argv is None and args.command in ("train", "compare", "sweep"):  # the console script, not a test
        from attn_zoo.bench.common import run_under_malloc
        run_under_malloc(args.allocator, sys.argv[1:])
    if extra and not getattr(args, "accepts_extra", False):
        build_parser().error(f"unrecognized arguments: {' '.join(extra)}")
    args.extra = extra
    if args.command in ("train", "eval", "compare", "sweep"):
        from attn_zoo.train.loop import enable_compilation_cache
        enable_compilation_cache()
    if getattr(args, "plugins", ""):
        from attn_zoo import attention
        try:
            attention.plugins.load_all(r for r in args.plugins.split(",") if r.strip())
        except (FileNotFoundError, ModuleNotFoundError) as e:
            print(f"error: {e}", file=sys.stderr)
            return 1
    try:
        return args.run(args) or 0
    except Exception as e:
        disk = isinstance(e, OSError) and e.errno in DISK_ERRNOS  # the machine's, not a bug
        if not (isinstance(e, user_errors()) or disk) or os.environ.get("ATTN_ZOO_TRACEBACK"):
            raise
        return _error(e)


if __name__ == "__main__":
    sys.exit(main())
