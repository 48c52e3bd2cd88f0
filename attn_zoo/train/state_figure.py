"""Zoology's figure: MQAR accuracy against decoding-state size, one panel per (L, N).

One point per (variant, d_model) sweep: the mean test accuracy over seeds at the chosen point,
with its 95% interval, at the floats per layer the variant's decoder keeps after L tokens
(`attention.state_size`); a variant's points at several d_model are joined. Fixed-state variants
should move right (more state) and up as d_model grows; the KV cache is large and flat at 1.0.
"""
from __future__ import annotations


def _mqar_rows(boards):
    for rows in boards.values():
        for r in rows:
            c = r.get("config") or {}
            # a variant still being tuned has no chosen point yet: it is not drawn
            if c.get("data", {}).get("task") == "mqar" and r["mean"] is not None and not r.get("untuned"):
                yield (c["data"]["max_length"], c["data"]["num_kv_pairs"]), c["model"]["emb_dim"], r


def has_mqar(boards) -> bool:
    return any(True for _ in _mqar_rows(boards))


def draw(boards, path):
    """Write the figure for the MQAR rows of `boards` ({sweep id: leaderboard rows}) to `path`."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker

    panels = {}
    for cell, d, r in _mqar_rows(boards):
        panels.setdefault(cell, {}).setdefault(r["variant"], []).append((d, r))
    cells = sorted(panels)
    names = sorted({v for cell in cells for v in panels[cell]})
    # tab20's 10 dark hues first, then their light pairs; with 7 markers no two of 140 variants match
    colors = {v: plt.cm.tab20((2 * i + i // 10) % 20) for i, v in enumerate(names)}
    markers = {v: "osD^vP*"[i % 7] for i, v in enumerate(names)}
    cols = min(3, len(cells))
    rows = -(-len(cells) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols + 1.6, 3.6 * rows), squeeze=False,
                             sharex=True, sharey=True)
    # one state axis for every panel, so that a point's position compares across (L, N)
    for i, ax in enumerate(axes.flat):
        if i >= len(cells):
            ax.set_visible(False)
        elif i + cols >= len(cells):  # the lowest panel of its column carries the axis's labels
            ax.xaxis.set_tick_params(labelbottom=True)
            ax.set_xlabel("decoding state (floats per layer)")
    for ax, cell in zip(axes.flat, cells):
        for v, points in sorted(panels[cell].items()):
            points = sorted(((d, r) for d, r in points if r.get("state_floats")), key=lambda p: p[0])
            if not points:
                continue
            xs = [r["state_floats"] for _, r in points]
            ys = [r["mean"] for _, r in points]
            err = [[r["mean"] - (r["ci_low"] if r["ci_low"] is not None else r["mean"]) for _, r in points],
                   [(r["ci_high"] if r["ci_high"] is not None else r["mean"]) - r["mean"] for _, r in points]]
            ax.errorbar(xs, ys, yerr=err, marker=markers[v], ms=5, capsize=2, color=colors[v], label=v)
            for (d, _), x, y in zip(points, xs, ys):
                ax.annotate(f"d{d}", (x, y), fontsize=6, xytext=(2, -8), textcoords="offset points")
        ax.set_xscale("log")
        ax.set_ylim(-0.02, 1.05)  # intervals of n = 2-3 seeds can reach past [0, 1]: clipped
        ax.set_title(f"MQAR L={cell[0]}, N={cell[1]} pairs")
        ax.grid(alpha=0.3)
    # 1-2-5 ticks in thousands: log axes label their minor ticks when the range is under a decade,
    # and the shared axis then crowds them together
    lo, hi = axes.flat[0].get_xlim()
    ticks = [m * 10.0 ** e for e in range(2, 9) for m in (1, 2, 5) if lo <= m * 10.0 ** e <= hi]
    axes.flat[0].xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
    axes.flat[0].set_xticks(ticks, [f"{t / 1000:g}k" for t in ticks])
    for row in axes:
        row[0].set_ylabel("test accuracy (mean, 95% CI)")
    handles = {}
    for ax in axes.flat:
        handles.update(zip(*reversed(ax.get_legend_handles_labels())))
    right = 1 - 1.5 / fig.get_figwidth()  # the legend's column, beside the panels
    fig.legend([handles[k] for k in sorted(handles)], sorted(handles), fontsize=7, loc="center left",
               bbox_to_anchor=(right, 0.5))
    fig.tight_layout(rect=(0, 0, right, 1))
    fig.savefig(path, dpi=120)
    plt.close(fig)
