"""Train a GAN: `python -m src.train model=infogan loss=wgan_gp data=mnist`.

Composes `conf/train.yaml`, builds the data module, the model (networks + loss) and the
Trainer, and fits. Returns the value of `optimized_metric` for sweepers.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import hydra
import lightning as L
from omegaconf import DictConfig, OmegaConf

from src.build import build_callbacks, build_datamodule, build_loggers, build_model, build_trainer
from src.errors import CheckpointError, ConfigError, GanZooError
from src.preflight import one_line_hydra_errors
from src.utils.perf import apply_perf
from src.utils.run import apply_extras, exit_with_error, print_summary
from src.validate import check_config

log = logging.getLogger(__name__)


def train(cfg: DictConfig) -> tuple[dict[str, float], dict[str, Any]]:
    check_config(cfg)
    # Every process seeds the same way before building: the networks start identical on every rank.
    if cfg.get("seed") is not None:
        L.seed_everything(cfg.seed, workers=True, verbose=False)
    datamodule = build_datamodule(cfg)
    model = build_model(cfg, datamodule)
    model.choices = group_choices()
    check_optimized_metric(cfg, model)
    done = apply_perf(cfg.get("perf"), model)
    if done:
        log.info("perf: %s", ", ".join(done))
    callbacks = build_callbacks(cfg, model)
    ckpt_path = resolve_ckpt_path(cfg) if cfg.get("train", True) else None
    loggers = build_loggers(cfg, resume_wandb_id=checked_resume(ckpt_path, cfg, model))
    trainer = build_trainer(cfg, callbacks, loggers)
    for logger in trainer.loggers:
        logger.log_hyperparams(model.run_config)

    start = time.perf_counter()
    if cfg.get("train", True):
        trainer.fit(model, datamodule=datamodule, ckpt_path=ckpt_path)
    wall = time.perf_counter() - start

    metrics = {k: float(v) for k, v in trainer.callback_metrics.items()}
    metrics.update(model.last_logged)
    print_summary(trainer, model, cfg.paths.output_dir, wall)
    finish_loggers(trainer, metrics)
    if cfg.get("train", True) and hasattr(model, "after_fit"):
        model.after_fit()  # a follow-up run once this one is closed (StackGAN model.stage=both: stage II)
    return metrics, {
        "cfg": cfg,
        "datamodule": datamodule,
        "model": model,
        "trainer": trainer,
        "wall_time": wall,
    }


def resolve_ckpt_path(cfg: DictConfig) -> str | None:
    """`ckpt_path=auto`: the newest last.ckpt among this task's earlier runs (None: start fresh)."""
    path = cfg.get("ckpt_path")
    if path != "auto":
        if path and not Path(path).is_file():
            raise ConfigError(f"ckpt_path={path} does not exist")
        return path
    root = Path(cfg.paths.log_dir) / cfg.task_name
    own = Path(cfg.paths.output_dir).resolve()
    found = [p for p in root.glob("**/checkpoints/last.ckpt") if own not in p.resolve().parents]
    if not found:
        log.info("ckpt_path=auto: no earlier last.ckpt under %s; starting from scratch", root)
        return None
    newest = max(found, key=lambda p: p.stat().st_mtime)
    log.info("ckpt_path=auto: resuming from %s", newest)
    return str(newest)


GROUPS = ("model", "loss", "data")


def group_choices() -> dict[str, str]:
    """The options picked for the groups a checkpoint must match (model=dcgan loss=wgan_gp data=mnist5k)."""
    from hydra.core.hydra_config import HydraConfig

    if not HydraConfig.initialized():
        return {}
    choices = HydraConfig.get().runtime.choices
    return {g: str(choices[g]) for g in GROUPS if choices.get(g) is not None}


