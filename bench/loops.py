"""What runs inside each measured process: the passthrough ceiling, the worker, River.

The parent (``bench.run``) starts one process per group member with :func:`main`; the process
builds its clients (and model), sets ``ready``, waits for ``go`` so that every member of a group
subscribes at the same moment, then consumes until ``stop``. Each loop commits the input
offsets only after its outputs are acknowledged, as the worker does, so the parent measures
every row the same way: from the group's committed offsets (``bench.measure``).
"""

from __future__ import annotations

import cProfile
import threading
import time
from dataclasses import dataclass
from multiprocessing.synchronize import Event
from pathlib import Path
from typing import Any, Literal

import orjson
from confluent_kafka import Consumer, Message, Producer, TopicPartition

from streamer.worker.config import consumer_config
from streamer.worker.outbox import producer_config

__all__ = ["LoopSpec", "main"]

Kind = Literal["passthrough", "worker", "faust", "river", "quix"]  # quix: bench/peers.py

#: For a group of several members: a member learns that a peer joined from a heartbeat (every
#: 3 s by default) and keeps consuming alone until then, so the 2-worker row would mostly
#: measure one worker. A 100 ms heartbeat forms the group at once and costs nothing measurable
#: once it is stable. (librdkafka warns once that the producer ignores this consumer option.)
GROUP_FORMING = {"heartbeat.interval.ms": "100"}


@dataclass(frozen=True, slots=True)
class LoopSpec:
    """One group member: which loop, where it reads and writes, and its batch bounds."""

    kind: Kind
    bootstrap: str
    group: str
    input_topic: str
    output_topic: str  # passthrough/river output, the worker's scores topic
    alerts_topic: str
    dlq_topic: str
    redis_url: str
    redis_prefix: str
    bundle: Path | None
    device: str | None
    precision: str
    max_records: int
    max_wait_ms: int
    group_of: int = 1  # members of the group this process is one of
    noop_scoring: bool = False  # the model's share: the worker with scoring replaced by zeros
    guarantee: str = "at-least-once"
    profile_to: Path | None = None  # write cProfile stats of the loop here


def main(spec: LoopSpec, ready: Event, go: Event, stop: Event) -> None:
    """Process entry point (spawned): build, signal ready, wait for go, run until stop."""
    if spec.kind == "worker":
        _run_worker(spec, ready, go, stop)
    elif spec.kind == "faust":
        _run_faust(spec, ready, go, stop)
    else:
        _run_simple(spec, ready, go, stop)


def _settings(spec: LoopSpec) -> Any:
    from schemas.settings import load_settings

    return load_settings(
        kafka={"bootstrap": spec.bootstrap, "group_id": spec.group,
               "input_topic": spec.input_topic, "scores_topic": spec.output_topic,
               "alerts_topic": spec.alerts_topic, "dlq_topic": spec.dlq_topic,
               "extra": GROUP_FORMING if spec.group_of > 1 else {}},
        redis={"url": spec.redis_url, "key_prefix": spec.redis_prefix},
        model={"bundle": spec.bundle, "device": spec.device, "precision": spec.precision},
        batch={"max_records": spec.max_records, "max_wait_ms": spec.max_wait_ms},
        worker={"guarantee": spec.guarantee},
    )  # fmt: skip


def _run_worker(spec: LoopSpec, ready: Event, go: Event, stop: Event) -> None:
    # Imported here, not at the top: torch takes seconds to import, and the passthrough and
    # River processes must not pay (or be measured with) it.
    from bench.core_bench import NoOpScores
    from streamer.worker.assemble import build_parts
    from streamer.worker.loop import Worker

    settings = _settings(spec)
    slot, verdicts = build_parts(settings)
    if spec.noop_scoring:
        slot.detector = NoOpScores(slot.detector)  # type: ignore[assignment]
    worker = Worker(settings, model=slot, verdicts=verdicts)
    ready.set()
    go.wait()

    def stop_when_told() -> None:
        stop.wait()
        worker.stop()

    threading.Thread(target=stop_when_told, daemon=True).start()
    if spec.profile_to is None:
        worker.run()
        return
    profiler = cProfile.Profile()
    profiler.runcall(worker.run)
    profiler.dump_stats(spec.profile_to)


def _run_faust(spec: LoopSpec, ready: Event, go: Event, stop: Event) -> None:
    """The faust runner on the same model and Redis state; stopped as the CLI's would be."""
    import os
    import signal

    from streamer.worker.assemble import build_parts
    from streamer.worker.faust_runner import run_faust_worker
    from streamer.worker.metrics import WorkerMetrics

    settings = _settings(spec)
    model, verdicts = build_parts(settings)
    ready.set()
    go.wait()

    def stop_when_told() -> None:
        stop.wait()
        os.kill(os.getpid(), signal.SIGTERM)

    threading.Thread(target=stop_when_told, daemon=True).start()
    run_faust_worker(settings, model=model, verdicts=verdicts, metrics=WorkerMetrics())


def _run_simple(spec: LoopSpec, ready: Event, go: Event, stop: Event) -> None:
    settings = _settings(spec)
    score = _river_scorer() if spec.kind == "river" else None
    consumer = Consumer(consumer_config(settings))
    producer = Producer(producer_config(settings.kafka.client_config()))
    ready.set()
    go.wait()
    consumer.subscribe([spec.input_topic])
    while not stop.is_set():
        batch = _gather(consumer, spec.max_records, spec.max_wait_ms / 1000)
        if not batch:
            continue
        for m in batch:
            value = m.value() if score is None else score(m.value() or b"")
            while True:
                try:
                    producer.produce(spec.output_topic, value=value, key=m.key())
                    break
                except BufferError:
                    producer.poll(0.05)
        if producer.flush(30):  # every output acknowledged before the commit, as the worker
            raise RuntimeError("outputs not acknowledged within 30 s")
        offsets: dict[tuple[str, int], int] = {}
        for m in batch:
            offsets[(m.topic() or "", m.partition() or 0)] = (m.offset() or 0) + 1
        tps = [TopicPartition(t, p, o) for (t, p), o in offsets.items()]
        consumer.commit(offsets=tps, asynchronous=True)
    consumer.close()


def _gather(consumer: Consumer, max_records: int, wait_s: float) -> list[Message]:
    """The worker's batch bounds: consume until ``max_records`` or ``wait_s`` passed."""
    batch: list[Message] = []
    deadline = time.monotonic() + wait_s
    while len(batch) < max_records and (left := deadline - time.monotonic()) > 0:
        batch += [m for m in consumer.consume(max_records - len(batch), left) if not m.error()]
    return batch


def _river_scorer() -> Any:
    """Score-then-learn one record at a time with River's HalfSpaceTrees (default settings),
    returning a small JSON score event, as a River pipeline on Kafka would."""
    from river.anomaly import HalfSpaceTrees  # optional: bench.run checks it is installed

    model = HalfSpaceTrees(seed=0)

    def score(value: bytes) -> bytes:
        doc = orjson.loads(value)
        x = dict(enumerate(doc["values"]))
        s = model.score_one(x)
        model.learn_one(x)
        return orjson.dumps({"key": doc["key"], "ts": doc["ts"], "score": s})

    return score
