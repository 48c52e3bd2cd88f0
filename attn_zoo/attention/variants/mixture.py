"""`mixture`: groups of heads, each group with its own registered variant and options.

`groups` is a string (what a config holds), e.g.

    "local(window=64)*1/2 + strided(stride=64)*rest"      (the default: any H >= 1)
    "local(window=64)*4 + strided(stride=64)*2 + performer*2"      (exactly 8 heads)

grammar:  groups := group ('+' group)* ;  group := NAME ['(' OPT '=' VALUE {',' ...} ')'] ['*' COUNT]
VALUE is a Python literal (3, 0.5, 'x', (0, 9)) or a bare word (a string: layout=strided).
COUNT is the number of consecutive heads: an integer (default 1), a fraction A/B of H (rounded
up), or `rest` (the heads left over, at most one such group). Fixed and fractional counts are
taken in order; a fractional or `rest` group that gets no head is dropped; the counts must then
add up to H. `to_string` turns a list of mappings {'name': ..., 'heads': ..., **options} into
that string. Components are looked up in the registry when called, so a variant registered later
(a plugin) works. Group g gets heads [h_g, h_g + count), params under 'g{g}', and rng
fold_in(rng, g). The pattern is [H, L, S] (None if a component's is data-dependent); exact when
every component is exact.
"""
from __future__ import annotations

import ast
import dataclasses
import fractions
import math
import re
from typing import Any, Mapping

import jax
import jax.numpy as jnp
import numpy as np

from attn_zoo.attention.core import registry
from attn_zoo.attention.core.options import option, parse_literal
from attn_zoo.attention.core.registry import register

_GROUP = re.compile(r"^\s*([A-Za-z_][\w.-]*)\s*(?:\((.*)\))?\s*(?:\*\s*(\d+(?:\s*/\s*\d+)?|rest))?\s*$",
                    re.S)


def _split_top(text):
    """Split at '+' outside parentheses/brackets."""
    parts, depth, cur = [], 0, []
    for ch in text:
        depth += ch in "([{"
        depth -= ch in ")]}"
        if ch == "+" and depth == 0:
            parts.append("".join(cur))
            cur = []
        else:
            cur.append(ch)
    parts.append("".join(cur))
    return parts


def _value(node, text):
    try:
        return parse_literal(ast.unparse(node), strict=True)
    except ValueError as e:
        raise ValueError(f"mixture: option value in {text!r}: {e}") from None


def parse(groups) -> tuple[tuple[str, int, tuple[tuple[str, Any], ...]], ...]:
    """((name, heads, ((option, value), ...)), ...) from a string or a list of mappings."""
    out = []
    if isinstance(groups, str):
        for text in _split_top(groups):
            m = _GROUP.match(text)
            if not m:
                raise ValueError(f"mixture: cannot parse group {text.strip()!r} in {groups!r}; "
                                 f"expected NAME(opt=value, ...)*COUNT")
            name, args, count = m.group(1), m.group(2), _count(m.group(3) or "1")
            opts = ()
            if args and args.strip():
                call = ast.parse(f"f({args})", mode="eval").body
                if call.args:
                    raise ValueError(f"mixture: options must be named (opt=value) in {text.strip()!r}")
                opts = tuple((kw.arg, _value(kw.value, text)) for kw in call.keywords)
            out.append((name, count, opts))
    else:
        for g in groups:
            if not isinstance(g, Mapping) or "name" not in g:
                raise ValueError(f"mixture: each group must be a mapping with 'name' (and 'heads'), got {g!r}")
            g = dict(g)
            name, count = g.pop("name"), _count(str(g.pop("heads", 1)))
            out.append((name, count, tuple(g.items())))
    if not out or any(c != "rest" and c <= 0 for _, c, _ in out):
        raise ValueError(f"mixture: need at least one group and head counts > 0, got {groups!r}")
    if sum(c == "rest" for _, c, _ in out) > 1:
        raise ValueError(f"mixture: at most one group may take the rest of the heads, got {groups!r}")
    return tuple(out)


def _count(text):
    """'3' -> 3, '1/2' -> Fraction(1, 2), 'rest' -> 'rest'."""
    text = text.replace(" ", "")
    if text == "rest":
        return "rest"
    if "/" in text:
        a, b = (int(x) for x in text.split("/"))
        if b == 0:
            raise ValueError(f"mixture: head fraction {text} divides by zero")
        return fractions.Fraction(a, b)
    return int(text)


