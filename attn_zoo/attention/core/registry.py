"""The attention registry and the contract every variant is held to.

Letters: B batch, L query length, S key length, H heads, D head dim (Dv for values).
q [B, L, H, D], k [B, S, H, D], v [B, S, H, Dv] -> out [B, L, H, Dv] in q's dtype.
key_mask [B, S] bool, True = real token. causal=True: query i sees keys j <= i (needs L == S).

A variant is a set of plain functions; `register` wraps them in an `AttentionSpec` whose `apply`
validates shapes and options before calling the implementation, so a bad call fails with a clear
message at trace time instead of deep inside XLA.
"""
from __future__ import annotations

import dataclasses
import sys
from typing import Any, Callable, Mapping

import jax
import numpy as np

from attn_zoo.attention.core.options import Declaration

FAMILIES = ("dense", "exact", "pattern", "clustering", "learned", "low_rank", "kernel", "mixture")


def _no_params(rng, q, k, v, **options):
    del rng, q, k, v, options
    return {}


@dataclasses.dataclass(frozen=True)
class AttentionSpec:
    """One registered variant: metadata plus `init`, `apply`, `pattern`; see `register` for every
    field. `defaults` and the option checks come from the variant's typed declaration."""

    name: str
    family: str
    exact: bool
    supports_causal: bool
    declaration: Declaration
    impl: Callable[..., Any]
    init_fn: Callable[..., Any] = _no_params
    pattern_fn: Callable[..., Any] | None = None
    complexity: str = "O(N²)"
    description: str = ""
    test_options: tuple[Mapping[str, Any], ...] = ({},)
    bench_options: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    exact_limit: Callable[[int, int], Mapping[str, Any]] | None = None
    reference: Callable[..., Any] | None = None
    reference_atol: float = 1e-5
    reference_scale: float = 1.0
    max_length: str | None = None
    needs_rng: bool = False
    state: tuple[str, ...] | Callable[..., tuple[tuple[str, ...], ...]] = ()
    update: Callable[..., Any] | None = None
    chosen_pattern: Callable[..., Any] | None = None
    state_size: Callable[..., int | None] | None = None
    ignores_query: Callable[..., bool] | None = None
    departures: str = ""
    origin: str = ""

    @property
    def defaults(self) -> dict[str, Any]:
        """Every option and its default value."""
        return self.declaration.defaults

    @property
    def builtin(self) -> bool:
        """True for the variants that ship with attn_zoo (plugins are not)."""
        return self.origin.startswith("attn_zoo.")

    def state_paths(self, **options) -> tuple[tuple[str, ...], ...]:
        """Key paths into params of the non-gradient state under `options` (a leaf whose path
        starts with one of them is state: kept out of the gradient, changed only by `update`)."""
        if callable(self.state):
            return tuple(tuple(p) for p in self.state(**self.options(**options)))
        return tuple((key,) for key in self.state)

    def decoding_state(self, L, H, D, **options) -> int | None:
        """Floats a causal decoder keeps per layer and sequence after reading L tokens (H heads,
        D = Dv) at `options` (defaults filled in, checked); None when the variant is not causal,
        does not declare `state_size`, or cannot decode causally under these options."""
        opts = self.options(**options)
        if min(L, H, D) < 1:
            raise ValueError(f"attention '{self.name}': decoding_state needs L, H, D >= 1, "
                             f"got {L}, {H}, {D}")
        limit = self.length_limit(**opts)
        if limit is not None and L > limit:
            raise ValueError(f"attention '{self.name}' was built for length <= "
                             f"{self.max_length}={limit}, got L={L}")
        if not self.supports_causal or self.state_size is None:
            return None
        n = self.state_size(int(L), int(H), int(D), **opts)
        return None if n is None else int(n)

    def option_rows(self) -> list[dict[str, str]]:
        """The declared options as rows: option, type, default, allowed, doc."""
        return self.declaration.rows()

    @property
    def length_limited(self) -> bool:
        """True when learned parameters tie the variant to a maximum length (its `max_length`
        option): it cannot run on inputs longer than it was built for (no length extrapolation)."""
        return self.max_length is not None

    def length_limit(self, **options) -> int | None:
        """The longest L and S the variant accepts under `options`; None when any length works."""
        return self.options(**options)[self.max_length] if self.length_limited else None

    def options(self, **options) -> dict[str, Any]:
        """Defaults overridden by `options`, each checked against its declaration: an unknown name
        raises TypeError, a wrong type TypeError, a value out of range ValueError (one line)."""
        return self.declaration.resolve(f"attention '{self.name}'", options)

    def init(self, rng, q, k, v, **options):
        """Parameters (a pytree, {} when none) for inputs shaped like q, k, v."""
        opts = self.options(**options)
        _check_qkv(self.name, q, k, v)
        return self.init_fn(rng, q, k, v, **opts)

    def apply(self, params, q, k, v, *, key_mask=None, causal=False, rng=None, **options):
        """out [B, L, H, Dv] in q's dtype; see the module docstring for the contract."""
        opts = self.options(**options)
        _check_qkv(self.name, q, k, v)
        B, L = q.shape[:2]
        S = k.shape[1]
        if causal and not self.supports_causal:
            raise ValueError(f"attention '{self.name}' does not support causal=True")
        if causal and L != S:
            raise ValueError(f"causal=True needs L == S, got L={L}, S={S}")
        if key_mask is not None and tuple(key_mask.shape) != (B, S):
            raise ValueError(f"key_mask must be [B, S] = {[B, S]}, got {list(key_mask.shape)}")
        if self.length_limited and max(L, S) > opts[self.max_length]:
            raise ValueError(
                f"attention '{self.name}' was built for length <= {self.max_length}="
                f"{opts[self.max_length]}, got L={L}, S={S}")
        if key_mask is not None and key_mask.dtype != np.bool_:
            key_mask = _as_bool_mask(self.name, key_mask)
        out = self.impl(params, q, k, v, key_mask=key_mask, causal=bool(causal), rng=rng, **opts)
        return out.astype(q.dtype)

    def pattern(self, L, S, *, causal=False, rng=None, **options):
        """np.bool_ [L, S] of the (query, key) pairs computed, or None if data-dependent."""
        opts = self.options(**options)
        if causal and not self.supports_causal:
            raise ValueError(f"attention '{self.name}' does not support causal=True")
        if self.pattern_fn is None:
            return None
        mask = self.pattern_fn(L, S, causal=causal, rng=rng, **opts)
        if mask is None:  # data-dependent under these options (e.g. a mixture with a kernel group)
            return None
        mask = np.asarray(mask, dtype=bool)
        if causal:
            mask = mask & np.tril(np.ones((L, S), dtype=bool))
        return mask


