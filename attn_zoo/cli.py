"""`attn-zoo <command>`: a thin shell over library functions (no logic lives here).

Every command parses its arguments and calls one function that a test or notebook can call
directly. Add a command by writing `_cmd_<name>(sub)` that registers a subparser with
`set_defaults(run=...)`, and listing it in COMMANDS.
"""
from __future__ import annotations

import argparse
import sys


def _cmd_list(sub):
    p = sub.add_parser("list", help="print the registered attention variants as a table")
    p.add_argument("--format", choices=["text", "markdown"], default="text")

    def run(args):
        from attn_zoo.attention import table
        print(table.registry_table(markdown=args.format == "markdown"))

    p.set_defaults(run=run)


def _cmd_bench(sub):
    p = sub.add_parser("bench", help="time and memory of attention variants against length")
    p.add_argument("--variants", default="dense,blockwise,local",
                   help="comma-separated registered names, or 'all'")
    p.add_argument("--lengths", default="1024,2048,4096,8192")
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--heads", type=int, default=8)
    p.add_argument("--head-dim", type=int, default=64)
    p.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    p.add_argument("--causal", action="store_true")
    p.add_argument("--repeats", type=int, default=5, help="timed calls per measurement (median)")
    p.add_argument("--baselines", default="xla,torch",
                   help="extra baselines: xla (jax.nn.dot_product_attention), cudnn, torch (if installed)")
    p.add_argument("--timeout", type=float, default=900, help="seconds per (variant, length)")
    p.add_argument("--out", default=None, help="directory for bench.md, bench.csv, bench.png")

    def run(args):
        from attn_zoo.bench import run as bench
        bench.main(args)

    p.set_defaults(run=run)


COMMANDS = [_cmd_list, _cmd_bench]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="attn-zoo", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    for add in COMMANDS:
        add(sub)
    return parser


def main(argv=None) -> int:
    args, extra = build_parser().parse_known_args(argv)
    if extra and not getattr(args, "accepts_extra", False):
        build_parser().error(f"unrecognized arguments: {' '.join(extra)}")
    args.extra = extra
    return args.run(args) or 0


if __name__ == "__main__":
    sys.exit(main())
