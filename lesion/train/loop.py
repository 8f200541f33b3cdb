"""The one training loop: epochs, wall-time budget, early stopping, EMA, validation, history, progress, checkpoints.

The segmentation, classification and chest X-ray trainers differ in their data, model, loss and metrics,
not in how an epoch follows another. Each builds a :class:`Recipe` (its model, optimiser, one epoch of
training, one validation) and hands it to :func:`fit`, which owns everything else:

* **epochs** up to :attr:`LoopConfig.epochs`; after each one a **history row**
  ``{"epoch", train_*, val_*, "lr", "epoch_s", "time_s"}`` (floats rounded to 5 decimals), also written to
  ``<run_dir>/log.csv`` when a run folder is given;
* **early stopping** on :attr:`LoopConfig.monitor` (a history key, higher is better; when it is not finite,
  e.g. an AUC on a validation set with one class, ``-val_loss`` is watched instead), ``patience`` epochs
  without a gain of ``min_delta`` stop the run (0 = never);
* a **wall-time budget** (``max_minutes``): training stops after the epoch that passes it; the clock counts
  training only (pass the same clock to :func:`lesion.train.common.cosine_schedule` so the learning rate
  follows it);
* an **EMA** of the weights when ``ema_decay > 0`` (:func:`lesion.train.ema.make_ema`), updated after every
  optimiser step; validation, the best state and the saved weights are then the EMA's;
* **progress** as ``progress(done, total)`` in one unit everywhere: **optimiser steps** (batches) of the whole
  run, ``total = epochs * steps_per_epoch``; calls are monotone, and the last one is ``(total, total)`` even
  when the run stops early;
* the **best epoch's weights**: kept in memory, written to ``<run_dir>/best`` with a running card on every
  new best (when a run folder and a card are given), and loaded back into the model at the end;
* a run whose first epoch took **no optimiser step** stops with a :class:`~lesion.errors.DataError` before
  anything is written.

**Where a run writes** (:func:`plan_destination`, the one rule of all trainers): every run gets a folder of
its own, ``<runs_dir>/<seg|cls|cxr>/<name>-<UTC time>/`` (``-2``, ``-3`` … if that folder exists), which holds
``log.csv``, the running best ``best.safetensors`` + ``best.json`` and, without ``--out``, the final
``<name>.safetensors`` + ``<name>.json``. ``--out`` names the checkpoint elsewhere (a stem, or a folder for the
default name). An existing checkpoint or card at the destination is refused before any data is read unless
``overwrite``; a checkpoint in lesion-lab's shipped ``weights/`` folder is never replaced, ``overwrite`` or
not. Every file is written through a temporary file and a rename (:func:`write_csv_atomic`,
:func:`save_pair`), and a card is only ever next to the weights it describes: a kill at any moment leaves the
old pair, the new pair, or no card, never a half file.

The trainer then scores the best weights, builds the final :class:`~lesion.card.ModelCard` with
:func:`final_card` and saves it with :func:`save_run`. :func:`run_provenance` is the one place that records
the command, library versions and device.
"""
from __future__ import annotations

import csv
import dataclasses
import datetime as _dt
import io
import json
import math
import os
import platform
import shutil
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Protocol, Sequence

from lesion.card import Metric, ModelCard, Provenance, Split, Training
from lesion.device import describe_device
from lesion.errors import ConfigError, DataError
from lesion.paths import check_file_target, check_folder_target, check_writable_folder, write_atomic
from lesion.train.common import EarlyStopping, Timer, to_channels_last
from lesion.train.ema import make_ema
from lesion.train.options import apply_threads
from lesion.weights import read_card, save_checkpoint

#: lesion-lab's own ``weights/`` folder (the shipped checkpoints), whatever ``$LESION_WEIGHTS_DIR`` says:
#: no training run ever writes over a checkpoint in it.
SHIPPED_WEIGHTS_DIR = Path(__file__).resolve().parent.parent.parent / "weights"

Progress = Callable[[int, int], None]
Log = Callable[[str], None]

#: Why :func:`fit` stopped.
STOP_REASONS = ("epochs", "patience", "time")


