"""Structured logs: one JSON object per line, with the ``extra`` fields of each call.

Log shippers (Loki, Elasticsearch, CloudWatch) parse JSON lines without a grok pattern, and
fields such as ``partition`` or ``model_version`` stay queryable instead of buried in text.
librdkafka's own log lines come through Python logging too (:func:`kafka_logger`), so they are
JSON as well, and at most one line per kind per :data:`KAFKA_LOG_EVERY_S`: while a broker is
down it reports every reconnect attempt, several a second.
"""

from __future__ import annotations

import logging
import sys
import time
from typing import Any

import orjson

__all__ = ["JsonFormatter", "configure_logging", "kafka_logger"]

# Attributes every LogRecord has; anything else on a record came from ``extra=``.
_STANDARD = frozenset(vars(logging.makeLogRecord({}))) | {"message", "asctime", "taskName"}


class JsonFormatter(logging.Formatter):
    """Formats a record as ``{"ts", "level", "logger", "msg", ...extra}``."""

    def format(self, record: logging.LogRecord) -> str:
        doc: dict[str, Any] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        doc.update((k, v) for k, v in vars(record).items() if k not in _STANDARD)
        if record.exc_info:
            doc["exc"] = self.formatException(record.exc_info)
        return orjson.dumps(doc, default=str).decode()


def configure_logging(level: str = "INFO") -> None:
    """Send every log record to stderr as JSON lines (stdout stays free for command output)."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)


#: librdkafka repeats a line on every reconnect attempt; one per (level, facility, client) per
#: this many seconds says the same, with the count of what was left out.
KAFKA_LOG_EVERY_S = 10.0


class _Throttle(logging.Filter):
    """Lets one librdkafka line per (level, facility, client) through per period; the next
    one that passes carries ``suppressed``: how many were left out meanwhile."""

    def __init__(self, every_s: float) -> None:
        super().__init__()
        self._every_s = every_s
        self._last: dict[tuple[int, str, str], float] = {}
        self._dropped: dict[tuple[int, str, str], int] = {}

    def filter(self, record: logging.LogRecord) -> bool:
        # confluent-kafka logs librdkafka lines as ("%s [%s] %s", facility, client, text).
        args = record.args if isinstance(record.args, tuple) and len(record.args) == 3 else ()
        key = (record.levelno, str(args[0]) if args else "", str(args[1]) if args else "")
        now = time.monotonic()
        if now - self._last.get(key, -self._every_s) < self._every_s:
            self._dropped[key] = self._dropped.get(key, 0) + 1
            return False
        self._last[key] = now
        if self._dropped.get(key):
            record.suppressed = self._dropped.pop(key)
        return True


_kafka = logging.getLogger("librdkafka")
_kafka.addFilter(_Throttle(KAFKA_LOG_EVERY_S))


def kafka_logger() -> logging.Logger:
    """The logger to pass as a Kafka client's ``logger`` option: librdkafka's lines become
    JSON log records, throttled, instead of raw text on stderr."""
    return _kafka
