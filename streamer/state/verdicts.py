"""The Redis edge of thresholds and alerts: one atomic round trip per micro-batch.

:class:`ThresholdState` sends a whole batch of scores through :mod:`streamer.state.script` (the
one wrapper of ``verdicts.lua``; EVALSHA, and on NOSCRIPT redis-py loads it and retries) and
gets back, per record, the threshold and the verdict, plus the alert transitions.

Statistics are per model version so that a new model's score scale never inherits old stats;
the alert state and the last applied offset per partition are not, so an episode that spans a
hot swap still resolves once and a replayed record is still recognised. If Redis cannot be
reached (or answers OOM, BUSY, LOADING), :meth:`ThresholdState.apply` does not raise: it answers
from thresholds cached in this process, flags the batch degraded and retries with backoff. If
Redis refuses the credentials it raises a fatal :class:`~schemas.errors.ServiceError`: waiting
cannot help. See docs/thresholds.md.
"""

from __future__ import annotations

import logging
import math
import random
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import redis

from schemas.errors import AmaStreamError, ServiceError
from schemas.events import Alert
from streamer.state.alerts import AlertPolicy
from streamer.state.client import RedisClient, classify, connect_from_settings, is_cluster
from streamer.state.keys import KeyLayout
from streamer.state.script import KeyReading, Reply, VerdictScript
from streamer.state.thresholds import ThresholdPolicy

if TYPE_CHECKING:
    from schemas.settings import Settings

__all__ = ["ThresholdState", "ThresholdStateError", "Verdicts"]

log = logging.getLogger(__name__)

# Thresholds cached for degraded mode: bounded so that a high-cardinality key space cannot grow
# the worker without limit (least recently used keys are dropped first, then use the floor).
DEFAULT_CACHE_KEYS = 100_000
# Scores are finite by the detector's contract; a non-finite one is sent as the largest double
# (always anomalous, never learned) because NaN would poison a key's statistics for good.
_MAX = np.finfo(np.float64).max


class ThresholdStateError(AmaStreamError):
    """A batch that cannot be judged (misaligned arrays) or a script failure: a bug, not an
    outage; outages never raise (see :meth:`ThresholdState.apply`)."""


@dataclass(frozen=True, slots=True)
class Verdicts:
    """Thresholds and verdicts for one batch (arrays aligned with its records), plus alerts.

    ``degraded`` means Redis was not reached: thresholds came from this worker's cache (the
    bundle's floor for keys it has not seen), nothing was learned and no alert can change.
    ``replayed_alerts`` counts transitions in ``alerts`` that re-announce one already returned
    for the same record (a redelivered batch); they are identical to the first announcement.
    """

    thresholds: np.ndarray  # float64 (n,)
    is_anomaly: np.ndarray  # bool (n,)
    alerts: list[Alert] = field(default_factory=list)
    degraded: bool = False
    replayed_alerts: int = 0


class _Backoff:
    """Exponential backoff between reconnect attempts, with jitter so workers do not stampede."""

    def __init__(self, initial_s: float, max_s: float, clock: Callable[[], float]) -> None:
        self._initial = initial_s
        self._max = max_s
        self._clock = clock
        self._delay = 0.0
        self._next = 0.0

    @property
    def failing(self) -> bool:
        return self._delay > 0.0

    def ready(self) -> bool:
        return self._clock() >= self._next

    def failed(self) -> float:
        self._delay = min(self._max, self._delay * 2 if self._delay else self._initial)
        wait = self._delay * random.uniform(0.8, 1.2)
        self._next = self._clock() + wait
        return wait

    def succeeded(self) -> None:
        self._delay = 0.0
        self._next = 0.0


