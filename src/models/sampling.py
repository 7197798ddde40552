"""Drawing samples and figures from a trained model: what the sample callback, `src.sample`, `src.eval` and
the metrics use. A mixin of GANModule, apart from the phase loop; it relies on the variant's hooks
(`sample_latent`, `run_generator`) and on `z_dist`, `latent_dim` and the generator networks."""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor, nn

from src.utils.figures import image_grid


def split_extras(out: Tensor | tuple[Tensor, dict[str, Tensor]]) -> tuple[Tensor, dict[str, Tensor]]:
    """G's output: images, or (images, extras such as CA's mu and log-variance)."""
    return out if isinstance(out, tuple) else (out, {})


class Sampling:
    takes_prompts = False  # text-conditioned models (StackGAN) draw samples for a caption: `sample_prompt`

    def sample_prompt(self, text: str, n: int, generator: torch.Generator | None = None) -> Tensor:
        raise NotImplementedError(f"{type(self).__name__} takes no text prompts")

    @property
    def sampler(self) -> nn.Module:
        """The generator used for samples and evaluation: the EMA copy when enabled."""
        return self.ema_generator if self.ema_generator is not None else self.generator

    @property
    def sample_shape(self) -> tuple[int, ...]:
        """The shape of one sample: [C, H, W] for images, [D] for vectors (the generator network's `shape`)."""
        return tuple(getattr(self.generator, "shape", ()))

    def sample_noise(self, n: int, dim: int, generator: torch.Generator | None = None) -> Tensor:
        device = self.device if generator is None else generator.device
        if self.z_dist == "uniform":
            z = torch.rand(n, dim, device=device, generator=generator) * 2 - 1
        else:
            z = torch.randn(n, dim, device=device, generator=generator)
        return z.to(self.device)

    @torch.no_grad()
    def sample(self, n: int, generator: torch.Generator | None = None, **latent: Tensor) -> Tensor:
        """n samples in eval mode (BatchNorm uses running statistics); latent entries may be fixed."""
        full = self.sample_latent(n, latent.get("y"), generator=generator)
        full.update({k: v.to(self.device) for k, v in latent.items()})
        return self.generate_eval(full)

    @torch.no_grad()
    def generate_eval(self, latent: dict[str, Tensor]) -> Tensor:
        net = self.sampler
        was_training = net.training
        net.eval()
        try:
            return split_extras(self.run_generator(net, latent))[0]
        finally:
            net.train(was_training)

    def figures(self, n: int, generator: torch.Generator | None = None) -> dict[str, np.ndarray]:
        """Named uint8 images for the sample callback and `src.sample`; variants add their own."""
        figures = {"samples": image_grid(self.sample(n, generator=generator))}
        if len(self.sample_shape) == 3:
            figures["traversal"] = self.traverse_noise(generator)
        return figures

    def traverse_noise(
        self,
        generator: torch.Generator | None = None,
        rows: int = 10,
        cols: int = 10,
        span: float = 2.0,
        dim: int = 0,
    ) -> np.ndarray:
        """Rows: fixed latents; columns: noise dimension `dim` from -span to span (InfoGAN's figure 2b)."""
        latent = self.sample_latent(rows, generator=generator)
        latent = {k: v.repeat_interleave(cols, 0) for k, v in latent.items()}
        latent["z"][:, dim] = torch.linspace(-span, span, cols, device=self.device).repeat(rows)
        return image_grid(self.generate_eval(latent), nrow=cols)
