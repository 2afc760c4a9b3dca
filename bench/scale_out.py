"""Scale-out: a consumer group grows from 1 to 4 workers on an 8-partition topic mid-stream,
then shrinks: one worker stopped with SIGTERM, one SIGKILLed.

Every worker is the real CLI (``python -m streamer.cli worker``) in its own process, so the
kill is a real crash and the stop is the real drain-commit-close path. Records keep arriving at
a fixed rate throughout. What is counted, from outside the workers:

- progress: the group's committed offsets per partition;
- what each score event scored: its ``source`` (partition, offset), read from the scores topic
  as it is written, so duplicates are counted per input offset;
- at each change, the records *in flight*: scored (their score event is on the topic) but not
  committed, i.e. what a crash at that moment could make the group score again. For the killed
  worker this is measured over its own partitions after it died, which is exactly the window a
  new owner re-reads from the committed offsets.

``python -m bench.scale_out`` prints the table (docs/BENCHMARKS.md, "Scale-out");
tests/worker/test_scale_out.py runs the same scenario and asserts on its counts.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import orjson
from confluent_kafka import Consumer, ConsumerGroupState, KafkaException, Producer, TopicPartition
from confluent_kafka.admin import AdminClient

from bench import data

__all__ = ["Change", "ScaleOut", "Scenario", "run_scale_out"]

PARTITIONS = 8
#: The broker's minimum session timeout: the killed member is noticed after about 6 s.
SESSION_MS = 6000


@dataclass(frozen=True, slots=True)
class Scenario:
    """Where the group runs and how long each phase lasts."""

    bootstrap: str
    redis_url: str
    prefix: str
    input_topic: str
    scores_topic: str
    alerts_topic: str
    dlq_topic: str
    bundle: Path
    rate: float  # records offered per second
    phase_s: float  # how long each membership holds before the next change
    max_records: int = 256
    env: dict[str, str] = field(default_factory=dict)  # more AMA_* settings for the workers


@dataclass(frozen=True, slots=True)
class Change:
    """One membership change: what, when (s since the first record), members after it,
    records committed so far, and records in flight in the whole group (scored, not committed)
    at that moment (for the kill: just after it)."""

    what: str
    at_s: float
    members: int
    committed: int
    in_flight: int


@dataclass
class ScaleOut:
    """The run's counts."""

    produced: int = 0
    per_offset: Counter[tuple[int, int]] = field(default_factory=Counter)
    changes: list[Change] = field(default_factory=list)
    killed_window: dict[int, tuple[int, int]] = field(default_factory=dict)  # [from, to)
    phases: list[tuple[str, int, float, int]] = field(default_factory=list)  # name, n, s, recs

    @property
    def scored(self) -> int:
        return len(self.per_offset)

    @property
    def duplicates(self) -> int:
        return sum(self.per_offset.values()) - len(self.per_offset)

    @property
    def killed_in_flight(self) -> int:
        return sum(end - start for start, end in self.killed_window.values())

    def duplicates_outside_kill(self) -> int:
        """Duplicate score events of offsets outside the killed worker's in-flight window."""
        return sum(
            n - 1
            for (p, o), n in self.per_offset.items()
            if n > 1 and not (p in self.killed_window and self.killed_window[p][0] <= o
                              < self.killed_window[p][1])
        )  # fmt: skip

    def table(self) -> str:
        lines = ["| phase | members | seconds | records committed | records/s |",
                 "|---|---:|---:|---:|---:|"]  # fmt: skip
        for name, members, seconds, records in self.phases:
            lines.append(f"| {name} | {members} | {seconds:.1f} | {records:,} | "
                         f"{records / seconds:,.0f} |")  # fmt: skip
        lines += ["", "| change | at s | members after | committed | in flight |",
                  "|---|---:|---:|---:|---:|"]  # fmt: skip
        for c in self.changes:
            lines.append(f"| {c.what} | {c.at_s:.1f} | {c.members} | {c.committed:,} | "
                         f"{c.in_flight:,} |")  # fmt: skip
        lines.append(
            f"\nthe killed worker's own partitions {sorted(self.killed_window)}: "
            f"{self.killed_in_flight:,} records scored but not committed when it died\n"
            f"produced {self.produced:,}, scored {self.scored:,} distinct offsets, "
            f"{self.duplicates:,} duplicate score events ({self.duplicates_outside_kill()} "
            f"outside the killed worker's in-flight window)"
        )
        return "\n".join(lines)


