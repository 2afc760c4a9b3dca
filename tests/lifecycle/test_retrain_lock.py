"""Two `retrain --once` jobs started together: exactly one runs the cycle and publishes, the
other finds the Redis lock taken and exits without touching anything (real CLI, Kafka, Redis)."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest
from retrain_support import Deployment, cli

from streamer.lifecycle import registry
from streamer.state.client import connect

pytestmark = pytest.mark.integration


def test_two_concurrent_retrain_jobs_publish_exactly_once(
    make_deployment: Callable[..., Deployment], tiny_bundle: Path, tmp_path: Path
) -> None:
    dep = make_deployment()
    with dep.worker(tiny_bundle):
        dep.shift_window()
    # a longer training keeps the first job's cycle (and lock) open well past the moment the
    # second job, started at the same time, has imported torch and tries the lock
    dep = dep.retrain(epochs=24)
    config = dep.write_config(tmp_path / "settings.yaml")
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

    history = dep.history()
    assert [h["decision"] for h in history] == ["published"]
    assert history[0]["training"]["epochs"] == 24  # the --config file was honoured
    assert dep.serving() == history[0]["version"]
    redis_settings = dep.settings.redis
    lock = registry.lock_key(redis_settings.key_prefix)
    assert connect(redis_settings.url).exists(lock) == 0  # released by its holder
