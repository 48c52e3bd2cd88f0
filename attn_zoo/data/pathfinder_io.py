"""Pathfinder files: our compressed numpy shards, and LRA's released `pathfinder*/` layout.

Shards (written by `generate`): `{dir}/meta.json` (settings, seed, count, shard size) and
`{dir}/shard_{k:05d}.npz` with `images` uint8 [n, R, R] and `labels` uint8 [n]. Shard k holds
images k*shard_size ... ; an interrupted generation resumes at the first missing shard.

LRA layout (e.g. `lra_release/pathfinder32/curv_contour_length_14/`): `metadata/<k>.npy` files
that are text despite the suffix, one image per line `imgs/<k> sample_<j>.png <i> <label> ...`
(label in field 3), and the PNGs under `imgs/<k>/`. The reader takes metadata files in numeric
order. Both layouts split 80/10/10 in file order (train, val, test), as LRA did; a split left
empty (fewer than 6 images) is refused. Every unreadable file is named (file:line for metadata).
"""
from __future__ import annotations

import json
import os
import re
import zipfile
import zlib

import numpy as np

from attn_zoo.data import pathfinder
from attn_zoo.data.dataset import Split, Task, decode_line
from attn_zoo.data.text import missing

LRA_URL = "https://storage.googleapis.com/long-range-arena/lra_release.gz"


def generate(out, *, resolution, difficulty, count, seed=0, shard_size=2000, progress=None, max_new_shards=None):
    """Write `count` images as shards in `out`; returns meta. Deterministic; resumable.

    max_new_shards: stop after writing this many missing shards (time-sliced generation).
    """
    s = pathfinder.settings(resolution, difficulty)
    meta = {"format": "attn_zoo.pathfinder/1", "difficulty": difficulty, "seed": seed, "count": count,
            "shard_size": shard_size, "settings": s}
    os.makedirs(out, exist_ok=True)
    path = os.path.join(out, "meta.json")
    if os.path.exists(path):
        old = read_meta(out)
        if old != meta:
            raise ValueError(f"{path} describes a different data set ({old['count']} images, "
                             f"{old['settings']['resolution']}px {old['difficulty']}, seed {old['seed']}); "
                             f"use an empty --out directory")
    with open(path, "w", encoding="utf-8") as f:
        json.dump(meta, f, indent=1)
    written = 0
    for k, start in enumerate(range(0, count, shard_size)):
        shard = os.path.join(out, f"shard_{k:05d}.npz")
        if os.path.exists(shard):
            continue
        if max_new_shards is not None and written >= max_new_shards:
            break
        written += 1
        images, labels = pathfinder.make_images(seed, s, start, min(start + shard_size, count))
        np.savez_compressed(shard + ".tmp.npz", images=images, labels=labels)
        os.replace(shard + ".tmp.npz", shard)
        if progress:
            progress(min(start + shard_size, count), count)
    return meta


def read_meta(d) -> dict:
    """meta.json of a generated directory; ValueError naming it when it is not the JSON we wrote."""
    path = os.path.join(d, "meta.json")
    try:
        with open(path, encoding="utf-8") as f:
            meta = json.load(f)
        if not (meta["count"] >= 1 and meta["shard_size"] >= 1 and "resolution" in meta["settings"]):
            raise ValueError("count and shard_size must be >= 1, settings must hold the resolution")
    except (ValueError, KeyError, TypeError) as e:  # JSON, UTF-8, missing keys, wrong types
        raise ValueError(f"{path}: not a Pathfinder meta.json ({type(e).__name__}: {e}); generate the "
                         f"directory again") from None
    return meta


