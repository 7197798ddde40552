"""Rendering samples to images (uint8 HWC arrays) and writing / logging them."""

from __future__ import annotations

import contextlib
import math
import os
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from src.errors import WriteError


def image_grid(
    x: Tensor, nrow: int | None = None, value_range: tuple[float, float] = (-1.0, 1.0)
) -> np.ndarray:
    """(N, C, H, W) in `value_range` -> one uint8 (H', W', 3) grid with `nrow` images per row."""
    from torchvision.utils import make_grid

    x = x.detach().float().cpu()
    lo, hi = value_range
    x = ((x - lo) / (hi - lo)).clamp(0, 1)
    nrow = nrow or max(1, int(math.ceil(math.sqrt(len(x)))))
    grid = make_grid(x, nrow=nrow, padding=2, pad_value=1.0)
    if grid.shape[0] == 1:
        grid = grid.expand(3, -1, -1)
    return (grid.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)


def scatter_2d(
    fake: Tensor, real: Tensor | None = None, means: Tensor | None = None, title: str = ""
) -> np.ndarray:
    """A scatter plot of 2D samples over the real data and the true modes, as a uint8 image."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 5), dpi=100)
    if real is not None:
        r = real.detach().float().cpu().numpy()
        ax.scatter(r[:, 0], r[:, 1], s=2, c="0.75", label="real")
    f = fake.detach().float().cpu().numpy()
    ax.scatter(f[:, 0], f[:, 1], s=2, c="tab:blue", alpha=0.6, label="generated")
    if means is not None:
        m = means.cpu().numpy()
        ax.scatter(m[:, 0], m[:, 1], s=30, c="tab:red", marker="x", label="modes")
        pad = 0.25 * (m.max() - m.min() + 1e-6)
        ax.set_xlim(m[:, 0].min() - pad, m[:, 0].max() + pad)
        ax.set_ylim(m[:, 1].min() - pad, m[:, 1].max() + pad)
    ax.set_aspect("equal")
    ax.legend(loc="upper right", fontsize=7, markerscale=3)
    if title:
        ax.set_title(title)
    fig.tight_layout()
    return to_array(fig)


def to_array(fig) -> np.ndarray:
    """A matplotlib figure as a uint8 (H, W, 3) image; the figure is closed."""
    import matplotlib.pyplot as plt

    fig.canvas.draw()
    img = np.asarray(fig.canvas.buffer_rgba())[..., :3].copy()
    plt.close(fig)
    return img


def save_png(img: np.ndarray, path: str | Path) -> Path:
    """Write atomically: a reader never sees a half-written PNG."""
    from PIL import Image

    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(img).save(tmp, format="PNG")
        os.replace(tmp, path)
    except OSError as e:
        with contextlib.suppress(OSError):
            tmp.unlink(missing_ok=True)
        raise WriteError(f"cannot write the figure {path}: {e.strerror or e}") from None
    return path


def log_image(loggers: Iterable, key: str, img: np.ndarray, step: int) -> None:
    """Send one image to every logger that takes images (TensorBoard, W&B); CSV keeps the PNG file only."""
    from lightning.pytorch.loggers import TensorBoardLogger, WandbLogger

    for logger in loggers:
        if isinstance(logger, TensorBoardLogger):
            logger.experiment.add_image(key, torch.from_numpy(img).permute(2, 0, 1), step)
        elif isinstance(logger, WandbLogger):
            logger.log_image(key=key, images=[img], step=step)


def class_bars(shares: Tensor, reference: Tensor, n: int) -> np.ndarray:
    """Per-class shares of the samples as bars, the data's shares as ticks: a uint8 image."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    k = len(shares)
    fig, ax = plt.subplots(figsize=(5, 3), dpi=100)
    ax.bar(range(k), shares.numpy() * 100, color="tab:blue", label=f"samples (n={n})")
    ax.scatter(range(k), reference.numpy() * 100, marker="_", s=400, c="tab:red", label="data")
    ax.set_xticks(range(k))
    ax.set_xlabel("class (read by the domain classifier)")
    ax.set_ylabel("% of samples")
    ax.legend(fontsize=7, loc="lower center", bbox_to_anchor=(0.5, 1.0), ncol=2, frameon=False)
    fig.tight_layout()
    return to_array(fig)
