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


def train_networks(
    cfg: AMAConfig,
    data: torch.Tensor,
    *,
    epochs: int,
    batch_size: int,
    device: torch.device,
    seed: int,
    on_epoch: EpochCallback | None = None,
    time_budget_s: float | None = None,
) -> tuple[Networks, TrainSummary]:
    """Train E, G, D on normalised rows ``data`` ((N, d) or (N, C, 32, 32)) and return them.

    The batch is clipped to N when N < batch_size so tiny data sets still train; the last
    incomplete batch is dropped (as in the code). With ``time_budget_s``, training stops after
    the first epoch that ends past the budget (the retrain job runs on a schedule and must
    finish); the summary's ``epochs`` is then the number actually run.
    """
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    nets = build_networks(cfg)
    enc, dec, critic = (m.to(device).train() for m in (nets.encoder, nets.decoder, nets.critic))
    opt_d = torch.optim.Adam(critic.parameters(), lr=cfg.lr, betas=cfg.betas_d)
    opt_g = torch.optim.Adam(dec.parameters(), lr=cfg.lr, betas=cfg.betas_g)
    opt_e = torch.optim.Adam(enc.parameters(), lr=cfg.lr, betas=cfg.betas_e)
    milestones = sorted({max(1, round(f * epochs)) for f in cfg.lr_milestones if f * epochs >= 1})
    scheds = [
        torch.optim.lr_scheduler.MultiStepLR(o, milestones, 0.1) for o in (opt_d, opt_g, opt_e)
    ]
    n = data.shape[0]
    bs = max(2, min(batch_size, n))
    warm = math.floor(cfg.neg_warmup * epochs)
    t0 = time.perf_counter()
    history: list[dict[str, float]] = []
    iters = 0
    done = 0
    for epoch in range(epochs):
        perm = torch.randperm(n, generator=gen)
        sums: dict[str, float] = {}
        steps = 0
        for start in range(0, n - bs + 1, bs):
            x = data[perm[start : start + bs]].to(device)
            if cfg.neg_sampling and epoch > warm:  # e.g. epoch index > 10 of 100
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
            for key, val in {**logs_d, **logs_ae}.items():
                sums[key] = sums.get(key, 0.0) + val
            steps += 1
            iters += 1
        for s in scheds:
            s.step()
        logs = {k: v / max(steps, 1) for k, v in sums.items()}
        history.append(logs)
        if on_epoch is not None:
            on_epoch(epoch, epochs, logs)
        done = epoch + 1
        if time_budget_s is not None and time.perf_counter() - t0 > time_budget_s:
            break
    for p in critic.parameters():
        p.requires_grad_(True)
    for m in (enc, dec, critic):
        m.eval()
    summary = TrainSummary(
        rows=n,
        epochs=done,
        batch_size=bs,
        seed=seed,
        iterations=iters,
        wall_s=time.perf_counter() - t0,
        device=str(device),
        history=history,
    )
    return nets, summary
