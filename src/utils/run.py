"""Start-up niceties and the end-of-run summary."""

from __future__ import annotations

import json
import sys
import warnings
from collections.abc import Sequence
from pathlib import Path

import lightning as L
import rich
import rich.console
import rich.markup
import rich.syntax
import rich.table
import rich.tree
from lightning.pytorch.utilities import rank_zero_only
from omegaconf import DictConfig, OmegaConf

from src.utils.tables import metric_rows

PRINT_ORDER = ("data", "model", "loss", "trainer", "callbacks", "logger", "paths", "extras")


def apply_extras(cfg: DictConfig) -> None:
    extras = cfg.get("extras") or {}
    if extras.get("ignore_warnings"):
        warnings.filterwarnings("ignore")
    if extras.get("print_config"):
        print_config_tree(cfg, save_to=Path(cfg.paths.output_dir) / "config_tree.log")


@rank_zero_only
def print_config_tree(
    cfg: DictConfig, order: Sequence[str] = PRINT_ORDER, save_to: Path | None = None
) -> None:
    tree = rich.tree.Tree("CONFIG", style="dim", guide_style="dim")
    fields = [f for f in order if f in cfg] + [f for f in cfg if f not in order]
    for field in fields:
        branch = tree.add(field, style="bold", guide_style="dim")
        value = cfg[field]
        text = OmegaConf.to_yaml(value, resolve=True) if isinstance(value, DictConfig) else str(value)
        branch.add(rich.syntax.Syntax(text, "yaml"))
    rich.print(tree)
    if save_to is not None:
        save_to.parent.mkdir(parents=True, exist_ok=True)
        with open(save_to, "w") as f:
            rich.print(tree, file=f)


def last_checkpoint(trainer: L.Trainer) -> str:
    """Where the run's resumable last.ckpt is ('' if none was written)."""
    paths = [getattr(cb, "last_model_path", "") for cb in trainer.callbacks]
    return next((p for p in paths if p and p.endswith("last.ckpt")), "")


@rank_zero_only
def print_summary(
    trainer: L.Trainer,
    model: L.LightningModule,
    output_dir: str,
    wall_time: float,
    notes: Sequence[tuple[str, str]] = (),
) -> None:
    """Where everything went, the headline numbers of the run, and `notes` (the diagnosis, the report command)."""
    table = rich.table.Table(title="gan-zoo run", show_header=False, title_justify="left")
    table.add_column(style="bold")
    table.add_column()
    table.add_row("output dir", str(output_dir))
    table.add_row("wall time", f"{wall_time:.1f} s")
    table.add_row("steps", f"D {model.d_step}, G {model.g_step}, epochs {trainer.current_epoch}")
    last = last_checkpoint(trainer)
    if last:
        table.add_row("last checkpoint", last)
    ckpt = trainer.checkpoint_callback
    if ckpt is not None and ckpt.best_model_path and ckpt.monitor:
        score = (
            f" ({ckpt.monitor} = {float(ckpt.best_model_score):.4g})"
            if ckpt.best_model_score is not None
            else ""
        )
        table.add_row("best checkpoint", ckpt.best_model_path + score)
    for cb in trainer.callbacks:
        written = getattr(cb, "written", None)
        if written:
            table.add_row("samples", str(Path(written[-1]).parent))
    for logger in trainer.loggers:
        where = getattr(logger, "log_dir", None) or getattr(logger, "save_dir", None)
        table.add_row(f"{type(logger).__name__}", str(where))
    for key in ("train/d_loss", "train/g_loss", "train/d_acc"):
        if key in model.last_logged:
            table.add_row(key, f"{model.last_logged[key]:.4f}")
    values = {k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("val/")}
    for key, text in metric_rows(values):
        table.add_row(key, text)
    for key, text in notes:
        table.add_row(key, text, style="yellow" if key == "diagnosis" and "no failure" not in text else None)
    rich.print(table)


SUMMARY_FILE = "summary.json"


def write_summary(output_dir: str, status: str, wall_time: float, g_step: int, events: list[str]) -> None:
    """<run>/summary.json: how the run ended (src.report tells a finished run from a running one by it)."""
    path = Path(output_dir) / SUMMARY_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {"status": status, "wall_time_s": round(wall_time, 1), "g_step": g_step, "diagnosis": events}
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(state, indent=1))
    tmp.replace(path)


def exit_with_error(error: Exception, code: int = 2) -> None:
    """A configuration or data error: one clear message on stderr, no traceback, exit status 2."""
    console = rich.console.Console(stderr=True, highlight=False)
    console.print(f"[bold red]error:[/] {rich.markup.escape(str(error))}", soft_wrap=True)  # one line
    sys.exit(code)
