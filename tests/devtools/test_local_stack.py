"""`ama-stream local up/status/down` on ports of its own, so the shared test stack is untouched."""

from __future__ import annotations

import socket
import subprocess
import sys
from pathlib import Path

import pytest
import redis

from streamer.devtools.local_stack import LocalStack, _cluster_id

pytestmark = pytest.mark.integration

PORTS = ["--kafka-port", "19192", "--controller-port", "19193", "--redis-port", "16479"]


def _cli(*args: str, state: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "streamer.cli", *args, "--state-dir", str(state), *PORTS],
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )


def _open(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


def test_up_status_down_are_idempotent(tmp_path: Path) -> None:
    state = tmp_path / "stack"
    try:
        first = _cli("local", "up", state=state)
        assert first.returncode == 0, first.stderr
        assert "127.0.0.1:19192" in first.stdout and "redis://127.0.0.1:16479/0" in first.stdout
        pids = (state / "kafka.pid").read_text(), (state / "redis.pid").read_text()

        again = _cli("local", "up", state=state)
        assert again.returncode == 0, again.stderr
        assert ((state / "kafka.pid").read_text(), (state / "redis.pid").read_text()) == pids

        status = _cli("local", "status", state=state)
        assert status.returncode == 0
        assert status.stdout.count("ready") == 2

        # What the demo relies on to stop only what it started: nothing, here.
        stack = LocalStack(state, kafka_port=19192, controller_port=19193, redis_port=16479)
        assert stack.up() == []
        redis.Redis.from_url(stack.redis_url).set("ama:model:current", b"survives")
        assert stack.down(["redis"]) == [f"redis: stopped (pid {pids[1].split()[0]})"]
        assert _open(19192) and not _open(16479)
        assert stack.up() == ["redis"]  # and Redis kept its data across the restart
        assert redis.Redis.from_url(stack.redis_url).get("ama:model:current") == b"survives"
    finally:
        down = _cli("local", "down", state=state)
    assert down.returncode == 0, down.stderr
    assert "kafka: stopped" in down.stdout and "redis: stopped" in down.stdout
    assert not _open(19192) and not _open(19193) and not _open(16479)

    status = _cli("local", "status", state=state)
    assert status.returncode == 1
    assert status.stdout.count("stopped") == 2
    assert "not running" in _cli("local", "down", state=state).stdout


def test_down_leaves_a_process_it_did_not_start(tmp_path: Path) -> None:
    state = tmp_path / "stack"
    state.mkdir()
    bystander = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        # A stale PID file naming someone else's process must not get it killed.
        (state / "redis.pid").write_text(f"{bystander.pid}\nredis-server\n")
        down = _cli("local", "down", state=state)
        assert down.returncode == 0
        assert bystander.poll() is None
    finally:
        bystander.kill()


def test_cluster_ids_never_look_like_an_option() -> None:
    # One url-safe base64 id in 64 starts with '-', which kafka-storage's parser reads as a
    # flag ("argument --cluster-id/-t: expected one argument"); CI once hit it.
    ids = [_cluster_id() for _ in range(2000)]
    assert all(len(i) == 22 and not i.startswith("-") for i in ids)
    assert len(set(ids)) == len(ids)