def read_shards(d, partial=False):
    """(images [N, R, R] uint8, labels [N] uint8, meta) from a generated directory.

    partial: read the leading shards that exist (a generation still under way) instead of failing.
    """
    meta = read_meta(d)
    n_shards = -(-meta["count"] // meta["shard_size"])
    images, labels = [], []
    for k in range(n_shards):
        path = os.path.join(d, f"shard_{k:05d}.npz")
        if not os.path.exists(path) and partial:
            break
        if not os.path.exists(path):
            raise missing("Pathfinder", d, f"{path} is missing ({n_shards} shards expected from meta.json)",
                          "Run the generation command again on the same directory: it resumes")
        try:
            with np.load(path) as z:
                if "images" not in z or "labels" not in z:
                    raise ValueError(f"{path}: expected arrays 'images' and 'labels', got {sorted(z.files)}")
                images.append(z["images"])
                labels.append(z["labels"])
        except (OSError, EOFError, zipfile.BadZipFile, zlib.error, ValueError) as e:
            if str(e).startswith(path):
                raise
            raise ValueError(f"{path}: not a readable shard ({type(e).__name__}: {e}); delete it and run "
                             f"the generation command again (it resumes)") from None
    if not images:
        raise ValueError(f"{d}: no shards written yet")
    images, labels = np.concatenate(images), np.concatenate(labels)
    R = meta["settings"]["resolution"]
    if images.shape[1:] != (R, R) or len(labels) != len(images) or (len(images) != meta["count"] and not partial):
        raise ValueError(f"{d}: shards hold images {list(images.shape)} and {len(labels)} labels; "
                         f"meta.json says {meta['count']} images of {R}x{R}")
    return images, labels, meta


def _metadata_files(d):
    md = os.path.join(d, "metadata")
    names = [f for f in os.listdir(md) if f.endswith(".npy")]
    num = lambda f: int(re.sub(r"\D", "", f) or -1)  # noqa: E731
    return [os.path.join(md, f) for f in sorted(names, key=lambda f: (num(f), f))]


def read_lra_metadata(d, limit=None):
    """[(png path, label)] from `metadata/*.npy`; raises naming file:line on a malformed line."""
    rows = []
    for path in _metadata_files(d):
        with open(path, "rb") as f:
            for lineno, raw in enumerate(f, start=1):
                line = decode_line(path, lineno, raw)
                fields = line.split()
                if not fields:
                    continue
                if len(fields) < 4 or fields[3] not in ("0", "1"):
                    raise ValueError(f"{path}:{lineno}: expected '<subdir> <file.png> <index> <label 0|1> ...', "
                                     f"got {line.strip()[:80]!r}")
                rows.append((os.path.join(d, fields[0], fields[1]), int(fields[3])))
                if limit and len(rows) >= limit:
                    return rows
    return rows


def read_png(path, resolution=None):
    from PIL import Image  # Pillow comes with matplotlib
    try:
        with Image.open(path) as im:
            img = np.asarray(im.convert("L"))
    except FileNotFoundError:
        raise FileNotFoundError(f"{path}: listed in metadata but missing") from None
    except OSError as e:
        raise ValueError(f"{path}: not a readable PNG ({e})") from None
    if resolution is not None and img.shape != (resolution, resolution):
        raise ValueError(f"{path}: expected {resolution}x{resolution} pixels, got {img.shape[1]}x{img.shape[0]}")
    return img


def read_lra(d, resolution, limit=None):
    rows = read_lra_metadata(d, limit)
    if not rows:
        raise ValueError(f"{os.path.join(d, 'metadata')}: no image lines in the metadata files")
    images = np.stack([read_png(p, resolution) for p, _ in rows])
    return images, np.asarray([y for _, y in rows], np.uint8)


def layout(d) -> str:
    if os.path.exists(os.path.join(d, "meta.json")):
        return "shards"
    if os.path.isdir(os.path.join(d, "metadata")):
        return "lra"
    return "none"


def split_80_10_10(images, labels, where="Pathfinder") -> dict:
    """train, val, test: the first 80%, the next 10%, the last 10%; ValueError if one is empty."""
    n = len(labels)
    a, b = int(n * 0.8), int(n * 0.9)
    empty = [s for s, size in (("train", a), ("val", b - a), ("test", n - b)) if size == 0]
    if empty:
        raise ValueError(f"{where}: {n} images leave the {' and '.join(empty)} split empty (80/10/10 in "
                         f"file order); every split needs at least one: give at least 6 images")
    flat = images.reshape(n, -1)
    mk = lambda sl: Split(inputs=flat[sl], mask=np.ones(flat[sl].shape, bool),  # noqa: E731
                          labels=labels[sl].astype(np.int32))
    return {"train": mk(slice(0, a)), "val": mk(slice(a, b)), "test": mk(slice(b, n))}


def load(c) -> Task:
    """Shards or LRA layout from c.dir; generated there first when c.generate and c.dir is empty."""
    if c.get("generate", False) and layout(c.dir) == "none":
        progress = lambda done, total: print(f"pathfinder: generated {done}/{total} images in {c.dir}",  # noqa: E731
                                             flush=True)
        generate(c.dir, resolution=c.resolution, difficulty=c.difficulty, count=c.generator.count,
                 seed=c.generator.seed, shard_size=c.generator.shard_size, progress=progress)
    kind = layout(c.dir)
    if kind == "none":
        raise missing(
            "Pathfinder", c.dir,
            "expected meta.json + shard_*.npz (generated) or metadata/*.npy + imgs/ (LRA's "
            f"pathfinder{c.resolution}/curv_contour_length_14/)",
            f"Generate with: attn-zoo data pathfinder --resolution {c.resolution} --difficulty "
            f"{c.difficulty} --out {c.dir}  (or set config.data.generate=True), or unpack {LRA_URL}")
    if kind == "shards":
        images, labels, meta = read_shards(c.dir)
        if meta["settings"]["resolution"] != c.resolution:
            raise ValueError(f"{c.dir}/meta.json: resolution {meta['settings']['resolution']}, but the config "
                             f"asks for {c.resolution} (config.data.resolution)")
    else:
        images, labels = read_lra(c.dir, c.resolution, c.get("limit", 0) or None)
    return Task(name=f"pathfinder{c.resolution}", splits=split_80_10_10(images, labels, c.dir),
                vocab_size=256, num_classes=2)


def write_lra_fixture(d, images, labels, per_file=4):
    """LRA's layout for given images: metadata/<k>.npy text lines and imgs/<k>/sample_<j>.png."""
    from PIL import Image
    os.makedirs(os.path.join(d, "metadata"), exist_ok=True)
    for k, start in enumerate(range(0, len(labels), per_file)):
        os.makedirs(os.path.join(d, "imgs", str(k)), exist_ok=True)
        lines = []
        for j, i in enumerate(range(start, min(start + per_file, len(labels)))):
            Image.fromarray(images[i]).save(os.path.join(d, "imgs", str(k), f"sample_{j}.png"))
            lines.append(f"imgs/{k} sample_{j}.png {i} {int(labels[i])} 14 1.5 1 4 0\n")
        with open(os.path.join(d, "metadata", f"{k}.npy"), "w", encoding="utf-8") as f:
            f.writelines(lines)
