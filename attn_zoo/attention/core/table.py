"""The registry as a table: the one source for `attn-zoo list` and the README's variant table."""
from __future__ import annotations

from attn_zoo.attention.core.contract import features
from attn_zoo.attention.core.registry import get, names

STATE_AT = {"L": 1024, "H": 8, "D": 64}  # where the state column is evaluated
STATE = f"state (L={STATE_AT['L']}, H={STATE_AT['H']}, D={STATE_AT['D']})"
COLUMNS = ("name", "family", "exact", "causal", "length", "complexity", STATE, "options")
# `attn-zoo list` adds what each variant supports of the contract's extensions (core/contract.py)
LIST_COLUMNS = COLUMNS + ("contract",)


def length_cell(spec) -> str:
    """'≤ <option>' when learned parameters sized by that option tie the variant to a maximum
    length, else 'any'."""
    return f"≤ {spec.max_length}" if spec.length_limited else "any"


def state_cell(spec, L=STATE_AT["L"], H=STATE_AT["H"], D=STATE_AT["D"]) -> str:
    """Floats a causal decoder keeps per layer at the defaults, e.g. '1.0M', '132k'; 'none' when not
    causal, '?' when undeclared, '> max_length' when L exceeds the length the variant is built
    for, 'n/a' when its defaults refuse these L, H, D (e.g. a head count they fix)."""
    if not spec.supports_causal:
        return "none"
    limit = spec.length_limit()
    if limit is not None and L > limit:
        return f"> {spec.max_length}"
    try:
        n = spec.decoding_state(L, H, D)
    except ValueError:
        return "n/a"
    if n is None:
        return "?"
    return f"{n / 1e6:.1f}M" if n >= 1e6 else f"{n / 1e3:.0f}k" if n >= 1e3 else str(n)


def causal_cell(spec) -> str:
    """'yes', 'no', or 'yes (no decoding)' for a causal variant that cannot decode token by token."""
    if not spec.supports_causal:
        return "no"
    return "yes" if spec.decodable else "yes (no decoding)"


def decode_line(spec) -> str:
    """Whether the causal form decodes token by token (`attention.decode`), or why not."""
    return "token by token" if spec.decodable else f"not token by token: {spec.why_not_decodable()}"


def state_line(spec) -> str:
    """The state formula: the first paragraph of the variant's `state_size` docstring, one line."""
    if not spec.supports_causal:
        return "none (not causal)"
    doc = (spec.state_size.__doc__ or "").strip() if spec.state_size else ""
    return " ".join(doc.split("\n\n")[0].split()) if doc else "not declared"


def rows(builtin: bool | None = None) -> list[dict[str, str]]:
    """One row per registered variant (builtin=True: attn_zoo's own only, as in the README)."""
    out = []
    for name in names(builtin):
        spec = get(name)
        opts = ", ".join(f"{k}={v!r}" for k, v in sorted(spec.defaults.items())) or "—"
        out.append({"name": name, "family": spec.family, "exact": "yes" if spec.exact else "no",
                    "causal": causal_cell(spec),
                    "length": length_cell(spec),
                    "complexity": spec.complexity, STATE: state_cell(spec), "options": opts,
                    "contract": features(spec)})
    return out


def registry_table(markdown: bool = False, builtin: bool | None = None, columns=COLUMNS) -> str:
    return _table(rows(builtin), columns, markdown)


def variant_table(name: str, markdown: bool = False) -> str:
    """One variant: its line of metadata, then its declared options with types, ranges and docs."""
    spec = get(name)
    head = (f"{spec.name} ({spec.family}; {'exact' if spec.exact else 'approximate'}; "
            f"{'causal and not' if spec.supports_causal else 'not causal'}; {spec.complexity}; "
            f"length {length_cell(spec)})\n{spec.description}")
    head += f"\nDecoding: {decode_line(spec)}"
    head += f"\nDecoding state (floats per layer, B = 1): {state_line(spec)}"
    head += f"\nContract: {features(spec)} (kv: grouped K/V heads native or repeated; seg: segment_ids)"
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
