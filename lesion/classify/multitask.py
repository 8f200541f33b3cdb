"""Multi-task classifier + lesion-mask network with a metadata encoder (seed 003, eqs. 1-6).

Architecture (``x`` is the image ``[B, 3, H, W]``, ``m`` the metadata vector ``[B, D]``):

* **Encoder**: a timm backbone with ``features_only=True``; only its last stage ``F [B, c, h, w]`` is used
  (``h = H/32`` for most backbones), as in the paper ("connecting segmentation decoder and the classifier to
  its last convolutional layer").
* **Segmentation decoder** ``f_segmentation``: ``n_up`` blocks of (3x3 conv, BN, ReLU, 2x bilinear upsample)
  and a 1x1 conv, giving mask logits ``M`` at ``H/8`` (16-64 px for 128-512 inputs, the paper's 16x16-64x64).
  We chose this light decoder over smp's U-Net decoder: smp's needs every encoder stage as a skip
  connection (which the paper does not use) and costs several times more compute on the CPU we train on.
  ``mask_logits`` in the output are ``M`` bilinearly resized to ``[H, W]``.
* **Classifier** ``f_classifier``: a 1x1 conv over ``F`` giving *spatial* logits ``C [B, K, h, w]``.
* **Attention pooling** (eqs. 4-6): ``A = σ(M)`` average-pooled to ``(h, w)``;
  ``C_refined = Σ_hw A·C / Σ_hw A`` -> ``[B, K]``.
* **Metadata** (eqs. 1-2): ``M_out = ReLU(W m + b)`` (eq. 1). Eq. 2 concatenates ``V = M_out ⊕ F``, and
  ``V`` feeds the classifier. We broadcast ``M_out`` over the ``h x w`` positions, so the 1x1-conv classifier
  over ``V`` is ``C(h,w) = W_F·F(h,w) + W_M·M_out + b``. Because the metadata term is the same at every
  position and the attention weights sum to one, eq. 6 gives exactly
  ``logits = Σ A·(W_F·F + b) / Σ A + W_M·M_out`` — the attention-pooled image logit **plus** an added
  metadata logit. That is how we compute it (no broadcasted tensor is materialised). We deliberately do not
  concatenate a *global-average-pooled* ``F`` with ``M_out``: that would give the image a second path to the
  logit that bypasses the attention mask, and the mask would no longer be forced to find the lesion.
  The segmentation decoder sees ``F`` only (metadata says nothing about *where* the lesion is).

Training works with or without mask truth: the classification loss alone teaches ``M`` where to look
(the paper's unsupervised segmentation); when masks exist, BCE+Dice on ``mask_logits`` is added
(:func:`lesion.train.cls_losses.mask_loss`).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from lesion.classify.metadata import METADATA_DIM, encode_metadata
from lesion.classify.models import IMAGENET_MEAN, IMAGENET_STD, INITS, check_arch, load_lite_port
from lesion.errors import unknown_option


@dataclass(frozen=True)
class MultiTaskConfig:
    """The multi-task network (card ``model`` section)."""

    arch: str = "efficientnet_lite0"  # timm backbone (features_only); card key 'arch' like plain classifiers
    num_classes: int = 1  # K logits (1 = binary)
    in_chans: int = 3
    # The input the model is trained for: preprocessing, stored in the card's ``preprocessing`` only (never in
    # ``model``); :func:`lesion.classify.classifier.config_from_card` fills them from there.
    size: int | tuple[int, int] = 224  # S or (H, W), pixels
    mean: tuple[float, ...] = IMAGENET_MEAN
    std: tuple[float, ...] = IMAGENET_STD
    init: str = "random"  # 'imagenet-lite-port' or 'random'
    drop_rate: float = 0.0  # dropout on F before the classifier
    use_metadata: bool = True  # add the metadata encoder (eqs. 1-2)
    meta_dim: int = METADATA_DIM  # length of the encoded metadata vector (lesion.classify.metadata)
    meta_hidden: int = 32  # width of M_out
    decoder_channels: tuple[int, ...] = (64, 32)  # one (conv, BN, ReLU, 2x up) block per entry


def attention_pool(attention: torch.Tensor, spatial: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """Eq. 6: ``Σ_hw A·C / Σ_hw A``.

    Args:
        attention: ``A = σ(M)`` at the classifier's resolution, ``[B, 1, h, w]``, 0-1.
        spatial: spatial logits ``C`` ``[B, K, h, w]``.
        eps: floor of the denominator (an all-zero attention map gives 0, not NaN).

    Returns:
        refined logits ``[B, K]``.
    """
    return (attention * spatial).sum(dim=(2, 3)) / attention.sum(dim=(2, 3)).clamp_min(eps)


class MultiTaskNet(nn.Module):
    """Shared encoder, mask decoder, spatial classifier with mask attention, optional metadata encoder.

    ``forward(x, meta=None)`` returns a dict:
        ``logits`` ``[B, K]`` (eq. 6 plus the metadata logit), ``mask_logits`` ``[B, 1, H, W]``
        (before sigmoid), ``attention`` ``[B, 1, h, w]`` (σ(M) at the classifier's resolution, 0-1).
    ``meta`` is ``[B, meta_dim]`` float; None means "all unknown" (see :func:`unknown_metadata`).
    """

    def __init__(self, cfg: MultiTaskConfig):
        super().__init__()
        import timm

        if cfg.init not in INITS:
            raise unknown_option("init", cfg.init, INITS)
        check_arch(cfg.arch)
        self.cfg = cfg
        self.encoder = timm.create_model(
            cfg.arch, pretrained=False, features_only=True, out_indices=(-1,), in_chans=cfg.in_chans
        )
        if cfg.init == "imagenet-lite-port":
            # features_only models keep the backbone's key names minus the head (conv_head/bn2/classifier).
            load_lite_port(self.encoder, cfg.arch, skip_prefixes=("classifier.", "conv_head.", "bn2."))
        c = self.encoder.feature_info.channels()[-1]
        blocks, cin = [], c
        for cout in cfg.decoder_channels:
            blocks += [
                nn.Conv2d(cin, cout, 3, padding=1, bias=False),
                nn.BatchNorm2d(cout),
                nn.ReLU(inplace=True),
                nn.Upsample(scale_factor=2, mode="bilinear", align_corners=False),
            ]
            cin = cout
        blocks.append(nn.Conv2d(cin, 1, 1))
        self.decoder = nn.Sequential(*blocks)
        self.dropout = nn.Dropout2d(cfg.drop_rate) if cfg.drop_rate > 0 else nn.Identity()
        self.classifier = nn.Conv2d(c, cfg.num_classes, 1)
        if cfg.use_metadata:
            self.meta_encoder = nn.Sequential(nn.Linear(cfg.meta_dim, cfg.meta_hidden), nn.ReLU(inplace=True))
            # No bias: the classifier conv's bias already is the shared offset b.
            self.meta_head = nn.Linear(cfg.meta_hidden, cfg.num_classes, bias=False)

    @property
    def output_bias(self) -> torch.Tensor:
        """The bias of the final logit (set to log(prior/(1-prior)) before training)."""
        return self.classifier.bias

    def unknown_metadata(self, batch: int, device=None) -> torch.Tensor:
        """``[batch, meta_dim]`` "all unknown" metadata (sex, site unknown, age missing)."""
        v = torch.from_numpy(encode_metadata({}))
        return v.to(device).unsqueeze(0).expand(batch, -1)

    def forward(self, x: torch.Tensor, meta: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        feat = self.encoder(x)[-1]  # F [B, c, h, w]
        mask = self.decoder(feat)  # M [B, 1, H/8, W/8]
        h, w = (int(d) for d in feat.shape[-2:])  # Python ints: ONNX export needs a constant pooling size
        att = torch.sigmoid(mask)
        att = F.adaptive_avg_pool2d(att, (h, w))  # σ(M) at the classifier's resolution
        spatial = self.classifier(self.dropout(feat))  # C [B, K, h, w]
        logits = attention_pool(att, spatial)  # eq. 6
        if self.cfg.use_metadata:
            if meta is None:
                meta = self.unknown_metadata(x.shape[0], x.device)
            logits = logits + self.meta_head(self.meta_encoder(meta.to(x.dtype)))
        mask_full = F.interpolate(mask, size=x.shape[-2:], mode="bilinear", align_corners=False)
        return {"logits": logits, "mask_logits": mask_full, "attention": att}
