"""The whole benchmark, in one process tree: data, models, every row, latency, profile.

Each run of a row gets fresh consumer groups and Redis prefixes, so every run reads the same
input topic from its start and every worker starts with empty thresholds. Every measured loop
runs in its own spawned process (``bench.loops``), so its CPU time and RSS are its own.
"""

from __future__ import annotations

import importlib.util
import multiprocessing
import os
import pstats
import subprocess
import tempfile
import time
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
import redis
import torch
from confluent_kafka.admin import AdminClient

from bench import data, latency, loops, measure, peers
from bench.report import Report, Row, machine, row_from, targets
from model.detector import pick_device, pick_precision
from schemas.settings import BatchSettings, ModelSettings

__all__ = ["FULL", "QUICK", "BenchConfig", "run_bench"]

PARTITIONS = 4  # input and output topics: room for the 2-worker group
STOP_GRACE_S = 10.0  # how long a measured process may take to stop before it is killed


@dataclass(frozen=True, slots=True)
class BenchConfig:
    """Sizes of one benchmark run; :data:`FULL` and :data:`QUICK` are the CLI's two modes."""

    mode: str
    records: int  # 38-dim records written once, read by every vector row
    images: int
    runs: int  # per row; the table shows the median and the min-max
    cap_s: float  # longest measured window per run (bounds per-record and River)
    latency_s: float  # how long the paced latency run offers records
    profile: bool
    peers: bool = True  # the quix-river row (needs its own environment: bench/peers.py)
    bootstrap: str = "127.0.0.1:9092"
    redis_url: str = "redis://127.0.0.1:6379/0"
    device: str | None = None


FULL = BenchConfig("full", records=200_000, images=20_000, runs=3, cap_s=12.0, latency_s=10.0,
                   profile=True)  # fmt: skip
QUICK = BenchConfig("quick", records=20_000, images=10_000, runs=1, cap_s=2.0, latency_s=3.0,
                    profile=False)  # fmt: skip

#: Row name -> what it measures (the table's second column).
WHAT = {
    "passthrough": "ceiling: consume, produce each value unchanged, ack, commit",
    "pipeline-1w": "the worker, 38-dim records, 1 process (production defaults)",
    "pipeline-1w-single": "the same with a single-member model (`members: 1`)",
    "pipeline-1w-fp32": "the same scoring in float32 (`model.precision: float32`)",
    "pipeline-1w-noop": "the worker with scoring replaced by a no-op (Kafka, decode, Redis)",
    "pipeline-1w-eos": "the same in exactly-once mode (a Kafka transaction per batch)",
    "pipeline-2w": "the worker, 38-dim records, 2 processes in one group",
    "per-record": "the worker with batches of 1",
    "images": "the worker, 28x28 uint8 images (binary frames)",
    "faust": "the same worker core in the faust-streaming runner (`--runner faust`)",
    "river-hst": "River HalfSpaceTrees, score+learn one record at a time, same loop",
    "quix-river": "Quix Streams app, River HalfSpaceTrees per record, at-least-once",
}


@dataclass(frozen=True, slots=True)
class _Row:
    name: str
    kind: loops.Kind
    topic: str
    target: int
    members: int = 1
    bundle: Path | None = None
    max_records: int = BatchSettings().max_records
    precision: str = ModelSettings().precision
    noop_scoring: bool = False
    guarantee: str = "at-least-once"


def run_bench(cfg: BenchConfig, log: Callable[[str], None] = print) -> Report:
    """Run every row, the latency run and (optionally) the profile; clean up topics and keys."""
    if importlib.util.find_spec("river") is None:
        raise data.BenchError("the river-hst row needs River: pip install 'ama-stream[bench]'")
    load_before = os.getloadavg()
    started = time.monotonic()
    run_id = uuid.uuid4().hex[:8]
    bench = _Bench(cfg, run_id, log)
    try:
        report = bench.run()
    finally:
        bench.clean_up()
    device = pick_device(cfg.device)
    report.machine = machine(str(device), pick_precision("auto", device), load_before)
    report.seconds = time.monotonic() - started
    return report


