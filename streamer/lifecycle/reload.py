"""Hot reload: each worker follows the registry's pointer between batches.

A worker's :class:`ModelSlot` reads the pointer (at most every ``check_every_s``), loads and
checks a new bundle exactly as a publish does (registry.check_bundle, against the model it
serves), and swaps it in with one reference assignment, so a batch is always scored by exactly
one model. A bundle that fails to load or check is refused once and remembered: the old model
keeps serving and the worker does not retry the same bad version on every check.

The pointer is outside data (anyone who can write the Redis key can change it), so a worker
given a model store loads only bundles inside it, given a signing key only bundles signed with
it, and given ``max_dims`` only models whose input is no larger (model/store.py,
model/bundle.py, docs/worker.md "Hostile input").
"""

from __future__ import annotations

import logging
import math
import time

import redis

from model.bundle import BundleError
from model.detector import AMADetector
from model.store import ModelStore
from streamer.lifecycle.registry import RegistryError, check_bundle, current
from streamer.state.client import RedisClient

__all__ = ["ModelSlot", "check_input_size"]

log = logging.getLogger(__name__)


class ModelSlot:
    """The detector being served, and the rate-limited check for a new one."""

    def __init__(
        self,
        detector: AMADetector,
        *,
        client: RedisClient | None,
        prefix: str,
        device: str,
        check_every_s: float = 2.0,
        store: ModelStore | None = None,
        signing_key: bytes | None = None,
        max_dims: int | None = None,
    ) -> None:
        self.detector = detector
        self._store = store
        self._signing_key = signing_key
        self._max_dims = max_dims
        self._client = client
        self._prefix = prefix
        self._device = device  # every new version scores where and how the first one does
        self._check_every_s = check_every_s
        self._next_check = 0.0
        self._refused: set[str] = set()

    def maybe_reload(self) -> str | None:
        """Between batches: swap in the published bundle if it is new and valid.

        Returns ``"swapped"``, ``"refused"`` or None (nothing to do, or Redis unreachable: the
        current model keeps serving and the next check tries again).
        """
        now = time.monotonic()
        if self._client is None or now < self._next_check:
            return None
        self._next_check = now + self._check_every_s
        try:
            pointer = current(self._client, self._prefix)
        except redis.RedisError as exc:
            log.debug("model pointer unreadable: %s", exc)
            return None
        except RegistryError as exc:
            return self._refuse("unreadable-pointer", str(exc))
        if pointer is None:
            return None
        version = pointer.version
        if version == self.detector.model_version or version in self._refused:
            return None
        serving = (self.detector.kind, self.detector.input_shape)
        try:
            path = self._store.confine(pointer.path) if self._store else pointer.path
            candidate = AMADetector.load(path, device=self._device, signing_key=self._signing_key)
            check_input_size(candidate, self._max_dims)
            candidate.to(self._device, self.detector.precision)
            if candidate.model_version != version:
                raise RegistryError(
                    f"bundle at {pointer.path} is version {candidate.model_version}, "
                    f"the pointer says {version}"
                )
            check_bundle(candidate, serving)
        except (BundleError, RegistryError, OSError) as exc:
            return self._refuse(version, str(exc))
        old, self.detector = self.detector.model_version, candidate
        log.info("model swapped", extra={"old_version": old, "new_version": version})
        return "swapped"

    def _refuse(self, version: str, reason: str) -> str | None:
        """Log and count a refusal once per version (an unreadable pointer counts as one)."""
        if version in self._refused:
            return None
        self._refused.add(version)
        log.error(
            "model bundle refused; the current one keeps serving",
            extra={
                "refused_version": version,
                "reason": reason,
                "serving": self.detector.model_version,
            },
        )
        return "refused"


def check_input_size(detector: AMADetector, max_dims: int | None) -> None:
    """Refuse a model whose input exceeds ``limits.max_dims`` values: its input shape sizes
    every batch array the worker allocates, so it is bounded like any other outside input."""
    size = math.prod(detector.input_shape)
    if max_dims is not None and size > max_dims:
        raise RegistryError(
            f"bundle {detector.model_version} takes {size} values per record, more than "
            f"limits.max_dims = {max_dims}"
        )
