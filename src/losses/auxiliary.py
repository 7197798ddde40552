"""Auxiliary terms added to whatever adversarial loss is selected.

Each term reads the step's context (real and fake batches, their labels or latent codes, the
discriminator's auxiliary outputs) and returns named losses for the D phase and the G phase.
They use only the auxiliary heads, never the adversarial score, so they are the same whether the
adversarial head is a probability (minimax) or a critic (WGAN).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import Tensor, nn

if TYPE_CHECKING:
    from src.models.module import GANModule


@dataclass
class DOut:
    """Discriminator outputs: the adversarial score per sample and any auxiliary heads."""

    adv: Tensor
    aux: dict[str, Tensor] = field(default_factory=dict)


@dataclass
class Context:
    """What an auxiliary term may look at in either phase."""

    module: GANModule
    real: Tensor | None
    labels: Tensor | None
    latent: dict[str, Tensor]
    fake: Tensor
    d_real: DOut | None
    d_fake: DOut
    extras: dict[str, Tensor] = field(default_factory=dict)


class AuxTerm(nn.Module):
    """An auxiliary objective added to whatever adversarial loss is selected (AC, InfoGAN MI, KL ...)."""

    def d_terms(self, ctx: Context) -> dict[str, Tensor]:
        return {}

    def g_terms(self, ctx: Context) -> dict[str, Tensor]:
        return {}

    def stats(self, ctx: Context) -> dict[str, Tensor]:
        """Diagnostics logged with the training metrics (accuracies and the like)."""
        return {}


class ClassTerm(AuxTerm):
    """AC-GAN (Odena et al. 2017): D's classifier head learns the labels of real (and fake) images;
    G is rewarded when its samples are classified as the label they were generated for."""

    head = "cls"

    def __init__(self, weight: float = 1.0, d_on_fake: bool = True):
        super().__init__()
        self.weight, self.d_on_fake = weight, d_on_fake

    def d_terms(self, ctx: Context) -> dict[str, Tensor]:
        terms = {"real": self.weight * F.cross_entropy(ctx.d_real.aux[self.head], ctx.labels)}
        if self.d_on_fake:
            terms["fake"] = self.weight * F.cross_entropy(ctx.d_fake.aux[self.head], ctx.latent["y"])
        return terms

    def g_terms(self, ctx: Context) -> dict[str, Tensor]:
        return {"fake": self.weight * F.cross_entropy(ctx.d_fake.aux[self.head], ctx.latent["y"])}

    def stats(self, ctx: Context) -> dict[str, Tensor]:
        out = {"fake_acc": (ctx.d_fake.aux[self.head].argmax(1) == ctx.latent["y"]).float().mean()}
        if ctx.d_real is not None:
            out["real_acc"] = (ctx.d_real.aux[self.head].argmax(1) == ctx.labels).float().mean()
        return out


class MutualInfoTerm(AuxTerm):
    """InfoGAN's variational lower bound on I(c; G(z, c)) (Chen et al. 2016), weighted by lambda.

    Q (a head on D's trunk) predicts the codes the fake was generated from: cross-entropy for each
    categorical code; for continuous codes a factored Gaussian NLL with learned variance (`gaussian`)
    or with fixed unit variance (`mse`). The same term is added in the D phase (training Q and the
    trunk) and the G phase (training G to make its codes recoverable). Computed on the sampled codes.
    """

    head = "q"

    def __init__(
        self,
        cat_dims: Sequence[int] = (10,),
        cont_dim: int = 2,
        weight_cat: float = 1.0,
        weight_cont: float = 1.0,
        cont_loss: str = "gaussian",
    ):
        super().__init__()
        if cont_loss not in ("gaussian", "mse"):
            raise ValueError(f"model.mi.cont_loss must be 'gaussian' or 'mse', got {cont_loss!r}")
        self.cat_dims, self.cont_dim = [int(k) for k in cat_dims], int(cont_dim)
        self.weight_cat, self.weight_cont, self.cont_loss = weight_cat, weight_cont, cont_loss

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

    def loss(self, q: Tensor, latent: dict[str, Tensor]) -> dict[str, Tensor]:
        logits, mean, logvar = self.split(q)
        terms = {}
        if self.cat_dims:
            ce = sum(F.cross_entropy(lg, latent["c_cat"][:, i]) for i, lg in enumerate(logits))
            terms["mi_cat"] = self.weight_cat * ce
        if self.cont_dim:
            err = (latent["c_cont"].float() - mean) ** 2
            nll = 0.5 * (logvar + err * torch.exp(-logvar)) if logvar is not None else 0.5 * err
            terms["mi_cont"] = self.weight_cont * nll.sum(1).mean()
        return terms

    def d_terms(self, ctx: Context) -> dict[str, Tensor]:
        return self.loss(ctx.d_fake.aux[self.head], ctx.latent)

    def g_terms(self, ctx: Context) -> dict[str, Tensor]:
        return self.loss(ctx.d_fake.aux[self.head], ctx.latent)

    def stats(self, ctx: Context) -> dict[str, Tensor]:
        logits, mean, _ = self.split(ctx.d_fake.aux[self.head])
        out = {}
        if self.cat_dims:
            out["cat_acc"] = (logits[0].argmax(1) == ctx.latent["c_cat"][:, 0]).float().mean()
        if self.cont_dim:
            out["cont_mse"] = ((ctx.latent["c_cont"].float() - mean) ** 2).mean()
        return out
