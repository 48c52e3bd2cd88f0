"""experiments/zoo_table.py: the suite's status section and what its missing runs would cost."""
import importlib.util
import pathlib

from attn_zoo import attention

ROOT = pathlib.Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location("zoo_table", ROOT / "experiments" / "zoo_table.py")
zoo_table = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(zoo_table)


def _record(variant, wall):
    return {"variant": variant, "results": {"wall_time_s": wall}}


def test_run_cost_is_the_median_run_and_runs_per_variant():
    records = [_record("a", 100.0), _record("a", 300.0), _record("a", 200.0), _record("b", 900.0)]
    assert zoo_table.run_cost(records) == (250.0, 2.0)  # walls 100, 200, 300, 900; a: 3, b: 1
    assert zoo_table.run_cost([]) == (None, None)


def test_status_lists_missing_variants_with_their_cost():
    table = [{"entry": "copy", "variant": "blockwise"}]
    text = zoo_table.status(None, table, {"copy": (600.0, 4)})
    missing = [n for n in attention.names(builtin=True) if n != "blockwise"]
    hours = len(missing) * 4 * 600 / 3600
    assert f"- copy: not run for {', '.join(missing)} (~{hours:.1f} h: 4 runs a variant at 10 min" in text
    assert "- listops: not run\n" in text  # no record: nothing to estimate from
    assert f"In all ~{hours:.0f} run-hours" in text
