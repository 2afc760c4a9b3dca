"""The outbox keeps each batch's deliveries apart: a batch given up on a revoke never has its
late failures produced again behind newer events (real broker)."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from confluent_kafka import KafkaError
from helpers import read_topic

from streamer.worker.batch import OutMessage
from streamer.worker.outbox import Outbox, producer_config

pytestmark = pytest.mark.integration


def test_late_failures_of_an_abandoned_batch_are_dropped_not_reproduced(
    kafka_bootstrap: str, topic_factory: Callable[..., str]
) -> None:
    real = topic_factory("out")
    failures: list[tuple[str, bool]] = []
    outbox = Outbox(
        producer_config({"bootstrap.servers": kafka_bootstrap, "message.timeout.ms": "1500"}),
        on_failure=lambda err, abandoned: failures.append((err.name(), abandoned)),
    )
    # A batch whose topic does not exist (the broker does not create topics on first use):
    # its delivery fails after message.timeout.ms, by which time the worker has given it up.
    old = outbox.send([OutMessage("score", "test.no-such-topic", b"k", b"old")])
    assert outbox.abandon(old) == 0
    new = outbox.send([OutMessage("score", real, b"k", b"new")])

    assert outbox.settle(new, 30.0)  # settles once the old failure is reported and dropped
    assert failures == [(failures[0][0], True)] and failures[0][0] in {
        KafkaError._MSG_TIMED_OUT,
        "_MSG_TIMED_OUT",
        "UNKNOWN_TOPIC_OR_PART",
        "_UNKNOWN_TOPIC",
    }
    assert old.failed == [] and new.failed == []
    assert [m.value() for m in read_topic(kafka_bootstrap, real, expect=1)] == [b"new"]
    outbox.close(1.0)


def test_a_failed_delivery_of_a_live_batch_is_produced_again(
    kafka_bootstrap: str, topic_factory: Callable[..., str]
) -> None:
    """The other side: a batch still being settled gets its failures back and retried."""
    real = topic_factory("out")
    outbox = Outbox(
        producer_config({"bootstrap.servers": kafka_bootstrap, "message.timeout.ms": "1000"})
    )
    batch = outbox.send([OutMessage("score", real, b"k", b"1")])
    batch.fail(
        KafkaError(KafkaError._MSG_TIMED_OUT), (real, b"k", b"2", None)
    )  # as librdkafka would
    assert outbox.settle(batch, 30.0)
    assert sorted(m.value() for m in read_topic(kafka_bootstrap, real, expect=2)) == [b"1", b"2"]
    outbox.close(1.0)


def test_a_batch_is_not_settled_while_its_reproduced_messages_are_in_flight(
    kafka_bootstrap: str,
) -> None:
    """Regression: settle() once returned True right after re-producing a failed message into
    librdkafka's queue (it judged "nothing in flight" from before the re-produce), so the
    worker committed offsets whose outputs then failed again. A topic that does not exist
    fails every attempt: the batch must never count as settled."""
    outbox = Outbox(producer_config({"bootstrap.servers": kafka_bootstrap,
                                     "topic.metadata.propagation.max.ms": "500"}))  # fmt: skip
    batch = outbox.send([OutMessage("score", "test.no-such-topic.settle", b"k", b"v")])
    assert not outbox.settle(batch, 4.0)
    assert batch.retries >= 1  # it was produced again meanwhile, and failed again
    outbox.abandon(batch)
    outbox.close(1.0)
