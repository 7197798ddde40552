"""Sample figures from fixed noise every N epochs: PNG files in the run folder and logged images."""

from __future__ import annotations

from pathlib import Path

import lightning as L
import torch

from src.utils.figures import log_image, save_png, scatter_2d


class SampleFigures(L.Callback):
    def __init__(
        self,
        dirpath: str,
        every_n_epochs: int = 1,
        n_samples: int = 64,
        n_points: int = 2500,
        seed: int = 1234,
    ):
        self.dirpath = Path(dirpath)
        self.every_n_epochs, self.n_samples, self.n_points, self.seed = (
            every_n_epochs,
            n_samples,
            n_points,
            seed,
        )
        self.written: list[Path] = []

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        epoch = trainer.current_epoch
        last = trainer.should_stop or epoch + 1 >= (trainer.max_epochs or 0) > 0
        if (epoch + 1) % self.every_n_epochs and not last:
            return
        if trainer.is_global_zero:
            with torch.random.fork_rng(devices=[pl_module.device] if pl_module.device.type == "cuda" else []):
                self.render(trainer, pl_module, f"epoch{epoch:03d}")  # leaves the training stream alone

    def render(self, trainer: L.Trainer, pl_module: L.LightningModule, tag: str) -> dict[str, Path]:
        # The same seeded noise every time, so successive figures show the same latent points.
        gen = torch.Generator(device=pl_module.device).manual_seed(self.seed)
        if pl_module.sample_shape == (2,):
            images = {"scatter": self.scatter(trainer, pl_module, gen)}
        else:
            images = pl_module.figures(self.n_samples, gen)
        images.update(pl_module.evaluation_figures())  # the last evaluation's charts (class balance)
        paths = {}
        for name, img in images.items():
            paths[name] = save_png(img, self.dirpath / f"{name}_{tag}.png")
            save_png(img, self.dirpath / f"{name}_last.png")
            log_image(trainer.loggers, f"samples/{name}", img, pl_module.g_step)
            self.written.append(paths[name])
        return paths

    def scatter(self, trainer: L.Trainer, pl_module: L.LightningModule, gen: torch.Generator):
        fake = pl_module.sample(self.n_points, generator=gen)
        dm = trainer.datamodule
        real = dm.data["val"][0][: self.n_points] if dm is not None and "val" in dm.data else None
        means = dm.modes[0] if dm is not None and dm.modes is not None else None
        return scatter_2d(fake, real, means, title=f"G step {pl_module.g_step}")
