"""Chest X-ray label sets (seed 002) and frontal-view checks.

Seed 002 trains one multi-label network on NIH ChestX-ray14 in two variants of the label set:

* ``merge`` — the seven smallest classes (Cardiomegaly, Pneumonia, Edema, Emphysema, Fibrosis,
  Pleural_Thickening, Hernia; its table 2) become one class ``Other`` (table 3, 8 classes);
* ``drop`` — those seven classes are removed. An image whose *only* findings were dropped is removed too:
  keeping it would teach the network that it shows "No Finding".

``all`` keeps every finding that occurs (the 14 NIH labels, or whatever a re-labelled CSV or the demo set
has) and ``tb`` is the single tuberculosis-vs-normal label of the Montgomery/Shenzhen sets.

A :class:`LabelSet` is stored in the model card (``label_set``) so that the page and the CLI rebuild exactly
the classes a model was trained on; :func:`class_table` is the table the UI shows.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Iterable, Sequence

import numpy as np

from lesion.card import ModelCard
from lesion.data.cxr import NIH_LABELS  # the 14 NIH ChestX-ray14 labels (Data_Entry_2017.csv spelling)
from lesion.data.labels import tb_label
from lesion.errors import DataError, unknown_option

#: Seed 002's small classes (bold italics in its table 2), merged into "Other" or dropped.
SEED002_SMALL: tuple[str, ...] = (
    "Cardiomegaly", "Pneumonia", "Edema", "Emphysema", "Fibrosis", "Pleural_Thickening", "Hernia",
)
OTHER = "Other"
TB = "tuberculosis"
MODES: tuple[str, ...] = ("merge", "drop", "all", "tb")
#: View positions that are not frontal (NIH uses PA/AP; DICOM ViewPosition uses LL/RL/LATERAL).
LATERAL_VIEWS = frozenset({"LL", "RL", "LAT", "LATERAL", "LLD", "RLD"})


@dataclass(frozen=True)
class LabelSet:
    """Which findings become output columns.

    Attributes:
        mode: ``merge`` (small classes -> ``Other``), ``drop`` (small classes removed), ``all`` (every
            finding seen) or ``tb`` (tuberculosis vs normal).
        small: the classes ``merge``/``drop`` act on (seed 002's seven by default).
        classes: the output columns, in order (filled by :meth:`fit`).
    """

    mode: str = "merge"
    small: tuple[str, ...] = SEED002_SMALL
    classes: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise unknown_option("label mode", self.mode, MODES)

    # ------------------------------------------------------------------ construction
    def fit(self, records: Sequence[Any]) -> "LabelSet":
        """Fix :attr:`classes` from the findings present in ``records``.

        Raises:
            DataError: no labels; or (``merge``/``drop``) findings outside the NIH vocabulary and the small
                list, which the variant cannot place — the message names them and suggests ``all``.
        """
        if self.mode == "tb":
            if not any(tb_label(r) is not None for r in records):
                raise DataError("No image has a tuberculosis/normal label (the Montgomery/Shenzhen sets carry one).")
            return LabelSet("tb", self.small, (TB,))
        seen = sorted({f for r in records for f in (r.findings or ())})
        if not seen and not any(r.target is not None for r in records):
            raise DataError("No image has findings or a 'No Finding' label: nothing to train or score.")
        if self.mode == "all":
            return LabelSet("all", self.small, tuple(seen))
        known = set(NIH_LABELS) | set(self.small)
        unknown = [f for f in seen if f not in known]
        if unknown:
            raise DataError(
                f"Findings outside the NIH ChestX-ray14 labels: {', '.join(unknown)}. The '{self.mode}' variant "
                f"only knows {', '.join(NIH_LABELS)}; use the 'all' label set to keep every finding as a class."
            )
        big = [f for f in NIH_LABELS if f not in self.small]
        present_big = [f for f in big if f in seen] or big
        if self.mode == "merge":
            return LabelSet("merge", self.small, tuple(present_big) + (OTHER,))
        return LabelSet("drop", self.small, tuple(present_big))

    @classmethod
    def from_card(cls, card: ModelCard) -> "LabelSet":
        d = dict(card.extra.get("label_set") or {})
        if not d:
            return cls("all", SEED002_SMALL, tuple(card.classes))
        return cls(d.get("mode", "all"), tuple(d.get("small", SEED002_SMALL)), tuple(d.get("classes", ())))

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["small"], d["classes"] = list(self.small), list(self.classes)
        return d

    # ------------------------------------------------------------------ encoding
    def column_of(self, finding: str) -> str | None:
        """The output column a raw finding counts for (None: dropped or unknown)."""
        if self.mode == "merge" and finding in self.small:
            return OTHER
        if self.mode == "drop" and finding in self.small:
            return None
        return finding if finding in self.classes else None

    def keeps(self, record: Any) -> bool:
        """False for images the variant removes (``drop``: only dropped findings; ``tb``: no TB label)."""
        if self.mode == "tb":
            return tb_label(record) is not None
        f = tuple(record.findings or ())
        if self.mode == "drop" and f and all(x in self.small for x in f):
            return False
        return True

    def encode(self, records: Sequence[Any]) -> np.ndarray:
        """Multi-hot float32 ``[N, K]`` for records this label set keeps (see :meth:`keeps`)."""
        if not self.classes:
            raise DataError("The label set has no classes yet: call fit(records) first.")
        y = np.zeros((len(records), len(self.classes)), np.float32)
        index = {c: j for j, c in enumerate(self.classes)}
        for i, r in enumerate(records):
            if self.mode == "tb":
                v = tb_label(r)
                if v is None:
                    raise DataError(f"Image {r.id} has no tuberculosis/normal label.")
                y[i, 0] = v
                continue
            for f in r.findings or ():
                col = self.column_of(f)
                if col is not None:
                    y[i, index[col]] = 1.0
        return y

    def select(self, records: Sequence[Any]) -> list:
        return [r for r in records if self.keeps(r)]


def class_table(records: Sequence[Any], label_set: LabelSet) -> "pandas.DataFrame":  # noqa: F821
    """One row per raw finding: images with it, and what the label set does with it (kept / Other / dropped).

    ``tb`` mode: rows ``tuberculosis`` and ``normal``. A last row counts images with no finding.
    """
    import pandas as pd

    if label_set.mode == "tb":
        v = [tb_label(r) for r in records]
        return pd.DataFrame({"finding": ["tuberculosis", "normal", "unlabelled"],
                             "images": [v.count(1), v.count(0), v.count(None)],
                             "becomes": ["tuberculosis (positive)", "negative", "not used"]})
    counts: dict[str, int] = {}
    for r in records:
        for f in set(r.findings or ()):
            counts[f] = counts.get(f, 0) + 1
    rows = []
    for f, n in sorted(counts.items(), key=lambda kv: -kv[1]):
        col = label_set.column_of(f) if label_set.classes else None
        if label_set.mode == "merge" and f in label_set.small:
            what = f"merged into '{OTHER}'"
        elif label_set.mode == "drop" and f in label_set.small:
            what = "dropped"
        else:
            what = "own class" if (col or not label_set.classes) else "not a class"
        rows.append({"finding": f, "images": n, "becomes": what})
    rows.append({"finding": "No Finding", "images": sum(1 for r in records if not r.findings), "becomes": "all zeros"})
    return pd.DataFrame(rows)


def column_counts(y: np.ndarray, classes: Iterable[str]) -> dict[str, int]:
    """Positives per output column of a multi-hot matrix."""
    return {c: int(n) for c, n in zip(classes, np.asarray(y).sum(axis=0))}


def view_warnings(records: Sequence[Any]) -> list[str]:
    """Readable notes for images whose recorded view is lateral where the models expect frontal ones.

    Only the recorded view position (``meta['view']``: NIH's 'View Position', a DICOM ViewPosition) can be
    checked; a lateral image with no recorded view is not detected.
    """
    lateral = [r.id for r in records if str((r.meta or {}).get("view") or "").strip().upper() in LATERAL_VIEWS]
    if not lateral:
        return []
    return [f"{len(lateral)} image(s) are recorded as lateral views ({', '.join(lateral[:5])}"
            f"{' …' if len(lateral) > 5 else ''}); the chest X-ray models were trained on frontal (PA/AP) views, "
            "so their scores on these are not meaningful."]


def labels_for_model(card: ModelCard, records: Sequence[Any]) -> tuple[np.ndarray | None, list[str]]:
    """Ground truth of ``records`` in a model's output columns, or None with the reason.

    Returns:
        ``(y, notes)``: ``y`` float ``[N, K]`` with NaN rows for images the label set cannot score (no TB label;
        ``drop`` mode: only dropped findings), or None when no image can be scored; ``notes`` are readable
        lines for the page (why there are no labels, unknown findings, lateral views).
    """
    ls = LabelSet.from_card(card)
    classes = tuple(card.classes or ls.classes)
    ls = LabelSet(ls.mode, ls.small, classes)
    notes = view_warnings(records)
    if ls.mode == "tb":
        if not any(tb_label(r) is not None for r in records):
            notes.append("This data set has no tuberculosis/normal labels: predictions only, no ROC.")
            return None, notes
    else:
        if not any(r.findings for r in records):
            notes.append(f"This data set has no findings labels for {', '.join(classes)}: predictions only, no ROC.")
            return None, notes
        vocab = set(NIH_LABELS) | set(ls.small) | set(classes)
        unknown = sorted({f for r in records for f in (r.findings or ()) if f not in vocab})
        if unknown:
            notes.append(f"Findings this model has no column for are ignored: {', '.join(unknown)}.")
    y = np.full((len(records), len(classes)), np.nan)
    keep = [i for i, r in enumerate(records) if ls.keeps(r)]
    if keep:
        y[keep] = ls.encode([records[i] for i in keep])
    return y, notes
