"""Exact resume, the non-finite guard, signals, atomic checkpoints."""

from __future__ import annotations

import re
import signal
import subprocess
import sys
import time

import pytest
import torch
from conftest import ROOT, run_train

from src.callbacks.safety import AtomicCheckpointIO
from src.errors import NonFiniteError, WriteError

# A small, fast run that exercises everything a resume must restore: Adam moments, the LR
# schedule, EMA, n_critic, GP randomness, epoch boundaries (160 images / 16 = 10 batches an epoch).
BASE = [
    "model=dcgan",
    "loss=wgan_gp",
    "model.n_critic=2",
    "model.ema_decay=0.9",
    "data.batch_size=16",
    "trainer.limit_train_batches=10",
    "trainer.limit_val_batches=0",
    "eval.metrics=[]",
    "~callbacks.samples",
    "trainer.max_steps=12",
]


def weights(module):
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def test_resume_mid_epoch_equals_an_uninterrupted_run(tmp_path):
    _, full = run_train(BASE, tmp_path / "full")
    preempt = ["+callbacks.stop._target_=probes.SelfSignal", "+callbacks.stop.at_g_step=7"]
    _, first = run_train(BASE + preempt, tmp_path / "first")
    ckpt = tmp_path / "first" / "checkpoints" / "last.ckpt"
    saved = torch.load(ckpt, weights_only=True)["gan_zoo"]
    assert first["model"].g_step == saved["g_step"] < 12  # stopped early by the signal, checkpoint written
    assert saved["d_step"] % 10 != 0  # mid-epoch
    _, resumed = run_train([*BASE, f"ckpt_path={ckpt}"], tmp_path / "resumed")
    a, b = weights(full["model"]), weights(resumed["model"])
    assert (resumed["model"].g_step, resumed["model"].d_step) == (12, 24)
    mismatched = [k for k in a if not torch.equal(a[k], b[k])]
    assert not mismatched, mismatched[:5]


def test_nan_stops_with_the_step_phase_and_term_and_keeps_the_last_good_checkpoint(tmp_path):
    poison = ["+callbacks.nan._target_=probes.Poison", "+callbacks.nan.at_d_step=25"]
    with pytest.raises(NonFiniteError, match=r"non-finite adv.*D step 25.*discriminator phase") as err:
        run_train([*BASE, "trainer.max_steps=100", *poison], tmp_path)
    ckpt = tmp_path / "checkpoints" / "last.ckpt"
    assert str(ckpt) in str(err.value)
    state = torch.load(ckpt, weights_only=True)
    assert state["gan_zoo"]["d_step"] == 20  # the end of epoch 2, before the poisoned step
    assert all(torch.isfinite(v).all() for v in state["state_dict"].values() if v.is_floating_point())


def test_nan_skip_counts_and_goes_on(tmp_path):
    poison = ["+callbacks.nan._target_=probes.Poison", "+callbacks.nan.at_d_step=3"]
    metrics, objects = run_train([*BASE, "trainer.max_steps=4", "model.on_nonfinite=skip", *poison], tmp_path)
    assert objects["model"].guard.skipped == {"d": 1, "g": 0} and objects["model"].g_step == 4
    assert metrics["train/skipped_d"] == 1
    assert all(torch.isfinite(p).all() for p in objects["model"].parameters())


def test_atomic_checkpoint_io_keeps_the_old_file_and_refuses_nan(tmp_path):
    io = AtomicCheckpointIO()
    path = tmp_path / "last.ckpt"
    io.save_checkpoint({"state_dict": {"w": torch.ones(2)}}, path)
    io.save_checkpoint({"state_dict": {"w": torch.tensor([1.0, float("nan")])}}, path)
    assert torch.equal(torch.load(path, weights_only=True)["state_dict"]["w"], torch.ones(2))

    class Unpicklable:
        def __reduce__(self):
            raise OSError("disk full")

    with pytest.raises(
        WriteError, match=f"cannot write the checkpoint {path}: disk full; the previous last.ckpt is intact"
    ):
        io.save_checkpoint({"state_dict": {"w": torch.zeros(2)}, "x": Unpicklable()}, path)
    assert torch.equal(torch.load(path, weights_only=True)["state_dict"]["w"], torch.ones(2))
    assert [p.name for p in tmp_path.iterdir()] == ["last.ckpt"]  # no temporary file left behind


