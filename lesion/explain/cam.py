"""Class activation maps through pytorch-grad-cam (adapters, not rewrites: STYLE habit 9).

One front door, :func:`compute_cams`, runs any of :data:`METHODS` on a batch for a timm classifier or the
multi-task network: every model is a :class:`lesion.classify.classifier.Classifier`, whose
``logits_module`` gives the library a plain ``x -> logits [B, K]`` model. The target layer is found by :func:`find_target_layer`.

Binary heads (one logit) have no "class 0" column: :class:`BinaryLogitTarget` explains class 1 with the
logit itself and class 0 with its negation (the logit of "not positive").

pytorch_grad_cam is imported inside the functions (it is slow to import).
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

from lesion.card import ModelCard
from lesion.classify.classifier import Classifier, LogitsOnly, as_classifier, submodule
from lesion.preprocess import prepare_batch
from lesion.data.labels import melanoma_column
from lesion.errors import ConfigError, unknown_option

#: Method name -> pytorch_grad_cam class name (resolved lazily by :func:`cam_class`).
METHODS: dict[str, str] = {
    "gradcam": "GradCAM",
    "gradcam++": "GradCAMPlusPlus",
    "xgradcam": "XGradCAM",
    "eigencam": "EigenCAM",
    "layercam": "LayerCAM",
    "scorecam": "ScoreCAM",
    "hirescam": "HiResCAM",
}
#: The fast methods (one forward + one backward); Score-CAM needs one forward per channel of the layer.
FAST_METHODS: tuple[str, ...] = ("gradcam", "gradcam++", "xgradcam", "eigencam", "layercam", "hirescam")
#: Gradient-free heatmaps: forward passes only, so they work on members without gradients (an imported ONNX or
#: TorchScript network). pytorch-grad-cam has no occlusion method, hence :func:`occlusion_maps` here.
GRADIENT_FREE: tuple[str, ...] = ("occlusion",)


def methods_for(differentiable: bool) -> tuple[str, ...]:
    """The heatmap methods a member can give: every CAM with gradients, occlusion without."""
    return (*METHODS, *GRADIENT_FREE) if differentiable else GRADIENT_FREE


def cam_class(method: str):
    """The pytorch_grad_cam class of a method name.

    Raises:
        ConfigError: unknown method (the options are listed).
    """
    if method in GRADIENT_FREE:
        return None
    if method not in METHODS:
        raise unknown_option("CAM method", method, [*METHODS, *GRADIENT_FREE])
    import pytorch_grad_cam

    return getattr(pytorch_grad_cam, METHODS[method])


class BinaryLogitTarget:
    """Target for a one-logit head: class 1 -> the logit, class 0 -> minus the logit.

    pytorch_grad_cam calls a target on one sample's output ``[K]`` (or a batch ``[B, K]``).
    """

    def __init__(self, category: int):
        if category not in (0, 1):
            raise ConfigError(f"A binary (one-logit) model has classes 0 and 1, got {category}.")
        self.category = category

    def __call__(self, model_output):
        z = model_output[..., 0]
        return z if self.category == 1 else -z


def _unwrap(model) -> Classifier:
    """The :class:`Classifier` behind ``model`` (a logits-only view, a Classifier, or a raw network)."""
    return as_classifier(model)


def _last_spatial_conv(model, size: int = 224):
    """Generic fallback: the last ``nn.Conv2d`` whose output is wider than 1x1 on a ``size`` input."""
    import torch
    from torch import nn

    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    if not convs:
        raise ConfigError(f"{type(model).__name__} has no Conv2d layer: CAM methods need a convolutional model.")
    shapes: dict[int, tuple] = {}
    hooks = [c.register_forward_hook(lambda m, i, o: shapes.__setitem__(id(m), tuple(o.shape))) for c in convs]
    try:
        with torch.no_grad():
            p = next(model.parameters())
            model(torch.zeros(1, getattr(getattr(model, "cfg", None), "in_chans", 3), size, size,
                              device=p.device, dtype=p.dtype))
    finally:
        for h in hooks:
            h.remove()
    for c in reversed(convs):
        s = shapes.get(id(c))
        if s is not None and len(s) == 4 and s[-1] > 1 and s[-2] > 1:
            return c
    return convs[-1]


def vit_target(model, size: int = 224):
    """``(layer, reshape_transform)`` for a vision transformer, else None: timm ViTs / DeiTs (``blocks`` +
    ``patch_embed``: the last block's ``norm1``, prefix tokens dropped) and torchvision's ``VisionTransformer``
    (``encoder.layers``: the last layer's ``ln_1``, the class token dropped). The transform turns the tokens
    ``[B, 1 + h*w, C]`` into the ``[B, C, h, w]`` map the CAM methods weight (pytorch-grad-cam's ViT recipe)."""
    net = _unwrap(model).net
    if hasattr(net, "blocks") and hasattr(net, "patch_embed"):
        layer = net.blocks[-1].norm1
        prefix = int(getattr(net, "num_prefix_tokens", 1))
        grid = tuple(getattr(net.patch_embed, "grid_size", ()) or ())
    elif hasattr(net, "encoder") and hasattr(getattr(net, "encoder"), "layers") and hasattr(net, "patch_size"):
        layer = net.encoder.layers[-1].ln_1
        prefix = 1
        side = int(getattr(net, "image_size", size)) // int(net.patch_size)
        grid = (side, side)
    else:
        return None

    def reshape(t):
        t = t[:, prefix:, :]
        h, w = grid if len(grid) == 2 else (int(round(t.shape[1] ** 0.5)),) * 2
        return t.reshape(t.shape[0], h, w, t.shape[2]).permute(0, 3, 1, 2)

    return layer, reshape


def find_target_layer(model, size: int = 224):
    """The layer whose activations the CAM methods weight: the network's last spatial stage.

    Order of preference: what the classifier names (:meth:`Classifier.feature_layer`: the multi-task
    encoder's last stage, a timm EfficientNet's ``bn2``); the last entry of timm's ``feature_info``
    (``layer4`` of a ResNet, ``features.norm5`` of a DenseNet); else the last ``nn.Conv2d`` with an output
    wider than 1x1.

    Args:
        model: a :class:`Classifier` (or its ``logits_module``, or a raw timm network).
        size: input side used only by the generic fallback's probe forward pass.
    """
    clf = _unwrap(model)
    layer = clf.feature_layer()
    if layer is not None:
        return layer
    net = clf.net
    info = getattr(net, "feature_info", None)
    if info:
        try:
            name = info.module_name()[-1] if hasattr(info, "module_name") else info[-1]["module"]
        except (KeyError, IndexError, TypeError):
            name = None
        layer = submodule(net, name) if name else None
        if layer is not None:
            return layer
    return _last_spatial_conv(net, size)


def positive_target(classes) -> int:
    """The class index that explains "positive" for :func:`targets_for`: 1 (the logit itself) for a binary head,
    the melanoma column of a multi-class head (:func:`lesion.data.labels.melanoma_column`)."""
    return 1 if len(classes) <= 1 else melanoma_column(classes)


def targets_for(model, class_index: "int | Sequence[int]", batch: int) -> list:
    """One target callable per image: :class:`BinaryLogitTarget` for a 1-logit head, else ClassifierOutputTarget.

    ``class_index`` is one class for the whole batch or one per image.
    """
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    k = _num_outputs(model)
    idx = [int(class_index)] * batch if np.isscalar(class_index) else [int(c) for c in class_index]
    if len(idx) != batch:
        raise ConfigError(f"{len(idx)} class indices for a batch of {batch} images.")
    if k == 1:
        return [BinaryLogitTarget(c) for c in idx]
    bad = [c for c in idx if not 0 <= c < k]
    if bad:
        raise ConfigError(f"Class index {bad[0]} is out of range for a model with {k} outputs.")
    return [ClassifierOutputTarget(c) for c in idx]


def _num_outputs(model) -> int:
    return _unwrap(model).num_classes


def as_logit_model(model, meta=None) -> LogitsOnly:
    """``model`` as ``x -> logits [B, K]`` with ``meta`` bound for models that take it (a logits-only view is
    rebuilt around its classifier with this ``meta``)."""
    return as_classifier(model).logits_module(meta)


def compute_cams(
    model,
    images,
    class_index: "int | Sequence[int]",
    methods: Sequence[str] = ("gradcam",),
    aug_smooth: bool = False,
    eigen_smooth: bool = False,
    meta=None,
    target_layer=None,
    device: str | None = None,
) -> dict[str, np.ndarray]:
    """Heatmaps of several CAM methods for one class over a batch, one library call per method.

    Args:
        model: a :class:`Classifier` (or its ``logits_module``, or a raw timm network).
        images: preprocessed (normalised) ``[B, 3, H, W]`` float tensor or array.
        class_index: class to explain, one for the batch or one per image (binary heads: 1 = positive,
            0 = negative).
        methods: names from :data:`METHODS`.
        aug_smooth: average each CAM over the library's TTA (hflip x brightness 0.9/1/1.1), de-augmented.
        eigen_smooth: first principal component of the weighted activations (less noise).
        meta: metadata ``[D]`` or ``[B, D]`` for multi-task models (None: all unknown).
        target_layer: override :func:`find_target_layer`.
        device: ``cuda`` / ``cpu``; default: the model's device (the model is moved when given).

    Returns:
        method -> float32 ``[B, H, W]`` in [0, 1] (each map min-max scaled by the library).
    """
    import torch

    methods = list(methods)
    for m in methods:
        cam_class(m)  # validate every name before any work
    wrapped = as_logit_model(model, meta)
    if device is not None:
        wrapped.to(device)
    dev = next(iter(wrapped.parameters()), torch.zeros(0)).device
    x = torch.as_tensor(np.asarray(images) if not isinstance(images, torch.Tensor) else images).float().to(dev)
    if x.ndim != 4:
        raise ConfigError(f"images must be [B, 3, H, W], got shape {tuple(x.shape)}.")
    targets = targets_for(wrapped, class_index, x.shape[0])
    out: dict[str, np.ndarray] = {}
    grad_methods = [m for m in methods if m not in GRADIENT_FREE]
    if grad_methods and not getattr(_unwrap(wrapped).net, "differentiable", True):
        raise ConfigError(f"{', '.join(grad_methods)} need(s) gradients, which this model (ONNX / TorchScript) does "
                          "not give; use occlusion.")
    for name in [m for m in methods if m in GRADIENT_FREE]:
        out[name] = occlusion_maps(wrapped, x, targets)
    methods = grad_methods
    if not methods:
        return out
    vit = vit_target(wrapped, int(x.shape[-1])) if target_layer is None else None
    layer = target_layer if target_layer is not None else vit[0] if vit else find_target_layer(wrapped, int(x.shape[-1]))
    reshape = vit[1] if vit else None
    was_training = wrapped.training
    try:
        for name in methods:
            cls = cam_class(name)
            with cls(model=wrapped, target_layers=[layer], reshape_transform=reshape) as cam:
                if name == "scorecam":
                    cam.batch_size = 32  # channels scored per forward pass (the library's default is 128)
                # Grad-CAM needs gradients even when the caller sits under torch.inference_mode().
                with torch.inference_mode(False), torch.enable_grad():
                    heat = cam(input_tensor=x.clone(), targets=targets, aug_smooth=aug_smooth,
                               eigen_smooth=eigen_smooth)
            out[name] = np.clip(np.nan_to_num(np.asarray(heat, dtype=np.float32)), 0.0, 1.0)
    finally:
        wrapped.train(was_training)
        wrapped.zero_grad(set_to_none=True)
    return out


def occlusion_maps(model, x, targets, patch: int | None = None, batch: int = 32) -> np.ndarray:
    """Occlusion sensitivity (Zeiler & Fergus 2014): how much the explained score drops when a square patch of
    the input is set to 0 (the normalised mean), each pixel averaged over the patches covering it; negative drops
    count as 0 and each map is scaled to [0, 1] (all zeros when no patch lowers the score).

    Args:
        model: ``x -> logits`` (any forward: ONNX and TorchScript networks included).
        x: normalised inputs ``[B, C, H, W]``; targets: one pytorch-grad-cam style target per image.
        patch: side of the square patch (default: an eighth of the longer side), stride half of it.
    """
    import torch

    b, _, h, w = x.shape
    p = int(patch or max(4, max(h, w) // 8))
    step = max(1, p // 2)
    ys = list(range(0, max(1, h - p) + 1, step)) + ([h - p] if (h - p) % step else [])
    xs = list(range(0, max(1, w - p) + 1, step)) + ([w - p] if (w - p) % step else [])
    boxes = [(y, x0) for y in ys for x0 in xs]
    maps = np.zeros((b, h, w), np.float32)
    with torch.inference_mode():
        for i in range(b):
            xi = x[i:i + 1]
            base = float(targets[i](model(xi)[0]))
            heat, cover = np.zeros((h, w), np.float64), np.zeros((h, w), np.float64)
            for s in range(0, len(boxes), batch):
                chunk = boxes[s:s + batch]
                xb = xi.repeat(len(chunk), 1, 1, 1)
                for j, (y, x0) in enumerate(chunk):
                    xb[j, :, y:y + p, x0:x0 + p] = 0.0
                out = model(xb)
                for j, (y, x0) in enumerate(chunk):
                    drop = base - float(targets[i](out[j]))
                    heat[y:y + p, x0:x0 + p] += max(drop, 0.0)
                    cover[y:y + p, x0:x0 + p] += 1
            m = heat / np.maximum(cover, 1)
            maps[i] = (m / m.max()) if m.max() > 0 else m
    return maps


def label_heatmap(model: Classifier, card: ModelCard, image: np.ndarray, class_index: int,
                  method: str = "gradcam") -> np.ndarray:
    """CAM of one output column over a radiograph, at the image's own resolution.

    Args:
        model: the chest X-ray classifier (eval mode).
        card: its card (preprocessing).
        image: RGB or grey uint8 ``[H, W(, 3)]``.
        class_index: the output column (finding) to explain.
        method: a :data:`lesion.explain.cam.METHODS` name.

    Returns:
        float32 ``[H, W]`` in [0, 1].
    """
    import cv2

    prep = card.preprocessing
    x = prepare_batch([image], prep)
    k = len(card.classes) or 1
    # one-logit heads: BinaryLogitTarget(1) explains the positive class; multi-label: the column itself
    target = 1 if k == 1 else int(class_index)
    heat = compute_cams(model, x, target, methods=(method,))[method][0]
    h, w = image.shape[:2]
    return cv2.resize(heat, (w, h), interpolation=cv2.INTER_LINEAR)
