"""`ama-stream eval --suites streams-smd` end to end on the shipped SMD slice: streams found on
disk, scored, replayed through the real script, judged, written into the report and its JSON,
and served from the cache the second time."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from typer.testing import CliRunner

from streamer.cli import app

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures"


def _smd_folder(root: Path) -> None:
    for sub in ("train", "test", "test_label"):
        (root / "smd" / sub).mkdir(parents=True)
    np.save(root / "smd/train/m.npy", np.load(FIXTURES / "smd_machine-1-6_train_head2000.npy"))
    np.save(root / "smd/test/m.npy", np.load(FIXTURES / "smd_machine-1-6_test_slice.npy"))
    labels = np.load(FIXTURES / "smd_machine-1-6_test_slice_labels.npy")
    np.savetxt(root / "smd/test_label/m.txt", labels, fmt="%d")


def test_the_stream_suite_writes_its_block_and_reuses_its_cache(
    tmp_path: Path, redis_url: str
) -> None:
    _smd_folder(tmp_path / "data")
    out = tmp_path / "RESULTS.md"
    out.write_text("# tabular tables\n\nkept as they are\n")
    argv = [
        "eval", "--data-dir", str(tmp_path / "data"), "--suites", "streams-smd",
        "--detectors", "PCA-win,IForest", "--out", str(out),
        "--cache-dir", str(tmp_path / "cache"), "--redis-url", redis_url,
    ]  # fmt: skip
    first = CliRunner().invoke(app, argv)
    assert first.exit_code == 0, first.output
    text = out.read_text()
    assert text.startswith("# tabular tables\n\nkept as they are\n")
    assert text.count("<!-- streams:begin -->") == 1 and "| PCA-win |" in text
    summary = json.loads(out.with_name("RESULTS-streams.json").read_text())
    assert set(summary["chosen_policy"]) == {"PCA-win", "IForest"}
    rows = [r for r in summary["streams"] if r["policy"] == summary["chosen_policy"]["IForest"]]
    (iforest,) = [r for r in rows if r["detector"] == "IForest"]
    assert iforest["stream"] == "m" and iforest["event"]["segments"] == 5
    assert 0.0 <= iforest["event"]["recall"] <= 1.0 and 0.0 <= iforest["point"]["auroc"] <= 1.0

    again = CliRunner().invoke(app, argv)
    assert again.exit_code == 0, again.output
    assert "2 jobs cached, 0 to run" in again.output
    assert out.read_text().count("<!-- streams:begin -->") == 1
