"""`python -m src.eval` on a checkpoint from a short training run."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
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
    for key in ("val/precision", "val/recall", "val/class_kl", "val/intra_fid", "val/within_diversity"):
        assert key in results, key
    assert (tmp_path / "eval_class_balance.png").is_file()
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
    assert out.stderr == (
        "error: ckpt is required: python -m src.eval ckpt=<checkpoint file or run folder> "
        "(or reference=<data> for the real-vs-real reference)\n"
    )
    (tmp_path / "x.ckpt").write_bytes(b"garbage")
    out = run(f"ckpt={tmp_path / 'x.ckpt'}")
    assert out.returncode == 2, out.stderr
    # Longer than 80 columns, and still one line when stderr is not a terminal.
    assert out.stderr == f"error: {tmp_path / 'x.ckpt'} is not a gan-zoo checkpoint (not a PyTorch file)\n"


@pytest.mark.slow
def test_eval_cli_help_and_an_unknown_reference(tmp_path):
    env = {**os.environ, "GAN_ZOO_CACHE": str(CACHE)}
    run = lambda *a: subprocess.run(  # noqa: E731
        [sys.executable, "-m", "src.eval", *a], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120
    )
    out = run("reference=nosuch")
    assert out.returncode == 2, out.stderr
    assert out.stderr.startswith("error: reference=nosuch: no such data config; valid choices: ")
    assert "mnist5k" in out.stderr and out.stderr.count("\n") == 1
    out = run("--help")
    assert out.returncode == 0 and "ckpt=PATH" in out.stdout and "eval.feature_extractor" in out.stdout


def test_eval_reference_scores_training_images_as_a_perfect_generator(tmp_path):
    """`reference=mnist5k`: held-out digits against training digits. The known answers of a perfect generator
    under this protocol: FID near 0, precision / recall near 1, every class near its share, within-class
    diversity near 1 (bounds from seeds 0-2: FID 2.3-3.7, P/R 0.906-0.922, diversity 0.96-1.01)."""
    env = {**os.environ, "GAN_ZOO_CACHE": str(CACHE)}
    out = subprocess.run(
        [sys.executable, "-m", "src.eval", "reference=mnist5k", f"output={tmp_path / 'ref.json'}"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    report = json.loads((tmp_path / "ref.json").read_text())
    m = report["metrics"]
    assert report["data"] == "mnist5k" and "real-vs-real" in report["model"]
    assert m["val/fid_domain"] < 6 and min(m["val/precision"], m["val/recall"]) > 0.85
    assert 0.9 < m["val/density"] < 1.1 and m["val/coverage"] > 0.9
    assert m["val/class_kl"] < 0.02 and m["val/class_min_share"] > 0.07 and m["val/class_max_share"] < 0.13
    assert 0.9 < m["val/within_diversity"] < 1.1 and m["val/class_consistency"] > 0.95
    assert (tmp_path / "ref_class_balance.png").is_file()
    assert "class_shares" in out.stdout and "within_diversity" in out.stdout
