"""The non-finite guard: a step whose loss or gradients are not finite, or whose loss is beyond
`max_loss` (a diverged run: lr 1e4 gives 1e10), is skipped and counted (`skip`) or stops the run with the
step, phase and terms named (`stop`); `off` checks nothing (and saves the check's one device sync)."""

from __future__ import annotations

import logging
import math

import torch
from torch import Tensor, nn

from src.errors import NonFiniteError

log = logging.getLogger(__name__)

MODES = ("stop", "skip", "off")


class NonFiniteGuard:
    def __init__(self, mode: str = "stop", max_loss: float | None = 1e6):
        if mode not in MODES:
            raise ValueError(f"model.on_nonfinite must be stop, skip or off, got {mode!r}")
        self.mode, self.max_loss = mode, max_loss
        self.skipped = {"d": 0, "g": 0}

    def passes(self, total: Tensor, net: nn.Module, grad_scale: float = 1.0) -> bool:
        """Whether the summed loss and the gradients of `net` are fit to step on (one device sync)."""
        if self.mode == "off":
            return True
        values = [total.detach().float().abs().reshape(1)]
        grads = [p.grad for p in net.parameters() if p.grad is not None]
        if grads and grad_scale == 1.0:  # under fp16 loss scaling, inf gradients are the scaler's to skip
            values.append(torch.stack(torch._foreach_norm(grads)).float())
        values = torch.cat(values)  # one check, one sync: the loss and every gradient's norm
        ok = values.isfinite().all()
        if self.max_loss:
            ok = ok & (values[0] <= self.max_loss)
        return bool(ok)

    def reject(self, phase: str, terms: dict[str, Tensor], where: str, checkpoint: str) -> None:
        """A step that did not pass: count it and warn (`skip`) or raise NonFiniteError (`stop`)."""
        what = self.reason(terms)
        where = f"{where}, {'discriminator' if phase == 'd' else 'generator'} phase"
        if self.mode == "skip":
            self.skipped[phase] += 1
            log.warning("skipped a step: %s (%s); %d skipped so far", what, where, sum(self.skipped.values()))
            return
        raise NonFiniteError(
            f"{what} at {where} (term names: {', '.join(terms)}); training stopped. "
            f"Last good checkpoint: {checkpoint or 'none written yet'}. Lower the learning rate, check the data, "
            "or set model.on_nonfinite=skip to skip such steps and count them."
        )

    def reason(self, terms: dict[str, Tensor]) -> str:
        """Decided once from the total, as `passes` decides: a NaN term, a diverged total, or the gradients."""
        values = {k: float(v.detach().float().sum()) for k, v in terms.items()}
        total = sum(values.values())
        nonfinite = [k for k, v in values.items() if not math.isfinite(v)]
        if nonfinite or not math.isfinite(total):
            return f"non-finite {', '.join(nonfinite or ['loss'])}"
        if self.max_loss and abs(total) > self.max_loss:
            shown = ", ".join(f"{k} = {v:.3g}" for k, v in values.items())
            return f"loss beyond model.max_loss={self.max_loss:g} ({shown}: diverged)"
        return "non-finite gradients"

    def state_dict(self) -> dict[str, int]:
        return dict(self.skipped)

    def load_state_dict(self, state: dict[str, int]) -> None:
        self.skipped = {"d": 0, "g": 0, **state}
