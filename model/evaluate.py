"""The quality evaluation behind ``ama-stream eval`` (protocol and suites: docs/model.md).

Protocol (one-class, identical for every detector): for each seed, a random 60% of the normal
rows train the detector; the test set is the other 40% of normals plus every anomaly; features
are standardised with training-row statistics; AUROC and AUPRC (average precision, anomaly =
positive class) are reported as mean and std over seeds.

Work is split into independent jobs (suite, data set, seed, detector). Each job's result is
cached as one JSON file keyed by a hash of everything that defines it, so a rerun only computes
what changed, and jobs can run in parallel worker processes (one torch thread each).
"""

from __future__ import annotations

import hashlib
import inspect
import json
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import asdict, dataclass, field
from multiprocessing import get_context
from pathlib import Path
from typing import Any

import numpy as np

from model.data import load_idx
from model.networks import FAITHFUL, Kind
from model.temporal import window_rows

ADBENCH = [
    "2_annthyroid", "4_breastw", "6_cardio", "14_glass", "18_Ionosphere", "20_letter",
    "21_Lymphography", "25_musk", "28_pendigits", "29_Pima", "30_satellite", "31_satimage-2",
    "32_shuttle", "38_thyroid", "40_vowels", "42_WBC", "45_wine",
]  # fmt: skip
SMD = ["machine-1-6", "machine-1-7", "machine-2-1", "machine-2-2", "machine-2-7", "machine-2-8"]
BASELINES = ["IForest", "ECOD", "KNN", "AutoEncoder", "DeepSVDD"]
SEEDS = (0, 1, 2)
SMD_WINDOW = 5  # short sliding window (steps) for the windowed SMD variant

# AMA is evaluated with the default fit (its iteration budget and early stopping, docs/model.md)
# unless a job's options give epochs and batch. Each variant is one fit; its jobs also report
# the scores that need no second fit (the critic term alone, the reconstruction error alone),
# so the selection in model/selection.py chooses among fits and score compositions alike.
AMA_VARIANTS: dict[str, dict[str, Any]] = {
    "AMA": {},
    "AMA-single": {"members": 1},
    "AMA-noneg": {"neg_sampling": False},
    "AMA-noreg": {"reg_lambda": 0.0},
    "AMA-faithful": FAITHFUL,
    # candidate rules that size the networks from the training rows (no labels): their config
    # is computed per job by size_rules
    "AMA-nz90": {},
    "AMA-narrow": {},
    "AMA-nz90-narrow": {},
}
SIZED = ("AMA-nz90", "AMA-narrow", "AMA-nz90-narrow")
# The model sources an AMA result depends on (model/temporal.py builds the windowed inputs): a
# change to any of them invalidates the cached AMA results of both evaluations, this one and
# the stream suite's (baselines depend only on the job and the pinned packages).
AMA_SOURCES = ("detector", "networks", "train", "losses", "temporal")
MNIST_AMA = {"epochs": 40, "batch": 32}  # ~720 AE iterations on the ~600 training images


@dataclass(frozen=True)
class Job:
    """One unit of work: train one detector on one split and score its test set."""

    suite: str  # adbench | mnist | smd | smd-win
    dataset: str
    seed: int
    detector: str  # AMA variant name or a baseline name
    options: dict[str, Any] = field(default_factory=dict)

    def key(self) -> str:
        blob = json.dumps(asdict(self), sort_keys=True).encode()
        if self.detector.startswith("AMA"):
            blob += model_code_hash().encode()
        if self.detector in SIZED:
            rules = (size_rules, latent_size_from_spectrum)
            blob += "".join(inspect.getsource(f) for f in rules).encode()
        return (
            f"{self.suite}.{self.dataset}.{self.seed}.{self.detector}."
            + hashlib.sha256(blob).hexdigest()[:10]
        )


def model_code_hash() -> str:
    """A hash of the AMA_SOURCES files: part of every cached AMA result's key."""
    import model

    root = Path(model.__file__).parent
    blob = b"".join((root / f"{m}.py").read_bytes() for m in AMA_SOURCES)
    return hashlib.sha256(blob).hexdigest()[:12]


