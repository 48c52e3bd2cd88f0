"""Draw the pattern pictures into experiments/results/: the composite and one PNG per variant.

    python experiments/make_patterns.py [--length 64]

Each variant is drawn with its first test option set; `attn-zoo pattern NAME --length 64
--out FILE.png [--option value ...]` draws one variant with any options.
"""
import argparse
import os
import sys

from attn_zoo import attention, pictures

RESULTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--length", type=int, default=64)
    parser.add_argument("--per-variant", action="store_true", help="also one PNG per variant")
    args = parser.parse_args(argv)
    print("$ python experiments/make_patterns.py " + " ".join(argv if argv is not None else sys.argv[1:]))
    os.makedirs(RESULTS, exist_ok=True)
    out = pictures.draw_all(args.length, os.path.join(RESULTS, "patterns.png"))
    print(f"wrote {os.path.relpath(out)}")
    if args.per_variant:
        for name in attention.names(builtin=True):
            spec = attention.get(name)
            path = os.path.join(RESULTS, f"pattern-{name}.png")
            try:
                pictures.draw_pattern(name, args.length, path, **dict(spec.test_options[0]))
                print(f"wrote {os.path.relpath(path)}")
            except Exception as e:  # noqa: BLE001 - report and go on with the others
                print(f"skipped {name}: {type(e).__name__}: {e}")


if __name__ == "__main__":
    main()
