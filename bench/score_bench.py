"""Scoring micro-benchmark: records/s of ``AMADetector.score`` by batch size.

    python bench/score_bench.py [--threads 1] [--seconds 1.0] [--resnet] [--faithful-mlp]
                                [--devices cpu,cuda] [--precisions float32,bfloat16]

Models: a 38-dim vector detector (default config with its 3 members, a single member, and
optionally the faithful single 256-wide-critic model) and a 28x28 image detector (light DCGAN
default; ``--resnet`` adds the faithful ResNet one).
Weights come from a very short training run: speed does not depend on their values. Runs on
the CPU and, when present, on CUDA. Numbers are wall-clock throughput of the whole ``score``
call (normalisation, host-to-device copy, forward, copy back), median of 3 timed windows.
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
import torch

from model import AMADetector
from model.networks import FAITHFUL

BATCHES = (1, 32, 256, 1024, 4096, 16384)


def _vector(config: dict[str, object]) -> tuple[AMADetector, np.ndarray]:
    rng = np.random.default_rng(0)
    X = rng.normal(size=(512, 38)).astype(np.float32)
    det = AMADetector(kind="vector", **config).fit(X, epochs=1, batch_size=256, progress=False)
    return det, rng.normal(size=(max(BATCHES), 38)).astype(np.float32)


def _image(arch: str) -> tuple[AMADetector, np.ndarray]:
    rng = np.random.default_rng(0)
    X = rng.uniform(0, 255, size=(16, 28, 28)).astype(np.float32)
    det = AMADetector(kind="image", arch=arch, critic_steps=1)
    det.fit(X, epochs=1, batch_size=16, progress=False)
    return det, rng.uniform(0, 255, size=(max(BATCHES), 28, 28)).astype(np.float32)


def _rate(det: AMADetector, X: np.ndarray, batch: int, seconds: float) -> float:
    x = X[:batch]
    det.score(x)  # warm-up (allocator, kernel selection)
    rates = []
    for _ in range(3):
        n, t0 = 0, time.perf_counter()
        while True:
            det.score(x)
            n += batch
            dt = time.perf_counter() - t0
            if dt >= seconds / 3:
                break
        rates.append(n / dt)
    return statistics.median(rates)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1 core)")
    ap.add_argument("--seconds", type=float, default=1.0, help="timed seconds per cell")
    ap.add_argument("--resnet", action="store_true", help="also the faithful ResNet image model")
    ap.add_argument("--faithful-mlp", action="store_true", help="also the 256-wide MLP critic")
    ap.add_argument(
        "--max-image-batch", type=int, default=1024, help="skip larger image batches on the CPU"
    )
    ap.add_argument(
        "--devices", default=None, help="comma-separated (default: cpu, and cuda if any)"
    )
    ap.add_argument("--precisions", default="float32,bfloat16", help="scoring precisions")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    models: list[tuple[str, AMADetector, np.ndarray]] = []
    det, X = _vector({})
    models.append(("vector-38 (default, 3 members)", det, X))
    det, X = _vector({"members": 1})
    models.append(("vector-38 (1 member)", det, X))
    if args.faithful_mlp:
        det, X = _vector(dict(FAITHFUL))
        models.append(("vector-38 (faithful 256)", det, X))
    det, X = _image("dcgan")
    models.append(("image-28x28 dcgan", det, X))
    if args.resnet:
        det, X = _image("resnet")
        models.append(("image-28x28 resnet", det, X))
    devices = (args.devices or "cpu" + (",cuda" if torch.cuda.is_available() else "")).split(",")
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none"
    print(f"torch {torch.__version__}, CPU threads {torch.get_num_threads()}, GPU {gpu}")
    print(f"| model | device | precision | {' | '.join(f'b={b}' for b in BATCHES)} |")
    print("|---|---|---|" + "---:|" * len(BATCHES))
    for name, det, X in models:
        for dev in devices:
            for precision in args.precisions.split(","):
                det.to(dev, precision)
                cells = []
                for b in BATCHES:
                    if det.kind == "image" and dev == "cpu" and b > args.max_image_batch:
                        cells.append("–")
                        continue
                    cells.append(f"{_rate(det, X, b, args.seconds):,.0f}")
                print(f"| {name} | {dev} | {precision} | {' | '.join(cells)} |", flush=True)
        det.to("cpu", "float32")


if __name__ == "__main__":
    main()
