"""AMA objectives (section 4): mirrored Wasserstein critic loss, gradient penalty, AE loss.

All means divide by the whole batch B (never by the size of a sub-group), as in the code. The
per-sample weight is omega = +1 for normal rows and -lambda_a for (synthetic) anomalies.
"""

from __future__ import annotations

import torch
from torch import nn

from model.networks import GPMode


def pair(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """[x ; y]: concatenation on the feature / channel axis, x always first."""
    return torch.cat([x, y], dim=1)  # (B, d) -> (B, 2d) or (B, C, H, W) -> (B, 2C, H, W)


def omega(labels: torch.Tensor, anom_lambda: float) -> torch.Tensor:
    """+1 for label +1 (normal), -lambda_a for label -1 (anomaly)."""
    return torch.where(labels > 0, torch.ones_like(labels), -anom_lambda * torch.ones_like(labels))


def gradient_penalty(
    critic: nn.Module, x: torch.Tensor, x_hat: torch.Tensor, mode: GPMode
) -> torch.Tensor:
    """WGAN-GP on [x ; a x + (1 - a) x_hat] w.r.t. the whole pair (section 4.2).

    ``pixel``: the L2 norm over the channel axis only, averaged over samples and pixels (the
    official code's quirk, faithful for images). ``sample``: one norm per sample over all inputs
    (textbook; what the pixel mode reduces to for vectors).
    """
    a = torch.rand((x.shape[0],) + (1,) * (x.dim() - 1), device=x.device, dtype=x.dtype)
    mix = a * x + (1 - a) * x_hat.detach()
    u = pair(x, mix).detach().requires_grad_(True)
    out = critic(u)
    (grad,) = torch.autograd.grad(out.sum(), u, create_graph=True)
    if mode == "pixel" and grad.dim() == 4:
        norms = grad.norm(2, dim=1)  # (B, H, W)
    else:
        norms = grad.flatten(1).norm(2, dim=1)  # (B,)
    return ((norms - 1.0) ** 2).mean()


def critic_loss(
    critic: nn.Module,
    x: torch.Tensor,
    x_hat: torch.Tensor,
    w: torch.Tensor,
    *,
    gp_lambda: float,
    gp_mode: GPMode,
) -> tuple[torch.Tensor, dict[str, float]]:
    """L_D = -mean(w D[x;x]) + mean(w D[x;x_hat]) + lambda_gp GP   (section 4.1)."""
    x_hat = x_hat.detach()
    b = x.shape[0]
    scores = critic(torch.cat([pair(x, x), pair(x, x_hat)]))  # (2B,): one SN power iteration
    d_mirror, d_recon = scores[:b], scores[b:]
    wass = -(w * d_mirror).mean() + (w * d_recon).mean()
    gp = gradient_penalty(critic, x, x_hat, gp_mode) if gp_lambda > 0 else torch.zeros(())
    loss = wass + gp_lambda * gp
    return loss, {"d_wass": float(wass.detach()), "gp": float(gp.detach())}


def autoencoder_loss(
    critic: nn.Module,
    x: torch.Tensor,
    z: torch.Tensor,
    x_hat: torch.Tensor,
    w: torch.Tensor,
    normal: torch.Tensor,
    *,
    reg_lambda: float,
    recon_lambda: float = 0.0,
) -> tuple[torch.Tensor, dict[str, float]]:
    """L_AE = -mean(w D[x;x_hat]) + lambda_reg mean_{normal} ||z||_2   (sections 4.3, 4.4).

    No pixel reconstruction term by default (faithful). ``recon_lambda`` > 0 adds an L1 term on
    the normal rows (a documented deviation, see docs/model.md). ``normal`` is the boolean mask
    of label +1 rows.
    """
    adv = -(w * critic(pair(x, x_hat))).mean()
    reg = z[normal].norm(2, dim=1).mean() if normal.any() else torch.zeros((), device=x.device)
    loss = adv + reg_lambda * reg
    logs = {"ae_adv": float(adv.detach()), "latent_norm": float(reg.detach())}
    if recon_lambda > 0:
        per_row = (x - x_hat).abs().flatten(1).mean(1)  # (B,)
        l1 = (per_row * normal).sum() / x.shape[0]  # mean over the whole batch, normals only
        loss = loss + recon_lambda * l1
        logs["l1"] = float(l1.detach())
    return loss, logs
