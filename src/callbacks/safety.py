"""Nothing is lost: atomic checkpoint files, never a non-finite one, and a checkpoint on SIGTERM/SIGINT."""

from __future__ import annotations

import contextlib
import logging
import os
import signal
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.plugins.io import TorchCheckpointIO

from src.errors import WriteError

log = logging.getLogger(__name__)


def nonfinite_tensors(state: dict[str, Any]) -> list[str]:
    return [
        k
        for k, v in state.items()
        if torch.is_tensor(v) and v.is_floating_point() and not torch.isfinite(v).all()
    ]


def why(e: Exception) -> str:
    """The OS's words for a failed write (torch.save wraps them in a RuntimeError)."""
    if isinstance(e, OSError) and e.strerror:
        return e.strerror
    cause = e.__cause__ or e.__context__
    if isinstance(cause, OSError) and cause.strerror:
        return cause.strerror
    text = str(e).splitlines()[0] if str(e) else type(e).__name__
    return text[:200]


class AtomicCheckpointIO(TorchCheckpointIO):
    """Writes `<file>.tmp` next to the target, fsyncs it and renames it over the target: a crash or a
    full disk leaves the previous checkpoint intact. A checkpoint whose weights are not finite is
    refused, so a diverged run never overwrites its last good state."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path: Any, storage_options: Any = None) -> None:
        bad = nonfinite_tensors(checkpoint.get("state_dict", {}))
        if bad:
            log.error(
                "not writing %s: non-finite weights in %s; the previous checkpoint is kept", path, bad[:3]
            )
            return
        path = Path(path)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            with open(tmp, "wb") as f:
                torch.save(checkpoint, f)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        except (OSError, RuntimeError) as e:  # torch.save reports a failed write as a RuntimeError
            kept = f"the previous {path.name} is intact" if path.is_file() else "no earlier checkpoint there"
            raise WriteError(f"cannot write the checkpoint {path}: {why(e)}; {kept}") from None
        finally:
            with contextlib.suppress(OSError):
                tmp.unlink(missing_ok=True)


class LastCheckpoint(L.Callback):
    """`last.ckpt`, always resumable: written at the end of every epoch (after its evaluation), every
    `every_n_steps` generator steps, when training ends, and on SIGTERM (a cluster preempting the job)
    or SIGINT (Ctrl-C) after the current step, which then stops training cleanly. A second Ctrl-C
    interrupts at once. Files are written atomically and never with non-finite weights (AtomicCheckpointIO)."""

    def __init__(
        self,
        dirpath: str,
        filename: str = "last.ckpt",
        every_n_steps: int | None = None,
        ddp_check_every: int = 10,
    ):
        self.path = Path(dirpath) / filename
        self.every_n_steps, self.ddp_check_every = every_n_steps, ddp_check_every
        self.received: int | None = None
        self.previous: dict[int, Any] = {}
        self.saved_at: int | None = None

    @property
    def last_model_path(self) -> str:
        return str(self.path) if self.path.is_file() else ""

    def save(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # Decided on the step alone, the same on every rank: the file exists only where rank 0 writes,
        # and saving is collective under DDP.
        if self.saved_at != pl_module.g_step:
            trainer.save_checkpoint(self.path, weights_only=False)
            self.saved_at = pl_module.g_step

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.save(trainer, pl_module)

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.save(trainer, pl_module)

    # --- signals --------------------------------------------------------------------------------------
    def handler(self, signum: int, frame: Any) -> None:
        if self.received is not None and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.received = signum
        log.warning(
            "received %s: saving %s after this step, then stopping", signal.Signals(signum).name, self.path
        )

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # After Lightning installed its own SIGTERM handler (which would raise mid-step): ours replaces it.
        try:
            for sig in (signal.SIGTERM, signal.SIGINT):
                self.previous[sig] = signal.signal(sig, self.handler)
        except (ValueError, AttributeError):  # not the main thread, or no such signal: leave signals alone
            self.previous = {}

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, *args: Any) -> None:
        received = self.received is not None
        if trainer.world_size > 1:  # every rank must stop at the same step: agree every few steps
            if pl_module.d_step % self.ddp_check_every:
                return
            flag = torch.tensor(int(received), device=pl_module.device)
            received = bool(trainer.strategy.reduce(flag, reduce_op="max").item())
        if received and not trainer.should_stop:
            self.save(trainer, pl_module)
            if trainer.is_global_zero:
                log.warning(
                    "saved %s at G step %d; resume with ckpt_path=%s", self.path, pl_module.g_step, self.path
                )
            trainer.should_stop = True
        elif self.every_n_steps and pl_module.g_step and pl_module.g_step % self.every_n_steps == 0:
            self.save(trainer, pl_module)

    def teardown(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        for sig, previous in self.previous.items():
            signal.signal(sig, previous)
        self.previous = {}
