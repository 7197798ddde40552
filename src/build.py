"""Turning a composed config into objects: the one place shared by train, eval and sample.

Errors from bad values are re-raised as `ConfigError` with the config key and the reason, so the
command line shows one clear sentence instead of a stack of instantiate frames.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import lightning as L
import torch
from hydra.errors import InstantiationException
from hydra.utils import instantiate
from lightning.pytorch.callbacks import ModelCheckpoint
from omegaconf import DictConfig, OmegaConf, open_dict

from src.callbacks.rng import TrainingRNG
from src.callbacks.safety import AtomicCheckpointIO
from src.callbacks.step_limit import GeneratorStepLimit
from src.errors import ConfigError
from src.metrics.registry import build_metrics


def _instantiate(node: DictConfig, what: str, **kwargs: Any) -> Any:
    try:
        return instantiate(node, **kwargs)
    except InstantiationException as e:
        cause = e.__cause__ or e
        while isinstance(cause, InstantiationException) and cause.__cause__ is not None:
            cause = cause.__cause__
        key = getattr(e, "full_key", "")
        text = " ".join(str(cause).split())  # one line: Hydra's messages span several
        raise ConfigError(text + (f" [at {key}]" if key else "")) from cause
    except (ValueError, TypeError) as e:
        raise ConfigError(f"{what}: {e}") from e


def build_datamodule(cfg: DictConfig) -> L.LightningDataModule:
    return _instantiate(cfg.data, "data")


def build_model(cfg: DictConfig, datamodule: L.LightningDataModule | None = None) -> L.LightningModule:
    loss = _instantiate(cfg.loss, "loss")
    model = _instantiate(cfg.model, "model", loss=loss)
    if datamodule is not None:
        model.check_data(datamodule)
        # Outside the training stream: whether a classifier is trained or read from the cache, or
        # evaluation is off, the run draws the same noise.
        with torch.random.fork_rng(devices=[]):
            model.metrics.update(build_metrics(cfg.get("eval"), model, datamodule))
    model.run_config = OmegaConf.to_container(cfg, resolve=True)
    return model


def monitored_metric(model: L.LightningModule) -> tuple[str | None, str]:
    """The headline metric of the run for "best" checkpoints: the first metric that names one."""
    for metric in model.metrics.values():
        monitor = metric.monitor
        if monitor:
            name, mode = monitor
            return f"val/{name}", mode
    return None, "min"


def build_callbacks(cfg: DictConfig, model: L.LightningModule | None = None) -> list[L.Callback]:
    callbacks = []
    for name, node in (cfg.get("callbacks") or {}).items():
        if not isinstance(node, DictConfig) or "_target_" not in node:
            continue
        if name == "model_checkpoint" and node.get("monitor") == "auto":
            node = node.copy()
            monitor, mode = monitored_metric(model) if model is not None else (None, "min")
            node.monitor = monitor
            node.mode = mode if node.get("mode") == "auto" else node.mode
            if monitor is None:
                continue  # nothing to rank by: last.ckpt (LastCheckpoint) is the run's checkpoint
        elif name == "model_checkpoint" and node.get("mode") == "auto":
            node = node.copy()
            node.mode = "min"
        callbacks.append(_instantiate(node, f"callbacks.{name}"))
    health = cfg.get("health")
    if isinstance(health, DictConfig) and "_target_" in health:
        callbacks.append(_instantiate(health, "health"))
    return callbacks


def wandb_offline_by_default() -> None:
    """W&B must never prompt: unless the user configured it (key, login or WANDB_MODE), go offline."""
    if os.environ.get("WANDB_MODE") or os.environ.get("WANDB_API_KEY"):
        return
    netrc = Path(os.environ.get("NETRC", Path.home() / ".netrc"))
    if netrc.is_file() and "api.wandb.ai" in netrc.read_text(errors="ignore"):
        return
    os.environ["WANDB_MODE"] = "offline"


def build_loggers(cfg: DictConfig, resume_wandb_id: str | None = None) -> list:
    """The configured loggers; `resume_wandb_id` continues that W&B run (a resumed training)."""
    loggers = []
    for name, node in (cfg.get("logger") or {}).items():
        if not isinstance(node, DictConfig) or "_target_" not in node:
            continue
        if "WandbLogger" in node._target_:
            wandb_offline_by_default()
            node = node.copy()
            if node.get("offline") is None:
                node.offline = os.environ.get("WANDB_MODE") in ("offline", "dryrun")
            if resume_wandb_id and not node.get("id"):
                with open_dict(node):
                    node.id, node.resume = resume_wandb_id, "allow"
            Path(node.save_dir).mkdir(parents=True, exist_ok=True)
        loggers.append(_instantiate(node, f"logger.{name}"))
    return loggers


def build_trainer(cfg: DictConfig, callbacks: list[L.Callback], loggers: list) -> L.Trainer:
    """`trainer.max_steps` counts generator steps: Lightning gets -1 and a GeneratorStepLimit callback."""
    max_steps = int(cfg.trainer.get("max_steps", -1) or -1)
    overrides: dict[str, Any] = {"max_steps": -1}
    if max_steps > 0:
        overrides["max_epochs"] = -1  # a step budget, when given, is what ends the run
        if not any(isinstance(c, GeneratorStepLimit) for c in callbacks):
            callbacks = [*callbacks, GeneratorStepLimit(max_steps)]
    # Per-process random streams, saved in and restored from checkpoints (src/callbacks/rng.py).
    callbacks = [*callbacks, TrainingRNG(cfg.get("seed"))]
    # Without a monitored metric there is no ModelCheckpoint; keep Lightning from adding its own.
    overrides["enable_checkpointing"] = any(isinstance(c, ModelCheckpoint) for c in callbacks)
    if not cfg.trainer.get("plugins"):
        overrides["plugins"] = [AtomicCheckpointIO()]
    return _instantiate(cfg.trainer, "trainer", callbacks=callbacks, logger=loggers or False, **overrides)
