"""``lesion analyse slices | label-issues | diff | shortcuts``: the research instruments from the command line.

Every command takes predictions from ``--predictions FILE`` (repeatable; a CSV / parquet of id + probability,
:class:`lesion.infer.predictions.PredictionsMember`) or ``--models A,B`` (checkpoints, run through
:func:`lesion.infer.engine.predict` with the prediction cache), over ``--data`` (a folder or ``demo:derm``) and
``--target``. Several members are averaged (mean probability) except by ``diff``, which compares two. When a
model's card says it trained on the data, only its held-out images are scored (``--all-images``: all, optimistic).
The last stdout line is one JSON object; bad input is one line on stderr with exit code 2.

Examples::

    lesion analyse slices --predictions preds.csv --data ../shared/data/HAM10000 --by age,sex,site,sex*site
    lesion analyse label-issues --models derm_cls_efficientnet_lite0_focal --data demo:derm --out issues.csv
    lesion analyse diff --predictions a.csv --predictions b.csv --data demo:derm
    lesion analyse shortcuts --models derm_cls_efficientnet_lite0_focal --data demo:derm --sample 100
    lesion analyse shortcuts --models cxr_tb_efficientnet_lite0 --data ../shared/data/NIH_ChestXray14_mini

``shortcuts`` measures each CAM against the image's lesion mask (dermoscopy; images without one are left out and
counted) or lung mask (X-ray), and on radiographs without a lung mask against the shipped lung U-Net's lung fields
(``--lung-model``); the JSON says how many images each mask source gave.
"""
from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

from lesion.analyse.diff import diff_models, per_image, slice_differences
from lesion.analyse.image_features import image_features
from lesion.analyse.label_issues import lesion_leaks, near_duplicates, perceptual_hashes, rank_label_issues
from lesion.analyse.shortcuts import (NO_MASK, References, outside_table, sample_records, shortcut_verdict,
                                     verdict_meaning)
from lesion.analyse.slices import (SliceConfig, analysis_frame, find_slices, group_columns, groups_json,
                                   make_groups, parse_by, slice_table, worst_gaps)
from lesion.cliutil import OneLineParser, json_line
from lesion.data.labels import TARGETS
from lesion.data.spec import open_data
from lesion.errors import ConfigError, DataError
from lesion.explain.cam import cam_class
from lesion.infer.engine import predict
from lesion.infer.evaluate import label_vector, resolve_target, score
from lesion.infer.predictions import PredictionsMember
from lesion.infer.tta import TTA_NAMES, check_tta
from lesion.metrics import youden_threshold
from lesion.paths import atomic_target, check_out_file
from lesion.segment.lungs import LungFields, default_lung_model, lung_model_names
from lesion.train.heldout import held_out
from lesion.zoo import CLASSIFIER_TASKS, load_model, read_model_card


def _warn(msg: str) -> None:
    print(f"lesion: note: {msg}", file=sys.stderr)


@dataclass
class Scored:
    """What every command starts from: the data, labels and one score per member over the same images."""

    dataset: Any
    target: str
    y: np.ndarray  # [N] labels, NaN = unlabelled or not scored (a training image of a chosen model)
    scores: dict[str, np.ndarray]  # member name -> positive-class probability [N]
    pairs: list = field(default_factory=list)  # (model, card) of the --models members
    on_what: str = ""  # which images are scored, in words

    @property
    def ensemble(self) -> np.ndarray:
        return np.mean(np.stack(list(self.scores.values())), axis=0)

    @property
    def ids(self) -> list[str]:
        return [r.id for r in self.dataset.records]


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--predictions", action="append", default=[], metavar="FILE",
                   help="CSV / parquet with an id column and a probability column (repeatable)")
    p.add_argument("--models", default="", help="comma-separated checkpoint names or paths")
    p.add_argument("--data", required=True, help="data folder or demo:derm / demo:cxr")
    p.add_argument("--target", default=None, help=f"one of {', '.join(TARGETS)}, or tb (default: the models')")
    p.add_argument("--tta", default="none", help=f"for --models: one of {', '.join(TTA_NAMES)} (default %(default)s)")
    p.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    p.add_argument("--no-cache", action="store_true", help="do not read or write the prediction cache")
    p.add_argument("--all-images", action="store_true",
                   help="score the images a chosen model trained on too (optimistic)")
    p.add_argument("--threshold", default="youden",
                   help="operating point: 'youden' (chosen on the scored images) or a number in [0, 1]")
    p.add_argument("--n-boot", type=int, default=1000, help="bootstrap resamples (default %(default)s)")


