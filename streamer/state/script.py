"""The Python side of ``verdicts.lua``: the only code that knows its keys, arguments and reply.

Arguments and reply are named on both sides: the configuration goes over as one JSON object
whose field names the script reads (``cfg.floor``, ``cfg.window_m``, ...), and the reply is a
list of name/value pairs (``thresholds``, ``anomalous``, ``transitions``, ``next_thresholds``;
``keys`` when peeking) that :meth:`VerdictScript.apply` turns into a :class:`Reply`. Alert
transitions come back as JSON objects named like the :class:`~schemas.events.Alert` fields.
Only the records travel packed (5 big-endian doubles each): thousands of separate arguments
would cost more to build and parse than the script costs Redis.

Redis keys, per model version and record key (docs/thresholds.md)::

    {prefix}:{model_version}:stats:{key}   hash  n, mean, var, q           (TTL ttl_s)
    {prefix}:alert:{key}                   hash  a (alert state), o:{partition} (TTL ttl_s)
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import redis

from schemas.events import Alert, alert_fingerprint
from streamer.state.alerts import AlertPolicy, AlertState
from streamer.state.thresholds import KeyStats, ThresholdPolicy

__all__ = ["KeyReading", "Reply", "Transition", "VerdictScript", "alert_key", "stats_key"]


def stats_key(prefix: str, model_version: str, key: str) -> str:
    """Redis hash holding ``key``'s statistics under ``model_version``."""
    return f"{prefix}:{model_version}:stats:{key}"


def alert_key(prefix: str, key: str) -> str:
    """Redis hash holding ``key``'s alert state and last applied offsets."""
    return f"{prefix}:alert:{key}"


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
    """``verdicts.lua`` registered on ``client``, with the configuration it runs under."""

    def __init__(
        self,
        client: redis.Redis,
        *,
        prefix: str,
        thresholds: ThresholdPolicy,
        alerts: AlertPolicy,
        ttl_s: int,
        reemit_replayed: bool,
    ) -> None:
        self._script = client.register_script(_load_script())
        self._prefix = prefix
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
            "reemit_replayed": reemit_replayed,
        }
        if thresholds.fixed is not None:
            self._config["fixed"] = thresholds.fixed

    def _keys(self, model_version: str, keys: Sequence[str]) -> list[str]:
        return [
            name
            for key in keys
            for name in (stats_key(self._prefix, model_version, key), alert_key(self._prefix, key))
        ]

    def _run(self, mode: str, model_version: str, floor: float, keys: Sequence[str],
             records: bytes) -> dict[str, Any]:  # fmt: skip
        config = {**self._config, "mode": mode, "model_version": model_version, "floor": floor}
        reply = self._script(
            keys=self._keys(model_version, keys), args=[orjson.dumps(config), records]
        )
        return {name.decode(): value for name, value in zip(reply[::2], reply[1::2], strict=True)}

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
        # Lua tables are 1-based. Doubles carry every score and ts exactly, and key indices,
        # partitions and offsets exactly below 2^53; one C-level copy instead of thousands of
        # argument strings.
        records = np.column_stack(
            (key_index + 1, scores, ts, partitions, offsets)
        ).astype(">f8").tobytes()  # fmt: skip
        reply = self._run("apply", model_version, floor, distinct, records)
        flags = reply["anomalous"]
        flags = flags.encode() if isinstance(flags, str) else flags
        transitions = []
        for encoded in reply["transitions"]:
            doc = orjson.loads(encoded)
            record = int(doc["record"]) - 1
            key = distinct[int(key_index[record])]
            transitions.append(Transition(record, _alert(key, doc["alert"]), bool(doc["replayed"])))
        return Reply(
            thresholds=np.frombuffer(reply["thresholds"], ">f8").astype(np.float64),
            is_anomaly=np.frombuffer(flags, np.uint8) == ord("1"),
            transitions=transitions,
            next_thresholds=np.frombuffer(reply["next_thresholds"], ">f8").tolist(),
        )

    def peek(self, *, model_version: str, floor: float, keys: Sequence[str]) -> list[KeyReading]:
        """Read ``keys`` without changing anything (raises ``redis.RedisError`` on an outage)."""
        reply = self._run("peek", model_version, floor, keys, b"")
        out = []
        for key, encoded in zip(keys, reply["keys"], strict=True):
            doc = orjson.loads(encoded)
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
