"""An exponential moving average of the generator's weights (used for samples and evaluation)."""

from __future__ import annotations

import torch
from torch import nn


class EMA:
    """`average` follows `net`: a copy until `start` G steps, then average = decay x average + (1 - decay) x net.
    Floating-point buffers (BatchNorm's running statistics) are averaged the same way: statistics copied from the
    live G describe its own activations, not those of the averaged weights, and evaluation (eval mode) reads
    them; integer buffers (counters) are copied."""

    def __init__(self, decay: float, start: int = 0):
        if not 0 < decay < 1:
            raise ValueError(f"model.ema_decay must be in (0, 1) or null, got {decay}")
        self.decay, self.start = decay, start

    @torch.no_grad()
    def update(self, average: nn.Module, net: nn.Module, step: int) -> None:
        floats = [(a, b) for a, b in zip(average.buffers(), net.buffers()) if a.is_floating_point()]
        mine = [*average.parameters(), *(a for a, _ in floats)]
        theirs = [*net.parameters(), *(b for _, b in floats)]
        if step <= self.start:
            torch._foreach_copy_(mine, theirs)
        else:
            torch._foreach_lerp_(mine, theirs, 1.0 - self.decay)
        for buf, source in zip(average.buffers(), net.buffers()):
            if not buf.is_floating_point():
                buf.copy_(source)
