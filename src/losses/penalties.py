"""Zero-centred gradient penalties on D, added to whatever loss is selected (model.terms.r1, model.terms.r2).

R1 (Mescheder et al. 2018) penalises D's input gradient on the reals, R2 on the fakes:
gamma / 2 * E ||grad_x D(x)||^2. Near the equilibrium D is then flat on the data, so the game converges
locally instead of circling; R3GAN (Huang et al. 2024) uses both with its relativistic loss. They are
D-phase terms (a regulariser of D's adversarial score, unlike the auxiliary heads' terms): one more D pass
over the batch with a double backward, so they can run lazily, every `interval` D steps with the penalty
multiplied by `interval` (StyleGAN2's lazy regularisation, Karras et al. 2020).

The gradient is taken with respect to the image before the discriminator's augmentation (the callable
`Phase.discriminate` augments, as for every image D sees), as StyleGAN2-ADA does.
"""

from __future__ import annotations

from torch import Tensor, autograd

from src.losses.auxiliary import AuxTerm, Phase


class ZeroCentredPenalty(AuxTerm):
    """`samples="real"`: R1; `samples="fake"`: R2. gamma 0: off."""

    def __init__(self, gamma: float = 0.0, samples: str = "real", interval: int = 1):
        super().__init__()
        if samples not in ("real", "fake"):
            raise ValueError(
                f"a zero-centred penalty is taken on 'real' (R1) or 'fake' (R2) samples, got {samples!r}"
            )
        if gamma < 0 or interval < 1:
            raise ValueError(f"R1/R2: gamma must be >= 0 and interval >= 1, got {gamma} and {interval}")
        self.gamma, self.samples, self.interval = gamma, samples, int(interval)

    @property
    def active(self) -> bool:
        return self.gamma > 0

    def d_terms(self, phase: Phase) -> dict[str, Tensor]:
        if phase.step % self.interval:
            return {}
        images = phase.real if self.samples == "real" else phase.fake
        conditions = phase.labels if self.samples == "real" else phase.latent.get("y")
        sq = squared_grad_norm(lambda x: phase.discriminate(x, conditions).adv, images, phase.grad_scale)
        return {"penalty": self.interval * self.gamma / 2 * sq.mean()}


def squared_grad_norm(score, images: Tensor, grad_scale: float = 1.0) -> Tensor:
    """||grad_x score(x)||^2 per critic output (the scores of packed inputs share one gradient row).

    `grad_scale` is the mixed-precision loss scale: the gradient is taken of the scaled output (no fp16
    underflow) and unscaled before squaring."""
    x = images.detach().requires_grad_(True)
    out = score(x).float()
    (grad,) = autograd.grad(out.sum() * grad_scale, x, create_graph=True)
    grad = grad.float().reshape(out.shape[0], -1) / grad_scale
    return grad.square().sum(1)
