"""AMA networks: config, Encoder / Decoder / Critic, and the folded inference Scorer.

Read top to bottom like nanoGPT: one frozen config, small named modules, a shape comment at every
reshape. The method is specified in ``shared/docs/ama-method.md`` (section numbers below refer to
it); every deliberate deviation is listed in ``docs/model.md``.

Two families of networks exist:

* ``vector``: the MLP variant of section 10.5 for d-dimensional sensor vectors.
* ``image``: section 3. ``arch="resnet"`` is the faithful CIFAR architecture (DCGAN encoder,
  ResNet generator of width 256, ResNet critic of width 128); ``arch="dcgan"`` is a lighter
  DCGAN-style generator and critic, about 30x cheaper, which is the default for 28x28 inputs
  because our evaluation runs on shared CPUs (a recorded deviation).

Training uses the "training" modules (BatchNorm in E and G, spectral norm in D). Scoring uses a
:class:`Scorer` built by :func:`export_scorer`: spectral norm folded into plain weights, BatchNorm
folded into the preceding Linear for vectors, everything in eval mode. Bundles store only the
Scorer's tensors, so a loaded detector scores with exactly the same arithmetic as the live one.
"""

from __future__ import annotations

import copy
import math
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils import parametrizations, parametrize

Kind = Literal["vector", "image"]
ImageArch = Literal["resnet", "dcgan"]
GPMode = Literal["pixel", "sample"]


@dataclass(frozen=True)
class AMAConfig:
    """Everything that defines an AMA model and its training (sections 4, 7 and 10.5).

    Defaults are the faithful values unless a comment says otherwise; ``docs/model.md`` records
    why each non-faithful default was chosen.
    """

    kind: Kind = "vector"
    input_shape: tuple[int, ...] = (38,)  # (d,) or (C, H, W)
    nz: int = 0  # latent size; 0 = automatic (vectors: ~d/3 clamped to [2, 64]; images: see arch)
    # --- vector (MLP) widths, section 10.5
    hidden: int = 256  # E/G hidden width (E: d->256->128->nz, G mirrors it)
    critic_hidden: int = 128  # D: 2d->h->h->feat; 256 is faithful (10.5), 128 is 3x cheaper
    feat_dim: int = 128  # critic feature size phi
    # --- image
    arch: ImageArch = "dcgan"  # "resnet" is the faithful section-3 architecture
    # --- objective (section 4)
    gp_lambda: float = 10.0
    gp_mode: GPMode = "pixel"  # per-pixel channel norm (faithful); vectors always use per-sample
    spectral_norm: bool = True
    reg_lambda: float = 1.0  # latent-norm regulariser weight
    anom_lambda: float = 5.0  # weight lambda_a of synthetic anomalies
    neg_sampling: bool = True  # inward negative sampling (section 4.5)
    neg_fraction: float = 0.1
    neg_ratio: float = 0.5  # alpha ~ U(0, neg_ratio)
    neg_warmup: float = 0.1  # negatives start after this fraction of the epochs
    recon_lambda: float = 1.0  # L1 term on normal rows; 0 = faithful (no pixel term)
    # --- optimisation (section 7.1)
    critic_steps: int = 5
    lr: float = 3e-4
    betas_d: tuple[float, float] = (0.0, 0.9)
    betas_g: tuple[float, float] = (0.0, 0.9)
    betas_e: tuple[float, float] = (0.5, 0.9)
    lr_milestones: tuple[float, ...] = (0.3, 0.6, 0.9)  # fractions of the epochs, x0.1 each
    # --- scoring / calibration (section 5)
    two_sided: bool = False  # True: |s - mu| / sigma (faithful); False: (s - mu) / sigma
    recon_weight: float = 1.0  # a(x) adds this times the reconstruction-error z; 0 = faithful
    threshold_quantile: float = 0.99  # threshold = this quantile of training a(x)
    # --- ensemble (docs/model.md, deviation 13): models from different seeds averaged in a(x);
    # 1 = the single model of the paper, 0 = automatic (vectors 3, images 1)
    members: int = 0
    extra: dict[str, Any] = field(default_factory=dict)  # free-form notes, kept in the bundle

    def resolved(self) -> AMAConfig:
        """Return a copy with automatic values (nz, gp_mode, members) filled in."""
        nz = self.nz
        if nz <= 0:
            if self.kind == "vector":
                nz = max(2, min(64, round(self.input_shape[0] / 3)))
            else:
                nz = 128 if self.arch == "resnet" else 32
        gp_mode: GPMode = "sample" if self.kind == "vector" else self.gp_mode
        if self.members < 0:
            raise ValueError(f"members must be >= 0 (0 = automatic), got {self.members}")
        members = self.members or (3 if self.kind == "vector" else 1)
        return _replace(self, nz=nz, gp_mode=gp_mode, members=members)

    def to_json(self) -> dict[str, Any]:
        """Plain JSON-able dict (tuples become lists)."""
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> AMAConfig:
        """Inverse of :meth:`to_json`; unknown keys are an error (caught by the bundle loader)."""
        fixed = dict(data)
        for key in ("input_shape", "betas_d", "betas_g", "betas_e", "lr_milestones"):
            if key in fixed:
                fixed[key] = tuple(fixed[key])
        return cls(**fixed)


