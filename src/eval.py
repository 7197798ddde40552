"""Score a checkpoint: `python -m src.eval ckpt=outputs/train/runs/<run>`.

Rebuilds the model and data from the configuration stored in the checkpoint, runs the validation
loop with every metric that applies, prints a table and writes JSON (and the class-balance chart).
`python -m src.eval reference=mnist5k` scores training images instead of samples: the real-vs-real row.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import hydra
import lightning as L
import rich
import rich.table
from hydra import compose
from hydra.core.global_hydra import GlobalHydra
from omegaconf import DictConfig, OmegaConf, open_dict

from src.build import build_datamodule, build_model
from src.checkpoint import load_checkpoint
from src.errors import ConfigError, GanZooError
from src.metrics.reference import TrainingImages, reference_scores
from src.metrics.registry import build_metrics, metric_figures
from src.utils.compose import CONF, compose_config
from src.utils.figures import save_png
from src.utils.run import exit_with_error
from src.utils.tables import metric_rows


def evaluate(cfg: DictConfig) -> dict[str, float]:
    if cfg.get("reference"):
        return reference(cfg)
    if OmegaConf.is_missing(cfg, "ckpt"):
        raise GanZooError(
            "ckpt is required: python -m src.eval ckpt=<checkpoint file or run folder> "
            "(or reference=<data> for the real-vs-real reference)"
        )
    run_cfg, state, info = load_checkpoint(cfg.ckpt)
    with open_dict(run_cfg):
        run_cfg.eval = cfg.eval
        if cfg.get("data_root"):
            run_cfg.data.root = cfg.data_root
    L.seed_everything(cfg.seed, verbose=False)
    datamodule = build_datamodule(run_cfg)
    model = build_model(run_cfg, datamodule)
    model.load_state_dict(state)
    if not cfg.get("use_ema", True):
        model.ema_generator = None
    if not model.metrics:
        raise GanZooError(f"no evaluation metric applies to {info['path']} (eval.metrics={cfg.eval.metrics})")
    trainer = L.Trainer(
        accelerator=cfg.get("accelerator", "auto"),
        devices=1,
        logger=False,
        enable_checkpointing=False,
        enable_model_summary=False,
        enable_progress_bar=False,
        limit_val_batches=cfg.get("limit_val_batches"),
    )
    trainer.validate(model, datamodule=datamodule, verbose=False)
    results = {k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("val/")}
    report = {
        "checkpoint": str(info["path"]),
        "model": run_cfg.model._target_,
        "loss": run_cfg.loss._target_,
        "data": datamodule.name,
        "g_step": info.get("g_step"),
        "feature_extractor": cfg.eval.get("feature_extractor"),
        "metrics": results,
    }
    output = Path(cfg.output) if cfg.get("output") else default_output(Path(info["path"]))
    write_report(report, output, model)
    return results


def reference(cfg: DictConfig) -> dict[str, float]:
    """Every metric on held-out images against as many random training images (their labels as conditions): a
    perfect generator's scores under this protocol (`python -m src.eval reference=mnist5k`)."""
    name = str(cfg.reference)
    data_cfg = compose_data(name, int(cfg.seed), cfg.paths)
    datamodule = build_datamodule(data_cfg)
    stand_in = TrainingImages(datamodule, seed=int(cfg.seed))
    metrics = build_metrics(cfg.eval, stand_in, datamodule)
    if not metrics:
        raise GanZooError(f"no evaluation metric applies to data={name} (eval.metrics={cfg.eval.metrics})")
    results = reference_scores(metrics, datamodule, stand_in)
    report = {
        "checkpoint": None,
        "model": "real-vs-real reference (training images)",
        "loss": None,
        "data": datamodule.name,
        "g_step": None,
        "feature_extractor": cfg.eval.get("feature_extractor"),
        "metrics": results,
    }
    output = Path(cfg.output) if cfg.get("output") else Path(cfg.paths.log_dir) / f"reference_{name}.json"
    write_report(report, output, stand_in, metrics)
    return results


def compose_data(name: str, seed: int, paths: DictConfig) -> DictConfig:
    """The training config's `data=<name>` (with this run's paths), composed as `src.train` would."""
    choices = sorted(p.stem for p in (CONF / "data").glob("*.yaml"))
    if name not in choices:
        raise ConfigError(f"reference={name}: no such data config; valid choices: {', '.join(choices)}")
    overrides = [f"data={name}", f"seed={seed}"]
    if GlobalHydra.instance().is_initialized():  # inside `python -m src.eval`
        cfg = compose("train", overrides=overrides)
    else:
        cfg = compose_config(overrides, ".")
    with open_dict(cfg):
        cfg.paths = paths
    return cfg


def write_report(report: dict, output: Path, model, metrics: dict | None = None) -> None:
    output.parent.mkdir(parents=True, exist_ok=True)
    tmp = output.with_name(output.name + ".tmp")
    tmp.write_text(json.dumps(report, indent=2))
    os.replace(tmp, output)
    for name, img in metric_figures(metrics if metrics is not None else model.metrics).items():
        save_png(img, output.with_name(f"{output.stem}_{name}.png"))  # eval_class_balance.png
    print_table(report, output)


def default_output(ckpt: Path) -> Path:
    run = ckpt.parent.parent if ckpt.parent.name == "checkpoints" else ckpt.parent
    return run / "eval.json"


def print_table(report: dict, output: Path) -> None:
    where = f" at G step {report['g_step']}" if report["g_step"] is not None else ""
    table = rich.table.Table(title=f"{report['model'].split('.')[-1]} / {report['data']}{where}")
    table.add_column("metric")
    table.add_column("value", justify="right")
    for key, text in metric_rows(report["metrics"]):
        table.add_row(key.removeprefix("val/"), text)
    rich.print(table)
    rich.print(f"written: {output}")


@hydra.main(version_base="1.3", config_path="../conf", config_name="evaluate")
def main(cfg: DictConfig) -> None:
    try:
        evaluate(cfg)
    except GanZooError as e:
        exit_with_error(e)


if __name__ == "__main__":
    main()
