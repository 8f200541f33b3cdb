"""The one rule for naming a data set: ``demo:derm`` / ``demo:cxr`` (the built-in synthetic sets) or a folder path.

The CLI (``--data``), the trainers, the exporter's ``--calibrate`` and the app's sidebar all open a data set
through :func:`open_data`.
"""
from __future__ import annotations

from pathlib import Path

from lesion.data.demo import demo_root
from lesion.data.layouts import load_dataset
from lesion.data.records import Dataset
from lesion.errors import unknown_option

#: Built-in demo sets: spec -> display name.
DEMO_SOURCES: dict[str, str] = {
    "demo:derm": "Demo dermoscopy (synthetic)",
    "demo:cxr": "Demo chest X-ray (synthetic)",
}


def is_demo(spec: str) -> bool:
    return str(spec).startswith("demo:")


def open_data(spec: str | Path) -> Dataset:
    """A data set from ``demo:derm`` / ``demo:cxr`` (generated on first use) or a folder in any supported layout.

    Raises:
        ConfigError: an unknown ``demo:`` name; DataError: an unreadable folder.
    """
    spec_s = str(spec)
    if is_demo(spec_s):
        if spec_s not in DEMO_SOURCES:
            raise unknown_option("demo data set", spec_s, list(DEMO_SOURCES))
        return load_dataset(demo_root(spec_s.split(":", 1)[1]))
    return load_dataset(Path(spec_s).expanduser())
