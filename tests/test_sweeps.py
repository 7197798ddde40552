"""Hydra multirun: a plain grid over losses, and a 2-trial Optuna search with local SQLite storage."""

from __future__ import annotations

import csv
import os
import subprocess
import sys

import optuna
import torch
import yaml
from conftest import CONF, ROOT, choices

QUIET = ["extras.print_config=false", "trainer.enable_progress_bar=false", "~callbacks.rich_progress_bar"]


def run(args, tmp_path):
    env = {**os.environ, "GAN_ZOO_CACHE": str(tmp_path / "cache")}
    cmd = [sys.executable, "-m", "src.train", "-m", *args, *QUIET, f"paths.log_dir={tmp_path}"]
    return subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)


def last_logged(metrics_csv, name: str) -> float:
    with open(metrics_csv) as f:
        values = [row[name] for row in csv.DictReader(f) if row.get(name)]
    return float(values[-1])


def overrides(job) -> dict[str, str]:
    return dict(o.split("=", 1) for o in yaml.safe_load((job / ".hydra" / "overrides.yaml").read_text()))


def target(group: str, choice: str, key: str = "_target_"):
    node = yaml.safe_load((CONF / group / f"{choice}.yaml").read_text())
    node = node.get(group, node)  # loss configs are @package _global_
    for part in key.split("."):
        node = node[part]
    return node


def test_optuna_search_runs_offline_with_sqlite(tmp_path):
    search = yaml.safe_load((CONF / "hparams_search" / "grid25_modes.yaml").read_text())
    sweeper, metric = search["hydra"]["sweeper"], search["optimized_metric"]
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
    jobs = sorted(p for p in results.parent.iterdir() if p.is_dir())
    assert [j.name for j in jobs] == ["0", "1"]
    # Each trial's value is the metric its own run logged, and the study in the SQLite file holds them.
    logged = [last_logged(j / "csv" / "metrics.csv", metric) for j in jobs]
    study = optuna.load_study(study_name=sweeper["study_name"], storage=f"sqlite:///{db}")
    assert [(t.state.name, t.value) for t in study.trials] == [("COMPLETE", v) for v in logged]
    # The best is the best of the logged values in the configured direction, with that trial's params.
    assert best["best_value"] == {"maximize": max, "minimize": min}[sweeper["direction"]](logged)
    assert set(best["best_params"]) == set(sweeper["params"])
    assert any(
        v == best["best_value"]
        and all(yaml.safe_load(overrides(j)[k]) == p for k, p in best["best_params"].items())
        for j, v in zip(jobs, logged)
    ), (best, [overrides(j) for j in jobs], logged)


def test_plain_grid_over_losses_and_models(tmp_path):
    models, losses = ["gan", "dcgan"], choices("loss")
    args = [
        f"model={','.join(models)}",
        f"loss={','.join(losses)}",
        "trainer.max_steps=2",
        "data.batch_size=16",
        "eval.metrics=[]",
    ]
    out = run([*args, "~callbacks.samples"], tmp_path)
    assert out.returncode == 0, out.stderr[-3000:]
    jobs = sorted(p for p in tmp_path.glob("train/multiruns/*/*") if p.is_dir())
    assert len(jobs) == len(models) * len(losses)
    seen = set()
    for job in jobs:
        m, lo = overrides(job)["model"], overrides(job)["loss"]
        seen.add((m, lo))
        # The job trained with that model and loss: its checkpoint's config names their classes.
        config = torch.load(job / "checkpoints" / "last.ckpt", weights_only=True)["gan_zoo"]["config"]
        assert config["loss"]["_target_"] == target("loss", lo), job
        assert config["model"]["generator"]["_target_"] == target("model", m, "generator._target_"), job
    assert seen == {(m, lo) for m in models for lo in losses}
