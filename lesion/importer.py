"""``lesion import FILE …``: a model trained elsewhere becomes a member like the shipped ones.

Example::

    lesion import my_resnet.pth --arch resnet18 --classes melanoma --size 224 --domain derm --name my_resnet
    lesion import exported.onnx --classes melanoma --size 224x224 --mean 0.5,0.5,0.5 --std 0.5,0.5,0.5
    lesion import traced.pt --classes nv,mel --size 192x256 --resize squash --target dx7
    lesion evaluate cls --models ~/lesion-models/my_resnet --data ../shared/data/PH2

The file's kind is read from its bytes (:func:`lesion.classify.imported.file_kind`): a state dict (with
``--arch``: any timm name, ``torchvision:NAME`` or ``smp:ARCH/ENCODER``), TorchScript or ONNX. Everything the user
states is checked: the file is loaded, what it tells (an ONNX input shape and output count) is compared with the
statements, and one forward pass on a blank input must give one finite value per class. Then the file is
**copied** (never moved or changed) to ``OUT/NAME.<its suffix>`` beside a card ``OUT/NAME.json`` (schema 2:
``source: imported``, the copy's sha256, the statements). ``OUT`` is ``--out``, else ``$LESION_MODELS_DIR``,
else ``~/lesion-models`` — never the shipped ``weights/``. A wrong statement is one line and exit 2.
"""
from __future__ import annotations

import datetime as dt
import shutil
import sys
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from lesion.card import IMAGENET_MEAN, IMAGENET_STD, RESIZE_MODES, ModelCard, Preprocessing, Provenance
from lesion.classify.imported import OnnxNet, ScriptNet, build_network, file_kind, parse_arch
from lesion.cliutil import OneLineParser, json_line
from lesion.errors import CheckpointError, ConfigError
from lesion.paths import atomic_target, check_out_file, file_digest, user_models_dir
from lesion.train.loop import SHIPPED_WEIGHTS_DIR, is_shipped
from lesion.weights import card_json, load_strict, read_state_file
from lesion.zoo import load_model

DOMAINS = ("derm", "cxr")


def _floats(text: str, option: str, n: int = 3) -> tuple[float, ...]:
    try:
        vals = tuple(float(v) for v in str(text).split(","))
    except ValueError:
        raise ConfigError(f"{option} takes {n} comma-separated numbers, got '{text}'.") from None
    if len(vals) != n or not all(np.isfinite(vals)):
        raise ConfigError(f"{option} takes {n} comma-separated finite numbers, got '{text}'.")
    return vals


def _default(values: tuple[float, ...], in_chans: int) -> tuple[float, ...]:
    return tuple(values) if in_chans == 3 else (0.5,)


def parse_size(text: str) -> int | tuple[int, int]:
    """``--size S`` or ``H x W`` (height first): ``224`` or ``(144, 192)``.

    Raises:
        ConfigError: not one or two whole numbers >= 8.
    """
    parts = str(text).lower().replace("×", "x").split("x")
    try:
        vals = [int(p) for p in parts]
    except ValueError:
        raise ConfigError(f"--size is S or HxW (height first, e.g. 144x192), got '{text}'.") from None
    if len(vals) not in (1, 2) or min(vals) < 8:
        raise ConfigError(f"--size is S or HxW with sides >= 8 px, got '{text}'.")
    return vals[0] if len(vals) == 1 or vals[0] == vals[1] else (vals[0], vals[1])


def _parser() -> OneLineParser:
    p = OneLineParser(prog="lesion import", description=__doc__.split("\n\n")[0])
    p.add_argument("file", help="the model file: .pth/.pt/.safetensors state dict, TorchScript or ONNX (any suffix)")
    p.add_argument("--arch", default="", help="for a state dict: a timm name, torchvision:NAME or smp:ARCH/ENCODER")
    p.add_argument("--classes", default="", help="the output classes in order, comma-separated (default: melanoma; "
                   "a segmenter: lesion or lungs)")
    p.add_argument("--size", default="224", help="network input S or HxW, height first (default %(default)s)")
    p.add_argument("--mean", default="", help="per-channel mean after scaling, comma-separated (default ImageNet's "
                   f"{','.join(map(str, IMAGENET_MEAN))}; one channel: 0.5)")
    p.add_argument("--std", default="", help="per-channel std after scaling (default ImageNet's "
                   f"{','.join(map(str, IMAGENET_STD))}; one channel: 0.5)")
    p.add_argument("--scale", default="1", help="inputs in 0..1 (1, default) or 0..255 (255) before mean/std")
    p.add_argument("--resize", default="squash", help=f"one of {', '.join(RESIZE_MODES)} (default %(default)s)")
    p.add_argument("--domain", default="derm", help=f"one of {', '.join(DOMAINS)} (default %(default)s)")
    p.add_argument("--target", default="", help="what the classes predict (melanoma, malignant, dx7, tb, …; "
                   "default: the class name of a one-class model)")
    p.add_argument("--multilabel", action="store_true", help="independent sigmoids (one per class)")
    p.add_argument("--in-chans", type=int, default=3, help="input channels (3 RGB, 1 grey; default %(default)s)")
    p.add_argument("--name", default="", help="the member's name (default: the file's stem)")
    p.add_argument("--out", default="", help="folder for NAME.json + the copy (default $LESION_MODELS_DIR or "
                   "~/lesion-models)")
    p.add_argument("--overwrite", action="store_true", help="replace an earlier import of the same name in --out")
    return p


