"""`trainer.max_steps` counted in generator steps.

Lightning's `global_step` counts every optimizer step, D and G alike, so with n_critic = 5 it
grows six times per generator step. The training entry point gives Lightning `max_steps=-1`
and adds this callback, which stops on the module's own `g_step` counter.
"""

from __future__ import annotations

import lightning as L


class GeneratorStepLimit(L.Callback):
    def __init__(self, max_steps: int):
        self.max_steps = max_steps

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, *args) -> None:
        if 0 < self.max_steps <= pl_module.g_step:
            trainer.should_stop = True

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # A run resumed at or past the limit stops at once instead of taking one more step.
        if 0 < self.max_steps <= pl_module.g_step:
            trainer.should_stop = True
