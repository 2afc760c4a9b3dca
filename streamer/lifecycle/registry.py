"""Which model version the group serves, how it got there, and the one way to change it (Redis).

- ``{prefix}:model:current``: the :class:`Pointer` every worker follows (reload.py).
- ``{prefix}:model:history``: JSON entries, oldest first: every publish (by hand, by a retrain
  cycle), every rollback, and the retrain cycles that did not publish (rejected, skipped,
  superseded), each with its numbers.
- ``{prefix}:retrain:lock``: a random token set with NX and an expiry; one retrain cycle at a
  time holds it, and its expiry frees it when the holder dies.

On a Redis Cluster the three share the hash tag ``{prefix}`` (streamer/state/keys.py), so the
publish step's script touches one slot.

Every change of the serving version goes through :func:`publish`: it loads the bundle, checks it
against what the group serves (kind and input shape; a probe batch scores finite), then in one
Lua step compares the pointer with the one the caller based its decision on, sets it and appends
the history entry. The comparison makes concurrent publishers safe without a long-held lock: a
retrain cycle that trained against version A while an operator published B is refused
(:class:`Superseded`) instead of overwriting B; a cycle additionally passes its lock token, so a
cycle whose lock expired and was taken over cannot publish either (:class:`LockLost`).
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import orjson

from schemas.errors import AmaStreamError
from streamer.state.client import RedisClient, is_cluster
from streamer.state.keys import KeyLayout

if TYPE_CHECKING:  # torch comes with the detector: readers of the pointer (the dashboard) skip it
    from model.detector import AMADetector
    from model.store import ModelStore

__all__ = [
    "Incompatible",
    "LockLost",
    "Pointer",
    "RegistryError",
    "RetrainLock",
    "Superseded",
    "check_bundle",
    "current",
    "history",
    "pointer_key",
    "publish",
    "publish_manual",
    "record",
    "restore",
    "rollback",
]

# KEYS: pointer, history, lock. ARGV: the pointer as the caller read it ('' = none), the lock
# token ('' = no lock needed), the new pointer ('' = keep it), the history entry.
_PUBLISH = """
if ARGV[2] ~= '' and redis.call('GET', KEYS[3]) ~= ARGV[2] then return 'lock_lost' end
if (redis.call('GET', KEYS[1]) or '') ~= ARGV[1] then return 'superseded' end
if ARGV[3] ~= '' then redis.call('SET', KEYS[1], ARGV[3]) end
redis.call('RPUSH', KEYS[2], ARGV[4])
return 'done'
"""
_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


class RegistryError(AmaStreamError):
    """A model-lifecycle request that cannot be carried out (e.g. no version to roll back to)."""


class LockLost(RegistryError):
    """The retrain lock is held by someone else (or expired under us): nothing was changed."""


class Superseded(RegistryError):
    """The serving version changed after the caller read it: another publish came first, and
    nothing was changed."""


class Incompatible(RegistryError):
    """The bundle cannot serve this group's records (other kind or input shape)."""


def pointer_key(prefix: str, *, cluster: bool = False) -> str:
    """The Redis key naming the bundle every worker of a deployment should serve."""
    return KeyLayout(prefix, cluster).registry("model:current")


def history_key(prefix: str, *, cluster: bool = False) -> str:
    return KeyLayout(prefix, cluster).registry("model:history")


def lock_key(prefix: str, *, cluster: bool = False) -> str:
    return KeyLayout(prefix, cluster).registry("retrain:lock")


@dataclass(frozen=True, slots=True)
class Pointer:
    """What the workers serve: a bundle directory, its version, and the records it takes."""

    path: Path
    version: str
    kind: str
    input_shape: tuple[int, ...]

    @classmethod
    def of(cls, detector: AMADetector, path: Path) -> Pointer:
        return cls(path.resolve(), detector.model_version, detector.kind, detector.input_shape)

    @classmethod
    def parse(cls, raw: bytes) -> Pointer:
        """The one reader of the pointer's JSON; :class:`RegistryError` if it is not one."""
        try:
            doc = orjson.loads(raw)
            return cls(
                Path(doc["path"]),
                str(doc["version"]),
                str(doc["kind"]),
                tuple(int(n) for n in doc["input_shape"]),
            )
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
            raise RegistryError(
                f"the model pointer is not {{path, version, kind, input_shape}} JSON: {raw[:80]!r}"
            ) from None

    def dumps(self) -> bytes:
        return orjson.dumps(
            {
                "path": str(self.path),
                "version": self.version,
                "kind": self.kind,
                "input_shape": list(self.input_shape),
            }
        )