def import_model(file: str | Path, arch: str = "", classes: Sequence[str] = (), size: Any = 224,
                 mean: Sequence[float] = IMAGENET_MEAN, std: Sequence[float] = IMAGENET_STD, scale: Any = 1,
                 resize: str = "squash", domain: str = "derm", target: str = "", multilabel: bool = False,
                 in_chans: int = 3, name: str = "", out: str | Path | None = None, overwrite: bool = False,
                 command: str = "") -> ModelCard:
    """Check a model file against the user's statements and write ``OUT/NAME.json`` beside a copy of it.

    Returns:
        the card as written (``card.path`` is the copy).

    Raises:
        ConfigError / CheckpointError: one line naming what is wrong.
    """
    src = Path(file).expanduser()
    kind = file_kind(src)
    if domain not in DOMAINS:
        raise ConfigError(f"--domain must be one of {', '.join(DOMAINS)}, got '{domain}'.")
    if in_chans not in (1, 3):
        raise ConfigError(f"--in-chans must be 1 or 3, got {in_chans}.")
    net_kind, arch_name, encoder = ("onnx", src.name, None) if kind == "onnx" else \
        ("torchscript", src.name, None) if kind == "torchscript" else parse_arch(arch)
    segmenter = net_kind == "smp"
    classes = tuple(c.strip() for c in classes if c.strip()) or (("lesion" if domain == "derm" else "lungs",)
                                                                  if segmenter else ("melanoma",))
    if len(set(classes)) != len(classes):
        raise ConfigError(f"--classes names a class twice: {', '.join(classes)}.")
    prep = Preprocessing(size=size, mean=tuple(mean), std=tuple(std), resize=resize, scale=scale, channels=in_chans,
                         threshold=0.5 if segmenter else None)
    h, w = prep.hw
    k = len(classes)
    if net_kind in ("onnx", "torchscript"):
        net = OnnxNet(src) if net_kind == "onnx" else ScriptNet(src)
        if net_kind == "onnx":
            _check_onnx_shapes(net, in_chans, h, w, k)
    else:
        net = build_network(net_kind, arch_name, 1 if segmenter else k, in_chans, encoder)
        load_strict(net, read_state_file(src, "safetensors" if kind == "safetensors" else "state_dict"),
                    what=f"file {src.name} (as --arch {arch})")
    _check_forward(net, src.name, in_chans, h, w, 1 if segmenter else k, segmenter)

    dest_dir = Path(out).expanduser() if out else user_models_dir()
    if is_shipped(dest_dir / "x") or dest_dir.resolve() == SHIPPED_WEIGHTS_DIR.resolve():
        raise ConfigError(f"--out {dest_dir} is lesion-lab's shipped weights/ folder; imports go elsewhere.")
    stem = name or src.stem
    if not stem.replace("-", "").replace("_", "").replace(".", "").isalnum():
        raise ConfigError(f"--name '{stem}' may hold letters, digits, '-', '_' and '.' only.")
    suffix = _copy_suffix(src, kind)
    copy, card_path = dest_dir / f"{stem}{suffix}", dest_dir / f"{stem}.json"
    for f in (copy, card_path):
        check_out_file(f, overwrite)
    dest_dir.mkdir(parents=True, exist_ok=True)
    with atomic_target(copy) as tmp:
        shutil.copyfile(src, tmp)
    digest = file_digest(copy)
    if digest != file_digest(src):  # pragma: no cover - the source changed while it was copied
        raise CheckpointError(f"{src.name} changed while it was copied; import it again.")
    model = {"imported": net_kind, "arch_name": arch_name, "num_classes": 1 if segmenter else k,
             "in_chans": in_chans}
    if encoder:
        model["encoder_name"] = encoder
    arch_text = {"onnx": "ONNX", "torchscript": "TorchScript"}.get(net_kind, arch)
    card = ModelCard(
        name=stem, task="segmentation" if segmenter else "classification", domain=domain, arch=arch_text,
        encoder=encoder or "", init="imported", classes=classes,
        target=target or (classes[0] if k == 1 and not segmenter else None), multilabel=multilabel, model=model,
        preprocessing=prep, data=(),
        provenance=Provenance(command=command, sha256=digest, file_size_bytes=copy.stat().st_size,
                              dtype="as imported", created=_now()),
        extra={"source": "imported", "training_data_unknown": True,
               "imported": {"file": src.name, "kind": kind, "file_sha256": digest}},
        notes=f"Imported from {src.name} ({kind}); the training data, split and licences are whatever its authors "
              "used: not known to lesion-lab, so every data set is scored as possibly seen in training.",
    )
    with atomic_target(card_path) as tmp:
        Path(tmp).write_text(card_json(card))
    return load_model(copy)[1]


