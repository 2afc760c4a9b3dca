"""The AMA training loop (section 7.2), on already-normalised tensors.

One iteration = (optional) inward negative sampling, 5 critic steps on the same batch, one E+G
step. Kept free of I/O so the detector, the CLI and the tests share it.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from model.losses import autoencoder_loss, critic_loss, omega
from model.networks import AMAConfig, Networks, build_networks

EpochCallback = Callable[[int, int, dict[str, float]], None]


@dataclass
class TrainSummary:
    """What the bundle records about a training run."""

    rows: int
    epochs: int
    batch_size: int
    seed: int
    iterations: int
    wall_s: float
    device: str
    history: list[dict[str, float]] = field(default_factory=list)  # per-epoch mean losses
    holdout_rows: int = 0  # rows kept aside for early stopping (not trained on)
    stopped_early: bool = False  # the held-out error stopped improving before the budget


def _negatives(
    nets: Networks, x: torch.Tensor, cfg: AMAConfig
) -> tuple[torch.Tensor, torch.Tensor]:
    """Inward synthetic anomalies (section 4.5): replace k rows by G(alpha E(x)), label -1.

    Positions are drawn with replacement and E, G run in eval mode without gradient, as in the
    code.
    """
    b = x.shape[0]
    labels = torch.ones(b, device=x.device)
    k = math.floor(cfg.neg_fraction * b)
    if k == 0:
        return x, labels
    idx = torch.randint(0, b, (k,), device=x.device)
    nets.encoder.eval()
    nets.decoder.eval()
    with torch.no_grad():
        z = nets.encoder(x[idx])  # (k, nz)
        alpha = torch.rand(k, 1, device=x.device) * cfg.neg_ratio
        synth = nets.decoder(alpha * z)  # (k, ...)
    nets.encoder.train()
    nets.decoder.train()
    x = x.clone()
    x[idx] = synth
    labels[idx] = -1.0
    return x, labels


DEFAULT_ITERATIONS = 800  # AE iterations per member of the default fit (docs/model.md, budget)
CHECK_EVERY = 50  # iterations between held-out checks
PATIENCE = 4  # held-out checks without a MIN_GAIN relative improvement end the fit
MIN_GAIN = 0.01
HOLDOUT_MIN_ROWS = 1000  # smaller sets train on every row: the budget alone bounds their cost
HOLDOUT_FRACTION = 0.1
HOLDOUT_MAX_ROWS = 2000


def default_batch_size(rows: int) -> int:
    """128 rows, fewer for small sets so they still see many distinct batches per epoch."""
    return min(128, max(16, rows // 8))


@dataclass(frozen=True)
class _Plan:
    """Where a run stops and when its schedule moves, all in AE iterations."""

    epochs: int  # most epochs the run may start
    total: int  # most AE iterations
    milestones: list[int]  # the learning rate drops x0.1 after these many iterations
    neg_from: int  # first iteration (0-based) that uses inward negatives


def _plan(cfg: AMAConfig, epochs: int | None, per_epoch: int) -> _Plan:
    """Explicit ``epochs``: full passes, schedule at epoch boundaries (section 7.2). None: the
    default budget, the same schedule as fractions of DEFAULT_ITERATIONS."""
    fracs = cfg.lr_milestones
    if epochs is None:
        total = DEFAULT_ITERATIONS
        marks = {max(1, round(f * total)) for f in fracs}
        neg_from = math.floor(cfg.neg_warmup * total) + 1
        return _Plan(math.ceil(total / per_epoch), total, sorted(marks), neg_from)
    marks = {max(1, round(f * epochs)) * per_epoch for f in fracs if f * epochs >= 1}
    neg_from = (math.floor(cfg.neg_warmup * epochs) + 1) * per_epoch  # epoch index > 10 of 100
    return _Plan(epochs, epochs * per_epoch, sorted(marks), neg_from)


def _split_holdout(
    data: torch.Tensor, epochs: int | None, gen: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The default fit keeps a random slice of the rows aside to decide when to stop."""
    n = data.shape[0]
    if epochs is not None or n < HOLDOUT_MIN_ROWS:
        return data, None
    k = min(HOLDOUT_MAX_ROWS, int(n * HOLDOUT_FRACTION))
    perm = torch.randperm(n, generator=gen)
    return data[perm[k:]], data[perm[:k]]


def _holdout_error(nets: Networks, rows: torch.Tensor, device: torch.device) -> float:
    """Mean |x - G(E(x))| on the held-out rows, E and G in eval mode."""
    nets.encoder.eval()
    nets.decoder.eval()
    with torch.no_grad():
        x = rows.to(device)
        err = float(torch.mean(torch.abs(x - nets.decoder(nets.encoder(x)))))
    nets.encoder.train()
    nets.decoder.train()
    return err


