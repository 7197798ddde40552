"""The data position and exact continuation: every epoch a new order, resume at a natural epoch end with
evaluation and figures on, and a finished run extended to more steps, for the plain, InfoGAN and StackGAN
models."""

from __future__ import annotations

import json

import lightning as L
import pytest
import torch
from conftest import run_train

from src.data.base import TensorLoader


class RecordBatches(L.Callback):
    """Writes (d_step, sum of the real batch, torch RNG state sum) of every training batch to a JSON file."""

    def __init__(self, path: str):
        self.path, self.rows = path, []

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self.rows.append(
            [pl_module.d_step, float(batch[0].double().sum()), float(torch.get_rng_state().sum())]
        )

    def on_train_end(self, trainer, pl_module) -> None:
        with open(self.path, "w") as f:
            json.dump(self.rows, f)


def weights(module):
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def assert_same_weights(a, b):
    a, b = weights(a), weights(b)
    mismatched = [k for k in a if not torch.equal(a[k], b[k])]
    assert not mismatched, mismatched[:5]


def test_loader_cut_short_still_moves_to_a_new_order():
    x = torch.arange(40).view(40, 1)
    loader = TensorLoader(x, torch.zeros(40), batch_size=4, shuffle=True, drop_last=True, seed=3)
    firsts = []
    for _ in range(3):  # the trainer takes 2 of 10 batches, then starts the next epoch
        it = iter(loader)
        firsts.append(next(it)[0].flatten().tolist())
        next(it)
    assert firsts[0] != firsts[1] != firsts[2] != firsts[0]
    assert loader.epoch == 2


def test_loader_state_is_the_next_epoch_once_the_trainer_took_its_batches():
    loader = TensorLoader(torch.arange(40).view(40, 1), torch.zeros(40), 4, True, True, seed=3)
    loader.epoch_batches = lambda: 2
    it = iter(loader)
    next(it)
    assert loader.state_dict() == {"epoch": 0, "batch": 1}
    next(it)
    assert loader.state_dict() == {"epoch": 1, "batch": 0}
    resumed = TensorLoader(torch.arange(40).view(40, 1), torch.zeros(40), 4, True, True, seed=3)
    resumed.load_state_dict({"epoch": 0, "batch": 1})
    assert resumed.state_dict() == {"epoch": 0, "batch": 1}  # restored, not yet drawn from
    assert torch.equal(next(iter(resumed))[0], list(iter(loader_at(0)))[1][0])


def loader_at(epoch):
    loader = TensorLoader(torch.arange(40).view(40, 1), torch.zeros(40), 4, True, True, seed=3)
    loader.next_epoch = epoch
    return loader


def test_epochs_cut_by_limit_train_batches_draw_new_batches(tmp_path):
    rec = tmp_path / "rec.json"
    args = ["model=gan", "data.batch_size=16", "trainer.limit_train_batches=3", "trainer.max_steps=9"]
    args += ["eval.metrics=[]", "~callbacks.samples", "+callbacks.rec._target_=test_resume.RecordBatches"]
    run_train([*args, f"+callbacks.rec.path={rec}"], tmp_path)
    sums = [row[1] for row in json.loads(rec.read_text())]
    assert len(sums) == 9 and len(set(sums)) == 9, sums  # 3 epochs of 3 batches: 9 different batches


def continue_run(tmp_path, overrides, first: list[str], then: list[str]):
    """(a straight run, the run continued from the first one's last.ckpt) with `overrides` in common."""
    rec = [
        "+callbacks.rec._target_=test_resume.RecordBatches",
        "+callbacks.rec.path=${paths.output_dir}/r.json",
    ]
    _, straight = run_train([*overrides, *rec, *then], tmp_path / "straight")
    run_train([*overrides, *rec, *first], tmp_path / "first")
    ckpt = tmp_path / "first" / "checkpoints" / "last.ckpt"
    _, continued = run_train([*overrides, *rec, *then, f"ckpt_path={ckpt}"], tmp_path / "continued")
    rows = {name: json.loads((tmp_path / name / "r.json").read_text()) for name in ("straight", "continued")}
    n = len(rows["continued"])
    assert n and rows["continued"] == rows["straight"][-n:], "the continued run drew other batches or noise"
    return straight["model"], continued["model"]


# 160 images / 16 = 10 batches an epoch: max_steps 5 stops inside epoch 0.
CONSTANT = ["data.batch_size=16", "model.lr_schedule=null", "trainer.limit_val_batches=2"]


def test_extending_a_finished_run_equals_a_straight_run(tmp_path):
    """Evaluation on: the first run evaluates when max_steps stops it, the straight run does not; neither
    that nor the sample figures may shift the training stream."""
    a, b = continue_run(
        tmp_path,
        ["model=dcgan", *CONSTANT, "model.ema_decay=0.9"],
        ["trainer.max_steps=5"],
        ["trainer.max_steps=10"],
    )
    assert (b.g_step, b.d_step) == (10, 10)
    assert_same_weights(a, b)


def test_resume_at_a_natural_epoch_end_with_evaluation_and_figures_on(tmp_path):
    """The first run ends with its epoch (limit_train_batches=4, max_epochs=1): evaluation and the sample
    figures run at that epoch end, then the checkpoint; the continued run must not see a difference."""
    common = ["model=dcgan", *CONSTANT, "trainer.limit_train_batches=4", "trainer.max_steps=-1"]
    a, b = continue_run(tmp_path, common, ["trainer.max_epochs=1"], ["trainer.max_epochs=3"])
    assert (b.g_step, b.d_step) == (12, 12)
    assert (tmp_path / "continued" / "samples" / "samples_last.png").is_file()
    assert_same_weights(a, b)


def test_infogan_extension_is_exact(tmp_path):
    common = ["model=infogan", *CONSTANT, "~callbacks.samples", "eval.metrics=[]"]
    a, b = continue_run(tmp_path, common, ["trainer.max_steps=3"], ["trainer.max_steps=6"])
    assert b.g_step == 6
    assert_same_weights(a, b)


@pytest.mark.parametrize("stage", [1, 2])
def test_stackgan_extension_is_exact(stage, tmp_path):
    from test_stackgan import QUIET

    common = [o for o in QUIET if not o.startswith("trainer.max_steps")] + ["model.lr_schedule=null"]
    if stage == 2:
        run_train([*common, "trainer.max_steps=2"], tmp_path / "stage1")
        common += ["model.stage=2", f"model.stage1_ckpt={tmp_path / 'stage1'}"]
    a, b = continue_run(tmp_path, common, ["trainer.max_steps=3"], ["trainer.max_steps=6"])
    assert b.g_step == 6
    assert_same_weights(a, b)
