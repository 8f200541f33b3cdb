"""The GPU run of a pack (``DEST/run.sh [--smoke] OUT`` starts it; bench/gpu/README.md says how to get it there).

Stages, each timed, each failure recorded without losing the others' results:

1. unpack ``data.zip`` (HAM10000 and the chest X-ray masks set in their own layouts) and read them with
   ``lesion.data``;
2. the seed-003 K-fold derm ensemble: one multi-task EfficientNet-Lite0 member per fold
   (:func:`lesion.train.gpu.train_classifier_gpu`), every HAM10000 image uploaded once at the data's aspect
   (192 x 256, no crop), then the pooled out-of-fold AUC written into every member's card as its headline;
3. a derm U-Net (HAM10000 lesion masks, 384 x 512) and a lung U-Net (512 x 512)
   (:func:`lesion.train.gpu.train_segmentation_gpu`), each with its held-out IoU / Dice at native size;
4. the ensemble x d4 timing on the device: the batched engine (``lesion.infer.engine.predict``: bf16 autocast,
   channels_last) against the naive loop (one image x one view x one model, plain fp32: the reference the largest
   probability difference is measured against), for bench_ensemble.py's
   shipped-style set of four at 256 px (targets: <= 2 ms per image, >= 5x the naive loop) and for the five
   trained members at their own input;
5. OUT: ``results.json``, ``run.log`` and ``models-N.tar`` (each model's ``NAME.safetensors`` + ``NAME.json``,
   grouped so that no file passes 15.5 MiB); at most 8 files, none deeper than OUT.

``--smoke`` runs the same on the CPU in miniature (the first images, one epoch, tiny inputs): the pack's proof
without a GPU (tests/test_gpu_pack.py). Every stage's training budget shrinks when the ones before ran long, so the
whole run ends within ``--minutes``.
"""
from __future__ import annotations

import argparse
import dataclasses
import datetime as _dt
import json
import os
import platform
import re
import signal
import sys
import tarfile
import time
import traceback
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

#: What comes back from the GPU machine: at most this many files, each at most this many bytes.
MAX_FILES = 8
MAX_FILE_BYTES = 16 * 2**20
#: Bundles stay under this, with room for the tar headers.
BUNDLE_BYTES = int(15.5 * 2**20)
NAME_OK = re.compile(r"^[A-Za-z0-9._-]+$")


@dataclass(frozen=True)
class Plan:
    """Sizes, epochs and budgets (minutes of training) of one run."""

    cls_hw: tuple[int, int]
    cls_epochs: int
    cls_patience: int
    cls_batch: int
    cls_minutes: float  # per member
    folds: int
    derm_hw: tuple[int, int]
    derm_epochs: int
    derm_patience: int
    derm_batch: int
    derm_minutes: float
    lung_hw: tuple[int, int]
    lung_epochs: int
    lung_patience: int
    lung_batch: int
    lung_minutes: float
    bench_n: int
    bench_naive_n: int
    bench_size: int
    total_minutes: float
    eval_batch: int = 128
    max_images: int = 0  # per data set (whole lesions for the K-fold; 0 = all)


FULL = Plan(cls_hw=(192, 256), cls_epochs=16, cls_patience=4, cls_batch=32, cls_minutes=0.6, folds=5,
            derm_hw=(384, 512), derm_epochs=30, derm_patience=6, derm_batch=16, derm_minutes=1.5,
            lung_hw=(512, 512), lung_epochs=40, lung_patience=8, lung_batch=8, lung_minutes=0.8,
            bench_n=256, bench_naive_n=32, bench_size=256, total_minutes=7.5)
SMOKE = Plan(cls_hw=(64, 96), cls_epochs=1, cls_patience=0, cls_batch=8, cls_minutes=0.0, folds=5,
             derm_hw=(64, 96), derm_epochs=1, derm_patience=0, derm_batch=4, derm_minutes=0.0,
             lung_hw=(64, 64), lung_epochs=1, lung_patience=0, lung_batch=4, lung_minutes=0.0,
             bench_n=4, bench_naive_n=2, bench_size=64, total_minutes=3.0, eval_batch=16, max_images=40)