def train_networks(
    cfg: AMAConfig,
    data: torch.Tensor,
    *,
    epochs: int | None = None,
    batch_size: int | None = None,
    device: torch.device,
    seed: int,
    on_epoch: EpochCallback | None = None,
    time_budget_s: float | None = None,
) -> tuple[Networks, TrainSummary]:
    """Train E, G, D on normalised rows ``data`` ((N, d) or (N, C, 32, 32)) and return them.

    ``epochs=None`` is the default budget: at most DEFAULT_ITERATIONS AE iterations, and with
    at least HOLDOUT_MIN_ROWS rows a held-out slice of them (10%, at most 2,000) is not trained
    on; training ends early once its reconstruction error has not improved by 1% for
    PATIENCE checks, CHECK_EVERY iterations apart. So the cost is bounded whatever N is. An
    explicit ``epochs`` trains that many full passes on every row. ``batch_size=None`` is
    :func:`default_batch_size`. The batch is clipped to N when N < batch_size so tiny data sets
    still train; the last incomplete batch is dropped (as in the code). With ``time_budget_s``,
    training stops after the first epoch that ends past the budget (the retrain job runs on a
    schedule and must finish); the summary's ``epochs`` is then the number actually run.
    """
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    rows = data.shape[0]
    data, holdout = _split_holdout(data, epochs, gen)
    nets = build_networks(cfg)
    enc, dec, critic = (m.to(device).train() for m in (nets.encoder, nets.decoder, nets.critic))
    opt_d = torch.optim.Adam(critic.parameters(), lr=cfg.lr, betas=cfg.betas_d)
    opt_g = torch.optim.Adam(dec.parameters(), lr=cfg.lr, betas=cfg.betas_g)
    opt_e = torch.optim.Adam(enc.parameters(), lr=cfg.lr, betas=cfg.betas_e)
    n = data.shape[0]
    bs = max(2, min(batch_size or default_batch_size(n), n))
    plan = _plan(cfg, epochs, n // bs)
    scheds = [
        torch.optim.lr_scheduler.MultiStepLR(o, plan.milestones, 0.1) for o in (opt_d, opt_g, opt_e)
    ]
    t0 = time.perf_counter()
    history: list[dict[str, float]] = []
    iters = 0
    done = 0
    best, stale, stopped = math.inf, 0, False
    for epoch in range(plan.epochs):
        perm = torch.randperm(n, generator=gen)
        sums: dict[str, float] = {}
        steps = 0
        for start in range(0, n - bs + 1, bs):
            x = data[perm[start : start + bs]].to(device)
            if cfg.neg_sampling and iters >= plan.neg_from:
                x, labels = _negatives(nets, x, cfg)
            else:
                labels = torch.ones(bs, device=device)
            w = omega(labels, cfg.anom_lambda)
            # x_hat is identical across the critic steps (E, G unchanged, same batch): compute it
            # once (section 7.4's "easy saving"; BN running stats get one update per iteration).
            with torch.no_grad():
                x_hat = dec(enc(x))
            for p in critic.parameters():
                p.requires_grad_(True)
            for _ in range(cfg.critic_steps):
                loss_d, logs_d = critic_loss(
                    critic, x, x_hat, w, gp_lambda=cfg.gp_lambda, gp_mode=cfg.gp_mode
                )
                opt_d.zero_grad(set_to_none=True)
                loss_d.backward()
                opt_d.step()
            for p in critic.parameters():  # freeze D for the AE step (its grads are unused)
                p.requires_grad_(False)
            z = enc(x)
            loss_ae, logs_ae = autoencoder_loss(
                critic,
                x,
                z,
                dec(z),
                w,
                labels > 0,
                reg_lambda=cfg.reg_lambda,
                recon_lambda=cfg.recon_lambda,
            )
            opt_e.zero_grad(set_to_none=True)
            opt_g.zero_grad(set_to_none=True)
            loss_ae.backward()
            opt_e.step()
            opt_g.step()
            for s in scheds:
                s.step()
            for key, val in {**logs_d, **logs_ae}.items():
                sums[key] = sums.get(key, 0.0) + val
            steps += 1
            iters += 1
            if holdout is not None and iters % CHECK_EVERY == 0:
                err = _holdout_error(nets, holdout, device)
                best, stale = (err, 0) if err < best * (1 - MIN_GAIN) else (best, stale + 1)
                stopped = stale >= PATIENCE
            if stopped or iters >= plan.total:
                break
        logs = {k: v / max(steps, 1) for k, v in sums.items()}
        history.append(logs)
        if on_epoch is not None:
            on_epoch(epoch, plan.epochs, logs)
        done = epoch + 1
        if stopped or iters >= plan.total:
            break
        if time_budget_s is not None and time.perf_counter() - t0 > time_budget_s:
            break
    for p in critic.parameters():
        p.requires_grad_(True)
    for m in (enc, dec, critic):
        m.eval()
    summary = TrainSummary(
        rows=rows,
        epochs=done,
        batch_size=bs,
        seed=seed,
        iterations=iters,
        wall_s=time.perf_counter() - t0,
        device=str(device),
        history=history,
        holdout_rows=0 if holdout is None else int(holdout.shape[0]),
        stopped_early=stopped,
    )
    return nets, summary