def checked_resume(ckpt_path: str | None, cfg: DictConfig, model: L.LightningModule) -> str | None:
    """Check that the checkpoint to resume fits this command (what it was trained with, its weights'
    names and shapes), here with one clear line rather than in the Trainer with a traceback; return the
    W&B run it was logging to, so that resuming continues that run."""
    if not ckpt_path:
        return None
    from src.checkpoint import load_checkpoint

    try:
        old_cfg, state, info = load_checkpoint(ckpt_path)
    except CheckpointError as e:
        raise ConfigError(f"ckpt_path={ckpt_path}: {e}") from None
    old = dict(info.get("choices") or {})
    new = dict(model.choices)
    differ = [g for g in GROUPS if g in old and g in new and old[g] != new[g]]
    for g in GROUPS:  # checkpoints without the names: compare what the groups build
        if g not in old and OmegaConf.select(old_cfg, f"{g}._target_") != OmegaConf.select(
            cfg, f"{g}._target_"
        ):
            differ.append(g)
    mine = model.state_dict()
    misfit = sorted(set(mine) ^ set(state)) or [
        k for k in mine if tuple(mine[k].shape) != tuple(getattr(state[k], "shape", ()))
    ]
    if differ or misfit:
        trained = " ".join(f"{g}={old[g]}" for g in GROUPS if g in old)
        asked = " ".join(f"{g}={new[g]}" for g in GROUPS if g in new)
        if differ and trained and asked:
            detail = f"this command has {asked}"
        else:
            changed = settings_diff(old_cfg, cfg)
            detail = f"its weights do not fit this model ({misfit[0] if misfit else differ[0]})" + (
                f"; settings that differ: {', '.join(changed)}" if changed else ""
            )
        raise ConfigError(
            f"ckpt_path={ckpt_path} was trained with {trained or 'another model'}; {detail}. To resume it, "
            f"run `python -m src.train {trained + ' ' if trained else ''}ckpt_path={ckpt_path}` with the "
            "overrides it was trained with; to start fresh, leave out ckpt_path"
        )
    schedule = OmegaConf.select(old_cfg, "model.lr_schedule") or {}
    total = OmegaConf.select(cfg, "model.lr_schedule.total_steps")
    if schedule.get("name") == "linear_decay" and schedule.get("total_steps") != total:
        log.warning(
            "model.lr_schedule=linear_decay: %s was trained with total_steps=%s, this run has %s; the learning "
            "rate follows the new schedule from here, so the result differs from a run that long from the "
            "start (model.lr_schedule.name=constant extends exactly)",
            ckpt_path,
            schedule.get("total_steps"),
            total,
        )
    return info["wandb_id"]


def settings_diff(old: DictConfig, new: DictConfig, limit: int = 4) -> list[str]:
    """`key: old -> new` for the model/loss/data settings that differ (the first `limit`)."""
    from src.validate import leaves

    def flat(cfg: DictConfig) -> dict:
        return dict(leaves({g: OmegaConf.to_container(cfg[g], resolve=True) for g in GROUPS if g in cfg}))

    a, b = flat(old), flat(new)
    keys = [k for k in b if k in a and a[k] != b[k] and not k.startswith("data.root")]
    return [f"{k}: {a[k]} -> {b[k]}" for k in keys[:limit]]


# train/ diagnostics every run logs (auxiliary terms add train/<phase>_<term>_<part> and train/<term>_*).
TRAIN_METRICS = {
    "d_loss",
    "g_loss",
    "d_adv",
    "g_adv",
    "d_real",
    "d_fake",
    "d_acc",
    "d_acc_real",
    "d_acc_fake",
}
TRAIN_METRICS |= {"d_grad_norm", "g_grad_norm", "wasserstein", "d_step", "g_step"}


def check_optimized_metric(cfg: DictConfig, model: L.LightningModule) -> None:
    """A sweep's `optimized_metric` must be one this config logs: refused before any training."""
    name = cfg.get("optimized_metric")
    if not name:
        return
    val = {f"val/{n}" for m in model.metrics.values() for n in getattr(m, "names", ())}
    if cfg.trainer.get("limit_val_batches") in (0, 0.0):
        val = set()
    train = {f"train/{n}" for n in TRAIN_METRICS}
    terms = tuple(f"train/{p}{t}_" for t in getattr(model, "aux_terms", {}) for p in ("", "d_", "g_"))
    if name in val or name in train or (name.startswith(terms) and terms):
        return
    why = (
        ""
        if val
        else " (evaluation is off: eval.metrics=[], trainer.limit_val_batches=0 or no held-out split)"
    )
    raise ConfigError(
        f"optimized_metric={name} is never logged by this config{why}; it logs: "
        f"{', '.join(sorted(val) + sorted(train))}"
    )


def finish_loggers(trainer: L.Trainer, metrics: dict[str, float]) -> None:
    """W&B: the final metric table, then close the run so each job of a multirun is its own run."""
    for logger in trainer.loggers:
        if type(logger).__name__ == "WandbLogger":
            import wandb

            rows = [[k, v] for k, v in sorted(metrics.items()) if k.startswith("val/")]
            if rows and trainer.is_global_zero:
                logger.log_table(key="metrics", columns=["metric", "value"], data=rows)
            if wandb.run is not None:
                wandb.finish()


@hydra.main(version_base="1.3", config_path="../conf", config_name="train")
def main(cfg: DictConfig) -> float | None:
    apply_extras(cfg)
    try:
        metrics, _ = train(cfg)
    except GanZooError as e:
        exit_with_error(e)
    name = cfg.get("optimized_metric")
    if not name:
        return None
    if name not in metrics:  # checked at start-up; a run stopped before its first evaluation ends here
        exit_with_error(
            ConfigError(f"optimized_metric={name} was not logged; logged: {', '.join(sorted(metrics))}")
        )
    return metrics[name]


if __name__ == "__main__":
    one_line_hydra_errors()
    main()
