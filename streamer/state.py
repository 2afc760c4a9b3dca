"""The Redis edge of thresholds and alerts: one atomic round trip per micro-batch.

:class:`ThresholdState` sends a whole batch of scores to ``streamer/verdicts.lua`` (EVALSHA; on
NOSCRIPT redis-py loads it and retries) and gets back, per record, the threshold and the verdict,
plus the alert transitions. Redis keys, per model version and record key::

    {prefix}:{model_version}:stats:{key}   hash  n, mean, var, q           (TTL ttl_s)
    {prefix}:alert:{key}                   hash  a (alert state), o:{partition} (TTL ttl_s)

Statistics are per model version so that a new model's score scale never inherits old stats;
the alert state and the last applied offset per partition are not, so an episode that spans a
hot swap still resolves once and a replayed record is still recognised. If Redis cannot be
reached, :meth:`ThresholdState.apply` does not raise: it answers from thresholds cached in this
process, flags the batch degraded and retries with backoff. See docs/thresholds.md.
"""

from __future__ import annotations

import json
import logging
import math
import random
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from schemas.errors import AmaStreamError
from schemas.events import Alert, alert_fingerprint
from streamer.alerts import AlertPolicy, AlertState, decode_transition
from streamer.thresholds import KeyStats, ThresholdPolicy

if TYPE_CHECKING:
    from schemas.settings import Settings

__all__ = [
    "CONNECT_TIMEOUT_S",
    "SOCKET_TIMEOUT_S",
    "KeySnapshot",
    "ThresholdState",
    "ThresholdStateError",
    "Verdicts",
    "connect",
]

log = logging.getLogger(__name__)

# Redis answers a local connect in well under a millisecond; 0.5 s tolerates a busy network
# while a blackholed server (no RST) costs the poll loop at most this per backoff period.
CONNECT_TIMEOUT_S = 0.5
# The script for a 1024-record batch runs in about a millisecond on the server; 1 s is ample
# headroom, and far inside Kafka's max.poll.interval.ms, so a hung Redis cannot stall the loop.
SOCKET_TIMEOUT_S = 1.0
# Thresholds cached for degraded mode: bounded so that a high-cardinality key space cannot grow
# the worker without limit (least recently used keys are dropped first, then use the floor).
DEFAULT_CACHE_KEYS = 100_000
# Scores are finite by the detector's contract; a non-finite one is sent as the largest double
# (always anomalous, never learned) because NaN would poison a key's statistics for good.
_MAX = np.finfo(np.float64).max

_UNREACHABLE: tuple[type[Exception], ...] = (
    redis.exceptions.ConnectionError,  # includes BusyLoadingError (server still loading)
    redis.exceptions.TimeoutError,
    redis.exceptions.ReadOnlyError,  # talking to a replica during a failover
)


class ThresholdStateError(AmaStreamError):
    """A batch that cannot be judged (misaligned arrays) or a script failure: a bug, not an
    outage; outages never raise (see :meth:`ThresholdState.apply`)."""


def connect(
    url: str,
    *,
    password: str | None = None,
    connect_timeout_s: float = CONNECT_TIMEOUT_S,
    socket_timeout_s: float = SOCKET_TIMEOUT_S,
) -> redis.Redis:
    """A Redis client fit for the poll loop: short timeouts and no client-side retries.

    redis-py's default client retries a failed command several times with backoff, which would
    block the poll loop for seconds while Redis is down; :class:`ThresholdState` does its own
    single retry and then backs off between batches instead.
    """
    return redis.Redis.from_url(
        url,
        password=password,
        socket_connect_timeout=connect_timeout_s,
        socket_timeout=socket_timeout_s,
        retry=Retry(NoBackoff(), 0),
    )


def connect_from_settings(settings: Settings) -> redis.Redis:
    """:func:`connect` to the Redis that ``settings.redis`` names (TLS and password applied)."""
    password = settings.redis.password
    url = settings.redis.url
    if settings.redis.tls and url.startswith("redis://"):
        url = "rediss://" + url.removeprefix("redis://")
    return connect(url, password=password.get_secret_value() if password else None)


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


