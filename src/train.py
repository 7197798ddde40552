"""Train a GAN: `python -m src.train model=infogan loss=wgan_gp data=mnist`.

Composes `conf/train.yaml`, builds the data module, the model (networks + loss) and the
Trainer, and fits. Returns the value of `optimized_metric` for sweepers.
"""

from __future__ import annotations

import logging
import re
import time
from pathlib import Path
from typing import Any

import hydra
import lightning as L
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, ListConfig

from src.build import build_callbacks, build_datamodule, build_loggers, build_model, build_trainer
from src.callbacks.health import HealthCheck
from src.callbacks.safety import LastCheckpoint
from src.checkpoint import check_resume, group_choices
from src.errors import ConfigError, GanZooError, NonFiniteError
from src.preflight import one_line_hydra_errors
from src.utils.compose import CONF
from src.utils.perf import apply_perf
from src.utils.run import apply_extras, exit_with_error, last_checkpoint, print_summary, write_summary
from src.validate import check_config

log = logging.getLogger(__name__)


def train(cfg: DictConfig) -> tuple[dict[str, float], dict[str, Any]]:
    """This run, then the runs its plan adds after it (`stages` for this model.stage: StackGAN's stage II);
    the first run's metrics and objects."""
    result = train_one(cfg)
    for stage in (cfg.get("stages") or {}).get(str(cfg.model.get("stage")), []):
        cfg = next_stage(result[1]["trainer"], cfg, stage)
        if cfg is None:
            break
        train_one(cfg)
    return result


def train_one(cfg: DictConfig) -> tuple[dict[str, float], dict[str, Any]]:
    check_config(cfg)
    # Every process seeds the same way before building: the networks start identical on every rank.
    if cfg.get("seed") is not None:
        L.seed_everything(cfg.seed, workers=True, verbose=False)
    datamodule = build_datamodule(cfg)
    model = build_model(cfg, datamodule)
    model.choices = group_choices()  # stored in checkpoints: a resume must name the same groups
    check_optimized_metric(cfg, model)
    done = apply_perf(cfg.get("perf"), model)
    if done:
        log.info("perf: %s", ", ".join(done))
    callbacks = build_callbacks(cfg, model)
    ckpt_path = resolve_ckpt_path(cfg) if cfg.get("train", True) else None
    wandb_id = check_resume(ckpt_path, cfg, model) if ckpt_path else None  # fits this command?
    loggers = build_loggers(cfg, resume_wandb_id=wandb_id)
    trainer = build_trainer(cfg, callbacks, loggers)
    for logger in trainer.loggers:
        logger.log_hyperparams(model.run_config)

    start = time.perf_counter()
    try:
        if cfg.get("train", True):
            trainer.fit(model, datamodule=datamodule, ckpt_path=ckpt_path)
    except NonFiniteError:  # the summary (with the diagnosis) first, then the one error line
        end_of_run(trainer, model, cfg, time.perf_counter() - start, "stopped: not finite")
        raise
    wall = time.perf_counter() - start

    metrics = {k: float(v) for k, v in trainer.callback_metrics.items()}
    metrics.update(model.last_logged)
    end_of_run(trainer, model, cfg, wall, run_status(trainer, cfg))
    finish_loggers(trainer, metrics)
    return metrics, {
        "cfg": cfg,
        "datamodule": datamodule,
        "model": model,
        "trainer": trainer,
        "wall_time": wall,
    }


def stopped_by_signal(trainer: L.Trainer) -> bool:
    return any(isinstance(cb, LastCheckpoint) and cb.received is not None for cb in trainer.callbacks)


def run_status(trainer: L.Trainer, cfg: DictConfig) -> str:
    if not cfg.get("train", True):
        return "not trained (train=false)"
    if stopped_by_signal(trainer):
        return "stopped: signal"
    if any(isinstance(cb, HealthCheck) and cb.stopped_at is not None for cb in trainer.callbacks):
        return "stopped: health check"
    return "finished"


def end_of_run(
    trainer: L.Trainer, model: L.LightningModule, cfg: DictConfig, wall: float, status: str
) -> None:
    """The summary table (with the diagnosis and the report command) and <run>/summary.json (src.report)."""
    health = next((cb for cb in trainer.callbacks if isinstance(cb, HealthCheck)), None)
    rows = health.summary_rows() if health is not None else []
    rows.append(("report", f"python -m src.report {cfg.paths.output_dir}"))
    print_summary(trainer, model, cfg.paths.output_dir, wall, rows)
    if trainer.is_global_zero:
        events = [e.message() for e in health.events] if health is not None else []
        write_summary(cfg.paths.output_dir, status, wall, model.g_step, events)


def next_stage(trainer: L.Trainer, cfg: DictConfig, stage: DictConfig) -> DictConfig | None:
    """The next run of a plan: this command line plus the stage's overrides, `{previous}` being the last.ckpt
    of the run just closed, in <run>/<folder>. None (with the reason logged) when there is nothing to go on."""
    if not cfg.get("train", True):
        return None
    if stopped_by_signal(trainer):
        log.warning(
            "the run was stopped by a signal: the next stage is not started (resume with ckpt_path=...)"
        )
        return None
    ckpt = last_checkpoint(trainer)
    if not ckpt or not HydraConfig.initialized():
        log.warning(
            "no last.ckpt or Hydra run to continue from: start the next stage yourself (model.stage=...)"
        )
        return None
    paths = cfg.paths
    out = Path(paths.output_dir) / stage.folder
    given = [str(o).replace("{previous}", quote(ckpt)) for o in flatten(stage.overrides)]
    replaced = tuple(o.lstrip("+~").split("=", 1)[0] + "=" for o in given)
    replaced += ("ckpt_path=", "paths.output_dir=", "paths.log_dir=", "paths.cache_dir=")
    overrides = [o for o in HydraConfig.get().overrides.task if not o.lstrip("+~").startswith(replaced)]
    overrides += given + ["ckpt_path=null", f"paths.output_dir={quote(out)}"]
    overrides += [f"paths.{k}={quote(paths[k])}" for k in ("log_dir", "cache_dir")]
    log.info("%s done; the next stage runs in %s", ckpt, out)
    if GlobalHydra.instance().is_initialized():
        return compose("train", overrides=overrides)
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return compose("train", overrides=overrides)


def flatten(items: Any) -> list[Any]:
    """Overrides as a flat list: an entry may be a list of them (`${stage2_overrides}`)."""
    return [x for item in items for x in (flatten(item) if isinstance(item, ListConfig | list) else [item])]


def quote(value: Any) -> str:
    """A value as a Hydra override value: quoted unless it is a plain path-like word."""
    text = str(value)
    if re.fullmatch(r"[\w./:+-]+", text):
        return text
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"


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
TRAIN_METRICS |= {"d_grad_norm", "g_grad_norm", "wasserstein", "diversity", "d_step", "g_step"}


def check_optimized_metric(cfg: DictConfig, model: L.LightningModule) -> None:
    """A sweep's `optimized_metric` must be one this config logs: refused before any training."""
    name = cfg.get("optimized_metric")
    if not name:
        return
    val = {f"val/{n}" for m in model.metrics.values() for n in m.names}
    if cfg.trainer.get("limit_val_batches") in (0, 0.0):
        val = set()
    train = {f"train/{n}" for n in TRAIN_METRICS}
    terms = tuple(f"train/{p}{t}_" for t in model.aux_terms for p in ("", "d_", "g_"))
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