def head_counts(groups, H=None) -> list[int]:
    """Heads per group for H heads (None: each relative group gets one head, as in `pattern`)."""
    parsed = parse(groups)
    if H is None:
        return [c if isinstance(c, int) else 1 for _, c, _ in parsed]
    counts = [c if isinstance(c, int) else math.ceil(H * c) if c != "rest" else None for _, c, _ in parsed]
    taken = sum(c for c in counts if c is not None)
    if any(c is None for c in counts):
        counts = [max(H - taken, 0) if c is None else c for c in counts]
    return counts


def to_string(groups) -> str:
    """The canonical string form of `groups` (hashable; what a config should store)."""
    fmt = lambda opts: "(" + ", ".join(f"{k}={v!r}" for k, v in opts) + ")" if opts else ""  # noqa: E731
    return " + ".join(f"{n}{fmt(o)}*{c}" for n, c, o in parse(groups))


@dataclasses.dataclass(frozen=True)
class Options:
    groups: str = option("local(window=64)*1/2 + strided(stride=64)*rest",
                         "head groups: NAME(opt=value, ...)*COUNT joined by +; COUNT: n, A/B or rest")

    def check(self):
        _components(self.groups)  # the grammar, the names and every component's options


def _components(groups, H=None):
    """[(group index, spec, heads slice, options)] for the groups that get heads at H (None: see
    head_counts); group g's params live under 'g{g}'."""
    comps, h = [], 0
    for g, ((name, _, opts), count) in enumerate(zip(parse(groups), head_counts(groups, H))):
        spec = registry.get(name)
        if spec.name == "mixture":
            raise ValueError("mixture: a group cannot itself be a mixture")
        opts = spec.options(**dict(opts))
        if count > 0:
            comps.append((g, spec, slice(h, h + count), opts))
        h += count
    if H is not None and h != H:
        raise ValueError(f"mixture: groups {groups!r} cover {h} heads, the input has H={H}")
    return comps


def _rng(rng, g):
    return None if rng is None else jax.random.fold_in(rng, g)


