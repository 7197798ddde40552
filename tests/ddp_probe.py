"""A callback for the DDP test: each rank writes its generator weights at the end of fit."""

from __future__ import annotations

from pathlib import Path

import lightning as L
import torch


class SaveRankWeights(L.Callback):
    def __init__(self, dirpath: str):
        self.dirpath = Path(dirpath)

    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.dirpath.mkdir(parents=True, exist_ok=True)
        state = {k: v.detach().cpu() for k, v in pl_module.generator.state_dict().items()}
        steps = {"g_step": pl_module.g_step, "d_step": pl_module.d_step, "world_size": trainer.world_size}
        torch.save({"state": state, "steps": steps}, self.dirpath / f"rank{trainer.global_rank}.pt")
