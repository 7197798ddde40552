"""Auxiliary terms of text-conditioned GANs (StackGAN): the conditioning-augmentation KL, the
matching-aware discriminator's mismatched-text term and an image-text contrastive term. Like the AC and
InfoGAN terms, they are added to whatever adversarial loss is selected.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from src.losses.auxiliary import AuxTerm, DOut, Phase


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

    @property
    def active(self) -> bool:
        return self.weight > 0

    def g_terms(self, phase: Phase) -> dict[str, Tensor]:
        return {"kl": self.weight * kl_to_standard_normal(phase.extras["mu"], phase.extras["logvar"])}


class MismatchTerm(AuxTerm):
    """The matching-aware discriminator (Reed et al. 2016; StackGAN's D): a real image with another image's
    text counts as fake.

    D phase: weight * d_loss(D(x, t), D(x, t')) with the selected adversarial loss, t' being the batch's
    texts shifted by one. Added to d_loss(D(x, t), D(G(z, t), t)), with weight 1 this is twice the paper's
    D objective E[log D(x, t)] + (E[log(1 - D(G(z, t), t))] + E[log(1 - D(x, t'))]) / 2 for the minimax
    loss, and its analogue for the others. Logged as train/d_<name>_mismatch; `acc` is the share of
    mismatched pairs D calls fake.

    `contrast` > 0 (not in the paper): that share of the wrong texts are instead the data's contrast captions
    of the same image (`Phase.batch_extras['contrast']`, e.g. the caption with one colour or shape changed). Another
    image's caption usually differs in everything, so D can tell it by colour alone; a contrast caption makes
    D check each attribute, and G with it.
    """

    def __init__(self, weight: float = 1.0, contrast: float = 0.0):
        super().__init__()
        if not 0 <= contrast <= 1:
            raise ValueError(f"model.terms.match.contrast must be in [0, 1], got {contrast}")
        self.weight, self.contrast = weight, contrast
        self._wrong: Tensor | None = None

    @property
    def active(self) -> bool:
        return self.weight > 0

    def d_terms(self, phase: Phase) -> dict[str, Tensor]:
        wrong = phase.labels.roll(1, 0)
        if self.contrast:
            hard = phase.batch_extras.get("contrast")
            if hard is None:
                raise ValueError(
                    "model.terms.match.contrast > 0 needs contrast captions in the batches (data.contrast_captions > 0)"
                )
            pick = torch.rand(len(wrong), 1, device=wrong.device) < self.contrast
            wrong = torch.where(pick, hard.to(wrong.dtype), wrong)
        self._wrong = phase.discriminate(phase.real, wrong).adv
        return {"mismatch": self.weight * phase.loss.d_loss(phase.d_real.adv, self._wrong)}

    def stats(self, phase: Phase) -> dict[str, Tensor]:
        loss, real, wrong = phase.loss, phase.d_real.adv.detach(), self._wrong.detach()
        return {"acc": loss.accuracy(real, wrong)[1], "d_wrong": loss.prob(wrong).mean()}


def contrastive(image: Tensor, text: Tensor, same: Tensor, temperature: float) -> tuple[Tensor, Tensor]:
    """(InfoNCE loss both ways over the batch, share of images whose own text scores highest). `same`: (B, B)
    pairs with identical texts, left out as negatives."""
    logits = F.normalize(image.float(), dim=1) @ F.normalize(text.float(), dim=1).T / temperature
    logits = logits.masked_fill(same & ~torch.eye(len(same), dtype=torch.bool, device=same.device), -1e4)
    target = torch.arange(len(logits), device=logits.device)
    loss = (F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target)) / 2
    return loss, (logits.argmax(1) == target).float().mean()


class TextMatchTerm(AuxTerm):
    """Image-text contrastive term (not in StackGAN; the sentence-level loss of XMC-GAN, Zhang et al. 2021):
    D embeds images (from its trunk, before it sees the text) and texts in one space.

    D phase: on the real batch, each image must pick its own caption among the batch's, and each caption its
    image (InfoNCE both ways, cosine similarity / `temperature`). G phase: the same for the fakes and the texts
    they were generated from, so G is pushed to draw what the caption says in a form D can read, not only to
    look real. Captions identical to an image's own are not counted as negatives. Logged as
    train/d_<name>_real, train/g_<name>_fake; `real_acc` / `fake_acc`: images whose own caption ranks first.
    Needs D's embedding heads (model.discriminator.embed_dim > 0).
    """

    def __init__(self, weight: float = 1.0, temperature: float = 0.1):
        super().__init__()
        if weight < 0 or temperature <= 0:
            raise ValueError(
                "model.terms.itc.weight must be >= 0 and model.terms.itc.temperature > 0, "
                f"got {weight} and {temperature}"
            )
        self.weight, self.temperature = weight, temperature

    @property
    def active(self) -> bool:
        return self.weight > 0

    def pair(self, out: DOut, texts: Tensor) -> tuple[Tensor, Tensor]:
        same = (texts[:, None] == texts[None]).all(2)
        return contrastive(out.aux["image"], out.aux["text"], same, self.temperature)

    def d_terms(self, phase: Phase) -> dict[str, Tensor]:
        return {"real": self.weight * self.pair(phase.d_real, phase.labels)[0]}

    def g_terms(self, phase: Phase) -> dict[str, Tensor]:
        return {"fake": self.weight * self.pair(phase.d_fake, phase.latent["y"])[0]}

    def stats(self, phase: Phase) -> dict[str, Tensor]:
        out = {"fake_acc": self.pair(phase.d_fake, phase.latent["y"])[1]}
        if phase.d_real is not None:
            out["real_acc"] = self.pair(phase.d_real, phase.labels)[1]
        return out
