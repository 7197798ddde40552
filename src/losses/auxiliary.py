"""Auxiliary terms added to whatever adversarial loss is selected.

A term is handed one `Phase`: the step's tensors (real and fake batches, their labels or latent codes, the
discriminator's outputs) and the callables it may need (discriminate, generate, redraw the noise). It never
sees the LightningModule, so it can be tested on hand-made tensors. Terms use only the auxiliary heads,
never the adversarial score (the mismatch term scores with the selected loss, handed in `Phase.loss`), so
they are the same whether the adversarial head is a probability (minimax) or a critic (WGAN). Every term
is added by config (`model.terms.<name>`); its name prefixes what it logs (train/<phase>_<name>_<part>).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from src.losses.adversarial import AdversarialLoss


@dataclass
class DOut:
    """Discriminator outputs: the adversarial score per sample and any auxiliary heads."""

    adv: Tensor
    aux: dict[str, Tensor] = field(default_factory=dict)


@dataclass
class Phase:
    """What a term sees in one phase (`name`: "d" or "g"). `d_real` is None in the G phase; `extras` are
    G's extra outputs (CA's mu and log-variance); `batch_extras` more fields of the real batch (contrast
    captions). `discriminate(x, conditions)` scores images; `generate(latent)` gives images (with
    gradients in the G phase); `resample(latent)` redraws the noise of a latent and keeps its conditions,
    returning the new latent and the names of the entries redrawn. `discriminate` is D as trained: it applies
    the model's augmentation (model.augment), if any, like every other training pass of D."""

    name: str
    real: Tensor
    labels: Tensor | None
    latent: dict[str, Tensor]
    fake: Tensor
    d_real: DOut | None
    d_fake: DOut
    loss: AdversarialLoss
    discriminate: Callable[[Tensor, Tensor | None], DOut]
    generate: Callable[[dict[str, Tensor]], Tensor]
    resample: Callable[[dict[str, Tensor]], tuple[dict[str, Tensor], list[str]]]
    extras: dict[str, Tensor] = field(default_factory=dict)
    batch_extras: dict[str, Tensor] = field(default_factory=dict)
    step: int = 0  # the model's D step (G step in the G phase): lazy regularisers run on an interval
    grad_scale: float = 1.0  # the mixed-precision loss scale, for terms that take input gradients


class AuxTerm(nn.Module):
    """An auxiliary objective added to whatever adversarial loss is selected (AC, InfoGAN MI, KL ...)."""

    @property
    def active(self) -> bool:
        """False when configured off (a zero weight): the model leaves the term out."""
        return True

    def heads(self) -> dict[str, int]:
        """Auxiliary discriminator heads the term reads ({name: output size}); the model adds them to D."""
        return {}

    def d_parameters(self) -> list[nn.Parameter]:
        """Trainable parameters of the term itself, stepped with D (none by default)."""
        return []

    def g_parameters(self) -> list[nn.Parameter]:
        """Trainable parameters of the term itself, stepped with G (none by default)."""
        return []

    def d_terms(self, phase: Phase) -> dict[str, Tensor]:
        return {}

    def g_terms(self, phase: Phase) -> dict[str, Tensor]:
        return {}

    def stats(self, phase: Phase) -> dict[str, Tensor]:
        """Diagnostics logged with the training metrics (accuracies and the like), D phase."""
        return {}


