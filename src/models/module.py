"""The shared adversarial training step: one LightningModule that every GAN variant builds on.

Each training batch is one discriminator phase; every `n_critic`-th batch is followed by one generator
phase. Variants change only the hooks: `sample_latent` (what G consumes), `run_generator`,
`discriminate`; auxiliary objectives are terms handed to the model by config (`model.terms`).
Around the loop, small collaborators do one job each: the non-finite guard (guard.py), the EMA of G
(ema.py), the training diagnostics (trainlog.py), the learning-rate schedule (schedules.py); drawing
samples and figures (sampling.py) and validation (evaluation.py) are mixins of their own.

Steps are counted by the module itself (`d_step`, `g_step`) and saved in checkpoints: with two
optimizers Lightning's `global_step` counts both, so every schedule here (n_critic, logging
every `trainer.log_every_n_steps` G steps, `trainer.max_steps` as G steps) uses these counters.
"""

from __future__ import annotations

import copy
import functools
import math
import operator
from collections.abc import Callable, Mapping
from typing import Any

import lightning as L
import torch
from torch import Tensor, nn

from src.errors import ConfigError
from src.losses import AdversarialLoss
from src.losses.auxiliary import AuxTerm, DOut, Phase
from src.models.augment import DiffAugment
from src.models.ema import EMA
from src.models.evaluation import Evaluation
from src.models.guard import NonFiniteGuard
from src.models.networks.conditional import add_heads
from src.models.optim import needs_length, optimizer_factory, schedule_factory
from src.models.sampling import Sampling, split_extras
from src.models.trainlog import TrainLog, batch_diversity, grad_norm
from src.utils.run import last_checkpoint

Factory = Callable[..., Any]