def _trained_on(card, ds) -> bool:
    return any(d.name == ds.name for d in card.trained_on)


def load_scored(a: argparse.Namespace, warn: Callable[[str], None] = _warn) -> Scored:
    """Open the data, read or run every member, restrict to held-out images (see the module docstring)."""
    check_tta(a.tta)
    if a.target is not None and a.target not in (*TARGETS, "tb"):
        raise ConfigError(f"Unknown target {a.target!r}; choose one of {', '.join((*TARGETS, 'tb'))}.")
    names = [n.strip() for n in a.models.split(",") if n.strip()]
    if not names and not a.predictions:
        raise ConfigError("Give --predictions FILE (repeatable) or --models A,B.")
    ds = open_data(a.data)
    pairs = [load_model(n, task=CLASSIFIER_TASKS) for n in names]
    for _, c in pairs:
        if c.multilabel and len(c.classes) > 1:
            raise ConfigError(f"'{c.name}' is a multi-label findings model; analyse takes one binary target "
                              "(score one finding as a predictions file).")
        if (w := c.domain_warning(ds.domain)):
            raise DataError(w)
    if pairs:
        model_target, target = resolve_target([c for _, c in pairs], a.target)
        if target == "dx7":
            target = "melanoma"  # a seven-class head is scored on its mel column
    else:
        target = a.target or ("tb" if ds.domain == "cxr" else "melanoma")
    cache = None if a.no_cache else True
    scores: dict[str, np.ndarray] = {}
    for path in a.predictions:
        m = PredictionsMember(path, classes=(target,))
        res = predict([m], ds, tta="none", cache=None)
        warn(m.note)
        scores[m.name if m.name not in scores else f"{m.name}_{len(scores)}"] = res.probs[:, 0]
    for model, card in pairs:
        res = predict([(model, card)], ds, tta=a.tta, cache=cache, device=a.device)
        scores[card.name if card.name not in scores else f"{card.name}_{len(scores)}"] = np.asarray(
            score(res.probs, res.classes, target), dtype=np.float64)
    y = label_vector(ds.records, target)
    on_what = f"all {len(ds)} images of {ds.name}"
    if not a.all_images:
        keep = None
        for _, card in pairs:
            if not _trained_on(card, ds):
                continue
            try:
                h = held_out(card, ds)
            except DataError as e:
                warn(f"'{card.name}' trained on {ds.name} but its split is unknown ({e}); every image is scored and "
                     "the numbers are optimistic.")
                continue
            ids = {r.id for r in h.records}
            keep = ids if keep is None else keep & ids
            warn(f"'{card.name}' trained on {ds.name}: scoring its held-out images only ({h.how}).")
        if keep is not None:
            y = np.where([r.id in keep for r in ds.records], y, np.nan)
            on_what = f"{len(keep)} held-out images of {ds.name}"
    if not np.isfinite(y).any():
        raise DataError(f"No '{target}' labels among the scored images of {ds.name}.")
    return Scored(ds, target, y, scores, pairs, on_what)


def operating_point(spec: str, y: np.ndarray, s: np.ndarray) -> tuple[float, str]:
    """``(threshold, words)`` from ``--threshold``."""
    if str(spec).lower() == "youden":
        r = youden_threshold(y, s)
        return float(r["threshold"]), "Youden threshold chosen on the scored images"
    try:
        t = float(spec)
    except ValueError:
        raise ConfigError(f"--threshold must be 'youden' or a number in [0, 1], got {spec!r}.") from None
    if not 0 <= t <= 1:
        raise ConfigError(f"--threshold must be in [0, 1], got {t}.")
    return t, "fixed threshold"


