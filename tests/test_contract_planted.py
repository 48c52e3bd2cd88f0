"""The contract's checks (attn_zoo/conformance/contract.py) catch a planted bug each: K/V heads
grouped the wrong way, a segment boundary that leaks, a sink that is ignored, ALiBi of the wrong
sign, and a variant that silently ignores segment_ids it claims to refuse."""
import dataclasses

import jax.numpy as jnp
import numpy as np
import pytest

from attn_zoo import attention
from attn_zoo.conformance import contract as CC
from attn_zoo.attention.core import sinks
from attn_zoo.attention.variants import dense


@dataclasses.dataclass(frozen=True)
class SinkOptions:
    sink: bool = sinks.sink_option()


def _interleaved_heads(params, q, k, v, *, key_mask, causal, rng, **_):
    """Query head h reads key head h % Hk instead of h // G."""
    reps = q.shape[2] // k.shape[2]
    k, v = jnp.tile(k, (1, 1, reps, 1)), jnp.tile(v, (1, 1, reps, 1))
    return dense.attention({}, q, k, v, key_mask=key_mask, causal=causal)


def _leaky_segments(params, q, k, v, *, key_mask, causal, rng, segment_ids, **_):
    """A query sees its own segment and the one before it."""
    qs, ks = segment_ids
    return dense.attention({}, q, k, v, key_mask=key_mask, causal=causal,
                           segment_ids=(qs, jnp.where(ks == qs[:, :1], ks + 1, ks)))


def _ignored_sink(params, q, k, v, *, key_mask, causal, rng, sink, **_):
    return dense.attention({}, q, k, v, key_mask=key_mask, causal=causal)


def _alibi_wrong_sign(params, q, k, v, *, key_mask, causal, rng, alibi_slopes, **_):
    return dense.attention({}, q, k, v, key_mask=key_mask, causal=causal, alibi_slopes=-alibi_slopes)


def _segments_ignored(params, q, k, v, *, key_mask, causal, rng, **_):
    return dense.attention({}, q, k, v, key_mask=key_mask, causal=causal)


ALL = lambda L, S, **_: np.ones((L, S), bool)  # noqa: E731
BUGS = {
    "gqa": (_interleaved_heads, dict(kv_heads="native")),
    "segments": (_leaky_segments, dict(segments=True)),
    "sink": (_ignored_sink, dict(options=SinkOptions)),
    "alibi": (_alibi_wrong_sign, dict(alibi=True)),
}


@pytest.mark.parametrize("check", sorted(BUGS))
def test_a_planted_bug_is_caught(check):
    impl, fields = BUGS[check]
    name = f"planted_{check}"
    attention.register(name, family="dense", exact=True, supports_causal=True, impl=impl,
                       pattern_fn=ALL, **fields)
    try:
        with pytest.raises(AssertionError):
            CC.CHECKS[check](attention.get(name), {})
    finally:
        attention.unregister(name)


def test_a_refusal_is_required():
    """A variant without segments=True whose impl would ignore segment_ids: the registry refuses
    them before the impl runs, and the check passes only because of that refusal."""
    attention.register("planted_refusal", family="dense", exact=True, supports_causal=True,
                       impl=_segments_ignored, pattern_fn=ALL)
    try:
        CC.check_segments(attention.get("planted_refusal"), {})
    finally:
        attention.unregister("planted_refusal")