@dataclass(frozen=True, slots=True)
class KeySnapshot:
    """One key's current statistics, threshold and alert state, for dashboards and tests."""

    key: str
    model_version: str
    stats: KeyStats | None  # None: no normal record learned yet (or expired)
    threshold: float  # what the key's next record would be judged against
    warming_up: bool
    alert_state: AlertState
    alert_id: str | None  # the firing episode's id, else None
    ttl_s: int | None  # seconds until the statistics expire; None when there are none


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


def _pack_records(*columns: np.ndarray) -> bytes:
    """The batch as verdicts.lua reads it: per record, 5 big-endian doubles in column order.

    Doubles carry every score and ts exactly, and key indices, partitions and offsets exactly
    below 2^53; one C-level copy instead of thousands of argument strings.
    """
    return np.column_stack(columns).astype(">f8").tobytes()


def _load_script() -> str:
    # Next to this module (package data), not via resources.files("streamer"): under pytest the
    # name "streamer" can also resolve to the tests/streamer folder.
    return Path(__file__).with_name("verdicts.lua").read_text(encoding="utf-8")


class ThresholdState:
    """Per-key adaptive thresholds and alert state in Redis, shared by every worker.

    ``client`` should come from :func:`connect` (short timeouts, no client-side retries).
    ``prefix`` starts every Redis key. ``ttl_s``: idle keys' statistics and alert state expire
    after it (refreshed by every applied record). ``reemit_replayed_alerts``: a redelivered
    record that caused a transition returns it again (same ``alert_id``), because the first
    reply may have been lost before the alert reached Kafka; consumers de-duplicate by
    ``(alert_id, status)``. ``backoff_initial_s``/``backoff_max_s`` bound how often a down Redis
    is retried. ``cache_keys`` bounds the degraded-mode threshold cache.
    """

    def __init__(
        self,
        client: redis.Redis,
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
    ) -> None:
        if not prefix:
            raise ThresholdStateError("the Redis key prefix must not be empty")
        if ttl_s < 1:
            raise ThresholdStateError("ttl_s must be >= 1")
        if client.get_connection_kwargs().get("decode_responses"):
            raise ThresholdStateError("the Redis client must not decode responses (packed reply)")
        self._client = client
        self._prefix = prefix
        self.thresholds = thresholds or ThresholdPolicy()
        self.alerts = alerts or AlertPolicy()
        self._ttl_s = int(ttl_s)
        self._reemit = reemit_replayed_alerts
        self._script = client.register_script(_load_script())
        self._backoff = _Backoff(backoff_initial_s, backoff_max_s, clock)
        self._cache: OrderedDict[tuple[str, str], float] = OrderedDict()
        self._cache_keys = cache_keys

    @classmethod
    def from_settings(
        cls, settings: Settings, *, client: redis.Redis | None = None, **kwargs: Any
    ) -> ThresholdState:
        """Build it from ``Settings`` (sections ``redis``, ``thresholds``, ``alerts``).

        A client is made with :func:`connect_from_settings` unless one is given; ``kwargs`` pass the
        constructor's remaining options through.
        """
        return cls(
            client or connect_from_settings(settings),
            prefix=settings.redis.key_prefix,
            thresholds=ThresholdPolicy.from_settings(settings.thresholds),
            alerts=AlertPolicy.from_settings(settings.alerts),
            ttl_s=settings.thresholds.ttl_s,
            **kwargs,
        )

    # Redis key names -------------------------------------------------------------------------

    def stats_key(self, key: str, model_version: str) -> str:
        """Redis hash holding ``key``'s statistics under ``model_version``."""
        return f"{self._prefix}:{model_version}:stats:{key}"

    def alert_key(self, key: str) -> str:
        """Redis hash holding ``key``'s alert state and last applied offsets."""
        return f"{self._prefix}:alert:{key}"

    @property
    def degraded(self) -> bool:
        """True while the last attempt to reach Redis failed."""
        return self._backoff.failing

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
        columns = (scores, ts, partitions, offsets)
        if any(len(column) != n for column in columns):
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
        redis_keys: list[str] = []
        for key in keys:
            if key not in index:
                index[key] = len(index) + 1  # Lua tables are 1-based
                redis_keys += (self.stats_key(key, model_version), self.alert_key(key))
        args: list[str | bytes] = [
            *self.thresholds.script_args(floor),
            str(self._ttl_s),
            *self.alerts.script_args(),
            model_version,
            "1" if self._reemit else "0",
            str(len(index)),
            _pack_records(
                np.fromiter((index[key] for key in keys), np.float64, count=n),
                scores,
                ts,
                np.asarray(partitions, np.float64),
                np.asarray(offsets, np.float64),
            ),
        ]

        try:
            reply = self._run(redis_keys, args)
        except _UNREACHABLE as exc:
            wait = self._backoff.failed()
            log.warning("Redis unreachable (%s); degraded verdicts, next try in %.2fs", exc, wait)
            return self._degraded(model_version, floor, keys, scores)
        except redis.exceptions.RedisError as exc:
            raise ThresholdStateError(f"threshold script failed: {exc}") from exc
        if self._backoff.failing:
            log.info("Redis reachable again; verdicts from shared state")
        self._backoff.succeeded()
        return self._verdicts(reply, model_version, keys, list(index))

    def _run(self, redis_keys: list[str], args: list[str | bytes]) -> Any:
        """EVALSHA, retried once at once: a pooled connection may be stale after a Redis
        restart, and a reply lost to a timeout is recovered by the retry (the offsets make it
        idempotent and the transitions it carried are re-announced)."""
        try:
            return self._script(keys=redis_keys, args=args)
        except _UNREACHABLE:
            return self._script(keys=redis_keys, args=args)

    def _verdicts(
        self, reply: Any, model_version: str, keys: Sequence[str], distinct: list[str]
    ) -> Verdicts:
        raw_thresholds, raw_flags, raw_transitions, raw_next = reply
        thresholds = np.frombuffer(raw_thresholds, ">f8").astype(np.float64)
        flags = raw_flags.encode() if isinstance(raw_flags, str) else raw_flags
        is_anomaly = np.frombuffer(flags, np.uint8) == ord("1")
        alerts = []
        replayed = 0
        for record, encoded, was_replayed in raw_transitions:
            alerts.append(decode_transition(keys[int(record) - 1], encoded))
            replayed += int(was_replayed)
        next_thresholds = np.frombuffer(raw_next, ">f8").tolist()
        for key, value in zip(distinct, next_thresholds, strict=True):
            self._remember(model_version, key, value)
        return Verdicts(thresholds, is_anomaly, alerts, False, replayed)

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

    def snapshot(self, key: str, *, model_version: str, floor: float) -> KeySnapshot:
        """Read one key's statistics, threshold and alert state (one pipelined round trip).

        For dashboards and tests; unlike :meth:`apply` it raises ``redis.RedisError`` when Redis
        is unreachable, since a dashboard should show that rather than stale numbers.
        """
        pipe = self._client.pipeline(transaction=False)
        pipe.hmget(self.stats_key(key, model_version), "n", "mean", "var", "q")
        pipe.ttl(self.stats_key(key, model_version))
        pipe.hget(self.alert_key(key), "a")
        (n, mean, var, q), ttl, encoded = pipe.execute()
        # verdicts.lua keeps the alert state as one JSON array of strings: state, window flags,
        # window, episode start, ... (see load() there).
        st, flags, _, start = json.loads(encoded)[:4] if encoded else ("ok", "", "", "")
        stats = (
            KeyStats(n=int(n), mean=float(mean), var=float(var), quantile=float(q))
            if n is not None
            else None
        )
        state: AlertState = "ok"
        alert_id = None
        if st == "firing":
            state = "firing"
            alert_id = alert_fingerprint(key, float(start))
        elif "1" in flags:
            state = "pending"
        return KeySnapshot(
            key=key,
            model_version=model_version,
            stats=stats,
            threshold=self.thresholds.threshold(stats, float(floor)),
            warming_up=stats is None or stats.n < self.thresholds.warmup,
            alert_state=state,
            alert_id=alert_id,
            ttl_s=int(ttl) if stats is not None and ttl >= 0 else None,
        )
