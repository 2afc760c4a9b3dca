"""The chaos suite: a worker group under steady load while faults are injected, then an oracle.

    python -m bench.chaos [--quick] [--guarantee at-least-once|exactly-once|both] [--json FILE]
    make chaos                                     # the full run, both guarantees

A private Kafka broker and Redis (``LocalStack`` on free ports, so the faults cannot disturb
anything else) serve a group of 3 CLI workers (`python -m streamer.cli worker`) reading an
8-partition topic. A feeder writes synthetic 38-dim sensor records for 40 keys at a steady rate,
with a malformed record now and then (they must become dead letters) and labelled incidents
(5 records far off the normal range: each must raise an alert). Meanwhile the driver injects,
in a seeded random order, SIGKILL of a random worker (restarted a second later), a broker
restart, Redis stopped for ``redis_outage_s`` (30 s in the full run), and group churn (a fourth
worker joins, then leaves gracefully). After each fault it measures the time until the group has
committed, in every partition, each record written before the fault ended. At the end the feed
stops, the group drains, and :mod:`bench.chaos_oracle` reads every topic and checks the
guarantees.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np
import orjson
from confluent_kafka import Consumer, KafkaException, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from bench.chaos_oracle import Incident, Verdict, judge, table
from bench.report import write_doc
from model.testing import synthetic_normal, train_tiny_bundle
from streamer.devtools.local_stack import LocalStack

__all__ = ["FULL", "QUICK", "ChaosConfig", "run_chaos"]

DIM = 38
FAULTS = ("kill", "broker", "redis", "churn")
INCIDENT_LEN = 5  # records of an injected incident, all far off the normal range
# The broker's minimum session: a killed worker's partitions move on after ~6 s, not 10 s.
GROUP_TIMINGS = {"session.timeout.ms": "6000", "heartbeat.interval.ms": "500"}


@dataclass(frozen=True, slots=True)
class ChaosConfig:
    """One chaos run: the guarantee under test, the load and how many faults of each kind."""

    guarantee: str
    faults: dict[str, int]
    redis_outage_s: float
    rate: int = 400  # records/s written by the feeder
    keys: int = 40
    workers: int = 3
    partitions: int = 8
    malformed_every: int = 97  # one record in this many is not JSON
    # Per key, records between incidents: 0.5% of records anomalous. The default thresholds
    # follow each key's 0.995 quantile, so a key anomalous more often than that would have its
    # incidents learned as its normal (the first full run, at 5%, missed 5-16% of them).
    incident_every: int = 1000
    settle_s: float = 2.0  # quiet time between two faults
    seed: int = 0


FULL = ChaosConfig("at-least-once", dict.fromkeys(FAULTS, 10), redis_outage_s=30.0)
QUICK = ChaosConfig("at-least-once", dict.fromkeys(FAULTS, 1), redis_outage_s=5.0)


@dataclass(slots=True)
class FaultRecord:
    kind: str
    started: float
    recovered_s: float | None  # injection -> every record written before the fault committed


@dataclass(slots=True)
class ChaosResult:
    config: ChaosConfig
    faults: list[FaultRecord] = field(default_factory=list)
    verdict: Verdict | None = None
    worker_exits: list[int] = field(default_factory=list)  # ended on their own, restarted


class _Feeder(threading.Thread):
    """Writes records at ``cfg.rate`` until stopped; remembers the incidents it wrote."""

    def __init__(self, cfg: ChaosConfig, bootstrap: str, topic: str) -> None:
        super().__init__(name="feeder", daemon=True)
        self.cfg, self.topic = cfg, topic
        self.stop = threading.Event()
        self.incidents: list[Incident] = []
        self.written = 0
        # log_level 2: the faults' connection errors are noise here; flush() tells a real loss.
        self._producer = Producer({"bootstrap.servers": bootstrap, "enable.idempotence": True,
                                   "linger.ms": 20, "message.timeout.ms": 600_000,
                                   "log_level": 2})  # fmt: skip
        self._rng = np.random.default_rng(cfg.seed)
        self._normal = synthetic_normal(50_000, DIM, seed=cfg.seed + 1)

    def run(self) -> None:
        cfg, seq = self.cfg, [0] * self.cfg.keys
        started = time.monotonic()
        while not self.stop.is_set():
            due = int((time.monotonic() - started) * cfg.rate)
            while self.written < due:
                self._one(self.written % cfg.keys, seq)
            self._producer.poll(0.01)
        if self._producer.flush(600):
            raise RuntimeError("the feeder's records were not all written")

    def _one(self, k: int, seq: list[int]) -> None:
        key, n = f"unit-{k:02d}", seq[k]
        seq[k] += 1
        self.written += 1
        if self.written % self.cfg.malformed_every == 0:
            value = b'{"key": "' + key.encode() + b'", "ts": not json'
        else:
            row = self._normal[self.written % len(self._normal)]
            every = self.cfg.incident_every
            phase = (n + k * every // self.cfg.keys) % every  # keys staggered over the cycle
            if every - INCIDENT_LEN <= phase:  # the last records of a cycle
                row = row + 8.0
                if phase == every - INCIDENT_LEN:
                    self.incidents.append(Incident(key, float(n), float(n + INCIDENT_LEN - 1)))
            value = orjson.dumps({"key": key, "ts": float(n), "values": row.tolist()})
        while True:
            try:
                self._producer.produce(self.topic, value, key.encode())
                return
            except BufferError:
                self._producer.poll(0.05)


class _Group:
    """The worker processes of the group under test, with a supervisor's restart: as
    Kubernetes restarts a container that exits, a worker that ends on its own (exit status 75:
    librdkafka stuck in a transactional call) is counted and started again."""

    def __init__(self, cfg: ChaosConfig, stack: LocalStack, bundle: Path, logs: Path) -> None:
        self.cfg, self.stack, self.bundle, self.logs = cfg, stack, bundle, logs
        self.procs: list[subprocess.Popen[bytes]] = []
        self.exits: list[int] = []  # exit statuses of workers that ended on their own
        self.closing = threading.Event()
        self._started = 0
        self._lock = threading.Lock()
        threading.Thread(target=self._restart_exited, name="supervisor", daemon=True).start()

    def _restart_exited(self) -> None:
        while not self.closing.wait(0.5):
            with self._lock:
                for proc in [p for p in self.procs if p.poll() is not None]:
                    self.procs.remove(proc)
                    self.exits.append(proc.returncode)
                    self._spawn()

    def start(self) -> subprocess.Popen[bytes]:
        with self._lock:
            return self._spawn()

    def _spawn(self) -> subprocess.Popen[bytes]:
        self._started += 1
        env = {
            **os.environ,
            "AMA_KAFKA__EXTRA": json.dumps(GROUP_TIMINGS),
            "AMA_ALERTS__N_ANOMALOUS": "1",  # an incident's first record fires
            "AMA_ALERTS__WINDOW_M": "1",
            "AMA_ALERTS__QUIET_RECORDS": "10",
            "AMA_WORKER__GUARANTEE": self.cfg.guarantee,
            "AMA_WORKER__STARTUP_TIMEOUT_S": "120",  # a worker restarted while a fault lasts
        }
        argv = [sys.executable, "-m", "streamer.cli", "worker", "--bootstrap",
                self.stack.bootstrap, "--group", "chaos", "--input-topic", "in",
                "--scores-topic", "scores", "--alerts-topic", "alerts", "--dlq-topic", "dlq",
                "--model", str(self.bundle), "--device", "cpu", "--redis-url",
                self.stack.redis_url, "--max-records", "256", "--metrics-port", "0"]  # fmt: skip
        log = (self.logs / f"worker-{self._started}.log").open("ab")
        proc = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=log)
        self.procs.append(proc)
        return proc

    def pick(self, rng: random.Random) -> subprocess.Popen[bytes]:
        with self._lock:
            return rng.choice(self.procs)

    def stop(self, proc: subprocess.Popen[bytes], how: signal.Signals) -> None:
        with self._lock:
            if proc not in self.procs:  # it ended on its own a moment ago and was replaced
                return
            self.procs.remove(proc)
        proc.send_signal(how)
        proc.wait(90)

    def stop_all(self) -> None:
        self.closing.set()
        for proc in list(self.procs):
            self.stop(proc, signal.SIGTERM)


def run_chaos(cfg: ChaosConfig, workdir: Path, log: Callable[[str], None] = print) -> ChaosResult:
    """One run (module docstring); ``workdir`` holds the stack's state and the worker logs."""
    ports = _free_ports(3)
    stack = LocalStack(workdir / "stack", kafka_port=ports[0], controller_port=ports[1],
                       redis_port=ports[2])  # fmt: skip
    result = ChaosResult(cfg)
    rng = random.Random(cfg.seed)
    group: _Group | None = None
    stack.up()
    try:
        admin = AdminClient({"bootstrap.servers": stack.bootstrap})
        new = [NewTopic(t, cfg.partitions if t == "in" else 4, 1)
               for t in ("in", "scores", "alerts", "dlq")]  # fmt: skip
        for future in admin.create_topics(new).values():
            future.result(30)
        bundle = train_tiny_bundle(workdir / "bundle", dim=DIM, seed=cfg.seed)
        group = _Group(cfg, stack, bundle, workdir)
        for _ in range(cfg.workers):
            group.start()
        feeder = _Feeder(cfg, stack.bootstrap, "in")
        feeder.start()
        _wait_committed(stack.bootstrap, cfg.partitions, lambda done: sum(done) > 0, 180)
        plan = [kind for kind, n in cfg.faults.items() for _ in range(n)]
        rng.shuffle(plan)
        for i, kind in enumerate(plan, 1):
            log(f"[chaos {cfg.guarantee}] fault {i}/{len(plan)}: {kind}")
            result.faults.append(_inject(kind, cfg, stack, group, rng))
            time.sleep(cfg.settle_s)
        feeder.stop.set()
        feeder.join()
        _wait_committed(stack.bootstrap, cfg.partitions,
                        lambda done: sum(done) >= feeder.written, 300)  # fmt: skip
        group.stop_all()
        result.worker_exits = group.exits
        result.verdict = judge(stack.bootstrap, stack.redis_url, bundle, cfg.guarantee,
                               feeder.incidents, DIM)  # fmt: skip
        return result
    finally:
        if group is not None:
            group.closing.set()
            for proc in group.procs:
                proc.kill()
        stack.down()


