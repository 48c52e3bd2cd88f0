"""What ListOps accuracy needs no evaluation at all: the test majority class, and the majority
answer for each expression's outermost operator (learned on train). A model that sits near the
second has learned the operator, not the computation. Rows are read by the task's own reader
(`listops.read_tsv`, truncated at --max-length like training: pass the config's data.max_length).

    python experiments/listops_baselines.py runs/data/listops-small20k --max-length 256
"""
import argparse
import collections
import os

import numpy as np

from attn_zoo.data import listops

OPENS = np.array([listops.TOKEN_ID[op] for op in listops.OPERATORS])


def baselines(data_dir, max_length) -> dict:
    train, test = (listops.read_tsv(os.path.join(data_dir, f"basic_{s}.tsv"), max_length)
                   for s in ("train", "test"))
    by_op = collections.defaultdict(collections.Counter)  # first token id (outermost op) -> labels
    for first, label in zip(train.inputs[:, 0], train.labels):
        by_op[int(first)][int(label)] += 1
    guess = {op: counts.most_common(1)[0][0] for op, counts in by_op.items()}
    majority = collections.Counter(test.labels.tolist()).most_common(1)[0][1] / len(test.labels)
    top_op = np.mean([guess.get(int(f)) == y for f, y in zip(test.inputs[:, 0], test.labels)])
    depth = collections.Counter(_depths(train.inputs).tolist())
    return {"test rows": len(test.labels), "test majority": round(majority, 4),
            "outermost-operator majority": round(float(top_op), 4),
            "train depth (nesting: rows)": dict(sorted(depth.items()))}


def _depths(inputs):
    """[N] deepest operator nesting of each row of ids [N, L] (pad 0 changes nothing)."""
    step = np.isin(inputs, OPENS).astype(np.int32) - (inputs == listops.TOKEN_ID[listops.END])
    return np.cumsum(step, axis=1).max(axis=1)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("data_dir")
    parser.add_argument("--max-length", type=int, default=2000, help="truncate rows like data.max_length")
    args = parser.parse_args()
    for key, value in baselines(args.data_dir, args.max_length).items():
        print(f"{key}: {value}")