def size_rules(detector: str, X: np.ndarray) -> dict[str, Any]:
    """The config a sizing candidate gives for training rows ``X``: ``nz90`` the latent size
    from the spectrum, ``narrow`` widths from the dimension (hidden the power of two at or
    above 8 d within [32, 256], critic no wider than that)."""
    cfg: dict[str, Any] = {}
    if "nz90" in detector:
        cfg["nz"] = latent_size_from_spectrum(X)
    if "narrow" in detector:
        d = int(np.prod(X.shape[1:]))
        hidden = min(256, max(32, 1 << (8 * d - 1).bit_length()))
        cfg |= {"hidden": hidden, "critic_hidden": min(128, hidden)}
    return cfg


def latent_size_from_spectrum(X: np.ndarray, share: float = 0.9) -> int:
    """A candidate rule for the latent size, from the training rows alone (no labels): the
    number of principal components that carry ``share`` of the standardised rows' variance,
    kept within [2, 64] and at most half of d, so the code can neither collapse to a point nor
    copy the input."""
    Z = X.reshape(len(X), -1).astype(np.float64)
    k = components_for(np.linalg.svd(Z - Z.mean(0), compute_uv=False), share)
    return min(64, max(2, k), max(2, Z.shape[1] // 2))


def components_for(singular_values: np.ndarray, share: float) -> int:
    """How many leading principal components carry ``share`` of the variance."""
    var = np.asarray(singular_values, np.float64) ** 2
    return int(np.searchsorted(np.cumsum(var) / max(float(var.sum()), 1e-300), share) + 1)


# ---------------------------------------------------------------------------------------------
# data and splits
# ---------------------------------------------------------------------------------------------


def load_adbench(root: Path, name: str) -> tuple[np.ndarray, np.ndarray]:
    with np.load(root / "adbench" / f"{name}.npz", allow_pickle=False) as z:
        return np.asarray(z["X"], np.float64), np.asarray(z["y"], np.int64)


def load_mnist(root: Path) -> tuple[np.ndarray, np.ndarray]:
    images = load_idx(root / "mnist" / "t10k-images-idx3-ubyte.gz")
    labels = load_idx(root / "mnist" / "t10k-labels-idx1-ubyte.gz")
    return images.astype(np.float32), labels.astype(np.int64)


def one_class_split(
    X: np.ndarray, y: np.ndarray, seed: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """60% of normals (y == 0) train; test = other 40% of normals + every anomaly."""
    rng = np.random.default_rng(seed)
    normal = np.flatnonzero(y == 0)
    perm = rng.permutation(normal)
    n_train = round(0.6 * len(normal))
    tr = np.sort(perm[:n_train])
    te = np.sort(np.concatenate([perm[n_train:], np.flatnonzero(y != 0)]))
    return X[tr], X[te], (y[te] != 0).astype(np.int64)


def feature_scale(train: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-feature mean and std of the training rows; a zero std counts as 1 (constant
    columns), the detector's own rule."""
    std = train.std(0)
    return train.mean(0), np.where(std < 1e-8, 1.0, std)


def standardise(train: np.ndarray, test: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    mean, std = feature_scale(train)
    return ((train - mean) / std).astype(np.float32), ((test - mean) / std).astype(np.float32)


def windows(X: np.ndarray, w: int) -> np.ndarray:
    """(n, d) -> (n - w + 1, w * d): row i holds steps i .. i + w - 1 (label = last step); the
    stream suite's windows (model/temporal.py) without the padded first w - 1 rows."""
    return window_rows(X[:0], X, w)[w - 1 :]


def _job_data(job: Job, root: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    if job.suite == "adbench":
        X, y = load_adbench(root, job.dataset)
        tr, te, yte = one_class_split(X, y, job.seed)
        return (*standardise(tr, te), yte)
    if job.suite == "mnist":
        X, labels = load_mnist(root)
        y = (labels != int(job.dataset)).astype(np.int64)
        return one_class_split(X, y, job.seed)
    if job.suite in ("smd", "smd-win"):
        tr = np.load(root / "smd" / "train" / f"{job.dataset}.npy").astype(np.float64)
        te = np.load(root / "smd" / "test" / f"{job.dataset}.npy").astype(np.float64)
        yte = np.loadtxt(root / "smd" / "test_label" / f"{job.dataset}.txt", dtype=np.int64)
        tr_s, te_s = standardise(tr, te)
        if job.suite == "smd-win":
            tr_s, te_s, yte = (
                windows(tr_s, SMD_WINDOW),
                windows(te_s, SMD_WINDOW),
                yte[SMD_WINDOW - 1 :],
            )
        cap = job.options.get("train_cap")
        if cap and len(tr_s) > cap:  # evenly spaced rows keep the time coverage
            tr_s = tr_s[np.linspace(0, len(tr_s) - 1, cap).astype(int)]
        return tr_s, te_s, yte
    raise ValueError(f"unknown suite {job.suite}")


# ---------------------------------------------------------------------------------------------
# detectors
# ---------------------------------------------------------------------------------------------


def _run_ama(job: Job, tr: np.ndarray, te: np.ndarray) -> tuple[dict[str, np.ndarray], float]:
    from model.detector import AMADetector

    kind: Kind = "image" if job.suite == "mnist" else "vector"
    cfg = {**AMA_VARIANTS.get(job.detector, {}), **job.options.get("config", {})}
    cfg |= size_rules(job.detector, tr)
    det = AMADetector(kind=kind, **cfg)
    epochs, batch = job.options.get("epochs"), job.options.get("batch")
    t0 = time.perf_counter()
    det.fit(tr, epochs=epochs, batch_size=batch, seed=job.seed, progress=False, device="cpu")
    fit_s = time.perf_counter() - t0
    details = det.score_details(te)
    # The same model scoring in bfloat16 (model.precision): what a worker on a CPU or GPU with
    # native bf16 serves with `auto`; paired with the float32 score, so the table shows exactly
    # what the precision changes.
    half = det.to("cpu", "bfloat16").score(te)
    det.to("cpu", "float32")
    scores = {"z": details["z"], "raw": details["feature"], "recon": details["recon"], "bf16": half}
    return scores, fit_s


def _run_baseline(job: Job, tr: np.ndarray, te: np.ndarray) -> tuple[dict[str, np.ndarray], float]:
    name = job.detector
    epochs = int(job.options.get("epochs", 30))
    model: Any
    if name == "IForest":
        from pyod.models.iforest import IForest

        model = IForest(n_estimators=200, random_state=job.seed)
    elif name == "ECOD":
        from pyod.models.ecod import ECOD

        model = ECOD()
    elif name == "KNN":
        from pyod.models.knn import KNN

        model = KNN(n_neighbors=5)
    elif name == "AutoEncoder":
        from pyod.models.auto_encoder import AutoEncoder

        model = AutoEncoder(epoch_num=epochs, random_state=job.seed, verbose=0, device="cpu")
    elif name == "DeepSVDD":
        from pyod.models.deep_svdd import DeepSVDD

        model = DeepSVDD(n_features=tr.shape[1], epochs=epochs, random_state=job.seed, verbose=0)
    else:
        raise ValueError(f"unknown detector {name}")
    X_tr, X_te = tr.reshape(len(tr), -1), te.reshape(len(te), -1)
    if job.suite == "mnist":  # pixels to [0, 1] for the baselines
        X_tr, X_te = X_tr / 255.0, X_te / 255.0
        if name == "DeepSVDD":
            model.n_features = X_tr.shape[1]
    t0 = time.perf_counter()
    model.fit(X_tr)
    fit_s = time.perf_counter() - t0
    return {"score": np.asarray(model.decision_function(X_te), np.float64)}, fit_s


def _metrics(y: np.ndarray, s: np.ndarray) -> dict[str, float]:
    from sklearn.metrics import average_precision_score, precision_recall_curve, roc_auc_score

    s = np.nan_to_num(s, nan=0.0, posinf=1e300, neginf=-1e300)
    prec, rec, _ = precision_recall_curve(y, s)
    f1 = np.max(2 * prec * rec / np.maximum(prec + rec, 1e-12))
    return {
        "auroc": float(roc_auc_score(y, s)),
        "auprc": float(average_precision_score(y, s)),
        "best_f1": float(f1),
    }


def run_job(job: Job, data_dir: str) -> dict[str, Any]:
    """Run one job in this process; returns a JSON-able result."""
    import torch

    torch.set_num_threads(1)
    root = Path(data_dir)
    tr, te, yte = _job_data(job, root)
    runner: Callable[..., tuple[dict[str, np.ndarray], float]]
    runner = _run_ama if job.detector.startswith("AMA") else _run_baseline
    t0 = time.perf_counter()
    scores, fit_s = runner(job, tr, te)
    score_s = time.perf_counter() - t0 - fit_s
    return {
        "job": asdict(job),
        "fit_s": fit_s,
        "score_s": score_s,
        "n_train": len(tr),
        "n_test": len(te),
        "metrics": {k: _metrics(yte, v) for k, v in scores.items()},
    }


# ---------------------------------------------------------------------------------------------
# job lists, running, caching
# ---------------------------------------------------------------------------------------------


def plan(quick: bool, suites: Iterable[str], detectors: Iterable[str] | None = None) -> list[Job]:
    """All jobs for the chosen suites. ``quick``: seed 0, fewer data sets / digits / machines."""
    wanted = set(detectors) if detectors else None
    jobs: list[Job] = []
    seeds = (0,) if quick else SEEDS

    def add(job: Job) -> None:
        if wanted is None or job.detector in wanted:
            jobs.append(job)

    suites = set(suites)
    if "adbench" in suites:
        names = ADBENCH[:6] if quick else ADBENCH
        for name in names:
            for seed in seeds:
                for det in ["AMA", *BASELINES]:
                    add(Job("adbench", name, seed, det))
                if seed == 0:  # ablations retrain: seed 0 only (CPU budget, docs/model.md)
                    for variant in [v for v in AMA_VARIANTS if v != "AMA"]:
                        add(Job("adbench", name, seed, variant))
    if "mnist" in suites:
        digits = range(3) if quick else range(10)
        for c in digits:
            for det in ["AMA", *BASELINES]:
                add(Job("mnist", str(c), 0, det, MNIST_AMA if det == "AMA" else {}))
            if c in (0, 1, 2):  # retrained ablations on three digits only (CPU budget)
                for det in ("AMA-noneg", "AMA-noreg", "AMA-faithful"):
                    add(Job("mnist", str(c), 0, det, MNIST_AMA))
    if "smd" in suites:
        machines = SMD[:2] if quick else SMD
        for m in machines:
            for suite in ("smd", "smd-win"):
                for det in ("AMA", "AMA-faithful"):
                    add(Job(suite, m, 0, det, {"train_cap": 8000}))
                for det in BASELINES:
                    opts: dict[str, Any] = {"train_cap": 8000}
                    if det in ("AutoEncoder", "DeepSVDD"):
                        opts["epochs"] = 10
                    add(Job(suite, m, 0, det, opts))
    return jobs


def _init_worker() -> None:
    import torch

    torch.set_num_threads(1)


def run_all(
    jobs: list[Job],
    data_dir: Path,
    cache_dir: Path,
    *,
    workers: int = 1,
    log: Callable[[str], None] = print,
    run: bool = True,
) -> list[dict[str, Any]]:
    """Run every job not already in the cache; return all results (cached + new)."""
    cache_dir.mkdir(parents=True, exist_ok=True)
    results: dict[str, dict[str, Any]] = {}
    todo: list[Job] = []
    for job in jobs:
        f = cache_dir / f"{job.key()}.json"
        if f.is_file():
            results[job.key()] = json.loads(f.read_text())
        else:
            todo.append(job)
    log(f"{len(jobs)} jobs, {len(jobs) - len(todo)} cached, {len(todo) if run else 0} to run")
    # Expensive first so the pool drains evenly.
    # The goal metric first (ADBench AMA), then MNIST, then SMD, so a partial run is useful.
    order = {"adbench": 0, "mnist": 1, "smd": 2, "smd-win": 3}
    todo.sort(key=lambda j: (order[j.suite], j.detector != "AMA", j.seed))

    def store(job: Job, res: dict[str, Any]) -> None:
        results[job.key()] = res
        (cache_dir / f"{job.key()}.json").write_text(json.dumps(res))
        m = res["metrics"]
        first = m.get("z", m.get("score", {}))
        log(
            f"done {job.suite}/{job.dataset}/s{job.seed}/{job.detector}: "
            f"auroc={first.get('auroc', float('nan')):.4f} fit={res['fit_s']:.1f}s"
        )

    if not run:
        return [results[j.key()] for j in jobs if j.key() in results]
    if workers <= 1:
        for job in todo:
            store(job, run_job(job, str(data_dir)))
    else:
        ctx = get_context("spawn")
        with ProcessPoolExecutor(workers, mp_context=ctx, initializer=_init_worker) as pool:
            futures = {pool.submit(run_job, job, str(data_dir)): job for job in todo}
            for fut in as_completed(futures):
                store(futures[fut], fut.result())
    return [results[j.key()] for j in jobs]
