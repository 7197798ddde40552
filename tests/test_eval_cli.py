"""`python -m src.eval` on a checkpoint from a short training run."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from conftest import CACHE, CONF, ROOT, run_train
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra


def test_eval_scores_a_checkpoint_and_writes_json(tmp_path):
    run_train(["model=cgan", "trainer.max_steps=2", "data.batch_size=16", "eval.metrics=[]"], tmp_path)
    from src.eval import evaluate

    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose(
            "evaluate",
            overrides=[
                f"ckpt={tmp_path}",
                "limit_val_batches=2",
                f"eval.classifier.cache_dir={CACHE}/classifiers",
            ],
        )
    results = evaluate(cfg)
    report = json.loads((tmp_path / "eval.json").read_text())
    assert report["metrics"] == results and report["g_step"] == 2 and report["data"] == "mnist5k"
    for key in ("val/class_consistency", "val/fid_domain", "val/kid_domain_mean", "val/is_domain_mean"):
        assert key in results, key
    # Two steps of training: G draws noise, which the classifier reads as the asked digit about as often as
    # chance (1 in 10), far from a conditional G's consistency; the classifier itself reads real digits well.
    assert results["val/class_consistency"] < 0.5 and results["val/evaluator_acc"] > 0.9


def test_eval_cli_errors_are_one_line(tmp_path):
    env = {**os.environ, "GAN_ZOO_CACHE": str(CACHE)}
    run = lambda *a: subprocess.run(  # noqa: E731
        [sys.executable, "-m", "src.eval", *a], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120
    )
    out = run()  # the whole of stderr is the one message
    assert out.returncode == 2, out.stderr
    assert out.stderr == "error: ckpt is required: python -m src.eval ckpt=<checkpoint file or run folder>\n"
    (tmp_path / "x.ckpt").write_bytes(b"garbage")
    out = run(f"ckpt={tmp_path / 'x.ckpt'}")
    assert out.returncode == 2, out.stderr
    # Longer than 80 columns, and still one line when stderr is not a terminal.
    assert out.stderr == f"error: {tmp_path / 'x.ckpt'} is not a gan-zoo checkpoint (not a PyTorch file)\n"
    out = run("--help")
    assert out.returncode == 0 and "ckpt=PATH" in out.stdout and "eval.feature_extractor" in out.stdout
