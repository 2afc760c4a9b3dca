"""Assemble and run one worker from `Settings`: the model, Redis state, metrics, signals.

The CLI (`ama-stream worker`), the demo and the benchmark all start workers through
:func:`build_worker` / :func:`run_worker`, so they run exactly the production wiring.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
from functools import partial
from pathlib import Path
from types import FrameType
from typing import Literal

import torch

from model.detector import AMADetector, pick_device, pick_precision
from model.store import ModelStore
from schemas.errors import ConfigError
from schemas.settings import Settings
from streamer.lifecycle.registry import restore
from streamer.lifecycle.reload import ModelSlot, check_input_size
from streamer.preflight import check_kafka, check_redis
from streamer.probes import serve
from streamer.state.client import RedisClient, connect_from_settings, redis_where
from streamer.state.verdicts import ThresholdState
from streamer.worker.config import WorkerOptions
from streamer.worker.faust_runner import run_faust_worker
from streamer.worker.loop import Worker
from streamer.worker.metrics import WorkerMetrics
from streamer.worker.outbox import ProducerLost

__all__ = ["Runner", "build_parts", "build_worker", "run_worker"]

Runner = Literal["confluent", "faust"]

log = logging.getLogger(__name__)

#: Exit status when the producer is lost for good (EX_TEMPFAIL: start the worker again).
EXIT_PRODUCER_LOST = 75


def _bundle_path(settings: Settings, client: RedisClient, store: ModelStore) -> Path:
    """``model.bundle`` if set, else the bundle the group was last pointed at (the registry's
    pointer, restored from the model store if Redis lost it), so a restarted worker serves the
    same version as its peers. A pointer names a path inside the store, or it is refused."""
    if settings.model.bundle is not None:
        return settings.model.bundle
    pointer = restore(client, settings.redis.key_prefix, store)
    if pointer is None:
        raise ConfigError("no model.bundle given and none published (ama-stream model publish)")
    return store.confine(pointer.path)


def build_parts(settings: Settings, *, torch_threads: int = 1) -> tuple[ModelSlot, ThresholdState]:
    """The model slot (the bundle loaded once onto its device and precision, following the
    registry) and the Redis state: what every runner scores and judges with.

    ``torch_threads`` bounds intra-op threads: a micro-batch is small, and extra threads only
    contend with librdkafka's and the other workers' on a small machine.
    """
    torch.set_num_threads(torch_threads)
    device = pick_device(settings.model.device)
    client = connect_from_settings(settings)
    store, key = ModelStore(settings.retrain.store), settings.model.signing_key_bytes()
    path = _bundle_path(settings, client, store)
    detector = AMADetector.load(path, device=device, signing_key=key)
    check_input_size(detector, settings.limits.max_dims)
    detector.to(device, pick_precision(settings.model.precision, device))
    slot = ModelSlot(
        detector, client=client, prefix=settings.redis.key_prefix, device=str(device),
        store=store, signing_key=key, max_dims=settings.limits.max_dims,
    )  # fmt: skip
    log.info(
        "model loaded",
        extra={
            "model_version": detector.model_version,
            "device": str(device),
            "precision": detector.precision,
            "input_shape": list(detector.input_shape),
        },
    )
    return slot, ThresholdState.from_settings(settings, client=client)


def build_worker(
    settings: Settings,
    *,
    options: WorkerOptions | None = None,
    metrics: WorkerMetrics | None = None,
    torch_threads: int = 1,
) -> Worker:
    """A ready-to-run confluent-kafka worker (see :func:`build_parts`)."""
    slot, verdicts = build_parts(settings, torch_threads=torch_threads)
    return Worker(settings, model=slot, verdicts=verdicts, metrics=metrics, options=options)


def run_worker(
    settings: Settings, *, runner: Runner = "confluent", options: WorkerOptions | None = None
) -> None:
    """Log the effective config (secrets masked), serve metrics, check Kafka and Redis, run
    until SIGTERM/SIGINT.

    In that order: a port clash or a service that refuses us is a misconfiguration, reported
    in one line before a model is loaded (streamer/preflight.py). ``runner`` picks the Kafka
    client the loop runs on (docs/worker.md): ``confluent`` (librdkafka, the default) or
    ``faust`` (faust-streaming on aiokafka).
    """
    log.info("effective configuration", extra={"settings": settings.redacted_dict()})
    metrics = WorkerMetrics()
    server = serve(metrics.probes(), settings.metrics.port)
    log.info("metrics on /metrics, /healthz, /readyz", extra={"port": server.port})
    try:
        kafka, timeout = settings.kafka, settings.worker.startup_timeout_s
        topics = (kafka.input_topic, kafka.scores_topic, kafka.alerts_topic, kafka.dlq_topic)
        check_kafka(settings, topics, timeout_s=timeout)
        check_redis(partial(connect_from_settings, settings), timeout_s=timeout,
                    where=redis_where(settings))  # fmt: skip
        if runner == "faust":
            slot, verdicts = build_parts(settings)
            run_faust_worker(settings, model=slot, verdicts=verdicts, metrics=metrics)
            return
        worker = build_worker(settings, options=options, metrics=metrics)

        def on_signal(signum: int, _frame: FrameType | None) -> None:
            log.info("signal received; draining", extra={"signal": signal.Signals(signum).name})
            worker.stop()

        if threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGTERM, on_signal)
            signal.signal(signal.SIGINT, on_signal)
        try:
            worker.run()
        except ProducerLost as exc:
            log.critical(f"{exc}; exiting at once so that a restarted worker takes over; "
                         "nothing of the open batch was committed")  # fmt: skip
            logging.shutdown()
            os._exit(EXIT_PRODUCER_LOST)  # an orderly exit would wait on the lost producer
    finally:
        server.stop()
