"""The model store (the registry of bundles): a directory every worker can read, one
sub-directory per model version. The serving pointer and history are Redis state
(streamer/lifecycle/registry.py); the store keeps a copy of the last published pointer
(``serving.json``) so that a Redis that lost its data can be pointed at it again.

A bundle is written into a hidden temporary directory (``.partial-<random>``) and renamed to
its version name only when complete; ``rename`` of a directory within one file system is
atomic, so a reader sees either no ``<version>/`` or a whole bundle. A job killed mid-write
leaves only a ``.partial-*`` directory, which no pointer names and :meth:`ModelStore.sweep`
removes (it runs under the retrain lock, so no live writer owns one).

Workers load only bundles inside the store (:meth:`ModelStore.confine`): a pointer in Redis is
outside data, and a path in it that leads elsewhere (``../``, an absolute path, a symbolic
link out of the store) is refused. A store with a signing key signs what it writes.
"""

from __future__ import annotations

import os
import shutil
import uuid
from pathlib import Path

from model.bundle import BundleError, sign_bundle
from model.detector import AMADetector

__all__ = ["PARTIAL_PREFIX", "SERVING", "ModelStore"]

PARTIAL_PREFIX = ".partial-"
#: The last pointer published through a registry that knew this store: lets the serving version
#: survive the loss of Redis (streamer/lifecycle/registry.py restores it).
SERVING = "serving.json"


class ModelStore:
    """Bundles by model version under ``root``."""

    def __init__(self, root: Path, *, signing_key: bytes | None = None) -> None:
        self.root = root
        self._signing_key = signing_key

    def path(self, version: str) -> Path:
        return self.root / version

    def confine(self, path: Path) -> Path:
        """``path`` resolved, if it lies inside the store; :class:`BundleError` otherwise."""
        resolved, root = path.resolve(), self.root.resolve()
        if resolved == root or not resolved.is_relative_to(root):
            raise BundleError(path, "outside_store", f"not inside the model store {root}")
        return resolved

    def adopt(self, bundle: Path, version: str) -> Path:
        """A copy of the bundle directory ``bundle`` (of ``version``) inside the store, made
        atomically like :meth:`write`; the bundle itself when it is inside already."""
        try:
            return self.confine(bundle)
        except BundleError:
            pass
        self.root.mkdir(parents=True, exist_ok=True)
        target = self.path(version)
        if not target.is_dir():
            partial = self.root / f"{PARTIAL_PREFIX}{uuid.uuid4().hex}"
            shutil.copytree(bundle, partial, symlinks=False)
            os.rename(partial, target)
            _fsync_dir(self.root)
        return target.resolve()

    def write(self, detector: AMADetector) -> Path:
        """Save ``detector`` as ``root/<model_version>`` atomically; returns that path.

        A version already in the store is the same content (the version is a content hash), so
        the existing directory is kept.
        """
        self.root.mkdir(parents=True, exist_ok=True)
        target = self.path(detector.model_version)
        if target.is_dir():
            return target
        partial = self.root / f"{PARTIAL_PREFIX}{uuid.uuid4().hex}"
        detector.save(partial)
        if self._signing_key is not None:
            sign_bundle(partial, self._signing_key)
        os.rename(partial, target)
        _fsync_dir(self.root)  # make the rename itself durable before a pointer names it
        return target

    def record_serving(self, pointer: bytes) -> None:
        """Keep the pointer that was just published (atomically; only in an existing store,
        so a publish from an unrelated folder creates no directory)."""
        if not self.root.is_dir():
            return
        partial = self.root / f"{PARTIAL_PREFIX}{uuid.uuid4().hex}.json"
        partial.write_bytes(pointer)
        os.replace(partial, self.root / SERVING)

    def serving(self) -> bytes | None:
        """The pointer :meth:`record_serving` kept, if any."""
        path = self.root / SERVING
        return path.read_bytes() if path.is_file() else None

    def sweep(self) -> list[Path]:
        """Remove what dead jobs left half-written; call only while holding the retrain lock."""
        if not self.root.is_dir():
            return []
        stale = [p for p in self.root.iterdir() if p.name.startswith(PARTIAL_PREFIX)]
        for p in stale:
            if p.is_dir():
                shutil.rmtree(p, ignore_errors=True)
            else:
                p.unlink(missing_ok=True)
        return stale


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