class _Scores(threading.Thread):
    """Reads the scores topic from its start: how often each input offset was scored, and per
    input partition the end of what is scored (highest offset + 1)."""

    def __init__(self, bootstrap: str, topic: str) -> None:
        super().__init__(name="scores-reader", daemon=True)
        self.per_offset: Counter[tuple[int, int]] = Counter()
        self.end: dict[int, int] = {}
        self._read: dict[int, int] = {}  # scores partition -> next offset to read
        self._lock = threading.Lock()
        self._done = threading.Event()
        self._topic = topic
        config = {"bootstrap.servers": bootstrap, "group.id": "scale-out",
                  "enable.auto.commit": False}  # fmt: skip
        self._consumer = Consumer(config)
        self._marks = Consumer(config)  # high watermarks, asked from the caller's thread
        meta = AdminClient({"bootstrap.servers": bootstrap}).list_topics(topic, timeout=10)
        self._partitions = list(meta.topics[topic].partitions)
        self._consumer.assign([TopicPartition(topic, p, 0) for p in self._partitions])

    def run(self) -> None:
        while not self._done.is_set():
            for m in self._consumer.consume(1000, timeout=0.1):
                if m.error() is None:
                    source = orjson.loads(m.value() or b"{}")["source"]
                    p, o = int(source["partition"]), int(source["offset"])
                    with self._lock:
                        self.per_offset[(p, o)] += 1
                        self.end[p] = max(self.end.get(p, 0), o + 1)
                        self._read[m.partition() or 0] = (m.offset() or 0) + 1
        self._consumer.close()

    def ends(self) -> dict[int, int]:
        """What is scored now: per input partition, the highest scored offset + 1, once every
        score event already on the topic has been read (the reader may trail the workers)."""
        marks = {
            p: self._marks.get_watermark_offsets(TopicPartition(self._topic, p), timeout=10)[1]
            for p in self._partitions
        }
        _until(lambda: self._caught_up(marks), "the scores reader to catch up", 60)
        with self._lock:
            return dict(self.end)

    def _caught_up(self, marks: dict[int, int]) -> bool:
        with self._lock:
            return all(self._read.get(p, 0) >= mark for p, mark in marks.items() if mark > 0)

    def stop(self) -> None:
        self._done.set()
        self.join(30)
        self._marks.close()


class _Group:
    """The group as the broker describes it: committed offsets and members' partitions."""

    def __init__(self, bootstrap: str, group: str, topic: str) -> None:
        self._admin = AdminClient({"bootstrap.servers": bootstrap})
        self._consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": group})
        self._group, self._topic = group, topic

    def committed(self) -> dict[int, int]:
        tps = [TopicPartition(self._topic, p) for p in range(PARTITIONS)]
        return {tp.partition: max(tp.offset, 0) for tp in self._consumer.committed(tps, 10)}

    def owners(self) -> dict[str, list[int]] | None:
        """client.id -> partitions, once the group is stable (None before)."""
        try:
            desc = self._admin.describe_consumer_groups([self._group])[self._group].result(10)
        except KafkaException:
            return None
        if desc.state != ConsumerGroupState.STABLE:
            return None
        return {
            m.client_id: [tp.partition for tp in m.assignment.topic_partitions]
            for m in desc.members
        }

    def close(self) -> None:
        self._consumer.close()


def _worker(s: Scenario, group: str, log: Path) -> subprocess.Popen[bytes]:
    env = {
        **os.environ,
        **s.env,
        "AMA_KAFKA__EXTRA": orjson.dumps({"session.timeout.ms": str(SESSION_MS)}).decode(),
    }
    argv = [sys.executable, "-m", "streamer.cli", "worker", "--bootstrap", s.bootstrap,
            "--group", group, "--input-topic", s.input_topic, "--scores-topic", s.scores_topic,
            "--alerts-topic", s.alerts_topic, "--dlq-topic", s.dlq_topic, "--model",
            str(s.bundle), "--device", "cpu", "--redis-url", s.redis_url, "--redis-prefix",
            s.prefix, "--max-records", str(s.max_records), "--metrics-port", "0"]  # fmt: skip
    return subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=log.open("ab"))


