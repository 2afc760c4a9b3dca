"""Event-time parsing shared by the pydantic models and the fast batch decoder.

Producers send event time either as epoch seconds (a JSON number) or as an ISO-8601 string.
Everything downstream (thresholds, alert episodes, Redis TTLs) works in float epoch seconds, so
the normalisation happens once, here, and the model and the decoder cannot drift apart.
"""

from __future__ import annotations

import math
from datetime import UTC, datetime
from typing import Any

__all__ = ["TimestampError", "parse_ts"]


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
