"""The built wheel works on its own: installed into a fresh virtualenv and run from an unrelated
folder, `ama-stream` starts its local stack, trains, replays, scores and stops again. This is
also what the container image installs (deploy/docker/Dockerfile): the image's HEALTHCHECK is
run against that worker, and the command line of its entry point and of every container in
the Kubernetes manifests (deploy/k8s) parses with the installed CLI.

The fresh virtualenv gets the wheel without its dependencies and borrows the third-party
packages of the running environment by path (torch is several GB; downloading it again proves
nothing about our package). The borrowed folder is added as a plain path, so the editable
install of this checkout that lives there is not activated: every ama-stream module the test
runs comes from the wheel.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest
from deploy_support import container_argvs, image_instruction
from helpers import free_ports

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parent.parent
# What the installed package needs at run time besides code.
PACKAGE_DATA = (
    "streamer/state/verdicts.lua",
    "streamer/devtools/kafka/pom.xml",
    "streamer/devtools/kafka/server.properties",
    "streamer/devtools/kafka/log4j2.yaml",
    "streamer/devtools/demo_data/smd-machine-2-7.npz",
    "streamer/dashboard/static/index.html",
    "streamer/dashboard/static/app.js",
    "streamer/dashboard/static/app.css",
    "streamer/dashboard/static/vendor/uPlot.iife.min.js",
    "streamer/dashboard/static/vendor/uPlot.min.css",
    "streamer/dashboard/static/vendor/uPlot.LICENSE",
)

# Run by the fresh virtualenv's interpreter in the unrelated folder: topics, a tiny model, a
# replay, one worker, the score events read back, and the dashboard serving its page's files.
ROUND_TRIP = """
import json, os, signal, subprocess, sys, time, urllib.request
import numpy as np
from confluent_kafka import Consumer
from confluent_kafka.admin import AdminClient, NewTopic

import streamer
assert streamer.__file__.startswith(sys.prefix), streamer.__file__  # the wheel, not the checkout
bootstrap, redis_url, port = sys.argv[1], sys.argv[2], sys.argv[3]
health, metrics_port = json.loads(sys.argv[4]), sys.argv[5]
cli = [os.path.join(sys.prefix, "bin", "ama-stream")]
topics = ["in", "scores", "alerts", "dlq"]
admin = AdminClient({"bootstrap.servers": bootstrap})
for f in admin.create_topics([NewTopic(t, 1, 1) for t in topics]).values():
    f.result(30)
rows = np.random.default_rng(0).normal(size=(300, 8)).astype(np.float32)
np.save("rows.npy", rows)
subprocess.run([*cli, "train", "--data", "rows.npy", "--out", "bundle", "--epochs", "1",
                "--members", "1", "--batch-size", "64"], check=True, capture_output=True)
subprocess.run([*cli, "produce", "--data", "rows.npy", "--topic", "in", "--bootstrap",
                bootstrap, "--limit", "100"], check=True, capture_output=True)
worker = subprocess.Popen([*cli, "worker", "--bootstrap", bootstrap, "--group", "g",
    "--input-topic", "in", "--scores-topic", "scores", "--alerts-topic", "alerts",
    "--dlq-topic", "dlq", "--model", "bundle", "--redis-url", redis_url,
    "--metrics-port", metrics_port], stderr=subprocess.DEVNULL)
consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": "check",
                     "auto.offset.reset": "earliest"})
consumer.subscribe(["scores"])
seen, deadline = 0, time.monotonic() + 90
while seen < 100 and time.monotonic() < deadline:
    seen += sum(m.error() is None for m in consumer.consume(100, timeout=0.5))
consumer.close()
# The image's HEALTHCHECK (python is the virtualenv's, as on the image's PATH).
assert health[:2] == ["CMD", "python"], health
healthy = subprocess.run([sys.executable, *health[2:]], timeout=10,
                         env={**os.environ, "AMA_METRICS__PORT": metrics_port}).returncode
