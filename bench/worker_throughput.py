"""One worker end to end vs the raw Kafka passthrough ceiling, on the same messages, in one run.

    python bench/worker_throughput.py [--records 100000] [--bootstrap 127.0.0.1:9092]

Writes N SensorRecords (38 dims, real SMD rows when ../shared/data/smd is present) to a fresh
4-partition topic once, then reads them twice with fresh consumer groups:

* passthrough: consume a batch, produce every value unchanged to an output topic, wait for the
  acknowledgements, commit: the same at-least-once loop as the worker minus decode, score and
  Redis. This is the ceiling for the worker on this broker and machine.
* worker: the real `streamer.worker.Worker` (model on CPU/GPU, Redis thresholds, metrics) until
  it has committed all N offsets.

Both use `batch.max_records` / `max_wait_ms` from the same settings. Prints records/s and the
mean batch fill. Topics are deleted afterwards; the Redis keys live under a unique prefix.
"""

from __future__ import annotations

import argparse
import tempfile
import threading
import time
import uuid
from pathlib import Path

import numpy as np
import orjson
import redis
import torch
from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from model.detector import AMADetector, pick_device
from schemas.settings import Settings, load_settings
from streamer.app import build_worker
from streamer.producer import producer_config

SMD = Path(__file__).resolve().parents[2] / "shared" / "data" / "smd"


def rows(n: int) -> np.ndarray:
    """``n`` 38-dim rows: SMD machine-1-6 test rows (tiled) if present, else uniform noise."""
    path = SMD / "test" / "machine-1-6.npy"
    base = (
        np.load(path)
        if path.exists()
        else np.random.default_rng(0).random((20_000, 38), dtype=np.float32)
    )
    return np.resize(base, (n, 38))


def write_input(bootstrap: str, topic: str, data: np.ndarray) -> None:
    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 20})
    for i, row in enumerate(data.tolist()):
        key = f"machine-{i % 16}"
        value = orjson.dumps({"key": key, "ts": time.time(), "values": row})
        while True:
            try:
                producer.produce(topic, value=value, key=key.encode())
                break
            except BufferError:
                producer.poll(0.05)
    assert producer.flush(60) == 0


def passthrough(
    bootstrap: str, topic: str, out: str, n: int, max_records: int, wait_s: float
) -> tuple[float, float]:
    """The ceiling: consume -> produce unchanged -> wait for acks -> commit, per batch."""
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"bench-{uuid.uuid4().hex}",
            "enable.auto.commit": False,
            "auto.offset.reset": "earliest",
            "partition.assignment.strategy": "roundrobin",
        }
    )
    producer = Producer(producer_config({"bootstrap.servers": bootstrap}))
    consumer.subscribe([topic])
    seen, batches, started = 0, 0, None
    while seen < n:
        batch = []
        deadline = time.monotonic() + wait_s
        while len(batch) < max_records and (left := deadline - time.monotonic()) > 0:
            batch += [m for m in consumer.consume(max_records - len(batch), left) if not m.error()]
        if not batch:
            continue
        started = started or time.perf_counter()
        for m in batch:
            producer.produce(out, value=m.value(), key=m.key())
        producer.flush()
        offsets: dict[tuple[str, int], int] = {}
        for m in batch:
            offsets[(m.topic(), m.partition())] = m.offset() + 1
        tps = [TopicPartition(t, p, o) for (t, p), o in offsets.items()]
        consumer.commit(offsets=tps, asynchronous=True)
        seen += len(batch)
        batches += 1
    elapsed = time.perf_counter() - (started or time.perf_counter())
    consumer.close()
    return seen / elapsed, seen / batches / max_records


def run_worker(settings: Settings, n: int) -> tuple[float, float]:
    worker = build_worker(settings)
    thread = threading.Thread(target=worker.run, daemon=True)
    thread.start()
    registry = worker.metrics.registry

    def done() -> float:
        return registry.get_sample_value("ama_records_in_total") or 0.0

    while (first := done()) == 0:  # the clock starts at the first settled batch
        time.sleep(0.001)
    started = time.perf_counter()
    while done() < n:
        time.sleep(0.01)
    elapsed = time.perf_counter() - started
    worker.stop()
    thread.join(60)
    fill_sum = registry.get_sample_value("ama_batch_fill_ratio_sum") or 0.0
    batches = registry.get_sample_value("ama_batch_fill_ratio_count") or 1.0
    stages = {
        stage: 1000
        * (registry.get_sample_value("ama_stage_seconds_sum", {"stage": stage}) or 0.0)
        / batches
        for stage in ("decode", "score", "verdicts", "produce", "commit")
    }
    print("mean ms per batch: " + ", ".join(f"{k} {v:.1f}" for k, v in stages.items()))
    return (n - first) / elapsed, fill_sum / batches


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=100_000)
    parser.add_argument("--bootstrap", default="127.0.0.1:9092")
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/0")
    parser.add_argument("--max-records", type=int, default=1024)
    parser.add_argument("--max-wait-ms", type=int, default=50)
    parser.add_argument("--device", default=None)
    args = parser.parse_args()
    torch.set_num_threads(1)

    run = uuid.uuid4().hex[:8]
    names = {k: f"bench.{k}.{run}" for k in ("in", "pass", "scores", "alerts", "dlq")}
    admin = AdminClient({"bootstrap.servers": args.bootstrap})
    new = [NewTopic(name, 4 if k == "in" else 1, 1) for k, name in names.items()]
    for future in admin.create_topics(new).values():
        future.result(30)
    prefix = f"bench-{run}"
    try:
        data = rows(args.records)
        write_input(args.bootstrap, names["in"], data)
        with tempfile.TemporaryDirectory() as tmp:
            # A full-size default AMA model (widths of section 10.5), briefly trained: the
            # throughput depends on the network size, not on how well it is trained.
            det = AMADetector(kind="vector").fit(data[:4096], epochs=1, progress=False)
            bundle = det.save(Path(tmp) / "bundle")
            settings = load_settings(
                kafka={
                    "bootstrap": args.bootstrap,
                    "group_id": f"bench-{run}",
                    "input_topic": names["in"],
                    "scores_topic": names["scores"],
                    "alerts_topic": names["alerts"],
                    "dlq_topic": names["dlq"],
                },
                redis={"url": args.redis_url, "key_prefix": prefix},
                model={"bundle": bundle, "device": args.device},
                batch={"max_records": args.max_records, "max_wait_ms": args.max_wait_ms},
                metrics={"port": 0},
            )
            ceiling, ceiling_fill = passthrough(
                args.bootstrap,
                names["in"],
                names["pass"],
                args.records,
                args.max_records,
                args.max_wait_ms / 1000,
            )
            rate, fill = run_worker(settings, args.records)
        device = pick_device(args.device)
        print(
            f"records: {args.records} x 38 dims, batch max {args.max_records} / "
            f"{args.max_wait_ms} ms, model on {device}"
        )
        print(
            f"passthrough (consume+produce+ack+commit): {ceiling:10,.0f} rec/s  "
            f"fill {ceiling_fill:.2f}"
        )
        print(
            f"worker end to end:                        {rate:10,.0f} rec/s  fill {fill:.2f}  "
            f"({rate / ceiling:.0%} of passthrough)"
        )
    finally:
        for future in admin.delete_topics(list(names.values())).values():
            future.result(30)
        client = redis.Redis.from_url(args.redis_url)
        keys = list(client.scan_iter(match=f"{prefix}*", count=1000))
        if keys:
            client.delete(*keys)


if __name__ == "__main__":
    main()
