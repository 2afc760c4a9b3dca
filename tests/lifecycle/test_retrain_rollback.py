"""`ama-stream model rollback` and `model list`: the workers go back to the previous version
without a restart, and forward again with --to (real Kafka + Redis)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import orjson
import pytest
from retrain_support import Deployment, normal, wait_for_version
from typer.testing import CliRunner

from model.detector import AMADetector
from streamer.cli import app
from streamer.lifecycle.retrain import run_cycle

pytestmark = pytest.mark.integration


def test_rollback_restores_the_previous_version_in_the_workers(
    make_deployment: Callable[..., Deployment], tiny_bundle: Path, tmp_path: Path
) -> None:
    dep = make_deployment()
    s = dep.settings
    config = str(dep.write_config(tmp_path / "settings.yaml"))
    runner = CliRunner()
    champion = AMADetector.load(tiny_bundle).model_version
    with dep.worker(tiny_bundle) as worker:
        dep.shift_window()
        published = run_cycle(s)
        assert published.decision == "published" and published.entry is not None
        new = published.entry["version"]
        wait_for_version(worker, new)

        back = runner.invoke(app, ["model", "rollback", "--config", config])
        assert back.exit_code == 0, back.output
        assert f"rolled back from {new} to {champion}" in back.output
        wait_for_version(worker, champion)
        after = dep.send(normal(200, seed=8), seed=3)
        events = dep.score_events(expect=1800)
        latest = {round(float(t), 6) for t in after.ts}
        assert {e["model_version"] for e in events if round(e["ts"], 6) in latest} == {champion}

        listing = runner.invoke(app, ["model", "list", "--config", config])
        assert listing.exit_code == 0, listing.output
        lines = listing.output.splitlines()
        assert lines[0] == f"serving: {champion}"
        assert lines[1].startswith("  published") and champion in lines[1] and "manual" in lines[1]
        assert lines[2].startswith("  published") and new in lines[2]
        assert lines[3].startswith("* rollback") and champion in lines[3]

        forward = runner.invoke(app, ["model", "rollback", "--to", new, "--config", config])
        assert forward.exit_code == 0, forward.output
        wait_for_version(worker, new)

    unknown = runner.invoke(app, ["model", "rollback", "--to", "ama-0000", "--config", config])
    assert unknown.exit_code != 0 and "not in the history" in str(unknown.exception)
    history = dep.history()
    assert [(h["decision"], h["version"]) for h in history] == [
        ("published", new), ("rollback", champion), ("rollback", new),
    ]  # fmt: skip
    as_json = runner.invoke(app, ["model", "list", "--json", "--config", config])
    entries = [orjson.loads(line) for line in as_json.output.splitlines()]  # every line is JSON
    assert [(e["decision"], e["serving"]) for e in entries] == [
        ("published", False), ("published", False), ("rollback", False), ("rollback", True),
    ]  # fmt: skip