class Log:
    """Lines with the run's elapsed time, to stdout and OUT/run.log."""

    def __init__(self, path: Path):
        self.t0 = time.perf_counter()
        self.f = open(path, "a", buffering=1)

    def __call__(self, msg: str) -> None:
        line = f"[{time.perf_counter() - self.t0:7.1f}s] {msg}"
        print(line, flush=True)
        self.f.write(line + "\n")

    def elapsed(self) -> float:
        return time.perf_counter() - self.t0


def safe_extract(zip_path: Path, dest: Path) -> int:
    """Extract ``zip_path`` into ``dest`` (no absolute paths, no ``..``); returns the file count."""
    n = 0
    with zipfile.ZipFile(zip_path) as z:
        for info in z.infolist():
            parts = Path(info.filename).parts
            if info.filename.startswith("/") or ".." in parts:
                raise SystemExit(f"gpu_run: unsafe path in {zip_path.name}: {info.filename}")
        z.extractall(dest)
        n = sum(1 for i in z.infolist() if not i.is_dir())
    return n


def bundle(models: list[tuple[str, list[Path]]], out: Path, limit: int = BUNDLE_BYTES) -> dict[str, str]:
    """Tar the models' files into ``out/models-N.tar``, first fit by decreasing size, each tar under ``limit``;
    returns model name -> tar name."""
    sized = sorted(models, key=lambda m: -sum(p.stat().st_size for p in m[1]))
    bins: list[tuple[int, list[tuple[str, list[Path]]]]] = []
    for name, files in sized:
        size = sum(p.stat().st_size + 1024 for p in files)
        if size > limit:
            raise SystemExit(f"gpu_run: {name} alone is {size / 2**20:.1f} MiB, over the {limit / 2**20:.1f} MiB a "
                             "returned file may hold")
        for i, (used, members) in enumerate(bins):
            if used + size <= limit:
                bins[i] = (used + size, members + [(name, files)])
                break
        else:
            bins.append((size, [(name, files)]))
    where = {}
    for i, (_, members) in enumerate(bins, 1):
        tar_name = f"models-{i}.tar"
        with tarfile.open(out / tar_name, "w") as t:
            for name, files in members:
                for p in files:
                    t.add(p, arcname=p.name)
                where[name] = tar_name
    return where


def check_returns(out: Path) -> dict[str, Any]:
    """The return limits: at most 8 files of at most 16 MiB, plain names, no folder deeper than 2."""
    files = [p for p in out.rglob("*") if p.is_file()]
    deep = [str(p.relative_to(out)) for p in files if len(p.relative_to(out).parts) > 3]
    bad = [str(p.relative_to(out)) for p in files if not all(NAME_OK.match(s) for s in p.relative_to(out).parts)]
    big = [str(p.relative_to(out)) for p in files if p.stat().st_size > MAX_FILE_BYTES]
    total = sum(p.stat().st_size for p in files)
    return {"files": len(files), "bytes": total, "max_file_bytes": max((p.stat().st_size for p in files), default=0),
            "too_big": big, "too_deep": deep, "bad_names": bad,
            "ok": len(files) <= MAX_FILES and not big and not deep and not bad and total <= 64 * 2**20}


