"""Draw figures from a checkpoint: `python -m src.sample ckpt=outputs/train/runs/<run> [what=grid] [seed=1]`.

Writes PNGs (sample grids, the model's own figures, latent interpolations) and prints their paths.
The same checkpoint, seed and options always give the same images.
"""

from __future__ import annotations

from pathlib import Path

import hydra
import numpy as np
import rich
import rich.console
import rich.table
import torch
from omegaconf import DictConfig, OmegaConf
from torch import Tensor

from src.build import build_datamodule
from src.checkpoint import build_from_checkpoint
from src.errors import ConfigError, GanZooError
from src.models.module import GANModule
from src.utils.figures import image_grid, save_png, scatter_2d
from src.utils.run import exit_with_error

WHAT = ("all", "grid", "figures", "interpolation")


def slerp(a: Tensor, b: Tensor, t: Tensor | float, eps: float = 1e-4) -> Tensor:
    """Spherical interpolation from a (t=0) to b (t=1) along the last dimension; `t` broadcasts
    against a[..., :1]. Falls back to linear interpolation when a and b are (anti)parallel, where
    the great circle through them is not unique (or sin(angle) underflows)."""
    t = torch.as_tensor(t, dtype=a.dtype, device=a.device)
    ua = a / a.norm(dim=-1, keepdim=True).clamp_min(1e-12)
    ub = b / b.norm(dim=-1, keepdim=True).clamp_min(1e-12)
    # Accurate near 0 and pi, unlike acos of the dot product.
    angle = 2 * torch.atan2((ua - ub).norm(dim=-1, keepdim=True), (ua + ub).norm(dim=-1, keepdim=True))
    sin = angle.sin()
    flat = sin.abs() < eps
    sin = torch.where(flat, torch.ones_like(sin), sin)
    wa = torch.where(flat, 1 - t, ((1 - t) * angle).sin() / sin)
    wb = torch.where(flat, t, (t * angle).sin() / sin)
    return wa * a + wb * b


def is_points(model: GANModule) -> bool:
    return model.sample_shape == (2,)


def render(model: torch.nn.Module, x: Tensor, means: Tensor | None, title: str, nrow: int | None = None):
    """A sample batch as a picture: an image grid, or a scatter plot for 2D points."""
    return scatter_2d(x, means=means, title=title) if is_points(model) else image_grid(x, nrow=nrow)


def interpolation(model: torch.nn.Module, rows: int, steps: int, generator: torch.Generator) -> Tensor:
    """rows x steps samples: each row slerps between two noise vectors, its labels/codes fixed."""
    start = model.sample_latent(rows, generator=generator)
    end = model.sample_noise(rows, start["z"].shape[1], generator)
    t = torch.linspace(0, 1, steps, device=model.device)
    latent = {k: v.repeat_interleave(steps, 0) for k, v in start.items()}
    latent["z"] = slerp(start["z"][:, None], end[:, None], t[None, :, None]).reshape(rows * steps, -1)
    return model.generate_eval(latent)


def sample(cfg: DictConfig) -> dict[str, Path]:
    """Write the figures `cfg` asks for; returns {name: png path}."""
    if OmegaConf.is_missing(cfg, "ckpt") or not cfg.ckpt:
        raise ConfigError("ckpt is required: ckpt=<checkpoint file or run folder>")
    if cfg.what not in WHAT:
        raise ConfigError(f"what={cfg.what} is not one of {', '.join(WHAT)}")
    for key, low in (("n", 1), ("rows", 1), ("steps", 2), ("seed", 0)):
        if not isinstance(cfg[key], int) or cfg[key] < low:
            raise ConfigError(f"{key} must be an integer >= {low}, got {cfg[key]!r}")
    model, run_cfg, info = build_from_checkpoint(cfg.ckpt, pick_device(cfg.device))
    ckpt, prompt = info["path"], cfg.get("prompt")
    if prompt is not None and not model.takes_prompts:
        raise ConfigError(
            f"prompt={prompt!r}: only text-conditioned models (StackGAN) take prompts; "
            f"{ckpt} is a {type(model).__name__}"
        )
    out = Path(cfg.out_dir) if cfg.get("out_dir") else default_out_dir(ckpt)
    title = f"{type(model).__name__}, G step {info['g_step']}"
    # Mixtures know their modes without loading data; plotted under the samples.
    modes = build_datamodule(run_cfg).modes if is_points(model) else None
    means = modes[0] if modes is not None else None

    def seeded() -> torch.Generator:
        # A fresh generator per figure: each figure is the same whatever else is drawn.
        return torch.Generator(device=model.device).manual_seed(cfg.seed)

    torch.manual_seed(cfg.seed)
    images: dict[str, np.ndarray] = {}
    if cfg.what in ("all", "grid") and prompt is not None:
        images["prompt"] = image_grid(model.sample_prompt(prompt, cfg.n, generator=seeded()))
    elif cfg.what in ("all", "grid"):
        x = model.sample(cfg.n, generator=seeded())
        images["scatter" if is_points(model) else "samples"] = render(model, x, means, title)
    if cfg.what in ("all", "figures"):
        if is_points(model):
            images["scatter"] = render(model, model.sample(cfg.n, generator=seeded()), means, title)
        else:
            images.update(model.figures(cfg.n, seeded()))
    if cfg.what in ("all", "interpolation"):
        x = interpolation(model, cfg.rows, cfg.steps, seeded())
        images["interpolation"] = render(model, x, means, f"{title}: interpolation", nrow=cfg.steps)
    paths = {name: save_png(img, out / f"{name}.png") for name, img in images.items()}
    print_table(paths, images, ckpt, title)
    return paths


def pick_device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(device)
    except RuntimeError:
        raise ConfigError(f"device={device} is not a device: use cpu, cuda or auto") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device={device} but no CUDA device is available: use device=cpu or auto")
    return device


def default_out_dir(ckpt: Path) -> Path:
    """<run>/samples_cli for <run>/checkpoints/*.ckpt, else <stem>_samples next to the file."""
    if ckpt.parent.name == "checkpoints":
        return ckpt.parent.parent / "samples_cli"
    return ckpt.parent / f"{ckpt.stem}_samples"


def print_table(paths: dict[str, Path], images: dict[str, np.ndarray], ckpt: Path, title: str) -> None:
    table = rich.table.Table(title=f"{ckpt}: {title}", title_justify="left")
    table.add_column("figure")
    table.add_column("pixels", justify="right")
    table.add_column("file")
    for name, path in paths.items():
        h, w = images[name].shape[:2]
        table.add_row(name, f"{w}x{h}", str(path))
    # Wide enough that no path gets cut or wrapped: they are meant to be copied.
    width = max(rich.get_console().width, 30 + max(len(str(p)) for p in paths.values()))
    rich.console.Console(width=width).print(table)


@hydra.main(version_base="1.3", config_path="../conf", config_name="sample")
def main(cfg: DictConfig) -> None:
    try:
        sample(cfg)
    except GanZooError as e:
        exit_with_error(e)


if __name__ == "__main__":
    main()
