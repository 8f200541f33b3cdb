"""Models brought from elsewhere (``lesion import``): what kind a file is, and how to rebuild it from its card.

Kinds, recognised by the file's **content** (never its suffix):

* ``safetensors`` / ``state_dict``: tensors only; the user names the architecture with ``--arch``:
  ``timm`` (any timm name), ``torchvision:NAME`` or, for a segmenter, ``smp:ARCH/ENCODER``;
* ``torchscript``: a ``torch.jit.save`` archive (a zip holding ``code/`` and ``constants.pkl``);
* ``onnx``: an ONNX model (protobuf), run by onnxruntime.

An imported card's ``model`` section records ``{"imported": kind, "arch": …, "num_classes": K, "in_chans": C}``;
:func:`build_imported` turns card + file into a network that honours the library's contract (a
:class:`~lesion.classify.classifier.Classifier`, or an smp segmenter). ONNX and TorchScript networks carry
``differentiable = False``: their members offer no gradients, so the pages use a gradient-free heatmap.
"""
from __future__ import annotations

import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

from lesion.card import ModelCard
from lesion.errors import CheckpointError, ConfigError
from lesion.weights import load_strict, read_state_file

#: What ``lesion import`` writes into ``card.model["imported"]``.
IMPORTED_KINDS = ("timm", "torchvision", "smp", "torchscript", "onnx")


def file_kind(path: str | Path) -> str:
    """``safetensors``, ``state_dict`` (a ``torch.save`` zip or pickle), ``torchscript`` or ``onnx``, from the
    file's bytes.

    Raises:
        CheckpointError: missing, empty or none of these.
    """
    p = Path(path)
    if not p.is_file():
        raise CheckpointError(f"Model file {p} does not exist.")
    with open(p, "rb") as f:
        head = f.read(16)
    if len(head) < 8:
        raise CheckpointError(f"{p.name} is empty or truncated ({len(head)} bytes): not a model file.")
    if zipfile.is_zipfile(p):
        with zipfile.ZipFile(p) as z:
            names = z.namelist()
        if any("/code/" in n for n in names) or any(n.endswith("constants.pkl") for n in names):
            return "torchscript"
        if any(n.endswith("data.pkl") for n in names):
            return "state_dict"
        raise CheckpointError(f"{p.name} is a zip archive but neither a TorchScript file nor a torch.save file.")
    n = int.from_bytes(head[:8], "little")
    if 0 < n < (1 << 27) and head[8:9] == b"{":
        return "safetensors"
    if head[:1] == b"\x80":  # pickle protocol 2+: an old-style torch.save
        return "state_dict"
    try:
        import onnx

        model = onnx.load(str(p), load_external_data=False)
        if len(model.graph.node) and len(model.graph.output):
            return "onnx"
    except Exception:  # noqa: BLE001 - not protobuf / not ONNX: said below
        pass
    raise CheckpointError(f"{p.name} is not a model file lesion-lab reads (safetensors, torch.save state dict, "
                          "TorchScript or ONNX).")


def parse_arch(arch: str) -> tuple[str, str, str | None]:
    """``--arch`` -> ``(kind, name, encoder)``: ``timm`` + any timm name, ``torchvision:NAME`` or ``smp:ARCH/ENCODER``.

    Raises:
        ConfigError: empty, or an smp arch without its encoder.
    """
    arch = (arch or "").strip()
    if not arch:
        raise ConfigError("A state dict needs --arch: a timm name (e.g. resnet18), torchvision:NAME or "
                          "smp:ARCH/ENCODER.")
    if arch.startswith("torchvision:"):
        return "torchvision", arch.split(":", 1)[1], None
    if arch.startswith("smp:"):
        body = arch.split(":", 1)[1]
        if "/" not in body:
            raise ConfigError(f"--arch {arch}: an smp segmenter is smp:ARCH/ENCODER, e.g. smp:unet/resnet18.")
        a, enc = body.split("/", 1)
        return "smp", a, enc
    return "timm", arch.split(":", 1)[1] if arch.startswith("timm:") else arch, None


