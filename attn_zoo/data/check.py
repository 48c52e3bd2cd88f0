"""`attn-zoo data <task> --check DIR`: validate a task's files (counts, shapes, labels).

`check(task, d)` returns a Report: `facts` (what was found), `notes` (differences from LRA's
release that still work, e.g. a smaller count) and `problems` (what would make training fail or
be wrong, each naming the file: file:line for a bad row, and a split without examples is one).
Nothing here trains or writes.
"""
from __future__ import annotations

import collections
import dataclasses
import hashlib
import os

import numpy as np

from attn_zoo.data import bytelm, image, listops, pathfinder_io, retrieval, text


@dataclasses.dataclass
class Report:
    task: str
    dir: str
    facts: list = dataclasses.field(default_factory=list)
    notes: list = dataclasses.field(default_factory=list)
    problems: list = dataclasses.field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    def __str__(self):
        lines = [f"{self.task} in {self.dir}: {'OK' if self.ok else f'{len(self.problems)} problem(s)'}"]
        lines += [f"  {x}" for x in self.facts] + [f"  note: {x}" for x in self.notes]
        lines += [f"  PROBLEM: {x}" for x in self.problems]
        return "\n".join(lines)


def _expect(r, what, got, want):
    if got != want:
        r.notes.append(f"{what}: {got:,} (LRA's release: {want:,})")


def image_stats(images, labels) -> dict:
    """Count, positive fraction and exact duplicate images (by content hash)."""
    seen, dups = set(), 0
    for img in images:
        h = hashlib.blake2b(np.ascontiguousarray(img).tobytes(), digest_size=16).digest()
        dups += h in seen
        seen.add(h)
    return {"count": int(len(labels)), "positive_fraction": float(np.mean(labels)) if len(labels) else 0.0,
            "duplicates": int(dups)}


def _listops(r, d):
    for split, want in (("train", 96_000), ("val", 2_000), ("test", 2_000)):
        path = os.path.join(d, f"basic_{split}.tsv")
        if not os.path.exists(path):
            r.problems.append(f"{path} is missing")
            continue
        try:
            s = listops.read_tsv(path, 2000)
        except ValueError as e:
            r.problems.append(str(e))
            continue
        r.facts.append(f"{split}: {len(s):,} rows, labels {sorted(set(s.labels.tolist()))}")
        _expect(r, f"{split} rows", len(s), want)


def _text(r, d):
    for split in ("train", "test"):
        for folder in text.LABELS:
            sub = os.path.join(text.root(d), split, folder)
            if not os.path.isdir(sub):
                r.problems.append(f"{sub} is missing (expected aclImdb/{{train,test}}/{{pos,neg}}/*.txt)")
                continue
            files = [f for f in os.listdir(sub) if f.endswith(".txt")]
            empty = [f for f in files if os.path.getsize(os.path.join(sub, f)) == 0]
            r.facts.append(f"{split}/{folder}: {len(files):,} reviews")
            _expect(r, f"{split}/{folder} reviews", len(files), 12_500)
            if not files:
                r.problems.append(f"{sub}: no *.txt files")
            for f in empty[:5]:
                r.problems.append(f"{os.path.join(sub, f)}: empty review")


def _retrieval(r, d):
    wants = {"train": 147_086, "val": 18_090, "test": 17_437}
    for split, path in retrieval.paths(d).items():
        if not os.path.exists(path):
            r.problems.append(f"{path} is missing")
            continue
        labels, bad = collections.Counter(), None
        with open(path, "rb") as f:
            for lineno, line in enumerate(f, start=1):
                fields = line.rstrip(b"\r\n").split(b"\t")
                if fields == [b""]:
                    continue
                try:
                    if len(fields) != 5:
                        raise ValueError(f"{path}:{lineno}: expected 5 tab-separated columns, got {len(fields)}")
                    labels[retrieval.parse_label(fields[0].decode("utf-8", "replace"), f"{path}:{lineno}")] += 1
                except ValueError as e:
                    bad = bad or str(e)
        if bad:
            r.problems.append(bad)
        n = sum(labels.values())
        if not n and not bad:
            r.problems.append(f"{path}: no rows; every split needs at least one")
        r.facts.append(f"{split}: {n:,} pairs, label counts {dict(sorted(labels.items()))}")
        _expect(r, f"{split} pairs", n, wants[split])