class ClassTerm(AuxTerm):
    """AC-GAN (Odena et al. 2017): D's classifier head learns the labels of real (and fake) images;
    G is rewarded when its samples are classified as the label they were generated for."""

    head = "cls"

    def __init__(self, num_classes: int, weight: float = 1.0, d_on_fake: bool = True):
        super().__init__()
        self.num_classes, self.weight, self.d_on_fake = int(num_classes), weight, d_on_fake

    @property
    def active(self) -> bool:
        return self.weight > 0

    def heads(self) -> dict[str, int]:
        return {self.head: self.num_classes}

    def d_terms(self, phase: Phase) -> dict[str, Tensor]:
        terms = {"real": self.weight * F.cross_entropy(phase.d_real.aux[self.head], phase.labels)}
        if self.d_on_fake:
            terms["fake"] = self.weight * F.cross_entropy(phase.d_fake.aux[self.head], phase.latent["y"])
        return terms

    def g_terms(self, phase: Phase) -> dict[str, Tensor]:
        return {"fake": self.weight * F.cross_entropy(phase.d_fake.aux[self.head], phase.latent["y"])}

    def stats(self, phase: Phase) -> dict[str, Tensor]:
        out = {"fake_acc": (phase.d_fake.aux[self.head].argmax(1) == phase.latent["y"]).float().mean()}
        if phase.d_real is not None:
            out["real_acc"] = (phase.d_real.aux[self.head].argmax(1) == phase.labels).float().mean()
        return out


class ModeSeekingTerm(AuxTerm):
    """Mode seeking (Mao et al. 2019, MSGAN): G draws a second sample of the same condition (label, codes,
    text) with fresh noise and is penalised by weight / (mean |G(c, z1) - G(c, z2)| / mean |z1 - z2|), so
    that it cannot ignore the noise and give one image per condition. G phase only; `fraction` of the
    batch is redrawn (one more G pass over that many samples)."""

    def __init__(self, weight: float = 1.0, fraction: float = 0.5, eps: float = 1e-5):
        super().__init__()
        if not 0 < fraction <= 1:
            raise ValueError(f"mode-seeking fraction must be in (0, 1], got {fraction}")
        if weight < 0:
            raise ValueError(f"model.terms.ms.weight must be >= 0 (0: off), got {weight}")
        self.weight, self.fraction, self.eps = weight, fraction, eps

    @property
    def active(self) -> bool:
        return self.weight > 0

    def g_terms(self, phase: Phase) -> dict[str, Tensor]:
        n = max(2, round(phase.fake.shape[0] * self.fraction))
        latent = {k: v[:n] for k, v in phase.latent.items()}
        other, redrawn = phase.resample(latent)
        fake2 = phase.generate(other)
        image_gap = (fake2.float() - phase.fake[:n].float()).abs().mean()
        noise_gap = torch.cat([(other[k] - latent[k]).flatten(1) for k in redrawn], 1).abs().mean()
        return {"penalty": self.weight / (image_gap / noise_gap + self.eps)}


