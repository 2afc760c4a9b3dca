"""A retrain job SIGKILLed in the middle of writing its bundle: the workers keep serving the
champion, no partial bundle is visible, and the lock expires so the next job recovers
(real CLI, Kafka, Redis)."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from retrain_support import Deployment, cli, normal

from model.detector import AMADetector
from model.store import PARTIAL_PREFIX
from streamer.lifecycle import registry
from streamer.lifecycle.retrain import run_cycle
from streamer.state.client import connect

pytestmark = pytest.mark.integration

# Runs inside the job before the CLI: the moment the bundle's weights are on disk and its
# metadata is about to be written, the process kills itself with SIGKILL (no cleanup runs).
DIE_MID_WRITE = """
import os, signal
import model.bundle as bundle
_write = bundle._atomic_write
def _die_before_metadata(target, data):
    if target.name == bundle.METADATA:
        os.kill(os.getpid(), signal.SIGKILL)
    _write(target, data)
bundle._atomic_write = _die_before_metadata
"""


def test_job_killed_mid_write_leaves_champion_serving_and_no_partial_bundle(
    make_deployment: Callable[..., Deployment], tiny_bundle: Path, tmp_path: Path
) -> None:
    dep = make_deployment().retrain(time_budget_s=4, lock_ttl_s=30)
    s = dep.settings
    champion = AMADetector.load(tiny_bundle).model_version
    client, prefix = connect(s.redis.url), s.redis.key_prefix
    with dep.worker(tiny_bundle) as worker:
        dep.shift_window()
        config = dep.write_config(tmp_path / "settings.yaml")
        job = subprocess.run(
            cli("retrain", "--once", "--config", str(config), wrapper=DIE_MID_WRITE),
            capture_output=True, timeout=120,
        )  # fmt: skip
        assert job.returncode == -9, job.stderr.decode()
        partial = [p for p in dep.store.iterdir() if p.name.startswith(PARTIAL_PREFIX)]
        assert len(partial) == 1 and (partial[0] / "weights.safetensors").is_file()
        assert not (partial[0] / "metadata.json").exists()  # it really died mid-write
        kept = sorted(p.name for p in dep.store.iterdir() if p not in partial)
        assert kept == [champion, "serving.json"]  # the published champion; no new version
        assert dep.serving() == champion and dep.history() == []
        assert 0 < client.pttl(registry.lock_key(prefix)) <= 30_000  # the dead job's, expiring

        later = dep.send(normal(300, seed=8), seed=3)
        events = dep.score_events(expect=1900)
        latest = {round(float(t), 6) for t in later.ts}
        assert {e["model_version"] for e in events if round(e["ts"], 6) in latest} == {champion}
        assert worker.model_version == champion

        assert run_cycle(s).decision == "locked"  # the dead job's lock still stands
        time.sleep(max(0.0, client.pttl(registry.lock_key(prefix)) / 1000) + 0.1)
        result = run_cycle(s)
    assert result.decision == "published"
    version = result.entry["version"]  # type: ignore[index]
    assert sorted(p.name for p in dep.store.iterdir()) == sorted(
        [champion, version, "serving.json"]
    )