def _image(r, d):
    sub = image.folder(d)
    for name in image.TRAIN_FILES + (image.TEST_FILE,):
        path = os.path.join(sub, name)
        if not os.path.exists(path):
            r.problems.append(f"{path} is missing")
            continue
        try:
            rgb, labels = image.read_batch(path)
        except ValueError as e:
            r.problems.append(str(e))
            continue
        r.facts.append(f"{name}: {len(labels):,} images {list(rgb.shape[1:])}, "
                       f"{len(set(labels.tolist()))} classes")
        _expect(r, f"{name} images", len(labels), 10_000)


def _pathfinder(r, d, resolution=None):
    kind = pathfinder_io.layout(d)
    if kind == "none":
        r.problems.append(f"{d}: neither meta.json + shard_*.npz (generated) nor metadata/*.npy (LRA layout)")
        return
    try:
        if kind == "shards":
            images, labels, meta = pathfinder_io.read_shards(d)
            r.facts.append(f"generated shards: {meta['settings']['resolution']}px {meta['difficulty']}, "
                           f"seed {meta['seed']}")
        else:
            rows = pathfinder_io.read_lra_metadata(d)
            absent = [p for p, _ in rows if not os.path.exists(p)]
            for p in absent[:5]:
                r.problems.append(f"{p}: listed in metadata but missing")
            if absent:
                r.facts.append(f"{len(absent):,} of {len(rows):,} listed images are missing")
            sample = [p for p, _ in rows if os.path.exists(p)][:200]  # decode a sample only
            images = (np.stack([pathfinder_io.read_png(p, resolution) for p in sample]) if sample
                      else np.zeros((0, 1, 1), np.uint8))
            labels = np.asarray([y for _, y in rows], np.uint8)
            r.facts.append(f"LRA layout: {len(rows):,} metadata lines ({len(sample)} images decoded)")
            _expect(r, "images", len(rows), 200_000)
    except (ValueError, FileNotFoundError) as e:
        r.problems.append(str(e))
        return
    try:
        pathfinder_io.split_80_10_10(np.zeros((len(labels), 1), np.uint8), labels, d)
    except ValueError as e:  # fewer than 6 images: a split would be empty
        r.problems.append(str(e))
    stats = image_stats(images, labels[:len(images)]) if kind == "shards" else None
    r.facts.append(f"{len(labels):,} labels, {np.mean(labels):.4f} positive; images {list(images.shape[1:])}")
    if abs(float(np.mean(labels)) - 0.5) > 0.01:
        r.problems.append(f"label balance {np.mean(labels):.4f} is not within 1% of 0.5")
    if stats is not None:
        r.facts.append(f"{stats['duplicates']} duplicate images")


def _bytelm(r, d):
    d = d or bytelm.default_dir()
    if not os.path.isdir(d):
        r.problems.append(f"{d} is not a directory")
        return
    counts, sizes = collections.Counter(), collections.Counter()
    for rel in bytelm.list_files(d):
        split = bytelm.split_of(rel, 5, 5)
        with open(os.path.join(d, rel), "rb") as f:
            data = f.read()
        if data and bytelm.is_text(data):
            counts[split] += 1
            sizes[split] += len(data)
    for s in ("train", "val", "test"):
        r.facts.append(f"{s}: {counts[s]:,} text files, {sizes[s]:,} bytes (split by path hash, 5% val, 5% test)")
        if not counts[s]:
            r.problems.append(f"no text files fall into the {s} split")


CHECKS = {"listops": _listops, "text": _text, "retrieval": _retrieval, "image": _image,
          "pathfinder": _pathfinder, "bytelm": _bytelm}


def check(task, d, **options) -> Report:
    if task not in CHECKS:
        raise ValueError(f"no checker for {task!r}; checkers: {', '.join(CHECKS)}")
    r = Report(task, d)
    if task != "bytelm" and not os.path.isdir(d):
        r.problems.append(f"{d} is not a directory")
        return r
    CHECKS[task](r, d, **options)
    return r
