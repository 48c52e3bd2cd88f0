"""Pathfinder-32 hard: generate N images, check label balance and duplicates, draw a sample sheet.

    python experiments/pathfinder_stats.py --count 10000 --out runs/data/pathfinder32-hard-10k

Writes experiments/results/pathfinder32_hard_samples.png (both labels) and
experiments/results/pathfinder32_hard_stats.json (count, positive fraction, duplicates, timing).
Generation resumes shard by shard if interrupted.
"""
import argparse
import json
import os
import time

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from attn_zoo.data import check, pathfinder_io  # noqa: E402

RESULTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")


def sample_sheet(images, labels, path, per_label=12, title=""):
    fig, axes = plt.subplots(4, 6, figsize=(9, 6.6))
    pos, neg = np.flatnonzero(labels == 1)[:per_label], np.flatnonzero(labels == 0)[:per_label]
    for ax, i in zip(axes.flat, np.concatenate([pos, neg])):
        ax.imshow(images[i], cmap="gray", vmin=0, vmax=255, interpolation="nearest")
        ax.set_title(f"#{i}: {'connected' if labels[i] else 'not connected'}", fontsize=8)
        ax.axis("off")
    fig.suptitle(title + "\nrows 1-2: label 1 (markers on one path); rows 3-4: label 0", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--count", type=int, default=10_000)
    p.add_argument("--resolution", type=int, default=32)
    p.add_argument("--difficulty", default="hard")
    p.add_argument("--out", default="runs/data/pathfinder32-hard-10k")
    p.add_argument("--shard-size", type=int, default=1000)
    p.add_argument("--budget-s", type=float, default=None,
                   help="stop starting new shards after this many seconds; the statistics then cover the "
                        "shards written so far (rerun to continue: generation resumes)")
    args = p.parse_args()
    t0 = time.time()
    while args.budget_s is None or time.time() - t0 < args.budget_s:
        tick = time.time()
        pathfinder_io.generate(args.out, resolution=args.resolution, difficulty=args.difficulty, count=args.count,
                               seed=0, shard_size=args.shard_size, max_new_shards=1,
                               progress=lambda d, n: print(f"shard up to image {d}/{n}: {time.time() - tick:.0f} s "
                                                           f"({time.time() - t0:.0f} s total)", flush=True))
        if len(pathfinder_io.read_shards(args.out, partial=True)[1]) >= args.count:
            break
    gen_s = time.time() - t0
    images, labels, meta = pathfinder_io.read_shards(args.out, partial=True)
    stats = check.image_stats(images, labels)
    stats.update(requested=args.count, complete=len(labels) == args.count, resolution=args.resolution,
                 difficulty=args.difficulty, seed=0,
                 generation_wall_s_this_call=round(gen_s, 1),
                 mean_pixel_by_label={str(k): float(images[labels == k].mean()) for k in (0, 1)},
                 balance_within_1pct=abs(stats["positive_fraction"] - 0.5) <= 0.01,
                 settings=meta["settings"])
    name = f"pathfinder{args.resolution}_{args.difficulty}"
    with open(os.path.join(RESULTS, f"{name}_stats.json"), "w", encoding="utf-8") as f:
        json.dump(stats, f, indent=1)
    sample_sheet(images, labels, os.path.join(RESULTS, f"{name}_samples.png"),
                 title=f"generated Pathfinder {args.resolution}x{args.resolution} {args.difficulty} (seed 0)")
    print(json.dumps(stats, indent=1))


if __name__ == "__main__":
    main()