def _inject(
    kind: str, cfg: ChaosConfig, stack: LocalStack, group: _Group, rng: random.Random
) -> FaultRecord:
    """Inject one fault, end it, and time the group's recovery."""
    started = time.monotonic()
    if kind == "kill":
        victim = group.pick(rng)
        group.stop(victim, signal.SIGKILL)
        time.sleep(1.0)
        group.start()
    elif kind == "broker":
        stack.down(["kafka"])
        time.sleep(2.0)
        stack.up()
    elif kind == "redis":
        stack.down(["redis"])
        time.sleep(cfg.redis_outage_s)
        stack.up()
    else:  # churn: a fourth member joins (a rebalance), then leaves gracefully (another)
        extra = group.start()
        time.sleep(6.0)
        group.stop(extra, signal.SIGTERM)
    # Per partition, not a sum: the others' progress must not hide a stalled partition.
    highs = _highs(stack.bootstrap, cfg.partitions)
    done = _wait_committed(stack.bootstrap, cfg.partitions,
                           lambda offsets: all(map(int.__ge__, offsets, highs)), 300)  # fmt: skip
    return FaultRecord(kind, started, done - started if done is not None else None)


def _highs(bootstrap: str, partitions: int) -> list[int]:
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": "chaos-probe"})
    try:
        return [consumer.get_watermark_offsets(TopicPartition("in", p), timeout=30)[1]
                for p in range(partitions)]  # fmt: skip
    finally:
        consumer.close()


