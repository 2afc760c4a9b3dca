"""Alert episodes: the per-key state machine's configuration and its transitions as `Alert`s.

The state machine itself runs inside ``streamer/state/verdicts.lua``, in the same atomic round trip
as the threshold statistics, so its state survives a worker restart and a partition moving to
another worker, and two workers can never both fire one episode. Per key::

    ok/pending --(>= n_anomalous of the last window_m records anomalous,
                 or one record >= fire_ratio x its threshold)-----------------> firing
    firing     --(quiet_records normal records in a row)-------------------> ok   (resolved)

"pending" is "ok" with at least one anomaly in the window. Each episode yields exactly one
``firing`` and one ``resolved`` :class:`~schemas.events.Alert` with the same ``alert_id``
(:func:`~schemas.events.alert_fingerprint` of the key and the episode's first anomalous
record's ts). This module holds the policy's configuration; streamer/state/script.py turns the
script's transitions into those events.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

from schemas.errors import ConfigError

if TYPE_CHECKING:
    from schemas.settings import AlertSettings

__all__ = ["AlertPolicy", "AlertState"]

AlertState = Literal["ok", "pending", "firing"]


@dataclass(frozen=True, slots=True)
class AlertPolicy:
    """When an episode fires and resolves, and how severe it is.

    ``fire_ratio`` (0 = off): one anomalous record scoring at least this many times its
    (positive) threshold fires at once, without waiting for ``n_anomalous`` of ``window_m``:
    incidents that last a few records are paged before they are over, while the persistence
    rule keeps single marginal exceedances quiet (docs/stream-eval.md measures both).
    ``critical_ratio``: an episode is ``critical`` when its peak score is at least this many
    times the threshold in force for that peak record, else ``warning``. A ratio (not a margin)
    keeps the rule meaningful across keys and models whose scores differ in scale.
    """

    n_anomalous: int = 5
    window_m: int = 10
    quiet_records: int = 20
    fire_ratio: float = 3.0
    critical_ratio: float = 2.0

    def __post_init__(self) -> None:
        if not 1 <= self.n_anomalous <= self.window_m:
            raise ConfigError("alerts need 1 <= n_anomalous <= window_m")
        if self.quiet_records < 1:
            raise ConfigError("alerts.quiet_records must be >= 1")
        if not (self.fire_ratio == 0.0 or self.fire_ratio >= 1.0):
            raise ConfigError("alerts.fire_ratio must be 0 (off) or >= 1")
        if not self.critical_ratio >= 1.0:
            raise ConfigError("alerts critical_ratio must be >= 1")

    @classmethod
    def from_settings(cls, settings: AlertSettings, *, critical_ratio: float = 2.0) -> AlertPolicy:
        """The policy that ``Settings.alerts`` describes."""
        return cls(
            n_anomalous=settings.n_anomalous,
            window_m=settings.window_m,
            quiet_records=settings.quiet_records,
            fire_ratio=settings.fire_ratio,
            critical_ratio=critical_ratio,
        )
