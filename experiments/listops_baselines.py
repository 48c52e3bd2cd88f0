"""What ListOps accuracy needs no evaluation at all: the test majority class, and the majority
answer for each expression's outermost operator (learned on train). A model that sits near the
second has learned the operator, not the computation.

    python experiments/listops_baselines.py runs/data/listops-small20k
"""
import collections
import sys

from attn_zoo.data import listops


def _rows(data_dir, split):
    with open(f"{data_dir}/basic_{split}.tsv", encoding="utf-8") as f:
        next(f)
        return [(s, int(y)) for s, y in (line.rstrip("\n").split("\t") for line in f)]


def baselines(data_dir) -> dict:
    train, test = _rows(data_dir, "train"), _rows(data_dir, "test")
    by_op = collections.defaultdict(collections.Counter)
    for source, label in train:
        by_op[listops.tokenize(source)[0]][label] += 1
    guess = {op: counts.most_common(1)[0][0] for op, counts in by_op.items()}
    majority = collections.Counter(y for _, y in test).most_common(1)[0][1] / len(test)
    top_op = sum(guess.get(listops.tokenize(s)[0]) == y for s, y in test) / len(test)
    depth = collections.Counter(_depth(listops.tokenize(s)) for s, _ in train)
    return {"test rows": len(test), "test majority": round(majority, 4),
            "outermost-operator majority": round(top_op, 4),
            "train depth (nesting: rows)": dict(sorted(depth.items()))}


def _depth(tokens) -> int:
    depth = deepest = 0
    for t in tokens:
        depth += t.startswith("[") - (t == listops.END)
        deepest = max(deepest, depth)
    return deepest


if __name__ == "__main__":
    for key, value in baselines(sys.argv[1]).items():
        print(f"{key}: {value}")
