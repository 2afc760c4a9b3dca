"""The chaos suite's oracle: read every topic after a run and check what the guarantees promise.

- every valid input offset has a score event, every malformed one a dead letter (missing: 0);
- at-least-once: duplicates are counted; exactly-once: none among committed events;
- every labelled incident overlaps an alert episode of its key;
- each key's alert state in Redis agrees with the last alert transition on the alerts topic.

Topics are read with ``isolation.level=read_committed`` (librdkafka's default), as a consumer
of an exactly-once deployment must.
"""

from __future__ import annotations

import statistics
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from confluent_kafka import Consumer, TopicPartition
from confluent_kafka.admin import AdminClient

from model.detector import AMADetector
from schemas.decode import decode_vectors
from schemas.events import Alert, DeadLetter, ScoreEvent
from schemas.settings import load_settings
from streamer.state.client import connect
from streamer.state.verdicts import ThresholdState

__all__ = ["Incident", "Verdict", "judge", "table"]


@dataclass(frozen=True, slots=True)
class Incident:
    """A labelled incident: ``key``'s records with ts in [first_ts, last_ts]."""

    key: str
    first_ts: float
    last_ts: float


@dataclass(frozen=True, slots=True)
class Verdict:
    guarantee: str
    records: int
    malformed: int
    scored: int
    missing_scores: int
    duplicate_scores: int
    dead_letters: int
    missing_dead_letters: int
    duplicate_dead_letters: int
    incidents: int
    alerted: int
    redis_mismatches: int

    @property
    def ok(self) -> bool:
        exact = self.guarantee != "exactly-once" or (
            self.duplicate_scores == 0 and self.duplicate_dead_letters == 0
        )
        return (self.missing_scores == 0 and self.missing_dead_letters == 0 and exact
                and self.alerted == self.incidents and self.redis_mismatches == 0)  # fmt: skip


def judge(
    bootstrap: str, redis_url: str, bundle: Path, guarantee: str, incidents: Sequence[Incident],
    dim: int,
) -> Verdict:  # fmt: skip
    """Read the run's topics and Redis; the :class:`Verdict` (module docstring)."""
    inputs = _read_all(bootstrap, "in")
    batch = decode_vectors([m[2] for m in inputs], dim=dim, max_bytes=1_000_000)
    bad = {(inputs[r.index][0], inputs[r.index][1]) for r in batch.rejects}
    good = {(p, o) for p, o, _ in inputs} - bad
    scores: Counter[tuple[int, int]] = Counter()
    for *_, value in _read_all(bootstrap, "scores"):
        source = ScoreEvent.model_validate_json(value).source
        scores[(source.partition, source.offset)] += 1
    letters: Counter[tuple[int, int]] = Counter()
    for *_, value in _read_all(bootstrap, "dlq"):
        source = DeadLetter.model_validate_json(value).source
        letters[(source.partition, source.offset)] += 1
    alerts = [Alert.model_validate_json(value) for *_, value in _read_all(bootstrap, "alerts")]
    return Verdict(
        guarantee=guarantee,
        records=len(inputs),
        malformed=len(bad),
        scored=sum(1 for where in good if scores[where]),
        missing_scores=sum(1 for where in good if not scores[where]),
        duplicate_scores=sum(n - 1 for where, n in scores.items() if n > 1),
        dead_letters=sum(1 for where in bad if letters[where]),
        missing_dead_letters=sum(1 for where in bad if not letters[where]),
        duplicate_dead_letters=sum(n - 1 for n in letters.values() if n > 1),
        incidents=len(incidents),
        alerted=sum(1 for incident in incidents if _alerted(incident, alerts)),
        redis_mismatches=_redis_mismatches(redis_url, bundle, alerts),
    )


