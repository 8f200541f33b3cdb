"""Evaluate a classifier ensemble with TTA over a data set: predictions, labels, AUC with CI.

The library side of ``lesion evaluate cls`` (the command itself is :mod:`lesion.serving.evaluate_cls`, which adds
the backends). 
Example::

    lesion evaluate cls --models derm_cls_efficientnet_lite0_bce,derm_multitask_efficientnet_lite0 \\
        --tta d4 --merge mean_prob --data ../shared/data/PH2 --target melanoma --out ph2_preds.parquet

The **last line** of stdout is JSON: ``{"n", "auc", "auc_ci": [lo, hi], "members": {name: auc}, "device",
"ms_per_image"}`` with labels, or ``{"n", "device", "ms_per_image", "labels": false}`` without.
Warnings (metadata missing, partial labels) go to stderr.
"""
from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from lesion.card import ModelCard
from lesion.classify.classifier import as_classifier
from lesion.classify.cxr import labels_for_model
from lesion.classify.metadata import METADATA_KEYS, metadata_coverage
from lesion.data.labels import HAM7, TARGETS, melanoma_column, record_label
from lesion.data.spec import open_data
from lesion.errors import ConfigError, DataError, unknown_option
from lesion.cliutil import OneLineParser
from lesion.infer.cache import CacheSpec
from lesion.infer.members import Member
from lesion.infer.engine import PredictionResult, predict
from lesion.infer.ensemble import MERGE_MODES, check_merge
from lesion.infer.tta import DEFAULT_TTA, TTA_NAMES, check_tta
from lesion.metrics import logits_auc, mean_auc, per_label_auc, roc_auc_ci
from lesion.paths import atomic_target, check_out_file
from lesion.zoo import CLASSIFIER_TASKS, load_model

#: How an evaluation gets its predictions: ``predictor(members, dataset, tta=, merge=, batch_size=, device=,
#: progress=) -> PredictionResult``.
Predictor = Callable[..., PredictionResult]


def _warn(msg: str) -> None:
    print(f"lesion: warning: {msg}", file=sys.stderr)


def resolve_target(cards: Sequence[ModelCard], requested: str | None) -> tuple[str, str]:
    """``(model_target, eval_target)``: what the models predict and what is scored.

    Raises:
        DataError: members trained for different targets, or a requested target the models cannot give.
    """
    targets = {c.target for c in cards}
    if len(targets) > 1:
        raise DataError("The models were trained for different targets: "
                        + ", ".join(f"{c.name}={c.target}" for c in cards) + ".")
    model_target = targets.pop() or "melanoma"
    if requested is None:
        return model_target, model_target
    if requested not in TARGETS:
        raise unknown_option("target", requested, TARGETS)
    if requested == model_target or (model_target == "dx7" and requested == "melanoma"):
        return model_target, requested
    raise DataError(
        f"The models predict '{model_target}' but --target {requested} was asked; they cannot score that target. "
        f"Use --target {model_target}" + (" or melanoma" if model_target == "dx7" else "")
        + f", or models trained for '{requested}'."
    )


def label_vector(records: Sequence[Any], target: str) -> np.ndarray:
    """Labels ``[N]`` as float with NaN where an image has none (dx7: class index)."""
    return np.asarray([np.nan if (y := record_label(r, target)) is None else float(y) for r in records])


def check_label_classes(dataset, target: str) -> None:
    """dx7 needs HAM7 diagnosis codes in the data; otherwise say which labels do not fit."""
    if target != "dx7":
        return
    dx = sorted({(r.diagnosis or "").lower() for r in dataset.records if r.diagnosis} - set(HAM7))
    if dx:
        raise DataError(
            f"The models predict HAM10000's 7 classes ({', '.join(HAM7)}) but the data has labels "
            f"{', '.join(dx[:6])}: use --target melanoma, or data with HAM10000 diagnosis codes."
        )