def _groups(sc: Scored, by: str | None, image_columns: bool):
    wants_images = image_columns or any(part.strip().startswith(("est_", "heur_"))
                                        for part in (by or "").replace("*", ",").replace("×", ",").split(","))
    feats = image_features(sc.dataset.records, sc.dataset.domain) if wants_images else None
    frame = analysis_frame(sc.dataset, feats)
    available = group_columns(frame)
    keys = parse_by(by, available)
    cols = sorted({c for k in keys for c in k})
    return make_groups(frame, cols), keys


def _slices_parser() -> argparse.ArgumentParser:
    p = OneLineParser(prog="lesion analyse slices", description="Per-group AUC, sensitivity, specificity, "
                      "calibration; worst-group gap; slice finder with Benjamini-Hochberg.")
    _common(p)
    p.add_argument("--by", default=None, help="COL[,COL] (A*B for a pair); default: every metadata column")
    p.add_argument("--image-columns", action="store_true", help="add the image-derived estimates and heuristics")
    p.add_argument("--min-n", type=int, default=30, help="smallest group that is scored (default %(default)s)")
    p.add_argument("--metric", default="auc", choices=("auc", "error"), help="what the slice finder compares")
    return p


def slices_main(argv: list[str] | None = None) -> int:
    a = _slices_parser().parse_args(argv)
    if a.min_n < 2:
        raise ConfigError(f"--min-n must be >= 2, got {a.min_n}.")
    sc = load_scored(a)
    s = sc.ensemble
    thr, rule = operating_point(a.threshold, sc.y, s)
    groups, keys = _groups(sc, a.by, a.image_columns)
    cfg = SliceConfig(min_n=a.min_n, n_boot=a.n_boot)
    table = slice_table(sc.y, s, groups, keys, thr, cfg)
    gaps = worst_gaps(sc.y, s, groups, keys, cfg)
    found = find_slices(sc.y, s, groups, keys, thr, a.metric, cfg)
    print(json_line({"data": sc.dataset.name, "scored": sc.on_what, "n": int(np.isfinite(sc.y).sum()),
                     "target": sc.target, "members": list(sc.scores), "threshold": thr, "threshold_rule": rule,
                     "min_n": a.min_n, "groups": groups_json(table),
                     "worst_gaps": gaps.to_dict(orient="records"),
                     "findings": found.head(10).to_dict(orient="records")}))
    return 0


def _label_parser() -> argparse.ArgumentParser:
    p = OneLineParser(prog="lesion analyse label-issues", description="Confident-learning ranking of likely "
                      "label errors (cleanlab), near duplicates (imagehash) and lesions split across training "
                      "and held-out images.")
    _common(p)
    p.add_argument("--out", required=True, help="CSV with id, rank, score (rank 1 = most likely wrong)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --out file")
    p.add_argument("--duplicates", action="store_true", help="also look for near-duplicate images")
    p.add_argument("--compare", action="append", default=[], metavar="FOLDER",
                   help="another data folder to look for near duplicates of these images in (repeatable)")
    p.add_argument("--max-distance", type=int, default=4, help="Hamming distance of near duplicates (of 64 bits)")
    return p


