"""Two `retrain --once` jobs started together: exactly one runs the cycle and publishes, the
other finds the Redis lock taken and exits without touching anything (real CLI, Kafka, Redis)."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest
from retrain_support import (
    Deployment,
    cli,
    normal,
    running_worker,
    score_events,
    send,
    shifted,
    with_retrain,
    write_config,
)

from streamer import registry
from streamer.state import connect

pytestmark = pytest.mark.integration


def test_two_concurrent_retrain_jobs_publish_exactly_once(
    make_deployment: Callable[..., Deployment], champion_bundle: Path, tmp_path: Path
) -> None:
    dep = make_deployment()
    s = dep.settings
    with running_worker(s, champion_bundle):
        send(s, normal(400, seed=5), seed=1)
        send(s, shifted(1200, seed=6), seed=2)
        score_events(s, expect=1600)
    # a longer training keeps the first job's cycle (and lock) open well past the moment the
    # second job, started at the same time, has imported torch and tries the lock
    s = with_retrain(s, epochs=24)
    config = write_config(s, tmp_path / "settings.yaml")
    argv = cli("retrain", "--once", "--config", str(config), "--log-level", "WARNING")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}  # two jobs on 2 shared cores
    jobs = [
        subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
        for _ in "ab"
    ]
    outputs = [job.communicate(timeout=120) for job in jobs]
    assert [job.returncode for job in jobs] == [0, 0], [err.decode() for _, err in outputs]
    decisions = sorted(out.decode().splitlines()[0] for out, _ in outputs)
    assert decisions == ["decision: locked", "decision: published"]

    client = connect(s.redis.url)
    history = registry.history(client, s.redis.key_prefix)
    assert [h["decision"] for h in history] == ["published"]
    assert history[0]["training"]["epochs"] == 24  # the --config file was honoured
    assert registry.current(client, s.redis.key_prefix)["version"] == history[0]["version"]  # type: ignore[index]
    assert client.exists(registry.lock_key(s.redis.key_prefix)) == 0  # released by its holder
