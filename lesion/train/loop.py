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
  new best (when a run folder and a card are given), and loaded back into the model at the end.

The trainer then scores the best weights, builds the final :class:`~lesion.card.ModelCard` with
:func:`final_card` and saves it with :func:`save_run`. :func:`run_provenance` is the one place that records
the command, library versions and device.
"""
from __future__ import annotations

import csv
import dataclasses
import json
import math
import platform
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Protocol, Sequence

from lesion.card import Metric, ModelCard, Provenance, Split, Training
from lesion.device import describe_device
from lesion.errors import ConfigError
from lesion.train.common import EarlyStopping, Timer
from lesion.train.ema import make_ema
from lesion.train.options import apply_threads
from lesion.weights import read_card, save_checkpoint

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


def write_history_csv(path: Path, history: Sequence[Mapping[str, Any]]) -> None:
    """Write every history row to ``path`` (columns: the union of the rows' keys, in first-seen order)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    cols: list[str] = []
    for row in history:
        cols += [k for k in row if k not in cols]
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=cols)
        w.writeheader()
        w.writerows(history)


def _state_copy(model: Any) -> dict[str, Any]:
    return {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}


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
    """
    if cfg.epochs < 1:
        raise ConfigError(f"epochs must be >= 1, got {cfg.epochs}.")
    say = log or (lambda s: None)
    clock = clock or Timer()
    spe = max(int(recipe.steps_per_epoch), 1)
    total = cfg.epochs * spe
    run = Path(run_dir) if run_dir else None
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
                save_checkpoint(best_state, run / "best", running, overwrite=True)
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
    if str(out).endswith(("/", "\\")) or p.is_dir():
        return p / default_name
    return p


def run_summary(card: ModelCard) -> dict[str, Any]:
    """What every ``lesion train`` command prints last (one JSON line): name, path, run length and each metric."""
    return {"name": card.name, "path": card.path, "epochs": card.training.epochs, "best_epoch": card.training.best_epoch,
            "wall_time_s": card.training.wall_time_s, "metrics": [m.describe() for m in card.metrics]}


def check_out(stem: str | Path | None, overwrite: bool) -> None:
    """Refuse, before any training, to replace an existing checkpoint unless ``overwrite``.

    Raises:
        ConfigError: ``stem.safetensors`` or ``stem.json`` exists.
    """
    if not stem or overwrite:
        return
    s = Path(stem)
    for p in (s.with_suffix(".safetensors"), s.with_suffix(".json")):
        if p.exists():
            raise ConfigError(f"{p} already exists; choose another --out or pass --overwrite.")


def save_run(model: Any, stem: str | Path, card: ModelCard, overwrite: bool) -> ModelCard:
    """Save the weights and card (:func:`lesion.weights.save_checkpoint`) and return the card as written (with ``path``)."""
    wpath = save_checkpoint(model, stem, card, overwrite=overwrite)
    return read_card(wpath.with_suffix(".json"), wpath)


def run_command(train: Callable[..., ModelCard], config_from_argv: Callable[[list[str]], tuple[Any, int]],
                argv: Sequence[str] | None) -> int:
    """The body of every ``lesion train …`` command: parse, set the threads, train with a tqdm bar over the run's
    optimiser steps and one log line per epoch, and print a last JSON line with the card's summary."""

    from tqdm import tqdm

    cfg, threads = config_from_argv(list(sys.argv[1:] if argv is None else argv))
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

