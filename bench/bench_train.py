"""Training-step speed before / after ``channels_last`` (the one training loop's memory format), side by side.

    python bench/bench_train.py [--threads 1] [--steps 6]

For an EfficientNet-Lite0 classifier (batch 32) and an EfficientNet-Lite0 U-Net (batch 8), at two input sizes
each, one forward + backward + optimiser step is timed in the default NCHW order ("before") and in
``channels_last`` as :func:`lesion.train.common.to_channels_last` / :func:`~lesion.train.common.batch_to` run it
("after"); the first step of each is a warm-up. Prints a table of ms per image and the speed-up.
"""
from __future__ import annotations

import argparse
import os
import platform
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")


def _step_ms(make, batch: int, size: int, steps: int, channels_last: bool, seg: bool) -> float:
    import torch

    from lesion.train.common import batch_to, to_channels_last

    torch.manual_seed(0)
    net = make()
    net.train()
    if channels_last:
        to_channels_last(net)
    opt = torch.optim.SGD(net.parameters(), lr=1e-3)
    x = torch.randn(batch, 3, size, size)
    y = (torch.rand(batch, 1, size, size) > 0.5).float() if seg else torch.rand(batch, 1)
    times = []
    for i in range(steps + 1):
        t = time.perf_counter()
        xb = batch_to(x, "cpu") if channels_last else x
        out = net(xb)
        out = out.logits if hasattr(out, "logits") else out
        loss = torch.nn.functional.binary_cross_entropy_with_logits(out, y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if i:
            times.append(time.perf_counter() - t)
    return 1000.0 * sorted(times)[len(times) // 2] / batch


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--steps", type=int, default=6)
    a = p.parse_args(argv)
    import torch

    from lesion.classify.classifier import create_model
    from lesion.classify.models import ClsModelConfig
    from lesion.segment.models import SegModelConfig, create_seg_model

    torch.set_num_threads(a.threads)
    cases = [
        ("classifier EfficientNet-Lite0", 32, s, lambda s=s: create_model(ClsModelConfig("efficientnet_lite0", num_classes=1, size=s)), False)
        for s in (128, 224)
    ] + [
        ("U-Net EfficientNet-Lite0", 8, s, lambda: create_seg_model(
            SegModelConfig(arch="unet", encoder="tu-efficientnet_lite0", init="random"), load_imagenet=False), True)
        for s in (192, 256)
    ]
    print(f"bench_train ({time.strftime('%Y-%m-%d %H:%M')}, {platform.processor() or platform.machine()}, "
          f"{os.cpu_count()} cores, load average {os.getloadavg()[0]:.2f}, torch {torch.__version__}, "
          f"{a.threads} thread(s); median of {a.steps} steps after a warm-up)\n")
    print("| network | batch | input | ms / image NCHW (before) | ms / image channels_last (after) | speed-up |")
    print("|---|---|---|---|---|---|")
    for name, batch, size, make, seg in cases:
        before = _step_ms(make, batch, size, a.steps, False, seg)
        after = _step_ms(make, batch, size, a.steps, True, seg)
        print(f"| {name} | {batch} | {size} | {before:.1f} | {after:.1f} | {before / after:.2f}x |", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
