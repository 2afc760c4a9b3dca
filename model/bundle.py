"""Model bundles: a directory with ``weights.safetensors`` and ``metadata.json``.

Nothing is ever unpickled: weights are safetensors, everything else is JSON. A bundle is refused
with a :class:`BundleError` naming the problem when it is missing, truncated, tampered with
(SHA-256 of the weights file or the content-derived ``model_version`` does not match) or
incompatible (format version, config, tensor names or shapes).

A bundle may be signed (:func:`sign_bundle`): ``signature`` holds an HMAC-SHA256, under a key
the operator keeps, of ``metadata.json`` as written; since the metadata names the weights'
SHA-256 and the content-derived version, the signature covers everything that scores. A reader
given the key (:func:`read_bundle`) refuses an unsigned bundle (problem ``unsigned``) or one
whose signature does not match (``bad_signature``) before it parses the weights.

``model_version`` = ``"ama-"`` + the first 16 hex digits of SHA-256 over the weights file bytes
followed by the canonical JSON of (config, normalisation, calibration): everything that changes
a score changes the version, and nothing else (not created_at, not metrics) does.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save

from schemas.errors import AmaStreamError

FORMAT = "ama-bundle"
FORMAT_VERSION = 3  # 2: a(x) adds the reconstruction-error z; 3: ensembles, per-member calibration
WEIGHTS = "weights.safetensors"
METADATA = "metadata.json"
SIGNATURE = "signature"  # hex HMAC-SHA256 of metadata.json's bytes


class BundleError(AmaStreamError):
    """A model bundle cannot be used; ``problem`` is one of missing / truncated / tampered /
    incompatible / invalid / unsigned / bad_signature, ``path`` the bundle directory."""

    def __init__(self, path: Path | str, problem: str, detail: str) -> None:
        super().__init__(f"bundle {path}: {problem}: {detail}")
        self.path = Path(path)
        self.problem = problem
        self.detail = detail


@dataclass(frozen=True)
class BundleContents:
    """What :func:`read_bundle` returns: verified metadata and the tensors."""

    metadata: dict[str, Any]
    tensors: dict[str, torch.Tensor]

    @property
    def model_version(self) -> str:
        return str(self.metadata["model_version"])


def _canonical(obj: Any) -> bytes:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), allow_nan=False).encode()


def compute_model_version(weights: bytes, metadata: dict[str, Any]) -> str:
    """Content hash of the weights plus everything in the metadata that affects scores."""
    h = hashlib.sha256(weights)
    h.update(_canonical([metadata["config"], metadata["normalisation"], metadata["calibration"]]))
    return "ama-" + h.hexdigest()[:16]


def write_bundle(
    path: Path | str,
    *,
    tensors: dict[str, torch.Tensor],
    config: dict[str, Any],
    input_spec: dict[str, Any],
    normalisation: dict[str, Any],
    calibration: dict[str, Any],
    training: dict[str, Any],
    metrics: dict[str, Any] | None = None,
) -> str:
    """Write a bundle directory and return its ``model_version``.

    The weights are written first and ``metadata.json`` last (each via a temporary file and an
    atomic rename), so a reader that sees the metadata also sees the matching weights.
    """
    out = Path(path)
    out.mkdir(parents=True, exist_ok=True)
    blob = st_save({k: v.detach().cpu().contiguous() for k, v in tensors.items()})
    meta: dict[str, Any] = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "config": config,
        "input": input_spec,
        "normalisation": normalisation,
        "calibration": calibration,
        "training": training,
        "metrics": metrics or {},
        "weights": {
            "file": WEIGHTS,
            "sha256": hashlib.sha256(blob).hexdigest(),
            "bytes": len(blob),
        },
    }
    meta["model_version"] = compute_model_version(blob, meta)
    _atomic_write(out / WEIGHTS, blob)
    _atomic_write(out / METADATA, json.dumps(meta, indent=2, allow_nan=False).encode())
    return str(meta["model_version"])


def _atomic_write(target: Path, data: bytes) -> None:
    tmp = target.with_name(target.name + ".tmp")
    with open(tmp, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, target)


def _mac(key: bytes, metadata: bytes) -> str:
    return hmac.new(key, metadata, hashlib.sha256).hexdigest()


def sign_bundle(path: Path | str, key: bytes) -> None:
    """Sign the bundle at ``path`` with ``key`` (written atomically beside its metadata)."""
    root = Path(path)
    read_bundle(root)  # never sign something that would not load
    _atomic_write(root / SIGNATURE, _mac(key, (root / METADATA).read_bytes()).encode())


def _check_signature(root: Path, metadata: bytes, key: bytes) -> None:
    try:
        signature = (root / SIGNATURE).read_bytes().strip()
    except FileNotFoundError:
        raise BundleError(root, "unsigned", f"no {SIGNATURE} file, and a key is set") from None
    if not hmac.compare_digest(signature, _mac(key, metadata).encode()):
        raise BundleError(root, "bad_signature", "the signature does not match this key")


def read_bundle(path: Path | str, *, key: bytes | None = None) -> BundleContents:
    """Read and verify a bundle; raise :class:`BundleError` on any problem. With ``key``, the
    bundle must carry a valid signature under it (checked first, before anything is parsed)."""
    root = Path(path)
    if not root.is_dir():
        raise BundleError(root, "missing", "no such bundle directory")
    meta_path, weights_path = root / METADATA, root / WEIGHTS
    for p in (meta_path, weights_path):
        if not p.is_file():
            raise BundleError(root, "missing", f"{p.name} not found")
    metadata = meta_path.read_bytes()
    if key is not None:
        _check_signature(root, metadata, key)
    try:
        meta = json.loads(metadata)
    except (ValueError, UnicodeDecodeError) as exc:
        raise BundleError(root, "truncated", f"{METADATA} is not valid JSON ({exc})") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise BundleError(root, "invalid", f"{METADATA} is not an {FORMAT} metadata file")
    version = meta.get("format_version")
    if version != FORMAT_VERSION:
        raise BundleError(
            root, "incompatible", f"format_version {version!r}, this build reads {FORMAT_VERSION}"
        )
    required = ("config", "input", "normalisation", "calibration", "weights", "model_version")
    missing = [k for k in required if k not in meta]
    if missing:
        raise BundleError(root, "invalid", f"metadata lacks {', '.join(missing)}")
    blob = weights_path.read_bytes()
    expected = meta["weights"]
    if len(blob) != expected.get("bytes"):
        raise BundleError(
            root, "truncated", f"{WEIGHTS} has {len(blob)} bytes, expected {expected.get('bytes')}"
        )
    if hashlib.sha256(blob).hexdigest() != expected.get("sha256"):
        raise BundleError(root, "tampered", f"SHA-256 of {WEIGHTS} does not match the metadata")
    if compute_model_version(blob, meta) != meta["model_version"]:
        raise BundleError(
            root, "tampered", "model_version does not match the weights, config and calibration"
        )
    try:
        tensors = st_load(blob)
    except (SafetensorError, ValueError) as exc:
        raise BundleError(root, "truncated", f"{WEIGHTS} cannot be parsed ({exc})") from None
    return BundleContents(metadata=meta, tensors=tensors)
