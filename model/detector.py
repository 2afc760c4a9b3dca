"""AMADetector: the one object the rest of ama-stream uses (contract in docs/internals.md).

``fit`` trains ``members`` AMA models from different seeds, folds each into an eval-only Scorer
and calibrates Gaussians (mu, sigma) per member on the training rows' scores; ``score`` returns
a(x), the members' mean of the one-sided z of the critic feature mismatch s (section 5.2) plus the
z of the reconstruction error (docs/model.md, deviations 12 and 13; ``FAITHFUL`` gives the paper's
single-model |s - mu| / sigma), and never changes the detector; ``save`` / ``load`` use
safetensors bundles.
"""

from __future__ import annotations

import copy
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch

from model.bundle import BundleError, read_bundle, write_bundle
from model.networks import AMAConfig, Ensemble, Kind, empty_ensemble, export_scorer
from model.train import TrainSummary, train_networks
from schemas.errors import ServiceError

# Standardised vectors are clipped to +-CLIP only so that one absurd value cannot overflow float32
# arithmetic. The clip must sit far beyond any real operating point: a run that sits tens of
# training standard deviations away in some feature (SKAB valve1: 4 of 8 features at -17..-58)
# must keep its rows' order there, and a clip at 10 flattened every row onto the same value
# (docs/model.md, deviation 14). Bundles store their clip; older ones (10) keep it.
CLIP = 1000.0
QUANTILES = (0.5, 0.9, 0.95, 0.99, 0.995, 0.999)
SCORE_CHUNK = 4096  # rows per forward pass when scoring large arrays (bounds peak memory)
MEMBER_SEED_STRIDE = 1000  # member m trains with seed + 1000 m: distinct from other fits' seeds


Precision = Literal["float32", "bfloat16"]


def pick_device(device: str | torch.device | None) -> torch.device:
    """The one place a device is chosen: explicit, else CUDA when available, else CPU."""
    if device is not None:
        return torch.device(device)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def pick_precision(choice: str | None, device: torch.device) -> Precision:
    """The one place the scoring precision is chosen: ``float32`` or ``bfloat16`` as asked;
    ``auto``/None: bfloat16 where the device computes it natively (a CUDA device that supports
    it; a CPU with AVX512-BF16 or AMX), else float32. Emulated bf16 would be slower than fp32.

    Training always runs in float32; bf16 only scores (docs/model.md, "Scoring precision").
    """
    if choice in ("float32", "bfloat16"):
        return choice  # type: ignore[return-value]
    if device.type == "cuda":
        return "bfloat16" if torch.cuda.is_bf16_supported() else "float32"
    if device.type == "cpu" and _cpu_has_native_bf16():
        return "bfloat16"
    return "float32"


def _cpu_has_native_bf16() -> bool:
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return " avx512_bf16" in flags or " amx_bf16" in flags