# The configuration of the official code / ama-method.md, selectable as AMADetector(**FAITHFUL).
FAITHFUL: dict[str, Any] = {
    "critic_hidden": 256,
    "recon_lambda": 0.0,
    "two_sided": True,
    "recon_weight": 0.0,
    "members": 1,
}


def _replace(cfg: AMAConfig, **changes: Any) -> AMAConfig:
    data = asdict(cfg)
    data.update(changes)
    return AMAConfig.from_json(data)


def _sn(module: nn.Module, on: bool) -> nn.Module:
    """Spectral norm with one power iteration per training-mode forward (section 3.3)."""
    return parametrizations.spectral_norm(module) if on else module


# ---------------------------------------------------------------------------------------------
# Vector (MLP) networks, section 10.5
# ---------------------------------------------------------------------------------------------


class VectorEncoder(nn.Module):
    """E: d -> hidden -> hidden/2 -> nz. The code is an unbounded vector (no norm, no act)."""

    def __init__(self, cfg: AMAConfig) -> None:
        super().__init__()
        d, h = cfg.input_shape[0], cfg.hidden
        self.net = nn.Sequential(
            nn.Linear(d, h), nn.BatchNorm1d(h), nn.LeakyReLU(0.2),
            nn.Linear(h, h // 2), nn.BatchNorm1d(h // 2), nn.LeakyReLU(0.2),
            nn.Linear(h // 2, cfg.nz),
        )  # fmt: skip

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, d) -> (B, nz)
        return self.net(x)


class VectorDecoder(nn.Module):
    """G: nz -> hidden/2 -> hidden -> d, no tanh (standardised data is unbounded)."""

    def __init__(self, cfg: AMAConfig) -> None:
        super().__init__()
        d, h = cfg.input_shape[0], cfg.hidden
        self.net = nn.Sequential(
            nn.Linear(cfg.nz, h // 2), nn.BatchNorm1d(h // 2), nn.ReLU(),
            nn.Linear(h // 2, h), nn.BatchNorm1d(h), nn.ReLU(),
            nn.Linear(h, d),
        )  # fmt: skip

    def forward(self, z: torch.Tensor) -> torch.Tensor:  # (B, nz) -> (B, d)
        return self.net(z)


class VectorCritic(nn.Module):
    """D on the pair [x ; y] in R^{2d}: SN-MLP trunk -> phi in R^feat -> SN-Linear(feat, 1)."""

    def __init__(self, cfg: AMAConfig) -> None:
        super().__init__()
        d, h, f, sn = cfg.input_shape[0], cfg.critic_hidden, cfg.feat_dim, cfg.spectral_norm
        self.trunk = nn.Sequential(
            _sn(nn.Linear(2 * d, h), sn), nn.ReLU(),
            _sn(nn.Linear(h, h), sn), nn.ReLU(),
            _sn(nn.Linear(h, f), sn), nn.ReLU(),
        )  # fmt: skip
        self.head = _sn(nn.Linear(f, 1, bias=False), sn)

    def features(self, pair: torch.Tensor) -> torch.Tensor:  # (B, 2d) -> (B, feat)
        return self.trunk(pair)

    def forward(self, pair: torch.Tensor) -> torch.Tensor:  # (B, 2d) -> (B,)
        return self.head(self.trunk(pair)).squeeze(1)


# ---------------------------------------------------------------------------------------------
# Image networks, section 3
# ---------------------------------------------------------------------------------------------


class ImageEncoder(nn.Module):
    """DCGAN encoder (section 3.1): three 4x4/s2 convs with BN + LeakyReLU, then 4x4 -> nz."""

    def __init__(self, cfg: AMAConfig) -> None:
        super().__init__()
        c = cfg.input_shape[0]
        w = 64 if cfg.arch == "resnet" else 32  # the light variant halves every width
        self.net = nn.Sequential(
            nn.Conv2d(c, w, 4, 2, 1, bias=False), nn.BatchNorm2d(w), nn.LeakyReLU(0.2),
            nn.Conv2d(w, 2 * w, 4, 2, 1, bias=False), nn.BatchNorm2d(2 * w), nn.LeakyReLU(0.2),
            nn.Conv2d(2 * w, 4 * w, 4, 2, 1, bias=False), nn.BatchNorm2d(4 * w),
            nn.LeakyReLU(0.2),
            nn.Conv2d(4 * w, cfg.nz, 4, 1, 0, bias=False),
        )  # fmt: skip

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, C, 32, 32) -> (B, nz)
        return self.net(x).flatten(1)  # (B, nz, 1, 1) -> (B, nz)


def _xavier(conv: nn.Module, gain: float) -> nn.Module:
    assert isinstance(conv, nn.Conv2d | nn.Linear)
    nn.init.xavier_uniform_(conv.weight, gain)
    if conv.bias is not None:
        nn.init.zeros_(conv.bias)
    return conv


class UpBlock(nn.Module):
    """ResNet generator block (section 3.2): BN-ReLU-up-conv3-BN-ReLU-conv3 + up-conv1x1."""

    def __init__(self, ch: int) -> None:
        super().__init__()
        g = math.sqrt(2.0)
        self.bn1, self.bn2 = nn.BatchNorm2d(ch), nn.BatchNorm2d(ch)
        self.conv1 = _xavier(nn.Conv2d(ch, ch, 3, 1, 1), g)
        self.conv2 = _xavier(nn.Conv2d(ch, ch, 3, 1, 1), g)
        self.shortcut = _xavier(nn.Conv2d(ch, ch, 1), 1.0)  # the "flag quirk" 1x1 conv

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, ch, s, s) -> (B, ch, 2s, 2s)
        h = F.interpolate(F.relu(self.bn1(x)), scale_factor=2.0, mode="nearest")
        h = self.conv2(F.relu(self.bn2(self.conv1(h))))
        return h + self.shortcut(F.interpolate(x, scale_factor=2.0, mode="nearest"))


class ResNetDecoder(nn.Module):
    """Faithful "ResnetGenerator32" (section 3.2): nz -> 256x4x4 -> 3 up blocks -> C x 32 x 32."""

    def __init__(self, cfg: AMAConfig) -> None:
        super().__init__()
        self.ch = 256
        self.fc = _xavier(nn.Linear(cfg.nz, 4 * 4 * self.ch), 1.0)
        self.blocks = nn.Sequential(UpBlock(self.ch), UpBlock(self.ch), UpBlock(self.ch))
        self.bn = nn.BatchNorm2d(self.ch)
        self.out = _xavier(nn.Conv2d(self.ch, cfg.input_shape[0], 3, 1, 1), 1.0)

    def forward(self, z: torch.Tensor) -> torch.Tensor:  # (B, nz) -> (B, C, 32, 32)
        h = self.fc(z).view(-1, self.ch, 4, 4)  # (B, 4096) -> (B, 256, 4, 4)
        h = self.blocks(h)  # (B, 256, 32, 32)
        return torch.tanh(self.out(F.relu(self.bn(h))))


class DCGANDecoder(nn.Module):
    """Light generator [deviation]: nz -> 64x4x4 -> three 4x4/s2 transposed convs -> 32x32.

    About 4.5 M MAC per image instead of 1.68 G for the faithful ResNet generator.
    """

    def __init__(self, cfg: AMAConfig) -> None:
        super().__init__()
        c = cfg.input_shape[0]
        self.fc = nn.Linear(cfg.nz, 64 * 4 * 4)
        self.net = nn.Sequential(
            nn.BatchNorm2d(64), nn.ReLU(),
            nn.ConvTranspose2d(64, 32, 4, 2, 1, bias=False), nn.BatchNorm2d(32), nn.ReLU(),
            nn.ConvTranspose2d(32, 16, 4, 2, 1, bias=False), nn.BatchNorm2d(16), nn.ReLU(),
            nn.ConvTranspose2d(16, c, 4, 2, 1), nn.Tanh(),
        )  # fmt: skip

    def forward(self, z: torch.Tensor) -> torch.Tensor:  # (B, nz) -> (B, C, 32, 32)
        return self.net(self.fc(z).view(-1, 64, 4, 4))  # (B, 1024) -> (B, 64, 4, 4)


class DownBlock(nn.Module):
    """ResNet critic block (section 3.3). ``first``: no pre-activation; ``down``: avg-pool."""

    def __init__(self, cin: int, cout: int, *, first: bool, down: bool, sn: bool) -> None:
        super().__init__()
        g = math.sqrt(2.0)
        self.first, self.down = first, down
        self.conv1 = _sn(_xavier(nn.Conv2d(cin, cout, 3, 1, 1), g), sn)
        self.conv2 = _sn(_xavier(nn.Conv2d(cout, cout, 3, 1, 1), g), sn)
        self.shortcut = _sn(_xavier(nn.Conv2d(cin, cout, 1), 1.0), sn) if down else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = x if self.first else F.relu(x)
        h = self.conv2(F.relu(self.conv1(h)))
        if not self.down:
            return h + x
        h = F.avg_pool2d(h, 2)
        assert self.shortcut is not None
        # optimized first block pools before its 1x1 conv, the later down block after it
        s = self.shortcut(F.avg_pool2d(x, 2)) if self.first else F.avg_pool2d(self.shortcut(x), 2)
        return h + s


class ResNetCritic(nn.Module):
    """Faithful "ResnetDiscriminator32" (section 3.3) on the 2C-channel pair."""

    def __init__(self, cfg: AMAConfig) -> None:
        super().__init__()
        c2, ch, sn = 2 * cfg.input_shape[0], 128, cfg.spectral_norm
        self.trunk = nn.Sequential(
            DownBlock(c2, ch, first=True, down=True, sn=sn),  # (B, 128, 16, 16)
            DownBlock(ch, ch, first=False, down=True, sn=sn),  # (B, 128, 8, 8)
            DownBlock(ch, ch, first=False, down=False, sn=sn),
            DownBlock(ch, ch, first=False, down=False, sn=sn),
            nn.ReLU(),
        )
        self.head = _sn(_xavier(nn.Linear(ch, 1, bias=False), 1.0), sn)

    def features(self, pair: torch.Tensor) -> torch.Tensor:  # (B, 2C, 32, 32) -> (B, 128)
        return self.trunk(pair).sum(dim=(2, 3))  # spatial SUM, as in the code

    def forward(self, pair: torch.Tensor) -> torch.Tensor:  # (B, 2C, 32, 32) -> (B,)
        return self.head(self.features(pair)).squeeze(1)


class DCGANCritic(nn.Module):
    """Light critic [deviation]: three SN 4x4/s2 convs (16/32/feat) + ReLU, spatial sum -> phi."""

    def __init__(self, cfg: AMAConfig) -> None:
        super().__init__()
        c2, sn = 2 * cfg.input_shape[0], cfg.spectral_norm
        self.trunk = nn.Sequential(
            _sn(nn.Conv2d(c2, 16, 4, 2, 1), sn), nn.ReLU(),  # (B, 16, 16, 16)
            _sn(nn.Conv2d(16, 32, 4, 2, 1), sn), nn.ReLU(),  # (B, 32, 8, 8)
            _sn(nn.Conv2d(32, cfg.feat_dim, 4, 2, 1), sn), nn.ReLU(),  # (B, feat, 4, 4)
        )  # fmt: skip
        self.head = _sn(nn.Linear(cfg.feat_dim, 1, bias=False), sn)

    def features(self, pair: torch.Tensor) -> torch.Tensor:  # (B, 2C, 32, 32) -> (B, feat)
        return self.trunk(pair).sum(dim=(2, 3))

    def forward(self, pair: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(pair)).squeeze(1)


class PadTo32(nn.Module):
    """Pads a 28x28 image (already in [-1, 1]) to 32x32 with background -1 (section 3.4)."""

    def __init__(self, hw: tuple[int, int]) -> None:
        super().__init__()
        ph, pw = 32 - hw[0], 32 - hw[1]
        self.pad = (pw // 2, pw - pw // 2, ph // 2, ph - ph // 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, C, H, W) -> (B, C, 32, 32)
        return F.pad(x, self.pad, value=-1.0) if any(self.pad) else x


@dataclass
class Networks:
    """The three training networks for one config."""

    encoder: nn.Module
    decoder: nn.Module
    critic: nn.Module


def build_networks(cfg: AMAConfig) -> Networks:
    """Fresh training networks for a resolved config."""
    if cfg.kind == "vector":
        return Networks(VectorEncoder(cfg), VectorDecoder(cfg), VectorCritic(cfg))
    _c, h, w = cfg.input_shape
    if h > 32 or w > 32:
        raise ValueError(f"image inputs up to 32x32 are supported, got {cfg.input_shape}")
    if cfg.arch == "resnet":
        return Networks(ImageEncoder(cfg), ResNetDecoder(cfg), ResNetCritic(cfg))
    return Networks(ImageEncoder(cfg), DCGANDecoder(cfg), DCGANCritic(cfg))


# ---------------------------------------------------------------------------------------------
# Inference: the folded Scorer
# ---------------------------------------------------------------------------------------------


class Scorer(nn.Module):
    """Eval-only network: x (normalised) -> (raw AMA score s, reconstruction error, x_hat).

    s(x) = || phi([x ; x]) - phi([x ; G(E(x))]) ||_1   (section 5.1).

    For vectors, the critic's first layer is split as W = [Wa | Wb] so that the mirror pair costs
    one matmul: W [x ; x] = (Wa + Wb) x, and the shared term Wa x is computed once.
    """

    def __init__(
        self, cfg: AMAConfig, encoder: nn.Module, decoder: nn.Module, trunk: nn.Sequential
    ):
        super().__init__()
        self.kind = cfg.kind
        self.encoder, self.decoder = encoder, decoder
        self.trunk: nn.Sequential = trunk
        self.pad = PadTo32(cfg.input_shape[1:]) if cfg.kind == "image" else nn.Identity()  # type: ignore[arg-type]

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        x = self.pad(x)
        x_hat = self.decoder(self.encoder(x))
        if self.kind == "vector":
            first = self.trunk[0]
            assert isinstance(first, nn.Linear)
            d = x.shape[1]
            wa, wb = first.weight[:, :d], first.weight[:, d:]  # (h, d) each
            shared = torch.addmm(first.bias, x, wa.t())  # (B, h)
            h = torch.cat([shared + x @ wb.t(), shared + x_hat @ wb.t()])  # (2B, h)
            feats = self.trunk[1:](h)  # (2B, feat)
        else:
            pairs = torch.cat([torch.cat([x, x], 1), torch.cat([x, x_hat], 1)])  # (2B, 2C, H, W)
            feats = self.trunk(pairs).sum(dim=(2, 3))  # (2B, feat)
        b = x.shape[0]
        s = (feats[:b] - feats[b:]).abs().sum(1)  # (B,)
        err = (x - x_hat).abs().flatten(1).mean(1)  # (B,) mean |x - x_hat|, normalised units
        return s, err, x_hat


class Ensemble(nn.Module):
    """K Scorers trained from different seeds, scored together (docs/model.md, deviation 13).

    A single AMA model's ranking varies from seed to seed by as much as its gap to the best
    baseline on small tabular sets; averaging the calibrated scores of a few members removes
    most of that variance. The detector calibrates each member separately, so members stay
    independent and K = 1 is exactly one model.
    """

    def __init__(self, members: list[Scorer]) -> None:
        super().__init__()
        self.members = nn.ModuleList(members)
        self.eval()

    def forward(
        self, x: torch.Tensor, keep_recon: bool = False
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """x (B, ...) normalised -> s (B, K), reconstruction error (B, K), and the members'
        mean x_hat (B, ...) when asked (for explanations)."""
        outs = [member(x) for member in self.members]
        s = torch.stack([o[0] for o in outs], 1)
        err = torch.stack([o[1] for o in outs], 1)
        x_hat = torch.stack([o[2] for o in outs]).mean(0) if keep_recon else None
        return s, err, x_hat


def _fold_linear_bn(lin: nn.Linear, bn: nn.BatchNorm1d) -> nn.Linear:
    """Linear followed by eval-mode BN is one Linear: W' = g W, b' = g (b - mean) + beta."""
    assert bn.running_mean is not None and bn.running_var is not None
    g = bn.weight / torch.sqrt(bn.running_var + bn.eps)  # (out,)
    out = nn.Linear(lin.in_features, lin.out_features)
    out.weight.data = lin.weight.data * g[:, None]
    out.bias.data = (lin.bias.data - bn.running_mean) * g + bn.bias.data
    return out


def _fold_sequential(seq: nn.Sequential) -> nn.Sequential:
    layers: list[nn.Module] = []
    mods = list(seq)
    i = 0
    while i < len(mods):
        m = mods[i]
        nxt = mods[i + 1] if i + 1 < len(mods) else None
        if isinstance(m, nn.Linear) and isinstance(nxt, nn.BatchNorm1d):
            layers.append(_fold_linear_bn(m, nxt))
            i += 2
            continue
        layers.append(copy.deepcopy(m))
        i += 1
    return nn.Sequential(*layers)


def _remove_sn(module: nn.Module) -> nn.Module:
    """Replace every spectral-norm parametrisation by the plain weight W / sigma_hat (eval)."""
    module = copy.deepcopy(module).eval()
    with torch.no_grad():
        for m in module.modules():
            if parametrize.is_parametrized(m, "weight"):
                parametrize.remove_parametrizations(m, "weight", leave_parametrized=True)
    return module


def export_scorer(cfg: AMAConfig, nets: Networks) -> Scorer:
    """Fold the trained networks into an eval-only :class:`Scorer` (sections 10.2, 10.3)."""
    critic = _remove_sn(nets.critic)
    trunk = critic.trunk
    assert isinstance(trunk, nn.Sequential)
    if cfg.kind == "vector":
        enc = nets.encoder.net
        dec = nets.decoder.net
        assert isinstance(enc, nn.Sequential) and isinstance(dec, nn.Sequential)
        with torch.no_grad():
            scorer = Scorer(cfg, _fold_sequential(enc.eval()), _fold_sequential(dec.eval()), trunk)
    else:
        scorer = Scorer(cfg, copy.deepcopy(nets.encoder), copy.deepcopy(nets.decoder), trunk)
    scorer.eval()
    for p in scorer.parameters():
        p.requires_grad_(False)
    return scorer


def empty_ensemble(cfg: AMAConfig) -> Ensemble:
    """An Ensemble of ``cfg.members`` Scorers with unset weights, for loading a bundle."""
    return Ensemble([_empty_scorer(cfg) for _ in range(cfg.members)])


def _empty_scorer(cfg: AMAConfig) -> Scorer:
    """One member's architecture with unset weights."""
    plain = _replace(cfg, spectral_norm=False)
    nets = build_networks(plain)
    if cfg.kind == "vector":
        d, h = cfg.input_shape[0], cfg.hidden
        enc = nn.Sequential(
            nn.Linear(d, h), nn.LeakyReLU(0.2), nn.Linear(h, h // 2), nn.LeakyReLU(0.2),
            nn.Linear(h // 2, cfg.nz),
        )  # fmt: skip
        dec = nn.Sequential(
            nn.Linear(cfg.nz, h // 2), nn.ReLU(), nn.Linear(h // 2, h), nn.ReLU(), nn.Linear(h, d)
        )
    trunk = nets.critic.trunk
    assert isinstance(trunk, nn.Sequential)
    if cfg.kind == "vector":
        scorer = Scorer(cfg, enc, dec, trunk)
    else:
        scorer = Scorer(cfg, nets.encoder, nets.decoder, trunk)
    scorer.eval()
    for p in scorer.parameters():
        p.requires_grad_(False)
    return scorer