def kv_cache(L, H, D, **_) -> int:
    """2·L·H·D: every past key and value (the full KV cache)."""
    return 2 * L * H * D


def _as_bool_mask(name, key_mask):
    """An integer 0/1 key_mask as bool; refuse float masks (an additive 0/-1e9 mask cast to bool
    would be inverted) and integers other than 0 and 1 (checked when the values are concrete)."""
    dtype = np.dtype(key_mask.dtype)
    if not jax.numpy.issubdtype(dtype, jax.numpy.integer):
        raise TypeError(f"attention '{name}': key_mask must be boolean (True = a real key), got "
                        f"dtype {dtype}; an additive float mask (0 / -inf) is not a key_mask: pass "
                        f"mask == 0 instead")
    if not isinstance(key_mask, jax.core.Tracer):
        values = np.unique(np.asarray(key_mask))
        if not set(values.tolist()) <= {0, 1}:
            raise ValueError(f"attention '{name}': an integer key_mask must hold only 0 and 1 "
                             f"(1 = a real key), got values {values[:8].tolist()}")
    return key_mask.astype(bool)


def _check_qkv(name, q, k, v):
    bad = [f"{n} {np.dtype(x.dtype)}" for n, x in (("q", q), ("k", k), ("v", v))
           if not jax.numpy.issubdtype(x.dtype, jax.numpy.floating)]  # bfloat16 included
    if bad:
        raise TypeError(f"attention '{name}': q, k, v must be floating point (float32, bfloat16, "
                        f"float16), got {', '.join(bad)}")
    if q.ndim != 4 or k.ndim != 4 or v.ndim != 4:
        raise ValueError(
            f"attention '{name}': q, k, v must be [B, L, H, D], [B, S, H, D], [B, S, H, Dv]; "
            f"got ranks {q.ndim}, {k.ndim}, {v.ndim}")
    (B, _, H, D), (Bk, S, Hk, Dk), (Bv, Sv, Hv, _) = q.shape, k.shape, v.shape
    if not (B == Bk == Bv and H == Hk == Hv and D == Dk and S == Sv):
        raise ValueError(
            f"attention '{name}': shapes do not agree: q {tuple(q.shape)} [B, L, H, D], "
            f"k {tuple(k.shape)} [B, S, H, D], v {tuple(v.shape)} [B, S, H, Dv]")


_REGISTRY: dict[str, AttentionSpec] = {}
# register's keyword fields: the spec's, less those register sets itself
_OPTIONAL_FIELDS = ({f.name for f in dataclasses.fields(AttentionSpec)}
                    - {"name", "family", "exact", "supports_causal", "declaration", "impl"})