class Recipe(Protocol):
    """What a task plugs into :func:`fit`.

    Attributes:
        model: the network being trained (a ``torch.nn.Module``, on its device).
        optimizer: its optimiser (the history's ``lr`` is its first parameter group's).
        steps_per_epoch: optimiser steps of one epoch (the unit of ``progress``).
    """

    model: Any
    optimizer: Any
    steps_per_epoch: int

    def train_epoch(self, epoch: int, after_step: Callable[[], None]) -> dict[str, float]:
        """Train one epoch (1-based), calling ``after_step()`` after every optimiser step; returns ``train_*`` values."""
        ...

    def validate(self, model: Any) -> dict[str, float]:
        """Score ``model`` (the trained model or its EMA) on the validation data; returns ``val_*`` values."""
        ...


@dataclass(frozen=True)
class LoopConfig:
    """How long to train and what to watch.

    Attributes:
        epochs: maximum epochs.
        monitor: history key watched for early stopping and the best epoch (higher is better).
        patience: epochs without improvement before stopping (0 = never stop early).
        max_minutes: wall-time budget of training; stop after the epoch that passes it (0 = none).
        ema_decay: EMA of the weights (0 = off).
        min_delta: a gain smaller than this is not an improvement.
    """

    epochs: int
    monitor: str
    patience: int = 0
    max_minutes: float = 0.0
    ema_decay: float = 0.0
    min_delta: float = 1e-4


@dataclass
class FitResult:
    """What :func:`fit` returns (the model itself then holds the best weights)."""

    history: list[dict[str, Any]]
    best_epoch: int
    best_score: float
    best_state: dict[str, Any] = field(repr=False)
    stop_reason: str
    train_time_s: float

    @property
    def epochs(self) -> int:
        return len(self.history)

    @property
    def best_row(self) -> dict[str, Any]:
        return self.history[self.best_epoch - 1]


def monitor_score(row: Mapping[str, Any], key: str) -> float:
    """The value early stopping watches: ``row[key]``, or ``-row["val_loss"]`` when that is missing or not finite."""
    v = row.get(key)
    if v is not None and math.isfinite(float(v)):
        return float(v)
    return -float(row.get("val_loss", math.inf))


def _round(v: Any) -> Any:
    return round(v, 5) if isinstance(v, float) and math.isfinite(v) else v


#: Write bytes atomically: :func:`lesion.paths.write_atomic` (through :func:`lesion.paths.atomic_target`).
write_bytes_atomic = write_atomic


def write_csv_atomic(path: str | Path, rows: Sequence[Mapping[str, Any]]) -> Path:
    """Write ``rows`` as CSV (columns: the union of the rows' keys, in first-seen order), atomically
    (:func:`lesion.paths.atomic_target`)."""
    cols: list[str] = []
    for row in rows:
        cols += [k for k in row if k not in cols]
    buf = io.StringIO(newline="")
    w = csv.DictWriter(buf, fieldnames=cols)
    w.writeheader()
    w.writerows(rows)
    return write_bytes_atomic(path, buf.getvalue().encode())


def write_history_csv(path: Path, history: Sequence[Mapping[str, Any]]) -> None:
    """Write every history row to ``path`` atomically (:func:`write_csv_atomic`)."""
    write_csv_atomic(path, history)


def save_pair(model: Any, stem: str | Path, card: ModelCard, overwrite: bool = False) -> ModelCard:
    """Save weights + card at ``stem`` so that a kill at any moment never leaves a card beside other weights.

    :func:`lesion.weights.save_checkpoint` writes both files into a fresh temporary folder beside ``stem``;
    they are then moved into place with renames: the old card (when replacing) goes first, then the weights,
    then the new card. Without ``overwrite`` the files are linked into place, which fails instead of replacing
    a file another process made in the meantime.

    Returns:
        the card as written (with ``path``).

    Raises:
        ConfigError: a file exists and ``overwrite`` is False, or the folder cannot be written.
    """
    stem = Path(stem)
    try:
        stem.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{stem.name}.", suffix=".tmp", dir=stem.parent))
    except OSError as e:
        raise ConfigError(f"Cannot write into {stem.parent}: {e.strerror or e}.") from e
    try:
        w_tmp = save_checkpoint(model, tmp / stem.name, card, overwrite=False)
        c_tmp = w_tmp.with_suffix(".json")
        w_dst, c_dst = stem.parent / w_tmp.name, stem.parent / c_tmp.name
        if overwrite:
            c_dst.unlink(missing_ok=True)  # never a card that describes other weights
            os.replace(w_tmp, w_dst)
            os.replace(c_tmp, c_dst)
        else:
            for src, dst in ((w_tmp, w_dst), (c_tmp, c_dst)):
                try:
                    os.link(src, dst)  # create, never replace
                except FileExistsError:
                    raise ConfigError(f"{dst} already exists; choose another --out or pass --overwrite.") from None
                except OSError:  # a file system without hard links
                    if dst.exists():
                        raise ConfigError(f"{dst} already exists; choose another --out or pass --overwrite.") from None
                    os.replace(src, dst)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return read_card(c_dst, w_dst)


