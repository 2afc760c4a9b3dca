"""The retrain cycle (docs/retrain.md): window -> challenger -> gate -> publish or reject.

One cycle, under the retrain lock:

1. sweep half-written bundles of dead jobs out of the model store;
2. load the champion (the bundle the workers' pointer names);
3. read the training window (training_set.py): recent input records, minus those any serving
   model flagged, a held-out slice, labelled feedback;
4. train a challenger with the champion's configuration (``retrain.config`` overrides fields)
   within ``retrain.time_budget_s``;
5. gate it (gate.py) against the champion on the held-out slice and the labels;
6. publish: write the bundle to the store (atomic rename), then publish it through the
   registry (registry.py), which checks it as a worker would and, in one
   fenced step, sets the pointer and appends the history entry; or record the rejection with
   the same numbers. If an operator published another version while the cycle trained, the
   cycle's result is recorded as ``superseded`` and nothing else changes.

Workers pick a published version up between batches (reload.py). If the job dies at any point,
the pointer still names the champion and the store holds no partial version.
"""

from __future__ import annotations

import logging
import signal
import threading
import time
from dataclasses import asdict, dataclass
from functools import partial
from typing import Any, Literal

import redis
from confluent_kafka import KafkaException

from model.detector import AMADetector, pick_device
from model.store import ModelStore
from schemas.errors import AmaStreamError
from schemas.settings import Settings
from streamer.lifecycle import registry
from streamer.lifecycle.drift import DriftMetrics, DriftWindow
from streamer.lifecycle.gate import judge
from streamer.lifecycle.training_set import TrainingSet, build_training_set
from streamer.preflight import check_kafka, check_redis
from streamer.probes import Probes, serve
from streamer.state.client import connect_from_settings, redis_where

__all__ = [
    "CycleResult",
    "RetrainError",
    "check_drift",
    "preflight",
    "run_cycle",
    "run_schedule",
    "train_challenger",
]

log = logging.getLogger(__name__)

Decision = Literal["published", "rejected", "skipped", "superseded", "locked"]


class RetrainError(AmaStreamError):
    """A cycle cannot run at all (e.g. nothing is published yet to retrain from)."""


@dataclass(frozen=True)
class CycleResult:
    """What a cycle decided; ``entry`` is the history entry (None when the lock was held)."""

    decision: Decision
    entry: dict[str, Any] | None


def train_challenger(champion: AMADetector, data: TrainingSet, settings: Settings) -> AMADetector:
    """A new detector of the champion's kind and configuration, trained on ``data.train``."""
    cfg = settings.retrain
    assert champion.config is not None  # a loaded bundle always has its config
    fields = {k: v for k, v in asdict(champion.config).items() if k not in ("kind", "input_shape")}
    challenger = AMADetector(kind=champion.kind, **{**fields, **cfg.config})
    return challenger.fit(
        data.train, epochs=cfg.epochs, batch_size=cfg.batch_size, seed=cfg.seed,
        device=pick_device(cfg.device), progress=False, time_budget_s=cfg.time_budget_s,
    )  # fmt: skip


def run_cycle(
    settings: Settings, *, now_s: float | None = None, trigger: dict[str, Any] | None = None
) -> CycleResult:
    """Run one cycle; returns ``locked`` at once if another job holds the lock.

    ``trigger`` (why the cycle runs, e.g. ``{"reason": "drift", "psi": 0.4}``) is recorded in
    the history entry; the default is a manual or CronJob run.
    """
    cfg, prefix = settings.retrain, settings.redis.key_prefix
    client = connect_from_settings(settings)
    lock = registry.RetrainLock(client, prefix, cfg.lock_ttl_s)
    if not lock.acquire():
        log.info("another retrain job holds the lock; nothing to do")
        return CycleResult("locked", None)
    try:
        key = settings.model.signing_key_bytes()
        store = ModelStore(cfg.store, signing_key=key)
        for stale in store.sweep():
            log.warning("removed a half-written bundle", extra={"path": str(stale)})
        serving = registry.current(client, prefix)
        if serving is None:
            raise RetrainError("no model published yet: `ama-stream model publish` a first one")
        champion = AMADetector.load(store.confine(serving.path), device="cpu", signing_key=key)
        data = build_training_set(
            settings, kind=champion.kind, input_shape=champion.input_shape,
            now_s=time.time() if now_s is None else now_s,
        )  # fmt: skip
        entry: dict[str, Any] = {
            "trigger": trigger or {"reason": "once"},
            "parent": champion.model_version,
            "parent_path": str(serving.path),
            "window": data.summary,
        }
        log.info("training window read", extra={"window": data.summary})
        if len(data.train) < cfg.min_records or len(data.holdout) == 0:
            entry.update(decision="skipped", version=None, reasons=["too few usable records"])
            registry.record(client, prefix, lock, entry)
            log.info("cycle skipped: too few usable records", extra={"window": data.summary})
            return CycleResult("skipped", entry)
        challenger = train_challenger(champion, data, settings).to("cpu")
        labelled = None
        if len(data.labels):
            labelled = (champion.score(data.labelled), challenger.score(data.labelled), data.labels)
        result = judge(
            cfg,
            champion=(champion.score(data.holdout), champion.threshold),
            challenger=(challenger.score(data.holdout), challenger.threshold),
            holdout_keys=data.holdout_keys,
            labelled=labelled,
        )
        training = challenger.training
        entry.update(
            version=challenger.model_version,
            metrics=result.metrics,
            reasons=result.reasons,
            training={k: training[k] for k in ("rows", "epochs", "iterations", "wall_s", "device")},
        )
        if result.decision == "reject":
            entry["decision"] = "rejected"
            registry.record(client, prefix, lock, entry)
            log.warning("challenger rejected", extra={"entry": entry})
            return CycleResult("rejected", entry)
        challenger.metrics = {"gate": result.metrics, "window": data.summary}
        path = store.write(challenger)
        try:
            entry = registry.publish(
                client, prefix, path, {**entry, "decision": "published"},
                based_on=serving, lock=lock, store=store, signing_key=key,
            )  # fmt: skip
        except registry.Superseded:
            entry.update(decision="superseded", reasons=["another version was published meanwhile"])
            registry.record(client, prefix, lock, entry)
            log.warning(
                "challenger superseded by a publish during the cycle", extra={"entry": entry}
            )
            return CycleResult("superseded", entry)
        log.info("challenger published", extra={"entry": entry})
        return CycleResult("published", entry)
    finally:
        lock.release()