def _now() -> str:
    return dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def _copy_suffix(src: Path, kind: str) -> str:
    """The copy keeps the file's own suffix when lesion-lab reads it by that suffix, else one matching its kind."""
    by_kind = {"safetensors": (".safetensors",), "state_dict": (".pth", ".pt"), "onnx": (".onnx",),
               "torchscript": (".ts", ".torchscript", ".pt")}[kind]
    if src.suffix in by_kind and not (kind == "torchscript" and src.suffix == ".pt"):
        return src.suffix
    return by_kind[0]


def _check_onnx_shapes(net: OnnxNet, in_chans: int, h: int, w: int, k: int) -> None:
    shape = net.input_shape
    if len(shape) != 4:
        raise ConfigError(f"the ONNX file's input has shape {shape}; an image classifier takes [N, C, H, W].")
    fixed = [(n, s, want) for n, s, want in zip(("channels", "height", "width"), shape[1:], (in_chans, h, w))
             if isinstance(s, int) and s != want]
    if fixed:
        n, s, want = fixed[0]
        raise ConfigError(f"the file's input has {s} {n}; you stated {want} (--{'in-chans' if n == 'channels' else 'size'}).")
    out = net.output_shape
    if len(out) >= 2 and isinstance(out[-1], int) and out[-1] != k:
        raise ConfigError(f"the file has {out[-1]} output{'s' if out[-1] != 1 else ''}; you named {k} "
                          f"class{'es' if k != 1 else ''}.")


def _check_forward(net, filename: str, in_chans: int, h: int, w: int, k: int, segmenter: bool) -> None:
    import torch

    x = torch.zeros(2, in_chans, h, w)
    try:
        with torch.inference_mode():
            y = net.eval()(x)
    except Exception as e:  # noqa: BLE001 - any framework error is a wrong statement or a wrong file
        raise ConfigError(f"{filename} does not run on a [2, {in_chans}, {h}, {w}] input: "
                          f"{str(e).splitlines()[0] if str(e) else type(e).__name__}") from None
    if isinstance(y, (tuple, list)):
        y = y[0]
    got = int(y.shape[1]) if y.ndim >= 2 else 1
    if segmenter:
        if y.ndim != 4 or got != 1:
            raise ConfigError(f"{filename} gives outputs of shape {tuple(y.shape)}; a segmenter gives [N, 1, H, W].")
    elif y.reshape(y.shape[0], -1).shape[1] != k:
        got = int(y.reshape(y.shape[0], -1).shape[1])
        raise ConfigError(f"the file has {got} output{'s' if got != 1 else ''}; you named {k} "
                          f"class{'es' if k != 1 else ''}.")
    if not torch.isfinite(y.float()).all():
        raise ConfigError(f"{filename} gives NaN or Inf on a blank input: its weights are broken.")


def main(argv: Sequence[str] | None = None) -> int:
    """``lesion import FILE [options]``: prints one JSON line ``{"name", "path", "card", "kind", "classes", "size"}``."""
    a = _parser().parse_args(list(sys.argv[1:] if argv is None else argv))
    try:
        scale = int(a.scale)
    except ValueError:
        raise ConfigError(f"--scale is 1 (inputs in 0..1) or 255 (0..255), got '{a.scale}'.") from None
    if scale not in (1, 255):
        raise ConfigError(f"--scale is 1 (inputs in 0..1) or 255 (0..255), got {scale}.")
    if a.resize not in RESIZE_MODES:
        raise ConfigError(f"--resize must be one of {', '.join(RESIZE_MODES)}, got '{a.resize}'.")
    card = import_model(a.file, arch=a.arch, classes=a.classes.split(",") if a.classes else (),
                        size=parse_size(a.size), mean=_floats(a.mean, "--mean", a.in_chans if a.in_chans == 1 else 3),
                        std=_floats(a.std, "--std", a.in_chans if a.in_chans == 1 else 3), scale=scale,
                        resize=a.resize, domain=a.domain, target=a.target, multilabel=a.multilabel,
                        in_chans=a.in_chans, name=a.name, out=a.out or None, overwrite=a.overwrite,
                        command="lesion import " + " ".join(list(sys.argv[1:] if argv is None else argv)))
    print(f"imported {card.name}: {card.extra['imported']['kind']}, classes {', '.join(card.classes)}, input "
          f"{card.preprocessing.size_text} px -> {card.path}; use it with --models {Path(card.path).with_suffix('')}",
          file=sys.stderr)
    print(json_line({"name": card.name, "path": card.path, "card": str(Path(card.path).with_suffix(".json")),
                     "kind": card.extra["imported"]["kind"], "classes": list(card.classes),
                     "size": card.preprocessing.size_text}))
    return 0