def _state_copy(model: Any) -> dict[str, Any]:
    # contiguous: a channels_last network's 4-D weights are strided; the checkpoint stores plain row-major tensors
    return {k: v.detach().to("cpu", copy=True).contiguous() for k, v in model.state_dict().items()}


def _describe(row: Mapping[str, Any], epochs: int, improved: bool) -> str:
    vals = " ".join(f"{k} {v:.4f}" for k, v in row.items()
                    if k.startswith(("train_", "val_")) and isinstance(v, float) and ":" not in k)
    return f"epoch {row['epoch']}/{epochs}: {vals} | {row['epoch_s']:.0f}s{' *' if improved else ''}"


def fit(
    recipe: Recipe,
    cfg: LoopConfig,
    clock: Callable[[], float] | None = None,
    run_dir: str | Path | None = None,
    card: ModelCard | None = None,
    progress: Progress | None = None,
    log: Log | None = None,
) -> FitResult:
    """Train ``recipe`` for up to ``cfg.epochs`` epochs and leave the best epoch's weights in ``recipe.model``.

    Args:
        recipe: the task's model, optimiser, epoch and validation.
        cfg: epochs, monitored key, patience, budget, EMA.
        clock: seconds since training started (default: a :class:`~lesion.train.common.Timer` started now);
            the time budget and the rows' ``time_s`` read it.
        run_dir: folder for ``log.csv`` and, with ``card``, the running best checkpoint ``best.safetensors``
            (None = neither).
        card: the run's card so far (identity, data, split); the running checkpoint's card is it plus the
            history, with ``extra["status"] = "running"``.
        progress: ``progress(steps_done, total_steps)`` (see the module docstring).
        log: one line per epoch and per stop.

    Raises:
        ConfigError: ``epochs`` < 1.
        DataError: the first epoch took no optimiser step (e.g. fewer training images than one batch);
            nothing is written then.
    """
    if cfg.epochs < 1:
        raise ConfigError(f"epochs must be >= 1, got {cfg.epochs}.")
    say = log or (lambda s: None)
    clock = clock or Timer()
    spe = max(int(recipe.steps_per_epoch), 1)
    total = cfg.epochs * spe
    run = Path(run_dir) if run_dir else None
    to_channels_last(recipe.model)
    ema = make_ema(recipe.model, cfg.ema_decay) if cfg.ema_decay > 0 else None
    stopper = EarlyStopping(cfg.patience, min_delta=cfg.min_delta)
    history: list[dict[str, Any]] = []
    best_state: dict[str, Any] = {}
    state = {"step": 0, "done": 0}
    stop_reason = "epochs"

    def report(done: int) -> None:
        if done > state["done"]:
            state["done"] = done
            if progress is not None:
                progress(done, total)

    for epoch in range(1, cfg.epochs + 1):
        t0 = clock()
        in_epoch = [0]

        def after_step() -> None:
            state["step"] += 1
            in_epoch[0] += 1
            if ema is not None:
                ema.update(recipe.model, step=state["step"])
            report((epoch - 1) * spe + min(in_epoch[0], spe))

        train_values = recipe.train_epoch(epoch, after_step)
        if state["step"] == 0:
            raise DataError("The first epoch took no optimiser step (fewer training images than one batch?); "
                            "nothing was trained or saved. Lower --batch-size or use more images.")
        report(epoch * spe)
        eval_model = ema.module if ema is not None else recipe.model
        val_values = recipe.validate(eval_model)
        row = {"epoch": epoch, **train_values, **val_values, "lr": float(recipe.optimizer.param_groups[0]["lr"]),
               "epoch_s": clock() - t0, "time_s": clock()}
        row = {k: _round(v) for k, v in row.items()}
        history.append(row)
        improved = stopper.step(monitor_score(row, cfg.monitor), epoch)
        if improved:
            best_state = _state_copy(eval_model)
        if run is not None:
            write_history_csv(run / "log.csv", history)
            if improved and card is not None:
                running = card.replace(history=tuple(history), training=dataclasses.replace(
                    card.training, epochs=epoch, best_epoch=epoch), extra={**card.extra, "status": "running"})
                save_pair(best_state, run / "best", running, overwrite=True)
        say(_describe(row, cfg.epochs, improved))
        if stopper.should_stop:
            stop_reason = "patience"
            say(f"early stop: no {cfg.monitor} gain for {cfg.patience} epochs "
                f"(best {stopper.best:.4f} at epoch {stopper.best_epoch})")
            break
        if cfg.max_minutes > 0 and clock() > cfg.max_minutes * 60:
            stop_reason = "time"
            say(f"time limit: {cfg.max_minutes} min reached after epoch {epoch}")
            break
    report(total)
    recipe.model.load_state_dict(best_state)
    recipe.model.eval()
    return FitResult(history=history, best_epoch=stopper.best_epoch, best_score=stopper.best,
                     best_state=best_state, stop_reason=stop_reason, train_time_s=clock())


