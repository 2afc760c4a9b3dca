"""Event-time parsing shared by the pydantic models and the fast batch decoder.

Producers send event time either as epoch seconds (a JSON number) or as an ISO-8601 string.
Everything downstream (thresholds, alert episodes, Redis TTLs) works in float epoch seconds, so
the normalisation happens once, here, and the model and the decoder cannot drift apart.
"""

from __future__ import annotations

import math
from datetime import UTC, datetime
from typing import Any

__all__ = ["TS_MAX", "TS_MIN", "TimestampError", "in_range", "parse_ts"]

#: The accepted event-time range, [1970-01-01, 2100-01-01) UTC. A fixed range (not "now plus
#: a margin") keeps decoding deterministic, so a replay judges a record as the first pass did;
#: it still refuses the values that are certainly wrong (negative epochs, milliseconds sent as
#: seconds, 1e300, the year 9999), which would otherwise become alert start times.
TS_MIN = 0.0
TS_MAX = 4_102_444_800.0


class TimestampError(ValueError):
    """A ``ts`` value is neither a finite number nor an ISO-8601 string.

    A ``ValueError`` (not an ``AmaStreamError``) on purpose: pydantic turns it into a validation
    error, and the decoder turns it into a per-record reject; it never escapes to a caller.
    """


def parse_ts(value: Any) -> float:
    """Normalise an event time to float epoch seconds.

    Accepts an ``int`` or ``float`` (not ``bool``: JSON ``true`` is not a time) that is finite,
    or an ISO-8601 string as understood by :meth:`datetime.fromisoformat`. A string without a
    UTC offset is read as UTC, because workers may run in any local time zone and must agree.
    """
    if isinstance(value, int | float) and not isinstance(value, bool):
        ts = float(value)
        if not math.isfinite(ts):
            raise TimestampError("ts must be a finite number")
        return ts
    if isinstance(value, str):
        try:
            parsed = datetime.fromisoformat(value)
        except ValueError:
            raise TimestampError(f"ts string is not ISO-8601: {value[:40]!r}") from None
        if parsed.tzinfo is None:
            parsed = parsed.replace(tzinfo=UTC)
        return parsed.timestamp()
    raise TimestampError(f"ts must be a number or an ISO-8601 string, not {type(value).__name__}")


def in_range(ts: float) -> float:
    """``ts`` if it lies in [:data:`TS_MIN`, :data:`TS_MAX`), else :class:`TimestampError`."""
    if not TS_MIN <= ts < TS_MAX:
        raise TimestampError("ts is outside 1970-01-01 .. 2100-01-01 (epoch seconds)")
    return ts
