"""`linear`: Linear Transformer (Katharopoulos 2020), φ(q)(φ(k)ᵀ v) / φ(q)(φ(k)ᵀ 1).

φ = elu + 1 (default) or relu, applied to raw q and k (no 1/√D). Non-causal costs O(N·D·Dv);
causal uses the chunked prefix form of `kernelized` (quadratic inside a chunk, a carried D×Dv
state across chunks), memory O(N·D + chunk²). Padded keys reach neither numerator nor normalizer.
"""
from __future__ import annotations

import dataclasses
from attn_zoo.attention.core import decode
from attn_zoo.attention.core import kernelized
from attn_zoo.attention.core import masks
from attn_zoo.attention.core.options import option
from attn_zoo.attention.core.registry import register

@dataclasses.dataclass(frozen=True)
class Options:
    feature_map: str = option("elu", "φ: elu + 1 or relu", choices=kernelized.FEATURE_MAPS)
    chunk: int = option(128, "causal: tokens per chunk of the prefix scan", min=1)


def attention(params, q, k, v, *, key_mask, causal, rng, feature_map, chunk):
    del params, rng
    (k,) = masks.hide_masked(key_mask, k)  # dk = 0 at masked keys even for NaN (elu'(NaN)·0)
    fq = kernelized.feature_map(feature_map, q)
    fk = kernelized.feature_map(feature_map, k)
    return kernelized.attention(fq, fk, v, key_mask, causal=causal, chunk=chunk)


def reference(params, q, k, v, *, key_mask, causal, rng, feature_map, chunk):
    """The quadratic form φ(q)φ(k)ᵀ, masked and normalized, built explicitly."""
    del params, rng, chunk
    phi = lambda x: kernelized.feature_map(feature_map, x)  # noqa: E731
    return kernelized.quadratic(phi(q), phi(k), v, key_mask, causal)


def state_size(L, H, D, **_):
    """H·(D·D + D): S = Σ φ(k)vᵀ and z = Σ φ(k) per head (φ is elementwise: D features)."""
    return H * (D * D + D)


DECODER = decode.kernel_decoder(lambda params, x, kind, *, feature_map, **_:
                                kernelized.feature_map(feature_map, x))

SPEC = register(
    "linear", family="kernel", exact=False, supports_causal=True, impl=attention,
    options=Options, reference=reference, state_size=state_size, complexity="O(N·D·Dv)",
    decode_init_fn=DECODER[0], decode_step_fn=DECODER[1], decode_minimal=True,
    description="Linear Transformer: φ(q)(φ(k)ᵀv) normalized, φ = elu+1 or relu; chunked causal scan.",
    test_options=({"chunk": 8}, {"chunk": 8, "feature_map": "relu"}),
    bench_options={"feature_map": "elu", "chunk": 128},
)
