"""The README is generated where it states facts: variant table from the registry, CI = test command."""
import pathlib
import re

from attn_zoo.attention import table

ROOT = pathlib.Path(__file__).resolve().parents[1]


def test_readme_variant_table_is_current():
    text = (ROOT / "README.md").read_text()
    assert table.update_readme(text) == text, "run: python experiments/update_readme.py"


def test_ci_runs_the_readme_test_command():
    ci = [l for l in (ROOT / ".ci/run").read_text().splitlines() if l and not l.startswith(("#", "set ", "cd "))]
    readme = (ROOT / "README.md").read_text()
    assert len(ci) == 1 and ci[0] in re.findall(r"^(.*)$", readme, re.M), ci
