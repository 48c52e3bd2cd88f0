"""The architecture the README states, kept honest: layers import downward only, no import cycle,
no module imports another module's private names, and attention code knows nothing of Flax.

The layers are read from the README's architecture section (between the `layers` markers), so
the picture a newcomer reads is the rule this test enforces. Imports inside functions count.
"""
import ast
import os
import pathlib
import re

ROOT = pathlib.Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "attn_zoo"


def readme_layers() -> dict[str, int]:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    block = text.split("<!-- layers:start -->", 1)[1].split("<!-- layers:end -->", 1)[0]
    layers = {}
    for line in block.splitlines():
        m = re.match(r"^\s*(\d+)\s+(attn_zoo[\w.]*)\s", line)
        if m:
            layers[m.group(2)] = int(m.group(1))
    return layers


def modules() -> dict[str, pathlib.Path]:
    out = {}
    for path in PACKAGE.rglob("*.py"):
        parts = path.relative_to(ROOT).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        out[name] = path
    return out


def imports(path: pathlib.Path, known) -> list[tuple[str, list[str]]]:
    """[(imported attn_zoo module, names taken from it)] for every import statement in the file."""
    out = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            out += [(a.name, []) for a in node.names if a.name.startswith("attn_zoo")]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and (node.module or "").startswith("attn_zoo"):
            for a in node.names:
                sub = f"{node.module}.{a.name}"
                out.append((sub, []) if sub in known else (node.module, [a.name]))
    return out


def layer_of(module, layers):
    best = max((p for p in layers if module == p or module.startswith(p + ".")), key=len, default=None)
    assert best is not None, f"{module} is in no layer of the README's architecture section"
    return layers[best]


def graph():
    known = modules()
    return known, {m: imports(p, known) for m, p in known.items()}


def test_every_module_has_a_layer_and_imports_only_downward():
    layers = readme_layers()
    assert layers, "README has no architecture section between <!-- layers:start/end --> markers"
    known, edges = graph()
    upward = [f"{m} (layer {layer_of(m, layers)}) imports {t} (layer {layer_of(t, layers)})"
              for m, targets in edges.items() for t, _ in targets
              if t in known and layer_of(t, layers) > layer_of(m, layers)]
    assert not upward, "\n".join(upward)


def test_no_import_cycle():
    known, edges = graph()
    adj = {m: sorted({t for t, _ in targets if t in known and t != m}) for m, targets in edges.items()}
    # Tarjan's strongly connected components: any component of 2+ modules is a cycle.
    index, low, stack, on, cycles, counter = {}, {}, [], set(), [], [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in adj[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                cycles.append(sorted(comp))

    for v in sorted(adj):
        if v not in index:
            visit(v)
    assert not cycles, f"import cycles: {cycles}"


def test_no_module_imports_private_names():
    _, edges = graph()
    private = [f"{m} imports {name} from {t}" for m, targets in edges.items() for t, names in targets
               for name in names if name.startswith("_") and t != m]
    assert not private, "\n".join(private)


def test_attention_code_imports_no_flax():
    for path in (PACKAGE / "attention").rglob("*.py"):
        text = path.read_text(encoding="utf-8")
        assert not re.search(r"^\s*(import flax|from flax)", text, re.M), path


def test_the_variants_folder_lists_the_registry():
    from attn_zoo import attention
    files = sorted(p.stem for p in (PACKAGE / "attention" / "variants").glob("*.py") if p.stem != "__init__")
    assert files == attention.names(builtin=True)
    assert not [p for p in os.listdir(PACKAGE / "attention" / "variants")
                if not (p.endswith(".py") or p == "__pycache__")]