def model_summary(card: Any, bundle_name: str | None) -> dict[str, Any]:
    """One model's line in results.json."""
    t = card.training
    s = card.split
    head = card.headline()
    return {
        "name": card.name, "task": card.task, "domain": card.domain, "arch": card.arch, "encoder": card.encoder,
        "input": card.preprocessing.size_text, "bundle": bundle_name, "sha256": card.sha256,
        "minutes": round((t.wall_time_s or 0) / 60, 2),
        "train_minutes": round(float(card.extra.get("train_time_s") or 0) / 60, 2),
        "epochs": t.epochs, "best_epoch": t.best_epoch, "stop_reason": card.extra.get("stop_reason"),
        "device": card.provenance.device,
        "split": {"method": s.method, "fold": s.fold, "n_splits": s.n_splits, "seed": s.seed,
                  "n_train": s.n_train, "n_val": s.n_val},
        "headline": head.describe() if head else None,
        "metrics": [m.describe() for m in card.metrics],
    }


def bench_pair(members: list, images: list, tta: str, device: str, n_naive: int, log: Log) -> dict[str, Any]:
    """The engine (twice) and the naive loop over the same images; ms per image, speed-up, largest difference."""
    import numpy as np

    from lesion.infer.engine import auto_batch_size, predict, predict_naive

    # warm-up with one full batch: allocations and cuDNN's choice of kernels for the shape that is timed
    predict(members, images[:auto_batch_size(device, tta)], tta=tta, device=device)
    runs = []
    fast = None
    for _ in range(2):
        t = time.perf_counter()
        fast = predict(members, images, tta=tta, device=device)
        runs.append(time.perf_counter() - t)
    predict_naive(members, images[:1], tta=tta, device=device)
    t = time.perf_counter()
    slow = predict_naive(members, images[:n_naive], tta=tta, device=device)
    t_slow = time.perf_counter() - t
    ms_fast = 1000 * min(runs) / len(images)
    ms_slow = 1000 * t_slow / n_naive
    diff = float(np.abs(fast.probs[:n_naive] - slow.probs).max())
    log(f"  engine {ms_fast:.2f} ms/image (runs {', '.join(f'{1000 * r / len(images):.2f}' for r in runs)}), "
        f"naive {ms_slow:.2f} ms/image, {ms_slow / ms_fast:.1f}x, max |dp| {diff:.1e}")
    return {"members": [c.name for _, c in members], "tta": tta,
            "images": len(images), "naive_images": n_naive, "batch_size": auto_batch_size(device, tta),
            "engine_ms_per_image": round(ms_fast, 3), "engine_runs_ms_per_image": [round(1000 * r / len(images), 3)
                                                                               for r in runs],
            "naive_ms_per_image": round(ms_slow, 3), "speedup": round(ms_slow / ms_fast, 2),
            "max_abs_prob_diff": diff}


