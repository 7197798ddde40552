"""Hydra multirun: a plain grid over losses, and a 2-trial Optuna search with local SQLite storage."""

from __future__ import annotations

import os
import subprocess
import sys

import yaml
from conftest import ROOT

QUIET = ["extras.print_config=false", "trainer.enable_progress_bar=false", "~callbacks.rich_progress_bar"]


def run(args, tmp_path):
    env = {**os.environ, "GAN_ZOO_CACHE": str(tmp_path / "cache")}
    cmd = [sys.executable, "-m", "src.train", "-m", *args, *QUIET, f"paths.log_dir={tmp_path}"]
    return subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)


def test_optuna_search_runs_offline_with_sqlite(tmp_path):
    db = tmp_path / "optuna.db"
    args = [
        "hparams_search=grid25_modes",
        "hydra.sweeper.n_trials=2",
        "trainer.max_steps=20",
        "data.n_train=2000",
    ]
    out = run([*args, f"hydra.sweeper.storage=sqlite:///{db}"], tmp_path)
    assert out.returncode == 0, out.stderr[-3000:]
    (results,) = list(tmp_path.glob("train/multiruns/*/optimization_results.yaml"))
    best = yaml.safe_load(results.read_text())
    assert 0 <= best["best_value"] <= 25 and set(best["best_params"]) >= {"loss", "model.pack"}
    assert sorted(p.name for p in results.parent.iterdir() if p.is_dir()) == ["0", "1"]
    assert db.stat().st_size > 0


def test_plain_grid_over_losses_and_models(tmp_path):
    args = [
        "model=gan,dcgan",
        "loss=hinge,wgan_gp",
        "trainer.max_steps=2",
        "data.batch_size=16",
        "eval.metrics=[]",
    ]
    out = run([*args, "~callbacks.samples"], tmp_path)
    assert out.returncode == 0, out.stderr[-3000:]
    jobs = sorted(p for p in tmp_path.glob("train/multiruns/*/*") if p.is_dir())
    assert len(jobs) == 4 and all((j / "checkpoints" / "last.ckpt").is_file() for j in jobs)
    overrides = {tuple(yaml.safe_load((j / ".hydra" / "overrides.yaml").read_text())[:2]) for j in jobs}
    assert overrides == {
        (f"model={m}", f"loss={lo}") for m in ("gan", "dcgan") for lo in ("hinge", "wgan_gp")
    }
