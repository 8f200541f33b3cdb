"""Benchmark: a 4-model classifier ensemble with TTA, batched engine vs the naive loop.

Run: ``python bench/bench_ensemble.py [--n 16] [--size 256] [--tta d4] [--device auto] [--out FILE]``.

Members: the shipped ``weights/derm_cls_*`` / ``derm_multitask_*`` checkpoints when at least four exist,
otherwise four untrained timm models of the intended architectures (efficientnet_lite0 x2, resnet18,
densenet121) — speed does not depend on the weights. Images are decoded RGB arrays held in memory (256x256
demo dermoscopy images when the demo generator is available, else noise), so file reading is not timed.
Both paths compute the same numbers (the table reports the largest difference); the naive path is
``predict_naive`` (one image x one view x one model per forward pass, fp32).
"""
from __future__ import annotations

import argparse
import sys
import time

import numpy as np

from _common import emit  # noqa: E402  (repository on sys.path, offline settings)


def _images(n: int, size: int) -> tuple[str, list[np.ndarray]]:
    try:
        from lesion.data.demo import demo_root
        from lesion.data.io import read_image

        root = demo_root("derm")
        paths = sorted((root / "images").iterdir())[:n]
        return f"demo derm ({len(paths)} images)", [read_image(p) for p in paths]
    except Exception:  # noqa: BLE001 - the bench must run without the demo generator
        rng = np.random.default_rng(0)
        return f"noise ({n} images)", [rng.integers(0, 255, (size, size, 3), dtype=np.uint8) for _ in range(n)]


def _members(size: int):
    import torch

    from lesion.card import IMAGENET_MEAN, IMAGENET_STD, ModelCard, Preprocessing
    from lesion.classify.classifier import Classifier
    from lesion.classify.models import ClsModelConfig, create_classifier
    from lesion.weights import list_weights
    from lesion.zoo import CLASSIFIER_TASKS, load_model

    shipped = [c for c in list_weights() if c.task in CLASSIFIER_TASKS and c.name.startswith("derm_")]
    if len(shipped) >= 4:
        return "shipped", [load_model(c.name) for c in shipped[:4]]
    torch.manual_seed(0)
    out = []
    for i, arch in enumerate(["efficientnet_lite0", "efficientnet_lite0", "resnet18", "densenet121"]):
        card = ModelCard(name=f"{arch}#{i}", task="classification", arch=arch, classes=("melanoma",),
                         target="melanoma",
                         preprocessing=Preprocessing(size, IMAGENET_MEAN, IMAGENET_STD, center_crop=True))
        out.append((Classifier(create_classifier(ClsModelConfig(arch, num_classes=1, size=size))).eval(), card))
    return "untrained (random init)", out


def main(argv: list[str] | None = None) -> int:
    import torch

    from lesion.device import describe_device, pick_device
    from lesion.infer.engine import auto_batch_size, predict, predict_naive

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--n", type=int, default=16)
    p.add_argument("--size", type=int, default=256)
    p.add_argument("--tta", default="d4")
    p.add_argument("--batch-size", type=int, default=None, help="default: the engine's choice for the device")
    p.add_argument("--device", default="auto")
    p.add_argument("--out", default=None, help="also write the table to this file")
    a = p.parse_args(argv)
    device = pick_device(a.device)
    say = lambda msg: print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)  # noqa: E731
    src, images = _images(a.n, a.size)
    kind, members = _members(a.size)
    say(f"{len(images)} images from {src}; {len(members)} members ({kind}); timing batched path")
    predict(members, images[:2], tta=a.tta, batch_size=a.batch_size, device=device)  # warm-up (allocations, cuDNN)
    t = time.perf_counter()
    fast = predict(members, images, tta=a.tta, batch_size=a.batch_size, device=device)
    t_fast = time.perf_counter() - t
    say(f"batched: {t_fast:.1f} s; timing naive path")
    t = time.perf_counter()
    slow = predict_naive(members, images, tta=a.tta, device=device)
    t_slow = time.perf_counter() - t
    diff = float(np.abs(fast.probs - slow.probs).max())
    n = len(images)
    lines = [
        f"bench_ensemble: {len(members)} models ({kind}: {', '.join(c.name for _, c in members)}), "
        f"TTA {a.tta}, {a.size} px, {src}",
        f"device: {describe_device(device)}; torch threads {torch.get_num_threads()}; batch size {a.batch_size or auto_batch_size(device, a.tta)}",
        "",
        f"{'path':<28}{'total s':>10}{'ms/image':>12}{'speed-up':>10}",
        f"{'naive (1 img x 1 view)':<28}{t_slow:>10.2f}{1000 * t_slow / n:>12.1f}{1.0:>10.2f}",
        f"{'batched engine':<28}{t_fast:>10.2f}{1000 * t_fast / n:>12.1f}{t_slow / t_fast:>10.2f}",
        "",
        f"max |batched - naive| probability: {diff:.2e}"
        + (" (CUDA autocast on the batched path)" if device.startswith("cuda") else " (both fp32)"),
    ]
    text = "\n".join(lines)
    return emit(text, a.out)


if __name__ == "__main__":
    sys.exit(main())
