"""Regenerate the README's variant table from the registry: python experiments/update_readme.py"""
import pathlib

from attn_zoo.attention import table

readme = pathlib.Path(__file__).resolve().parents[1] / "README.md"
readme.write_text(table.update_readme(readme.read_text()))
print(f"updated {readme}")
