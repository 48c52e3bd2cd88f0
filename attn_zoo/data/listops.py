"""ListOps (Nangia & Bowman 2018, as generated for LRA): nested MIN/MAX/MED/SM over digits.

Generator: the LRA algorithm with a seeded numpy RNG (deterministic). Reader: `basic_{split}.tsv`
files with header `Source\\tTarget`, written by `generate` or taken from LRA's `listops-1000/`.
Tokens are the whitespace-separated Source items with `(` and `)` removed; ids come from the fixed
sorted VOCAB below (never from a set, so ids are the same in every process).
"""
from __future__ import annotations

import os
import sys
import time

import numpy as np

from attn_zoo.data.dataset import Split, Task, decode_line

OPERATORS = ("[MIN", "[MAX", "[MED", "[SM")
END = "]"
PAD = "<pad>"
# Fixed, sorted token list (id = index); pad first. test_listops checks it is sorted and complete.
VOCAB = (PAD, "0", "1", "2", "3", "4", "5", "6", "7", "8", "9", "[MAX", "[MED", "[MIN", "[SM", "]")
TOKEN_ID = {t: i for i, t in enumerate(VOCAB)}
NUM_CLASSES = 10
SPLITS = ("train", "val", "test")
OPERATOR_PROB = 0.25
# The longest expressions the generator is asked for: its search (and the length table that
# check_generator builds, O(max_length²) bit operations) grows with them; 16x LRA's 2000.
MAX_GENERATED_LENGTH = 32_768


class _TooLong(Exception):
    pass


def _tree(rng, depth, max_depth, max_args, budget):
    """(tree, length): a digit, or (((op, a1), a2), ..., END) nested pairs as LRA builds them.

    Length counts the operator and its closing bracket as 2 plus the children; a digit as 1.
    `budget` ([tokens left]) aborts a tree as soon as it reaches max_length: such a tree would be
    rejected anyway, so the accepted samples keep the algorithm's distribution, only faster.
    """
    budget[0] -= 1
    if depth < max_depth and rng.random() < OPERATOR_PROB:
        budget[0] -= 1
        children = []
        for _ in range(int(rng.integers(2, max_args + 1))):
            if budget[0] <= 0:
                raise _TooLong
            children.append(_tree(rng, depth + 1, max_depth, max_args, budget))
        t = OPERATORS[int(rng.integers(len(OPERATORS)))]
        for child, _ in children:
            t = (t, child)
        return (t, END), 2 + sum(n for _, n in children)
    return int(rng.integers(10)), 1


def to_string(t) -> str:
    if isinstance(t, tuple):
        return "( " + " ".join(to_string(x) for x in t) + " )"
    return str(t)


def evaluate(source: str) -> int:
    """Value of a Source string (parentheses ignored): the ListOps label."""
    stack: list[list] = []
    value = None
    for tok in tokenize(source):
        if tok in OPERATORS:
            stack.append([tok])
        elif tok == END:
            op, *args = stack.pop()
            value = _apply(op, args)
            if stack:
                stack[-1].append(value)
        else:
            value = int(tok)
            if stack:
                stack[-1].append(value)
    if stack or value is None:
        raise ValueError(f"unbalanced ListOps expression: {source!r}")
    return value


def _apply(op, args):
    if op == "[MIN":
        return min(args)
    if op == "[MAX":
        return max(args)
    if op == "[MED":
        return int(np.median(args))
    return sum(args) % 10  # [SM


def tokenize(source: str) -> list[str]:
    return source.replace("(", " ").replace(")", " ").split()


def lengths_below(max_depth, max_args, below) -> int:
    """Bitmask (bit L set: some expression has L tokens) of the lengths < `below` that `_tree`
    makes at these settings: a digit is 1 token, an operator 2 plus its 2..max_args children's,
    and operators nest max_depth - 1 levels deep."""
    mask, digit = (1 << below) - 1, 1 << 1
    reach = digit & mask
    for _ in range(max(max_depth - 1, 0)):
        sums, children = 0, reach  # sums of k children's lengths, k = 1, 2, ...
        for _ in range(2, max_args + 1):
            nxt, rest = 0, reach
            while rest and children:  # the sumset of `children` and `reach`
                low = rest & -rest
                nxt |= children << (low.bit_length() - 1)
                rest ^= low
            children = nxt & mask
            sums |= children
        new = (digit | (sums << 2)) & mask
        if new == reach:  # a fixed point: deeper levels add nothing below `below`
            break
        reach = new
    return reach


