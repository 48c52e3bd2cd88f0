"""The conformance suite: every registered variant, every applicable check, no per-variant edits.

Cases come from the registry (each spec's `test_options`), so registering a variant — inside the
package, by entry point, or through $ATTN_ZOO_PLUGINS — adds its tests here.
"""
import pytest

from attn_zoo import attention, conformance

CASES = conformance.cases(attention.get(n) for n in attention.names())


# xdist_group keeps a variant's checks on one worker (run with --dist loadgroup), where they share
# compiled functions.
@pytest.mark.parametrize("name,option_index,check", [
    pytest.param(n, i, c, id=f"{n}-{i}-{c}", marks=pytest.mark.xdist_group(n)) for n, i, c in CASES])
def test_conformance(name, option_index, check):
    spec = attention.get(name)
    conformance.CHECKS[check](spec, spec.test_options[option_index])


def test_every_variant_is_covered():
    covered = {name for name, _, _ in CASES}
    assert covered == set(attention.names())
    for name in attention.names():
        checks = {c for n, _, c in CASES if n == name}
        assert {"shapes", "vmap", "key_mask", "causal", "empty_rows", "nan", "bf16"} <= checks, name
