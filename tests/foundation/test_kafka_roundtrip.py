"""confluent-kafka against the real broker: topics, produce with acknowledgement, group consume."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from confluent_kafka import Consumer, KafkaError, Message, Producer

pytestmark = pytest.mark.integration


def test_produce_then_consume_in_a_group(
    kafka_bootstrap: str, topic_factory: Callable[..., str], group_factory: Callable[[], str]
) -> None:
    topic = topic_factory("roundtrip", partitions=3)
    producer = Producer({"bootstrap.servers": kafka_bootstrap, "enable.idempotence": True})
    acked: list[Message] = []

    def on_delivery(err: KafkaError | None, msg: Message) -> None:
        assert err is None, err
        acked.append(msg)

    sent = {f"key-{i}".encode(): f"value-{i}".encode() for i in range(30)}
    for key, value in sent.items():
        producer.produce(topic, value=value, key=key, on_delivery=on_delivery)
    assert producer.flush(30) == 0
    assert len(acked) == len(sent)
    assert {m.partition() for m in acked} == {0, 1, 2}

    consumer = Consumer(
        {
            "bootstrap.servers": kafka_bootstrap,
            "group.id": group_factory(),
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
        }
    )
    consumer.subscribe([topic])
    received: dict[bytes, bytes] = {}
    try:
        for _ in range(60):
            for msg in consumer.consume(num_messages=100, timeout=0.5):
                assert msg.error() is None, msg.error()
                received[msg.key()] = msg.value()
            if len(received) == len(sent):
                break
        consumer.commit(asynchronous=False)
        committed = consumer.committed(consumer.assignment(), timeout=10)
    finally:
        consumer.close()
    assert received == sent
    # Committed offsets point one past the last consumed record of each partition.
    expected: dict[int, int] = {}
    for m in acked:
        expected[m.partition()] = max(expected.get(m.partition(), 0), m.offset() + 1)
    assert {tp.partition: tp.offset for tp in committed} == expected
