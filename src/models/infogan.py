"""InfoGAN (Chen et al. 2016): interpretable latent codes by maximising a mutual-information bound."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor

from src.losses.auxiliary import DOut, MutualInfoTerm
from src.models.module import GANModule
from src.models.networks.conditional import CodeGenerator
from src.utils.figures import image_grid


class InfoGAN(GANModule):
    """Latent = noise z + categorical codes (one-hot) + continuous codes U(-1, 1).

    Q is a head on D's trunk (`AuxHeadDiscriminator`); the MI term (`model.terms.info`, weight lambda) is
    added in both phases: it trains Q and the trunk in the D phase and G in the G phase.
    """

    def __init__(self, *args: Any, cat_dims: Sequence[int] = (10,), cont_dim: int = 2, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.cat_dims, self.cont_dim = [int(k) for k in cat_dims], int(cont_dim)
        codes = (self.cat_dims, self.cont_dim)
        if (
            not isinstance(self.generator, CodeGenerator)
            or (self.generator.cat_dims, self.generator.cont_dim) != codes
        ):
            raise ValueError(
                "model=infogan needs model.generator._target_=src.models.networks.conditional.CodeGenerator "
                "with cat_dims/cont_dim equal to model.cat_dims/model.cont_dim"
            )
        term = dict(self.aux_terms).get("info")
        if not isinstance(term, MutualInfoTerm) or (term.cat_dims, term.cont_dim) != codes:
            raise ValueError(
                "model=infogan needs its mutual-information term, model.terms.info "
                "(src.losses.auxiliary.MutualInfoTerm with cat_dims/cont_dim equal to model.cat_dims/model.cont_dim)"
            )
        self.info = term

    def sample_latent(
        self, n: int, labels: Tensor | None = None, generator: torch.Generator | None = None
    ) -> dict[str, Tensor]:
        device = self.device if generator is None else generator.device
        cat = [torch.randint(k, (n,), device=device, generator=generator) for k in self.cat_dims]
        c_cat = torch.stack(cat, 1) if cat else torch.zeros(n, 0, dtype=torch.long, device=device)
        c_cont = torch.rand(n, self.cont_dim, device=device, generator=generator) * 2 - 1
        z = self.sample_noise(n, self.latent_dim, generator)
        return {"z": z, "c_cat": c_cat.to(self.device), "c_cont": c_cont.to(self.device)}

    def run_generator(self, net: torch.nn.Module, latent: dict[str, Tensor]) -> Tensor:
        return net(latent["z"], latent["c_cat"], latent["c_cont"])

    def discriminate(self, x: Tensor, labels: Tensor | None = None) -> DOut:
        adv, aux = self.discriminator(x)
        return DOut(adv, aux)

    @torch.no_grad()
    def predict_codes(self, x: Tensor) -> Tensor:
        """Q's most likely value of the first categorical code for each image (c1 as a classifier)."""
        was_training = self.discriminator.training
        self.discriminator.eval()
        try:
            logits, _, _ = self.info.split(self.discriminator(x)[1][self.info.head])
        finally:
            self.discriminator.train(was_training)
        return logits[0].argmax(1)

    def eval_batch(self, real: Tensor, labels: Tensor | None) -> dict[str, Any]:
        out = super().eval_batch(real, labels)
        if self.cat_dims:
            out["code_pred"] = self.predict_codes(real)
        return out

    # --- the InfoGAN paper's figure 2 ---------------------------------------------------------------------
    def figures(self, n: int, generator: torch.Generator | None = None) -> dict[str, np.ndarray]:
        figures = {"samples": image_grid(self.sample(n, generator=generator))}
        if len(self.generator.shape) != 3 or not self.cat_dims:
            return figures
        figures["c1"] = self.code_grid(generator)
        for j in range(self.cont_dim):
            figures[f"c{j + 2}"] = self.traverse_code(j, generator)
        return figures

    def code_grid(self, generator: torch.Generator | None = None, cols: int = 10) -> np.ndarray:
        """(a) rows: each value of c1; columns: fixed noise; continuous codes 0."""
        k = self.cat_dims[0]
        latent = self.sample_latent(cols, generator=generator)
        latent = {name: v.repeat(k, *[1] * (v.dim() - 1)) for name, v in latent.items()}
        latent["c_cat"][:, 0] = torch.arange(k, device=self.device).repeat_interleave(cols)
        latent["c_cont"].zero_()
        return image_grid(self.generate_eval(latent), nrow=cols)

    def traverse_code(
        self, j: int, generator: torch.Generator | None = None, cols: int = 10, span: float = 2.0
    ) -> np.ndarray:
        """(c)/(d) rows: each value of c1; columns: continuous code j from -span to span; one fixed noise."""
        k = self.cat_dims[0]
        latent = self.sample_latent(1, generator=generator)
        latent = {name: v.repeat(k * cols, *[1] * (v.dim() - 1)) for name, v in latent.items()}
        latent["c_cat"][:, 0] = torch.arange(k, device=self.device).repeat_interleave(cols)
        latent["c_cont"].zero_()
        latent["c_cont"][:, j] = torch.linspace(-span, span, cols, device=self.device).repeat(k)
        return image_grid(self.generate_eval(latent), nrow=cols)

    @property
    def code_classes(self) -> int | None:
        return self.cat_dims[0] if self.cat_dims else None

    @property
    def continuous_codes(self) -> int:
        return self.cont_dim

    def condition_groups(self, latent: dict[str, Tensor]) -> Tensor | None:
        return latent["c_cat"][:, 0] if self.cat_dims else None