# ----------------------------------------------------------------------------------------------------------
# Cards
# ----------------------------------------------------------------------------------------------------------
def library_versions() -> dict[str, str]:
    """Versions of python, torch, timm and segmentation_models_pytorch (what rebuilds and reruns a model)."""
    import segmentation_models_pytorch as smp  # heavy: only when a card is written
    import timm
    import torch

    return {"python": platform.python_version(), "torch": torch.__version__, "timm": timm.__version__,
            "segmentation_models_pytorch": smp.__version__}


def run_provenance(command: str, device: Any) -> Provenance:
    """The provenance of a training run: its command line, library versions and device (the one rule of all trainers)."""
    return Provenance(command=command or None, versions=library_versions(), device=describe_device(str(device)))


def config_record(cfg: Any) -> dict[str, Any]:
    """A config dataclass as JSON-ready values (tuples as lists, nested dataclasses as dicts)."""
    def plain(v: Any) -> Any:
        if isinstance(v, Mapping):
            return {k: plain(x) for k, x in v.items()}
        if isinstance(v, (list, tuple)):
            return [plain(x) for x in v]
        return v

    return plain(dataclasses.asdict(cfg))


def training_section(cfg: Any, loss: str, optimizer: str, init_from: str | None = None,
                     recipe: str | None = None) -> Training:
    """The card's :class:`~lesion.card.Training` before the run (epochs, best epoch and time come from :func:`final_card`)."""
    return Training(loss=loss, optimizer=optimizer, config=config_record(cfg), init_from=init_from or None,
                    recipe=recipe or None)


def split_of_sets(sets: Mapping[str, Mapping[str, Any]], seed: int, val_fraction: float | None) -> Split:
    """The :class:`~lesion.card.Split` of a run over several data sets split one by one (``sets``: name -> method,
    n_train, n_val, …, val_ids)."""
    methods = {str(s.get("method")) for s in sets.values() if s.get("method")}
    method = methods.pop() if len(methods) == 1 else "per data set (see sets)"
    return Split(method=method, seed=seed, val_fraction=val_fraction,
                 n_train=sum(int(s.get("n_train", 0)) for s in sets.values()),
                 n_val=sum(int(s.get("n_val", 0)) for s in sets.values()), sets={k: dict(v) for k, v in sets.items()})


def final_card(card: ModelCard, result: FitResult, metrics: Sequence[Metric], wall_time_s: float,
               **extra: Any) -> ModelCard:
    """The finished card: ``card`` plus the run's history, length, best epoch, time, metrics and ``extra`` facts."""
    training = dataclasses.replace(card.training, epochs=result.epochs, best_epoch=result.best_epoch,
                                   wall_time_s=round(wall_time_s, 1))
    return card.replace(history=tuple(result.history), training=training, metrics=tuple(metrics),
                        extra={**card.extra, "train_time_s": round(result.train_time_s, 1),
                               "stop_reason": result.stop_reason, **extra})


def out_stem(out: str | None, default_name: str, default_dir: str | Path | None = None) -> Path | None:
    """Where ``--out`` puts the checkpoint: a stem as given; a folder (existing, or ending in ``/``) gets
    ``default_name`` inside it; empty: ``default_dir / default_name``, or None (not saved) without a default folder."""
    if not out:
        return Path(default_dir) / default_name if default_dir is not None else None
    p = Path(out)
    if not out_names_file(out):
        return p / default_name
    return p.with_suffix("") if p.suffix in (".safetensors", ".json", ".pth", ".pt") else p


def out_names_file(out: str | None) -> bool:
    """True when ``--out`` names the checkpoint itself (a stem), not a folder (existing, or ending in ``/``)."""
    return bool(out) and not (str(out).endswith(("/", "\\")) or Path(str(out)).is_dir())


