"""The two costs of docs/capacity.md that the worker rows of ``ama-stream bench`` do not show.

1. **Redis per batch**: :class:`ThresholdState.apply` on 1024-record batches with 16, 128 and
   1024 distinct keys, on one Redis server and (``--cluster-url``) on a Redis Cluster: wall time
   per batch at the client, Redis CPU per batch (``INFO cpu`` of every master, before and
   after), and script calls per batch.
2. **Broker per record**: the broker's CPU (its JVM's user + system time from /proc, pid from
   ``--broker-pid``) while records are produced into an 8-partition topic, then while one
   consumer copies them to another topic as the worker does (consume a batch, produce every
   record, wait for the acknowledgements, commit): the broker's share of one scored record.

``python -m bench.capacity --broker-pid PID [--cluster-url redis://node:port/0]``.
"""

from __future__ import annotations

import argparse
import os
import time
import uuid
from collections.abc import Sequence

import numpy as np
from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient
from redis.cluster import RedisCluster

from bench import data
from bench.measure import cpu_seconds
from streamer.state.client import RedisClient, connect, is_cluster
from streamer.state.keys import KeyLayout
from streamer.state.verdicts import ThresholdState

__all__ = ["broker_cost", "redis_cost"]

BATCH = 1024
BATCHES = 200


def _redis_cpu(client: RedisClient) -> float:
    """User + system CPU seconds of the server, or of every master of a cluster."""
    if not isinstance(client, RedisCluster):
        info = client.info("cpu")
        return float(info["used_cpu_user"]) + float(info["used_cpu_sys"])
    nodes = client.info("cpu", target_nodes=RedisCluster.PRIMARIES)
    return sum(float(v["used_cpu_user"]) + float(v["used_cpu_sys"]) for v in nodes.values())


def redis_cost(client: RedisClient, distinct: int, *, slot_groups: int = 64) -> dict[str, float]:
    """One configuration's per-batch figures (fresh key prefix, keys warmed up first)."""
    prefix = f"capacity-{uuid.uuid4().hex[:8]}"
    state = ThresholdState(client, prefix=prefix, slot_groups=slot_groups)
    rng = np.random.default_rng(0)
    keys = [f"machine-{i}" for i in rng.integers(0, distinct, BATCH)]
    if distinct >= BATCH:
        keys = [f"machine-{i}" for i in range(BATCH)]
    layout = KeyLayout(prefix, is_cluster(client), slot_groups)
    groups = len({layout.group(k) for k in keys})

    def batch(i: int) -> None:
        offsets = np.arange(i * BATCH, (i + 1) * BATCH, dtype=np.int64)
        state.apply(model_version="m1", floor=1.0, keys=keys, scores=rng.random(BATCH),
                    ts=1.7e9 + offsets.astype(np.float64), partitions=np.zeros(BATCH, np.int64),
                    offsets=offsets)  # fmt: skip

    batch(0)
    cpu0, t0 = _redis_cpu(client), time.perf_counter()
    for i in range(1, BATCHES + 1):
        batch(i)
    wall, cpu = time.perf_counter() - t0, _redis_cpu(client) - cpu0
    for key in keys:
        client.delete(layout.stats("m1", key), layout.alert(key))
    return {"distinct": distinct, "calls": groups, "wall_ms": 1e3 * wall / BATCHES,
            "redis_cpu_ms": 1e3 * cpu / BATCHES}  # fmt: skip


def broker_cost(bootstrap: str, broker_pid: int, records: int = 200_000) -> dict[str, float]:
    """Broker CPU microseconds per record produced, and per record copied (consume, produce,
    acknowledge, commit)."""
    run = uuid.uuid4().hex[:8]
    source, sink = f"capacity.{run}.in", f"capacity.{run}.out"
    data.create_topics(bootstrap, {source: 8, sink: 8})
    messages = data.vector_messages(data.vector_rows(records))
    try:
        cpu0 = cpu_seconds(broker_pid)
        data.write_topic(bootstrap, source, messages)
        produce = cpu_seconds(broker_pid) - cpu0
        consumer = Consumer({
            "bootstrap.servers": bootstrap, "group.id": f"capacity.{run}",
            "auto.offset.reset": "earliest", "enable.auto.commit": False,
        })  # fmt: skip
        producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 5, "acks": "all",
                             "enable.idempotence": True, "compression.type": "lz4"})  # fmt: skip
        consumer.subscribe([source])
        copied, cpu0 = 0, cpu_seconds(broker_pid)
        while copied < records:
            batch = [m for m in consumer.consume(BATCH, timeout=0.5) if m.error() is None]
            for m in batch:
                producer.produce(sink, value=m.value(), key=m.key())
            producer.flush(30)
            if batch:
                last = {(m.partition() or 0): (m.offset() or 0) + 1 for m in batch}
                consumer.commit(offsets=[TopicPartition(source, p, o) for p, o in last.items()],
                                asynchronous=True)  # fmt: skip
            copied += len(batch)
        copy = cpu_seconds(broker_pid) - cpu0
        consumer.close()
    finally:
        admin = AdminClient({"bootstrap.servers": bootstrap})
        for future in admin.delete_topics([source, sink]).values():
            future.result(30)
    return {"produce_us": 1e6 * produce / records, "copy_us": 1e6 * copy / records}


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--bootstrap", default="127.0.0.1:9092")
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/0")
    parser.add_argument("--cluster-url", help="one node of a Redis Cluster")
    parser.add_argument("--broker-pid", type=int, help="the broker's pid (its CPU is read)")
    args = parser.parse_args(argv)
    print(f"machine: {os.cpu_count()} cores; {BATCHES} batches of {BATCH} records per row\n")
    print("| Redis | distinct keys / batch | script calls / batch | ms / batch (client) | "
          "Redis CPU ms / batch |\n|---|---:|---:|---:|---:|")  # fmt: skip
    targets = [("one server", connect(args.redis_url))]
    if args.cluster_url:
        targets.append(("cluster, 64 groups", connect(args.cluster_url, cluster=True)))
    for name, client in targets:
        for distinct in (16, 128, 1024):
            row = redis_cost(client, distinct)
            print(f"| {name} | {distinct} | {row['calls']} | {row['wall_ms']:.2f} | "
                  f"{row['redis_cpu_ms']:.2f} |")  # fmt: skip
    if args.broker_pid:
        cost = broker_cost(args.bootstrap, args.broker_pid)
        print(f"\nbroker CPU per record: {cost['produce_us']:.1f} µs to take it in, "
              f"{cost['copy_us']:.1f} µs to serve it to a consumer, take its output and "
              "commit")  # fmt: skip


if __name__ == "__main__":
    main()
