"""The registry as a table: the one source for `attn-zoo list` and the README's variant table."""
from __future__ import annotations

from attn_zoo.attention.registry import get, names

COLUMNS = ("name", "family", "exact", "causal", "length", "complexity", "options")


def length_cell(spec) -> str:
    """'≤ <option>' when learned parameters sized by that option tie the variant to a maximum
    length, else 'any'."""
    return f"≤ {spec.max_length}" if spec.length_limited else "any"


def rows() -> list[dict[str, str]]:
    out = []
    for name in names():
        spec = get(name)
        opts = ", ".join(f"{k}={v!r}" for k, v in sorted(spec.defaults.items())) or "—"
        out.append({"name": name, "family": spec.family, "exact": "yes" if spec.exact else "no",
                    "causal": "yes" if spec.supports_causal else "no",
                    "length": length_cell(spec),
                    "complexity": spec.complexity, "options": opts})
    return out


def registry_table(markdown: bool = False) -> str:
    data = rows()
    if markdown:
        lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
        lines += ["| " + " | ".join(r[c] for c in COLUMNS) + " |" for r in data]
        return "\n".join(lines)
    widths = {c: max(len(c), *(len(r[c]) for r in data)) for c in COLUMNS}
    fmt = lambda r: "  ".join(r[c].ljust(widths[c]) for c in COLUMNS).rstrip()
    return "\n".join([fmt({c: c for c in COLUMNS}), fmt({c: "-" * widths[c] for c in COLUMNS})]
                     + [fmt(r) for r in data])


README_START, README_END = "<!-- variants:start -->", "<!-- variants:end -->"


def update_readme(text: str) -> str:
    """README text with the block between the variant markers replaced by the registry table."""
    head, rest = text.split(README_START, 1)
    _, tail = rest.split(README_END, 1)
    return f"{head}{README_START}\n{registry_table(markdown=True)}\n{README_END}{tail}"