def shipped_style_members(size: int) -> list:
    """bench_ensemble.py's stand-in for the shipped derm ensemble: four untrained timm models of its architectures
    (EfficientNet-Lite0 x 2, ResNet-18, DenseNet-121) at ``size`` px (speed does not depend on the weights)."""
    import torch

    from lesion.card import IMAGENET_MEAN, IMAGENET_STD, ModelCard, Preprocessing
    from lesion.classify.classifier import Classifier
    from lesion.classify.models import ClsModelConfig, create_classifier

    torch.manual_seed(0)
    out = []
    for i, arch in enumerate(["efficientnet_lite0", "efficientnet_lite0", "resnet18", "densenet121"]):
        card = ModelCard(name=f"{arch}#{i}", task="classification", arch=arch, classes=("melanoma",),
                         target="melanoma", preprocessing=Preprocessing(size, IMAGENET_MEAN, IMAGENET_STD,
                                                                        center_crop=True))
        net = Classifier(create_classifier(ClsModelConfig(arch, num_classes=1, size=size))).eval()
        # a fixed identity: without one every predict() hashes the 25M parameters (copied back from the GPU)
        # inside the timed region (0.4 ms per image of 256 measured on a CPU: a fifth of the 2 ms target)
        net.weights_sha256 = f"untrained-{arch}-{i}-seed0"
        out.append((net, card))
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--smoke", action="store_true", help="the miniature CPU run")
    p.add_argument("--rehearse", action="store_true",
                   help="the full run's sizes and code path on any device, with 48 images per set, one epoch and "
                        "a 4-image timing (a check of the full path on a CPU; its figures mean nothing)")
    p.add_argument("--pack", required=True, help="the pack's folder")
    p.add_argument("--work", required=True, help="scratch folder (data, models before bundling)")
    p.add_argument("--out", required=True, help="where the returned files go (created; must be empty)")
    p.add_argument("--minutes", type=float, default=None, help="whole-run budget (default 7.5, smoke 3)")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    p.add_argument("--skip", default="", help="comma list of stages to skip: kfold, derm_unet, lung_unet, bench")
    a = p.parse_args(argv)
    pack, work, out = Path(a.pack), Path(a.work), Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    if any(out.iterdir()):
        print(f"gpu_run: {out} is not empty", file=sys.stderr)
        return 2
    plan = SMOKE if a.smoke else FULL
    if a.rehearse:
        plan = dataclasses.replace(FULL, max_images=48, cls_epochs=1, derm_epochs=1, lung_epochs=1, bench_n=4,
                                   bench_naive_n=2)
    if a.minutes:
        plan = dataclasses.replace(plan, total_minutes=a.minutes)
    skip = {s.strip() for s in a.skip.split(",") if s.strip()}
    log = Log(out / "run.log")
    started = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
    deadline = time.perf_counter() + plan.total_minutes * 60
    results: dict[str, Any] = {"smoke": a.smoke, "rehearsal": a.rehearse, "started": started, "plan": dataclasses.asdict(plan),
                               "stages_s": {}, "models": [], "errors": [], "notes": [
        "pooled out-of-fold AUC: each member's best epoch is chosen on its own validation fold (as the CPU recipe "
        "does), so the figure leans optimistic",
        "lung U-Net IoU / Dice 'at native size': at the packed X-rays' size (grey JPEG q90, long side <= 512 px) "
        "with the masks resized by nearest neighbour, not at the originals' resolution",
        "naive loop: plain fp32 on the device (no autocast, no channels_last); the engine: bf16 autocast and "
        "channels_last on CUDA, images preprocessed and their views built on the CPU"]}
    written: list[tuple[str, list[Path], Any]] = []  # (name, files, card), each added as soon as it is trained

    def on_term(signum, frame):  # the run's time limit (run.sh's timeout): return what is finished
        results["errors"].append({"stage": "run", "error": f"stopped by signal {signum} (the time limit); what "
                                                           "finished is returned"})
        raise SystemExit(finish(out, results, written, log))

    signal.signal(signal.SIGTERM, on_term)

    def stage(name: str, fn: Callable[[], Any]) -> Any:
        if name in skip:
            log(f"== {name}: skipped")
            return None
        log(f"== {name}")
        t = time.perf_counter()
        try:
            return fn()
        except Exception as e:  # noqa: BLE001 - one failed stage must not lose the others' results
            tb = traceback.format_exc()
            log(f"!! {name} failed: {type(e).__name__}: {e}\n{tb}")
            results["errors"].append({"stage": name, "error": f"{type(e).__name__}: {e}",
                                      "traceback": tb.strip().splitlines()[-6:]})
            return None
        finally:
            results["stages_s"][name] = round(time.perf_counter() - t, 1)
            log(f"   {name}: {results['stages_s'][name]:.1f} s")
            if name != "bench":  # the last stage is followed by the final write
                finish(out, results, written, log, final=False)

    def minutes_left(reserve: float) -> float:
        return (deadline - time.perf_counter()) / 60 - reserve

    def budget(planned: float, reserve: float) -> float:
        """Training minutes for a stage: its plan, cut so that the stages after it (``reserve``) still fit."""
        if planned <= 0:
            return 0.0
        return round(max(0.1, min(planned, minutes_left(reserve))), 2)

    from importlib import metadata

    for dist in ("torch", "timm", "huggingface_hub", "segmentation-models-pytorch", "numpy", "scikit-learn"):
        try:
            log(f"{dist} {metadata.version(dist)}")
        except metadata.PackageNotFoundError:
            log(f"{dist}: not installed")
    try:  # the machine's own versions of torch / timm / huggingface_hub meet smp and lesion here first
        import torch

        import lesion
        from lesion.data.labels import record_label
        from lesion.data.spec import open_data
        from lesion.device import describe_device
        from lesion.train.cls import ClsTrainConfig, recipe_values, split_records
        from lesion.train.gpu import (GpuOptions, cls_preprocessing, pooled_oof_auc, train_classifier_gpu,
                                      train_segmentation_gpu, upload)
        from lesion.train.seg import SegTrainConfig
        from lesion.weights import write_card
        from lesion.zoo import load_model
    except Exception as e:  # noqa: BLE001 - say why in results.json instead of a bare traceback
        tb = traceback.format_exc()
        log(f"!! imports failed: {type(e).__name__}: {e}\n{tb}")
        results["errors"].append({"stage": "imports", "error": f"{type(e).__name__}: {e}",
                                  "traceback": tb.strip().splitlines()[-6:]})
        return finish(out, results, written, log)

    if a.threads > 0:
        torch.set_num_threads(a.threads)
    cuda = torch.cuda.is_available() and not a.smoke
    if not (a.smoke or a.rehearse) and not cuda:
        log("gpu_run: no CUDA GPU here; the full run is for the GPU machine (use --smoke on a CPU)")
        return 2
    device = "cuda" if cuda else "cpu"
    if cuda:
        torch.backends.cudnn.benchmark = True
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    workers = min(16, os.cpu_count() or 1) if cuda else 1
    opts = dict(workers=workers, eval_batch=plan.eval_batch)
    suffix = "_smoke" if a.smoke else "_rehearsal" if a.rehearse else ""
    lesion_file = Path(lesion.__file__).resolve()
    results.update({
        "device": describe_device(device),
        "lesion_from_pack": str(lesion_file).startswith(str((pack / "code").resolve())),
        "versions": {"python": platform.python_version(), "torch": torch.__version__,
                     "cuda": torch.version.cuda, "cudnn": torch.backends.cudnn.version() if cuda else None},
        "pack": json.loads((pack / "manifest.json").read_text()) if (pack / "manifest.json").is_file() else None,
    })
    for mod in ("timm", "segmentation_models_pytorch", "numpy"):
        try:
            results["versions"][mod] = __import__(mod).__version__
        except Exception as e:  # noqa: BLE001
            results["versions"][mod] = f"missing ({type(e).__name__})"
    log(f"device {results['device']}; torch {torch.__version__}; lesion from {lesion_file.parent}")
    models_dir = work / "models"
    models_dir.mkdir(parents=True, exist_ok=True)
    data_dir = work / "data"

    # ---- 1. data
    def unpack():
        n = safe_extract(pack / "data.zip", data_dir)
        ham, cxr = open_data(str(data_dir / "HAM10000")), open_data(str(data_dir / "ChestXrayMasksAndLabels"))
        log(f"unpacked {n} files; {ham.name}: {len(ham.records)} images; {cxr.name}: {len(cxr.records)} X-rays")
        results["data"] = {"HAM10000": len(ham.records), "ChestXrayMasksAndLabels": len(cxr.records)}
        return ham, cxr

    got = stage("unpack", unpack)
    if got is None:
        return finish(out, results, written, log)
    ham, cxr = got

    # ---- 2. K-fold ensemble
    reserve_after_kfold = plan.derm_minutes + plan.lung_minutes + 1.5 if not a.smoke else 0.0

    def kfold():
        base = ClsTrainConfig(**{**recipe_values("seed003"), "recipe": "seed003", "data": str(data_dir / "HAM10000"),
                                 "epochs": plan.cls_epochs, "patience": plan.cls_patience,
                                 "batch_size": plan.cls_batch, "n_splits": plan.folds, "device": device,
                                 "runs_dir": "", "out": "", "size": plan.cls_hw[0], "max_images": plan.max_images})
        gopts = GpuOptions(hw=plan.cls_hw, **opts)
        prep = cls_preprocessing(base, plan.cls_hw)
        every = split_records(ham, base)  # fold 0: its train + val are every image any fold uses
        labelled = every.train + every.val
        t = time.perf_counter()
        table = upload(labelled, prep, device, with_masks=True, workers=workers)
        log(f"uploaded {len(table)} images at {prep.size_text} ({table.nbytes() / 2**20:.0f} MB) in "
            f"{time.perf_counter() - t:.1f} s")
        cards = []
        for fold in range(plan.folds):
            left_members = plan.folds - fold
            per = budget(plan.cls_minutes, reserve_after_kfold + (left_members - 1) * plan.cls_minutes * 0.5)
            name = f"derm_kfold_multitask_lite0_gpu_f{fold}{suffix}"
            cfg = dataclasses.replace(base, fold=fold, name=name, max_minutes=per,
                                      command=f"bench/gpu/run.sh{' --smoke' if a.smoke else ''} (gpu_run.py: seed003 "
                                              f"fold {fold} of {plan.folds}, {prep.size_text}, {per} min)")
            card = train_classifier_gpu(cfg, models_dir / name, dataset=ham, opts=gopts, data=table, log=log)
            cards.append(card)
            written.append((card.name, [models_dir / f"{card.name}.safetensors", models_dir / f"{card.name}.json"],
                            card))
            log(f"fold {fold}: {card.metric('auc').describe() if card.metric('auc') else 'no AUC'} "
                f"({card.training.epochs} epochs, {card.extra.get('stop_reason')})")
        labels = {r.id: record_label(r, "melanoma") for r in labelled}
        pooled, facts = pooled_oof_auc(cards, lambda ids: [labels[i] for i in ids])
        results["kfold"] = {"pooled_oof": pooled.describe() if pooled else None, **facts,
                            "auc": pooled.value if pooled else None, "ci": list(pooled.ci) if pooled and pooled.ci else None}
        final = []
        for card in cards:
            if pooled is not None:
                card = card.replace(metrics=(pooled, *card.metrics))
                write_card(models_dir / card.name, card)
            final.append(card)
            at = next(i for i, (n, _, _) in enumerate(written) if n == card.name)
            written[at] = (written[at][0], written[at][1], card)  # the card with the pooled headline
        log(f"pooled out-of-fold: {results['kfold']['pooled_oof']}")
        del table
        if cuda:
            torch.cuda.empty_cache()
        return final

    kfold_cards = stage("kfold", kfold) or []

    # ---- 3. U-Nets
    def unet(key: str, ds, hw, epochs, patience, batch, planned, reserve):
        name = f"{'derm' if ds.domain == 'derm' else 'lung'}_unet_efficientnet_lite0_gpu{suffix}"
        minutes = budget(planned, reserve)
        cfg = SegTrainConfig(data=(str(ds.root) if getattr(ds, "root", None) else ds.name,), arch="unet",
                             encoder="tu-efficientnet_lite0", init="imagenet-lite-port", size=hw[0], epochs=epochs,
                             batch_size=batch, patience=patience, lr=1e-3, max_minutes=minutes, device=device,
                             runs_dir="", name=name, max_images=plan.max_images,
                             command=f"bench/gpu/run.sh{' --smoke' if a.smoke else ''} (gpu_run.py: {key}, "
                                     f"{hw[0]}x{hw[1]}, {minutes} min)")
        card = train_segmentation_gpu(cfg, models_dir / name, GpuOptions(hw=hw, **opts), datasets=[ds], log=log)
        written.append((card.name, [models_dir / f"{card.name}.safetensors", models_dir / f"{card.name}.json"], card))
        log(f"{name}: {card.headline().describe() if card.headline() else '-'}")
        if cuda:
            torch.cuda.empty_cache()
        return card

    stage("derm_unet", lambda: unet("derm_unet", ham, plan.derm_hw, plan.derm_epochs, plan.derm_patience,
                                    plan.derm_batch, plan.derm_minutes, plan.lung_minutes + 1.2 if not a.smoke else 0))
    stage("lung_unet", lambda: unet("lung_unet", cxr, plan.lung_hw, plan.lung_epochs, plan.lung_patience,
                                    plan.lung_batch, plan.lung_minutes, 1.0 if not a.smoke else 0))

    # ---- 4. ensemble x d4 on the device
    def bench():
        from lesion.data.io import read_image

        if cuda:
            torch.cuda.reset_peak_memory_stats()  # the bench's own peak, not the U-Nets' training
        images = [read_image(r.image_path) for r in ham.records[:plan.bench_n]]
        res = {"device": describe_device(device), "targets": {"engine_ms_per_image_at_256": 2.0, "speedup": 5.0}}
        log(f"shipped-style ensemble of 4 at {plan.bench_size} px, d4, {len(images)} images")
        res["shipped_style"] = bench_pair(shipped_style_members(plan.bench_size), images, "d4", device,
                                          plan.bench_naive_n, log)
        res["shipped_style"]["size"] = plan.bench_size
        s = res["shipped_style"]
        res["targets_met"] = {"engine_ms": s["engine_ms_per_image"] <= 2.0, "speedup": s["speedup"] >= 5.0}
        if kfold_cards:
            members = [load_model(str(models_dir / c.name)) for c in kfold_cards]
            log(f"trained K-fold ensemble of {len(members)} at {kfold_cards[0].preprocessing.size_text}, d4")
            res["kfold_trained"] = bench_pair(members, images, "d4", device, plan.bench_naive_n, log)
            res["kfold_trained"]["size"] = kfold_cards[0].preprocessing.size_text
        if cuda:
            res["max_memory_allocated_gib"] = round(torch.cuda.max_memory_allocated() / 2**30, 2)
        results["bench"] = res

    stage("bench", bench)
    return finish(out, results, written, log)