def _read_all(bootstrap: str, topic: str) -> list[tuple[int, int, bytes]]:
    """(partition, offset, value) of every committed message, in partition order."""
    meta = AdminClient({"bootstrap.servers": bootstrap}).list_topics(topic, timeout=30)
    partitions = sorted(meta.topics[topic].partitions)
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": "chaos-oracle",
                         "enable.auto.commit": False})  # fmt: skip
    try:
        highs = {p: consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=30)[1]
                 for p in partitions}  # fmt: skip
        consumer.assign([TopicPartition(topic, p, 0) for p in partitions])
        out: list[tuple[int, int, bytes]] = []
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            for m in consumer.consume(5000, timeout=0.5):
                if m.error() is None:
                    out.append((m.partition() or 0, m.offset() or 0, m.value() or b""))
            positions = consumer.position([TopicPartition(topic, p) for p in partitions])
            if all(tp.offset >= highs[tp.partition] for tp in positions if highs[tp.partition]):
                return out
        raise TimeoutError(f"{topic} was not read to its end within 300 s")
    finally:
        consumer.close()


def _alerted(incident: Incident, alerts: Sequence[Alert]) -> bool:
    """True if an alert episode of the incident's key overlaps the incident's records."""
    ends: dict[str, float] = {a.alert_id: a.ends_at for a in alerts if a.ends_at is not None}
    return any(
        a.key == incident.key and a.status == "firing" and a.starts_at <= incident.last_ts
        and ends.get(a.alert_id, float("inf")) >= incident.first_ts
        for a in alerts
    )  # fmt: skip


def _redis_mismatches(redis_url: str, bundle: Path, alerts: Sequence[Alert]) -> int:
    """Keys whose alert state in Redis disagrees with their last transition on the topic (the
    alerts of one key share a partition, so topic order is the key's order)."""
    detector = AMADetector.load(bundle)
    settings = load_settings(redis={"url": redis_url})
    state = ThresholdState.from_settings(settings, client=connect(redis_url))
    last: dict[str, Alert] = {}
    for alert in alerts:
        last[alert.key] = alert
    wrong = 0
    for key, alert in last.items():
        reading = state.snapshot(key, model_version=alert.model_version, floor=detector.threshold)
        firing = reading.alert_state == "firing"
        if firing != (alert.status == "firing") or (firing and reading.alert_id != alert.alert_id):
            wrong += 1
    return wrong


def table(results: Sequence[Any]) -> str:
    """The chaos table: one row per run, then recovery times per fault kind."""
    lines = [
        "| guarantee | faults | records | malformed | scored | missing | duplicate scores | "
        "dead letters (missing) | incidents alerted | Redis alert-state mismatches | "
        "workers that ended on their own | ok |",
        "|---|---|---:|---:|---:|---:|---:|---|---|---:|---|---|",
    ]
    for r in results:
        v = r.verdict
        kinds = Counter(f.kind for f in r.faults)
        faults = ", ".join(f"{kinds[k]} {k}" for k in sorted(kinds))
        if v is None:
            lines.append(f"| {r.config.guarantee} | {faults} | (no verdict) |")
            continue
        lines.append(
            f"| {v.guarantee} | {faults} | {v.records:,} | {v.malformed:,} | {v.scored:,} | "
            f"{v.missing_scores} | {v.duplicate_scores:,} | {v.dead_letters:,} "
            f"({v.missing_dead_letters}) | {v.alerted} of {v.incidents} | {v.redis_mismatches} "
            f"| {_exits(r.worker_exits)} | {'yes' if v.ok else '**no**'} |"
        )
    lines += ["", "| guarantee | fault | injected | time to recover, median / max (s) |",
              "|---|---|---:|---|"]  # fmt: skip
    for r in results:
        by_kind: dict[str, list[float | None]] = {}
        for f in r.faults:
            by_kind.setdefault(f.kind, []).append(f.recovered_s)
        for kind, times in sorted(by_kind.items()):
            done = [t for t in times if t is not None]
            spread = f"{statistics.median(done):.1f} / {max(done):.1f}" if done else "-"
            stuck = f" ({len(times) - len(done)} did not recover in 300 s)" if None in times else ""
            lines.append(f"| {r.config.guarantee} | {kind} | {len(times)} | {spread}{stuck} |")
    return "\n".join(lines)


def _exits(statuses: Sequence[int]) -> str:
    """How many workers ended on their own, by exit status (75: librdkafka stuck, restarted)."""
    if not statuses:
        return "0"
    counts = Counter(statuses)
    return ", ".join(f"{n} (status {code})" for code, n in sorted(counts.items()))