class ThresholdState:
    """Per-key adaptive thresholds and alert state in Redis, shared by every worker.

    ``client`` should come from :func:`streamer.state.client.connect` (short timeouts, no
    client-side retries). ``prefix`` starts every Redis key. ``ttl_s``: idle keys' statistics
    and alert state expire after it (refreshed by every applied record).
    ``reemit_replayed_alerts``: a redelivered record that caused a transition returns it again
    (same ``alert_id``), because the first reply may have been lost before the alert reached
    Kafka; consumers de-duplicate by ``(alert_id, status)``.
    ``backoff_initial_s``/``backoff_max_s`` bound how often a down Redis is retried.
    ``cache_keys`` bounds the degraded-mode threshold cache.
    On a Redis Cluster client the keys carry hash tags over ``slot_groups`` groups and a batch
    is one script call per group present (docs/thresholds.md, "Redis Cluster");
    ``wait_replicas`` replicas must acknowledge a batch's writes before it counts as applied.
    """

    def __init__(
        self,
        client: RedisClient,
        *,
        prefix: str,
        thresholds: ThresholdPolicy | None = None,
        alerts: AlertPolicy | None = None,
        ttl_s: int = 7 * 24 * 3600,
        reemit_replayed_alerts: bool = True,
        backoff_initial_s: float = 0.1,
        backoff_max_s: float = 5.0,
        cache_keys: int = DEFAULT_CACHE_KEYS,
        clock: Callable[[], float] = time.monotonic,
        slot_groups: int = 1,
        wait_replicas: int = 0,
    ) -> None:
        if not prefix:
            raise ThresholdStateError("the Redis key prefix must not be empty")
        if ttl_s < 1:
            raise ThresholdStateError("ttl_s must be >= 1")
        if client.get_connection_kwargs().get("decode_responses"):
            raise ThresholdStateError("the Redis client must not decode responses (packed reply)")
        self.thresholds = thresholds or ThresholdPolicy()
        self.alerts = alerts or AlertPolicy()
        self._script = VerdictScript(
            client, layout=KeyLayout(prefix, is_cluster(client), slot_groups),
            thresholds=self.thresholds, alerts=self.alerts, ttl_s=int(ttl_s),
            reemit_replayed=reemit_replayed_alerts, wait_replicas=wait_replicas,
        )  # fmt: skip
        self._backoff = _Backoff(backoff_initial_s, backoff_max_s, clock)
        self._cache: OrderedDict[tuple[str, str], float] = OrderedDict()
        self._cache_keys = cache_keys

    @classmethod
    def from_settings(
        cls, settings: Settings, *, client: RedisClient | None = None, **kwargs: Any
    ) -> ThresholdState:
        """Build it from ``Settings`` (sections ``redis``, ``thresholds``, ``alerts``).

        A client is made with :func:`connect_from_settings` unless one is given; ``kwargs`` pass
        the constructor's remaining options through.
        """
        return cls(
            client or connect_from_settings(settings),
            prefix=settings.redis.key_prefix,
            thresholds=ThresholdPolicy.from_settings(settings.thresholds),
            alerts=AlertPolicy.from_settings(settings.alerts),
            ttl_s=settings.thresholds.ttl_s,
            slot_groups=settings.redis.slot_groups,
            wait_replicas=settings.redis.wait_replicas,
            **kwargs,
        )

    @property
    def degraded(self) -> bool:
        """True while the last attempt to reach Redis failed."""
        return self._backoff.failing

    def cached(self) -> CachedVerdicts:
        """The same verdict source answering from this worker's cache only, without Redis: for
        batches that must not reach the shared state before older held ones do
        (streamer/worker/backlog.py)."""
        return CachedVerdicts(self)

    # The batch ---------------------------------------------------------------------------------

    def apply(
        self,
        *,
        model_version: str,
        floor: float,
        keys: Sequence[str],
        scores: np.ndarray,
        ts: np.ndarray,
        partitions: np.ndarray,
        offsets: np.ndarray,
    ) -> Verdicts:
        """Judge one micro-batch and learn from it, in one atomic Redis round trip.

        Records are processed in the given order. Per record: the threshold from the key's
        statistics (``floor``, the bundle's calibrated threshold, at least), ``score >
        threshold``, then, only if ``offset`` is newer than the last applied for (key,
        partition), learning and the alert state machine. Never raises for an unreachable
        Redis: returns degraded verdicts from cached thresholds instead (see :class:`Verdicts`).
        """
        n = len(keys)
        if any(len(column) != n for column in (scores, ts, partitions, offsets)):
            raise ThresholdStateError("apply: keys, scores, ts, partitions, offsets must align")
        if not model_version:
            raise ThresholdStateError("apply: model_version must not be empty")
        if n == 0:
            return Verdicts(np.empty(0, np.float64), np.empty(0, bool))
        floor = float(floor)
        if not math.isfinite(floor):
            raise ThresholdStateError("apply: the floor must be finite")
        scores = np.nan_to_num(np.asarray(scores, np.float64), nan=_MAX, posinf=_MAX, neginf=-_MAX)
        ts = np.asarray(ts, np.float64)
        if not np.isfinite(ts).all():
            raise ThresholdStateError("apply: every ts must be finite")
        if not self._backoff.ready():
            return self._degraded(model_version, floor, keys, scores)

        index: dict[str, int] = {}
        for key in keys:
            index.setdefault(key, len(index))
        distinct = list(index)
        batch = {
            "model_version": model_version,
            "floor": floor,
            "distinct": distinct,
            "key_index": np.fromiter((index[key] for key in keys), np.float64, count=n),
            "scores": scores,
            "ts": ts,
            "partitions": np.asarray(partitions, np.float64),
            "offsets": np.asarray(offsets, np.float64),
        }
        try:
            reply = self._run(batch)
        except redis.RedisError as exc:
            kind = classify(exc)
            if kind == "refused":
                raise ServiceError(f"Redis refused this worker: {exc}", fatal=True) from None
            if kind == "request":
                raise ThresholdStateError(f"threshold script failed: {exc}") from exc
            wait = self._backoff.failed()
            log.warning("Redis unavailable (%s); degraded verdicts, next try in %.2fs", exc, wait)
            return self._degraded(model_version, floor, keys, scores)
        if self._backoff.failing:
            log.info("Redis reachable again; verdicts from shared state")
        self._backoff.succeeded()
        for key, value in zip(distinct, reply.next_thresholds, strict=True):
            self._remember(model_version, key, value)
        return Verdicts(
            reply.thresholds,
            reply.is_anomaly,
            [t.alert for t in reply.transitions],
            False,
            sum(t.replayed for t in reply.transitions),
        )

    def _run(self, batch: dict[str, Any]) -> Reply:
        """The script, retried once at once when Redis seemed unavailable: a pooled connection
        may be stale after a Redis restart, and a reply lost to a timeout is recovered by the
        retry (the offsets make it idempotent and the transitions it carried are re-announced).
        """
        try:
            return self._script.apply(**batch)
        except redis.RedisError as exc:
            if classify(exc) != "unavailable":
                raise
            return self._script.apply(**batch)

    def _remember(self, model_version: str, key: str, threshold: float) -> None:
        cache_key = (model_version, key)
        self._cache[cache_key] = threshold
        self._cache.move_to_end(cache_key)
        while len(self._cache) > self._cache_keys:
            self._cache.popitem(last=False)

    def _degraded(
        self, model_version: str, floor: float, keys: Sequence[str], scores: np.ndarray
    ) -> Verdicts:
        """Verdicts from the last thresholds Redis gave this worker (``floor`` if none)."""
        cache = self._cache
        thresholds = np.fromiter(
            (max(cache.get((model_version, key), floor), floor) for key in keys),
            np.float64,
            count=len(keys),
        )
        return Verdicts(thresholds, scores > thresholds, [], True, 0)

    # Reading -----------------------------------------------------------------------------------

    def snapshot(self, key: str, *, model_version: str, floor: float) -> KeyReading:
        """One key's statistics, threshold and alert state, as the script sees them now.

        For dashboards and tests; unlike :meth:`apply` it raises ``redis.RedisError`` when Redis
        is unreachable, since a dashboard should show that rather than stale numbers.
        """
        return self._script.peek(model_version=model_version, floor=float(floor), keys=[key])[0]


class CachedVerdicts:
    """A :class:`ThresholdState` that does not reach Redis: degraded verdicts from its cache."""

    def __init__(self, state: ThresholdState) -> None:
        self._state = state

    def apply(
        self,
        *,
        model_version: str,
        floor: float,
        keys: Sequence[str],
        scores: np.ndarray,
        ts: np.ndarray,
        partitions: np.ndarray,
        offsets: np.ndarray,
    ) -> Verdicts:
        """Like :meth:`ThresholdState.apply` while Redis is down; ``ts``, partitions and offsets
        matter only to the shared state, which this does not touch."""
        return self._state._degraded(model_version, float(floor), keys, np.asarray(scores))