class MutualInfoTerm(AuxTerm):
    """InfoGAN's variational lower bound on I(c; G(z, c)) (Chen et al. 2016), weighted by lambda.

    Q (a head on D's trunk) predicts the codes the fake was generated from: cross-entropy for each
    categorical code; for continuous codes a factored Gaussian NLL with learned variance (`gaussian`)
    or with fixed unit variance (`mse`). The same term is added in the D phase (training Q and the
    trunk) and the G phase (training G to make its codes recoverable). Computed on the sampled codes.

    `invariance` > 0 (not in the InfoGAN paper; the idea of Elastic-InfoGAN, Ojha et al. 2020): Q must
    also recover the categorical codes from randomly shifted, rotated and scaled copies of the fakes,
    weighted by `invariance` x `weight_cat`. G can then no longer spend a code value on where a digit
    sits, how large it is or how it leans, so the categories go to what such changes keep: the class.
    `augment`: the largest shift (fraction of the side), rotation (degrees) and scale change, `thickness`:
    the largest blend towards a 3x3 dilation (thicker strokes) or erosion (thinner), and `shear`: the largest
    slant (x += k * y); 0 for none.

    `real_balance`, `real_confidence`, `real_consistency` > 0 (not in the InfoGAN paper; IMSAT's objective, Hu et
    al. 2017): in the D phase Q also clusters the unlabelled real batch with its categorical codes, using every
    value equally over the batch (KL of the batch-mean prediction to uniform), each confidently (mean entropy),
    and giving a moved copy of a real image (`augment`) the prediction of the image itself (KL). G never sees
    these terms; through the MI term it learns to draw what Q's categories hold on real data.
    """

    head = "q"

    def __init__(
        self,
        cat_dims: Sequence[int] = (10,),
        cont_dim: int = 2,
        weight_cat: float = 1.0,
        weight_cont: float = 1.0,
        cont_loss: str = "gaussian",
        invariance: float = 0.0,
        augment: Mapping[str, float] | None = None,
        real_balance: float = 0.0,
        real_confidence: float = 0.0,
        real_consistency: float = 0.0,
    ):
        super().__init__()
        if cont_loss not in ("gaussian", "mse"):
            raise ValueError(f"model.terms.info.cont_loss must be 'gaussian' or 'mse', got {cont_loss!r}")
        if invariance < 0:
            raise ValueError(f"model.terms.info.invariance must be >= 0, got {invariance}")
        self.cat_dims, self.cont_dim = [int(k) for k in cat_dims], int(cont_dim)
        self.weight_cat, self.weight_cont, self.cont_loss = weight_cat, weight_cont, cont_loss
        self.invariance = float(invariance)
        if min(real_balance, real_confidence, real_consistency) < 0:
            raise ValueError(
                "model.terms.info.real_balance, real_confidence and real_consistency must be >= 0, got "
                f"{real_balance}, {real_confidence}, {real_consistency}"
            )
        self.real_balance, self.real_confidence = float(real_balance), float(real_confidence)
        self.real_consistency = float(real_consistency)
        self.augment = {
            "shift": 0.1,
            "rotate": 15.0,
            "scale": 0.15,
            "thickness": 0.0,
            "shear": 0.0,
            **dict(augment or {}),
        }
        unknown = set(self.augment) - {"shift", "rotate", "scale", "thickness", "shear"}
        if unknown:
            raise ValueError(
                f"model.terms.info.augment: unknown keys {sorted(unknown)}; valid: shift, rotate, scale, thickness, shear"
            )

    def heads(self) -> dict[str, int]:
        return {self.head: self.q_dim}

    @property
    def q_dim(self) -> int:
        return sum(self.cat_dims) + self.cont_dim * (2 if self.cont_loss == "gaussian" else 1)

    def split(self, q: Tensor) -> tuple[list[Tensor], Tensor, Tensor | None]:
        """Q's output -> (logits of each categorical code, continuous means, log-variances or None)."""
        q = q.float()
        logits = list(torch.split(q[:, : sum(self.cat_dims)], self.cat_dims, dim=1))
        rest = q[:, sum(self.cat_dims) :]
        mean = rest[:, : self.cont_dim]
        logvar = rest[:, self.cont_dim :].clamp(-8, 8) if self.cont_loss == "gaussian" else None
        return logits, mean, logvar

    @staticmethod
    def cat_loss(logits: list[Tensor], latent: dict[str, Tensor]) -> Tensor:
        """Cross-entropy of Q's logits against the categorical codes G was given, summed over the codes."""
        return sum(F.cross_entropy(lg, latent["c_cat"][:, i]) for i, lg in enumerate(logits))

    def loss(self, q: Tensor, latent: dict[str, Tensor]) -> dict[str, Tensor]:
        logits, mean, logvar = self.split(q)
        terms = {}
        if self.cat_dims:
            terms["mi_cat"] = self.weight_cat * self.cat_loss(logits, latent)
        if self.cont_dim:
            err = (latent["c_cont"].float() - mean) ** 2
            nll = 0.5 * (logvar + err * torch.exp(-logvar)) if logvar is not None else 0.5 * err
            terms["mi_cont"] = self.weight_cont * nll.sum(1).mean()
        return terms

    def d_terms(self, phase: Phase) -> dict[str, Tensor]:
        return {
            **self.loss(phase.d_fake.aux[self.head], phase.latent),
            **self.invariance_terms(phase),
            **self.real_terms(phase),
        }

    def g_terms(self, phase: Phase) -> dict[str, Tensor]:
        return {**self.loss(phase.d_fake.aux[self.head], phase.latent), **self.invariance_terms(phase)}

    def real_terms(self, phase: Phase) -> dict[str, Tensor]:
        """IMSAT's clustering objective for Q's categorical codes on the (unlabelled) real batch."""
        weights = {
            "real_balance": self.real_balance,
            "real_confidence": self.real_confidence,
            "real_consistency": self.real_consistency,
        }
        if not any(weights.values()) or not self.cat_dims or phase.d_real is None:
            return {}
        logits = self.split(phase.d_real.aux[self.head])[0]
        moved = (
            self.moved_logits(phase, phase.real, "real_consistency")
            if self.real_consistency
            else [None] * len(logits)
        )
        sums = dict.fromkeys(weights, 0.0)
        for lg, mv in zip(logits, moved):
            p, log_p = lg.softmax(1), lg.log_softmax(1)
            marginal = p.mean(0)
            sums["real_balance"] += (marginal * (marginal.clamp_min(1e-8) * marginal.numel()).log()).sum()
            sums["real_confidence"] += -(p * log_p).sum(1).mean()
            if mv is not None:
                sums["real_consistency"] += F.kl_div(mv.log_softmax(1), p.detach(), reduction="batchmean")
        return {k: w * sums[k] for k, w in weights.items() if w}

    def invariance_terms(self, phase: Phase) -> dict[str, Tensor]:
        if not self.invariance or not self.cat_dims:
            return {}
        logits = self.moved_logits(phase, phase.fake, "invariance")
        return {"mi_cat_aug": self.invariance * self.weight_cat * self.cat_loss(logits, phase.latent)}

    def moved_logits(self, phase: Phase, x: Tensor, option: str) -> list[Tensor]:
        """Q's categorical logits for randomly shifted / rotated / scaled copies of the images x."""
        if x.dim() != 4:
            raise ValueError(
                f"model.terms.info.{option} needs image data: it shifts, rotates and scales the images"
            )
        return self.split(phase.discriminate(random_affine(x, **self.augment), None).aux[self.head])[0]

    def stats(self, phase: Phase) -> dict[str, Tensor]:
        logits, mean, _ = self.split(phase.d_fake.aux[self.head])
        out = {}
        if self.cat_dims:
            out["cat_acc"] = (logits[0].argmax(1) == phase.latent["c_cat"][:, 0]).float().mean()
        if self.cont_dim:
            out["cont_mse"] = ((phase.latent["c_cont"].float() - mean) ** 2).mean()
        return out


