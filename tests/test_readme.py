"""The README is generated where it states facts: variant table from the registry, CI = test command."""
import pathlib
import re

from attn_zoo.attention.core import table
from attn_zoo.bench import front

ROOT = pathlib.Path(__file__).resolve().parents[1]


def test_readme_variant_table_is_current():
    text = (ROOT / "README.md").read_text()
    assert table.update_readme(text) == text, "run: python experiments/update_readme.py"


def test_readme_front_table_is_current():
    text = (ROOT / "README.md").read_text()
    assert front.update_readme(text, str(ROOT / "experiments/results")) == text, \
        "run: python experiments/update_readme.py"


def test_every_registered_variant_is_in_the_committed_results():
    """The README's front table is only as complete as its sources: every registered variant must
    be in the attention benchmark and the training-step benchmark (the cumulative CPU suite,
    zoo-cpu.csv, shows 'not run' where it has no result yet: front.not_run lists them)."""
    assert front.missing(str(ROOT / "experiments/results")) == {}


def test_front_table_ratios_come_from_one_runs_rows():
    rows = [{"variant": "xla", "length": "8192", "fwdbwd_s": "8", "fwdbwd_peak_mb": "800"},
            {"variant": "local", "length": "8192", "fwdbwd_s": "0.5", "fwdbwd_peak_mb": "40"},
            {"variant": "dense", "length": "8192", "error": "out of memory"}]
    assert front.attention_ratios(rows) == {"xla": (1.0, 1.0), "local": (16.0, 0.05)}
    steps = [{"variant": "dense", "length": "4096", "step_s": "2"},
             {"variant": "linear", "length": "4096", "step_s": "0.25"}]
    assert front.train_ratios(steps) == {"dense": 1.0, "linear": 8.0}


def test_ci_runs_the_readme_test_command():
    ci = [l for l in (ROOT / ".ci/run").read_text().splitlines() if l and not l.startswith(("#", "set ", "cd "))]
    readme = (ROOT / "README.md").read_text()
    assert len(ci) == 1 and ci[0] in re.findall(r"^(.*)$", readme, re.M), ci


def test_an_update_run_replaces_its_variants_ratios(tmp_path):
    def write(name, rows):
        keys = ["variant", "length", "fwdbwd_s", "fwdbwd_peak_mb"]
        (tmp_path / name).write_text("\n".join([",".join(keys)] + [",".join(r) for r in rows]) + "\n")

    write("bench-cpu.csv", [("xla", "8192", "8", "800"), ("local", "8192", "1", "80"), ("linear", "8192", "2", "8")])
    write("bench-cpu-update.csv", [("xla", "8192", "6", "600"), ("local", "8192", "0.5", "60")])
    attn, _, _ = front._sources(str(tmp_path))
    assert attn["local"] == (12.0, 0.1) and attn["linear"] == (4.0, 0.01)  # each within its own run


def test_front_table_cells_come_from_the_suite_csv():
    rows = [{"entry": "mqar-L64-N4-d64", "variant": "local", "metric": "test_accuracy", "mean": "0.5",
             "ci_half_width": "0.25", "n": "3"},
            {"entry": "bytelm", "variant": "local", "metric": "test_bits_per_byte", "mean": "3.4779",
             "ci_half_width": "", "n": "1"}]
    acc = front.accuracies(rows)
    assert acc[("local", "mqar-L64-N4-d64")] == "50.0 ± 25.0 (n=3)"
    assert acc[("local", "bytelm")] == "3.478 (n=1)"  # bits as they are; one seed: no interval


def test_the_attention_example_runs():
    """The README's "Using an attention function" block runs as written."""
    text = (ROOT / "README.md").read_text()
    block = text[text.index("## Using an attention function"):].split("```python")[1].split("```")[0]
    scope = {}
    exec(compile(block, "README.md", "exec"), scope)
    assert scope["out"].shape == (2, 1000, 4, 64) and scope["out_t"].shape == (2, 1, 4, 64)