def finish(out: Path, results: dict, written: list, log: Log, final: bool = True) -> int:
    """Bundle the models, write results.json, check the return limits; exit code 1 when a stage failed.

    ``final=False``: the snapshot written after every stage (the log stays open), so a run stopped by a time limit
    still returns what it finished."""
    where: dict[str, str] = {}
    for old in out.glob("models-*.tar"):  # bundled again from scratch: never a stale group
        old.unlink()
    try:
        where = bundle([(n, files) for n, files, _ in written], out)
    except (Exception, SystemExit) as e:  # noqa: BLE001
        results["errors"].append({"stage": "bundle", "error": f"{type(e).__name__}: {e}"})
    results["models"] = [model_summary(card, where.get(name)) for name, _, card in written]
    results["minutes_total"] = round(log.elapsed() / 60, 2)
    results["finished"] = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds") if final else None
    log(f"{'done' if final else 'snapshot'} in {results['minutes_total']} min; {len(results['models'])} models, "
        f"{len(results['errors'])} errors")
    (out / "results.json").write_text(json.dumps(results, indent=1, default=str) + "\n")
    results["returns"] = check_returns(out)
    results["outputs"] = sorted((p.name, p.stat().st_size) for p in out.iterdir() if p.is_file())
    (out / "results.json").write_text(json.dumps(results, indent=1, default=str) + "\n")
    if not results["returns"]["ok"]:
        log(f"!! OUT breaks the return limits: {results['returns']}")
    if final:
        log.f.close()
    return 1 if results["errors"] or not results["returns"]["ok"] else 0


if __name__ == "__main__":
    raise SystemExit(main())