def metadata_warnings(members: Sequence[tuple[Any, ModelCard]], records: Sequence[Any]) -> list[str]:
    """Readable notes for metadata models when the data lacks age / sex / site (a member without its model, e.g.
    one served remotely, is judged by its card)."""
    users = [c.name for m, c in members if (c.uses_metadata if m is None else m.uses_metadata
                                            if isinstance(m, Member) else as_classifier(m).uses_metadata)]
    if not users:
        return []
    cov = metadata_coverage(records)
    missing = [k for k in METADATA_KEYS if cov[k] == 0.0]
    partial = [f"{k} ({cov[k]:.0%} known)" for k in METADATA_KEYS if 0.0 < cov[k] < 1.0]
    notes = []
    if missing:
        how = "image-only: all metadata inputs set to 'unknown'" if len(missing) == len(METADATA_KEYS) else \
            f"'{', '.join(missing)}' set to 'unknown'"
        notes.append(f"model(s) {', '.join(users)} use patient metadata (age, sex, site), but the data has no "
                     f"{', '.join(missing)}; falling back to {how}. Expect a lower AUC than the card reports.")
    if partial:
        notes.append(f"metadata partly missing: {', '.join(partial)}; missing values count as 'unknown'.")
    return notes


def domain_warnings(members: Sequence[tuple[Any, ModelCard]], data_domain: str | None) -> list[str]:
    """One note per model trained on another image domain than the data's (a skin classifier on X-rays)."""
    return [w for _, c in members if (w := c.domain_warning(data_domain))]


def score(probs: np.ndarray, classes: Sequence[str], target: str) -> np.ndarray:
    """The score column used for the AUC: the binary probability, or the ``mel`` column of a dx7 head."""
    if probs.shape[1] == 1:
        return probs[:, 0]
    if target == "melanoma":
        return probs[:, melanoma_column(classes)]
    return probs


def auc_for(y: np.ndarray, s: np.ndarray, target: str, n_boot: int = 1000) -> tuple[float, float, float]:
    """AUC (+ bootstrap CI for binary targets) over the labelled images."""
    if target == "dx7":
        return logits_auc(np.log(np.clip(s, 1e-7, 1)), y.astype(int)), float("nan"), float("nan")
    return roc_auc_ci(y, s, n_boot=n_boot)


def evaluate_classifiers(
    model_names: Sequence[str],
    data: str,
    tta: str = DEFAULT_TTA,
    merge: str = "mean_prob",
    target: str | None = None,
    device: str = "auto",
    batch_size: int | None = None,
    use_cache: bool = True,
    progress: Callable[[int, int], None] | None = None,
    warn: Callable[[str], None] = _warn,
    predictor: Predictor | None = None,
    verify: bool = True,
) -> tuple[Any, dict[str, Any]]:
    """Load models, predict, score. Returns ``(per-image DataFrame, summary dict)`` (the CLI's JSON line).

    Args:
        predictor: how the predictions are made (``predictor(members, dataset, tta=, merge=, batch_size=,
            device=, progress=) -> PredictionResult``); default: the in-process engine through the prediction
            cache (``use_cache``). ``lesion.serving`` passes its backends (onnx, remote, Ray Data) here.
        verify: check each checkpoint against its card's sha256 before use.
    """
    check_tta(tta)
    check_merge(merge)
    if not model_names:
        raise ConfigError("--models (or --predictions) needs at least one model name, path or file.")
    if batch_size is not None and (isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1):
        raise ConfigError(f"--batch-size must be a whole number >= 1, got {batch_size!r}.")
    members = [(n, n.card) if isinstance(n, Member) else load_model(n, task=CLASSIFIER_TASKS, verify=verify)
               for n in model_names]
    if predictor is None:
        predictor = local_predictor(warn, use_cache)
    dataset = open_data(data)
    for line in dataset.report.lines():
        warn(f"note: {line}")
    dataset = _covered(dataset, [m for m, _ in members if hasattr(m, "coverage")], warn)
    for note in domain_warnings(members, dataset.domain):
        warn(note)
    if any(c.multilabel and len(c.classes) > 1 for _, c in members):
        return _evaluate_multilabel(members, dataset, tta, merge, device, batch_size, predictor, progress, warn)
    model_target, eval_target = resolve_target([c for _, c in members], target)
    records = dataset.records
    for note in metadata_warnings(members, records):
        warn(note)
    y = label_vector(records, eval_target)
    labelled = ~np.isnan(y)
    if labelled.any():
        check_label_classes(dataset, eval_target)
    res = predictor(members, dataset, tta=tta, merge=merge, batch_size=batch_size, device=device, progress=progress)
    df = res.to_frame()
    df["label"] = y
    failed = _report_failed(res, warn)
    has_label = labelled.copy()
    labelled = labelled & ~failed
    summary: dict[str, Any] = {"n": len(records) - int(failed.sum()), "target": eval_target, "tta": tta,
                               "merge": merge, "device": res.device, "ms_per_image": round(res.ms_per_image, 2)}
    if failed.any():
        summary["n_unreadable"] = int(failed.sum())
    if not labelled.any():
        warn(f"the data has no labels for '{eval_target}': writing predictions only (no AUC).")
        summary["labels"] = False
        return df, summary
    if not has_label.all():
        warn(f"{int((~has_label).sum())} of {len(y)} images have no '{eval_target}' label; the AUC uses the others.")
    yl = y[labelled]
    if eval_target != "dx7" and (yl.all() or not yl.any()):
        warn(f"all labelled images are {'positive' if yl.all() else 'negative'}: ROC-AUC is undefined.")
        summary.update(labels=True, n_labelled=int(labelled.sum()), auc=None)
        return df, summary
    auc, lo, hi = auc_for(yl, score(res.probs, res.classes, eval_target)[labelled], eval_target)
    members_auc = {name: round(auc_for(yl, score(p, res.classes, eval_target)[labelled], eval_target, n_boot=0)[0], 4)
                   for name, p in res.member_probs.items()}
    summary.update(n_labelled=int(labelled.sum()), auc=round(auc, 4),
                   auc_ci=[round(lo, 4), round(hi, 4)] if np.isfinite(lo) else None, members=members_auc)
    return df, summary