def preflight(settings: Settings) -> None:
    """Kafka, Redis and the topics a cycle reads are there and accept us, or one clear
    :class:`~streamer.preflight.StartupError` (streamer/preflight.py)."""
    kafka, cfg = settings.kafka, settings.retrain
    topics = [
        kafka.input_topic,
        kafka.scores_topic,
        *([cfg.labels_topic] if cfg.labels_topic else []),
    ]
    timeout = settings.worker.startup_timeout_s
    check_kafka(settings, topics, timeout_s=timeout)
    check_redis(partial(connect_from_settings, settings), timeout_s=timeout,
                where=redis_where(settings))  # fmt: skip


def check_drift(settings: Settings, metrics: DriftMetrics, window: DriftWindow) -> float:
    """Update ``window`` with the scores since the last check, export the per-key PSI of the
    serving version; returns the largest. The serving bundle is loaded once per version."""
    client = connect_from_settings(settings)
    serving = registry.current(client, settings.redis.key_prefix)
    if serving is None:
        return 0.0
    calibration = window.calibration
    if serving.version != window.version:
        calibration = AMADetector.load(serving.path, device="cpu").calibration
    drift = window.update(settings, model_version=serving.version, calibration=calibration,
                          now_s=time.time())  # fmt: skip
    metrics.update(drift)
    return max(drift.values(), default=0.0)


def run_schedule(
    settings: Settings,
    *,
    every_s: float,
    on_drift: bool,
    stop: threading.Event | None = None,
    metrics: DriftMetrics | None = None,
) -> None:
    """A cycle at start and then every ``every_s``, until ``stop`` (SIGTERM/SIGINT from the CLI).

    Between cycles the drift signal is refreshed every ``retrain.drift_check_s`` and served on
    ``metrics.port`` (``ama_score_psi``); with ``on_drift``, a PSI at or above
    ``retrain.drift_psi`` starts the next cycle at once, unless the last one began less than
    ``retrain.drift_cooldown_s`` ago (a rejected challenger leaves the drift in place; without
    the cooldown every check would start another cycle). A cycle that fails (broker or Redis
    unreachable, a topic not ready) is logged and tried again at the next drift check, not
    ``every_s`` later; the champion keeps serving meanwhile.
    """
    cfg = settings.retrain
    if stop is None:
        stop = threading.Event()
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda *_: stop.set())
    metrics = metrics or DriftMetrics()
    # Ready while the last cycle or drift check reached the broker and Redis.
    reached = threading.Event()
    server = serve(Probes(metrics.registry, lambda: True, reached.is_set), settings.metrics.port)
    log.info("metrics on /metrics, /healthz, /readyz", extra={"port": server.port})
    due = last = time.monotonic()
    trigger: dict[str, Any] = {"reason": "schedule"}
    window = DriftWindow()
    try:
        while not stop.is_set():
            if time.monotonic() >= due:
                last = time.monotonic()
                try:
                    run_cycle(settings, trigger=trigger)
                    reached.set()
                    due, trigger = time.monotonic() + every_s, {"reason": "schedule"}
                except (AmaStreamError, KafkaException, redis.RedisError) as exc:
                    reached.clear()
                    log.error(
                        "cycle failed; the champion keeps serving",
                        extra={"error": str(exc)},
                        exc_info=True,
                    )
                    due = time.monotonic() + min(every_s, cfg.drift_check_s)
            if stop.wait(max(0.0, min(due - time.monotonic(), cfg.drift_check_s))):
                break
            try:
                worst = check_drift(settings, metrics, window)
                reached.set()
            except (AmaStreamError, KafkaException, redis.RedisError) as exc:
                reached.clear()
                log.warning("drift check failed", extra={"error": str(exc)})
                continue
            if (
                on_drift
                and worst >= cfg.drift_psi
                and time.monotonic() - last >= cfg.drift_cooldown_s
            ):
                log.info("score drift: starting a cycle early", extra={"psi": worst})
                due, trigger = time.monotonic(), {"reason": "drift", "psi": worst}
    finally:
        server.stop()
