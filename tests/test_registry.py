"""Registry behaviour: lookup errors, options, out-of-package registration, clear input errors."""
import os
import subprocess
import sys
import textwrap

import jax
import jax.numpy as jnp
import pytest

from attn_zoo import attention, conformance
from attn_zoo.attention.variants import dense


def test_names_sorted_and_core_variants_present():
    assert attention.names() == sorted(attention.names())
    assert {"dense", "blockwise", "local"} <= set(attention.names())


def test_unknown_name_lists_known_names():
    with pytest.raises(ValueError, match="unknown attention 'nope'; known: .*dense"):
        attention.get("nope")


def test_unknown_option_raises_and_defaults_fill_in():
    spec = attention.get("local")
    with pytest.raises(TypeError, match="has no option \\['windw'\\]; its options are: block, engine, sink, window"):
        spec.options(windw=3)
    assert spec.options(window=5) == {"window": 5, "block": spec.defaults["block"], "engine": "auto",
                                      "sink": False}


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
    from attn_zoo.attention import register
    from attn_zoo.attention.variants import dense
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
    # 10 checks + matches_dense + decode + the contract's gqa, segments, sink, alibi
    assert "16 passed" in result.stdout, result.stdout[-2000:]


@pytest.mark.parametrize("name,options,error", [
    ("local", {"window": -1}, ValueError), ("local", {"window": 2.5}, TypeError),
    ("local", {"window": True}, TypeError), ("local", {"engine": "bogus"}, ValueError),
    ("performer", {"num_features": 0}, ValueError), ("dense", {"temperature": 0.0}, ValueError),
    ("bigbird", {"num_sliding": 2}, ValueError), ("longformer", {"global_indices": (0, -3)}, ValueError),
    ("mixture", {"groups": "local(window=-1)*rest"}, ValueError),
])
def test_typed_options_refuse_bad_values_in_one_line(name, options, error):
    spec = attention.get(name)
    x = conformance.make_inputs()
    (option, value), = options.items()
    with pytest.raises(error) as e:
        spec.apply(spec.init(jax.random.PRNGKey(0), x.q, x.k, x.v), x.q, x.k, x.v,
                   rng=jax.random.PRNGKey(0), **options)
    msg = str(e.value)
    assert "\n" not in msg and msg.startswith(f"attention '{name}'"), msg
    assert (option in msg and repr(value) in msg) or (name == "mixture" and "window=-1" in msg), msg


def test_typed_options_accept_ints_for_floats_and_document_every_option():
    spec = attention.get("dense")
    assert spec.options(temperature=2) == {**spec.defaults, "temperature": 2.0}
    for name in attention.names():
        rows = attention.get(name).option_rows()
        assert [r["option"] for r in rows] == list(attention.get(name).defaults)
        assert all(r["doc"] and r["allowed"] for r in rows), name


@pytest.mark.parametrize("bad", ["--config.attention.window=-1", "--config.attention.window=2.5",
                                 "--config.attention.engine=bogus"])
def test_cli_refuses_bad_options_before_building_anything(tmp_path, capsys, bad):
    from attn_zoo import cli
    workdir = tmp_path / "w"
    assert cli.main(["train", "--config", "configs/listops.py:local,smoke", "--workdir", str(workdir), bad]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: ") and len(err.strip().splitlines()) == 1, err
    assert bad.split(".")[-1].split("=")[0] in err, err
    assert not workdir.exists()


def test_list_shows_one_variants_options(capsys):
    from attn_zoo import cli
    assert cli.main(["list", "local"]) == 0
    out = capsys.readouterr().out
    assert "window" in out and "int >= 0" in out and "keys on each side" in out


def test_apply_refuses_what_it_would_get_wrong():
    import jax
    import jax.numpy as jnp

    spec = attention.get("dense")
    q = jnp.ones((1, 4, 1, 8))
    with pytest.raises(TypeError, match="additive float mask"):
        spec.apply({}, q, q, q, key_mask=jnp.zeros((1, 4)))  # 0 / -1e9 would be inverted by a cast
    with pytest.raises(ValueError, match="only 0 and 1"):
        spec.apply({}, q, q, q, key_mask=jnp.array([[1, -1, 1, 1]]))
    with pytest.raises(TypeError, match="floating point"):
        spec.apply({}, q.astype(jnp.int32), q, q)
    ints = jnp.array([[1, 1, 0, 1]])
    expected = spec.apply({}, q, q, q, key_mask=ints.astype(bool))
    assert jnp.array_equal(spec.apply({}, q, q, q, key_mask=ints), expected)
    # under jit the values cannot be read: a 0/1 integer mask is taken as it is
    jitted = jax.jit(lambda m: spec.apply({}, q, q, q, key_mask=m))
    assert jnp.array_equal(jitted(ints), expected)
