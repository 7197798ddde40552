"""Learning-rate schedules, built from `_partial_` configs (`model.lr_schedule`); null: a constant rate.

Both optimizers' schedules advance once per generator step. A `total_steps` of -1 (or absent) is filled
in by the model with the run's length in G steps (trainer.max_steps, else what max_epochs gives).
"""

from __future__ import annotations

from functools import partial

import torch


def linear_decay(total_steps: int, decay_start: float, step: int) -> float:
    """1 until decay_start x total_steps, then linearly to 0 at total_steps."""
    begin = decay_start * total_steps
    return 1.0 if step <= begin else max(0.0, (total_steps - step) / (total_steps - begin))


class LinearDecay(torch.optim.lr_scheduler.LambdaLR):
    """Constant, then linearly to 0 over the last (1 - decay_start) of the run (sharper final samples)."""

    def __init__(self, optimizer: torch.optim.Optimizer, total_steps: int = -1, decay_start: float = 0.5):
        if total_steps is None or total_steps <= 0:
            raise ValueError(
                "model.lr_schedule (linear decay) needs the run's length: set trainer.max_steps (G steps) or "
                "trainer.max_epochs, or use model.lr_schedule=null (a constant rate)"
            )
        if not 0 <= decay_start < 1:
            raise ValueError(f"model.lr_schedule.decay_start must be in [0, 1), got {decay_start}")
        super().__init__(optimizer, partial(linear_decay, total_steps, decay_start))
