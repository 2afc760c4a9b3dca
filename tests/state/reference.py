"""A plain-Python model of verdicts.lua's threshold formula, for checking the real script.

The product has no Python copy of the script's logic; this one exists only to state the
documented algorithm independently, and every test that uses it compares it with the script
running on a real Redis.
"""

from __future__ import annotations

import math

from streamer.state.thresholds import KeyStats, ThresholdPolicy


def threshold(policy: ThresholdPolicy, stats: KeyStats, floor: float) -> float:
    """The threshold a key with ``stats`` gets (docs/thresholds.md)."""
    if policy.policy == "fixed":
        assert policy.fixed is not None
        value = policy.fixed
    elif stats.n < policy.warmup:
        return floor
    elif policy.policy == "quantile":
        value = stats.quantile
    else:
        value = stats.mean + policy.k_sigma * math.sqrt(stats.var)
    return floor if math.isnan(value) or value < floor else value
