"""Zoology's multi-query associative recall (MQAR), causal form, generated on the fly.

Arora et al., "Zoology: Measuring and Improving Recall in Efficient Language Models" (2023);
HazyResearch/zoology, `zoology/data/associative_recall.py`, `_mqar`. Example i of a split is a
pure function of (seed, split, i) (`synthetic.GeneratedSplit`): nothing is stored.

With vocabulary V, N key-value pairs and length L (a = power_a = 0.01):
- keys: N distinct ids from [1, V/2); values: N distinct ids from [V/2, V) (Zoology draws them
  without replacement too), value i bound to key i;
- the (L + 1)-token sequence opens with the context k1 v1 ... kN vN (2N tokens); then every key
  is queried exactly once: key i at position 2N + 2·g_i, with its value right after it, gaps g_i
  drawn from {0, ..., (L - 2N)//2 - 1} without replacement with p(g) ∝ a·(g + 1)^(a-1) (numpy's
  sequential choice, as Zoology's `np.random.choice(..., replace=False, p=p)`);
- causal LM form: inputs = sequence[:-1], labels = sequence[1:], every label -1 (not scored)
  except where the input token is a query key, whose label is its value. Only queries are
  scored: the context's value-after-key positions are not.
- As in Zoology's code, an answer appears only as the label: the input after a query (like every
  other position outside the context and the queries) is 0, or, with `random_non_queries`, a
  token drawn uniformly from [0, V) (Zoology: `torch.randint(vocab_size)`) other than this
  example's keys, so a key never appears where it is not a query (Zoology leaves a ~N/V chance
  per position of an unscored extra copy of a key).
Requires 4N <= L (Zoology's assertion) and N <= V/2 - 1 (distinct keys).

Model: the 'lm' head (causal attention, logits over the V tokens) with these per-token labels;
accuracy is per query. A variant without causal support cannot run it (configs/mqar.py says so);
the bidirectional `recall` task (attn_zoo.data.synthetic) is the one for those.
"""
from __future__ import annotations

import numpy as np

from attn_zoo.data.dataset import Task
from attn_zoo.data.synthetic import SPLIT_IDS, GeneratedSplit


def check(*, length, num_kv_pairs, vocab_size, power_a=0.01):
    """Raise a one-line ValueError naming the setting when the settings cannot make an example."""
    if num_kv_pairs < 1:
        raise ValueError(f"mqar: data.num_kv_pairs={num_kv_pairs}; it must be at least 1")
    if 4 * num_kv_pairs > length:
        raise ValueError(f"mqar: data.num_kv_pairs={num_kv_pairs} needs 4*num_kv_pairs = "
                         f"{4 * num_kv_pairs} <= data.max_length={length}; allowed: num_kv_pairs "
                         f"<= {length // 4} (or max_length >= {4 * num_kv_pairs})")
    if num_kv_pairs > vocab_size // 2 - 1:
        raise ValueError(f"mqar: data.vocab_size={vocab_size} has {max(vocab_size // 2 - 1, 0)} key "
                         f"ids [1, V/2) for data.num_kv_pairs={num_kv_pairs} distinct keys; allowed: "
                         f"vocab_size >= {2 * num_kv_pairs + 2}")
    if not power_a > 0:
        raise ValueError(f"mqar: data.power_a={power_a}; it must be > 0 (p(g) ∝ a·g^(a-1))")


def gap_probabilities(space: int, power_a: float) -> np.ndarray:
    """p over gaps 0..space-1: p(g) ∝ a·(g + 1)^(a-1) (Zoology's power law)."""
    p = power_a * np.arange(1, space + 1, dtype=np.float64) ** (power_a - 1)
    return p / p.sum()


def mqar_example(rng, *, length, num_kv_pairs, vocab_size, power_a=0.01, random_non_queries=True):
    """(inputs [L], labels [L]) int32: one MQAR example drawn from the numpy Generator `rng`."""
    check(length=length, num_kv_pairs=num_kv_pairs, vocab_size=vocab_size, power_a=power_a)
    n, half = num_kv_pairs, vocab_size // 2
    keys = 1 + rng.choice(half - 1, n, replace=False)
    values = half + rng.choice(vocab_size - half, n, replace=False)
    context = 2 * n
    space = (length - context) // 2
    gaps = rng.choice(space, n, replace=False, p=gap_probabilities(space, power_a))
    where = context + 2 * gaps  # query positions, in inputs and in the sequence alike
    inputs = np.zeros(length, np.int32)
    inputs[0:context:2], inputs[1:context:2] = keys, values
    inputs[where] = keys
    labels = np.full(length, -1, np.int32)
    labels[where] = values  # sequence[where + 1] is the value: labels = sequence[1:]
    if random_non_queries:
        fill = np.flatnonzero(inputs == 0)
        # uniform over [0, V) without this example's keys: rank r -> the r-th allowed id
        r = rng.integers(vocab_size - n, size=len(fill))
        skip = np.sort(keys) - np.arange(n)
        inputs[fill] = r + np.searchsorted(skip, r, side="right")
    return inputs, labels


def load(c) -> Task:
    """data config: task='mqar', max_length (L), num_kv_pairs (N), vocab_size (V), power_a,
    random_non_queries, seed, train_size, val_size, test_size."""
    settings = dict(length=c.max_length, num_kv_pairs=c.num_kv_pairs, vocab_size=c.vocab_size,
                    power_a=c.get("power_a", 0.01))
    check(**settings)

    def make(rng):
        return mqar_example(rng, **settings, random_non_queries=c.get("random_non_queries", True))

    sizes = {"train": c.train_size, "val": c.val_size, "test": c.test_size}
    splits = {s: GeneratedSplit(make, n, c.max_length, c.seed, SPLIT_IDS[s]) for s, n in sizes.items()}
    return Task(name="mqar", splits=splits, vocab_size=c.vocab_size, num_classes=c.vocab_size)
