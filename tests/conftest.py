"""Shared test helpers: compose the real configs through Hydra's compose API and run them."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest
from omegaconf import DictConfig, open_dict

from src.utils.compose import compose_config

ROOT = Path(__file__).resolve().parents[1]
CONF = ROOT / "conf"

# One classifier cache for the whole session (per process): the evaluator is trained once.
CACHE = Path(tempfile.gettempdir()) / f"gan-zoo-test-cache-{os.getpid()}"

os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("WANDB_SILENT", "true")

# Small, fast settings for any training run in the tests.
FAST = [
    "~callbacks.rich_progress_bar",
    "trainer.enable_progress_bar=false",
    "trainer.enable_model_summary=false",
    "extras.print_config=false",
    "trainer.log_every_n_steps=1",
    "trainer.check_val_every_n_epoch=1",  # short runs: an evaluation every epoch (the default's is every 5)
]


def choices(group: str) -> list[str]:
    """The options of a config group, read from conf/<group>/ (a new model or loss is tested without
    editing any list here)."""
    return sorted(p.stem for p in (CONF / group).glob("*.yaml"))


def make_cfg(overrides: list[str], tmp_path: Path, fast: bool = True) -> DictConfig:
    """Compose conf/train.yaml with `overrides`, outputs under tmp_path."""
    cfg = compose_config((FAST if fast else []) + list(overrides), tmp_path)
    with open_dict(cfg):
        if not any(o.startswith("paths.log_dir=") for o in overrides):
            cfg.paths.log_dir = str(tmp_path)
        cfg.paths.cache_dir = str(CACHE)
    return cfg


def run_train(overrides: list[str], tmp_path: Path, fast: bool = True):
    from src.train import train

    cfg = make_cfg(overrides, tmp_path, fast)
    return train(cfg)


def on_built_model(monkeypatch, hook):
    """Call hook(model) on the model train() builds, before it trains (its real starting point)."""
    import src.train

    build = src.train.build_model

    def spy(*args, **kwargs):
        model = build(*args, **kwargs)
        hook(model)
        return model

    monkeypatch.setattr(src.train, "build_model", spy)


def ignore_noise(model) -> None:
    """Make G see the same (zero) noise for every sample: it can only draw one image (a provoked mode collapse)."""
    import torch

    forward = model.generator.forward
    model.generator.forward = lambda z, *rest, **kw: forward(torch.zeros_like(z), *rest, **kw)


def parameters(model) -> dict:
    """Trainable weights only: BatchNorm running statistics change in any forward pass, trained or not."""
    return {k: v.detach().clone() for k, v in model.named_parameters()}


def read_rows(path: Path, key: str) -> list[dict[str, str]]:
    """The rows of a run's metrics.csv that have `key`."""
    import csv

    with open(path) as f:
        return [r for r in csv.DictReader(f) if r.get(key)]


@pytest.fixture
def compose_cfg(tmp_path):
    return lambda overrides: make_cfg(overrides, tmp_path)


def phase_of(module, real, labels, latent, fake, d_real, d_fake, extras=None, more=None):
    """A term's input: as the model builds it (module given), or with no model behind it (the term must
    then need neither D nor G). The D phase when d_real is given, else the G phase."""
    from src.losses import NonSaturating
    from src.losses.auxiliary import Phase

    name = "d" if d_real is not None else "g"
    if module is not None:
        return module.phase(name, real, labels, latent, fake, d_real, d_fake, extras, more)

    def absent(*args):
        raise AssertionError("this term was handed no model")

    return Phase(
        name, real, labels, latent, fake, d_real, d_fake, NonSaturating(), absent, absent, absent,
        extras or {}, more or {},
    )  # fmt: skip
