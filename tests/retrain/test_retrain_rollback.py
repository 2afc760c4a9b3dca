"""`ama-stream model rollback` and `model list`: the workers go back to the previous version
without a restart, and forward again with --to (real Kafka + Redis)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import orjson
import pytest
from retrain_support import (
    Deployment,
    normal,
    running_worker,
    score_events,
    send,
    shifted,
    wait_for_version,
    write_config,
)
from typer.testing import CliRunner

from model.detector import AMADetector
from streamer import registry
from streamer.cli import app
from streamer.retrain import run_cycle
from streamer.state import connect

pytestmark = pytest.mark.integration


def test_rollback_restores_the_previous_version_in_the_workers(
    make_deployment: Callable[..., Deployment], champion_bundle: Path, tmp_path: Path
) -> None:
    dep = make_deployment()
    s = dep.settings
    config = str(write_config(s, tmp_path / "settings.yaml"))
    runner = CliRunner()
    champion = AMADetector.load(champion_bundle).model_version
    with running_worker(s, champion_bundle) as slot:
        send(s, normal(400, seed=5), seed=1)
        send(s, shifted(1200, seed=6), seed=2)
        score_events(s, expect=1600)
        published = run_cycle(s)
        assert published.decision == "published" and published.entry is not None
        new = published.entry["version"]
        wait_for_version(slot, new)

        back = runner.invoke(app, ["model", "rollback", "--config", config])
        assert back.exit_code == 0, back.output
        assert f"rolled back from {new} to {champion}" in back.output
        wait_for_version(slot, champion)
        after = send(s, normal(200, seed=8), seed=3)
        events = score_events(s, expect=1800)
        latest = {round(float(t), 6) for t in after.ts}
        assert {e["model_version"] for e in events if round(e["ts"], 6) in latest} == {champion}

        listing = runner.invoke(app, ["model", "list", "--config", config])
        assert listing.exit_code == 0, listing.output
        lines = listing.output.splitlines()
        assert lines[0] == f"serving: {champion}"
        assert lines[1].startswith("  published") and new in lines[1]
        assert lines[2].startswith("* rollback") and champion in lines[2]

        forward = runner.invoke(app, ["model", "rollback", "--to", new, "--config", config])
        assert forward.exit_code == 0, forward.output
        wait_for_version(slot, new)

    unknown = runner.invoke(app, ["model", "rollback", "--to", "ama-0000", "--config", config])
    assert unknown.exit_code != 0 and "not in the history" in str(unknown.exception)
    client = connect(s.redis.url)
    history = registry.history(client, s.redis.key_prefix)
    assert [(h["decision"], h["version"]) for h in history] == [
        ("published", new), ("rollback", champion), ("rollback", new),
    ]  # fmt: skip
    as_json = runner.invoke(app, ["model", "list", "--json", "--config", config])
    assert [orjson.loads(line)["decision"] for line in as_json.output.splitlines()[1:]] == [
        "published", "rollback", "rollback",
    ]  # fmt: skip
