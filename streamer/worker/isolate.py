"""When processing a batch raises: find the records that cause it, dead-letter those with the
exception, and process the rest, so one poison record can never crash-loop the group.

A failing batch is split in halves and each half is processed on its own, recursively, until
every failing record stands alone; each becomes a ``processing_error`` dead letter carrying the
exception's type and message. One poison record among n costs about 2·log2(n) extra calls of
the core. Replaying a piece re-applies its records to Redis, which the per-offset bookkeeping
there makes harmless. Errors that are not about the records
(:class:`~schemas.errors.ServiceError`: Redis refusing us, a device out of memory for even one
record) are raised at once: splitting cannot help, the worker waits or stops instead.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Callable
from typing import Literal

import numpy as np

from schemas.decode import Reject
from schemas.errors import ServiceError
from streamer.worker.batch import RawBatch, dead_letters
from streamer.worker.pipeline import BatchResult

__all__ = ["OnError", "process_isolating"]

log = logging.getLogger(__name__)

OnError = Literal["dead-letter", "stop"]

#: Characters of an exception message kept in a dead letter: enough to act on, bounded so a
#: huge message (a repr of an array, say) cannot bloat the DLQ.
MAX_DETAIL = 2000


def process_isolating(
    raw: RawBatch,
    process: Callable[[RawBatch], BatchResult],
    *,
    dlq_topic: str,
    model_version: str,
    on_error: OnError = "dead-letter",
) -> BatchResult:
    """``process(raw)``, or, if it raises, the merged results of its halves with the records
    that raise on their own as dead letters. ``on_error="stop"`` raises instead."""
    try:
        return process(raw)
    except ServiceError:
        raise
    except Exception as exc:
        if on_error == "stop":
            raise
        log.warning(
            "a batch raised; isolating the records that cause it",
            extra={"records": len(raw), "error": f"{type(exc).__name__}: {exc}"[:200]},
        )
        return _split(raw, exc, process, dlq_topic, model_version)


def _split(
    raw: RawBatch,
    exc: Exception,
    process: Callable[[RawBatch], BatchResult],
    dlq_topic: str,
    model_version: str,
) -> BatchResult:
    if len(raw) == 1:
        return _failed(raw, exc, dlq_topic, model_version)
    middle = len(raw) // 2
    halves = (raw.slice(0, middle), raw.slice(middle, len(raw)))
    return BatchResult.merge([_retry(half, process, dlq_topic, model_version) for half in halves])


def _retry(
    raw: RawBatch, process: Callable[[RawBatch], BatchResult], dlq_topic: str, model_version: str
) -> BatchResult:
    try:
        return process(raw)
    except ServiceError:
        raise
    except Exception as exc:
        return _split(raw, exc, process, dlq_topic, model_version)


def _failed(raw: RawBatch, exc: Exception, dlq_topic: str, model_version: str) -> BatchResult:
    """The result of one record that raised on its own: its dead letter."""
    detail = f"{type(exc).__name__}: {exc}"[:MAX_DETAIL]
    log.error(
        "record dead-lettered: processing it raised",
        extra={"partition": int(raw.partitions[0]), "offset": int(raw.offsets[0]), "error": detail},
    )
    return BatchResult(
        messages=dead_letters(raw, [Reject(0, "processing_error", detail)], dlq_topic, time.time()),
        model_version=model_version,
        n_in=1,
        n_valid=0,
        rejects=Counter({"processing_error": 1}),
        record_ts=np.empty(0, np.float64),
        alerts=Counter(),
    )
