"""Which model version the group serves, how it got there, and who may change it (Redis).

- ``{prefix}:model:current``: the pointer workers follow (streamer/reload.py).
- ``{prefix}:model:history``: a list of JSON entries, oldest first: every retrain decision
  (published, rejected, skipped) with its window and numbers, and every rollback.
- ``{prefix}:retrain:lock``: a random token, set with NX and an expiry. Whoever holds it may
  publish; the expiry frees it when its holder dies.

Publishing is *fenced*: one Lua script checks that the caller's token still holds the lock,
then sets the pointer and appends the history entry. A job whose lock expired (it ran past
``retrain.lock_ttl_s``) and was taken over can therefore never publish over its successor.
"""

from __future__ import annotations

import time
import uuid
from pathlib import Path
from typing import Any

import orjson
import redis

from model.detector import AMADetector
from model.store import ModelStore
from schemas.errors import AmaStreamError
from streamer.reload import pointer_key, validate

__all__ = [
    "LockLost",
    "RegistryError",
    "RetrainLock",
    "current",
    "history",
    "history_key",
    "lock_key",
    "record",
    "rollback",
]

_FENCED = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
if ARGV[2] ~= '' then redis.call('SET', KEYS[2], ARGV[2]) end
redis.call('RPUSH', KEYS[3], ARGV[3])
return 1
"""
_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


class RegistryError(AmaStreamError):
    """A model-lifecycle request that cannot be carried out (e.g. no version to roll back to)."""


class LockLost(RegistryError):
    """The retrain lock is held by someone else (or expired under us): nothing was changed."""


def lock_key(prefix: str) -> str:
    return f"{prefix}:retrain:lock"


def history_key(prefix: str) -> str:
    return f"{prefix}:model:history"


class RetrainLock:
    """A Redis lock with expiry, held by one retrain job (or rollback) at a time."""

    def __init__(self, client: redis.Redis, prefix: str, ttl_s: int) -> None:
        self._client, self._key, self._ttl_ms = client, lock_key(prefix), ttl_s * 1000
        self.token = uuid.uuid4().hex

    def acquire(self) -> bool:
        """Take the lock if it is free; False if another holder has it."""
        return bool(self._client.set(self._key, self.token, nx=True, px=self._ttl_ms))

    def release(self) -> None:
        """Give the lock back, only if it is still ours."""
        self._client.eval(_RELEASE, 1, self._key, self.token)


def current(client: redis.Redis, prefix: str) -> dict[str, str] | None:
    """The pointer ``{"path", "version"}`` the workers follow, or None before any publish."""
    raw = client.get(pointer_key(prefix))
    return None if raw is None else dict(orjson.loads(raw))


def history(client: redis.Redis, prefix: str) -> list[dict[str, Any]]:
    """Every entry, oldest first."""
    return [orjson.loads(raw) for raw in client.lrange(history_key(prefix), 0, -1)]


def record(
    client: redis.Redis,
    prefix: str,
    lock: RetrainLock,
    entry: dict[str, Any],
    *,
    serve: Path | None = None,
) -> None:
    """Append ``entry`` to the history and, with ``serve``, point the workers at that bundle,
    in one step and only while ``lock`` is held (:class:`LockLost` otherwise)."""
    pointer = b""
    if serve is not None:
        pointer = orjson.dumps({"path": str(serve.resolve()), "version": entry["version"]})
    done = client.eval(
        _FENCED, 3, lock_key(prefix), pointer_key(prefix), history_key(prefix),
        lock.token, pointer, orjson.dumps({"at": time.time(), **entry}),
    )  # fmt: skip
    if not done:
        raise LockLost("the retrain lock is no longer ours; nothing was published")


def _known_path(entries: list[dict[str, Any]], store: ModelStore, version: str) -> Path | None:
    """Where ``version``'s bundle lives, from the history or the store."""
    for e in reversed(entries):
        if e.get("version") == version and e.get("path"):
            return Path(e["path"])
        if e.get("parent") == version and e.get("parent_path"):
            return Path(e["parent_path"])
    return store.path(version) if store.path(version).is_dir() else None


def rollback(
    client: redis.Redis, prefix: str, store: ModelStore, lock: RetrainLock, to: str | None
) -> dict[str, Any]:
    """Point the workers back at ``to``, or at the version the current one replaced.

    "Replaced" follows the lineage of publications: rolling back twice from v3 (parent v2,
    whose parent is v1) serves v2, then v1. The target is loaded and validated first, like
    ``model publish``. Returns the history entry written.
    """
    serving = current(client, prefix)
    if serving is None:
        raise RegistryError("nothing is published yet: no version to roll back from")
    entries = history(client, prefix)
    if to is None:
        introduced = [
            e
            for e in entries
            if e.get("decision") == "published" and e["version"] == serving["version"]
        ]
        if not introduced or not introduced[-1].get("parent"):
            raise RegistryError(f"no earlier version recorded for {serving['version']}")
        to = str(introduced[-1]["parent"])
    path = _known_path(entries, store, to)
    if path is None:
        raise RegistryError(f"version {to} is not in the history or the model store")
    detector = AMADetector.load(path, device="cpu")
    if detector.model_version != to:
        raise RegistryError(f"bundle at {path} is version {detector.model_version}, not {to}")
    validate(detector, None)
    entry = {
        "decision": "rollback",
        "version": to,
        "path": str(path.resolve()),
        "parent": serving["version"],
        "parent_path": serving["path"],
    }
    record(client, prefix, lock, entry, serve=path)
    return entry
