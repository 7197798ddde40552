"""Callbacks the tests plug into real runs with `+callbacks.<name>._target_=probes.<Class>`."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import lightning as L
import torch


class SaveRankWeights(L.Callback):
    """DDP tests: each rank writes its G and D weights, its first real batch and its first drawn noise."""

    def __init__(self, dirpath: str):
        self.dirpath = Path(dirpath)
        self.first: dict[str, torch.Tensor] = {}

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        draw = pl_module.sample_latent

        def recording(n, labels=None, generator=None):
            latent = draw(n, labels, generator)
            self.first.setdefault("z", latent["z"].detach().cpu().clone())
            return latent

        pl_module.sample_latent = recording

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self.first.setdefault("real", batch[0].detach().cpu().clone())

    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.dirpath.mkdir(parents=True, exist_ok=True)
        g = {k: v.detach().cpu() for k, v in pl_module.generator.state_dict().items()}
        d = {k: v.detach().cpu() for k, v in pl_module.discriminator.state_dict().items()}
        steps = {"g_step": pl_module.g_step, "d_step": pl_module.d_step, "world_size": trainer.world_size}
        torch.save(
            {"state": g, "d_state": d, "steps": steps, **self.first},
            self.dirpath / f"rank{trainer.global_rank}.pt",
        )


class Poison(L.Callback):
    """Fills the real batch with NaN at one D step: the non-finite guard must catch it."""

    def __init__(self, at_d_step: int):
        self.at_d_step = at_d_step

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if pl_module.d_step == self.at_d_step:
            batch[0].fill_(float("nan"))


class SelfSignal(L.Callback):
    """Sends this process a signal once the generator reaches a step (a preemption)."""

    def __init__(self, at_g_step: int, signum: int = int(signal.SIGTERM)):
        self.at_g_step, self.signum, self.sent = at_g_step, signum, False

    def on_train_batch_end(self, trainer, pl_module, *args) -> None:
        if pl_module.g_step >= self.at_g_step and not self.sent:
            self.sent = True
            os.kill(os.getpid(), self.signum)


class MemoryProbe(L.Callback):
    """Records the process's resident memory (MiB) at chosen generator steps."""

    def __init__(self, at: list[int]):
        self.at, self.rss = set(at), {}

    def on_train_batch_end(self, trainer, pl_module, *args) -> None:
        if pl_module.g_step in self.at and pl_module.g_step not in self.rss:
            import gc

            gc.collect()
            with open("/proc/self/statm") as f:
                self.rss[pl_module.g_step] = int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
