"""InfoGAN's continuous codes as numbers: which code turns the digit, which one widens it.

The paper's figure 2(c)/(d) shows c2 rotating and c3 widening the digits as each code goes from -2 to 2.
Here each code is swept at fixed noise and c1, and each sample's ink is summarised by image moments:
`rotation` is the angle of the principal axis from the vertical, `width` the ink's spread across that axis.
Along a sweep, |Spearman| of code value vs property is 1 when the property moves one way with the code;
it is averaged over the sweeps (signed first: a code that turns some digits left and others right does not
"track rotation").
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from scipy.optimize import linear_sum_assignment
from torch import Tensor

PROPERTIES = ("rotation", "width")


def moments(x: Tensor) -> tuple[Tensor, Tensor]:
    """(rotation in degrees from the vertical, width in pixels) of each image of (N, C, H, W) in [-1, 1]."""
    ink = ((x.float().mean(1) + 1) / 2).clamp(0, 1)  # (N, H, W), 1 = full ink
    h, w = ink.shape[-2:]
    ys = torch.arange(h, dtype=ink.dtype, device=ink.device)[:, None].expand(h, w)
    xs = torch.arange(w, dtype=ink.dtype, device=ink.device)[None, :].expand(h, w)
    mass = ink.sum((1, 2)).clamp(min=1e-6)
    mx, my = (ink * xs).sum((1, 2)) / mass, (ink * ys).sum((1, 2)) / mass
    dx, dy = xs - mx[:, None, None], ys - my[:, None, None]
    cxx = (ink * dx * dx).sum((1, 2)) / mass
    cyy = (ink * dy * dy).sum((1, 2)) / mass
    cxy = (ink * dx * dy).sum((1, 2)) / mass
    # principal axis angle measured from the image's vertical (y down): 0 for an upright stroke,
    # positive when the top leans right
    angle = 0.5 * torch.atan2(-2 * cxy, cyy - cxx)
    spread = ((cxx + cyy) / 2 - torch.sqrt(((cxx - cyy) / 2) ** 2 + cxy**2)).clamp(min=0)
    return angle * 180 / math.pi, spread.sqrt()


def spearman_rows(values: Tensor, props: Tensor) -> Tensor:
    """Spearman's rho of `values` (S,) with each row of `props` (R, S); 0 for a row with no variation."""

    def ranks(t: Tensor) -> Tensor:
        return t.argsort(-1).argsort(-1).double()

    a = ranks(values)[None].expand_as(props)
    b = ranks(props)
    a, b = a - a.mean(-1, keepdim=True), b - b.mean(-1, keepdim=True)
    denom = (a.square().sum(-1) * b.square().sum(-1)).sqrt()
    flat = props.double().std(-1) < 1e-9
    rho = (a * b).sum(-1) / denom.clamp(min=1e-12)
    return torch.where(flat, torch.zeros_like(rho), rho)


@torch.no_grad()
def code_correlations(
    generate: Callable[[Tensor, Tensor], Tensor],
    rows: int,
    cont_dim: int,
    steps: int = 9,
    span: float = 2.0,
) -> Tensor:
    """|mean Spearman| (cont_dim, 2): code j vs rotation and width. `generate(row, c_cont)` draws the
    samples of `rows` fixed (noise, c1) rows at the given continuous codes (both (rows * steps, ...))."""
    sweep = torch.linspace(-span, span, steps)
    row = torch.arange(rows).repeat_interleave(steps)
    out = torch.zeros(cont_dim, len(PROPERTIES), dtype=torch.float64)
    for j in range(cont_dim):
        codes = torch.zeros(rows * steps, cont_dim)
        codes[:, j] = sweep.repeat(rows)
        props = moments(generate(row, codes))
        for p, values in enumerate(props):
            out[j, p] = spearman_rows(sweep, values.double().cpu().view(rows, steps)).mean().abs()
    return out


def assign(corr: Tensor) -> dict[str, tuple[int, float]]:
    """The property each code took: the one-to-one map codes -> properties with the largest total |rho|."""
    codes, props = linear_sum_assignment(-corr.numpy())
    return {PROPERTIES[p]: (int(c), float(corr[c, p])) for c, p in zip(codes, props)}


class ContinuousCodes:
    """Logged as `code<j>_rotation`, `code<j>_width` (|rho| of continuous code j = 1, 2, ...: the paper's
    c2, c3), and for each property the code that took it (`rotation_code`, 0 = none) and its |rho|
    (`rotation_rho`): the seed's figure (c)/(d) as numbers.

    Runs its own sweep at compute(): `rows` fixed (noise, c1) rows, the same seeded draw every time.
    """

    monitor = None

    def __init__(
        self, model, cont_dim: int, rows: int = 50, steps: int = 9, span: float = 2.0, seed: int = 0
    ):
        self.model, self.cont_dim = model, int(cont_dim)
        self.rows, self.steps, self.span, self.seed = rows, steps, span, seed
        self.names = tuple(f"code{j + 1}_{p}" for j in range(self.cont_dim) for p in PROPERTIES)
        self.names += tuple(f"{p}_{k}" for p in PROPERTIES for k in ("rho", "code"))

    def update(self, **_) -> None:
        pass

    def reset(self) -> None:
        pass

    def to(self, device) -> ContinuousCodes:
        return self

    def generate(self, row: Tensor, codes: Tensor) -> Tensor:
        gen = torch.Generator(device=self.model.device).manual_seed(self.seed)
        base = self.model.sample_latent(self.rows, generator=gen)
        latent = {k: v[row.to(v.device)] for k, v in base.items()}
        latent["c_cont"] = codes.to(latent["c_cont"])
        return self.model.generate_eval(latent)

    def compute(self) -> dict[str, Tensor]:
        corr = code_correlations(self.generate, self.rows, self.cont_dim, self.steps, self.span)
        out = {f"code{j + 1}_{p}": corr[j, i] for j in range(self.cont_dim) for i, p in enumerate(PROPERTIES)}
        taken = assign(corr)
        for p in PROPERTIES:  # a property no code took (one continuous code): code 0, rho 0
            code, rho = taken.get(p, (-1, 0.0))
            out[f"{p}_rho"], out[f"{p}_code"] = rho, code + 1
        return {k: torch.as_tensor(v, dtype=torch.float32) for k, v in out.items()}
