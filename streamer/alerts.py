"""Alert episodes: the per-key state machine's configuration and its transitions as `Alert`s.

The state machine itself runs inside ``streamer/verdicts.lua``, in the same atomic round trip
as the threshold statistics, so its state survives a worker restart and a partition moving to
another worker, and two workers can never both fire one episode. Per key::

    ok/pending --(>= n_anomalous of the last window_m records anomalous)--> firing
    firing     --(quiet_records normal records in a row)-------------------> ok   (resolved)

"pending" is "ok" with at least one anomaly in the window. Each episode yields exactly one
``firing`` and one ``resolved`` :class:`~schemas.events.Alert` with the same ``alert_id``
(:func:`~schemas.events.alert_fingerprint` of the key and the episode's first anomalous
record's ts). This module turns the script's encoded transitions into those events.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

from schemas.errors import ConfigError
from schemas.events import Alert, alert_fingerprint

if TYPE_CHECKING:
    from schemas.settings import AlertSettings

__all__ = ["AlertPolicy", "AlertState", "decode_transition", "severity"]

AlertState = Literal["ok", "pending", "firing"]

# Field separator of an encoded transition: ASCII unit separator, never in a number or status.
SEP = "\x1f"


@dataclass(frozen=True, slots=True)
class AlertPolicy:
    """When an episode fires and resolves, and how severe it is.

    ``critical_ratio``: an episode is ``critical`` when its peak score is at least this many
    times the threshold in force for that peak record, else ``warning``. A ratio (not a margin)
    keeps the rule meaningful across keys and models whose scores differ in scale.
    """

    n_anomalous: int = 3
    window_m: int = 10
    quiet_records: int = 20
    critical_ratio: float = 2.0

    def __post_init__(self) -> None:
        if not 1 <= self.n_anomalous <= self.window_m:
            raise ConfigError("alerts need 1 <= n_anomalous <= window_m")
        if self.quiet_records < 1:
            raise ConfigError("alerts.quiet_records must be >= 1")
        if not self.critical_ratio >= 1.0:
            raise ConfigError("alerts critical_ratio must be >= 1")

    @classmethod
    def from_settings(cls, settings: AlertSettings, *, critical_ratio: float = 2.0) -> AlertPolicy:
        """The policy that ``Settings.alerts`` describes."""
        return cls(
            n_anomalous=settings.n_anomalous,
            window_m=settings.window_m,
            quiet_records=settings.quiet_records,
            critical_ratio=critical_ratio,
        )

    def script_args(self) -> list[str]:
        """ARGV[11..14] of verdicts.lua."""
        return [
            str(self.n_anomalous),
            str(self.window_m),
            str(self.quiet_records),
            repr(float(self.critical_ratio)),
        ]


def severity(peak_score: float, threshold: float, critical_ratio: float) -> str:
    """``critical`` when ``peak_score >= critical_ratio * threshold``; mirrors verdicts.lua."""
    return "critical" if peak_score >= critical_ratio * threshold else "warning"


def decode_transition(key: str, encoded: bytes | str) -> Alert:
    """Build the :class:`Alert` for one transition encoded by verdicts.lua.

    The encoding is ``status, starts_at, ends_at, peak, threshold, n_anomalous, severity,
    model_version`` joined by :data:`SEP`; timestamps are the records' own ts strings as the
    worker sent them (Python ``repr``), so ``alert_id`` is the same on every worker and replay.
    """
    text = encoded.decode() if isinstance(encoded, bytes) else encoded
    status, starts, ends, peak, threshold, n_anomalous, level, model_version = text.split(SEP)
    starts_at = float(starts)
    return Alert(
        alert_id=alert_fingerprint(key, starts_at),
        key=key,
        status="firing" if status == "firing" else "resolved",
        starts_at=starts_at,
        ends_at=float(ends) if ends else None,
        peak_score=float(peak),
        threshold=float(threshold),
        n_anomalous=int(n_anomalous),
        model_version=model_version,
        severity="critical" if level == "critical" else "warning",
    )
