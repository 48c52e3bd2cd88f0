"""Variants from outside the package: a plugin is a module (by name) or a .py file (by path) that
calls `attention.register` when imported.

Plugins come from the `attn_zoo.attention` entry-point group, from $ATTN_ZOO_PLUGINS
(comma-separated module names or file paths), or from `load(ref)`. Every one loaded is
remembered (`loaded()`), so a training workdir can record them and `eval`, `compare` and
`summarize` load them again later.
"""
from __future__ import annotations

import importlib
import importlib.util
import os
import sys
from importlib.metadata import entry_points

_LOADED: dict[str, str] = {}  # ref as recorded (module name, or absolute file path) -> module name
ENV = "ATTN_ZOO_PLUGINS"


def _is_path(ref: str) -> bool:
    return ref.endswith(".py") or os.sep in ref or (os.altsep is not None and os.altsep in ref)


def load(ref: str) -> str:
    """Import the plugin `ref` (a module name, or a path to a .py file) once; returns its record:
    the module name, or the file's absolute path."""
    ref = ref.strip()
    if _is_path(ref):
        path = os.path.abspath(ref)
        if path in _LOADED:
            return path
        if not os.path.isfile(path):
            raise FileNotFoundError(f"plugin file not found: {ref} (give a module name or a path to a .py file)")
        name = "attn_zoo_plugin_" + os.path.splitext(os.path.basename(path))[0]
        spec = importlib.util.spec_from_file_location(name, path)
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        try:
            spec.loader.exec_module(module)
        except BaseException:
            sys.modules.pop(name, None)
            raise
        _LOADED[path] = name
        return path
    if ref not in _LOADED:
        try:
            importlib.import_module(ref)
        except ModuleNotFoundError as e:
            if e.name != ref.split(".")[0] and e.name != ref:
                raise
            raise ModuleNotFoundError(
                f"plugin module {ref!r} not found: put its folder on PYTHONPATH, or give the path "
                f"to its .py file") from None
        _LOADED[ref] = ref
    return ref


def load_all(refs) -> None:
    """Load each of `refs` (e.g. the ones a workdir recorded)."""
    for ref in refs:
        load(ref)


def loaded() -> list[str]:
    """Every plugin loaded so far, as `load` records it (entry points by their module)."""
    return list(_LOADED)


def load_environment() -> None:
    """The entry points of group `attn_zoo.attention`, then $ATTN_ZOO_PLUGINS."""
    for ep in entry_points(group="attn_zoo.attention"):
        ep.load()
        _LOADED.setdefault(ep.module, ep.module)
    for ref in filter(None, (r.strip() for r in os.environ.get(ENV, "").split(","))):
        load(ref)
