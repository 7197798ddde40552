"""Auxiliary terms of text-conditioned GANs (StackGAN): the conditioning-augmentation KL and the
matching-aware discriminator's mismatched-text term. Like the AC and InfoGAN terms, they are added to
whatever adversarial loss is selected.
"""

from __future__ import annotations

import torch
from torch import Tensor

from src.losses.auxiliary import AuxTerm, Context


def kl_to_standard_normal(mu: Tensor, logvar: Tensor) -> Tensor:
    """KL(N(mu, sigma^2) || N(0, I)), averaged over the batch and the dimensions (the official code's scale)."""
    return 0.5 * (mu.float() ** 2 + logvar.float().exp() - 1 - logvar.float()).mean()


class KLTerm(AuxTerm):
    """Conditioning augmentation's regulariser (StackGAN, eq. 3): weight * KL(N(mu, sigma^2) || N(0, I)).

    G's conditioning layer (`CANet`) reports mu and log sigma^2 as extras; the term is added in the G
    phase, where they are computed with gradients. Logged as train/g_<name>_kl.
    """

    def __init__(self, weight: float = 2.0):
        super().__init__()
        self.weight = weight

    def g_terms(self, ctx: Context) -> dict[str, Tensor]:
        return {"kl": self.weight * kl_to_standard_normal(ctx.extras["mu"], ctx.extras["logvar"])}


class MismatchTerm(AuxTerm):
    """The matching-aware discriminator (Reed et al. 2016; StackGAN's D): a real image with another image's
    text counts as fake.

    D phase: weight * d_loss(D(x, t), D(x, t')) with the selected adversarial loss, t' being the batch's
    texts shifted by one. Added to d_loss(D(x, t), D(G(z, t), t)), with weight 1 this is twice the paper's
    D objective E[log D(x, t)] + (E[log(1 - D(G(z, t), t))] + E[log(1 - D(x, t'))]) / 2 for the minimax
    loss, and its analogue for the others. Logged as train/d_<name>_mismatch; `acc` is the share of
    mismatched pairs D calls fake.

    `contrast` > 0 (not in the paper): that share of the wrong texts are instead the data's contrast captions
    of the same image (`ctx.module.contrast_text`, e.g. the caption with one colour or shape changed). Another
    image's caption usually differs in everything, so D can tell it by colour alone; a contrast caption makes
    D check each attribute, and G with it.
    """

    def __init__(self, weight: float = 1.0, contrast: float = 0.0):
        super().__init__()
        if not 0 <= contrast <= 1:
            raise ValueError(f"model.mismatch_contrast must be in [0, 1], got {contrast}")
        self.weight, self.contrast = weight, contrast
        self._wrong: Tensor | None = None

    def d_terms(self, ctx: Context) -> dict[str, Tensor]:
        wrong = ctx.labels.roll(1, 0)
        if self.contrast:
            hard = getattr(ctx.module, "contrast_text", None)
            if hard is None:
                raise ValueError(
                    "model.mismatch_contrast > 0 needs contrast captions in the batches (data.contrast_captions > 0)"
                )
            pick = torch.rand(len(wrong), 1, device=wrong.device) < self.contrast
            wrong = torch.where(pick, hard.to(wrong.dtype), wrong)
        self._wrong = ctx.module.discriminate(ctx.real, wrong).adv
        return {"mismatch": self.weight * ctx.module.loss.d_loss(ctx.d_real.adv, self._wrong)}

    def stats(self, ctx: Context) -> dict[str, Tensor]:
        loss, real, wrong = ctx.module.loss, ctx.d_real.adv.detach(), self._wrong.detach()
        return {"acc": loss.accuracy(real, wrong)[1], "d_wrong": loss.prob(wrong).mean()}