def label_issues_main(argv: list[str] | None = None) -> int:
    a = _label_parser().parse_args(argv)
    out = Path(a.out)
    if out.suffix.lower() != ".csv":
        raise ConfigError(f"--out must end in .csv, got '{out.name}'.")
    check_out_file(out, a.overwrite)
    sc = load_scored(a)
    if not a.predictions:
        _warn("label issues need out-of-fold or held-out probabilities: on images a model trained on it has "
              "learnt the wrong labels too.")
    issues = rank_label_issues(sc.ids, sc.y, sc.ensemble)
    with atomic_target(out) as tmp:
        issues[["id", "rank", "score"]].to_csv(tmp, index=False)
    summary: dict[str, Any] = {"data": sc.dataset.name, "scored": sc.on_what, "n": len(issues),
                               "issues": int(issues["issue"].sum()), "out": str(out),
                               "top": issues[["id", "rank", "score"]].head(5).to_dict(orient="records")}
    if a.duplicates or a.compare:
        recs = list(sc.dataset.records)
        folders = [sc.dataset.name] * len(recs)
        for f in a.compare:
            other = open_data(f)
            recs += other.records
            folders += [other.name] * len(other.records)
        hashes = perceptual_hashes([r.image_path for r in recs])
        dup = near_duplicates([r.id for r in recs], hashes, folders, a.max_distance)
        summary["near_duplicates"] = len(dup)
        summary["near_duplicates_across"] = int(dup["across"].sum())
    splits = {r.id: str((r.meta or {}).get("split") or "") for r in sc.dataset.records}
    if any(splits.values()):
        train = [i for i, v in splits.items() if v == "train"]
        test = [i for i, v in splits.items() if v and v != "train"]
        summary["split_leaks"] = len(lesion_leaks(sc.dataset.records, train, test))
    print(json_line(summary))
    return 0


def _diff_parser() -> argparse.ArgumentParser:
    p = OneLineParser(prog="lesion analyse diff", description="Two members on the same images: AUCs, paired "
                      "ΔAUC (bootstrap CI, DeLong), McNemar at the operating points.")
    _common(p)
    p.add_argument("--out", default=None, help="per-image table (CSV): which model was right on each image")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --out file")
    p.add_argument("--by", default=None, help="COL[,COL]: also the groups where the two differ most")
    return p


def diff_main(argv: list[str] | None = None) -> int:
    a = _diff_parser().parse_args(argv)
    n_members = len(a.predictions) + len([n for n in a.models.split(",") if n.strip()])
    if n_members != 2:
        raise ConfigError(f"diff compares two members (--predictions twice, --models A,B, or one of each); got "
                          f"{n_members}.")
    out = Path(a.out) if a.out else None
    if out is not None:
        if out.suffix.lower() != ".csv":
            raise ConfigError(f"--out must end in .csv, got '{out.name}'.")
        check_out_file(out, a.overwrite)
    sc = load_scored(a)
    (na, sa), (nb, sb) = list(sc.scores.items())
    ta, rule = operating_point(a.threshold, sc.y, sa)
    tb, _ = operating_point(a.threshold, sc.y, sb)
    d = diff_models(sc.y, sa, sb, ta, tb, n_boot=a.n_boot)
    summary = {"a": na, "b": nb, "data": sc.dataset.name, "scored": sc.on_what, "auc_a": d.auc_a, "auc_b": d.auc_b,
               "delta_auc": d.delta_auc, "ci": list(d.ci), "p_delong": d.p_delong, "n": d.n,
               "positives": d.positives, "threshold_rule": rule, "threshold_a": ta, "threshold_b": tb,
               "mcnemar": {"a_right_b_wrong": d.mcnemar.a_right_b_wrong, "a_wrong_b_right": d.mcnemar.a_wrong_b_right,
                           "p": d.mcnemar.p, "exact": d.mcnemar.exact}}
    if a.by:
        groups, keys = _groups(sc, a.by, False)
        summary["slices"] = slice_differences(sc.y, sa, sb, groups, keys).head(10).to_dict(orient="records")
    if out is not None:
        with atomic_target(out) as tmp:
            per_image(sc.ids, sc.y, sa, sb, ta, tb).to_csv(tmp, index=False)
        summary["out"] = str(out)
    print(json_line(summary))
    return 0


def _shortcut_parser() -> argparse.ArgumentParser:
    p = OneLineParser(prog="lesion analyse shortcuts", description="CAM mass outside the lesion / lung fields "
                      "against correctness: does attention outside predict errors?")
    _common(p)
    p.add_argument("--sample", type=int, default=None, help="audit this many images (seeded draw; default all)")
    p.add_argument("--seed", type=int, default=0, help="seed of the --sample draw")
    p.add_argument("--method", default="gradcam", help="CAM method (default %(default)s)")
    p.add_argument("--lung-model", default="auto",
                   help="X-ray data: the lung network for radiographs without a lung mask ('auto': the shipped lung "
                        "U-Net; 'none': leave them out, counted; or a checkpoint name / path)")
    p.add_argument("--out", default=None, help="per-image CSV: id, outside, mask_source, wrong, prob")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --out file")
    return p


