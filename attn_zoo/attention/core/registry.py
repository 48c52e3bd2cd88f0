"""The attention registry and the contract every variant is held to.

Letters: B batch, L query length, S key length, H heads, D head dim (Dv for values).
q [B, L, H, D], k [B, S, Hk, D], v [B, S, Hk, Dv] -> out [B, L, H, Dv] in q's dtype, H % Hk == 0
(query head h reads key/value head h // (H // Hk)).
key_mask [B, S] bool, True = real token. causal=True: query i sees keys j <= i (needs L == S).
segment_ids (packed sequences), alibi_slopes and attention sinks: `core/contract.py`, `register`.

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

from attn_zoo.attention.core import contract
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
    kv_heads: str = "repeat"
    segments: bool = False
    alibi: bool = False
    departures: str = ""
    decode_init_fn: Callable[..., Any] | None = None
    decode_step_fn: Callable[..., Any] | None = None
    decode_reason: str = ""
    decode_minimal: bool | Callable[..., bool] = False
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
        self._check_length(opts, f"L={L}", L)
        if not self.supports_causal or self.state_size is None:
            return None
        n = self.state_size(int(L), int(H), int(D), **opts)
        return None if n is None else int(n)

    def _check_length(self, opts, given, *lengths):
        """ValueError when a learned-length variant gets a length past its `max_length` option."""
        limit = self.length_limit(**opts)
        if limit is not None and max(lengths) > limit:
            raise ValueError(f"attention '{self.name}' was built for length <= "
                             f"{self.max_length}={limit}, got {given}")

    def _require_decoder(self):
        if not self.decodable:
            raise ValueError(f"attention '{self.name}' cannot decode token by token: "
                             f"{self.why_not_decodable()}")

    @property
    def decodable(self) -> bool:
        """True when causal outputs can be computed token by token (`decode_init`, `decode_step`);
        otherwise `decode_reason` says why not."""
        return self.supports_causal and self.decode_init_fn is not None

    def why_not_decodable(self) -> str:
        """'' for a decodable variant, else the reason (`attn-zoo list` shows it)."""
        if self.decodable:
            return ""
        return self.decode_reason or ("no causal form" if not self.supports_causal
                                      else "no decoder registered")

    def decode_init(self, params, batch_size, max_length, num_heads, num_kv_heads, head_dim,
                    value_dim, dtype, /, *, rng=None, alibi_slopes=None, **options):
        """An empty decoding cache (a pytree with its own position counter) for up to max_length
        tokens; see `core/decode.py`. ValueError for a variant that cannot decode (the reason).
        alibi_slopes [H] (variants with alibi=True): the bias apply adds, kept in the cache."""
        opts = self.options(**options)
        self._require_decoder()
        sizes = dict(batch_size=batch_size, max_length=max_length, num_heads=num_heads,
                     num_kv_heads=num_kv_heads, head_dim=head_dim, value_dim=value_dim)
        bad = {k: v for k, v in sizes.items() if not (isinstance(v, (int, np.integer)) and v >= 1)}
        if bad:
            raise ValueError(f"attention '{self.name}': decode_init needs integer sizes >= 1, got {bad}")
        if num_heads % num_kv_heads:
            raise ValueError(f"attention '{self.name}': num_heads={num_heads} must be a multiple of "
                             f"num_kv_heads={num_kv_heads}")
        self._check_length(opts, f"max_length={max_length}", max_length)
        extra = {}
        if alibi_slopes is not None:
            if not self.alibi:
                refuse(self.name, "alibi")
            extra["alibi_slopes"] = contract.check_slopes(self.name, alibi_slopes, num_heads)
        return self.decode_init_fn(params, *(int(v) for v in sizes.values()), dtype, rng=rng,
                                   **extra, **opts)

    def decode_step(self, params, cache, q_t, k_t, v_t, **options):
        """(out_t [B, 1, H, Dv] in q_t's dtype, the next cache) for q_t [B, 1, H, D], k_t
        [B, 1, Hk, D], v_t [B, 1, Hk, Dv]: one causal position, the cache's counter t."""
        opts = self.options(**options)
        self._require_decoder()
        (B, one, H, D), (Bk, ok, Hk, Dk), (Bv, ov, Hv, _) = q_t.shape, k_t.shape, v_t.shape
        if not (one == ok == ov == 1 and B == Bk == Bv and D == Dk and Hk == Hv and H % Hk == 0):
            raise ValueError(f"attention '{self.name}': decode_step takes q_t [B, 1, H, D], k_t "
                             f"[B, 1, Hk, D], v_t [B, 1, Hk, Dv] with H % Hk == 0, got "
                             f"{tuple(q_t.shape)}, {tuple(k_t.shape)}, {tuple(v_t.shape)}")
        out, cache = self.decode_step_fn(params, cache, q_t, k_t, v_t, **opts)
        return out.astype(q_t.dtype), cache

    def decode_is_minimal(self, **options) -> bool:
        """True when the decoder's cache holds exactly `decoding_state` floats (checked)."""
        m = self.decode_minimal
        return bool(m(**self.options(**options)) if callable(m) else m)

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

    @property
    def sinks(self) -> bool:
        """True when the variant declares the `sink` option (attention sinks; see `register`)."""
        return "sink" in self.declaration.fields

    def init(self, rng, q, k, v, **options):
        """Parameters (a pytree, {} when none) for inputs shaped like q, k, v (k, v may have
        Hk < H heads); with sink=True also params["sink"], fp32 [H] zeros."""
        opts = self.options(**options)
        _check_qkv(self.name, q, k, v)
        params = self.init_fn(rng, q, *contract.kv_for(self, q, k, v), **opts)
        if opts.get("sink") and self.sinks:
            params = {**params, "sink": jax.numpy.zeros((q.shape[2],), jax.numpy.float32)}
        return params

    def apply(self, params, q, k, v, *, key_mask=None, causal=False, rng=None, segment_ids=None,
              alibi_slopes=None, **options):
        """out [B, L, H, Dv] in q's dtype; see the module docstring for the contract (and
        `core/contract.py` for Hk < H, segment_ids, alibi_slopes)."""
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
        self._check_length(opts, f"L={L}, S={S}", L, S)
        if key_mask is not None and key_mask.dtype != np.bool_:
            key_mask = _as_bool_mask(self.name, key_mask)
        for feature, given in (("segments", segment_ids), ("alibi", alibi_slopes)):
            if given is not None and not getattr(self, feature):
                refuse(self.name, feature)
        extra = contract.extras(self, q, k, segment_ids, alibi_slopes)
        k, v = contract.kv_for(self, q, k, v)
        out = self.impl(params, q, k, v, key_mask=key_mask, causal=bool(causal), rng=rng, **extra,
                        **opts)
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
    if not (B == Bk == Bv and Hk == Hv and H % Hk == 0 and D == Dk and S == Sv):
        raise ValueError(
            f"attention '{name}': shapes do not agree: q {tuple(q.shape)} [B, L, H, D], "
            f"k {tuple(k.shape)} [B, S, Hk, D], v {tuple(v.shape)} [B, S, Hk, Dv], H % Hk == 0")


def supporting(feature) -> list[str]:
    """Registered variants that support `feature` ('segments', 'alibi' or 'sinks')."""
    return [n for n in names() if getattr(get(n), feature)]


def refuse(name, feature):
    """The one-line refusal of a contract extension `feature` that variant `name` lacks."""
    raise ValueError(f"attention '{name}' does not support {contract.FEATURES[feature]}; variants that do: "
                     f"{', '.join(supporting(feature)) or 'none'}")


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
      kv_heads: 'repeat' (default): for k, v with Hk < H heads the registry repeats them to H
        heads before calling init_fn and impl; 'native': they get Hk heads (query head h reads
        head h // (H // Hk)) and must not materialize the repeat (see `core/contract.py`).
      segments: True when impl accepts `segment_ids=(q_ids [B, L], kv_ids [B, S])` int32 (given
        only when the caller passes segment_ids): a query sees keys of its own segment only.
      alibi: True when impl accepts `alibi_slopes` fp32 [H] (given only when passed): the scaled
        logit of (i, j) gets − slope_h·|i − j|. Without these flags apply refuses the argument.
      Attention sinks are an option, not a field: a variant declaring `sink: bool` supports them
        (`spec.sinks`); with sink=True `init` adds params["sink"] fp32 [H] and impl must add
        exp(sink_h) to each softmax denominator (`core/sinks.py`).
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
      decode_init_fn, decode_step_fn: the causal decoder, `decode_init_fn(params, B, max_length,
        H, Hk, D, Dv, dtype, /, *, rng, **options) -> cache` (a pytree of fixed shapes holding its
        position counter) and `decode_step_fn(params, cache, q_t, k_t, v_t, **options) -> (out_t,
        cache)`; builders in `core/decode.py`. Decoding must equal apply(..., causal=True)
        (checked); it has no key_mask (real tokens only). Read them through `spec.decode_init`,
        `spec.decode_step`, `attention.decode`; `spec.decodable` is True when they are given.
      decode_reason: for a causal variant without a decoder, why it cannot decode token by
        token (shown by `attn-zoo list`).
      decode_minimal: True (or `fn(**options) -> bool`) where the decoder's cache holds exactly
        `state_size` floats (checked); otherwise it may keep more (e.g. a full KV cache).
    replace: allow re-registering an existing name.
    """
    if name in _REGISTRY and not replace:
        raise ValueError(f"attention '{name}' is already registered (pass replace=True to override)")
    if family not in FAMILIES:
        raise ValueError(f"family must be one of {FAMILIES}, got {family!r}")
    if fields.get("kv_heads", "repeat") not in contract.KV_HEADS:
        raise ValueError(f"attention '{name}': kv_heads must be one of {contract.KV_HEADS}, "
                         f"got {fields['kv_heads']!r}")
    if fields.get("kv_heads", "repeat") == "repeat":  # they read k, v as apply's impl does
        for f in ("update", "chosen_pattern"):
            if fields.get(f) is not None:
                fields[f] = contract.repeating(fields[f])
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
