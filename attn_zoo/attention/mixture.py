"""`mixture`: groups of heads, each group with its own registered variant and options.

`groups` is a string (what a config holds), e.g.

    "local(window=64)*4 + strided(stride=64)*2 + performer*2"

grammar:  groups := group ('+' group)* ;  group := NAME ['(' OPT '=' VALUE {',' ...} ')'] ['*' COUNT]
VALUE is a Python literal (3, 0.5, 'x', (0, 9)) or a bare word (a string: layout=strided);
COUNT (default 1) is the number of consecutive heads, and the counts must add up to H. A list
of mappings {'name': ..., 'heads': ..., **options} is accepted too. Components are looked up in
the registry when called, so a variant registered later (a plugin) works. Group g gets heads
[h_g, h_g + count), params under 'g{g}', and rng fold_in(rng, g). The pattern is [H, L, S]
(None if a component's is data-dependent); exact when every component is exact.
"""
from __future__ import annotations

import ast
import re
from typing import Any, Mapping

import jax
import jax.numpy as jnp
import numpy as np

from attn_zoo.attention import registry
from attn_zoo.attention.registry import register

DEFAULTS = dict(groups="local(window=64)*4+strided(stride=64)*4")
_GROUP = re.compile(r"^\s*([A-Za-z_][\w.-]*)\s*(?:\((.*)\))?\s*(?:\*\s*(\d+))?\s*$", re.S)


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
    if isinstance(node, ast.Name):
        return node.id
    try:
        return ast.literal_eval(node)
    except ValueError:
        raise ValueError(f"mixture: option value {ast.unparse(node)!r} in {text!r} is not a literal") from None


def parse(groups) -> tuple[tuple[str, int, tuple[tuple[str, Any], ...]], ...]:
    """((name, heads, ((option, value), ...)), ...) from a string or a list of mappings."""
    out = []
    if isinstance(groups, str):
        for text in _split_top(groups):
            m = _GROUP.match(text)
            if not m:
                raise ValueError(f"mixture: cannot parse group {text.strip()!r} in {groups!r}; "
                                 f"expected NAME(opt=value, ...)*COUNT")
            name, args, count = m.group(1), m.group(2), int(m.group(3) or 1)
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
            name, count = g.pop("name"), int(g.pop("heads", 1))
            out.append((name, count, tuple(g.items())))
    if not out or any(c < 1 for _, c, _ in out):
        raise ValueError(f"mixture: need at least one group and head counts >= 1, got {groups!r}")
    return tuple(out)


def to_string(groups) -> str:
    """The canonical string form of `groups` (hashable; what a config should store)."""
    fmt = lambda opts: "(" + ", ".join(f"{k}={v!r}" for k, v in opts) + ")" if opts else ""  # noqa: E731
    return " + ".join(f"{n}{fmt(o)}*{c}" for n, c, o in parse(groups))


def _components(groups, H=None):
    comps, h = [], 0
    for name, count, opts in parse(groups):
        spec = registry.get(name)
        if spec.name == "mixture":
            raise ValueError("mixture: a group cannot itself be a mixture")
        comps.append((spec, slice(h, h + count), spec.options(**dict(opts))))
        h += count
    if H is not None and h != H:
        raise ValueError(f"mixture: groups {groups!r} cover {h} heads, the input has H={H}")
    return comps


def _rng(rng, g):
    return None if rng is None else jax.random.fold_in(rng, g)


def init(rng, q, k, v, *, groups):
    return {f"g{g}": spec.init(_rng(rng, g), q[:, :, hs], k[:, :, hs], v[:, :, hs], **opts)
            for g, (spec, hs, opts) in enumerate(_components(groups, q.shape[2]))}


def attention(params, q, k, v, *, key_mask, causal, rng, groups):
    outs = [spec.apply(params[f"g{g}"], q[:, :, hs], k[:, :, hs], v[:, :, hs], key_mask=key_mask,
                       causal=causal, rng=_rng(rng, g), **opts)
            for g, (spec, hs, opts) in enumerate(_components(groups, q.shape[2]))]
    return jnp.concatenate([o.astype(q.dtype) for o in outs], axis=2)


def update(params, q, k, v, *, key_mask=None, groups):
    new = {}
    for g, (spec, hs, opts) in enumerate(_components(groups, q.shape[2])):
        p = params[f"g{g}"]
        new[f"g{g}"] = p if spec.update is None else spec.update(
            p, q[:, :, hs], k[:, :, hs], v[:, :, hs], key_mask=key_mask, **opts)
    return new


def pattern(L, S, *, causal, rng, groups):
    """np.bool_ [H, L, S], H = the groups' total head count; None if any part is data-dependent."""
    heads = []
    for g, (spec, hs, opts) in enumerate(_components(groups)):
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
    for g, (spec, hs, opts) in enumerate(_components(groups, H)):
        n = hs.stop - hs.start
        m = spec.pattern(L, S, causal=causal, rng=_rng(rng, g), **opts)
        if m is not None:
            m = np.broadcast_to(m if m.ndim == 3 else m[None], (n, L, S))[None]
            if key_mask is not None:
                m = m & np.asarray(key_mask)[:, None, None, :]
            parts.append(np.broadcast_to(m, (B, n, L, S)))
        elif spec.chosen_pattern is not None:
            parts.append(np.asarray(spec.chosen_pattern(
                params[f"g{g}"], q[:, :, hs], k[:, :, hs], v[:, :, hs], key_mask=key_mask,
                causal=causal, rng=_rng(rng, g), **opts), dtype=bool))
        else:
            raise ValueError(f"mixture: component '{spec.name}' has neither a pattern nor a chosen_pattern")
    return np.concatenate(parts, axis=1)


SPEC = register(
    "mixture", family="mixture", exact=True, supports_causal=True, impl=attention,
    defaults=DEFAULTS, init_fn=init, pattern_fn=pattern, update=update, needs_rng=True,
    chosen_pattern=chosen_pattern, complexity="sum of its groups'",
    description="Groups of heads, each with its own variant and options, e.g. 'local(window=64)*4+strided*4'.",
    test_options=({"groups": "local(window=3, block=8) + bigbird(block=4, num_random=1)"},),
    bench_options={"groups": "local(window=64)*4 + strided(stride=64)*2 + bigbird(block=64)*2"},
)
