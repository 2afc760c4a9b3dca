"""`ama-stream demo`: the whole product on real data, end to end, in a few minutes.

1. the local Kafka + Redis (`LocalStack.up()`), unless a broker and Redis are given;
2. an AMA model trained on one SMD machine's training half (cached by content hash);
3. fresh topics (input with 4 partitions) and a fresh consumer group and Redis prefix;
4. two `ama-stream worker` processes;
5. the machine's labelled test half replayed as 4 contiguous streams (keys ``<machine>/0..3``,
   so both workers get work), plus a few malformed records for the DLQ;
6. live progress from the output topics, then precision/recall of the alerts against the
   labels, counted as the stream evaluation counts them (docs/stream-eval.md). Ctrl-C stops
   everything cleanly.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
from confluent_kafka.admin import AdminClient, NewTopic

from model.commands import train_cached
from streamer.devtools.demo_eval import episodes
from streamer.devtools.demo_view import Progress, watch
from streamer.devtools.local_stack import LocalStack, default_state_dir
from streamer.devtools.replay import Replay, replay
from streamer.evaluation.metrics import EventMetrics, event_metrics

__all__ = ["DemoData", "DemoResult", "load_demo_data", "run_demo"]

#: A slice of SMD machine-2-7 shipped as package data (demo_data/README.md: source, license).
SHIPPED = Path(__file__).resolve().parent / "demo_data" / "smd-machine-2-7.npz"
# Small networks and two critic steps: ~40 s of training on 2 CPU cores, test AUC ~0.91 on
# machine-2-7 (the faithful widths take minutes per epoch there and score the same).
MODEL = {"hidden": 128, "critic_hidden": 64, "feat_dim": 64, "critic_steps": 2}


@dataclass(frozen=True)
class DemoData:
    machine: str
    train: np.ndarray
    test: np.ndarray
    labels: np.ndarray
    source: str


def load_demo_data(machine: str, data_dir: Path | None) -> DemoData:
    """SMD from ``data_dir`` (``train/``, ``test/``, ``test_label/``), else the shipped slice."""
    if data_dir is not None:
        root = data_dir
        train = np.load(root / "train" / f"{machine}.npy", allow_pickle=False)
        test = np.load(root / "test" / f"{machine}.npy", allow_pickle=False)
        labels = np.loadtxt(root / "test_label" / f"{machine}.txt", dtype=np.int8)
        return DemoData(machine, train, test, labels, str(root))
    with np.load(SHIPPED, allow_pickle=False) as z:
        return DemoData("machine-2-7", z["train"], z["test"], z["test_label"], str(SHIPPED))


@dataclass(frozen=True)
class DemoResult:
    rows: int
    scored: int
    dead_letters: int
    score: EventMetrics
    seconds: float
    interrupted: bool
    services: str = ""  # what became of the Kafka + Redis the demo used (its last line)


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def _workers(n: int, argv: list[str], log_dir: Path) -> Iterator[list[subprocess.Popen[bytes]]]:
    """Start ``n`` worker processes; on exit SIGTERM them (drain and commit) and wait."""
    procs = []
    for i in range(n):
        log = (log_dir / f"worker-{i}.log").open("ab")
        port = ["--metrics-port", str(_free_port())]
        # Each worker ignores the terminal's Ctrl-C; the demo stops them itself, in order.
        procs.append(
            subprocess.Popen(
                [*argv, *port],
                stderr=log,
                stdout=log,
                preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN),
            )
        )
    try:
        yield procs
    finally:
        for p in procs:
            p.send_signal(signal.SIGTERM)
        for p in procs:
            try:
                p.wait(40)
            except subprocess.TimeoutExpired:
                p.kill()


@contextmanager
def _services(bootstrap: str | None, redis_url: str | None) -> Iterator[tuple[str, str, str]]:
    """The broker and Redis to use, and the line that says what became of them.

    Without both addresses the local stack is used; what the demo started it stops again at
    the end (also on Ctrl-C), and a stack that was already running is left as it was.
    """
    if bootstrap is not None and redis_url is not None:
        yield bootstrap, redis_url, "the given Kafka and Redis were used and left as they are"
        return
    stack = LocalStack(state_dir=default_state_dir())
    print("starting the local Kafka + Redis ...")
    started = stack.up()
    try:
        yield (
            bootstrap or stack.bootstrap,
            redis_url or stack.redis_url,
            "the local Kafka + Redis were stopped again"
            if started
            else "the local Kafka + Redis were already running and still are "
            "(`ama-stream local down` stops them)",
        )
    finally:
        stack.down(started)


def _worker_argv(bootstrap: str, redis_url: str, names: dict[str, str], run: str, bundle: Path):
    """The command line of one demo worker (the real `ama-stream worker`)."""
    return [
        sys.executable, "-m", "streamer.cli", "worker",
        "--bootstrap", bootstrap, "--group", f"demo-{run}",
        "--input-topic", names["input"], "--scores-topic", names["scores"],
        "--alerts-topic", names["alerts"], "--dlq-topic", names["dlq"],
        "--model", str(bundle), "--redis-url", redis_url, "--redis-prefix", f"demo-{run}",
        "--log-level", "WARNING",
    ]  # fmt: skip


def run_demo(
    *,
    bootstrap: str | None = None,
    redis_url: str | None = None,
    machine: str = "machine-2-7",
    data_dir: Path | None = None,
    limit: int | None = None,
    rate: float | None = 4000.0,
    workers: int = 2,
    streams: int = 4,
    epochs: int = 10,
    bad_fraction: float = 0.001,
    cache_dir: Path | None = None,
) -> DemoResult:
    """Run the demo; returns what it measured (also printed). See the module docstring."""
    cache_dir = cache_dir or default_state_dir().parent / "demo"
    cache_dir.mkdir(parents=True, exist_ok=True)
    with _services(bootstrap, redis_url) as (bootstrap, redis_url, services):
        data = load_demo_data(machine, data_dir)
        rows = len(data.test) if limit is None else min(limit, len(data.test))
        print(
            f"model: {data.machine} train split, {len(data.train)} rows, {epochs} epochs (cached)"
        )
        bundle = train_cached(data.train, cache_dir, data.machine, epochs=epochs, config=MODEL)
        print(f"data: {data.source} ({data.machine}); model: {bundle}")
        run = uuid.uuid4().hex[:8]
        names = {k: f"demo.{run}.{k}" for k in ("input", "scores", "alerts", "dlq")}
        admin = AdminClient({"bootstrap.servers": bootstrap})
        for future in admin.create_topics(
            [NewTopic(t, 4 if k == "input" else 1, 1) for k, t in names.items()]
        ).values():
            future.result(30)
        try:
            with _workers(
                workers, _worker_argv(bootstrap, redis_url, names, run, bundle), cache_dir
            ):
                result = _replay_and_watch(
                    bootstrap, names, data, rows, streams=streams, rate=rate,
                    bad_fraction=bad_fraction,
                )  # fmt: skip
        finally:
            for future in admin.delete_topics(list(names.values())).values():
                future.result(30)
    return replace(result, services=services)


def _replay_and_watch(
    bootstrap: str,
    names: dict[str, str],
    data: DemoData,
    rows: int,
    *,
    streams: int,
    rate: float | None,
    bad_fraction: float,
) -> DemoResult:
    """Replay the test rows as ``streams`` keys while the live view follows the outputs; then
    score the alerts against the labels. Ctrl-C stops the replay and scores what was sent."""
    test, labels = data.test[:rows], data.labels[:rows]
    # Contiguous streams, interleaved for sending: row j of every stream, then row j + 1, ...
    bounds = np.linspace(0, rows, streams + 1).astype(int)
    stream_of = np.searchsorted(bounds, np.arange(rows), side="right") - 1
    order = np.lexsort((stream_of, np.arange(rows) - bounds[stream_of]))
    keys = [f"{data.machine}/{s}" for s in stream_of[order]]
    stop = threading.Event()
    sent: list[Replay] = []
    progress = Progress(rows=rows, started=time.monotonic())

    def feed() -> None:
        result = replay(
            {"bootstrap.servers": bootstrap}, names["input"], test[order], kind="vector",
            keys=keys, rate=rate, bad_fraction=bad_fraction, progress=progress.sent_to,
            stop=stop.is_set,
        )  # fmt: skip
        progress.sent = int(np.isfinite(result.ts).sum())
        sent.append(result)

    interrupted = False
    feeder = threading.Thread(target=feed, name="replay", daemon=True)
    try:
        feeder.start()
        watch(bootstrap, names, progress, done=lambda: bool(sent))
    except KeyboardInterrupt:
        interrupted = True
        print("\ninterrupted: stopping the replay and draining the workers ...")
    finally:
        stop.set()
        feeder.join(30)

    rows_by_key = {}
    judged = labels.copy()
    if sent:
        ts = sent[0].ts  # per sent position; NaN where Ctrl-C stopped the replay first
        for s in range(streams):
            mine = stream_of[order] == s
            rows_by_key[f"{data.machine}/{s}"] = (order[mine], ts[mine])
        judged[order[~np.isfinite(ts)]] = 0  # rows never sent cannot be found
    # SMD rows are one minute apart in the data set: delays and false alerts per day in its time.
    minutes = np.arange(len(judged), dtype=np.float64) * 60.0
    score = event_metrics(episodes(progress.alerts, rows_by_key), judged, minutes)
    return DemoResult(
        rows, progress.scored, progress.dead_letters, score,
        time.monotonic() - progress.started, interrupted,
    )  # fmt: skip