def shortcuts_main(argv: list[str] | None = None) -> int:
    a = _shortcut_parser().parse_args(argv)
    if a.predictions or not a.models.strip():
        raise ConfigError("shortcuts needs --models (a checkpoint: CAMs need the network's gradients; a "
                          "predictions file has none).")
    if a.sample is not None and a.sample < 2:
        raise ConfigError(f"--sample must be >= 2, got {a.sample}.")
    cam_class(a.method)
    out = Path(a.out) if a.out else None
    if out is not None:
        check_out_file(out, a.overwrite)
    sc = load_scored(a)
    s = sc.ensemble
    thr, rule = operating_point(a.threshold, sc.y, s)
    model, card = sc.pairs[0]
    labelled = [r for r, yy in zip(sc.dataset.records, sc.y) if np.isfinite(yy)]
    recs = sample_records(labelled, a.sample, a.seed)
    refs = References(sc.dataset.domain, audit_lungs(sc.dataset.domain, recs, a.lung_model))
    table = outside_table(model, card, recs, a.method, references=refs)
    pos = {i: k for k, i in enumerate(sc.ids)}
    idx = np.array([pos[i] for i in table["id"]], dtype=int)
    wrong = (s[idx] >= thr) != (sc.y[idx] == 1)
    unread = table["error"].astype(str) != ""
    if unread.any():
        _warn(f"{int(unread.sum())} image(s) or masks could not be read and are left out (e.g. "
              f"{table['id'][unread].iloc[0]}: {table['error'][unread].iloc[0]}).")
    # an unreadable image is neither measured nor an all-zero map: it is left out like one without a mask
    v = shortcut_verdict(table["outside"].to_numpy(), wrong, (table["has_mask"] & ~unread).to_numpy(), n_boot=a.n_boot)
    no_mask = int((~table["has_mask"]).sum())
    if no_mask:
        _warn(f"{no_mask} of {len(recs)} images have no mask to measure against ({NO_MASK}): left out.")
    if out is not None:
        t = table.assign(wrong=wrong, prob=s[idx])
        with atomic_target(out) as tmp:
            t.to_csv(tmp, index=False)
    print(json_line({"model": card.name, "data": sc.dataset.name, "scored": sc.on_what, "method": a.method,
                     "sampled": len(recs), "threshold": thr, "threshold_rule": rule,
                     "mask_sources": refs.counts(recs), "lung_model": refs.lungs.name if refs.lungs else None,
                     **v, "meaning": verdict_meaning(v["verdict"], sc.dataset.domain)}))
    return 0


def audit_lungs(domain: str, records, spec: str = "auto"):
    """The :class:`lesion.segment.lungs.LungFields` an X-ray audit measures unmasked radiographs against: None for
    dermoscopy, when every record has its lung mask, or for ``spec`` 'none'; 'auto' = the shipped lung U-Net.

    Raises:
        ConfigError: 'auto' with no lung network in ``weights/`` while some radiographs lack a mask (the message
            says to pass --lung-model none), or a named checkpoint that is not a chest X-ray segmenter.
    """
    if domain != "cxr" or str(spec).lower() == "none" or all(r.mask_path is not None for r in records):
        return None
    if str(spec).lower() == "auto":
        name = default_lung_model(lung_model_names())
        if name is None:
            raise ConfigError("Some radiographs have no lung mask and there is no lung segmentation model in "
                              "weights/: pass --lung-model NAME, or --lung-model none to leave them out.")
        return LungFields(name)
    card = read_model_card(spec, task="segmentation")
    if card.domain != "cxr":
        raise ConfigError(f"--lung-model '{spec}' segments {card.domain} images, not chest X-rays.")
    return LungFields(spec)
