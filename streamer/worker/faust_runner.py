"""The faust-streaming runner: the same pipeline core as the confluent-kafka worker, in a faust
agent (``ama-stream worker --runner faust``).

The agent takes micro-batches from the input topic with ``take_events`` (up to
``batch.max_records`` events within ``batch.max_wait_ms``), hands each batch to
:func:`streamer.worker.pipeline.process_batch` on a worker thread (the event loop keeps serving
heartbeats and fetches meanwhile), produces every output through the worker's outbox
(librdkafka: faust's own per-message ``send`` cost more than the whole rest of a record's
processing) and waits for all their acknowledgements, and only then acks the batch's events;
faust commits acked offsets (every ``batch.max_records`` events or 2.8 s). Commit semantics
and the pitfalls guarded against are in docs/worker.md ("The faust-streaming runner"):

- ``take_events`` acks a batch's events when the agent asks for the next batch, also after the
  agent failed or was cancelled half-way (its ``finally``). Each message therefore gets one
  extra reference before it is processed, released only after its outputs are acknowledged:
  a batch that did not finish is never committed, so a crash or SIGKILL re-delivers it.
- Redis unavailable: the batch waits and is judged again once Redis answers (no degraded
  scores from this runner), so alerts are late, never lost.
- Records that make the core raise are dead-lettered exactly as in the worker
  (streamer/worker/isolate.py); a fatal service error ends the process at once, before faust
  could ack anything.

Security settings other than PLAINTEXT are not mapped to faust yet: the runner refuses them.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from typing import TYPE_CHECKING, Any

from schemas.errors import ConfigError, ServiceError
from schemas.settings import Settings
from streamer.logs import JsonFormatter, kafka_logger
from streamer.worker.batch import OutMessage, RawBatch, Topics
from streamer.worker.isolate import process_isolating
from streamer.worker.keys import KeyBudget
from streamer.worker.metrics import WorkerMetrics
from streamer.worker.outbox import Outbox, producer_config
from streamer.worker.pipeline import BatchResult, process_batch

if TYPE_CHECKING:
    from streamer.lifecycle.reload import ModelSlot
    from streamer.state.verdicts import ThresholdState

__all__ = ["run_faust_worker"]

log = logging.getLogger(__name__)

#: Between tries of a batch that Redis or the device could not process.
RETRY_S = 1.0


def run_faust_worker(
    settings: Settings, *, model: ModelSlot, verdicts: ThresholdState, metrics: WorkerMetrics
) -> None:
    """Run the agent until SIGTERM/SIGINT, scoring with ``model`` and judging with
    ``verdicts`` (streamer/worker/assemble.py builds both, as for the confluent worker)."""
    import cramjam  # noqa: F401  # aiokafka decompresses lz4, snappy and zstd batches with it
    import faust  # imported here: only this runner needs it

    kafka = settings.kafka
    if kafka.security_protocol != "PLAINTEXT":
        raise ConfigError("the faust runner supports kafka.security_protocol PLAINTEXT only")
    if settings.worker.guarantee != "at-least-once":
        raise ConfigError("the faust runner supports worker.guarantee at-least-once only")
    app = faust.App(
        kafka.group_id,
        broker=[f"kafka://{host}" for host in kafka.bootstrap.split(",")],
        store="memory://",
        web_enabled=False,
        consumer_auto_offset_reset="earliest",
        broker_commit_every=settings.batch.max_records,
        # Room for several batches between the fetcher and the agent.
        broker_max_poll_records=settings.batch.max_records,
        stream_buffer_maxsize=4 * settings.batch.max_records,
        producer_acks=-1,
        topic_allow_declare=False,
        topic_disable_leader=True,
        worker_redirect_stdouts=False,
    )
    source = app.topic(kafka.input_topic, key_type=bytes, value_type=bytes,
                       key_serializer="raw", value_serializer="raw")  # fmt: skip
    outbox = Outbox({**producer_config(kafka.client_config()), "logger": kafka_logger()})
    topics = Topics(scores=kafka.scores_topic, alerts=kafka.alerts_topic, dlq=kafka.dlq_topic)
    executor = ThreadPoolExecutor(1, thread_name_prefix="ama-score")
    keys = KeyBudget.from_settings(settings, metrics.tracked_keys.set)

    def process(raw: RawBatch) -> BatchResult:
        detector = model.detector  # read once: a batch never mixes model versions
        core = partial(process_batch, detector=detector, verdicts=verdicts, topics=topics,
                       max_bytes=settings.limits.max_message_bytes, keys=keys)  # fmt: skip
        return process_isolating(raw, core, dlq_topic=kafka.dlq_topic,
                                 model_version=detector.model_version,
                                 on_error=settings.worker.on_error)  # fmt: skip

    async def judged(raw: RawBatch) -> BatchResult:
        """The batch's result once Redis took it: waits (and re-processes) while it cannot."""
        loop = asyncio.get_running_loop()
        while True:
            try:
                result = await loop.run_in_executor(executor, process, raw)
            except ServiceError as exc:
                if exc.fatal:  # before take_events could ack anything (module docstring)
                    log.critical("stopping: %s", exc)
                    os._exit(2)
                result = None
            if result is not None and not result.degraded:
                return result
            metrics.set_redis_ok(result is None)
            await asyncio.sleep(RETRY_S)
            await loop.run_in_executor(executor, model.maybe_reload)

    def deliver(messages: list[OutMessage]) -> None:
        """Produce and wait until every output is acknowledged (retrying failures, as the
        worker does, for as long as it takes)."""
        delivery = outbox.send(messages)
        while not outbox.settle(delivery, 1.0):
            pass

    @app.agent(source)
    async def score(stream: Any) -> None:
        within = settings.batch.max_wait_ms / 1000.0 or 0.001
        async for events in stream.take_events(settings.batch.max_records, within=within):
            for event in events:  # released below, once the outputs are on the broker
                event.message.incref()
            raw = RawBatch.of_kafka([_Record(e.message) for e in events])
            result = await judged(raw)
            await asyncio.get_running_loop().run_in_executor(executor, deliver, result.messages)
            for event in events:
                event.ack()
            metrics.set_redis_ok(True)
            metrics.record_batch(result, settings.batch.max_records)
            metrics.tick()
            await asyncio.get_running_loop().run_in_executor(executor, _reload, model, metrics)

    metrics.serving(model.detector.model_version)
    metrics.set_running(True)
    metrics.set_joined()  # faust joins the group itself; readiness then follows Redis
    started = time.monotonic()
    log.info("faust runner starting", extra={"model_version": model.detector.model_version})
    try:
        # faust (mode) sets up logging again when it starts; the same JSON lines as the worker.
        level = logging.getLevelName(logging.getLogger().level)
        json_logs = {
            "version": 1,
            "disable_existing_loggers": False,
            "formatters": {"json": {"()": JsonFormatter}},
            "handlers": {"stderr": {"class": "logging.StreamHandler", "formatter": "json"}},
            "root": {"handlers": ["stderr"], "level": level},
        }
        # faust's startup banner and spinner are not logs. Left open: the spinner writes to it
        # once more from an atexit hook.
        banner = open(os.devnull, "w")  # noqa: SIM115
        worker = faust.Worker(
            app, loglevel=level, logging_config=json_logs, quiet=True, stdout=banner
        )
        worker.execute_from_commandline()
    finally:
        metrics.set_running(False)
        executor.shutdown(wait=False)
        outbox.close(5.0)
        log.info("faust runner stopped", extra={"seconds": round(time.monotonic() - started, 1)})


class _Record:
    """A faust message as RawBatch.of_kafka reads a confluent-kafka one."""

    __slots__ = ("_m",)

    def __init__(self, message: Any) -> None:
        self._m = message

    def topic(self) -> str:
        return str(self._m.topic)

    def partition(self) -> int:
        return int(self._m.partition)

    def offset(self) -> int:
        return int(self._m.offset)

    def key(self) -> bytes | None:
        return self._m.key

    def value(self) -> bytes | None:
        return self._m.value


def _reload(model: ModelSlot, metrics: WorkerMetrics) -> None:
    outcome = model.maybe_reload()
    if outcome is not None:
        metrics.model_reloads.labels(outcome).inc()
        metrics.serving(model.detector.model_version)
