"""A minimal faust-streaming app for the smoke test: upper-cases values from one topic to another.

Run as `python tests/foundation/faust_relay.py worker`; topics and broker come from the environment
so the test can give each run fresh names.
"""

from __future__ import annotations

import os

import faust

app = faust.App(
    os.environ["RELAY_APP_ID"],
    broker=f"kafka://{os.environ['RELAY_BOOTSTRAP']}",
    store="memory://",
    web_enabled=False,
    topic_replication_factor=1,
    topic_partitions=1,
    broker_commit_every=1,
)
source = app.topic(os.environ["RELAY_SOURCE"], value_type=bytes, value_serializer="raw")
sink = app.topic(os.environ["RELAY_SINK"], value_type=bytes, value_serializer="raw")


@app.agent(source)
async def relay(stream: faust.StreamT[bytes]) -> None:
    async for value in stream:
        await sink.send(value=value.upper())


if __name__ == "__main__":
    app.main()
