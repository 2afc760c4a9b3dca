"""Hot reload: the model version the group should serve is a Redis key; workers follow it.

The key ``{prefix}:model:current`` holds ``{"path": bundle dir, "version": model_version}``.
:func:`publish_model` validates a bundle and sets the key; each worker's :class:`ModelSlot`
reads it between batches (at most every ``check_every_s``), loads and validates a new bundle,
and swaps it in with one reference assignment, so a batch is always scored by exactly one
model. A bundle that fails to load or validate is refused once and remembered: the old model
keeps serving and the worker does not retry the same bad version on every check.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

import numpy as np
import orjson
import redis

from model.bundle import BundleError
from model.detector import AMADetector
from schemas.errors import AmaStreamError

__all__ = ["ModelSlot", "ReloadError", "pointer_key", "publish_model"]

log = logging.getLogger(__name__)


class ReloadError(AmaStreamError):
    """A bundle that cannot replace the one being served (wrong kind or input shape, or its
    scores are not finite)."""


def pointer_key(prefix: str) -> str:
    """The Redis key naming the bundle every worker of a deployment should serve."""
    return f"{prefix}:model:current"


def validate(candidate: AMADetector, serving: AMADetector | None) -> None:
    """Refuse a bundle the running pipeline cannot use.

    The input topic's record format is fixed for a deployment, so the kind and input shape must
    match the bundle being served. A probe batch must score to finite numbers, which catches
    weights that load but are garbage (NaN calibration, exploded parameters).
    """
    if serving is not None and (
        candidate.kind != serving.kind or candidate.input_shape != serving.input_shape
    ):
        raise ReloadError(
            f"bundle is {candidate.kind} {candidate.input_shape}, the worker serves "
            f"{serving.kind} {serving.input_shape}"
        )
    rng = np.random.default_rng(0)
    probe = rng.normal(size=(8, *candidate.input_shape)).astype(np.float32)
    if candidate.kind == "image":
        probe = (np.abs(probe) * 64.0).astype(np.float32)  # image units are 0..255
    scores = candidate.score(probe)
    if not (np.isfinite(scores).all() and np.isfinite(candidate.threshold)):
        raise ReloadError("bundle scores a probe batch to non-finite numbers")


def publish_model(client: redis.Redis, prefix: str, bundle: Path) -> str:
    """Validate ``bundle`` here, then point every worker at it; returns its model version.

    Validating before publishing means a typo in a path never reaches the workers; they
    validate again anyway, because the file they read is the one that counts.
    """
    detector = AMADetector.load(bundle, device="cpu")
    validate(detector, None)
    value = {"path": str(bundle.resolve()), "version": detector.model_version}
    client.set(pointer_key(prefix), orjson.dumps(value))
    return detector.model_version


class ModelSlot:
    """The detector being served, and the rate-limited check for a new one."""

    def __init__(
        self,
        detector: AMADetector,
        *,
        client: redis.Redis | None,
        prefix: str,
        device: str,
        check_every_s: float = 2.0,
    ) -> None:
        self.detector = detector
        self._client = client
        self._key = pointer_key(prefix)
        self._device = device
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
            raw = self._client.get(self._key)
        except redis.RedisError as exc:
            log.debug("model pointer unreadable: %s", exc)
            return None
        if raw is None:
            return None
        try:
            pointer = orjson.loads(raw)
            path, version = Path(pointer["path"]), str(pointer["version"])
        except (orjson.JSONDecodeError, KeyError, TypeError):
            return self._refuse(str(raw[:64]), "model pointer is not {path, version} JSON")
        if version == self.detector.model_version or version in self._refused:
            return None
        try:
            candidate = AMADetector.load(path, device=self._device)
            if candidate.model_version != version:
                raise ReloadError(
                    f"bundle at {path} is version {candidate.model_version}, pointer says {version}"
                )
            validate(candidate, self.detector)
        except (BundleError, ReloadError, OSError) as exc:
            return self._refuse(version, str(exc))
        old, self.detector = self.detector.model_version, candidate
        log.info("model swapped", extra={"old_version": old, "new_version": version})
        return "swapped"

    def _refuse(self, version: str, reason: str) -> str:
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
