"""The extension path as a new user walks it: a variant written outside the package, as a file.

The plugin below is a kernel attention built on the reusable core (`kernelized`), registered with
its quadratic form as the reference. Planted bugs show that the suite catches wrong maths in an
approximate variant (through the reference) and a crash on key_mask=None; a trained plugin's
workdir evaluates in a fresh process that was never told about the plugin.
"""
import json
import os
import subprocess
import sys
import textwrap

import pytest

from attn_zoo import cli

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

PLUGIN = textwrap.dedent('''
    """elu+1 kernel attention, outside attn_zoo, with its quadratic form as the reference."""
    import dataclasses

    import jax

    from attn_zoo.attention import register
    from attn_zoo.attention.core import kernelized
    from attn_zoo.attention.core.options import option

    BUG = {bug!r}


    @dataclasses.dataclass(frozen=True)
    class Options:
        chunk: int = option(16, "causal chunk", min=1)


    def phi(x):
        return jax.nn.elu(x) + 1.0


    def impl(params, q, k, v, *, key_mask, causal, rng, chunk):
        if BUG == "crash_without_mask":
            key_mask = key_mask & True  # TypeError when key_mask is None
        fk = jax.nn.elu(k) if BUG == "wrong_maths" else phi(k)  # wrong: the +1 dropped for keys
        return kernelized.attention(phi(q), fk, v, key_mask, causal=causal, chunk=chunk)


    def reference(params, q, k, v, *, key_mask, causal, rng, chunk):
        return kernelized.quadratic(phi(q), phi(k), v, key_mask, causal)


    register("{name}", family="kernel", exact=False, supports_causal=True, impl=impl,
             options=Options, reference=reference, test_options=({{"chunk": 8}},))
''')


def _plugin(tmp_path, name, bug=None):
    path = tmp_path / f"{name}.py"
    path.write_text(PLUGIN.format(name=name, bug=bug))
    return str(path)


def _pytest(plugin, *args):
    env = {**os.environ, "ATTN_ZOO_PLUGINS": plugin}
    return subprocess.run([sys.executable, "-m", "pytest", *args, "-q", "-p", "no:cacheprovider",
                           "-p", "no:xdist"], env=env, capture_output=True, text=True, timeout=900,
                          cwd=ROOT)


def test_suite_on_plugin_files(tmp_path):
    """The checks that must fail, and only those (the defaults check also passes no key_mask): three
    plugin files loaded at once, in one pytest process."""
    must_fail = {"my_kernel_ok": set(), "my_kernel_wrong_maths": {"reference"},
                 "my_kernel_crash_without_mask": {"no_key_mask", "defaults"}}
    files = [_plugin(tmp_path, name, name.removeprefix("my_kernel_") if must_fail[name] else None)
             for name in must_fail]
    result = _pytest(",".join(files), "tests/test_conformance.py", "-k", "my_kernel_", "-rA")
    out = result.stdout + result.stderr
    assert result.returncode == 1, out[-3000:]
    outcomes = {name: {"PASSED": set(), "FAILED": set()} for name in must_fail}
    for line in out.splitlines():
        word = line.split(" ", 1)[0]
        if word in ("PASSED", "FAILED") and "[" in line:
            name, _, check = line.split("[", 1)[1].split("]")[0].rsplit("-", 2)
            outcomes[name][word].add(check)
    for name, checks in must_fail.items():
        assert outcomes[name]["FAILED"] == checks, (name, out[-3000:])
        assert {"shapes", "causal", "reference"} - checks <= outcomes[name]["PASSED"], (name, out[-3000:])


def test_a_selection_of_nothing_says_how_to_load_a_plugin():
    result = _pytest("", "tests/test_conformance.py", "-k", "no_such_variant_xyz")
    assert result.returncode == 5
    assert "ATTN_ZOO_PLUGINS=path/to/my_attn.py" in result.stdout, result.stdout[-2000:]


def test_own_tables_ignore_a_loaded_plugin(tmp_path):
    """The README and committed-results tests read attn_zoo's own variants only."""
    result = _pytest(_plugin(tmp_path, "my_kernel_tables"), "tests/test_readme.py",
                     "tests/test_bench.py", "-k", "readme or front or missing")
    assert result.returncode == 0, (result.stdout + result.stderr)[-3000:]


def test_a_plugin_workdir_evaluates_in_a_fresh_process(tmp_path):
    plugin = _plugin(tmp_path, "my_kernel_eval")
    workdir = str(tmp_path / "run")
    train = subprocess.run(
        [sys.executable, "-m", "attn_zoo.cli", "train", "--plugins", plugin,
         "--config", f"{ROOT}/configs/recall.py:my_kernel_eval,smoke", "--workdir", workdir],
        capture_output=True, text=True, timeout=600, cwd=str(tmp_path))
    assert train.returncode == 0, train.stderr[-3000:]
    with open(os.path.join(workdir, "plugins.json"), encoding="utf-8") as f:
        assert plugin in json.load(f)  # (with any loaded through $ATTN_ZOO_PLUGINS)
    env = {k: v for k, v in os.environ.items() if k != "ATTN_ZOO_PLUGINS"}
    ev = subprocess.run([sys.executable, "-m", "attn_zoo.cli", "eval", "--workdir", workdir],
                        capture_output=True, text=True, timeout=600, env=env, cwd=str(tmp_path))
    assert ev.returncode == 0, ev.stderr[-3000:]
    assert "accuracy" in json.loads(ev.stdout)


def test_missing_plugin_is_one_line(capsys):
    assert cli.main(["list", "--plugins", "no/such/plugin.py"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: plugin file not found: no/such/plugin.py") and "Traceback" not in err