def local_predictor(warn: Callable[[str], None], use_cache: bool = True, backend: str = "torch",
                    **backend_options: Any) -> Predictor:
    """:func:`lesion.infer.engine.predict` on ``backend`` (``torch``: this process), through the prediction cache
    unless ``use_cache`` is False; a corrupt cache entry is reported through ``warn``."""
    cache = CacheSpec(warn=lambda m: warn(f"note: {m}")) if use_cache else None

    def run(members, dataset, **kw) -> PredictionResult:
        return predict(members, dataset, backend=backend, cache=cache, **kw, **backend_options)

    return run


def _evaluate_multilabel(members, dataset, tta, merge, device, batch_size, predictor, progress, warn):
    """Multi-label (chest X-ray findings) models: per-finding AUC against the labels the model's label set
    gives the data (:func:`lesion.classify.cxr.labels_for_model`); the summary's ``auc`` is their mean."""
    res = predictor(members, dataset, tta=tta, merge=merge, batch_size=batch_size, device=device, progress=progress)
    y, notes = labels_for_model(members[0][1], dataset.records)
    for note in notes:
        warn(note)
    df = res.to_frame()
    summary: dict[str, Any] = {"n": len(dataset.records), "target": members[0][1].target, "tta": tta,
                               "merge": merge, "device": res.device, "ms_per_image": round(res.ms_per_image, 2)}
    if y is None:
        summary["labels"] = False
        return df, summary
    classes = list(res.classes)
    for j, c in enumerate(classes):
        df[f"label_{c}"] = y[:, j]

    def per_label(p: np.ndarray, ci: bool) -> dict[str, dict[str, Any]]:
        out = {}
        for j, c in enumerate(classes):
            ok = np.isfinite(y[:, j])
            out[c] = per_label_auc(y[ok, j][:, None], p[ok, j][:, None], [c], ci=ci)[c]
        return out

    ens = per_label(res.probs, ci=True)
    summary.update(n_labelled=int(np.isfinite(y).all(axis=1).sum()), auc=round(mean_auc(ens), 4),
                   per_label={c: (round(v["auc"], 4) if v["auc"] is not None and np.isfinite(v["auc"]) else None)
                              for c, v in ens.items()},
                   per_label_ci={c: v.get("auc_ci") for c, v in ens.items()},
                   members={n: round(mean_auc(per_label(p, ci=False)), 4) for n, p in res.member_probs.items()})
    return df, summary


