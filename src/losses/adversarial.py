"""Adversarial losses as objects, independent of the networks.

A loss sees only discriminator outputs (and, for regularisers, a callable critic); it never owns
a network. Each returns named terms so the training step can log them and sum them.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class AdversarialLoss:
    """Base class. Subclasses implement `d_loss` and `g_loss` on raw discriminator outputs."""

    name = "adversarial"
    # True for Wasserstein-style critics: outputs are unbounded scores, not logits.
    critic = False
    # Whether a BatchNorm discriminator is acceptable (False where a per-sample gradient penalty is used).
    allows_batchnorm = True
    # True when G's loss compares its samples' scores with the real batch's (the G phase then scores the reals).
    pairs_real_in_g = False

    def d_loss(self, real: Tensor, fake: Tensor) -> Tensor:
        raise NotImplementedError

    def g_loss(self, fake: Tensor, real: Tensor | None = None) -> Tensor:
        """G's loss on D's scores of its samples; `real` (D's scores of the real batch, no gradient) is
        given only to losses with `pairs_real_in_g` (relativistic ones)."""
        raise NotImplementedError

    def d_regularizer(
        self,
        critic: Callable[[Tensor], Tensor],
        real: Tensor,
        fake: Tensor,
        grad_scale: float = 1.0,
        group: int = 1,
    ) -> dict[str, Tensor]:
        """Extra discriminator terms (gradient penalty and the like); none by default.

        `grad_scale` is the mixed-precision loss scale, so input gradients are taken on a scaled
        output (no fp16 underflow) and unscaled before the penalty. `group` consecutive samples form
        one discriminator input (PacGAN packing).
        """
        return {}

    @torch.no_grad()
    def after_d_step(self, discriminator: nn.Module) -> None:
        """Hook run after every discriminator optimizer step (weight clipping)."""

    def check(self, discriminator: nn.Module) -> None:
        """Raise ValueError if the discriminator cannot be used with this loss."""
        if not self.allows_batchnorm:
            bn = [
                n for n, m in discriminator.named_modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)
            ]
            if bn:
                raise ValueError(
                    f"loss={self.name} cannot train a discriminator with BatchNorm (found at {bn[0]!r}): "
                    "the gradient penalty is defined per sample and BatchNorm couples the samples of a batch. "
                    "Use model.discriminator.norm=layer (the loss default), instance, spectral or none."
                )

    # --- diagnostics -------------------------------------------------------------------------------
    def prob(self, out: Tensor) -> Tensor:
        """The discriminator's output as reported in logs: probability for logit losses, raw otherwise."""
        return out

    def accuracy(self, real: Tensor, fake: Tensor) -> tuple[Tensor, Tensor]:
        """Share of real samples called real and of fake samples called fake."""
        t = self.threshold(real, fake)
        return (real > t).float().mean(), (fake < t).float().mean()

    def threshold(self, real: Tensor, fake: Tensor) -> Tensor | float:
        return 0.0

    def stats(self, real: Tensor, fake: Tensor) -> dict[str, Tensor]:
        """D's diagnostics on (detached) scores of a real and a fake batch, logged as train/<key>."""
        acc_real, acc_fake = self.accuracy(real, fake)
        stats = {
            "d_real": self.prob(real).mean(),
            "d_fake": self.prob(fake).mean(),
            "d_acc_real": acc_real,
            "d_acc_fake": acc_fake,
            "d_acc": 0.5 * (acc_real + acc_fake),
        }
        if self.critic:
            stats["wasserstein"] = real.mean() - fake.mean()
        return stats

    def __repr__(self) -> str:
        fields = ", ".join(f"{k}={v}" for k, v in vars(self).items())
        return f"{type(self).__name__}({fields})"


class Minimax(AdversarialLoss):
    """The original saturating game (Goodfellow et al. 2014): G minimises log(1 - D(G(z)))."""

    name = "minimax"

    def d_loss(self, real: Tensor, fake: Tensor) -> Tensor:
        return F.softplus(-real).mean() + F.softplus(fake).mean()

    def g_loss(self, fake: Tensor, real: Tensor | None = None) -> Tensor:
        # log(1 - sigmoid(l)) = -softplus(l); its gradient sigmoid(l) vanishes when D rejects fakes.
        return -F.softplus(fake).mean()

    def prob(self, out: Tensor) -> Tensor:
        return torch.sigmoid(out)


class NonSaturating(Minimax):
    """The non-saturating heuristic: G maximises log D(G(z))."""

    name = "nonsaturating"

    def g_loss(self, fake: Tensor, real: Tensor | None = None) -> Tensor:
        return F.softplus(-fake).mean()


class LSGAN(AdversarialLoss):
    """Least squares GAN (Mao et al. 2017) with the 0-1 coding: a=0, b=1, c=1."""

    name = "lsgan"

    def __init__(self, real_target: float = 1.0, fake_target: float = 0.0, g_target: float = 1.0):
        self.real_target, self.fake_target, self.g_target = real_target, fake_target, g_target

    def d_loss(self, real: Tensor, fake: Tensor) -> Tensor:
        return 0.5 * ((real - self.real_target) ** 2).mean() + 0.5 * ((fake - self.fake_target) ** 2).mean()

    def g_loss(self, fake: Tensor, real: Tensor | None = None) -> Tensor:
        return 0.5 * ((fake - self.g_target) ** 2).mean()

    def threshold(self, real: Tensor, fake: Tensor) -> float:
        return 0.5 * (self.real_target + self.fake_target)


class Hinge(AdversarialLoss):
    """Hinge loss (Lim & Ye 2017; Miyato et al. 2018)."""

    name = "hinge"
    critic = True

    def d_loss(self, real: Tensor, fake: Tensor) -> Tensor:
        return F.relu(1.0 - real).mean() + F.relu(1.0 + fake).mean()

    def g_loss(self, fake: Tensor, real: Tensor | None = None) -> Tensor:
        return -fake.mean()


class Wasserstein(AdversarialLoss):
    """WGAN (Arjovsky et al. 2017): critic maximises E[D(x)] - E[D(G(z))]; weights clipped to [-c, c]."""

    name = "wgan"
    critic = True

    def __init__(self, clip: float | None = 0.01):
        if clip is not None and clip <= 0:
            raise ValueError(f"loss.clip must be positive or null, got {clip}")
        self.clip = clip

    def d_loss(self, real: Tensor, fake: Tensor) -> Tensor:
        return fake.mean() - real.mean()

    def g_loss(self, fake: Tensor, real: Tensor | None = None) -> Tensor:
        return -fake.mean()

    @torch.no_grad()
    def after_d_step(self, discriminator: nn.Module) -> None:
        if self.clip is None:
            return
        params = [p for p in discriminator.parameters() if p.requires_grad]
        torch._foreach_clamp_min_(params, -self.clip)
        torch._foreach_clamp_max_(params, self.clip)

    def threshold(self, real: Tensor, fake: Tensor) -> Tensor:
        # A critic has no absolute offset: call a sample real if it scores above the midpoint.
        return 0.5 * (real.mean() + fake.mean())


class RelativisticPairing(AdversarialLoss):
    """Relativistic pairing GAN (RpGAN; Jolicoeur-Martineau 2019, as used by R3GAN, Huang et al. 2024).

    Each real sample is paired with a fake one and D scores the pair's difference:
    D: softplus(-(D(x) - D(G(z)))), G: softplus(-(D(G(z)) - D(x))). A score has no absolute meaning, only
    its gap to the paired one, so the diagnostics treat D like a critic (threshold at the midpoint). R3GAN
    adds zero-centred penalties on reals and fakes (R1 + R2): conf/loss/rpgan.yaml turns both on.
    """

    name = "rpgan"
    critic = True
    pairs_real_in_g = True

    def d_loss(self, real: Tensor, fake: Tensor) -> Tensor:
        return F.softplus(fake - real).mean()

    def g_loss(self, fake: Tensor, real: Tensor | None = None) -> Tensor:
        if real is None:
            raise ValueError("loss=rpgan needs D's scores of the real batch in the G phase")
        return F.softplus(real.detach() - fake).mean()

    def threshold(self, real: Tensor, fake: Tensor) -> Tensor:
        return 0.5 * (real.mean() + fake.mean())


class WassersteinGP(Wasserstein):
    """WGAN-GP (Gulrajani et al. 2017): two-sided penalty (||grad D(x_hat)|| - 1)^2 on interpolates."""

    name = "wgan_gp"
    allows_batchnorm = False

    def __init__(self, gp_weight: float = 10.0, center: float = 1.0, drift: float = 0.0):
        super().__init__(clip=None)
        self.gp_weight, self.center, self.drift = gp_weight, center, drift

    def d_regularizer(
        self,
        critic: Callable[[Tensor], Tensor],
        real: Tensor,
        fake: Tensor,
        grad_scale: float = 1.0,
        group: int = 1,
    ) -> dict[str, Tensor]:
        terms = {"gp": self.gp_weight * gradient_penalty(critic, real, fake, self.center, grad_scale, group)}
        if self.drift:
            terms["drift"] = self.drift * (critic(real) ** 2).mean()
        return terms


def gradient_penalty(
    critic: Callable[[Tensor], Tensor],
    real: Tensor,
    fake: Tensor,
    center: float = 1.0,
    grad_scale: float = 1.0,
    group: int = 1,
) -> Tensor:
    """E[(||grad_x critic(x_hat)||_2 - center)^2] with one interpolation factor per critic input.

    A critic input is `group` consecutive samples (1 unless PacGAN packing). One `autograd.grad` on
    the interpolates only; `create_graph` keeps just what the penalty's own backward needs.
    """
    n = real.shape[0] // group
    eps = torch.rand((n,) + (1,) * (real.dim() - 1), device=real.device, dtype=real.dtype)
    fake = fake.detach().to(real.dtype)  # under autocast G may emit bf16 while data stays fp32
    x_hat = torch.lerp(fake, real.detach(), eps.repeat_interleave(group, 0)).requires_grad_(True)
    out = critic(x_hat).float().sum()
    (grad,) = torch.autograd.grad(out * grad_scale, x_hat, create_graph=True)
    grad = grad.reshape(n, -1)
    if grad.dtype in (torch.float16, torch.bfloat16):
        grad = grad.float()
    norm = (grad / grad_scale).norm(2, dim=1)
    return ((norm - center) ** 2).mean()


LOSSES = {
    cls.name: cls
    for cls in (Minimax, NonSaturating, LSGAN, Hinge, Wasserstein, WassersteinGP, RelativisticPairing)
}
