"""Redis connections for the poll loop and the jobs: short timeouts, no client-side retries.

A connection is to one Redis server, or, with ``redis.cluster``, to a Redis Cluster
(:class:`redis.cluster.RedisCluster`, which follows the cluster's slot map and its failovers);
callers take either as a :data:`RedisClient`.
"""

from __future__ import annotations

import ssl
from typing import TYPE_CHECKING, Any, Literal, TypeAlias

import redis
from redis.backoff import NoBackoff
from redis.cluster import RedisCluster
from redis.exceptions import RedisClusterException
from redis.retry import Retry

if TYPE_CHECKING:
    from schemas.settings import Settings

__all__ = [
    "CONNECT_TIMEOUT_S",
    "SOCKET_TIMEOUT_S",
    "ClusterUnavailable",
    "NotReplicated",
    "RedisClient",
    "classify",
    "connect",
    "connect_from_settings",
    "is_cluster",
    "redis_where",
]

RedisClient: TypeAlias = "redis.Redis | RedisCluster"

# Redis answers a local connect in well under a millisecond; 0.5 s tolerates a busy network
# while a blackholed server (no RST) costs the poll loop at most this per backoff period.
CONNECT_TIMEOUT_S = 0.5
# The verdict script for a 1024-record batch runs in about a millisecond on the server; 1 s is
# ample headroom, and far inside Kafka's max.poll.interval.ms, so a hung Redis cannot stall the
# loop.
SOCKET_TIMEOUT_S = 1.0

_E = redis.exceptions


class NotReplicated(_E.RedisError):
    """Fewer replicas than ``redis.wait_replicas`` acknowledged a batch's state in time: the
    state is on the master but could be lost with it, so the batch is treated as not applied
    (it is applied again later; the offsets make that idempotent)."""


class ClusterUnavailable(_E.ConnectionError):
    """The Redis Cluster cannot serve (no node reachable, a slot not covered): redis-py raises
    these as ``RedisClusterException``, which is not a ``RedisError``; this makes them the
    outage they are."""


#: Redis refused who we are: wrong password, unknown user, or an ACL that forbids a command.
_REFUSED: tuple[type[Exception], ...] = (
    _E.AuthenticationError,
    _E.AuthorizationError,
    _E.NoPermissionError,
    _E.AuthenticationWrongNumberOfArgsError,
)
#: Redis cannot serve anyone right now; waiting helps.
_UNAVAILABLE: tuple[type[Exception], ...] = (
    _E.ConnectionError,  # includes BusyLoadingError (the server is still loading its data)
    _E.TimeoutError,
    _E.ReadOnlyError,  # a replica, during a failover
    _E.OutOfMemoryError,  # maxmemory reached
    _E.TryAgainError,
    _E.ClusterDownError,  # includes MASTERDOWN
    NotReplicated,
)


def classify(exc: redis.RedisError) -> Literal["refused", "unavailable", "request"]:
    """Whether an error is about our credentials or an untrusted TLS certificate (``refused``:
    fatal), about Redis being
    unable to serve for now (``unavailable``, incl. OOM and BUSY replies: wait), or about the
    request itself (``request``)."""
    if isinstance(exc, _REFUSED) or _untrusted(exc):
        return "refused"
    if isinstance(exc, _UNAVAILABLE) or str(exc).startswith("BUSY"):
        return "unavailable"
    return "request"


def _untrusted(exc: BaseException) -> bool:
    """A TLS handshake that failed on the server's certificate (redis-py wraps it in a
    ConnectionError): the CA or host name is wrong, and no retry will change that."""
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, ssl.SSLCertVerificationError):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


def connect(
    url: str,
    *,
    password: str | None = None,
    cluster: bool = False,
    connect_timeout_s: float = CONNECT_TIMEOUT_S,
    socket_timeout_s: float = SOCKET_TIMEOUT_S,
    ssl_cafile: str | None = None,
) -> RedisClient:
    """A Redis client fit for the poll loop; with ``cluster``, a Redis Cluster client that
    discovers the cluster from the node ``url`` names (raises :class:`ClusterUnavailable` when
    no node answers).

    redis-py's default client retries a failed command several times with backoff, which would
    block the poll loop for seconds while Redis is down; the verdict state does its own single
    retry and then backs off between batches instead.
    """
    options: dict[str, Any] = {
        "password": password,
        "socket_connect_timeout": connect_timeout_s,
        "socket_timeout": socket_timeout_s,
        "retry": Retry(NoBackoff(), 0),
    }
    if ssl_cafile and url.startswith("rediss://"):
        options["ssl_ca_certs"] = ssl_cafile
    if not cluster:
        return redis.Redis.from_url(url, **options)
    try:
        return _Cluster.from_url(url, **options)
    except RedisClusterException as exc:
        raise ClusterUnavailable(str(exc)) from exc


class _Cluster(RedisCluster):
    """A cluster client whose "cannot reach the cluster" errors are ``RedisError`` s, as a single
    server's are, so every caller's outage handling applies unchanged."""

    def execute_command(self, *args: Any, **kwargs: Any) -> Any:
        try:
            return super().execute_command(*args, **kwargs)
        except RedisClusterException as exc:
            raise ClusterUnavailable(str(exc)) from exc


def is_cluster(client: RedisClient) -> bool:
    """Whether ``client`` talks to a Redis Cluster (and key names need hash tags)."""
    return isinstance(client, RedisCluster)


def redis_where(settings: Settings) -> str:
    """The Redis address for messages, with any password in the URL masked."""
    return str(settings.redacted_dict()["redis"]["url"])


def connect_from_settings(settings: Settings) -> RedisClient:
    """:func:`connect` to the Redis that ``settings.redis`` names (TLS, password and cluster
    mode applied)."""
    password = settings.redis.password
    url = settings.redis.url
    if settings.redis.tls and url.startswith("redis://"):
        url = "rediss://" + url.removeprefix("redis://")
    cafile = settings.redis.ssl_cafile
    secret = password.get_secret_value() if password else None
    return connect(
        url,
        password=secret,
        cluster=settings.redis.cluster,
        ssl_cafile=str(cafile) if cafile else None,
    )
