"""The `quix-river` peer: what a user would build instead of ama-stream on the most-used Python
stream framework. A Quix Streams application scoring each record with River's HalfSpaceTrees
(score, then learn, one record at a time) and producing a small JSON score per record, with
Quix's at-least-once guarantee (its checkpoint flushes the producer, then commits).

Runs in its own virtualenv (bench/peers.py makes it): Quix Streams pins confluent-kafka and
pydantic versions older than ama-stream's. Usage (by bench/run.py):

    python bench/peer_apps/quix_river.py BOOTSTRAP GROUP INPUT_TOPIC OUTPUT_TOPIC COMMIT_EVERY
"""

from __future__ import annotations

import sys

import orjson
from quixstreams import Application
from river.anomaly import HalfSpaceTrees


def main() -> None:
    bootstrap, group, source, sink, commit_every = sys.argv[1:6]
    app = Application(
        broker_address=bootstrap,
        consumer_group=group,
        auto_offset_reset="earliest",
        processing_guarantee="at-least-once",
        commit_every=int(commit_every),  # as often as the worker commits (once per batch)
        auto_create_topics=False,
    )
    model = HalfSpaceTrees(seed=0)  # River's defaults, as in the river-hst row

    def score(value: bytes) -> bytes:
        doc = orjson.loads(value)
        x = dict(enumerate(doc["values"]))
        s = model.score_one(x)
        model.learn_one(x)
        return orjson.dumps({"key": doc["key"], "ts": doc["ts"], "score": s})

    sdf = app.dataframe(app.topic(source, value_deserializer="bytes"))
    sdf = sdf.apply(score)
    sdf.to_topic(app.topic(sink, value_serializer="bytes"))
    app.run()


if __name__ == "__main__":
    main()
