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
from typing import Any, Callable, Mapping

import numpy as np

FAMILIES = ("dense", "exact", "pattern", "clustering", "learned", "low_rank", "kernel", "mixture")


def _no_params(rng, q, k, v, **options):
    del rng, q, k, v, options
    return {}


@dataclasses.dataclass(frozen=True)
class AttentionSpec:
    """One registered variant: metadata plus `init`, `apply`, `pattern`.

    Fields that feed the tests, the `list` command, the benchmark and the README table:
      exact: output == dense softmax attention restricted to `pattern(...)`.
      complexity: time/memory in N (= L = S) and the variant's options, e.g. "O(N·w)".
      test_options: small option sets the conformance suite runs (shapes B=2, L=S≈20, D=8).
      bench_options: the options the benchmark uses at long lengths.
      exact_limit: for approximate variants, `fn(L, S) -> options` under which the variant equals
        dense (e.g. Nyström with S landmarks); None when only an error bound is tested.
      max_length: name of the option that caps the sequence length (learned L×S parameters), or None;
        `length_limited` says whether there is one, `length_limit(**options)` its value.
      update: pure `fn(params, q, k, v, key_mask=..., **options) -> params` for non-gradient state.
      chosen_pattern: for data-dependent variants, `fn(params, q, k, v, *, key_mask, causal, rng,
        **options) -> bool [B, H, L, S]`, the pairs the variant computed for this input (pictures).
    """

    name: str
    family: str
    exact: bool
    supports_causal: bool
    defaults: Mapping[str, Any]
    impl: Callable[..., Any]
    init_fn: Callable[..., Any] = _no_params
    pattern_fn: Callable[..., Any] | None = None
    complexity: str = "O(N²)"
    description: str = ""
    test_options: tuple[Mapping[str, Any], ...] = ({},)
    bench_options: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    exact_limit: Callable[[int, int], Mapping[str, Any]] | None = None
    max_length: str | None = None
    needs_rng: bool = False
    update: Callable[..., Any] | None = None
    chosen_pattern: Callable[..., Any] | None = None

    @property
    def length_limited(self) -> bool:
        """True when learned parameters tie the variant to a maximum length (its `max_length`
        option): it cannot run on inputs longer than it was built for (no length extrapolation)."""
        return self.max_length is not None

    def length_limit(self, **options) -> int | None:
        """The longest L and S the variant accepts under `options`; None when any length works."""
        return self.options(**options)[self.max_length] if self.length_limited else None

    def options(self, **options) -> dict[str, Any]:
        """Defaults overridden by `options`; unknown names raise TypeError."""
        unknown = sorted(set(options) - set(self.defaults))
        if unknown:
            known = ", ".join(sorted(self.defaults)) or "none"
            raise TypeError(f"attention '{self.name}' has no option {unknown}; its options are: {known}")
        return {**self.defaults, **options}

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
            key_mask = key_mask.astype(bool)
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


def _check_qkv(name, q, k, v):
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


def register(name: str, *, family: str, exact: bool, supports_causal: bool, impl, defaults=None,
             replace: bool = False, **fields) -> AttentionSpec:
    """Register a variant; returns its spec. Call from anywhere, before or after import.

    `impl(params, q, k, v, *, key_mask, causal, rng, **options)` receives every option
    (defaults filled in), key_mask [B, S] bool or None, causal a Python bool.
    """
    if name in _REGISTRY and not replace:
        raise ValueError(f"attention '{name}' is already registered (pass replace=True to override)")
    if family not in FAMILIES:
        raise ValueError(f"family must be one of {FAMILIES}, got {family!r}")
    spec = AttentionSpec(name=name, family=family, exact=exact, supports_causal=supports_causal,
                         defaults=dict(defaults or {}), impl=impl, **fields)
    _REGISTRY[name] = spec
    return spec


def unregister(name: str) -> None:
    _REGISTRY.pop(name, None)


def names() -> list[str]:
    return sorted(_REGISTRY)


def get(name: str) -> AttentionSpec:
    try:
        return _REGISTRY[name]
    except KeyError:
        raise ValueError(f"unknown attention '{name}'; known: {', '.join(names())}") from None