def register(name: str, *, family: str, exact: bool, supports_causal: bool, impl: Callable,
             options: type | None = None, defaults: Mapping[str, Any] | None = None,
             replace: bool = False, **fields) -> AttentionSpec:
    """Register a variant; returns its spec. Call from anywhere, before or after import.

    Required:
      name: the registry key (`attention.get(name)`, `configs/<task>.py:<name>`).
      family: one of FAMILIES; groups variants in tables.
      exact: True when the output equals dense softmax attention restricted to `pattern_fn`'s
        pairs; the conformance suite then checks it against `dense` (outputs and gradients).
      supports_causal: False makes `apply(..., causal=True)` raise (never ignored).
      impl: `impl(params, q, k, v, *, key_mask, causal, rng, **options) -> out [B, L, H, Dv]`;
        receives every option (checked, defaults filled in), key_mask [B, S] bool or None, causal
        a Python bool, rng a key or None.
    Options (one of):
      options: a frozen dataclass type whose fields are declared with `options.option(default,
        doc, min=, max=, gt=, choices=)` and typed (int, float, bool, str, tuple[int, ...]); an
        optional `check(self)` method raises ValueError for constraints between options.
      defaults: a plain dict instead: options typed by their defaults' types, with no ranges.
    Optional fields:
      init_fn: `init_fn(rng, q, k, v, **options) -> params` pytree ({} by default).
      pattern_fn: `pattern_fn(L, S, *, causal, rng, **options) -> bool [L, S] | [H, L, S] | None`,
        the (query, key) pairs computed (None: data-dependent); required for exact variants.
      complexity: time/memory in N (= L = S), e.g. "O(N·w)"; shown by `attn-zoo list`.
      description: one line for `attn-zoo list NAME`.
      departures: how the variant departs from its paper, in a line (shown by `attn-zoo list`).
      test_options: small option sets the conformance suite runs (B=2, L=S=21, H=2, D=8).
      bench_options: options the benchmark uses at long lengths.
      exact_limit: for approximate variants, `fn(L, S) -> options` under which the variant equals
        dense (e.g. Nyström with S landmarks; a "_atol" key sets the tolerance).
      reference: a plain formula with impl's signature (e.g. the quadratic form of a kernel
        attention, a naive per-token recurrence) that the suite compares the variant against on
        outputs and gradients, for every test option set, within `reference_atol` (default 1e-5),
        on inputs whose q and k are scaled by `reference_scale` (default 1; larger values make
        running stabilizers change between chunks).
      max_length: name of the option that caps the sequence length (learned L×S parameters).
      needs_rng: the variant draws randomness from `rng` (the model passes a fixed key at eval).
      state: the params that are non-gradient state: a tuple of top-level keys, or
        `fn(**options) -> tuple of key paths`; the trainer keeps them out of the gradient.
      update: `update(params, q, k, v, *, key_mask, **options) -> params` (same structure), the
        pure step the trainer applies to the state in training (None: the state stays fixed).
      chosen_pattern: for data-dependent variants, `fn(params, q, k, v, *, key_mask, causal, rng,
        **options) -> bool [B, H, L, S]`, the pairs computed for this input (pictures).
      state_size: for causal variants, `fn(L, H, D, **options) -> int`, the floats a causal
        decoder keeps per layer and sequence after reading L tokens (its KV cache: the keys that
        query L − 1 or a later one may still attend; or its recurrent state), with Dv = D; not
        the `state` params above. Its docstring's first paragraph gives the formula (`attn-zoo
        list NAME`); read it through `spec.decoding_state(L, H, D, **options)`.
      ignores_query: `fn(**options) -> bool`, True where the output does not read q at all under
        those options (synthesizer's random and factorized_random modes without mix_dot): the
        conformance suite's NaN check then requires a NaN query to change nothing, instead of
        requiring it to reach that query's output row.
    replace: allow re-registering an existing name.
    """
    if name in _REGISTRY and not replace:
        raise ValueError(f"attention '{name}' is already registered (pass replace=True to override)")
    if family not in FAMILIES:
        raise ValueError(f"family must be one of {FAMILIES}, got {family!r}")
    if options is not None and defaults is not None:
        raise TypeError(f"attention '{name}': give options (a dataclass) or defaults (a dict), not both")
    declaration = (Declaration(options) if options is not None
                   else Declaration.from_defaults(name, dict(defaults or {})))
    unknown = sorted(set(fields) - _OPTIONAL_FIELDS)
    if unknown:
        raise TypeError(f"register('{name}') got unexpected fields {unknown}; "
                        f"see help(attn_zoo.attention.register)")
    # the module that called register: attn_zoo's own variants vs plugins (tables, README)
    origin = fields.pop("origin", sys._getframe(1).f_globals.get("__name__", ""))
    spec = AttentionSpec(name=name, family=family, exact=exact, supports_causal=supports_causal,
                         declaration=declaration, impl=impl, origin=origin, **fields)
    _REGISTRY[name] = spec
    return spec


def unregister(name: str) -> None:
    _REGISTRY.pop(name, None)


def names(builtin: bool | None = None) -> list[str]:
    """Sorted registered names; builtin=True: only attn_zoo's own, False: only plugins'."""
    return sorted(n for n, s in _REGISTRY.items() if builtin is None or s.builtin == builtin)


def get(name: str) -> AttentionSpec:
    try:
        return _REGISTRY[name]
    except KeyError:
        raise ValueError(f"unknown attention '{name}'; known: {', '.join(names())}") from None
