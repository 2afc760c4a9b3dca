"""Loss shapes and gradients on tiny inputs; GP and spectral norm bound the critic."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from model.losses import autoencoder_loss, critic_loss, gradient_penalty, omega, pair
from model.networks import AMAConfig, build_networks
from model.train import train_networks

torch.set_num_threads(1)

CONFIGS = [
    AMAConfig(kind="vector", input_shape=(5,), hidden=16, critic_hidden=16, feat_dim=8),
    AMAConfig(kind="image", input_shape=(1, 28, 28)),
    AMAConfig(kind="image", input_shape=(3, 32, 32), arch="resnet"),
]


def _batch(cfg: AMAConfig, b: int = 4) -> torch.Tensor:
    shape = (b, *cfg.input_shape) if cfg.kind == "vector" else (b, cfg.input_shape[0], 32, 32)
    return torch.randn(shape).clamp(-1, 1)


@pytest.mark.parametrize("cfg", CONFIGS, ids=["vector", "image-dcgan", "image-resnet"])
def test_loss_shapes_and_gradients(cfg: AMAConfig) -> None:
    torch.manual_seed(0)
    cfg = cfg.resolved()
    nets = build_networks(cfg)
    x = _batch(cfg)
    z = nets.encoder(x)
    assert z.shape == (4, cfg.nz)
    x_hat = nets.decoder(z)
    assert x_hat.shape == x.shape
    labels = torch.tensor([1.0, 1.0, -1.0, 1.0])
    w = omega(labels, 5.0)
    assert w.tolist() == [1.0, 1.0, -5.0, 1.0]
    assert nets.critic.features(pair(x, x)).shape == (4, cfg.feat_dim)
    loss_d, logs = critic_loss(nets.critic, x, x_hat, w, gp_lambda=10.0, gp_mode=cfg.gp_mode)
    assert loss_d.shape == () and torch.isfinite(loss_d) and logs["gp"] >= 0
    loss_d.backward()
    assert all(
        p.grad is not None and torch.isfinite(p.grad).all() for p in nets.critic.parameters()
    )
    assert all(p.grad is None for p in nets.encoder.parameters())  # x_hat detached for D
    for p in nets.critic.parameters():
        p.grad = None
        p.requires_grad_(False)
    loss_ae, logs = autoencoder_loss(
        nets.critic, x, z, x_hat, w, labels > 0, reg_lambda=1.0, recon_lambda=0.5
    )
    assert loss_ae.shape == () and set(logs) == {"ae_adv", "latent_norm", "l1"}
    loss_ae.backward()
    assert all(p.grad is not None for p in nets.encoder.parameters())
    assert all(p.grad is not None for p in nets.decoder.parameters())
    assert all(p.grad is None for p in nets.critic.parameters())


def test_latent_regulariser_is_mean_norm_over_normals() -> None:
    critic = nn.Linear(4, 1)
    x = torch.zeros(3, 2)
    z = torch.tensor([[3.0, 4.0], [0.0, 1.0], [100.0, 0.0]])
    normal = torch.tensor([True, True, False])
    _, logs = autoencoder_loss(critic, x, z, x, torch.ones(3), normal, reg_lambda=1.0)
    assert logs["latent_norm"] == pytest.approx(3.0)  # (5 + 1) / 2, anomaly excluded


class _Linear(nn.Module):
    """A linear critic D(u) = <w, u> with a known gradient."""

    def __init__(self, weight: torch.Tensor) -> None:
        super().__init__()
        self.weight = weight

    def forward(self, u: torch.Tensor) -> torch.Tensor:
        return (u * self.weight).flatten(1).sum(1)


def test_gradient_penalty_values() -> None:
    """Per-sample norm for vectors; per-pixel channel norm for images (the code's quirk)."""
    x, xh = torch.randn(8, 3), torch.randn(8, 3)
    unit = torch.tensor([0.6, 0.0, 0.0, 0.8, 0.0, 0.0])  # ||w|| = 1 -> penalty 0
    assert gradient_penalty(_Linear(unit), x, xh, "sample").item() == pytest.approx(0.0, abs=1e-6)
    assert gradient_penalty(_Linear(2 * unit), x, xh, "sample").item() == pytest.approx(1.0)
    # images: every pixel's 2-channel gradient has norm 1 -> pixel mode 0, sample mode (16-1)^2
    img, img_hat = torch.randn(4, 1, 16, 16), torch.randn(4, 1, 16, 16)
    w = torch.zeros(1, 2, 16, 16)
    w[:, 0], w[:, 1] = 0.6, 0.8
    assert gradient_penalty(_Linear(w), img, img_hat, "pixel").item() == pytest.approx(
        0.0, abs=1e-6
    )
    assert gradient_penalty(_Linear(w), img, img_hat, "sample").item() == pytest.approx(225.0)


@pytest.mark.parametrize("kind", ["vector", "image"])
def test_spectral_norm_bounds_lipschitz(kind: str) -> None:
    """With SN on every layer (after the power iteration has converged) |D(u)-D(v)| <= |u-v|."""
    torch.manual_seed(0)
    shape: tuple[int, ...] = (10,) if kind == "vector" else (1, 28, 28)
    cfg = AMAConfig(kind=kind, input_shape=shape, critic_hidden=32).resolved()  # type: ignore[arg-type]
    critic = build_networks(cfg).critic
    with torch.no_grad():  # inflate the raw weights: SN must still bound the critic
        for p in critic.parameters():
            p.mul_(10.0)
    u = torch.randn(64, 2 * shape[0]) if kind == "vector" else torch.randn(64, 2, 32, 32)
    critic.train()
    with torch.no_grad():
        for _ in range(100):  # converge u, v (one power iteration per training forward)
            critic(u)
    critic.eval()
    v = u + 0.1 * torch.randn_like(u)
    with torch.no_grad():
        ratio = (critic(u) - critic(v)).abs() / (u - v).flatten(1).norm(dim=1)
    assert ratio.max().item() <= 1.0 + 1e-3
    # Without SN the same inflated critic is far from 1-Lipschitz.
    plain = build_networks(AMAConfig(**{**cfg.to_json(), "spectral_norm": False,
                                        "input_shape": shape})).critic  # fmt: skip
    with torch.no_grad():
        for p in plain.parameters():
            p.mul_(10.0)
        ratio_plain = (plain(u) - plain(v)).abs() / (u - v).flatten(1).norm(dim=1)
    assert ratio_plain.max().item() > 2.0


def test_gradient_penalty_keeps_trained_critic_gradients_near_one() -> None:
    """A briefly trained vector critic (SN off, GP on) has input-gradient norms near 1."""
    torch.manual_seed(0)
    cfg = AMAConfig(kind="vector", input_shape=(4,), hidden=16, critic_hidden=32, feat_dim=16,
                    spectral_norm=False, neg_sampling=False).resolved()  # fmt: skip
    data = torch.randn(256, 4)
    nets, _ = train_networks(cfg, data, epochs=4, batch_size=64, device=torch.device("cpu"), seed=0)
    u = torch.randn(128, 8, requires_grad=True)
    (g,) = torch.autograd.grad(nets.critic(u).sum(), u)
    assert g.norm(dim=1).max().item() < 3.0


def test_negative_sampling_warmup_and_history() -> None:
    cfg = AMAConfig(kind="vector", input_shape=(4,), hidden=16, critic_hidden=16, feat_dim=8,
                    critic_steps=1).resolved()  # fmt: skip
    _nets, summary = train_networks(
        cfg, torch.randn(64, 4), epochs=3, batch_size=32, device=torch.device("cpu"), seed=0
    )
    assert summary.iterations == 6 and len(summary.history) == 3
    assert {"d_wass", "gp", "ae_adv", "latent_norm"} <= set(summary.history[0])
