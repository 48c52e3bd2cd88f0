"""The registry as a table: the one source for `attn-zoo list` and the README's variant table."""
from __future__ import annotations

from attn_zoo.attention.core.registry import get, names

COLUMNS = ("name", "family", "exact", "causal", "length", "complexity", "options")


def length_cell(spec) -> str:
    """'≤ <option>' when learned parameters sized by that option tie the variant to a maximum
    length, else 'any'."""
    return f"≤ {spec.max_length}" if spec.length_limited else "any"


def rows(builtin: bool | None = None) -> list[dict[str, str]]:
    """One row per registered variant (builtin=True: attn_zoo's own only, as in the README)."""
    out = []
    for name in names(builtin):
        spec = get(name)
        opts = ", ".join(f"{k}={v!r}" for k, v in sorted(spec.defaults.items())) or "—"
        out.append({"name": name, "family": spec.family, "exact": "yes" if spec.exact else "no",
                    "causal": "yes" if spec.supports_causal else "no",
                    "length": length_cell(spec),
                    "complexity": spec.complexity, "options": opts})
    return out


def registry_table(markdown: bool = False, builtin: bool | None = None) -> str:
    return _table(rows(builtin), COLUMNS, markdown)


def variant_table(name: str, markdown: bool = False) -> str:
    """One variant: its line of metadata, then its declared options with types, ranges and docs."""
    spec = get(name)
    head = (f"{spec.name} ({spec.family}; {'exact' if spec.exact else 'approximate'}; "
            f"{'causal and not' if spec.supports_causal else 'not causal'}; {spec.complexity}; "
            f"length {length_cell(spec)})\n{spec.description}")
    if spec.departures:
        head += f"\nDeparts from the paper: {spec.departures}"
    option_rows = spec.option_rows()
    if not option_rows:
        return head + "\n(no options)"
    return head + "\n\n" + _table(option_rows, ("option", "type", "default", "allowed", "doc"), markdown)


def _table(data, columns, markdown):
    if markdown:
        lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
        lines += ["| " + " | ".join(r[c] for c in columns) + " |" for r in data]
        return "\n".join(lines)
    widths = {c: max(len(c), *(len(r[c]) for r in data)) for c in columns}
    fmt = lambda r: "  ".join(r[c].ljust(widths[c]) for c in columns).rstrip()  # noqa: E731
    return "\n".join([fmt({c: c for c in columns}), fmt({c: "-" * widths[c] for c in columns})]
                     + [fmt(r) for r in data])


README_START, README_END = "<!-- variants:start -->", "<!-- variants:end -->"


def update_readme(text: str) -> str:
    """README text with the block between the variant markers replaced by the registry table."""
    head, rest = text.split(README_START, 1)
    _, tail = rest.split(README_END, 1)
    return f"{head}{README_START}\n{registry_table(markdown=True, builtin=True)}\n{README_END}{tail}"