worker.send_signal(signal.SIGTERM)
worker_exit = worker.wait(60)
dashboard = subprocess.Popen([*cli, "dashboard", "--bootstrap", bootstrap, "--redis-url",
    redis_url, "--input-topic", "in", "--scores-topic", "scores", "--alerts-topic", "alerts",
    "--dlq-topic", "dlq", "--port", port], stderr=subprocess.DEVNULL)
script, deadline = b"", time.monotonic() + 90
while not script and time.monotonic() < deadline:
    try:
        url = f"http://127.0.0.1:{port}/static/vendor/uPlot.iife.min.js"
        script = urllib.request.urlopen(url, timeout=2).read()
    except OSError:
        time.sleep(0.3)
dashboard.send_signal(signal.SIGTERM)
print(json.dumps({"scored": seen, "worker_exit": worker_exit, "healthcheck": healthy,
                  "uplot": script.startswith(b"/*! https://github.com/leeoniya/uPlot"),
                  "dashboard_exit": dashboard.wait(60)}))
"""


def _run(argv: list[str], cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(
        argv, cwd=cwd, env=env, capture_output=True, text=True, timeout=300, check=False
    )
    assert done.returncode == 0, f"{argv}: {done.stdout}{done.stderr}"
    return done


def test_the_wheel_runs_the_local_stack_and_a_round_trip_from_anywhere(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    _run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
         "-w", str(tmp_path / "dist"), str(ROOT)],
        elsewhere, env,
    )  # fmt: skip
    (wheel,) = (tmp_path / "dist").glob("ama_stream-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    assert set(PACKAGE_DATA) <= names and not any(n.startswith("tests/") for n in names)

    venv = tmp_path / "venv"
    _run([sys.executable, "-m", "venv", "--without-pip", str(venv)], elsewhere, env)
    python = venv / "bin" / "python"
    purelib = "import sysconfig; print(sysconfig.get_paths()['purelib'])"
    site = Path(_run([str(python), "-c", purelib], elsewhere, env).stdout.strip())
    (site / "borrowed-dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    _run([sys.executable, "-m", "pip", "--python", str(python), "install", "-q", "--no-deps",
          str(wheel)], elsewhere, env)  # fmt: skip
    cli = str(venv / "bin" / "ama-stream")

    assert "worker" in _run([cli, "--help"], elsewhere, env).stdout
    # The image's entry point and every manifest's container: their command lines parse.
    argvs = {"Dockerfile": [*image_instruction("ENTRYPOINT"), *image_instruction("CMD")],
             **container_argvs()}  # fmt: skip
    for where, argv in argvs.items():
        assert argv[0] == "ama-stream", where
        usage = _run([cli, *argv[1:], "--help"], elsewhere, env).stdout
        command = " ".join(a for a in argv[:3] if not a.startswith("-"))
        assert f"Usage: {command} [OPTIONS]" in usage, f"{where}: {usage[:200]}"
    kafka, controller, redis, dashboard, metrics = free_ports(5)
    stack = ["--state-dir", str(tmp_path / "stack"), "--kafka-port", str(kafka),
             "--controller-port", str(controller), "--redis-port", str(redis)]  # fmt: skip
    try:
        _run([cli, "local", "up", *stack], elsewhere, env)
        out = _run(
            [str(python), "-c", ROUND_TRIP, f"127.0.0.1:{kafka}", f"redis://127.0.0.1:{redis}/0",
             str(dashboard), json.dumps(image_instruction("HEALTHCHECK")), str(metrics)],
            elsewhere, env,
        )  # fmt: skip
        assert json.loads(out.stdout.strip().splitlines()[-1]) == {
            "scored": 100, "worker_exit": 0, "healthcheck": 0, "uplot": True,
            "dashboard_exit": 0,
        }  # fmt: skip
    finally:
        down = _run([cli, "local", "down", *stack], elsewhere, env)
    assert "kafka: stopped" in down.stdout and "redis: stopped" in down.stdout
