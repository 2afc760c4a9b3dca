"""The demo's live view: read the output topics, keep counts, draw them (rich) until done."""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

import orjson
from confluent_kafka import Consumer, TopicPartition
from rich.console import Console
from rich.live import Live
from rich.table import Table

from schemas.errors import AmaStreamError
from schemas.events import Alert

__all__ = ["DemoError", "Progress", "watch"]


class DemoError(AmaStreamError):
    """The demo cannot go on (e.g. the workers stopped scoring)."""


# No new score event for this long while records are still missing means the workers are gone.
STALL_S = 90.0


@dataclass
class Progress:
    """What the output topics said so far."""

    rows: int
    started: float
    sent: int = 0
    scored: int = 0
    anomalous: int = 0
    dead_letters: int = 0
    alerts: list[Alert] = field(default_factory=list)
    firing: dict[str, Alert] = field(default_factory=dict)
    _seen: set[tuple[int, int]] = field(default_factory=set)
    _window: deque[tuple[float, int]] = field(default_factory=deque)

    def sent_to(self, row: int) -> None:
        self.sent = row

    def score(self, value: bytes) -> None:
        event = orjson.loads(value)
        source = event["source"]
        position = (source["partition"], source["offset"])
        if position not in self._seen:  # at-least-once: count each input offset once
            self._seen.add(position)
            self.scored += 1
            self.anomalous += bool(event["is_anomaly"])

    def dead_letter(self, _value: bytes) -> None:
        self.dead_letters += 1

    def alert(self, value: bytes) -> None:
        alert = Alert.model_validate_json(value)
        self.alerts.append(alert)
        if alert.status == "firing":
            self.firing[alert.key] = alert
        else:
            self.firing.pop(alert.key, None)

    def rate(self) -> float:
        """Records scored per second over the last few seconds."""
        now = time.monotonic()
        self._window.append((now, self.scored))
        while len(self._window) > 2 and now - self._window[0][0] > 3.0:
            self._window.popleft()
        (t0, n0), (t1, n1) = self._window[0], self._window[-1]
        return (n1 - n0) / (t1 - t0) if t1 > t0 else 0.0

    def table(self) -> Table:
        table = Table(title="ama-stream demo", show_header=False)
        fired = sum(a.status == "firing" for a in self.alerts)
        resolved = sum(a.status == "resolved" for a in self.alerts)
        table.add_row("records sent / scored", f"{self.sent:,} / {self.scored:,} of {self.rows:,}")
        table.add_row("records/s (scored)", f"{self.rate():,.0f}")
        table.add_row("flagged anomalous", f"{self.anomalous:,}")
        table.add_row("dead letters", f"{self.dead_letters:,}")
        table.add_row("alerts fired / resolved", f"{fired} / {resolved}")
        now = ", ".join(f"{k} (peak {a.peak_score:.1f})" for k, a in sorted(self.firing.items()))
        table.add_row("firing now", now or "-")
        return table


def watch(
    bootstrap: str, topics: dict[str, str], progress: Progress, *, done: Callable[[], bool]
) -> None:
    """Follow scores, alerts and dead letters until every row is scored and ``done()``."""
    consumer = Consumer(
        {"bootstrap.servers": bootstrap, "group.id": "demo-view", "enable.auto.commit": False}
    )
    consumer.assign([TopicPartition(topics[k], 0, 0) for k in ("scores", "alerts", "dlq")])
    handlers = {
        topics["scores"]: progress.score,
        topics["alerts"]: progress.alert,
        topics["dlq"]: progress.dead_letter,
    }
    console = Console()
    last_change, last_scored = time.monotonic(), -1
    try:
        with Live(progress.table(), console=console, refresh_per_second=4, transient=False) as live:
            while not (progress.scored >= progress.rows and done()):
                for message in consumer.consume(2000, timeout=0.25):
                    if message.error() is None:
                        handlers[message.topic() or ""](message.value() or b"")
                live.update(progress.table())
                if progress.scored != last_scored:
                    last_change, last_scored = time.monotonic(), progress.scored
                elif time.monotonic() - last_change > STALL_S:
                    raise DemoError(f"no record scored for {STALL_S:.0f} s: see the worker logs")
            # Alerts for the last records are produced with them; one more read collects them.
            for message in consumer.consume(2000, timeout=1.0):
                if message.error() is None:
                    handlers[message.topic() or ""](message.value() or b"")
            live.update(progress.table())
        console.print()
    finally:
        consumer.close()