def _wait_committed(
    bootstrap: str, partitions: int, reached: Callable[[list[int]], bool], timeout_s: float
) -> float | None:
    """When the group "chaos"'s committed offsets, per partition, have ``reached`` the goal
    (None: timed out)."""
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": "chaos"})
    deadline = time.monotonic() + timeout_s
    try:
        while time.monotonic() < deadline:
            try:
                tps = consumer.committed([TopicPartition("in", p) for p in range(partitions)],
                                         timeout=5)  # fmt: skip
                if reached([max(0, tp.offset) for tp in tps]):
                    return time.monotonic()
            except KafkaException:  # an open transaction of a killed worker: ask again
                pass
            time.sleep(0.25)
        return None
    finally:
        consumer.close()


def _free_ports(n: int) -> list[int]:
    import socket

    socks = [socket.socket() for _ in range(n)]
    try:
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="one fault of each kind, 5 s outage")
    ap.add_argument("--guarantee", default="both",
                    choices=["at-least-once", "exactly-once", "both"])  # fmt: skip
    ap.add_argument("--json", type=Path, default=None, help="also write the results here")
    ap.add_argument("--doc", type=Path, default=None, help="rewrite this doc's generated part")
    args = ap.parse_args()
    base = QUICK if args.quick else FULL
    modes = ["at-least-once", "exactly-once"] if args.guarantee == "both" else [args.guarantee]
    results = []
    for mode in modes:
        with tempfile.TemporaryDirectory(prefix="ama-chaos-") as tmp:
            results.append(run_chaos(replace(base, guarantee=mode), Path(tmp)))
    print(table(results))
    if args.doc:
        write_doc(
            args.doc,
            f"Run {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, "
            f"{'quick' if args.quick else 'full'}:\n\n{table(results)}",
        )
    if args.json:
        args.json.write_text(json.dumps([{"config": asdict(r.config),
                                          "faults": [asdict(f) for f in r.faults],
                                          "worker_exits": r.worker_exits,
                                          "verdict": asdict(r.verdict) if r.verdict else None}
                                         for r in results], indent=2))  # fmt: skip
    if any(r.verdict is None or not r.verdict.ok for r in results):
        sys.exit(1)


if __name__ == "__main__":
    main()
