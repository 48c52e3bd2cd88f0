"""Pattern pictures: which (query, key) pairs a variant computes, as a grid like the papers' figures.

Query positions are rows (top to bottom), key positions columns (left to right); a dark cell is
a pair the variant computes. Fixed patterns come from `spec.pattern(...)`; data-dependent
variants draw `spec.chosen_pattern(...)` on a random input (batch 0, head 0); variants with
neither get a panel that says so. Per-head patterns ([H, L, S], e.g. `mixture`) get one panel
per run of identical heads.
"""
from __future__ import annotations

import math
import textwrap

import jax
import jax.numpy as jnp
import numpy as np

from attn_zoo import attention

RNG_SEED = 0
_HEADS, _DIM = 2, 8  # random input for data-dependent variants


def pattern_panels(name, length, causal=False, **options):
    """[(title, bool [length, length] or None), ...] for `name` at this length, plus a note.

    Returns (panels, note): note is '' or why nothing could be drawn.
    """
    spec = attention.get(name)
    rng = jax.random.PRNGKey(RNG_SEED)
    mask = spec.pattern(length, length, causal=causal, rng=rng, **options)
    how = "pattern"
    if mask is None and spec.chosen_pattern is not None:
        r = np.random.RandomState(RNG_SEED)
        q, k, v = (jnp.asarray(r.randn(1, length, _HEADS, _DIM), jnp.float32) for _ in range(3))
        params = spec.init(jax.random.PRNGKey(RNG_SEED + 1), q, k, v, **options)
        chosen = spec.chosen_pattern(params, q, k, v, key_mask=None, causal=causal, rng=rng,
                                     **spec.options(**options))
        mask, how = np.asarray(chosen, dtype=bool)[0, 0], "chosen for a random input, head 0"
    if mask is None:
        return [], (f"'{name}' has no fixed pattern and no chosen_pattern "
                    f"(e.g. every key contributes through a kernel or projection)")
    mask = np.asarray(mask, dtype=bool)
    if mask.ndim == 2:
        return [(how, mask)], ""
    panels, start = [], 0
    for h in range(1, mask.shape[0] + 1):  # one panel per run of identical heads
        if h == mask.shape[0] or not np.array_equal(mask[h], mask[start]):
            label = f"head {start}" if h - start == 1 else f"heads {start}–{h - 1}"
            panels.append((label, mask[start]))
            start = h
    return panels, ""


def _draw(ax, mask, title):
    ax.imshow(~mask, cmap="gray", vmin=0, vmax=1, interpolation="nearest")
    ax.set_xticks([])
    ax.set_yticks([])
    density = mask.mean() if mask.size else 0.0
    ax.set_title(f"{title}\n{density:.0%} of pairs", fontsize=8)


def _message(ax, title, text):
    ax.axis("off")
    ax.set_title(title, fontsize=8)
    ax.text(0.5, 0.5, textwrap.fill(text, 30), ha="center", va="center", fontsize=7,
            transform=ax.transAxes)


def _options_text(options):
    return ", ".join(f"{k}={v}" for k, v in sorted(options.items()))


def draw_pattern(name, length, out_path, causal=False, **options):
    """Write a PNG of the (query row, key column) pairs `name` computes at `length`; returns out_path.

    options: the variant's options (unknown names raise TypeError). A variant with no pattern
    and no chosen_pattern gets a picture that says so.
    """
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels, note = pattern_panels(name, length, causal=causal, **options)
    n = max(len(panels), 1)
    fig, axes = plt.subplots(1, n, figsize=(3.2 * n, 3.6), squeeze=False)
    head = f"{name}" + (f" ({_options_text(options)})" if options else "") + (", causal" if causal else "")
    if not panels:
        _message(axes[0, 0], head, note)
    for ax, (title, mask) in zip(axes[0], panels):
        _draw(ax, mask, title)
    fig.suptitle(f"{head}\nL = S = {length}: query rows, key columns", fontsize=9)
    fig.tight_layout()
    fig.savefig(out_path, dpi=120)
    plt.close(fig)
    return out_path


def draw_all(length, out_path, causal=False):
    """Write a composite PNG of every registered variant at `length`; returns out_path.

    Each variant is drawn with its first test option set (small windows and blocks that show the
    structure at short lengths); per-head patterns are drawn side by side; errors become a text panel.
    """
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = attention.names()
    cols = min(5, len(names))
    rows = math.ceil(len(names) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(2.8 * cols, 3.1 * rows), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, name in zip(axes.flat, names):
        spec = attention.get(name)
        options = dict(spec.test_options[0]) if spec.test_options else {}
        title = name + (f"\n{_options_text(options)}" if options else "")
        try:
            use_causal = causal and spec.supports_causal
            panels, note = pattern_panels(name, length, causal=use_causal, **options)
        except Exception as e:  # a broken or unusual variant must not break the composite
            panels, note = [], f"{type(e).__name__}: {e}"
        if not panels:
            _message(ax, title, note)
            continue
        ax.axis("on")
        if len(panels) == 1:
            _draw(ax, panels[0][1], title)
        else:  # per-head patterns side by side, one blank column between them
            gap = np.zeros((length, max(1, length // 16)), dtype=bool)
            strip = np.concatenate(sum(([m, gap] for _, m in panels), [])[:-1], axis=1)
            _draw(ax, strip, f"{title}\n{' | '.join(t for t, _ in panels)}")
        ax.title.set_fontsize(7)
    fig.suptitle(f"Which (query row, key column) pairs each variant computes, L = S = {length}"
                 + (", causal" if causal else ""), fontsize=10)
    fig.tight_layout()
    fig.savefig(out_path, dpi=110)
    plt.close(fig)
    return out_path
