"""The shared adversarial training step: one LightningModule that every GAN variant builds on.

Each training batch is one discriminator step; every `n_critic`-th batch is followed by one
generator step. Variants change only the hooks: `sample_latent`, `generate`, `discriminate`
and the auxiliary terms they add (class, mutual information, KL ...).

Steps are counted by the module itself (`d_step`, `g_step`) and saved in checkpoints: with two
optimizers Lightning's `global_step` counts both, so every schedule here (n_critic, logging
every `trainer.log_every_n_steps` G steps, `trainer.max_steps` as G steps) uses these counters.
"""

from __future__ import annotations

import copy
import logging
import math
from collections.abc import Callable, Mapping
from functools import partial
from typing import Any

import lightning as L
import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf
from torch import Tensor, nn

from src.errors import ConfigError, NonFiniteError
from src.losses import AdversarialLoss
from src.losses.auxiliary import AuxTerm, Context, DOut, ModeSeekingTerm
from src.models.optim import build_optimizer
from src.utils.figures import image_grid
from src.utils.run import last_checkpoint

log = logging.getLogger(__name__)


class GANModule(L.LightningModule):
    def __init__(
        self,
        generator: nn.Module,
        discriminator: nn.Module,
        loss: AdversarialLoss,
        optimizer_g: Mapping[str, Any],
        optimizer_d: Mapping[str, Any],
        latent_dim: int,
        n_critic: int = 1,
        z_dist: str = "normal",
        pack: int = 1,
        aux_terms: Mapping[str, AuxTerm] | None = None,
        lr_schedule: Mapping[str, Any] | None = None,
        ema_decay: float | None = None,
        ema_start: int = 0,
        on_nonfinite: str = "stop",
        max_loss: float | None = 1e6,
        d_batch: str = "separate",
        mode_seeking: float = 0.0,
    ):
        super().__init__()
        if n_critic < 1:
            raise ValueError(f"model.n_critic must be >= 1, got {n_critic}")
        if z_dist not in ("normal", "uniform"):
            raise ValueError(f"model.z_dist must be 'normal' or 'uniform', got {z_dist!r}")
        if pack < 1:
            raise ValueError(f"model.pack must be >= 1, got {pack}")
        if getattr(discriminator, "pack", 1) != pack:
            raise ValueError(
                f"model.pack={pack} but the discriminator was built for pack={discriminator.pack}"
            )
        self.automatic_optimization = False
        self.generator, self.discriminator, self.loss = generator, discriminator, loss
        self.loss.check(self.critic)
        self.aux_terms = nn.ModuleDict(aux_terms or {})
        if mode_seeking < 0:
            raise ValueError(f"model.mode_seeking must be >= 0 (0: off), got {mode_seeking}")
        if mode_seeking:
            self.aux_terms["ms"] = ModeSeekingTerm(mode_seeking)
        self.optimizer_g, self.optimizer_d = _plain(optimizer_g), _plain(optimizer_d)
        self.lr_schedule = _plain(lr_schedule or {"name": "constant"})
        for options in (self.optimizer_g, self.optimizer_d):  # validate now, not when fit starts
            build_optimizer([nn.Parameter(torch.zeros(1))], **options)
        lr_factor({**self.lr_schedule, "total_steps": 1}, 0)  # the step count may come from the Trainer
        self.latent_dim, self.n_critic, self.z_dist, self.pack = latent_dim, n_critic, z_dist, pack
        if on_nonfinite not in ("stop", "skip", "off"):
            raise ValueError(f"model.on_nonfinite must be stop, skip or off, got {on_nonfinite!r}")
        self.on_nonfinite, self.skipped = on_nonfinite, {"d": 0, "g": 0}
        self.max_loss = max_loss  # a finite loss beyond this is treated as diverged, like a NaN
        if d_batch not in ("separate", "joint"):
            raise ValueError(f"model.d_batch must be 'separate' or 'joint', got {d_batch!r}")
        self.d_batch = d_batch
        self._labelled: bool | None = None
        self.memory_format: torch.memory_format | None = None  # channels_last when perf.channels_last
        if ema_decay is not None and not 0 < ema_decay < 1:
            raise ValueError(f"model.ema_decay must be in (0, 1) or null, got {ema_decay}")
        # An exponential moving average of G alone, used for samples and evaluation when enabled.
        self.ema_decay, self.ema_start = ema_decay, ema_start
        self.ema_generator = copy.deepcopy(generator).requires_grad_(False) if ema_decay else None
        # Evaluation metrics, updated in validation_step. A plain dict, not submodules: feature
        # extractors (Inception, the domain classifier) stay out of the checkpoints.
        self.metrics: dict[str, Any] = {}
        self.d_step = 0
        self.g_step = 0
        self.run_config: dict | None = None  # the composed Hydra config, stored in checkpoints
        self.choices: dict[str, str] = {}  # the config groups picked (model=..., loss=...), stored too
        self.last_logged: dict[str, float] = {}
        self._pending: dict[str, Tensor] = {}

    # --- hooks a variant overrides ----------------------------------------------------------------
    def sample_latent(
        self, n: int, labels: Tensor | None = None, generator: torch.Generator | None = None
    ) -> dict[str, Tensor]:
        """Everything G needs for n samples. `labels` are the real batch's labels, if any."""
        return {"z": self.sample_noise(n, self.latent_dim, generator)}

    def resample_noise(self, latent: dict[str, Tensor]) -> tuple[dict[str, Tensor], list[str]]:
        """The latent with fresh noise and the same conditions (labels, codes, text), and the names of the
        entries redrawn (the mode-seeking term compares samples of one condition)."""
        return {**latent, "z": self.sample_noise(latent["z"].shape[0], latent["z"].shape[1])}, ["z"]

    def run_generator(self, net: nn.Module, latent: dict[str, Tensor]) -> Tensor:
        """Call a generator network (the trained one or its EMA) on a latent dict."""
        return net(latent["z"])

    def generate(self, latent: dict[str, Tensor]) -> Tensor:
        return self.run_generator(self.generator, latent)

    @property
    def sampler(self) -> nn.Module:
        """The generator used for samples and evaluation: the EMA copy when enabled."""
        return self.ema_generator if self.ema_generator is not None else self.generator

    def discriminate(self, x: Tensor, labels: Tensor | None = None) -> DOut:
        return DOut(self.discriminator(x))

    def check_data(self, datamodule: Any) -> None:
        """Raise ConfigError at start-up if the model cannot train on this data (conditional models need labels)."""

    @property
    def critic(self) -> nn.Module:
        """The adversarial path of D (without auxiliary heads): what clipping and norm rules apply to."""
        return getattr(self.discriminator, "critic", self.discriminator)

    # --- helpers for the hooks ----------------------------------------------------------------------
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
            return self.split_extras(self.run_generator(net, latent))[0]
        finally:
            net.train(was_training)

    @torch.no_grad()
    def update_ema(self) -> None:
        if self.ema_generator is None:
            return
        ema_params, params = list(self.ema_generator.parameters()), list(self.generator.parameters())
        if self.g_step <= self.ema_start:
            torch._foreach_copy_(ema_params, params)
        else:
            torch._foreach_lerp_(ema_params, params, 1.0 - self.ema_decay)
        for ema_buf, buf in zip(self.ema_generator.buffers(), self.generator.buffers()):
            ema_buf.copy_(buf)

    def figures(self, n: int, generator: torch.Generator | None = None) -> dict[str, np.ndarray]:
        """Named uint8 images for the sample callback and `src.sample`; variants add their own."""
        figures = {"samples": image_grid(self.sample(n, generator=generator))}
        if len(getattr(self.generator, "shape", ())) == 3:
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

    def evaluation_metrics(self, datamodule: Any, evaluator: Callable) -> dict[str, Callable]:
        """Metric factories that apply to this model on this data; `evaluator()` gives the domain classifier."""
        return {}

    # --- the shared step ----------------------------------------------------------------------------
    def training_step(self, batch: Any, batch_idx: int) -> None:
        real, labels = self.unpack_batch(batch)
        opt_d, opt_g = self.optimizers()
        logs_next_g = (self.g_step + 1) % max(self.trainer.log_every_n_steps, 1) == 0
        g_follows = (self.d_step + 1) % self.n_critic == 0
        with self.toggled_optimizer(opt_d):
            self.discriminator_step(opt_d, real, labels, log=logs_next_g and g_follows)
        self.d_step += 1
        if g_follows:
            with self.toggled_optimizer(opt_g):
                self.generator_step(opt_g, real, labels, log=logs_next_g)
            self.g_step += 1
            self.update_ema()
            for scheduler in self.lr_schedulers() or []:
                scheduler.step()
            if logs_next_g:
                self.emit(self._pending)
                self._pending = {}

    def discriminator_step(self, opt: Any, real: Tensor, labels: Tensor | None, log: bool) -> None:
        latent = self.sample_latent(real.shape[0], labels)
        with torch.no_grad():
            fake, _ = self.split_extras(self.generate(latent))
        d_real, d_fake = self.discriminate_pair(real, labels, fake, latent.get("y"))
        ctx = Context(self, real, labels, latent, fake, d_real, d_fake)
        terms = {"adv": self.loss.d_loss(d_real.adv, d_fake.adv)}
        critic = lambda x: self.discriminate(x, labels).adv  # noqa: E731
        terms.update(
            self.loss.d_regularizer(critic, real, fake, grad_scale=self.grad_scale(), group=self.pack)
        )
        for name, term in self.aux_terms.items():
            terms.update({f"{name}_{k}": v for k, v in term.d_terms(ctx).items()})
        if log:
            self._pending.update(self.d_stats(d_real.adv.detach(), d_fake.adv.detach()))
            for name, term in self.aux_terms.items():
                self._pending.update({f"train/{name}_{k}": v.detach() for k, v in term.stats(ctx).items()})
        if self.optimize(opt, "d", terms, self.discriminator, log):
            self.loss.after_d_step(self.critic)

    def generator_step(self, opt: Any, real: Tensor, labels: Tensor | None, log: bool) -> None:
        latent = self.sample_latent(real.shape[0], labels)
        fake, extras = self.split_extras(self.generate(latent))
        if self.d_batch == "joint":
            d_fake = self.discriminate_pair(real, labels, fake, latent.get("y"))[1]
        else:
            d_fake = self.discriminate(fake, latent.get("y"))
        ctx = Context(self, real, labels, latent, fake, None, d_fake, extras)
        terms = {"adv": self.loss.g_loss(d_fake.adv)}
        for name, term in self.aux_terms.items():
            terms.update({f"{name}_{k}": v for k, v in term.g_terms(ctx).items()})
        self.optimize(opt, "g", terms, self.generator, log)

    def discriminate_pair(
        self, real: Tensor, labels: Tensor | None, fake: Tensor, fake_labels: Tensor | None
    ) -> tuple[DOut, DOut]:
        """D on the real and the fake batch: one after the other (`separate`), or as one batch (`joint`),
        so that batch statistics (BatchNorm) are those of real and fake together, as at evaluation."""
        if self.d_batch == "separate":
            return self.discriminate(real, labels), self.discriminate(fake, fake_labels)
        conditions = None if labels is None or fake_labels is None else torch.cat([labels, fake_labels])
        both = self.discriminate(torch.cat([real, fake.to(real.dtype)]), conditions)
        adv, *aux = [t.tensor_split(2) for t in (both.adv, *both.aux.values())]  # equal halves, packed or not
        return tuple(DOut(adv[i], {k: v[i] for k, v in zip(both.aux, aux)}) for i in (0, 1))

    def optimize(self, opt: Any, phase: str, terms: dict[str, Tensor], net: nn.Module, log: bool) -> bool:
        """Backward the sum of the terms and step, unless a loss or gradient is not finite."""
        total = sum(terms.values())
        opt.zero_grad(set_to_none=True)
        self.manual_backward(total)
        if log:
            self._pending[f"train/{phase}_grad_norm"] = self.grad_norm(net)
            self._pending.update({f"train/{phase}_{k}": v.detach() for k, v in terms.items()})
            self._pending[f"train/{phase}_loss"] = total.detach()
        if self.on_nonfinite != "off" and not self.is_finite(total, net):
            self.nonfinite(phase, terms, opt)
            return False
        opt.step()
        return True

    def is_finite(self, total: Tensor, net: nn.Module) -> bool:
        ok = torch.isfinite(total.detach())
        if self.max_loss:
            ok = ok & (total.detach().abs() <= self.max_loss)
        if self.grad_scale() == 1.0:  # under fp16 loss scaling, inf gradients are the scaler's to skip
            grads = [p.grad for p in net.parameters() if p.grad is not None]
            if grads:
                ok = ok & torch.isfinite(torch.stack(torch._foreach_norm(grads))).all()
        return bool(ok)

    def nonfinite(self, phase: str, terms: dict[str, Tensor], opt: Any) -> None:
        """A non-finite loss or gradient, or a loss beyond model.max_loss: skip the step or stop."""
        values = {k: float(v.detach().float().sum()) for k, v in terms.items()}
        total = sum(values.values())
        nonfinite = [k for k, v in values.items() if not math.isfinite(v)]
        if nonfinite or not math.isfinite(total):
            what = f"non-finite {', '.join(nonfinite or ['loss'])}"
        elif self.max_loss and abs(total) > self.max_loss:  # the same test as is_finite, on the total
            shown = ", ".join(f"{k} = {v:.3g}" for k, v in values.items())
            what = f"loss beyond model.max_loss={self.max_loss:g} ({shown}: diverged)"
        else:
            what = "non-finite gradients"
        where = f"G step {self.g_step}, D step {self.d_step}, {'discriminator' if phase == 'd' else 'generator'} phase"
        if self.on_nonfinite == "skip":
            opt.zero_grad(set_to_none=True)
            self.skipped[phase] += 1
            log.warning(
                "skipped a step: %s (%s); %d skipped so far",
                what,
                where,
                sum(self.skipped.values()),
            )
            return
        ckpt = last_checkpoint(self.trainer) if self._trainer else ""
        raise NonFiniteError(
            f"{what} at {where} (term names: {', '.join(terms)}); "
            "training stopped. "
            f"Last good checkpoint: {ckpt or 'none written yet'}. Lower the learning rate, check the data, "
            "or set model.on_nonfinite=skip to skip such steps and count them."
        )

    @staticmethod
    def split_extras(out: Tensor | tuple[Tensor, dict[str, Tensor]]) -> tuple[Tensor, dict[str, Tensor]]:
        return out if isinstance(out, tuple) else (out, {})

    def unpack_batch(self, batch: Any) -> tuple[Tensor, Tensor | None]:
        if isinstance(batch, list | tuple):
            x, y = batch[0], batch[1] if len(batch) > 1 else None
        else:
            x, y = batch, None
        if self.memory_format is not None:
            x = x.contiguous(memory_format=self.memory_format)
        if y is None or y.dim() == 0:
            return x, None
        if self._labelled is None:  # unlabelled data carries label -1; decided once (a device sync)
            self._labelled = bool((y >= 0).any())
        return x, (y if self._labelled else None)

    # --- diagnostics ----------------------------------------------------------------------------------
    def d_stats(self, real: Tensor, fake: Tensor) -> dict[str, Tensor]:
        acc_real, acc_fake = self.loss.accuracy(real, fake)
        stats = {
            "train/d_real": self.loss.prob(real).mean(),
            "train/d_fake": self.loss.prob(fake).mean(),
            "train/d_acc_real": acc_real,
            "train/d_acc_fake": acc_fake,
            "train/d_acc": 0.5 * (acc_real + acc_fake),
        }
        if self.loss.critic:
            stats["train/wasserstein"] = real.mean() - fake.mean()
        return stats

    def grad_scale(self) -> float:
        scaler = getattr(self.trainer.precision_plugin, "scaler", None) if self._trainer else None
        return float(scaler.get_scale()) if scaler is not None and scaler.is_enabled() else 1.0

    def grad_norm(self, net: nn.Module) -> Tensor:
        grads = [p.grad for p in net.parameters() if p.grad is not None]
        if not grads:
            return torch.zeros((), device=self.device)
        return torch.linalg.vector_norm(torch.stack(torch._foreach_norm(grads))) / self.grad_scale()

    def emit(self, metrics: Mapping[str, Tensor | float]) -> None:
        """Send scalars to every logger at x = G step, with a single device sync."""
        if not metrics:
            return
        keys = list(metrics)
        values = torch.stack(
            [torch.as_tensor(v, device=self.device).float().reshape(()) for v in metrics.values()]
        )
        scalars = dict(zip(keys, values.cpu().tolist()))
        scalars.update({"train/d_step": float(self.d_step), "train/g_step": float(self.g_step)})
        if any(self.skipped.values()):
            scalars.update({f"train/skipped_{k}": float(v) for k, v in self.skipped.items()})
        self.last_logged.update(scalars)
        for logger in self.loggers:
            logger.log_metrics(scalars, step=self.g_step)
        bar = {k.split("/")[-1]: scalars[k] for k in ("train/d_loss", "train/g_loss") if k in scalars}
        if bar:
            self.log_dict(bar, prog_bar=True, logger=False, on_step=True, on_epoch=False)

    # --- evaluation -----------------------------------------------------------------------------------
    def validation_step(self, batch: Any, batch_idx: int) -> None:
        if not self.metrics:
            return
        inputs = self.eval_batch(*self.unpack_batch(batch))
        for metric in self.metrics.values():
            metric.update(**inputs)

    @torch.no_grad()
    def eval_batch(self, real: Tensor, labels: Tensor | None) -> dict[str, Any]:
        """What evaluation metrics see for one held-out batch: real images, as many fakes (with the
        real labels, for conditional models) and the latent they came from. Metrics take what they need."""
        latent = self.sample_latent(real.shape[0], labels)
        return {"real": real, "fake": self.generate_eval(latent), "labels": labels, "latent": latent}

    def on_validation_epoch_start(self) -> None:
        for metric in self.metrics.values():
            metric.to(self.device)

    def on_validation_epoch_end(self) -> None:
        if not self.metrics:
            return
        results = {}
        for metric in self.metrics.values():
            results.update({f"val/{k}": v for k, v in metric.compute().items()})
            metric.reset()
        self.log_dict(results, logger=False)  # callback metrics: checkpoint monitors see them
        if not self.trainer.sanity_checking:
            self.emit(results)

    # --- optimizers and checkpoints -----------------------------------------------------------------
    def configure_optimizers(self) -> tuple[list[torch.optim.Optimizer], list[Any]]:
        d_params = list(self.discriminator.parameters()) + [
            p for t in self.aux_terms.values() for p in getattr(t, "d_parameters", lambda: [])()
        ]
        g_params = list(self.generator.parameters()) + [
            p for t in self.aux_terms.values() for p in getattr(t, "g_parameters", lambda: [])()
        ]
        opts = [build_optimizer(d_params, **self.optimizer_d), build_optimizer(g_params, **self.optimizer_g)]
        if self.lr_schedule["name"] == "constant":
            return opts, []
        schedule = {**self.lr_schedule, "total_steps": self.total_g_steps()}
        try:
            lr_factor(schedule, 0)
        except ValueError as e:
            raise ConfigError(str(e)) from None
        # Both schedules advance once per generator step (stepped in training_step).
        return opts, [torch.optim.lr_scheduler.LambdaLR(opt, partial(lr_factor, schedule)) for opt in opts]

    def total_g_steps(self) -> int:
        """The run's length in G steps: trainer.max_steps, else what max_epochs gives."""
        total = self.lr_schedule.get("total_steps") or -1
        if total <= 0 and self._trainer is not None:
            batches = self.trainer.estimated_stepping_batches
            total = int(batches) // self.n_critic if math.isfinite(batches) else -1
        return total

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint.setdefault("gan_zoo", {}).update(
            {
                "d_step": self.d_step,
                "g_step": self.g_step,
                "skipped": dict(self.skipped),
                "config": self.run_config,
                "choices": self.choices,
            }
        )
        wandb_ids = [lg.version for lg in self.loggers if type(lg).__name__ == "WandbLogger"]
        if wandb_ids:
            checkpoint["gan_zoo"]["wandb_id"] = wandb_ids[0]

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        state = checkpoint.get("gan_zoo", {})
        self.d_step, self.g_step = state.get("d_step", 0), state.get("g_step", 0)
        self.skipped = dict(state.get("skipped", {"d": 0, "g": 0}))


def lr_factor(schedule: Mapping[str, Any], g_step: int) -> float:
    """Learning-rate multiplier after `g_step` generator steps.

    constant: 1. linear_decay: 1 until `decay_start` (a fraction of `total_steps`), then linearly to 0.
    """
    name = schedule.get("name", "constant")
    if name == "constant":
        return 1.0
    if name != "linear_decay":
        raise ValueError(f"unknown model.lr_schedule.name {name!r}; valid choices: constant, linear_decay")
    total, start = schedule.get("total_steps") or -1, schedule.get("decay_start", 0.5)
    if total <= 0:
        raise ValueError(
            "model.lr_schedule.name=linear_decay needs the run's length: set trainer.max_steps (G steps) or "
            "trainer.max_epochs, or use model.lr_schedule.name=constant"
        )
    if not 0 <= start < 1:
        raise ValueError(f"model.lr_schedule.decay_start must be in [0, 1), got {start}")
    begin = start * total
    return 1.0 if g_step <= begin else max(0.0, (total - g_step) / (total - begin))


def _plain(cfg: Mapping[str, Any]) -> dict[str, Any]:
    return OmegaConf.to_container(cfg, resolve=True) if isinstance(cfg, DictConfig) else dict(cfg)
