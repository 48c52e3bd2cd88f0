"""Regenerate the README's generated tables: python experiments/update_readme.py

The variant table comes from the registry; the front table from the registry and the committed
result files in experiments/results/ (bench-cpu.csv, efficiency-cpu.csv, zoo-cpu.csv).
"""
import pathlib

from attn_zoo.attention.core import table
from attn_zoo.bench import front

root = pathlib.Path(__file__).resolve().parents[1]
readme = root / "README.md"
text = table.update_readme(readme.read_text())
readme.write_text(front.update_readme(text, str(root / "experiments" / "results")))
for source, names in front.missing(str(root / "experiments" / "results")).items():
    print(f"missing from {source}: {', '.join(names)}")
print(f"updated {readme}")