def build_network(kind: str, name: str, num_classes: int, in_chans: int = 3, encoder: str | None = None):
    """An untrained network of a named architecture (no hub weights are ever fetched).

    Raises:
        ConfigError: the library does not know the name (its own message, one line).
    """
    try:
        if kind == "timm":
            import timm

            return timm.create_model(name, pretrained=False, num_classes=num_classes, in_chans=in_chans)
        if kind == "torchvision":
            import torchvision

            net = torchvision.models.get_model(name, weights=None, num_classes=num_classes)
            net.num_classes = num_classes
            return net
        if kind == "smp":
            import segmentation_models_pytorch as smp

            return smp.create_model(name, encoder_name=encoder, encoder_weights=None, in_channels=in_chans,
                                    classes=num_classes)
    except (RuntimeError, ValueError, KeyError, TypeError, AttributeError) as e:
        raise ConfigError(f"--arch {kind}:{name}{'/' + encoder if encoder else ''}: "
                          f"{str(e).splitlines()[0] if str(e) else type(e).__name__}") from None
    raise ConfigError(f"Unknown imported kind '{kind}'; known: {', '.join(IMPORTED_KINDS)}.")


class _Opaque:
    """Shared by networks that run outside autograd's view of their layers (ONNX, TorchScript)."""

    differentiable = False


class OnnxNet(_Opaque, torch.nn.Module):
    """An ONNX model behind ``nn.Module``: ``forward(x [B, C, H, W]) -> logits [B, K]`` through onnxruntime (CPU,
    one thread). Only the first input and first output are used."""

    def __init__(self, path: str | Path, threads: int = 1):
        super().__init__()
        import onnxruntime as ort

        opts = ort.SessionOptions()
        opts.intra_op_num_threads = int(threads)
        opts.inter_op_num_threads = 1
        try:
            self.session = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
        except Exception as e:  # noqa: BLE001 - onnxruntime raises its own types
            raise CheckpointError(f"onnxruntime cannot load {Path(path).name}: {str(e).splitlines()[0]}") from None
        inp = self.session.get_inputs()[0]
        self.input_name, self.input_shape = inp.name, list(inp.shape)
        self.outputs = [o.name for o in self.session.get_outputs()]
        self.output_shape = list(self.session.get_outputs()[0].shape)

    def forward(self, x):
        out = self.session.run([self.outputs[0]], {self.input_name: x.detach().cpu().numpy().astype(np.float32)})[0]
        return torch.from_numpy(np.asarray(out, np.float32).reshape(out.shape[0], -1))


class ScriptNet(_Opaque, torch.nn.Module):
    """A TorchScript module behind ``nn.Module`` (its output flattened to logits ``[B, K]``; a tuple or dict
    output gives its first tensor)."""

    def __init__(self, path: str | Path):
        super().__init__()
        try:
            self.script = torch.jit.load(str(path), map_location="cpu")
        except Exception as e:  # noqa: BLE001 - torch.jit raises RuntimeError and others
            raise CheckpointError(f"{Path(path).name} does not load as TorchScript: {str(e).splitlines()[0]}") from None
        self.script.eval()

    def forward(self, x):
        out = self.script(x)
        if isinstance(out, dict):
            out = next(iter(out.values()))
        if isinstance(out, (tuple, list)):
            out = out[0]
        return out.reshape(out.shape[0], -1)


def build_imported(card: ModelCard, path: str | Path) -> Any:
    """The network of an imported card with its weights (a state dict is loaded strictly by the caller's
    rule, :func:`lesion.weights.load_strict`; ONNX and TorchScript files are the network)."""
    m = dict(card.model)
    kind = m.get("imported")
    if kind == "onnx":
        return OnnxNet(path)
    if kind == "torchscript":
        return ScriptNet(path)
    k = int(m.get("num_classes") or len(card.classes) or 1)
    net = build_network(kind, str(m.get("arch_name") or card.arch), k, int(m.get("in_chans", 3)),
                        m.get("encoder_name"))
    # read by the bytes' kind the import recorded, not by the copy's suffix
    file_kind_ = dict(card.extra or {}).get("imported", {}).get("kind")
    load_strict(net, read_state_file(path, file_kind_ if file_kind_ in ("safetensors", "state_dict") else None),
                what=f"imported weights '{card.name}' ({card.arch})")
    return net