def _report_failed(res: PredictionResult, warn: Callable[[str], None]) -> np.ndarray:
    """``[N]`` True for images that could not be read (no scores: left out of every figure), each named once."""
    failed = np.asarray([i in res.errors for i in res.ids], bool)
    if failed.any():
        warn(f"{int(failed.sum())} of {len(failed)} image(s) could not be read and are not scored (see the "
             "'error' column):")
        for i, why in list(res.errors.items())[:20]:
            warn(f"  {i}: {why}")
        if len(res.errors) > 20:
            warn(f"  … and {len(res.errors) - 20} more")
    return failed


def _covered(dataset, files: Sequence[Any], warn: Callable[[str], None]):
    """The data set restricted to the images every predictions file has a row for; the others are counted and
    named in a warning (never dropped silently); an error when no image is left."""
    if not files:
        return dataset
    ids = [r.id for r in dataset.records]
    keep = set(ids)
    for f in files:
        have = {i for i in ids if f.coverage([i])["matched"]}
        lost = [i for i in ids if i in keep and i not in have]
        if lost:
            warn(f"{f.path.name} has no row for {len(lost)} of {len(ids)} image(s) of {dataset.name} (e.g. "
                 f"{', '.join(lost[:3])}): scored on the images it has.")
        unused = f.coverage(ids)["unused"]
        if unused:
            warn(f"{f.path.name}: {unused} row(s) name images that are not in {dataset.name}; not used.")
        keep &= have
    if not keep:
        raise DataError(f"No image of {dataset.name} has a row in {', '.join(f.path.name for f in files)}: ids are "
                        "matched by file name without folder or suffix (name the id column with --id-column).")
    return dataclasses.replace(dataset, records=[r for r in dataset.records if r.id in keep])


def _parser() -> argparse.ArgumentParser:
    p = OneLineParser(prog="lesion evaluate cls", description=__doc__.split("\n\n")[0])
    p.add_argument("--models", default="", help="comma-separated weight names or paths")
    p.add_argument("--predictions", action="append", default=[],
                   help="a CSV or parquet of probabilities by image id, as a member (repeatable; with or "
                        "without --models)")
    p.add_argument("--classes", default="", help="--predictions: the classes of its columns (default: melanoma)")
    p.add_argument("--id-column", default=None, help="--predictions: the id column (default: guessed)")
    p.add_argument("--columns", default="", help="--predictions: the probability column(s), one per class "
                   "(default: guessed; a note says which were used)")
    p.add_argument("--data", required=True, help="data folder or demo:derm")
    p.add_argument("--tta", default=DEFAULT_TTA, help=f"one of {', '.join(TTA_NAMES)} (default %(default)s)")
    p.add_argument("--merge", default="mean_prob", help=f"one of {', '.join(MERGE_MODES)} (default %(default)s)")
    p.add_argument("--target", default=None, help=f"one of {', '.join(TARGETS)} (default: the models' target)")
    p.add_argument("--out", default=None, help="per-image predictions (.parquet)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --out file")
    p.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    p.add_argument("--batch-size", type=int, default=None,
                   help="images per batch, >= 1 (default: chosen for the device and TTA)")
    p.add_argument("--no-cache", action="store_true", help="do not read or write the prediction cache")
    return p


def check_args(a: argparse.Namespace) -> Path | None:
    """Every option of ``lesion evaluate cls`` checked before a model or an image is read; returns ``--out``.

    Raises:
        ConfigError: a bad value (one line).
    """
    check_tta(a.tta)
    check_merge(a.merge)
    if a.target is not None and a.target not in TARGETS:
        raise unknown_option("target", a.target, TARGETS)
    if a.batch_size is not None and a.batch_size < 1:
        raise ConfigError(f"--batch-size must be >= 1, got {a.batch_size}.")
    if not [n for n in a.models.split(",") if n.strip()] and not a.predictions:
        raise ConfigError("--models or --predictions is needed: at least one model name, path or predictions file.")
    out = Path(a.out) if a.out else None
    if out is not None:
        if out.suffix.lower() != ".parquet":
            raise ConfigError(f"--out must end in .parquet, got '{out.name}'.")
        check_out_file(out, a.overwrite)
    return out


def write_parquet(df, out: Path) -> None:
    """Write ``df`` to ``out`` through a temporary file: a failure or a kill never leaves half a file."""
    with atomic_target(out) as tmp:
        df.to_parquet(tmp, index=False)