def check_generator(*, min_length, max_length, max_depth, max_args, count, names=None) -> None:
    """Raise a one-line ValueError when `generate` could never finish at these settings: no
    expression length lies strictly between min_length and max_length, or fewer distinct
    expressions exist there than the `count` (train + val + test) it must find. `names` maps
    each setting to how the caller spells it (config fields, command-line flags)."""
    n = {"min_length": "min_length", "max_length": "max_length", "max_depth": "max_depth",
         "max_args": "max_args", "count": "train + val + test", **(names or {})}
    for key, value, low in (("max_depth", max_depth, 1), ("max_args", max_args, 2), ("count", count, 1)):
        if not isinstance(value, int) or value < low:
            raise ValueError(f"{n[key]}={value!r} is not allowed; allowed: an integer >= {low}")
    if max_length > MAX_GENERATED_LENGTH + 1:
        raise ValueError(
            f"{n['max_length']}={max_length} asks the ListOps generator for expressions of up to "
            f"{max_length - 1} tokens (min_length={min_length}); it makes at most {MAX_GENERATED_LENGTH} "
            f"(longer ones would take hours to find); allowed: {n['max_length']} <= {MAX_GENERATED_LENGTH + 1}, "
            f"or files read from data.dir")
    if max_length <= min_length + 1:
        raise ValueError(
            f"{n['max_length']}={max_length} with {n['min_length']}={min_length} leaves no length for the "
            f"ListOps generator, which keeps expressions of min_length < length < max_length tokens (it "
            f"would search forever); allowed: {n['max_length']} >= {min_length + 2} or {n['min_length']} "
            f"<= {max_length - 2}")
    fits = lengths_below(max_depth, max_args, max_length) >> (min_length + 1) << (min_length + 1)
    if not fits:
        longest = 1
        for _ in range(max_depth - 1):
            longest = 2 + max_args * longest
        why = (f"the longest has {longest} tokens" if longest <= min_length
               else f"the lengths it makes skip {min_length + 1}..{max_length - 1}")
        raise ValueError(
            f"no ListOps expression has {n['min_length']}={min_length} < length < {n['max_length']}="
            f"{max_length} tokens at {n['max_depth']}={max_depth}, {n['max_args']}={max_args} ({why}), so "
            f"the generator would search forever; allowed: a lower {n['min_length']}, a higher "
            f"{n['max_length']}, or a larger {n['max_depth']} / {n['max_args']}")
    # only digits (1 token: 10 of them) and/or one operator over two digits (4 tokens: 400) fit
    if fits & ~((1 << 1) | (1 << 4)) == 0:
        distinct = 10 * bool(fits & (1 << 1)) + 4 * 10 * 10 * bool(fits & (1 << 4))
        if count > distinct:
            raise ValueError(
                f"{n['count']}={count} distinct ListOps expressions are needed, but only {distinct} have "
                f"{n['min_length']}={min_length} < length < {n['max_length']}={max_length} tokens, so the "
                f"generator would search forever; allowed: a wider length range or {n['count']} <= {distinct}")


def generate(out_dir, *, train, val, test, min_length, max_length, max_depth, max_args, seed,
             report_every_s=10.0):
    """Write basic_{train,val,test}.tsv: unique expressions with min_length < length < max_length
    (ValueError first when no such set exists: `check_generator`). Prints its progress to stderr
    every `report_every_s` seconds (a long generation is not a silent one)."""
    check_generator(min_length=min_length, max_length=max_length, max_depth=max_depth, max_args=max_args,
                    count=train + val + test)
    rng = np.random.default_rng(seed)
    total, seen, rows = train + val + test, set(), []
    last = time.monotonic()
    while len(rows) < total:
        if time.monotonic() - last >= report_every_s:
            print(f"listops: generated {len(rows):,}/{total:,} expressions for {out_dir}", file=sys.stderr,
                  flush=True)
            last = time.monotonic()
        try:
            t, length = _tree(rng, 1, max_depth, max_args, [max_length])
        except _TooLong:
            continue
        if not min_length < length < max_length:
            continue
        source = to_string(t)
        if source not in seen:
            seen.add(source)
            rows.append((source, evaluate(source)))
    os.makedirs(out_dir, exist_ok=True)
    bounds = {"train": (0, train), "val": (train, train + val), "test": (train + val, total)}
    for split, (lo, hi) in bounds.items():
        with open(os.path.join(out_dir, f"basic_{split}.tsv"), "w", encoding="utf-8") as f:
            f.write("Source\tTarget\n")
            f.writelines(f"{s}\t{y}\n" for s, y in rows[lo:hi])
    return {split: hi - lo for split, (lo, hi) in bounds.items()}