class _Bench:
    def __init__(self, cfg: BenchConfig, run_id: str, log: Callable[[str], None]) -> None:
        self.cfg = cfg
        self.run_id = run_id
        self.log = log
        self.topics: list[str] = []
        self.ctx = multiprocessing.get_context("spawn")  # no fork of a process holding torch

    def topic(self, stem: str, config: dict[str, str] | None = None) -> str:
        name = f"bench.{self.run_id}.{stem}"
        data.create_topics(self.cfg.bootstrap, {name: PARTITIONS}, config)
        self.topics.append(name)
        return name

    def run(self) -> Report:
        cfg = self.cfg
        torch.set_num_threads(1)
        self.log(f"writing {cfg.records:,} records and {cfg.images:,} images, training models")
        rows = data.vector_rows(cfg.records)
        vectors, images = self.topic("vectors"), self.topic("images")
        data.write_topic(cfg.bootstrap, vectors, data.vector_messages(rows))
        data.write_topic(cfg.bootstrap, images, data.image_messages(cfg.images))
        tmp = Path(tempfile.mkdtemp(prefix="ama-bench-"))
        bundles = data.train_bundles(rows, tmp)
        vector_bundle = bundles["vector"]
        self.outputs = {k: self.topic(k) for k in ("out", "alerts", "dlq")}

        plan = [
            _Row("passthrough", "passthrough", vectors, cfg.records),
            _Row("pipeline-1w", "worker", vectors, cfg.records, bundle=vector_bundle),
            _Row("pipeline-1w-single", "worker", vectors, cfg.records,
                 bundle=bundles["vector-single"]),
            _Row("pipeline-1w-fp32", "worker", vectors, cfg.records, bundle=vector_bundle,
                 precision="float32"),
            _Row("pipeline-1w-noop", "worker", vectors, cfg.records, bundle=vector_bundle,
                 noop_scoring=True),
            _Row("pipeline-1w-eos", "worker", vectors, cfg.records, bundle=vector_bundle,
                 guarantee="exactly-once"),
            _Row("pipeline-2w", "worker", vectors, cfg.records, 2, vector_bundle),
            _Row("per-record", "worker", vectors, cfg.records, bundle=vector_bundle,
                 max_records=1),
            _Row("images", "worker", images, cfg.images, bundle=bundles["image"]),
            _Row("faust", "faust", vectors, cfg.records, bundle=vector_bundle),
            _Row("river-hst", "river", vectors, cfg.records),
        ]  # fmt: skip
        if cfg.peers:
            plan.append(_Row("quix-river", "quix", vectors, cfg.records))
        measured: dict[str, Row] = {}
        for row in plan:
            samples = [self.measure(row, i) for i in range(cfg.runs)]
            measured[row.name] = row_from(row.name, WHAT[row.name], samples)
            self.log(f"{row.name:<12} {measured[row.name].records_per_s:>10,.0f} records/s")
        ceiling = measured["passthrough"].records_per_s
        table = [replace(r, ratio_to_ceiling=r.records_per_s / ceiling) for r in measured.values()]

        rate = measured["pipeline-1w"].records_per_s / 2
        lat = self.latency(rows, vector_bundle, rate)
        self.log(f"latency at {rate:,.0f}/s: p50 {lat.p50_ms:.1f} ms, p99 {lat.p99_ms:.1f} ms")
        profile = self.profile(plan[1], tmp) if cfg.profile else []
        config = {**asdict(cfg), "max_records": BatchSettings().max_records,
                  "max_wait_ms": BatchSettings().max_wait_ms, "keys": data.KEYS}  # fmt: skip
        goals = targets({r.name: r for r in table}, lat)
        return Report(machine={}, config=config, rows=table, latency=lat, targets=goals,
                      profile=profile)  # fmt: skip

    # --- one run ----------------------------------------------------------------------------

    def spec(self, row: _Row, group: str, profile_to: Path | None = None) -> loops.LoopSpec:
        return loops.LoopSpec(
            kind=row.kind, bootstrap=self.cfg.bootstrap, group=group, input_topic=row.topic,
            output_topic=self.outputs["out"], alerts_topic=self.outputs["alerts"],
            dlq_topic=self.outputs["dlq"], redis_url=self.cfg.redis_url,
            redis_prefix=f"bench-{self.run_id}-{group}", bundle=row.bundle,
            device=self.cfg.device, precision=row.precision, max_records=row.max_records,
            max_wait_ms=BatchSettings().max_wait_ms, noop_scoring=row.noop_scoring,
            guarantee=row.guarantee, profile_to=profile_to,
        )  # fmt: skip

    def measure(self, row: _Row, run: int) -> measure.Sample:
        group = f"bench.{self.run_id}.{row.name}.{run}"
        spec = replace(self.spec(row, group), group_of=row.members)
        members = _Peer(spec) if row.kind == "quix" else self.members(spec, row.members)
        with members as pids:
            return measure.observe(
                bootstrap=self.cfg.bootstrap, group=group, topic=row.topic,
                partitions=PARTITIONS, target=row.target, members=row.members, pids=pids.pids,
                cap_s=self.cfg.cap_s, timeout_s=120, alive=pids.alive,
            )  # fmt: skip

    def members(self, spec: loops.LoopSpec, n: int) -> _Members:
        return _Members(self.ctx, spec, n)

    def latency(self, rows: np.ndarray, bundle: Path, rate: float) -> latency.Latency:
        cfg = self.cfg
        source = self.topic("latency.in")
        # LogAppendTime: the broker stamps each score event when it appends (= acknowledges) it.
        scores = self.topic("latency.scores", {"message.timestamp.type": "LogAppendTime"})
        group = f"bench.{self.run_id}.latency"
        row = _Row("latency", "worker", source, 0, bundle=bundle)
        spec = replace(self.spec(row, group), output_topic=scores)
        with self.members(spec, 1) as pids:
            measure.wait_stable(cfg.bootstrap, group, 1, timeout_s=120, alive=pids.alive)
            sent, first, took = latency.offer(cfg.bootstrap, source, rows, rate, cfg.latency_s)
            since = first + min(1.0, cfg.latency_s / 4)
            lat = latency.read_latencies(cfg.bootstrap, scores, PARTITIONS, sent, since)
        return latency.summarise(lat, rate, sent / took)

    def profile(self, row: _Row, tmp: Path) -> list[str]:
        out = tmp / "worker.prof"
        group = f"bench.{self.run_id}.profile"
        with self.members(self.spec(row, group, profile_to=out), 1) as pids:
            measure.observe(
                bootstrap=self.cfg.bootstrap, group=group, topic=row.topic,
                partitions=PARTITIONS, target=row.target, members=1, pids=pids.pids,
                cap_s=self.cfg.cap_s, timeout_s=120, alive=pids.alive,
            )  # fmt: skip
        return top_frames(out)

    def clean_up(self) -> None:
        if self.topics:
            admin = AdminClient({"bootstrap.servers": self.cfg.bootstrap})
            for future in admin.delete_topics(self.topics).values():
                future.result(30)
        client = redis.Redis.from_url(self.cfg.redis_url)
        keys = list(client.scan_iter(match=f"bench-{self.run_id}-*", count=1000))
        if keys:
            client.delete(*keys)


