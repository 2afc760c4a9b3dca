"""The per-worker bound on distinct record keys: what one hostile or broken producer can make
a worker keep in Redis.

Every distinct record key costs Redis a statistics hash and an alert hash (about 0.5 KB,
docs/thresholds.md) for ``thresholds.ttl_s`` after its last record. A producer that invents a
new key per record would grow Redis without bound within that time; the budget admits at most
``limits.max_keys`` keys seen within the TTL, and records of any further key become dead letters
(``key_limit``) until an admitted key has been idle for the TTL. Keys already admitted keep
being scored whatever the flood does, and the budget itself holds at most ``max_keys`` strings.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from schemas.settings import Settings

__all__ = ["KeyBudget"]


class KeyBudget:
    """The keys this worker has admitted, least recently seen first."""

    def __init__(
        self,
        max_keys: int,
        ttl_s: float,
        on_size: Callable[[int], None] = lambda _n: None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.max_keys = max_keys
        self._ttl_s = ttl_s
        self._on_size = on_size
        self._clock = clock
        self._seen: OrderedDict[str, float] = OrderedDict()

    @classmethod
    def from_settings(
        cls, settings: Settings, on_size: Callable[[int], None] = lambda _n: None
    ) -> KeyBudget:
        """``limits.max_keys`` within ``thresholds.ttl_s``, the TTL of the keys' Redis state."""
        return cls(settings.limits.max_keys, settings.thresholds.ttl_s, on_size)

    def __len__(self) -> int:
        return len(self._seen)

    def admit(self, keys: Sequence[str]) -> np.ndarray | None:
        """Which records may be judged: None when all may (the usual case, no array built),
        else a bool mask aligned with ``keys``."""
        now = self._clock()
        seen = self._seen
        refused: set[str] = set()
        for key in dict.fromkeys(keys):
            if key in seen:
                seen.move_to_end(key)
            else:
                self._expire(now)
                if len(seen) >= self.max_keys:
                    refused.add(key)
                    continue
            seen[key] = now
        self._on_size(len(seen))
        if not refused:
            return None
        return np.fromiter((key not in refused for key in keys), bool, count=len(keys))

    def _expire(self, now: float) -> None:
        """Forget keys idle longer than the TTL: their Redis state has expired too."""
        seen = self._seen
        while seen:
            key, last = next(iter(seen.items()))
            if now - last <= self._ttl_s:
                return
            del seen[key]