def check_bundle(
    candidate: AMADetector, serving: tuple[str, tuple[int, ...]] | None, *, force: bool = False
) -> None:
    """Refuse a bundle the running pipeline cannot use.

    ``serving`` is the (kind, input shape) the group serves now; the input topic's record
    format is fixed for a deployment, so a bundle for other records would turn every worker
    into a dead-letter sink (:class:`Incompatible`, skipped with ``force``). A probe batch must
    score to finite numbers, which catches weights that load but are garbage (NaN
    calibration, exploded parameters); ``force`` never skips that.
    """
    if serving is not None and not force and (candidate.kind, candidate.input_shape) != serving:
        kind, shape = serving
        raise Incompatible(
            f"bundle {candidate.model_version} takes {candidate.kind} records of shape "
            f"{candidate.input_shape}, the group serves {kind} {shape}"
        )
    rng = np.random.default_rng(0)
    probe = rng.normal(size=(8, *candidate.input_shape)).astype(np.float32)
    if candidate.kind == "image":
        probe = (np.abs(probe) * 64.0).astype(np.float32)  # image units are 0..255
    scores = candidate.score(probe)
    if not (np.isfinite(scores).all() and np.isfinite(candidate.threshold)):
        raise RegistryError(
            f"bundle {candidate.model_version} scores a probe to non-finite numbers"
        )


class RetrainLock:
    """A Redis lock with expiry: one retrain cycle at a time."""

    def __init__(self, client: RedisClient, prefix: str, ttl_s: int) -> None:
        self._client, self._ttl_ms = client, ttl_s * 1000
        self._key = lock_key(prefix, cluster=is_cluster(client))
        self.token = uuid.uuid4().hex

    def acquire(self) -> bool:
        """Take the lock if it is free; False if another holder has it."""
        return bool(self._client.set(self._key, self.token, nx=True, px=self._ttl_ms))

    def release(self) -> None:
        """Give the lock back, only if it is still ours."""
        self._client.eval(_RELEASE, 1, self._key, self.token)


def _read(client: RedisClient, prefix: str) -> tuple[bytes, Pointer | None]:
    """The pointer as stored (b"" when none: what the publish script compares) and parsed."""
    key = pointer_key(prefix, cluster=is_cluster(client))
    raw: bytes | None = client.get(key)  # type: ignore[assignment]
    return (b"", None) if raw is None else (raw, Pointer.parse(raw))


def current(client: RedisClient, prefix: str) -> Pointer | None:
    """What the workers follow, or None before the first publish."""
    return _read(client, prefix)[1]


def history(client: RedisClient, prefix: str) -> list[dict[str, Any]]:
    """Every entry, oldest first."""
    key = history_key(prefix, cluster=is_cluster(client))
    return [orjson.loads(raw) for raw in client.lrange(key, 0, -1)]


def _commit(
    client: RedisClient,
    prefix: str,
    *,
    read: bytes,
    lock: RetrainLock | None,
    pointer: Pointer | None,
    entry: dict[str, Any],
) -> None:
    cluster = is_cluster(client)
    outcome = client.eval(
        _PUBLISH, 3, pointer_key(prefix, cluster=cluster), history_key(prefix, cluster=cluster),
        lock_key(prefix, cluster=cluster),
        read, lock.token if lock else "", pointer.dumps() if pointer else "",
        orjson.dumps({"at": time.time(), **entry}),
    )  # fmt: skip
    if outcome == b"lock_lost":
        raise LockLost("the retrain lock is no longer ours; nothing was changed")
    if outcome == b"superseded":
        raise Superseded("the serving model changed meanwhile (another publish); nothing changed")


