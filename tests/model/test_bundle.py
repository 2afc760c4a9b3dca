"""Missing, truncated, tampered and incompatible bundles are refused with a BundleError."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from model import AMADetector, BundleError
from model.testing import train_tiny_detector
from schemas.errors import AmaStreamError


@pytest.fixture(scope="module")
def bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return train_tiny_detector(dim=6, seed=0).save(tmp_path_factory.mktemp("b") / "bundle")


def _copy(bundle: Path, tmp_path: Path) -> Path:
    dst = tmp_path / "copy"
    shutil.copytree(bundle, dst)
    return dst


def _refused(path: Path, problem: str) -> BundleError:
    with pytest.raises(BundleError) as info:
        AMADetector.load(path)
    assert info.value.problem == problem, str(info.value)
    assert isinstance(info.value, AmaStreamError)
    return info.value


def test_loads(bundle: Path) -> None:
    assert AMADetector.load(bundle).input_shape == (6,)


def test_missing_dir(tmp_path: Path) -> None:
    _refused(tmp_path / "nope", "missing")


def test_missing_weights(bundle: Path, tmp_path: Path) -> None:
    p = _copy(bundle, tmp_path)
    (p / "weights.safetensors").unlink()
    assert "weights.safetensors" in str(_refused(p, "missing"))


def test_truncated_weights(bundle: Path, tmp_path: Path) -> None:
    p = _copy(bundle, tmp_path)
    w = p / "weights.safetensors"
    w.write_bytes(w.read_bytes()[:100])
    _refused(p, "truncated")


def test_truncated_metadata(bundle: Path, tmp_path: Path) -> None:
    p = _copy(bundle, tmp_path)
    m = p / "metadata.json"
    m.write_text(m.read_text()[:50])
    _refused(p, "truncated")


def test_tampered_weights(bundle: Path, tmp_path: Path) -> None:
    p = _copy(bundle, tmp_path)
    w = p / "weights.safetensors"
    data = bytearray(w.read_bytes())
    data[-5] ^= 0xFF  # flip bits inside a tensor, same length
    w.write_bytes(bytes(data))
    _refused(p, "tampered")


def test_tampered_calibration(bundle: Path, tmp_path: Path) -> None:
    p = _copy(bundle, tmp_path)
    m = p / "metadata.json"
    meta = json.loads(m.read_text())
    meta["calibration"]["mu"][0] += 1.0
    m.write_text(json.dumps(meta))
    _refused(p, "tampered")


def test_incompatible_format_version(bundle: Path, tmp_path: Path) -> None:
    p = _copy(bundle, tmp_path)
    m = p / "metadata.json"
    meta = json.loads(m.read_text())
    meta["format_version"] = 99
    m.write_text(json.dumps(meta))
    assert "format_version" in str(_refused(p, "incompatible"))


def test_incompatible_shape(bundle: Path, tmp_path: Path) -> None:
    """Weights of a 9-dim model under a 6-dim config: refused, not silently mis-scored."""
    other = train_tiny_detector(dim=9, seed=0).save(tmp_path / "nine")
    p = _copy(bundle, tmp_path)
    shutil.copy(other / "weights.safetensors", p / "weights.safetensors")
    meta = json.loads((p / "metadata.json").read_text())
    meta9 = json.loads((other / "metadata.json").read_text())
    meta["weights"] = meta9["weights"]
    from model.bundle import compute_model_version

    meta["model_version"] = compute_model_version((p / "weights.safetensors").read_bytes(), meta)
    (p / "metadata.json").write_text(json.dumps(meta))
    _refused(p, "incompatible")


def test_no_pickle_in_bundle(bundle: Path) -> None:
    assert sorted(f.name for f in bundle.iterdir()) == ["metadata.json", "weights.safetensors"]
    assert (bundle / "weights.safetensors").read_bytes()[:8] != b"\x80\x02\x8a\x0a"


def test_fixture_smd_slice_trains_and_scores(tmp_path: Path) -> None:
    """The shipped SMD slice loads without pickle and runs through train -> bundle -> score."""
    import numpy as np

    from model import commands

    root = Path(__file__).resolve().parents[1] / "fixtures"
    test = np.load(root / "smd_machine-1-6_test_slice.npy", allow_pickle=False)
    labels = np.load(root / "smd_machine-1-6_test_slice_labels.npy", allow_pickle=False)
    assert test.shape == (1500, 38) and labels.shape == (1500,)
    det = commands.train(
        root / "smd_machine-1-6_train_head2000.npy", tmp_path / "smd", epochs=1, batch_size=256,
        progress=False, config={"critic_steps": 1},
    )  # fmt: skip
    loaded = AMADetector.load(tmp_path / "smd")
    np.testing.assert_array_equal(loaded.score(test[:50]), det.score(test[:50]))