def run_summary(card: ModelCard) -> dict[str, Any]:
    """What every ``lesion train`` command prints last (one JSON line): name, path, run folder, run length and
    each metric."""
    return {"name": card.name, "path": card.path, "run_dir": card.extra.get("run_dir"),
            "epochs": card.training.epochs, "best_epoch": card.training.best_epoch,
            "wall_time_s": card.training.wall_time_s, "metrics": [m.describe() for m in card.metrics]}


def is_shipped(path: str | Path) -> bool:
    """True when ``path`` is in lesion-lab's own ``weights/`` folder (:data:`SHIPPED_WEIGHTS_DIR`)."""
    try:
        return Path(path).resolve().parent == SHIPPED_WEIGHTS_DIR.resolve()
    except OSError:
        return False


def check_out(stem: str | Path | None, overwrite: bool) -> None:
    """Refuse, before any work, a checkpoint destination that cannot or must not be written.

    Raises:
        ConfigError: ``stem.safetensors`` or ``stem.json`` is a folder or sits under a file; it exists and
            ``overwrite`` is False; or it is a shipped checkpoint (never replaced, ``overwrite`` or not).
    """
    if not stem:
        return
    s = Path(stem)
    targets = (s.with_suffix(".safetensors"), s.with_suffix(".json"))
    for p in targets:
        check_file_target(p)
    existing = [p for p in targets if p.exists()]
    for p in existing:
        if is_shipped(p):
            raise ConfigError(f"{p} is a checkpoint shipped with lesion-lab; training never replaces it "
                              f"(--overwrite included). Choose another --out.")
    if existing and not overwrite:
        raise ConfigError(f"{existing[0]} already exists; choose another --out or pass --overwrite.")


def utc_stamp() -> str:
    """The time of a run folder's name: ``20250101T120000Z`` (UTC)."""
    return _dt.datetime.now(_dt.timezone.utc).strftime("%Y%m%dT%H%M%SZ")


@dataclass
class Destination:
    """Where one training run writes (:func:`plan_destination`).

    Attributes:
        stem: checkpoint stem (``stem.safetensors`` + ``stem.json``); None = the model is not saved.
        run_dir: the run's own folder (``log.csv``, running ``best.*``), created empty by
            :func:`plan_destination`; None = no log.
        overwrite: whether an existing, non-shipped checkpoint at ``stem`` may be replaced.
    """

    stem: Path | None
    run_dir: Path | None
    overwrite: bool = False
    created: tuple[Path, ...] = ()

    @property
    def name(self) -> str | None:
        return self.stem.name if self.stem is not None else None

    def discard_if_empty(self) -> None:
        """Remove the run folder when the run wrote nothing into it (it failed before its first epoch)."""
        for d in (self.run_dir, *reversed(self.created)) if self.run_dir is not None else ():
            try:
                d.rmdir()  # only succeeds on an empty folder
            except OSError:
                return

    def save(self, model: Any, card: ModelCard, log: Log | None = None) -> ModelCard:
        """Save the final checkpoint (:func:`save_pair`, after :func:`check_out` once more) and return its card
        (``extra["run_dir"]``: the run folder); without a stem, the card unsaved."""
        if self.run_dir is not None:
            card = card.replace(extra={**card.extra, "run_dir": str(self.run_dir)})
        if self.stem is None:
            (log or (lambda s: None))("not saved: no --out and no --runs-dir")
            return card
        check_out(self.stem, self.overwrite)
        written = save_pair(model, self.stem, card, overwrite=self.overwrite)
        if self.run_dir is not None:  # the card on disk has the folder's portable name; the caller gets its path
            written = written.replace(extra={**written.extra, "run_dir": str(self.run_dir)})
        return written


def new_run_folder(runs_dir: str | Path, command: str, name: str) -> Path:
    """Create and return ``<runs_dir>/<command>/<name>-<UTC time>/`` (``-2``, ``-3`` … when it exists).

    Created with ``mkdir(exist_ok=False)``, so two runs started in the same second never share a folder.

    Raises:
        ConfigError: ``runs_dir`` is a file or cannot be written.
    """
    return _new_run_folder(runs_dir, command, name)[0]