def _until(condition: Callable[[], bool], what: str, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise data.BenchError(f"scale-out: timed out waiting for {what}")
        time.sleep(0.1)


def run_scale_out(
    s: Scenario, item: Callable[[int], tuple[bytes, bytes]], log_dir: Path,
    say: Callable[[str], None] = print,
) -> ScaleOut:  # fmt: skip
    """Run the scenario; ``item(i)`` is the i-th record. Workers are stopped on the way out."""
    group = f"scale-out.{uuid.uuid4().hex[:8]}"
    out, workers = ScaleOut(), []
    progress, scores = (
        _Group(s.bootstrap, group, s.input_topic),
        _Scores(s.bootstrap, s.scores_topic),
    )
    stop_feed, t0 = threading.Event(), time.monotonic()

    def feed() -> None:
        producer = Producer({"bootstrap.servers": s.bootstrap, "linger.ms": 5})
        while not stop_feed.is_set():
            due = int((time.monotonic() - t0) * s.rate)
            while out.produced < due:
                key, value = item(out.produced)
                producer.produce(s.input_topic, value=value, key=key)
                out.produced += 1
            producer.poll(0)
            time.sleep(0.01)
        assert producer.flush(30) == 0

    def members(n: int) -> Callable[[], bool]:
        return lambda: (owners := progress.owners()) is not None and sum(
            1 for parts in owners.values() if parts) == n  # fmt: skip

    def change(what: str, n: int) -> None:
        committed, ends = progress.committed(), scores.ends()
        in_flight = sum(max(0, ends.get(p, 0) - committed[p]) for p in committed)
        out.changes.append(Change(what, time.monotonic() - t0, n, sum(committed.values()),
                                  in_flight))  # fmt: skip
        say(f"{out.changes[-1]}")

    def phase(name: str, n: int) -> None:
        start, first = time.monotonic(), sum(progress.committed().values())
        time.sleep(s.phase_s)
        done = sum(progress.committed().values()) - first
        out.phases.append((name, n, time.monotonic() - start, done))

    scores.start()
    feeder = threading.Thread(target=feed, name="feeder", daemon=True)
    try:
        workers.append(_worker(s, group, log_dir / "worker-0.log"))
        _until(members(1), "the first worker to join")
        t0 = time.monotonic()
        feeder.start()
        _until(lambda: sum(progress.committed().values()) > 0, "the first commit")
        phase("1 worker", 1)
        change("1 -> 4: three workers started", 4)
        workers += [_worker(s, group, log_dir / f"worker-{i}.log") for i in (1, 2, 3)]
        _until(members(4), "four members")
        phase("4 workers", 4)
        change("4 -> 3: SIGTERM (drain, commit, leave)", 3)
        workers[1].send_signal(signal.SIGTERM)
        if workers[1].wait(60) != 0:
            raise data.BenchError("the stopped worker did not exit cleanly")
        _until(members(3), "three members")
        phase("3 workers", 3)
        owners = progress.owners() or {}
        victim = workers[2]
        mine = next(parts for cid, parts in owners.items() if cid.endswith(f"-{victim.pid}"))
        victim.send_signal(signal.SIGKILL)
        victim.wait(10)
        time.sleep(1.0)  # a commit already in the dead process' socket still lands
        committed, ends = progress.committed(), scores.ends()
        out.killed_window = {p: (committed[p], max(committed[p], ends.get(p, 0))) for p in mine}
        change("3 -> 2: SIGKILL", 2)
        _until(members(2), "the killed worker's partitions to move")
        phase("2 workers", 2)
        stop_feed.set()
        feeder.join(60)
        _until(lambda: sum(progress.committed().values()) == out.produced, "every record")
        for w in (workers[0], workers[3]):
            w.send_signal(signal.SIGTERM)
        for w in (workers[0], workers[3]):
            if w.wait(60) != 0:
                raise data.BenchError("a worker did not exit cleanly")
        _until(lambda: len(scores.per_offset) >= out.produced, "every score event", 60)
        time.sleep(1.0)
    finally:
        stop_feed.set()
        for w in workers:
            if w.poll() is None:
                w.kill()
                w.wait(10)
        scores.stop()
        progress.close()
    out.per_offset = scores.per_offset
    return out


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--bootstrap", default="127.0.0.1:9092")
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/0")
    parser.add_argument("--rate", type=float, default=20_000.0, help="records offered per second")
    parser.add_argument("--phase-s", type=float, default=20.0)
    args = parser.parse_args(argv)
    import tempfile

    import redis

    run = uuid.uuid4().hex[:8]
    tmp = Path(tempfile.mkdtemp(prefix="ama-scale-out-"))
    rows = data.vector_rows(100_000)
    messages = data.vector_messages(rows)
    bundle = data.train_bundles(rows[:20_000], tmp)["vector"]
    topics = {f"bench.{run}.{name}": PARTITIONS for name in ("in", "scores", "alerts", "dlq")}
    data.create_topics(args.bootstrap, topics)
    names = list(topics)
    source, scores, alerts, dlq = names
    try:
        result = run_scale_out(
            Scenario(args.bootstrap, args.redis_url, f"bench-{run}", source, scores, alerts, dlq,
                     bundle, rate=args.rate, phase_s=args.phase_s),
            lambda i: messages[i % len(messages)], tmp,
        )  # fmt: skip
        print(result.table())
    finally:
        admin = AdminClient({"bootstrap.servers": args.bootstrap})
        for future in admin.delete_topics(names).values():
            future.result(30)
        client = redis.Redis.from_url(args.redis_url)
        keys = list(client.scan_iter(match=f"bench-{run}*", count=1000))
        if keys:
            client.delete(*keys)


if __name__ == "__main__":
    main()