def _kv(x, hs, H):
    """The key/value heads of x [B, S, Hk, X] that query heads `hs` read (G = H // Hk query heads
    per key head): a slice where the group's boundaries fall on multiples of G, else those heads
    gathered for this group alone."""
    G = H // x.shape[2]
    if hs.start % G == 0 and hs.stop % G == 0:
        return x[:, :, hs.start // G: hs.stop // G]
    return x[:, :, np.arange(hs.start, hs.stop) // G]


def init(rng, q, k, v, *, groups):
    H = q.shape[2]
    return {f"g{g}": spec.init(_rng(rng, g), q[:, :, hs], _kv(k, hs, H), _kv(v, hs, H), **opts)
            for g, spec, hs, opts in _components(groups, H)}


def attention(params, q, k, v, *, key_mask, causal, rng, groups, segment_ids=None, alibi_slopes=None):
    """Each group through its own variant's apply, which refuses segment_ids or alibi_slopes
    where that variant does not support them."""
    H = q.shape[2]
    outs = [spec.apply(params[f"g{g}"], q[:, :, hs], _kv(k, hs, H), _kv(v, hs, H), key_mask=key_mask,
                       causal=causal, rng=_rng(rng, g), segment_ids=segment_ids,
                       alibi_slopes=None if alibi_slopes is None else alibi_slopes[hs], **opts)
            for g, spec, hs, opts in _components(groups, H)]
    return jnp.concatenate([o.astype(q.dtype) for o in outs], axis=2)


def update(params, q, k, v, *, key_mask=None, groups):
    new = {}
    for g, spec, hs, opts in _components(groups, q.shape[2]):
        p = params[f"g{g}"]
        new[f"g{g}"] = p if spec.update is None else spec.update(
            p, q[:, :, hs], _kv(k, hs, q.shape[2]), _kv(v, hs, q.shape[2]), key_mask=key_mask, **opts)
    return new


def state(*, groups):
    """Every component's declared state, under its group's params key."""
    return tuple((f"g{g}", *path) for g, (name, _, opts) in enumerate(parse(groups))
                 for path in registry.get(name).state_paths(**dict(opts)))


def pattern(L, S, *, causal, rng, groups):
    """np.bool_ [H, L, S], H = the groups' total head count; None if any part is data-dependent."""
    heads = []
    for g, spec, hs, opts in _components(groups):
        if not spec.exact:
            return None
        m = spec.pattern(L, S, causal=causal, rng=_rng(rng, g), **opts)
        if m is None:
            return None
        heads.append(np.broadcast_to(m, (hs.stop - hs.start, L, S)) if m.ndim == 2 else m)
    return np.concatenate(heads)


def chosen_pattern(params, q, k, v, *, key_mask=None, causal=False, rng=None, groups):
    """bool [B, H, L, S]: each group's pattern, or its chosen pattern when data-dependent."""
    B, L, H = q.shape[:3]
    S = k.shape[1]
    parts = []
    for g, spec, hs, opts in _components(groups, H):
        n = hs.stop - hs.start
        m = spec.pattern(L, S, causal=causal, rng=_rng(rng, g), **opts)
        if m is not None:
            m = np.broadcast_to(m if m.ndim == 3 else m[None], (n, L, S))[None]
            if key_mask is not None:
                m = m & np.asarray(key_mask)[:, None, None, :]
            parts.append(np.broadcast_to(m, (B, n, L, S)))
        elif spec.chosen_pattern is not None:
            parts.append(np.asarray(spec.chosen_pattern(
                params[f"g{g}"], q[:, :, hs], _kv(k, hs, H), _kv(v, hs, H), key_mask=key_mask,
                causal=causal, rng=_rng(rng, g), **opts), dtype=bool))
        else:
            raise ValueError(f"mixture: component '{spec.name}' has neither a pattern nor a chosen_pattern")
    return np.concatenate(parts, axis=1)


def state_size(L, H, D, *, groups):
    """Σ over groups of each group's state at its head count (None if a group has none)."""
    sizes = [spec.decoding_state(L, hs.stop - hs.start, D, **opts)
             for _, spec, hs, opts in _components(groups, H)]
    return None if None in sizes else sum(sizes)


def _kv_heads(hs, H, Hk):
    """The kv heads the query heads `hs` read (query head h reads kv head h // (H / Hk)): a slice
    when the group covers whole kv-head groups, else one kv head per query head (an index array)."""
    G = H // Hk
    if hs.start % G == 0 and hs.stop % G == 0:
        return slice(hs.start // G, hs.stop // G)
    return np.arange(hs.start, hs.stop) // G


def _num_heads(index):
    return index.stop - index.start if isinstance(index, slice) else len(index)


def decode_init(params, B, max_length, H, Hk, D, Dv, dtype, /, *, rng, groups, alibi_slopes=None):
    """Each group's own decoding cache (a component that cannot decode raises its reason); each
    gets its heads' alibi_slopes when given."""
    return {f"g{g}": spec.decode_init(
        params[f"g{g}"], B, max_length, hs.stop - hs.start, _num_heads(_kv_heads(hs, H, Hk)), D, Dv,
        dtype, rng=_rng(rng, g), **({} if alibi_slopes is None else {"alibi_slopes": alibi_slopes[hs]}),
        **opts)
        for g, spec, hs, opts in _components(groups, H)}


def decode_step(params, cache, q_t, k_t, v_t, *, groups):
    H, Hk = q_t.shape[2], k_t.shape[2]
    outs, new = [], {}
    for g, spec, hs, opts in _components(groups, H):
        kv = _kv_heads(hs, H, Hk)
        out, new[f"g{g}"] = spec.decode_step(params[f"g{g}"], cache[f"g{g}"], q_t[:, :, hs],
                                             k_t[:, :, kv], v_t[:, :, kv], **opts)
        outs.append(out.astype(q_t.dtype))
    return jnp.concatenate(outs, axis=2), new


def decode_minimal(*, groups):
    return all(spec.decode_is_minimal(**opts) for _, spec, _, opts in _components(groups))


SPEC = register(
    "mixture", family="mixture", exact=True, supports_causal=True, impl=attention,
    kv_heads="native", segments=True, alibi=True,
    options=Options, init_fn=init, pattern_fn=pattern, state=state, update=update, needs_rng=True,
    state_size=state_size, decode_init_fn=decode_init, decode_step_fn=decode_step,
    decode_minimal=decode_minimal,
    chosen_pattern=chosen_pattern, complexity="sum of its groups'",
    description="Groups of heads, each with its own variant and options, e.g. 'local(window=64)*1/2 + strided*rest'.",
    test_options=({"groups": "local(window=3, block=8) + bigbird(block=4, num_random=1)"},),
    bench_options={"groups": "local(window=64)*4 + strided(stride=64)*2 + bigbird(block=64)*2"},
)
