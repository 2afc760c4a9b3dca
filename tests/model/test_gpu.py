"""The GPU path (``pytest -m gpu``; skipped without CUDA). bench/gpu-check.sh runs these on a GPU
machine: scores on CUDA equal CPU scores within a stated tolerance, one host-to-device copy per
batch from page-locked memory, a batch that does not fit in GPU memory is split instead of
failing, and training and retraining run on CUDA."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from model import AMADetector
from model.testing import synthetic_normal, synthetic_outliers

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
]

#: float32 on the GPU against float32 on the CPU: different kernels sum in different orders;
#: a(x) is a sum of z-scores of order 1, so 1e-4 relative (plus 1e-4 absolute near 0) is far
#: below anything a threshold could notice.
FP32_TOLERANCE = {"rtol": 1e-4, "atol": 1e-4}


@pytest.fixture(scope="module")
def detector() -> AMADetector:
    det = AMADetector(kind="vector", hidden=64, critic_hidden=64, feat_dim=32, critic_steps=2)
    return det.fit(synthetic_normal(512, 38, 0), epochs=4, batch_size=64, seed=0, progress=False)


def test_cuda_scores_equal_cpu_scores(detector: AMADetector) -> None:
    x = np.concatenate([synthetic_normal(2000, 38, 3), synthetic_outliers(50, 38, 3)])
    cpu = detector.to("cpu", "float32").score(x)
    cuda = detector.to("cuda", "float32").score(x)
    np.testing.assert_allclose(cuda, cpu, **FP32_TOLERANCE)
    half = detector.to("cuda", "bfloat16").score(x)
    # bfloat16 keeps 8 bits of mantissa: scores move by about 1 %, the ranking barely.
    assert np.corrcoef(half, cpu)[0, 1] > 0.999
    detector.to("cpu", "float32")


def test_one_host_to_device_copy_per_batch_from_pinned_memory(detector: AMADetector) -> None:
    detector.to("cuda", "float32")
    x = synthetic_normal(1000, 38, 4)
    detector.score(x)  # warm-up: allocator, kernels
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CUDA]) as prof:
        detector.score(x)
    copies = [e.name for e in prof.events() if "Memcpy HtoD" in e.name]
    assert len(copies) == 1, copies
    assert "Pinned" in copies[0], copies  # page-locked: the copy is asynchronous (DMA)
    detector.to("cpu")


def test_a_batch_that_does_not_fit_in_gpu_memory_is_split(
    detector: AMADetector, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Fill the device so that only a sliver is free, then score a batch whose activations
    need more: the detector halves its chunk until it fits, and the scores are unchanged."""
    detector.to("cuda", "float32")
    x = synthetic_normal(4096, 38, 5)
    expected = detector.score(x)
    torch.cuda.empty_cache()
    free, _ = torch.cuda.mem_get_info()
    ballast: Any = torch.empty(max(0, free - 48 * 2**20), dtype=torch.uint8, device="cuda")
    try:
        monkeypatch.setattr("model.detector.SCORE_CHUNK", 1 << 22)  # one chunk would be ~GBs
        big = np.tile(x, (1024, 1))  # 4M rows
        scores = detector.score(big)
    finally:
        del ballast
        torch.cuda.empty_cache()
    np.testing.assert_allclose(scores[: len(x)], expected, **FP32_TOLERANCE)
    detector.to("cpu")


def test_training_and_retraining_run_on_cuda(tmp_path: Path) -> None:
    from schemas.settings import load_settings
    from streamer.lifecycle.retrain import train_challenger
    from streamer.lifecycle.training_set import TrainingSet

    champion = AMADetector(kind="vector", hidden=64, critic_hidden=64, feat_dim=32)
    champion.fit(synthetic_normal(512, 38, 6), epochs=2, batch_size=64, device="cuda",
                 progress=False)  # fmt: skip
    assert champion.training["device"].startswith("cuda")
    path = champion.to("cpu").save(tmp_path / "champion")
    settings = load_settings(retrain={"device": "cuda", "epochs": 2, "batch_size": 64})
    rows = synthetic_normal(600, 38, 7)
    data = TrainingSet(rows, rows[:50], ["k"] * 50, rows[:0], np.zeros(0, bool))
    challenger = train_challenger(AMADetector.load(path), data, settings)
    assert challenger.training["device"].startswith("cuda")
    assert np.isfinite(challenger.to("cpu").score(rows)).all()
