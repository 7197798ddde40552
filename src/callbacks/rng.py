"""The random streams of training: one per process, saved in checkpoints so that a resumed run draws
exactly what an uninterrupted one would.

Everything sampled while training (noise, codes, labels for conditional G, penalty mixing factors,
augmentation) comes from torch's global generator. Weights are built before training starts, from
`seed` alone, so every process starts with the same networks (and DDP broadcasts rank 0's weights
when it wraps the model, which would make them equal anyway). Under DDP each process then reseeds
with a stream derived from `seed` and its global rank, so the ranks draw different fakes and the
effective batch is world_size x data.batch_size for fakes as it is for reals (each rank reads its own
shard of the data). One process keeps the stream `seed_everything(seed)` started, as before.

Evaluation and sample figures leave the training stream where they found it, so that a run that
evaluates at other points (a resumed or extended run) still trains on exactly the same draws.
"""

from __future__ import annotations

from typing import Any

import lightning as L
import torch


def rank_seed(seed: int, rank: int) -> int:
    """A seed for `rank`'s stream: distinct per rank, the same on every machine for the same seed."""
    return (int(seed) * 1_000_003 + 7_919 * (rank + 1)) % 2**63


class TrainingRNG(L.Callback):
    def __init__(self, seed: int | None):
        self.seed = seed
        self.to_restore: list[dict[str, Any]] | None = None

    @staticmethod
    def state() -> dict[str, Any]:
        cuda = torch.cuda.get_rng_state_all() if torch.cuda.is_initialized() else []
        return {"torch": torch.get_rng_state(), "cuda": cuda}

    @staticmethod
    def set_state(state: dict[str, Any]) -> None:
        torch.set_rng_state(state["torch"])
        cuda = state.get("cuda")
        if cuda and torch.cuda.is_available() and len(cuda) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all(cuda)

    def on_validation_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.before_validation = self.state()

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.set_state(self.before_validation)

    def on_save_checkpoint(self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict) -> None:
        states = [self.state()]
        if trainer.world_size > 1:  # every rank saves at the same step: gather each one's stream
            states = [None] * trainer.world_size
            torch.distributed.all_gather_object(states, self.state())
        checkpoint.setdefault("gan_zoo", {})["rng"] = {"ranks": states}

    def on_load_checkpoint(self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict) -> None:
        rng = checkpoint.get("gan_zoo", {}).get("rng")
        if rng:  # checkpoints before per-rank streams stored one state: rank 0's
            self.to_restore = rng.get("ranks", [rng])

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # Here, after anything between loading and training (sanity checks) used the generator.
        rank, states, self.to_restore = trainer.global_rank, self.to_restore, None
        if states is not None and rank < len(states) and len(states) == trainer.world_size:
            self.set_state(states[rank])
        elif trainer.world_size > 1 and self.seed is not None:
            # A fresh DDP run, or a resume on another number of processes: a stream per rank, which
            # also depends on the step so that a resumed run does not replay the first steps' noise.
            torch.manual_seed(rank_seed(self.seed, rank) + pl_module.g_step)