def publish(
    client: RedisClient,
    prefix: str,
    bundle: Path,
    entry: dict[str, Any],
    *,
    based_on: Pointer | None,
    version: str | None = None,
    lock: RetrainLock | None = None,
    force: bool = False,
    store: ModelStore | None = None,
    signing_key: bytes | None = None,
) -> dict[str, Any]:
    """Point every worker at ``bundle`` and record it; returns the history entry written.

    ``entry`` carries the decision and its context (``{"decision": "published", "trigger":
    ...}``); version, path and parent are added here. ``based_on`` is the pointer the caller's
    decision rests on (what it read as serving; a retrain cycle: its champion): if the pointer
    moved since, nothing changes and :class:`Superseded` is raised. ``version``, if given, is
    what the bundle must be. ``lock`` fences a retrain cycle's publish; ``force`` skips the
    kind and shape check (:func:`check_bundle`). ``store`` keeps a copy of the new pointer
    (:func:`restore` uses it if Redis loses its data), and a bundle from outside it is copied
    in first, since workers load only from their store (model/store.py). ``signing_key``: the
    bundle must be signed with it, as the workers will require.
    """
    read, serving = _read(client, prefix)
    if based_on != serving:
        raise Superseded("the serving model changed meanwhile (another publish); nothing changed")
    from model.detector import AMADetector  # here, not at the top: see the imports

    detector = AMADetector.load(bundle, device="cpu", signing_key=signing_key)
    if version is not None and detector.model_version != version:
        raise RegistryError(
            f"bundle at {bundle} is version {detector.model_version}, not {version}"
        )
    check_bundle(detector, (serving.kind, serving.input_shape) if serving else None, force=force)
    path = store.adopt(bundle, detector.model_version) if store is not None else bundle
    pointer = Pointer.of(detector, path)
    full = {
        **entry,
        "version": pointer.version,
        "path": str(pointer.path),
        "parent": serving.version if serving else None,
        "parent_path": str(serving.path) if serving else None,
    }
    _commit(client, prefix, read=read, lock=lock, pointer=pointer, entry=full)
    if store is not None:
        store.record_serving(pointer.dumps())
    return full


def publish_manual(
    client: RedisClient,
    prefix: str,
    bundle: Path,
    *,
    force: bool = False,
    store: ModelStore | None = None,
    signing_key: bytes | None = None,
) -> dict[str, Any]:
    """What ``ama-stream model publish`` does: publish ``bundle`` over whatever serves now."""
    return publish(
        client, prefix, bundle, {"decision": "published", "trigger": {"reason": "manual"}},
        based_on=current(client, prefix), force=force, store=store, signing_key=signing_key,
    )  # fmt: skip


def restore(client: RedisClient, prefix: str, store: ModelStore) -> Pointer | None:
    """The serving pointer; if Redis has none (it lost its data) but the model store kept the
    last one published, that one is put back first and a ``restored`` entry recorded.

    Set only if still absent (two workers starting together restore it once), and never over
    a pointer someone published meanwhile.
    """
    pointer = current(client, prefix)
    kept = store.serving()
    if pointer is not None or kept is None:
        return pointer
    restored = Pointer.parse(kept)
    entry = {"decision": "restored", "version": restored.version, "path": str(restored.path)}
    try:
        _commit(client, prefix, read=b"", lock=None, pointer=restored, entry=entry)
    except Superseded:  # another worker restored it, or someone published, a moment ago
        return current(client, prefix)
    return restored


def record(client: RedisClient, prefix: str, lock: RetrainLock, entry: dict[str, Any]) -> None:
    """Append a retrain cycle's entry that changes nothing served (rejected, skipped,
    superseded), only while ``lock`` is held (:class:`LockLost` otherwise)."""
    read, _ = _read(client, prefix)
    _commit(client, prefix, read=read, lock=lock, pointer=None, entry=entry)


def _known_path(entries: list[dict[str, Any]], store: ModelStore, version: str) -> Path | None:
    """Where ``version``'s bundle lives, from the history or the store."""
    for e in reversed(entries):
        if e.get("version") == version and e.get("path"):
            return Path(e["path"])
        if e.get("parent") == version and e.get("parent_path"):
            return Path(e["parent_path"])
    return store.path(version) if store.path(version).is_dir() else None


def rollback(
    client: RedisClient,
    prefix: str,
    store: ModelStore,
    to: str | None,
    *,
    force: bool = False,
    signing_key: bytes | None = None,
) -> dict[str, Any]:
    """Point the workers back at ``to``, or at the version the serving one replaced.

    "Replaced" follows the lineage of publications: rolling back twice from v3 (parent v2,
    whose parent is v1) serves v2, then v1. Goes through :func:`publish` like any other change.
    """
    serving = current(client, prefix)
    if serving is None:
        raise RegistryError("nothing is published yet: no version to roll back from")
    entries = history(client, prefix)
    if to is None:
        introduced = [
            e
            for e in entries
            if e.get("decision") == "published" and e["version"] == serving.version
        ]
        if not introduced or not introduced[-1].get("parent"):
            raise RegistryError(f"no earlier version recorded for {serving.version}")
        to = str(introduced[-1]["parent"])
    path = _known_path(entries, store, to)
    if path is None:
        raise RegistryError(f"version {to} is not in the history or the model store")
    entry = {"decision": "rollback"}
    return publish(
        client, prefix, path, entry, based_on=serving, version=to, force=force, store=store,
        signing_key=signing_key,
    )  # fmt: skip