def _new_run_folder(runs_dir: str | Path, command: str, name: str) -> tuple[Path, tuple[Path, ...]]:
    """:func:`new_run_folder`, and the folders above it that it had to create (outermost first)."""
    check_folder_target(runs_dir, "--runs-dir")
    base = Path(runs_dir) / command
    created = tuple(p for p in reversed((base, *base.parents)) if not p.exists())
    stamp = utc_stamp()
    try:
        base.mkdir(parents=True, exist_ok=True)
        for i in range(1, 1000):
            p = base / (f"{name}-{stamp}" if i == 1 else f"{name}-{stamp}-{i}")
            try:
                p.mkdir()
                return p, created
            except FileExistsError:
                continue
    except OSError as e:
        raise ConfigError(f"--runs-dir: cannot create a run folder in {base}: {e.strerror or e}.") from e
    raise ConfigError(f"--runs-dir: too many run folders named {name}-{stamp} in {base}.")


def check_paths(out: str, runs_dir: str) -> None:
    """The path checks of :func:`plan_destination` that need no name: ``--runs-dir`` is not a file, and ``--out``
    is not inside a file. Trainers call it first, before opening the data.

    Raises:
        ConfigError: naming the path.
    """
    if runs_dir:
        check_folder_target(runs_dir, "--runs-dir")
    if out:
        check_folder_target(Path(out).parent, "--out")


#: Free space a training run needs where it writes (the running best checkpoint, the final one, logs); the shipped
#: checkpoints are at most 15 MB each.
TRAIN_FREE_BYTES = 64 * 1024 * 1024


def plan_destination(command: str, name: str, out: str, runs_dir: str, overwrite: bool) -> Destination:
    """Check and reserve where a run writes, before any data is read (the rule is in the module docstring).

    Args:
        command: ``seg``, ``cls`` or ``cxr`` (the run folder's parent).
        name: the checkpoint's name when ``out`` does not give one.
        out: ``--out``: a stem, a folder (for ``name``), or empty (the run folder).
        runs_dir: root of the run folders; empty = no run folder (then only ``out`` is written).
        overwrite: replace an existing checkpoint at ``out`` (never a shipped one).

    Returns:
        the :class:`Destination`; its run folder exists (empty): call
        :meth:`Destination.discard_if_empty` when the run fails.

    Raises:
        ConfigError: an existing destination without ``overwrite``, a shipped checkpoint, a folder where a file
            goes or a file where a folder goes.
    """
    stem = out_stem(out, name) if out else None
    if stem is not None:
        check_out(stem, overwrite)
    elif name == "best" and runs_dir:
        raise ConfigError("--name best is the run folder's running checkpoint (best.safetensors); choose another name.")
    if runs_dir:
        check_folder_target(runs_dir, "--runs-dir")
    # before any data is read: the destinations take files and have room for the checkpoints (a full disk
    # would otherwise fail only at the end of the training)
    if stem is not None:
        check_writable_folder(stem.parent, "--out", TRAIN_FREE_BYTES)
    if runs_dir:
        check_writable_folder(runs_dir, "--runs-dir", TRAIN_FREE_BYTES)
    run_dir, created = (_new_run_folder(runs_dir, command, stem.name if stem is not None else name) if runs_dir
                        else (None, ()))
    if stem is None and run_dir is not None:
        stem = run_dir / name
    return Destination(stem=stem, run_dir=run_dir, overwrite=overwrite, created=created)


def save_run(model: Any, stem: str | Path, card: ModelCard, overwrite: bool) -> ModelCard:
    """Save the weights and card (:func:`save_pair`) and return the card as written (with ``path``)."""
    return save_pair(model, stem, card, overwrite=overwrite)


def run_command(train: Callable[..., ModelCard], config_from_argv: Callable[[list[str]], tuple[Any, int]],
                argv: Sequence[str] | None) -> int:
    """The body of every ``lesion train …`` command: parse, set the threads, train with a tqdm bar over the run's
    optimiser steps and one log line per epoch, and print a last JSON line with the card's summary."""

    from tqdm import tqdm

    cfg, threads = config_from_argv(list(sys.argv[1:] if argv is None else argv))
    if not getattr(cfg, "runs_dir", "x") and not getattr(cfg, "out", ""):
        raise ConfigError("--runs-dir '' needs --out: without a run folder and without --out the model would be "
                          "saved nowhere.")
    apply_threads(threads)
    bar = tqdm(desc="train", unit="step", mininterval=2.0, file=sys.stderr)

    def progress(done: int, total: int) -> None:
        bar.total = total
        bar.n = done
        bar.refresh()

    try:
        card = train(cfg, progress=progress, log=lambda s: tqdm.write(s, file=sys.stderr))
    finally:
        bar.close()
    print(json.dumps(run_summary(card), default=float))
    return 0

