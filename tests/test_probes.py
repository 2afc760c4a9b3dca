"""The probe server's port rule: a port the operator chose must be free (one clear error line
otherwise), while the default port steps aside to a free one so a second job on the same host
starts (real sockets)."""

from __future__ import annotations

import socket
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
from helpers import free_ports
from prometheus_client import CollectorRegistry

from schemas.errors import ConfigError
from streamer.probes import DEFAULT_PORT, Probes, serve

PROBES = Probes(CollectorRegistry(), healthy=lambda: True, ready=lambda: False)


@contextmanager
def occupied(port: int) -> Iterator[None]:
    """``port`` held by a listening socket that is not ours to serve on."""
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 0)
        try:
            s.bind(("0.0.0.0", port))
            s.listen()
        except OSError:
            pass  # already taken by someone else: just as good
        yield


def test_a_chosen_port_that_is_taken_is_a_configuration_error() -> None:
    port = free_ports(1)[0]
    with occupied(port), pytest.raises(ConfigError, match=f"metrics port {port} cannot be bound"):
        serve(PROBES, port)


def test_the_default_port_steps_aside_when_taken() -> None:
    with occupied(DEFAULT_PORT):
        server = serve(PROBES, None)
    try:
        assert server.port != DEFAULT_PORT
        with urllib.request.urlopen(f"http://127.0.0.1:{server.port}/healthz", timeout=5) as r:
            assert r.status == 200
    finally:
        server.stop()


def test_the_worker_command_reports_a_taken_port_in_one_line_before_loading_a_model() -> None:
    port = free_ports(1)[0]
    argv = [sys.executable, "-m", "streamer.cli", "worker", "--metrics-port", str(port),
            "--model", "/nonexistent", "--log-level", "ERROR"]  # fmt: skip
    with occupied(port):
        done = subprocess.run(argv, capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        f"error: metrics port {port} cannot be bound (Address already in use); set another "
        "with --metrics-port or AMA_METRICS__PORT, or leave it unset to pick a free one"
    ]
