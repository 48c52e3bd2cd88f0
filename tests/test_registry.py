"""Registry behaviour: lookup errors, options, out-of-package registration, clear input errors."""
import os
import subprocess
import sys
import textwrap

import jax.numpy as jnp
import pytest

from attn_zoo import attention, conformance
from attn_zoo.attention import dense


def test_names_sorted_and_core_variants_present():
    assert attention.names() == sorted(attention.names())
    assert {"dense", "blockwise", "local"} <= set(attention.names())


def test_unknown_name_lists_known_names():
    with pytest.raises(ValueError, match="unknown attention 'nope'; known: .*dense"):
        attention.get("nope")


def test_unknown_option_raises_and_defaults_fill_in():
    spec = attention.get("local")
    with pytest.raises(TypeError, match="has no option \\['windw'\\]; its options are: block, engine, window"):
        spec.options(windw=3)
    assert spec.options(window=5) == {"window": 5, "block": spec.defaults["block"], "engine": "auto"}


def test_clear_errors_for_bad_inputs():
    x = conformance.make_inputs()
    spec = attention.get("local")
    with pytest.raises(ValueError, match="must be \\[B, L, H, D\\]"):
        spec.apply({}, x.q[0], x.k, x.v)
    with pytest.raises(ValueError, match="shapes do not agree"):
        spec.apply({}, x.q, x.k[..., :4], x.v)
    with pytest.raises(ValueError, match="key_mask must be \\[B, S\\]"):
        spec.apply({}, x.q, x.k, x.v, key_mask=x.key_mask[:1])
    with pytest.raises(ValueError, match="needs L == S"):
        spec.apply({}, x.q[:, :5], x.k, x.v, causal=True)


def test_register_rejects_duplicates_and_unknown_family():
    with pytest.raises(ValueError, match="already registered"):
        attention.register("dense", family="dense", exact=True, supports_causal=True, impl=dense.attention)
    with pytest.raises(ValueError, match="family must be"):
        attention.register("x_new", family="magic", exact=True, supports_causal=True, impl=dense.attention)


def test_noncausal_variant_refuses_causal():
    spec = attention.register("dense_nc_test", family="dense", exact=True, supports_causal=False,
                              impl=dense.attention, pattern_fn=lambda L, S, **_: jnp.ones((L, S), bool))
    try:
        x = conformance.make_inputs()
        with pytest.raises(ValueError, match="does not support causal"):
            spec.apply({}, x.q, x.k, x.v, causal=True)
        conformance.check_causal(spec, {})  # the suite's check accepts a clean refusal
    finally:
        attention.unregister("dense_nc_test")


PLUGIN = textwrap.dedent('''
    """A variant defined outside attn_zoo: dense attention under another name."""
    import numpy as np
    from attn_zoo.attention import dense, register
    register("my_plugin_attention", family="dense", exact=True, supports_causal=True,
             impl=dense.attention, pattern_fn=lambda L, S, **_: np.ones((L, S), bool))
''')


def test_variant_registered_outside_the_package_is_tested(tmp_path):
    (tmp_path / "my_plugin.py").write_text(PLUGIN)
    env = {**os.environ, "ATTN_ZOO_PLUGINS": "my_plugin",
           "PYTHONPATH": f"{tmp_path}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    here = os.path.dirname(__file__)
    result = subprocess.run(
        [sys.executable, "-m", "pytest", os.path.join(here, "test_conformance.py"), "-q",
         "-k", "my_plugin_attention", "-p", "no:cacheprovider", "-p", "no:xdist"],
        env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "8 passed" in result.stdout, result.stdout[-2000:]  # 7 checks + matches_dense + coverage
