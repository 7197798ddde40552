"""Differentiable augmentation of every image the discriminator sees (DiffAugment, Zhao et al. 2020), with
ADA's adaptive probability as an option (Karras et al. 2020).

D overfits a small training set: it memorises the reals and its gradient stops telling G anything. Augmenting
only the reals would teach G to draw augmented images; DiffAugment augments reals and fakes alike, in both
phases, with operations G's gradient flows through, so D never sees an image that is not augmented and G is
trained through the same transform. Each operation is applied to each sample with probability `p` (1: always,
DiffAugment; ADA adapts `p` from how sure D is of the reals: r_t = E[sign(D(x) - threshold)], kept at `target`).

Operations (the DiffAugment policy): `translation` (shift by up to `translation` x the size, zero padding),
`cutout` (a square of `cutout` x the size set to 0, the grey of [-1, 1] images), `color` (brightness,
saturation, contrast; images with 3 channels only: on 1-channel data it changes nothing, see `active_ops`).
"""

from __future__ import annotations

import torch
import torch.distributed
import torch.nn.functional as F
from torch import Tensor, nn

OPS = ("translation", "cutout", "color")


class DiffAugment(nn.Module):
    def __init__(
        self,
        policy: list[str] | tuple[str, ...] = ("translation", "cutout", "color"),
        p: float = 1.0,
        translation: float = 0.125,
        cutout: float = 0.5,
        target: float | None = None,
        speed_kimg: float = 100.0,
        interval: int = 4,
    ):
        super().__init__()
        unknown = [op for op in policy if op not in OPS]
        if unknown:
            raise ValueError(
                f"model.augment.policy: unknown operation {unknown[0]!r}; valid: {', '.join(OPS)}"
            )
        if not 0.0 <= p <= 1.0:
            raise ValueError(f"model.augment.p must be in [0, 1], got {p}")
        if target is not None and not 0.0 < target < 1.0:
            raise ValueError(f"model.augment.target must be in (0, 1) or null (fixed p), got {target}")
        self.policy, self.translation, self.cutout = tuple(policy), translation, cutout
        self.target, self.speed_kimg, self.interval = target, speed_kimg, max(int(interval), 1)
        # Buffers, so that a resumed run continues with the adapted probability.
        self.register_buffer("p", torch.tensor(float(p)))
        self.register_buffer("rt", torch.tensor(0.0))  # the last window's E[sign(D(x) - threshold)]
        # this window's sum of signs, scores, images and D steps (not saved: a resumed run starts a window)
        self.sums, self.count, self.seen, self.steps = torch.zeros(()), 0, 0, 0
        self.off = target is None and p == 0.0

    def active_ops(self, channels: int) -> tuple[str, ...]:
        return tuple(op for op in self.policy if op != "color" or channels == 3)

    def forward(self, x: Tensor) -> Tensor:
        if x.dim() != 4 or self.off:
            return x
        for op in self.active_ops(x.shape[1]):
            x = getattr(self, op + "_")(x, self.chosen(x))
        return x

    def chosen(self, x: Tensor) -> Tensor:
        """1 for the samples an operation is applied to (each with probability p), else 0; shape [N, 1, 1, 1]."""
        draw = torch.rand(x.shape[0], 1, 1, 1, device=x.device)
        return (draw < self.p).to(x.dtype)

    def translation_(self, x: Tensor, chosen: Tensor) -> Tensor:
        n, _, h, w = x.shape
        shifts = []
        for size in (h, w):
            most = int(size * self.translation + 0.5)
            shift = torch.randint(-most, most + 1, (n,), device=x.device)
            shifts.append(shift * chosen.view(n).long())
        # index of each output pixel in the zero-padded input (0 and size + 1 are the padding)
        rows = (torch.arange(h, device=x.device).view(1, h, 1) + shifts[0].view(n, 1, 1)).clamp(-1, h) + 1
        cols = (torch.arange(w, device=x.device).view(1, 1, w) + shifts[1].view(n, 1, 1)).clamp(-1, w) + 1
        padded = F.pad(x, [1, 1, 1, 1]).permute(0, 2, 3, 1)  # N, H+2, W+2, C
        batch = torch.arange(n, device=x.device).view(n, 1, 1)
        return padded[batch, rows, cols].permute(0, 3, 1, 2).contiguous(memory_format=_format(x))

    def cutout_(self, x: Tensor, chosen: Tensor) -> Tensor:
        n, _, h, w = x.shape
        size_h, size_w = int(h * self.cutout + 0.5), int(w * self.cutout + 0.5)
        top = torch.randint(0, h + (1 - size_h % 2), (n, 1, 1), device=x.device) - size_h // 2
        left = torch.randint(0, w + (1 - size_w % 2), (n, 1, 1), device=x.device) - size_w // 2
        rows = torch.arange(h, device=x.device).view(1, h, 1)
        cols = torch.arange(w, device=x.device).view(1, 1, w)
        inside = (rows >= top) & (rows < top + size_h) & (cols >= left) & (cols < left + size_w)
        keep = 1.0 - inside.unsqueeze(1).to(x.dtype) * chosen
        return x * keep

    def color_(self, x: Tensor, chosen: Tensor) -> Tensor:
        n = x.shape[0]
        rand = lambda: torch.rand(n, 1, 1, 1, device=x.device, dtype=x.dtype)  # noqa: E731
        x = x + (rand() - 0.5) * chosen  # brightness
        mean = x.mean(dim=1, keepdim=True)
        x = (x - mean) * (1 + (rand() * 2 - 1) * chosen) + mean  # saturation x [0, 2]
        mean = x.mean(dim=(1, 2, 3), keepdim=True)
        return (x - mean) * (1 + (rand() - 0.5) * chosen) + mean  # contrast x [0.5, 1.5]

    # --- ADA --------------------------------------------------------------------------------------------
    @property
    def adaptive(self) -> bool:
        return self.target is not None

    @torch.no_grad()
    def observe(self, real_scores: Tensor, threshold: Tensor | float, images: int) -> None:
        """After each D step on `images` reals: accumulate sign(D(x) - threshold) of their scores; every
        `interval` D steps move p towards keeping the mean at `target`, by images / (speed_kimg x 1000): p can
        go from 0 to 1 in `speed_kimg` thousand real images (ADA's 500 is for runs of millions of images)."""
        if not self.adaptive:
            return
        # No host sync: the window is counted on the host, the sums stay on the device.
        self.sums = (
            self.sums.to(real_scores.device) + torch.sign(real_scores.detach().float() - threshold).sum()
        )
        self.count += real_scores.numel()
        self.seen += images
        self.steps += 1
        if self.steps < self.interval:
            return
        counts = torch.tensor([float(self.count), float(self.seen)], device=self.sums.device)
        totals = torch.cat([self.sums.view(1), counts])
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            torch.distributed.all_reduce(totals)  # one p for all processes, from every process's reals
        self.rt.copy_(totals[0] / totals[1])
        step = totals[2] / (self.speed_kimg * 1000)
        self.p.copy_((self.p + torch.sign(self.rt - self.target) * step).clamp(0.0, 1.0))
        self.sums, self.seen, self.count, self.steps = torch.zeros((), device=real_scores.device), 0, 0, 0

    def extra_repr(self) -> str:
        mode = f"adaptive, target={self.target}" if self.adaptive else f"p={float(self.p)}"
        return f"policy={list(self.policy)}, {mode}"


def _format(x: Tensor) -> torch.memory_format:
    return (
        torch.channels_last
        if x.is_contiguous(memory_format=torch.channels_last) and x.shape[1] > 1
        else (torch.contiguous_format)
    )
