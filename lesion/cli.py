"""The ``lesion`` command: ``lesion train {seg,cls,cxr} …``, ``lesion evaluate {seg,cls} …``, ``lesion export …``,
``lesion cache {clear,info}``, ``lesion analyse {slices,label-issues,diff,shortcuts} …``.

Each task module owns its own argument parser (``main(argv) -> int``); this file only routes, so that the
heavy imports of one task never slow down another. User errors (:class:`lesion.LesionError`) are printed as
one readable line with exit code 2, never as a traceback.
"""
from __future__ import annotations

import importlib
import os
import sys

from lesion.errors import LesionError

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

#: (command, task) -> "module:function"; the function takes the remaining argv and returns an exit code.
COMMANDS: dict[tuple[str, str], str] = {
    ("train", "seg"): "lesion.train.seg:main",
    ("train", "cls"): "lesion.train.cls:main",
    ("train", "cxr"): "lesion.train.cxr:main",
    ("evaluate", "seg"): "lesion.segment.evaluate:main",
    ("evaluate", "cls"): "lesion.serving.evaluate_cls:main",
    ("export", "model"): "lesion.export:main",
    ("demo", "data"): "lesion.data.demo:main",
    ("cache", "clear"): "lesion.infer.cache:clear_main",
    ("cache", "info"): "lesion.infer.cache:info_main",
    ("serve", "models"): "lesion.serving.server:main",
    ("import", "model"): "lesion.importer:main",
    ("analyse", "slices"): "lesion.analyse.cli:slices_main",
    ("analyse", "label-issues"): "lesion.analyse.cli:label_issues_main",
    ("analyse", "diff"): "lesion.analyse.cli:diff_main",
    ("analyse", "shortcuts"): "lesion.analyse.cli:shortcuts_main",
}

USAGE = """usage: lesion <command> <task> [options]

commands:
  lesion train seg …         train a U-Net / LinkNet segmentation model
  lesion train cls …         train a classifier or the multi-task model
  lesion train cxr …         train a chest X-ray classifier (NIH findings, tuberculosis)
  lesion evaluate seg …      score a segmentation method over a data set
  lesion evaluate cls …      run a classifier ensemble with TTA over a data set
  lesion export MODEL …      export a classifier to ONNX
  lesion import FILE …       make a model trained elsewhere (state dict, TorchScript, ONNX) a member
  lesion demo data …         generate the built-in synthetic demo data set
  lesion cache clear …       delete the prediction cache (--dry-run: only count; review tags are kept)
  lesion cache info          where the cache is and what it holds
  lesion analyse slices …    per-group AUC / sensitivity / calibration, worst-group gap, slice finder (BH)
  lesion analyse label-issues …  likely label errors (cleanlab), near duplicates, split leaks -> --out CSV
  lesion analyse diff …      two members on the same images: paired ΔAUC, DeLong, McNemar
  lesion analyse shortcuts … CAM mass outside the lesion / lungs against correctness
  lesion serve --models A,B  serve checkpoints over HTTP (Ray Serve; 127.0.0.1 unless LESION_SERVE_TOKEN is set)

Run `lesion <command> <task> --help` for the options of one task.
"""


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(USAGE)
        return 0
    command = argv[0]
    if command == "export":
        key, rest = ("export", "model"), argv[1:]
    elif command == "serve":
        key, rest = ("serve", "models"), argv[1:]
    elif command == "import":
        key, rest = ("import", "model"), argv[1:]
    elif len(argv) >= 2:
        key, rest = (command, argv[1]), argv[2:]
    else:
        key, rest = (command, ""), []
    if key not in COMMANDS:
        print(f"lesion: unknown command '{' '.join(argv[:2])}'.\n\n{USAGE}", file=sys.stderr)
        return 2
    module_name, func_name = COMMANDS[key].split(":")
    try:
        func = getattr(importlib.import_module(module_name), func_name)
    except ModuleNotFoundError as e:
        if e.name and e.name.startswith("lesion"):
            print(f"lesion: '{' '.join(key)}' is not available in this version.", file=sys.stderr)
            return 2
        raise
    try:
        return int(func(rest) or 0)
    except LesionError as e:
        print(f"lesion: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("lesion: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