class AMADetector:
    """Adversarial Mirrored AutoEncoder anomaly detector for vectors or small images.

    >>> det = AMADetector(kind="vector").fit(X_train)  # the default budget (docs/model.md)
    >>> a = det.score(X)            # float64 (n,), higher = more anomalous
    >>> det.save("bundle/"); det2 = AMADetector.load("bundle/")

    Keyword arguments are :class:`~model.networks.AMAConfig` fields (``nz``, ``arch``,
    ``neg_sampling``, ``reg_lambda``, ...). ``input_shape`` is taken from the data at ``fit``.
    """

    def __init__(self, kind: Kind = "vector", **config: Any) -> None:
        if kind not in ("vector", "image"):
            raise ValueError(f"kind must be 'vector' or 'image', got {kind!r}")
        self._config_kwargs = dict(config)
        self.kind: Kind = kind
        self.config: AMAConfig | None = None
        self._scorer: Ensemble | None = None
        self._device = torch.device("cpu")
        self._norm: dict[str, Any] = {}
        self._calibration: dict[str, Any] = {}
        self._training: dict[str, Any] = {}
        self.metrics: dict[str, Any] = {}
        self._model_version: str | None = None
        # Normalisation tensors live on the scoring device (one host-to-device copy per call).
        self._loc: torch.Tensor | None = None
        self._scale: torch.Tensor | None = None
        self._precision: Precision = "float32"

    # --- properties of the contract ------------------------------------------------------------

    @property
    def input_shape(self) -> tuple[int, ...]:
        """(d,) for vectors, (C, H, W) for images."""
        return self._require_config().input_shape

    @property
    def threshold(self) -> float:
        """Calibrated threshold on the a(x) scale: the ``threshold_quantile`` (default 0.99)
        quantile of a(x) over the training rows."""
        self._require_fitted()
        return float(self._calibration["threshold"])

    @property
    def calibration(self) -> dict[str, Any]:
        """Per-member mu, sigma of s and of the reconstruction error, quantiles of the feature
        z and of a(x) on the training rows, threshold and its rule."""
        return copy.deepcopy(self._calibration)

    @property
    def training(self) -> dict[str, Any]:
        """What the bundle records about the training run: rows, epochs run, iterations, wall
        time, device, and per member its seed, epochs, iterations and per-epoch losses."""
        return copy.deepcopy(self._training)

    @property
    def model_version(self) -> str:
        """Content-derived version string (see model.bundle); computed without writing files."""
        self._require_fitted()
        if self._model_version is None:
            import hashlib

            from safetensors.torch import save as st_save

            from model.bundle import compute_model_version

            blob = st_save({k: v.cpu().contiguous() for k, v in self._state().items()})
            meta = {
                "config": self._require_config().to_json(),
                "normalisation": self._norm,
                "calibration": self._calibration,
            }
            self._model_version = compute_model_version(blob, meta)
            del hashlib
        return self._model_version

    @property
    def precision(self) -> Precision:
        """The precision scoring computes in (weights stay float32; see :func:`pick_precision`)."""
        return self._precision

    def to(self, device: str | torch.device, precision: Precision | None = None) -> AMADetector:
        """Move the scorer once; every later ``score`` call makes one host-to-device copy.
        ``precision`` (default: unchanged) is what scoring computes in."""
        if precision is not None:
            self._precision = precision
        self._device = torch.device(device)
        if self._scorer is not None:
            self._scorer.to(self._device)
        if self._loc is not None and self._scale is not None:
            self._loc, self._scale = self._loc.to(self._device), self._scale.to(self._device)
        return self

    # --- training -------------------------------------------------------------------------------

    def fit(
        self,
        X: np.ndarray,
        *,
        epochs: int | None = None,
        batch_size: int | None = None,
        device: str | torch.device | None = None,
        seed: int = 0,
        progress: bool = True,
        time_budget_s: float | None = None,
    ) -> AMADetector:
        """Fit normalisation, train the networks, export the scorer and calibrate (mu, sigma).

        X: (n, d) vectors, or images (n, H, W) / (n, C, H, W) in 0..255 or 0..1 units.
        ``epochs=None`` is the default budget: each member trains at most
        ``model.train.DEFAULT_ITERATIONS`` AE iterations and stops earlier when a held-out
        slice of ``X`` stops improving (docs/model.md, "Training budget"), so the cost does not
        grow with n; an explicit ``epochs`` trains that many full passes over every row.
        ``batch_size=None``: 128 rows, fewer for small sets (``model.train.default_batch_size``).
        ``time_budget_s`` is shared equally by the members; each stops after the first epoch
        that ends past its share.
        """
        arr = self._as_input(X, fitting=True)
        shape = tuple(int(s) for s in arr.shape[1:])
        cfg = AMAConfig(kind=self.kind, input_shape=shape, **self._config_kwargs).resolved()
        self.config = cfg
        self._fit_normalisation(arr)
        dev = pick_device(device)
        self._device = dev
        data = self._normalise(torch.from_numpy(arr), torch.device("cpu"))
        if self.kind == "image":
            data = _pad(data, cfg)
        share = None if time_budget_s is None else time_budget_s / cfg.members
        scorers, summaries = [], []
        for m in range(cfg.members):
            nets, summary = train_networks(
                cfg, data, epochs=epochs, batch_size=batch_size, device=dev,
                seed=seed + MEMBER_SEED_STRIDE * m, time_budget_s=share,
                on_epoch=_progress_printer(m, cfg.members) if progress else None,
            )  # fmt: skip
            scorers.append(export_scorer(cfg, nets))
            summaries.append(summary)
        self._scorer = Ensemble(scorers).to(dev)
        self._set_norm_tensors()
        self._training = _summary_json(seed, summaries)
        self._calibrate(arr)
        self._model_version = None
        return self

    def _calibrate(self, arr: np.ndarray) -> None:
        """Gaussian fits of the training rows' raw scores (section 5.2) + empirical quantiles.

        Each member's s and reconstruction error get one (mu, sigma) each (lists of length K),
        so that a(x) can add their z-scores on a common scale (docs/model.md, deviations 12, 13).
        """
        cfg = self._require_config()
        raw, recon, _, _ = self._raw(arr)  # (n, K) each
        self._calibration = {
            "score": ("two_sided_z" if cfg.two_sided else "one_sided_z")
            + (f" + {cfg.recon_weight:g} recon_z" if cfg.recon_weight else "")
            + (f", mean of {cfg.members} members" if cfg.members > 1 else ""),
            "mu": raw.mean(0).tolist(),
            "sigma": np.maximum(raw.std(0), 1e-12).tolist(),
            "two_sided": cfg.two_sided,
            "recon_weight": cfg.recon_weight,
            "recon_mu": recon.mean(0).tolist(),
            "recon_sigma": np.maximum(recon.std(0), 1e-12).tolist(),
        }
        feature, z = self._feature_z(raw), self._z(raw, recon)
        self._calibration |= {
            "feature_quantiles": {str(q): float(np.quantile(feature, q)) for q in QUANTILES},
            "z_quantiles": {str(q): float(np.quantile(z, q)) for q in QUANTILES},
            "threshold": float(np.quantile(z, cfg.threshold_quantile)),
            "threshold_rule": f"quantile {cfg.threshold_quantile} of a(x) on the training rows",
            "rows": int(raw.shape[0]),
        }

    # --- scoring --------------------------------------------------------------------------------

    def score(self, X: np.ndarray) -> np.ndarray:
        """Anomaly score a(x), float64 (n,), higher = more anomalous. Pure."""
        raw, recon, _, _ = self._raw(X)
        return self._z(raw, recon)

    def score_with_features(
        self, X: np.ndarray, top_k: int = 3
    ) -> tuple[np.ndarray, np.ndarray | None]:
        """Scores plus, for vectors, the (n, top_k) int64 indices of the features with the
        largest |x - x_hat| in normalised units (largest first); None for images."""
        raw, recon, x_hat, x_norm = self._raw(X, keep_recon=True)
        scores = self._z(raw, recon)
        if self.kind != "vector":
            return scores, None
        assert x_hat is not None and x_norm is not None
        k = max(0, min(int(top_k), x_norm.shape[1]))
        err = torch.abs(x_norm - x_hat)
        idx = torch.topk(err, k, dim=1).indices if k else torch.zeros((err.shape[0], 0))
        return scores, idx.to(torch.int64).cpu().numpy()

    def score_details(self, X: np.ndarray) -> dict[str, np.ndarray]:
        """The scores of section 5 for evaluation and ablation, float64 (n,) each, averaged
        over the members: ``feature`` the one-sided z of s(x) (the critic feature mismatch
        alone), ``recon`` mean |x - x_hat| in normalised units, ``z`` a(x)."""
        raw, recon, _, _ = self._raw(X)
        return {"feature": self._feature_z(raw), "recon": recon.mean(1), "z": self._z(raw, recon)}

    def _member_z(self, values: np.ndarray, mu: str, sigma: str) -> np.ndarray:
        """(n, K) member scores standardised by each member's calibrated ``mu`` / ``sigma``."""
        cal = self._calibration
        return (values - np.asarray(cal[mu])) / np.asarray(cal[sigma])

    def _feature_z(self, raw: np.ndarray) -> np.ndarray:
        """Members' mean one-sided z of s, (n, K) -> (n,)."""
        return self._member_z(raw, "mu", "sigma").mean(1)

    def _z(self, raw: np.ndarray, recon: np.ndarray) -> np.ndarray:
        """a(x) from (n, K) member scores: per member the calibrated feature-mismatch z plus
        ``recon_weight`` times the reconstruction-error z, averaged over the members."""
        cal = self._calibration
        z = self._member_z(raw, "mu", "sigma")
        if cal["two_sided"]:
            z = np.abs(z)
        if cal["recon_weight"]:
            z = z + cal["recon_weight"] * self._member_z(recon, "recon_mu", "recon_sigma")
        return z.mean(1)

    def _raw(
        self, X: np.ndarray, keep_recon: bool = False
    ) -> tuple[np.ndarray, np.ndarray, torch.Tensor | None, torch.Tensor | None]:
        """(s, reconstruction error) per row and member, (n, K) each, plus the members' mean
        x_hat and the normalised x when asked."""
        scorer = self._require_fitted()
        arr = self._as_input(X, fitting=False)
        raws: list[np.ndarray] = []
        recons: list[np.ndarray] = []
        hats: list[torch.Tensor] = []
        norms: list[torch.Tensor] = []
        rows, start = SCORE_CHUNK, 0
        bf16 = self._precision == "bfloat16"
        with torch.inference_mode(), torch.autocast(self._device.type, torch.bfloat16, bf16):
            while start < arr.shape[0]:
                chunk = torch.from_numpy(arr[start : start + rows])
                if self._device.type == "cuda":  # one asynchronous copy from page-locked memory
                    chunk = chunk.pin_memory()
                try:
                    xn = self._normalise(chunk, self._device)  # one host-to-device copy
                    s, err, x_hat = scorer(xn, keep_recon)
                except torch.cuda.OutOfMemoryError as exc:
                    # A batch too large for what the device has free now: halve the chunk and
                    # go on; a single row that does not fit is the device's problem, not the
                    # record's (a caller must not dead-letter it).
                    if rows == 1:
                        raise ServiceError(f"{self._device} is out of memory: {exc}") from exc
                    rows = max(1, rows // 2)
                    torch.cuda.empty_cache()
                    continue
                raws.append(s.double().cpu().numpy())
                recons.append(err.double().cpu().numpy())
                if x_hat is not None:
                    hats.append(x_hat.cpu())
                    norms.append(xn.cpu())
                start += len(chunk)
        if not raws:
            k = len(scorer.members)
            return np.zeros((0, k)), np.zeros((0, k)), None, None
        raw, recon = np.concatenate(raws), np.concatenate(recons)
        if not keep_recon:
            return raw, recon, None, None
        return raw, recon, torch.cat(hats), torch.cat(norms)

    # --- normalisation ----------------------------------------------------------------------------

    def _as_input(self, X: np.ndarray, *, fitting: bool) -> np.ndarray:
        arr = np.asarray(X, dtype=np.float32)
        if self.kind == "vector":
            if arr.ndim != 2:
                raise ValueError(f"vector input must be 2-D (n, d), got shape {arr.shape}")
        else:
            if arr.ndim == 3:
                arr = arr[:, None]  # (n, H, W) -> (n, 1, H, W)
            if arr.ndim != 4:
                raise ValueError(f"image input must be (n, H, W) or (n, C, H, W), got {arr.shape}")
        if not fitting and tuple(arr.shape[1:]) != self.input_shape:
            raise ValueError(f"input shape {arr.shape[1:]} does not match model {self.input_shape}")
        if fitting and arr.shape[0] < 2:
            raise ValueError("need at least 2 training rows")
        return np.ascontiguousarray(arr)

    def _fit_normalisation(self, arr: np.ndarray) -> None:
        if self.kind == "vector":
            mean = arr.astype(np.float64).mean(0)
            std = arr.astype(np.float64).std(0)
            std = np.where(std < 1e-8, 1.0, std)  # zero-variance guard (SMD has constant columns)
            self._norm = {
                "type": "standard",
                "mean": mean.tolist(),
                "std": std.tolist(),
                "clip": CLIP,
            }
        else:
            hi = 255.0 if float(arr.max()) > 1.0 else 1.0  # uint8 units or already 0..1
            self._norm = {"type": "range", "lo": 0.0, "hi": hi, "to": [-1.0, 1.0]}
        self._set_norm_tensors()

    def _set_norm_tensors(self) -> None:
        if self._norm["type"] == "standard":
            loc = torch.tensor(self._norm["mean"], dtype=torch.float32)
            scale = torch.tensor(self._norm["std"], dtype=torch.float32)
        else:
            lo, hi = float(self._norm["lo"]), float(self._norm["hi"])
            loc = torch.tensor((lo + hi) / 2, dtype=torch.float32)
            scale = torch.tensor((hi - lo) / 2, dtype=torch.float32)
        self._loc, self._scale = loc.to(self._device), scale.to(self._device)

    def _normalise(self, x: torch.Tensor, device: torch.device) -> torch.Tensor:
        assert self._loc is not None and self._scale is not None
        x = x.to(device, non_blocking=True)
        out = (x - self._loc.to(device)) / self._scale.to(device)
        if self.kind == "vector":
            clip = float(self._norm["clip"])
            return out.clamp_(-clip, clip)
        return out.clamp_(-1.0, 1.0)

    # --- persistence ----------------------------------------------------------------------------

    def _state(self) -> dict[str, torch.Tensor]:
        return dict(self._require_fitted().state_dict())

    def save(self, path: str | Path) -> Path:
        """Write a bundle directory (weights.safetensors + metadata.json); returns the path."""
        cfg = self._require_config()
        self._require_fitted()
        version = write_bundle(
            path,
            tensors=self._state(),
            config=cfg.to_json(),
            input_spec={"kind": cfg.kind, "shape": list(cfg.input_shape), "dtype": "float32"},
            normalisation=self._norm,
            calibration=self._calibration,
            training=self._training,
            metrics=self.metrics,
        )
        self._model_version = version
        return Path(path)

    @classmethod
    def load(
        cls,
        path: str | Path,
        *,
        device: str | torch.device | None = "cpu",
        signing_key: bytes | None = None,
    ) -> AMADetector:
        """Load a bundle (verified; nothing unpickled). Raises model.bundle.BundleError.

        With ``signing_key`` only a bundle signed with it loads (model/bundle.py).
        """
        contents = read_bundle(path, key=signing_key)
        meta = contents.metadata
        try:
            cfg = AMAConfig.from_json(meta["config"])
        except (TypeError, ValueError) as exc:
            raise BundleError(path, "incompatible", f"config not understood ({exc})") from None
        spec = meta["input"]
        if spec.get("kind") != cfg.kind or tuple(spec.get("shape", ())) != cfg.input_shape:
            raise BundleError(path, "incompatible", f"input spec {spec} does not match config")
        det = cls(kind=cfg.kind)
        det.config = cfg
        try:
            scorer = empty_ensemble(cfg)
            scorer.load_state_dict(contents.tensors, strict=True)
        except (RuntimeError, ValueError, KeyError, TypeError) as exc:
            raise BundleError(
                path, "incompatible", f"weights do not fit the config: {exc}"
            ) from None
        det._scorer = scorer
        det._norm = meta["normalisation"]
        det._calibration = meta["calibration"]
        det._training = meta.get("training", {})
        det.metrics = meta.get("metrics", {})
        det._model_version = contents.model_version
        det._set_norm_tensors()
        det.to(pick_device(device))
        return det

    # --- helpers --------------------------------------------------------------------------------

    def _require_config(self) -> AMAConfig:
        if self.config is None:
            raise RuntimeError("detector is not fitted (call fit or load)")
        return self.config

    def _require_fitted(self) -> Ensemble:
        if self._scorer is None:
            raise RuntimeError("detector is not fitted (call fit or load)")
        return self._scorer

    def __repr__(self) -> str:
        shape = self.config.input_shape if self.config else None
        fitted = self._scorer is not None
        return f"AMADetector(kind={self.kind!r}, input_shape={shape}, fitted={fitted})"


def _pad(x: torch.Tensor, cfg: AMAConfig) -> torch.Tensor:
    """Images are trained at 32x32: pad like the Scorer does (background = -1)."""
    from model.networks import PadTo32

    return PadTo32(cfg.input_shape[1:]).forward(x)  # type: ignore[arg-type]


def _summary_json(seed: int, summaries: list[TrainSummary]) -> dict[str, Any]:
    """The whole fit (rows, most epochs any member ran, total iterations and wall time) plus
    each member's own run (held-out rows, whether it stopped early) and per-epoch losses."""
    first = summaries[0]
    members = []
    for s in summaries:
        keys = ("seed", "epochs", "iterations", "wall_s", "holdout_rows", "stopped_early")
        run: dict[str, Any] = {k: getattr(s, k) for k in keys}
        run["history"] = [{k: round(v, 6) for k, v in h.items()} for h in s.history]
        members.append(run)
    return {
        "rows": first.rows,
        "epochs": max(s.epochs for s in summaries),
        "batch_size": first.batch_size,
        "seed": seed,
        "iterations": sum(s.iterations for s in summaries),
        "wall_s": sum(s.wall_s for s in summaries),
        "device": first.device,
        "members": members,
    }


def _progress_printer(member: int, members: int) -> Any:
    """Per-epoch loss line on stderr, prefixed with the member when there are several."""
    prefix = f"member {member + 1}/{members} " if members > 1 else ""

    def show(epoch: int, epochs: int, logs: Mapping[str, float]) -> None:
        width = 24
        done = int(width * (epoch + 1) / epochs)
        bar = "#" * done + "-" * (width - done)
        losses = " ".join(f"{k}={v:.4g}" for k, v in logs.items())
        print(f"{prefix}[{bar}] epoch {epoch + 1}/{epochs} {losses}", file=sys.stderr, flush=True)

    return show
