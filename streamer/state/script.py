"""The Python side of ``verdicts.lua``: the only code that knows its keys, arguments and reply.

Arguments and reply are named on both sides: the configuration goes over as one JSON object
whose field names the script reads (``cfg.floor``, ``cfg.window_m``, ...), and the reply is a
list of name/value pairs (``thresholds``, ``anomalous``, ``transitions``, ``next_thresholds``;
``keys`` when peeking) that :meth:`VerdictScript.apply` turns into a :class:`Reply`. Alert
transitions come back as JSON objects named like the :class:`~schemas.events.Alert` fields.
Only the records travel packed (5 big-endian doubles each): thousands of separate arguments
would cost more to build and parse than the script costs Redis.

Redis keys, per model version and record key (docs/thresholds.md; names from
:class:`~streamer.state.keys.KeyLayout`)::

    {prefix}:{model_version}:stats:{key}   hash  n, mean, var, q           (TTL ttl_s)
    {prefix}:alert:{key}                   hash  a (alert state), o:{partition} (TTL ttl_s)

On one server a batch is one script call. On a Redis Cluster it is one call per slot group
present in the batch (each call's keys share one hash slot), all sent in one pipeline: redis-py
writes every node's calls before reading any reply, so a batch costs one round trip per node,
in parallel. ``wait_replicas`` appends a ``WAIT`` per node to the same pipeline.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import orjson
from redis.cluster import RedisCluster
from redis.exceptions import NoScriptError, RedisClusterException

from schemas.events import Alert, alert_fingerprint
from streamer.state.alerts import AlertPolicy, AlertState
from streamer.state.client import ClusterUnavailable, NotReplicated, RedisClient
from streamer.state.keys import KeyLayout
from streamer.state.thresholds import KeyStats, ThresholdPolicy

__all__ = ["KeyReading", "Reply", "Transition", "VerdictScript", "alert_key", "stats_key"]

# How long a WAIT may hold a batch for its replicas' acknowledgements: far above a healthy
# replica's lag (well under a millisecond on a LAN), well below the client's socket timeout.
WAIT_TIMEOUT_MS = 250


def stats_key(prefix: str, model_version: str, key: str) -> str:
    """Redis hash holding ``key``'s statistics under ``model_version`` (one server)."""
    return KeyLayout(prefix).stats(model_version, key)


def alert_key(prefix: str, key: str) -> str:
    """Redis hash holding ``key``'s alert state and last applied offsets (one server)."""
    return KeyLayout(prefix).alert(key)


@dataclass(frozen=True, slots=True)
class Transition:
    """One alert transition: the batch position of the record that caused it, the event, and
    whether it re-announces a transition already returned for that record (a redelivery)."""

    record: int  # 0-based index into the batch's records
    alert: Alert
    replayed: bool


@dataclass(frozen=True, slots=True)
class Reply:
    """What the script answered for one batch, by name."""

    thresholds: np.ndarray  # float64 (n,): the threshold each record was judged against
    is_anomaly: np.ndarray  # bool (n,)
    transitions: list[Transition]
    next_thresholds: list[float]  # per distinct key, in first-seen order


@dataclass(frozen=True, slots=True)
class KeyReading:
    """One key as the script sees it now (``peek``), for dashboards and tests."""

    stats: KeyStats | None  # None: no normal record learned yet (or expired)
    threshold: float  # what the key's next record would be judged against
    warming_up: bool
    alert_state: AlertState
    alert_id: str | None  # the firing episode's id, else None
    ttl_s: int | None  # seconds until the statistics expire; None when there are none


def _load_script() -> str:
    # Next to this module (package data), not via resources.files(): under pytest the package
    # name can also resolve to a folder of the test tree.
    return Path(__file__).with_name("verdicts.lua").read_text(encoding="utf-8")


def _alert(key: str, fields: dict[str, Any]) -> Alert:
    """The Alert event of one transition; timestamps are the records' own ts as the worker
    sent them (``%.17g``), so ``alert_id`` is the same on every worker and replay."""
    starts_at = float(fields["starts_at"])
    return Alert(
        alert_id=alert_fingerprint(key, starts_at),
        key=key,
        status=fields["status"],
        starts_at=starts_at,
        ends_at=float(fields["ends_at"]) if fields["ends_at"] else None,
        peak_score=float(fields["peak_score"]),
        threshold=float(fields["threshold"]),
        n_anomalous=int(fields["n_anomalous"]),
        model_version=fields["model_version"],
        severity=fields["severity"],
    )