def test_sigterm_to_a_training_process_leaves_a_checkpoint_that_resumes(tmp_path):
    args = [
        *BASE,
        "trainer.max_steps=100000",
        "trainer.log_every_n_steps=1",
        f"paths.log_dir={tmp_path / 'logs'}",
    ]
    args += ["extras.print_config=false", "~callbacks.rich_progress_bar", "trainer.enable_progress_bar=false"]
    proc = subprocess.Popen([sys.executable, "-m", "src.train", *args], cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)  # fmt: skip
    deadline = time.time() + 240
    metrics = None
    while time.time() < deadline and proc.poll() is None:
        metrics = next((tmp_path / "logs").glob("train/runs/*/csv/metrics.csv"), None)
        if metrics and metrics.stat().st_size > 200:
            break
        time.sleep(0.5)
    assert proc.poll() is None, proc.stdout.read()[-2000:]
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode == 0, out[-2000:]
    (ckpt,) = list((tmp_path / "logs").glob("train/runs/*/checkpoints/last.ckpt"))
    g = torch.load(ckpt, weights_only=True)["gan_zoo"]["g_step"]
    # The checkpoint is the one written on the signal (not an earlier end-of-epoch one), and says so.
    plain = re.sub(r"\x1b\[[0-9;]*m", "", out)  # colorlog's colours off
    said = re.search(r"saved (\S+) at G step (\d+); resume with ckpt_path=(\S+)", plain)
    assert said, out[-2000:]
    assert said[1] == said[3] == str(ckpt) and int(said[2]) == g >= 1
    _, resumed = run_train([*BASE, f"trainer.max_steps={g + 2}", f"ckpt_path={ckpt}"], tmp_path / "resumed")
    assert resumed["model"].g_step == g + 2


def test_ckpt_path_auto_finds_the_newest_run(tmp_path):
    """Two earlier runs (different seeds): the newer one, 4 steps, sits in the folder that sorts first, so
    neither the path order nor the older 2-step run passes for it. Resumed at its limit, the run stops at once
    with the newer run's weights; from the older run or from scratch it would train to step 4 (other weights)."""
    runs = tmp_path / "train" / "runs"
    run_train([*BASE, "trainer.max_steps=2", "seed=1"], runs / "b_older")
    time.sleep(1.1)  # distinct modification times even on coarse-grained file systems
    _, newer = run_train([*BASE, "trainer.max_steps=4", "seed=2"], runs / "a_newer")
    _, objects = run_train(
        [*BASE, "trainer.max_steps=4", "ckpt_path=auto", f"paths.log_dir={tmp_path}"], runs / "c"
    )
    assert (objects["model"].g_step, objects["model"].d_step) == (4, 8)
    a, b = weights(newer["model"]), weights(objects["model"])
    assert all(torch.equal(a[k], b[k]) for k in a), "ckpt_path=auto did not resume the newest run"


def test_missing_checkpoint_path_is_a_clear_error(tmp_path):
    from src.errors import ConfigError

    with pytest.raises(ConfigError, match="ckpt_path=.*nope.ckpt does not exist"):
        run_train([*BASE, f"ckpt_path={tmp_path / 'nope.ckpt'}"], tmp_path)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"\0" + bytes(range(256)) * 16, "is not a gan-zoo checkpoint"),
        (b"PK\x03\x04" + bytes(64), "is not a readable checkpoint"),
    ],
)
def test_corrupt_checkpoint_to_resume_from_is_a_clear_error(tmp_path, content, message):
    from src.errors import ConfigError

    bad = tmp_path / "bad.ckpt"
    bad.write_bytes(content)
    with pytest.raises(ConfigError, match=f"ckpt_path=.*bad.ckpt: .*{message}"):
        run_train([*BASE, f"ckpt_path={bad}"], tmp_path)


def test_weights_that_do_not_fit_name_the_file_and_the_mismatch():
    from src.checkpoint import load_weights
    from src.errors import CheckpointError, ConfigError

    net = torch.nn.Linear(3, 2)
    with pytest.raises(CheckpointError, match=r"run/last.ckpt: .*size mismatch for weight"):
        load_weights(net, torch.nn.Linear(4, 2).state_dict(), "run/last.ckpt")
    with pytest.raises(ConfigError, match=r"stage I: .*Missing key"):
        load_weights(net, {}, "stage I", ConfigError)
    source = torch.nn.Linear(3, 2)
    load_weights(net, source.state_dict(), "fits")
    assert all(torch.equal(a, b) for a, b in zip(net.state_dict().values(), source.state_dict().values()))
