"""Training diagnostics: gathered over the phases of a logging step (as tensors, no device sync), then
sent to every logger at x = G step with a single sync."""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import torch
from torch import Tensor, nn


class TrainLog:
    def __init__(self) -> None:
        self.pending: dict[str, Tensor] = {}
        self.last: dict[str, float] = {}  # everything sent so far, latest value of each (the run summary)
        self.sent: dict[str, float] = {}  # what the latest flush sent, at G step `step` (the health check)
        self.step, self.flushes = -1, 0

    def add(self, values: Mapping[str, Tensor], prefix: str = "train/") -> None:
        self.pending.update({f"{prefix}{k}": v.detach() for k, v in values.items()})

    def flush(
        self, loggers: Iterable, step: int, device: torch.device, extra: Mapping[str, float] = {}
    ) -> dict[str, float]:
        """Send what is pending (and `extra`, plain numbers) to the loggers; returns what was sent."""
        scalars = to_floats(self.pending, device)
        self.pending = {}
        scalars.update(extra)
        self.last.update(scalars)
        self.sent, self.step, self.flushes = scalars, step, self.flushes + 1
        for logger in loggers:
            logger.log_metrics(scalars, step=step)
        return scalars


def grad_norm(net: nn.Module, device: torch.device) -> Tensor:
    """The L2 norm of all of `net`'s gradients (0 when none), without a device sync."""
    grads = [p.grad for p in net.parameters() if p.grad is not None]
    if not grads:
        return torch.zeros((), device=device)
    return torch.linalg.vector_norm(torch.stack(torch._foreach_norm(grads)))


def batch_diversity(fake: Tensor, real: Tensor) -> Tensor:
    """Mean pairwise L2 distance between the fakes of a batch over that between its reals (no device sync):
    about 1 when G varies as the data does, near 0 when it draws one image (mode collapse)."""
    spread = [torch.pdist(x.detach().flatten(1).float()).mean() for x in (fake, real)]
    return spread[0] / spread[1].clamp_min(1e-12)


def to_floats(values: Mapping[str, Tensor | float], device: torch.device) -> dict[str, float]:
    if not values:
        return {}
    stacked = torch.stack([torch.as_tensor(v, device=device).float().reshape(()) for v in values.values()])
    return dict(zip(values, stacked.cpu().tolist()))