class VerdictScript:
    """``verdicts.lua`` registered on ``client``, with the configuration it runs under.

    ``layout`` names the keys (and says whether ``client`` is a cluster); ``wait_replicas``
    replicas must acknowledge a batch's writes before :meth:`apply` returns
    (:class:`~streamer.state.client.NotReplicated` otherwise).
    """

    def __init__(
        self,
        client: RedisClient,
        *,
        layout: KeyLayout,
        thresholds: ThresholdPolicy,
        alerts: AlertPolicy,
        ttl_s: int,
        reemit_replayed: bool,
        wait_replicas: int = 0,
    ) -> None:
        self._client = client
        self._script = client.register_script(_load_script())
        self._layout = layout
        self._wait = wait_replicas
        self._config: dict[str, Any] = {
            "policy": thresholds.policy,
            "quantile": thresholds.quantile,
            "z": thresholds.z,
            "quantile_gain": thresholds.quantile_gain,
            "k_sigma": thresholds.k_sigma,
            "warmup": thresholds.warmup,
            "alpha": thresholds.alpha,
            "ttl_s": ttl_s,
            "n_anomalous": alerts.n_anomalous,
            "window_m": alerts.window_m,
            "quiet_records": alerts.quiet_records,
            "critical_ratio": alerts.critical_ratio,
            "fire_ratio": alerts.fire_ratio,
            "reemit_replayed": reemit_replayed,
        }
        if thresholds.fixed is not None:
            self._config["fixed"] = thresholds.fixed

    def _keys(self, model_version: str, keys: Sequence[str]) -> list[str]:
        layout = self._layout
        return [
            name for key in keys for name in (layout.stats(model_version, key), layout.alert(key))
        ]

    def _run(self, mode: str, model_version: str, floor: float,
             calls: Sequence[tuple[Sequence[str], bytes]]) -> list[dict[str, Any]]:  # fmt: skip
        """One script call per ``(keys, records)`` (each within one slot group); the replies
        by name, in the same order."""
        config = orjson.dumps(
            {**self._config, "mode": mode, "model_version": model_version, "floor": floor}
        )
        requests = [(self._keys(model_version, keys), records) for keys, records in calls]
        if len(requests) == 1 and not self._wait and not isinstance(self._client, RedisCluster):
            (keys, records), = requests  # fmt: skip
            replies = [self._script(keys=keys, args=[config, records])]
        else:
            try:
                replies = self._pipelined(requests, config)
            except RedisClusterException as exc:  # a slot not covered, no node reachable
                raise ClusterUnavailable(str(exc)) from exc
        return [
            {name.decode(): value for name, value in zip(r[::2], r[1::2], strict=True)}
            for r in replies
        ]

    def _pipelined(self, requests: list[tuple[list[str], bytes]], config: bytes) -> list[Any]:
        """Every call (and a WAIT per node) in one pipeline; a node that lost its script cache
        (a promoted replica, a restart) gets it loaded and the pipeline is sent once more."""
        for attempt in range(2):
            pipe = self._client.pipeline(transaction=False)
            targets = [self._node(keys[0]) for keys, _ in requests]
            for (keys, records), node in zip(requests, targets, strict=True):
                # Routed here: redis-py would ask a node for each EVALSHA's keys (COMMAND
                # GETKEYS, one round trip per call) when it is not told where to send it.
                where = {} if node is None else {"target_nodes": node}
                pipe.execute_command("EVALSHA", self._script.sha, len(keys), *keys, config,
                                     records, **where)  # fmt: skip
            nodes = {node.name: node for node in targets if node is not None}
            for node in nodes.values() if nodes else [None]:
                if self._wait:
                    target = {} if node is None else {"target_nodes": node}
                    pipe.execute_command("WAIT", self._wait, WAIT_TIMEOUT_MS, **target)
            results = pipe.execute(raise_on_error=False)
            replies, acks = results[: len(requests)], results[len(requests) :]
            if any(isinstance(r, NoScriptError) for r in replies):
                if attempt == 0:
                    self._client.script_load(self._script.script)
                    continue
                raise ClusterUnavailable("the verdict script is still not loaded where it runs")
            failed = next((r for r in results if isinstance(r, Exception)), None)
            if failed is not None:
                raise failed
            if any(int(ack) < self._wait for ack in acks) or self._moved(requests, targets):
                raise NotReplicated(
                    f"fewer than {self._wait} replica(s) acknowledged within {WAIT_TIMEOUT_MS} ms"
                )
            break
        return replies

    def _node(self, key: str) -> Any:
        """The master serving ``key`` on a cluster (from the client's slot map), else None."""
        if not isinstance(self._client, RedisCluster):
            return None
        return self._client.get_node_from_key(key)

    def _moved(self, requests: list[tuple[list[str], bytes]], targets: list[Any]) -> bool:
        """Whether a call's slot moved to another master meanwhile: redis-py followed the
        redirection after the pipeline's WAITs, so the call's durability is unknown."""
        if not (self._wait and isinstance(self._client, RedisCluster)):
            return False
        return any(
            self._client.get_node_from_key(keys[0]).name != node.name
            for (keys, _), node in zip(requests, targets, strict=True)
        )

    def apply(
        self,
        *,
        model_version: str,
        floor: float,
        distinct: Sequence[str],
        key_index: np.ndarray,
        scores: np.ndarray,
        ts: np.ndarray,
        partitions: np.ndarray,
        offsets: np.ndarray,
    ) -> Reply:
        """Judge and learn one batch; ``key_index[r]`` is record r's position in ``distinct``.

        Raises ``redis.RedisError`` as redis-py does; the caller decides what an outage means.
        """
        index = np.asarray(key_index, np.int64)
        groups = np.zeros(len(distinct), np.int64)
        if self._layout.cluster:
            groups[:] = [self._layout.group(key) for key in distinct]
        calls, members, rows = [], [], []
        for group in np.unique(groups):
            keys_in = np.flatnonzero(groups == group)  # positions in `distinct`, first-seen order
            rows_in = np.flatnonzero(groups[index] == group)  # records, in batch order
            local = np.zeros(len(distinct), np.int64)
            local[keys_in] = np.arange(len(keys_in))
            # Lua tables are 1-based. Doubles carry every score and ts exactly, and key
            # indices, partitions and offsets exactly below 2^53; one C-level copy instead of
            # thousands of argument strings.
            records = np.column_stack(
                (local[index[rows_in]] + 1, scores[rows_in], ts[rows_in], partitions[rows_in],
                 offsets[rows_in])
            ).astype(">f8").tobytes()  # fmt: skip
            calls.append(([distinct[int(i)] for i in keys_in], records))
            members.append(keys_in)
            rows.append(rows_in)
        n = len(index)
        thresholds = np.empty(n, np.float64)
        flags = np.empty(n, bool)
        next_thresholds = np.empty(len(distinct), np.float64)
        transitions = []
        for reply, keys_in, rows_in in zip(
            self._run("apply", model_version, floor, calls), members, rows, strict=True
        ):
            anomalous = reply["anomalous"]
            anomalous = anomalous.encode() if isinstance(anomalous, str) else anomalous
            thresholds[rows_in] = np.frombuffer(reply["thresholds"], ">f8")
            flags[rows_in] = np.frombuffer(anomalous, np.uint8) == ord("1")
            next_thresholds[keys_in] = np.frombuffer(reply["next_thresholds"], ">f8")
            for encoded in reply["transitions"]:
                doc = orjson.loads(encoded)
                record = int(rows_in[int(doc["record"]) - 1])
                key = distinct[int(index[record])]
                alert = _alert(key, doc["alert"])
                transitions.append(Transition(record, alert, bool(doc["replayed"])))
        transitions.sort(key=lambda t: t.record)  # batch order across the groups' calls
        return Reply(thresholds, flags, transitions, next_thresholds.tolist())

    def peek(self, *, model_version: str, floor: float, keys: Sequence[str]) -> list[KeyReading]:
        """Read ``keys`` without changing anything (raises ``redis.RedisError`` on an outage)."""
        by_group: dict[int, list[str]] = {}
        for key in keys:
            by_group.setdefault(self._layout.group(key), []).append(key)
        calls = [(group, b"") for group in by_group.values()]
        docs = {
            key: encoded
            for (group, _), reply in zip(
                calls, self._run("peek", model_version, floor, calls), strict=True
            )
            for key, encoded in zip(group, reply["keys"], strict=True)
        }
        out = []
        for key in keys:
            doc = orjson.loads(docs[key])
            n = int(doc["n"])
            state: AlertState = doc["alert_state"]
            out.append(
                KeyReading(
                    stats=KeyStats(n, float(doc["mean"]), float(doc["var"]), float(doc["q"]))
                    if n
                    else None,
                    threshold=float(doc["threshold"]),
                    warming_up=bool(doc["warming_up"]),
                    alert_state=state,
                    alert_id=alert_fingerprint(key, float(doc["starts_at"]))
                    if state == "firing"
                    else None,
                    ttl_s=int(doc["ttl_s"]) if n and int(doc["ttl_s"]) >= 0 else None,
                )
            )
        return out