class GANModule(Sampling, Evaluation, L.LightningModule):
    def __init__(
        self,
        generator: nn.Module,
        discriminator: nn.Module,
        loss: AdversarialLoss,
        optimizer_g: Factory,
        optimizer_d: Factory,
        latent_dim: int,
        n_critic: int = 1,
        z_dist: str = "normal",
        pack: int = 1,
        terms: Mapping[str, AuxTerm | None] | None = None,
        lr_schedule: Factory | None = None,
        ema_decay: float | None = None,
        ema_start: int = 0,
        on_nonfinite: str = "stop",
        max_loss: float | None = 1e6,
        d_batch: str = "separate",
        augment: DiffAugment | None = None,
    ):
        super().__init__()
        check_choice("model.z_dist", z_dist, ("normal", "uniform"))
        check_choice("model.d_batch", d_batch, ("separate", "joint"))
        if n_critic < 1 or pack < 1:
            raise ValueError(f"model.n_critic and model.pack must be >= 1, got {n_critic} and {pack}")
        if getattr(discriminator, "pack", 1) != pack:
            raise ValueError(
                f"model.pack={pack} but the discriminator was built for pack={discriminator.pack}"
            )
        self.automatic_optimization = False
        self.generator, self.discriminator, self.loss = generator, discriminator, loss
        self.loss.check(self.critic)
        self.aux_terms = nn.ModuleDict({k: t for k, t in (terms or {}).items() if t is not None and t.active})
        self.optimizer_g = optimizer_factory(optimizer_g, "optimizer_g")
        self.optimizer_d = optimizer_factory(optimizer_d, "optimizer_d")
        self.lr_schedule = schedule_factory(lr_schedule)
        self.latent_dim, self.n_critic, self.z_dist, self.pack, self.d_batch = (
            latent_dim, n_critic, z_dist, pack, d_batch,
        )  # fmt: skip
        self.guard = NonFiniteGuard(on_nonfinite, max_loss)
        self.ema = EMA(ema_decay, ema_start) if ema_decay is not None else None
        self.ema_generator = copy.deepcopy(generator).requires_grad_(False) if self.ema else None
        add_heads(discriminator, {h: n for t in self.aux_terms.values() for h, n in t.heads().items()})
        self.augment = augment
        self.trainlog = TrainLog()
        # Evaluation metrics, updated in validation_step. A plain dict, not submodules: feature
        # extractors (Inception, the domain classifier) stay out of the checkpoints.
        self.metrics: dict[str, Any] = {}
        self.d_step = self.g_step = 0
        self.run_config: dict | None = None  # the composed Hydra config, stored in checkpoints
        self.choices: dict[str, str] = {}  # the config groups picked (model=..., loss=...), stored too
        self.memory_format: torch.memory_format | None = None  # channels_last when perf.channels_last
        self._labelled: bool | None = None

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

    def discriminate(self, x: Tensor, labels: Tensor | None = None) -> DOut:
        return DOut(self.discriminator(x))

    def check_data(self, datamodule: Any) -> None:
        """Raise ConfigError at start-up if the model cannot train on this data (conditional models need labels)."""

    def unpack_batch(self, batch: Any) -> tuple[Tensor, Tensor | None, dict[str, Tensor]]:
        """(images, labels or None, more fields of the batch by name) of a training or held-out batch."""
        x, y = (
            (batch[0], batch[1] if len(batch) > 1 else None)
            if isinstance(batch, list | tuple)
            else (batch, None)
        )
        if self.memory_format is not None:
            x = x.contiguous(memory_format=self.memory_format)
        if y is None or y.dim() == 0:
            return x, None, {}
        if self._labelled is None:  # unlabelled data carries label -1; decided once (a device sync)
            self._labelled = bool((y >= 0).any())
        return x, (y if self._labelled else None), {}

    # --- helpers for the hooks ----------------------------------------------------------------------
    def generate(self, latent: dict[str, Tensor]) -> Tensor | tuple[Tensor, dict[str, Tensor]]:
        return self.run_generator(self.generator, latent)

    def score(self, x: Tensor, labels: Tensor | None = None) -> DOut:
        """D as trained: `discriminate` on the augmented images (model.augment), for every image D sees in
        training, reals and fakes, both phases, regularisers and auxiliary terms. Evaluation calls
        `discriminate` itself."""
        return self.discriminate(x if self.augment is None else self.augment(x), labels)

    @property
    def critic(self) -> nn.Module:
        """The adversarial path of D (without auxiliary heads): what clipping and norm rules apply to."""
        return getattr(self.discriminator, "critic", self.discriminator)

    @property
    def last_logged(self) -> dict[str, float]:
        return self.trainlog.last

    # --- the phase loop -----------------------------------------------------------------------------
    def training_step(self, batch: Any, batch_idx: int) -> None:
        real, labels, more = self.unpack_batch(batch)
        opt_d, opt_g = self.optimizers()
        logs_next_g = (self.g_step + 1) % max(self.trainer.log_every_n_steps, 1) == 0
        g_follows = (self.d_step + 1) % self.n_critic == 0
        with self.toggled_optimizer(opt_d):
            self.discriminator_step(opt_d, real, labels, more, log=logs_next_g and g_follows)
        self.d_step += 1
        if not g_follows:
            return
        with self.toggled_optimizer(opt_g):
            self.generator_step(opt_g, real, labels, more, log=logs_next_g)
        self.g_step += 1
        if self.ema is not None:
            self.ema.update(self.ema_generator, self.generator, self.g_step)
        for scheduler in self.lr_schedulers() or []:
            scheduler.step()
        if logs_next_g:
            self.emit()

    def discriminator_step(
        self, opt: Any, real: Tensor, labels: Tensor | None, more: dict[str, Tensor], log: bool
    ) -> None:
        latent = self.sample_latent(real.shape[0], labels)
        with torch.no_grad():
            fake, _ = split_extras(self.generate(latent))
        d_real, d_fake = self.discriminate_pair(real, labels, fake, latent.get("y"))
        # What the terms see; not built when there are none (the hot path of GAN and DCGAN).
        phase = (
            self.phase("d", real, labels, latent, fake, d_real, d_fake, more=more) if self.aux_terms else None
        )
        terms = {"adv": self.loss.d_loss(d_real.adv, d_fake.adv)}
        critic = lambda x: self.score(x, labels).adv  # noqa: E731
        terms.update(
            self.loss.d_regularizer(critic, real, fake, grad_scale=self.grad_scale(), group=self.pack)
        )
        for name, term in self.aux_terms.items():
            terms.update({f"{name}_{k}": v for k, v in term.d_terms(phase).items()})
        if self.augment is not None and self.augment.adaptive:
            threshold = self.loss.threshold(d_real.adv.detach(), d_fake.adv.detach())
            self.augment.observe(d_real.adv, threshold, real.shape[0])
        if log:
            self.trainlog.add(self.loss.stats(d_real.adv.detach(), d_fake.adv.detach()))
            if self.augment is not None:
                self.trainlog.add({"aug_p": self.augment.p})
                self.trainlog.add({"ada_rt": self.augment.rt} if self.augment.adaptive else {})
            if real.shape[0] > 1:
                self.trainlog.add({"diversity": batch_diversity(fake, real)})
            for name, term in self.aux_terms.items():
                self.trainlog.add({f"{name}_{k}": v for k, v in term.stats(phase).items()})
        if self.optimize(opt, "d", terms, self.discriminator, log):
            self.loss.after_d_step(self.critic)

    def generator_step(
        self, opt: Any, real: Tensor, labels: Tensor | None, more: dict[str, Tensor], log: bool
    ) -> None:
        latent = self.sample_latent(real.shape[0], labels)
        fake, extras = split_extras(self.generate(latent))
        d_real = None
        if self.d_batch == "joint":
            d_real, d_fake = self.discriminate_pair(real, labels, fake, latent.get("y"))
        else:
            d_fake = self.score(fake, latent.get("y"))
            if self.loss.pairs_real_in_g:
                with torch.no_grad():  # G's gradient does not flow through the reals' scores
                    d_real = self.score(real, labels)
        phase = (
            self.phase("g", real, labels, latent, fake, None, d_fake, extras, more)
            if self.aux_terms
            else None
        )
        # `real` only for the losses that take it: a loss written as g_loss(self, fake) keeps working
        paired = (d_real.adv,) if self.loss.pairs_real_in_g else ()
        terms = {"adv": self.loss.g_loss(d_fake.adv, *paired)}
        for name, term in self.aux_terms.items():
            terms.update({f"{name}_{k}": v for k, v in term.g_terms(phase).items()})
        self.optimize(opt, "g", terms, self.generator, log)

    def phase(self, name, real, labels, latent, fake, d_real, d_fake, extras=None, more=None) -> Phase:
        """What the auxiliary terms see: this phase's tensors and the model's callables, not the model."""
        images = lambda latent: split_extras(self.generate(latent))[0]  # noqa: E731
        tensors = (name, real, labels, latent, fake, d_real, d_fake, self.loss)
        step = self.d_step if name == "d" else self.g_step
        callables = (self.score, images, self.resample_noise)
        return Phase(*tensors, *callables, extras or {}, more or {}, step, self.grad_scale())

    def discriminate_pair(
        self, real: Tensor, labels: Tensor | None, fake: Tensor, fake_labels: Tensor | None
    ) -> tuple[DOut, DOut]:
        """D on the real and the fake batch: one after the other (`separate`), or as one batch (`joint`),
        so that batch statistics (BatchNorm) are those of real and fake together, as at evaluation."""
        if self.d_batch == "separate":
            return self.score(real, labels), self.score(fake, fake_labels)
        conditions = None if labels is None or fake_labels is None else torch.cat([labels, fake_labels])
        both = self.score(torch.cat([real, fake.to(real.dtype)]), conditions)
        adv, *aux = [t.tensor_split(2) for t in (both.adv, *both.aux.values())]  # equal halves, packed or not
        return tuple(DOut(adv[i], {k: v[i] for k, v in zip(both.aux, aux)}) for i in (0, 1))

    def optimize(self, opt: Any, phase: str, terms: dict[str, Tensor], net: nn.Module, log: bool) -> bool:
        """Backward the sum of the terms and step, unless the guard rejects the step."""
        total = functools.reduce(operator.add, terms.values())
        opt.zero_grad(set_to_none=True)
        self.manual_backward(total)
        if log:
            self.trainlog.add({f"{phase}_grad_norm": grad_norm(net, self.device) / self.grad_scale()})
            self.trainlog.add({f"{phase}_{k}": v for k, v in terms.items()})
            self.trainlog.add({f"{phase}_loss": total})
        if not self.guard.passes(total, net, self.grad_scale()):
            opt.zero_grad(set_to_none=True)
            where = f"G step {self.g_step}, D step {self.d_step}"
            self.guard.reject(phase, terms, where, last_checkpoint(self.trainer) if self._trainer else "")
            return False
        opt.step()
        return True

    def grad_scale(self) -> float:
        scaler = getattr(self.trainer.precision_plugin, "scaler", None) if self._trainer else None
        return float(scaler.get_scale()) if scaler is not None and scaler.is_enabled() else 1.0

    def emit(self, values: Mapping[str, Tensor | float] | None = None) -> None:
        """Send the pending diagnostics (and `values`) to every logger at x = G step, with one device sync."""
        self.trainlog.add(values or {}, prefix="")
        if not self.trainlog.pending:
            return
        extra = {"train/d_step": float(self.d_step), "train/g_step": float(self.g_step)}
        if any(self.guard.skipped.values()):
            extra.update({f"train/skipped_{k}": float(v) for k, v in self.guard.skipped.items()})
        scalars = self.trainlog.flush(self.loggers, self.g_step, self.device, extra)
        bar = {k.split("/")[-1]: scalars[k] for k in ("train/d_loss", "train/g_loss") if k in scalars}
        if bar:
            self.log_dict(bar, prog_bar=True, logger=False, on_step=True, on_epoch=False)

    # --- optimizers and checkpoints -----------------------------------------------------------------
    def configure_optimizers(self) -> tuple[list[torch.optim.Optimizer], list[Any]]:
        extra_d = [p for t in self.aux_terms.values() for p in t.d_parameters()]
        extra_g = [p for t in self.aux_terms.values() for p in t.g_parameters()]
        opts = [
            self.optimizer_d([*self.discriminator.parameters(), *extra_d]),
            self.optimizer_g([*self.generator.parameters(), *extra_g]),
        ]
        if self.lr_schedule is None:
            return opts, []
        length = {"total_steps": self.run_length()} if needs_length(self.lr_schedule) else {}
        try:  # both schedules advance once per generator step (training_step)
            return opts, [self.lr_schedule(opt, **length) for opt in opts]
        except ValueError as e:
            raise ConfigError(str(e)) from None

    def run_length(self) -> int:
        """The run's length in G steps: trainer.max_steps, else what max_epochs gives (-1: unknown)."""
        batches = self.trainer.estimated_stepping_batches if self._trainer is not None else math.inf
        return int(batches) // self.n_critic if math.isfinite(batches) else -1

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        state = {"d_step": self.d_step, "g_step": self.g_step, "skipped": self.guard.state_dict()}
        state.update({"config": self.run_config, "choices": self.choices})
        wandb_ids = [lg.version for lg in self.loggers if type(lg).__name__ == "WandbLogger"]
        if wandb_ids:
            state["wandb_id"] = wandb_ids[0]
        checkpoint.setdefault("gan_zoo", {}).update(state)

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        state = checkpoint.get("gan_zoo", {})
        self.d_step, self.g_step = state.get("d_step", 0), state.get("g_step", 0)
        self.guard.load_state_dict(state.get("skipped", {}))


def check_choice(key: str, value: Any, valid: tuple[str, ...]) -> None:
    if value not in valid:
        raise ValueError(f"{key} must be {' or '.join(map(repr, valid))}, got {value!r}")
