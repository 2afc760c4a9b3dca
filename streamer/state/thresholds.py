"""Threshold policies: how a key's rolling score statistics become its threshold.

The statistics live in Redis and the formulas run in ``verdicts.lua`` (one round trip per
micro-batch, see :mod:`streamer.state.verdicts`); this module holds the policy's configuration
and the constants derived from it that the script is given. docs/thresholds.md explains the
estimators and why they were chosen.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from statistics import NormalDist
from typing import TYPE_CHECKING, Literal

from schemas.errors import ConfigError

if TYPE_CHECKING:
    from schemas.settings import ThresholdSettings

__all__ = ["KeyStats", "Policy", "ThresholdPolicy"]

Policy = Literal["quantile", "sigma", "fixed"]


@dataclass(frozen=True, slots=True)
class KeyStats:
    """One key's statistics as stored in Redis (for one model version).

    ``n`` counts the normal (non-anomalous) records learned; ``mean``/``var`` are exponentially
    weighted over them; ``quantile`` is the tracked ``ThresholdPolicy.quantile`` of the key's
    scores.
    """

    n: int = 0
    mean: float = 0.0
    var: float = 0.0
    quantile: float = 0.0

    @property
    def std(self) -> float:
        """Exponentially weighted standard deviation."""
        return math.sqrt(self.var)


@dataclass(frozen=True, slots=True)
class ThresholdPolicy:
    """Which threshold a key gets, and how fast its statistics forget.

    - ``quantile``: the key's tracked ``quantile`` of recent normal scores.
    - ``sigma``: ``mean + k_sigma * std`` of recent normal scores.
    - ``fixed``: the value ``fixed``.

    Every policy is floored by the model bundle's calibrated threshold (passed per batch), and
    the statistical ones use that floor alone while a key has fewer than ``warmup`` normal
    records. ``alpha`` is the weight of each new score: the statistics remember roughly the
    last ``1/alpha`` normal records, and a level shift is followed within a few times that.
    """

    policy: Policy = "quantile"
    quantile: float = 0.99
    k_sigma: float = 4.0
    fixed: float | None = None
    warmup: int = 200
    alpha: float = 0.01

    def __post_init__(self) -> None:
        if self.policy not in ("quantile", "sigma", "fixed"):
            raise ConfigError(f"unknown threshold policy {self.policy!r}")
        if not 0.0 < self.quantile < 1.0:
            raise ConfigError("threshold quantile must be in (0, 1)")
        if not 0.0 < self.alpha <= 1.0:
            raise ConfigError("threshold alpha must be in (0, 1]")
        if not (self.k_sigma > 0.0 and math.isfinite(self.k_sigma)):
            raise ConfigError("threshold k_sigma must be a positive number")
        if self.warmup < 0:
            raise ConfigError("threshold warmup must be >= 0")
        if self.policy == "fixed" and (self.fixed is None or not math.isfinite(self.fixed)):
            raise ConfigError("the fixed threshold policy needs a finite `fixed` value")

    @classmethod
    def from_settings(cls, settings: ThresholdSettings) -> ThresholdPolicy:
        """The policy that ``Settings.thresholds`` describes."""
        return cls(
            policy=settings.policy,
            quantile=settings.quantile,
            k_sigma=settings.k_sigma,
            fixed=settings.fixed,
            warmup=settings.warmup,
            alpha=settings.ewm_alpha,
        )

    @property
    def z(self) -> float:
        """Standard-normal quantile of ``quantile``: seeds the tracker at the end of warm-up."""
        return NormalDist().inv_cdf(self.quantile)

    @property
    def quantile_gain(self) -> float:
        """Step of the quantile tracker, in units of the key's EW standard deviation.

        A Robbins-Monro quantile step is ``alpha / density(q)``; taking the density at the
        quantile from a normal fit (``pdf(z) / std``) gives the tracker the same memory,
        ``1/alpha`` records, as the mean and variance, and makes it scale-free.
        """
        return self.alpha / NormalDist().pdf(self.z)