def read_tsv(path, max_length) -> Split:
    """Encode one TSV: inputs [N, max_length] int32 (pad 0), explicit mask, labels [N]."""
    inputs, lengths, labels = [], [], []
    with open(path, "rb") as f:
        header = decode_line(path, 1, f.readline()).rstrip("\n")
        if header.split("\t") != ["Source", "Target"]:
            raise ValueError(f"{path}:1: expected header 'Source<TAB>Target', got {header!r}")
        for lineno, raw in enumerate(f, start=2):
            line = decode_line(path, lineno, raw)
            fields = line.rstrip("\n").split("\t")
            if len(fields) != 2 or not fields[1].strip().isdigit() or int(fields[1]) >= NUM_CLASSES:
                raise ValueError(f"{path}:{lineno}: expected 'Source<TAB>Target' with Target in "
                                 f"0..{NUM_CLASSES - 1}, got {line.rstrip()[:80]!r}")
            unknown = [t for t in tokenize(fields[0]) if t not in TOKEN_ID]
            if unknown or not tokenize(fields[0]):
                raise ValueError(f"{path}:{lineno}: unknown or missing ListOps tokens {unknown[:5]}")
            ids = [TOKEN_ID[t] for t in tokenize(fields[0])][:max_length]  # LRA truncates too
            inputs.append(ids + [0] * (max_length - len(ids)))
            lengths.append(len(ids))
            labels.append(int(fields[1]))
    if not labels:
        raise ValueError(f"{path}: no examples after the header; every split needs at least one")
    inputs = np.asarray(inputs, np.int32).reshape(-1, max_length)
    mask = np.arange(max_length)[None, :] < np.asarray(lengths, np.int32)[:, None]
    return Split(inputs=inputs, mask=mask, labels=np.asarray(labels, np.int32))


def at_length(data_config, length: int) -> None:
    """Make `data_config` (a copy, changed in place) describe the same data at `length` tokens.

    Files read as they are (LRA's, or generated elsewhere) are re-read truncated at the new length.
    Data the config generates (data.generate) is generated afresh in `<dir>-len<length>`, with
    generator.min_length scaled like the length: the expressions grow with the inputs (the files
    in data.dir, all shorter than the old length, would otherwise only be padded further).
    """
    if data_config.get("generate", False):
        old = data_config.max_length
        data_config.dir = f"{data_config.dir.rstrip('/')}-len{length}"
        data_config.generator.min_length = data_config.generator.min_length * length // old
    data_config.max_length = length


def load(data_config) -> Task:
    """The three splits from data_config.dir (generated there first when data_config.generate)."""
    d = data_config.dir
    paths = {s: os.path.join(d, f"basic_{s}.tsv") for s in SPLITS}
    if data_config.get("generate", False) and not all(map(os.path.exists, paths.values())):
        generate(d, max_length=data_config.max_length, **data_config.generator)
    missing = [p for p in paths.values() if not os.path.exists(p)]
    if missing:
        raise FileNotFoundError(
            f"ListOps data not found: missing {', '.join(missing)}. config.data.dir must hold "
            f"basic_train.tsv, basic_val.tsv, basic_test.tsv (LRA's listops-1000/ works). Generate "
            f"them with: attn-zoo data listops --out {d}")
    splits = {s: read_tsv(p, data_config.max_length) for s, p in paths.items()}
    return Task(name="listops", splits=splits, vocab_size=len(VOCAB), num_classes=NUM_CLASSES)
