"""Score a checkpoint: `python -m src.eval ckpt=outputs/train/runs/<run>`.

Rebuilds the model and data from the configuration stored in the checkpoint, runs the validation
loop with every metric that applies, prints a table and writes JSON.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import hydra
import lightning as L
import rich
import rich.table
from omegaconf import DictConfig, OmegaConf, open_dict

from src.build import build_datamodule, build_model
from src.checkpoint import load_checkpoint
from src.errors import GanZooError
from src.utils.run import exit_with_error


def evaluate(cfg: DictConfig) -> dict[str, float]:
    if OmegaConf.is_missing(cfg, "ckpt"):
        raise GanZooError("ckpt is required: python -m src.eval ckpt=<checkpoint file or run folder>")
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
    output.parent.mkdir(parents=True, exist_ok=True)
    tmp = output.with_name(output.name + ".tmp")
    tmp.write_text(json.dumps(report, indent=2))
    os.replace(tmp, output)
    print_table(report, output)
    return results


def default_output(ckpt: Path) -> Path:
    run = ckpt.parent.parent if ckpt.parent.name == "checkpoints" else ckpt.parent
    return run / "eval.json"


def print_table(report: dict, output: Path) -> None:
    table = rich.table.Table(
        title=f"{report['model'].split('.')[-1]} / {report['data']} at G step {report['g_step']}"
    )
    table.add_column("metric")
    table.add_column("value", justify="right")
    for key, value in sorted(report["metrics"].items()):
        table.add_row(key.removeprefix("val/"), f"{value:.4f}")
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