class _Peer:
    """The quix-river app, run by the peer environment's interpreter (bench/peers.py)."""

    def __init__(self, spec: loops.LoopSpec) -> None:
        app = Path(__file__).with_name("peer_apps") / "quix_river.py"
        self.argv = [str(peers.peer_python()), str(app), spec.bootstrap, spec.group,
                     spec.input_topic, spec.output_topic, str(spec.max_records)]  # fmt: skip
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def pids(self) -> list[int]:
        return [self.proc.pid] if self.proc else []

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def __enter__(self) -> _Peer:
        self.proc = subprocess.Popen(self.argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        return self

    def __exit__(self, *_: object) -> None:
        if self.proc is not None:
            self.proc.terminate()
            try:
                self.proc.wait(STOP_GRACE_S)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


class _Members:
    """``n`` spawned processes running one loop spec; started together, stopped on exit."""

    def __init__(self, ctx: multiprocessing.context.SpawnContext, spec: loops.LoopSpec, n: int
                 ) -> None:  # fmt: skip
        self.go, self.stop = ctx.Event(), ctx.Event()
        self.ready = [ctx.Event() for _ in range(n)]
        self.procs = [
            ctx.Process(target=loops.main, args=(spec, r, self.go, self.stop), daemon=True)
            for r in self.ready
        ]

    @property
    def pids(self) -> list[int]:
        return [p.pid or 0 for p in self.procs]

    def alive(self) -> bool:
        return all(p.is_alive() for p in self.procs)

    def __enter__(self) -> _Members:
        for p in self.procs:
            p.start()
        deadline = time.monotonic() + 120
        while not all(r.is_set() for r in self.ready):
            if not self.alive() or time.monotonic() > deadline:
                self.__exit__()
                raise data.BenchError("a benchmark process failed to start")
            time.sleep(0.05)
        self.go.set()  # every member subscribes now: one initial rebalance
        return self

    def __exit__(self, *_: object) -> None:
        self.go.set()
        self.stop.set()
        for p in self.procs:
            # A worker that committed per record can take a minute to drain its queued offset
            # commits on close (see docs/BENCHMARKS.md, per-record); nothing after the window
            # is measured, so it is not waited for.
            p.join(STOP_GRACE_S)
            if p.is_alive():
                p.kill()
                p.join()


def top_frames(path: Path, n: int = 20) -> list[str]:
    """The ``n`` functions with the most own time in a cProfile dump, one line each."""
    stats = pstats.Stats(str(path))
    total = stats.total_tt  # type: ignore[attr-defined]
    entries = sorted(stats.stats.items(), key=lambda kv: kv[1][2], reverse=True)  # type: ignore[attr-defined]
    lines = [f"{'own s':>7} {'own %':>6} {'cum s':>7} {'calls':>9}  function (total {total:.2f} s)"]
    for (file, line, func), (_cc, calls, own, cum, _callers) in entries[:n]:
        where = f" ({Path(file).name}:{line})" if line else ""  # built-ins have no file
        lines.append(f"{own:7.2f} {own / total:6.1%} {cum:7.2f} {calls:9d}  {func}{where}")
    return lines
