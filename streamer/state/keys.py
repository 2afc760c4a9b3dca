"""Every Redis key name ama-stream writes, and how they share hash slots on a Redis Cluster.

On one Redis server the names are plain (``{prefix}:alert:{key}``). On a Redis Cluster a script
may only touch keys of one hash slot (docs/thresholds.md, "Redis Cluster"), so the names carry a
hash tag, the part in braces that alone decides the slot:

- the per-key state of record key ``k`` lives under the tag ``{prefix:g}``, where
  ``g = crc32(k) % slot_groups``: one script call per group present in a batch touches one
  slot, and ``slot_groups`` tags spread the state over the cluster's masters;
- the registry's keys (pointer, history, retrain lock) share the tag ``{prefix}``, because the
  publish step changes the pointer and the history atomically.

A key's group depends only on the key, never on the partition a record came from, so a key
read from several partitions (or from a topic whose partition count grew) keeps one state.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass

__all__ = ["KeyLayout"]


@dataclass(frozen=True, slots=True)
class KeyLayout:
    """The names under one key prefix; ``cluster`` adds the hash tags described above."""

    prefix: str
    cluster: bool = False
    slot_groups: int = 1

    def group(self, key: str) -> int:
        """The slot group of a record key (always 0 on a single server)."""
        if not self.cluster:
            return 0
        return zlib.crc32(key.encode("utf-8")) % self.slot_groups

    def _state(self, key: str) -> str:
        return f"{{{self.prefix}:{self.group(key)}}}" if self.cluster else self.prefix

    def stats(self, model_version: str, key: str) -> str:
        """The hash of ``key``'s statistics under ``model_version``: n, mean, var, q."""
        return f"{self._state(key)}:{model_version}:stats:{key}"

    def alert(self, key: str) -> str:
        """The hash of ``key``'s alert state and last applied offset per partition."""
        return f"{self._state(key)}:alert:{key}"

    def registry(self, name: str) -> str:
        """A registry key: ``model:current``, ``model:history`` or ``retrain:lock``."""
        return f"{{{self.prefix}}}:{name}" if self.cluster else f"{self.prefix}:{name}"