def random_affine(
    x: Tensor, shift: float, rotate: float, scale: float, thickness: float = 0.0, shear: float = 0.0
) -> Tensor:
    """Each image shifted by up to `shift` x its side, rotated by up to `rotate` degrees and scaled by
    up to 1 +- `scale`, uniformly at random; the border is filled with the image's minimum (background).
    `thickness` > 0: first blended by up to that much towards its 3x3 dilation or erosion (grey-scale max / min
    filter: bright strokes get thicker or thinner). `shear` > 0: slanted by up to that much (x += k * y)."""
    n = x.shape[0]
    u = lambda: torch.rand(n, device=x.device) * 2 - 1  # noqa: E731
    if thickness:
        t = (u() * thickness)[:, None, None, None].to(x.dtype)
        grown, shrunk = F.max_pool2d(x, 3, 1, 1), -F.max_pool2d(-x, 3, 1, 1)
        x = x + t.clamp(min=0) * (grown - x) + (-t).clamp(min=0) * (shrunk - x)
    angle, factor = u() * math.radians(rotate), 1 + u() * scale
    cos, sin = torch.cos(angle) / factor, torch.sin(angle) / factor
    k = u() * shear if shear else 0.0  # x += k * y: the slant of handwriting
    theta = torch.stack(
        [
            torch.stack([cos + k * sin, -sin + k * cos, u() * 2 * shift], 1),
            torch.stack([sin, cos, u() * 2 * shift], 1),
        ],
        1,
    )
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    floor = x.detach().flatten(1).amin(1)[:, None, None, None].float()
    out = F.grid_sample(x.float() - floor, grid, align_corners=False, padding_mode="zeros")
    return (out + floor).to(x.dtype)
