"""Benchmark: six CAM methods + the multi-task attention mask for one 256-px image on the CPU (Score-CAM apart).

Target: each fast method <= 3 s per image. Run: ``python bench/bench_cam.py [--runs 5] [--out FILE]``.
Uses a shipped derm classifier / multi-task checkpoint when ``weights/`` has one; otherwise an
efficientnet_lite0 with the offline ImageNet port (``lesion.weights.port_efficientnet_lite``) and a multi-task
model on the same ported encoder with a random decoder (speed only: its maps mean nothing). The table says
which. Times include the library's forward + backward and the upsampling to 256 px; not image reading.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

TARGET_S = 3.0
SIZE = 256


def _models():
    from lesion.classify.classifier import create_model
    from lesion.classify.models import ClsModelConfig
    from lesion.classify.multitask import MultiTaskConfig
    from lesion.weights import list_weights
    from lesion.zoo import load_model

    cards = list_weights(domain="derm")
    cls = next((c for c in cards if c.task == "classification"), None)
    mt = next((c for c in cards if c.task == "multitask"), None)
    out = {}
    if cls:
        out["classifier"] = (load_model(cls.name)[0], f"shipped {cls.name}")
    else:
        m = create_model(ClsModelConfig("efficientnet_lite0", num_classes=1, size=SIZE, init="imagenet-lite-port"))
        out["classifier"] = (m.eval(), "efficientnet_lite0, offline ImageNet port, untrained head")
    if mt:
        out["multitask"] = (load_model(mt.name)[0], f"shipped {mt.name}")
    else:
        m = create_model(MultiTaskConfig(arch="efficientnet_lite0", size=SIZE, init="imagenet-lite-port"))
        out["multitask"] = (m.eval(), "efficientnet_lite0 port + random decoder (speed only)")
    return out


def _image():
    try:
        from lesion.data.demo import demo_root
        from lesion.data.io import read_image

        p = sorted((demo_root("derm") / "images").iterdir())[0]
        return read_image(p), f"demo derm {p.name}"
    except Exception:  # the demo generator is optional for a benchmark
        rng = np.random.default_rng(0)
        return rng.integers(0, 255, (SIZE, SIZE, 3), dtype=np.uint8), "random 256-px image"


def _median_time(fn, runs: int) -> float:
    fn()  # warm-up (first call allocates, builds hooks)
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--scorecam", action=argparse.BooleanOptionalAction, default=True)
    ap.add_argument("--out", default=None)
    args = ap.parse_args(argv)

    import torch

    from lesion.classify.models import Preprocessing, normalize, prepare_image
    from lesion.explain.attention import attention_maps
    from lesion.explain.cam import FAST_METHODS, compute_cams, find_target_layer

    image, source = _image()
    prep = Preprocessing(size=SIZE, mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5))
    x = torch.from_numpy(normalize(prepare_image(image, prep)[None], prep))
    models = _models()
    rows = []
    for kind, (model, desc) in models.items():
        layer = find_target_layer(model, SIZE)
        for m in FAST_METHODS:
            t = _median_time(lambda: compute_cams(model, x, 1, [m], target_layer=layer), args.runs)
            rows.append((kind, m, t, args.runs))
        if kind == "multitask":
            rows.append((kind, "attention mask", _median_time(lambda: attention_maps(model, x), args.runs), args.runs))
    if args.scorecam:
        model = models["classifier"][0]
        t0 = time.perf_counter()
        compute_cams(model, x, 1, ["scorecam"])
        rows.append(("classifier", "scorecam (1 run)", time.perf_counter() - t0, 1))
    lines = [
        f"bench_cam: one {SIZE}x{SIZE} image ({source}), CPU, torch threads {torch.get_num_threads()}, "
        f"median of {args.runs} runs after a warm-up; target <= {TARGET_S:.0f} s per fast method",
        *(f"  {k}: {d}" for k, (_, d) in models.items()),
        "",
        f"{'model':<11} {'method':<18} {'seconds':>8} {'runs':>5} {'<= target':>10}",
    ]
    for kind, m, t, n in rows:
        ok = "yes" if t <= TARGET_S else ("n/a" if m.startswith("scorecam") else "NO")
        lines.append(f"{kind:<11} {m:<18} {t:8.3f} {n:5d} {ok:>10}")
    fast = [t for k, m, t, n in rows if not m.startswith("scorecam")]
    lines.append("")
    lines.append(f"all six fast methods + attention, one image: {sum(fast):.2f} s in total (both models)")
    text = "\n".join(lines)
    print(text)
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(text + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
