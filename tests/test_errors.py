"""Every class of bad input ends in one `error:` line that names the key or file, exit status 2, no
traceback, and nothing lost. One real command line (subprocess) per class; the table of numeric
settings is also checked value by value in-process."""

from __future__ import annotations

import os
import resource
import subprocess
import sys

import pytest
import torch
from conftest import ROOT, make_cfg, run_train

from src.checkpoint import load_checkpoint
from src.errors import ConfigError
from src.validate import check_config

QUIET = ["extras.print_config=false", "trainer.enable_progress_bar=false", "~callbacks.rich_progress_bar"]
TINY = ["trainer.max_steps=2", "data.batch_size=16", "eval.metrics=[]", "~callbacks.samples"]
SMALL = [*TINY, *QUIET]


def cli(args, tmp_path, preexec_fn=None, multirun=False):
    cmd = [sys.executable, "-m", "src.train", *(["-m"] if multirun else []), *args]
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "GAN_ZOO_CACHE": str(tmp_path / "cache")}
    out = subprocess.run(
        cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300, preexec_fn=preexec_fn
    )
    return out.returncode, out.stderr, out.stdout


def one_error_line(stderr: str) -> str:
    """The single `error:` line; nothing like a traceback anywhere."""
    assert "Traceback" not in stderr, stderr[-2000:]
    lines = [line for line in stderr.splitlines() if line.startswith("error:")]
    assert len(lines) == 1, stderr[-2000:]
    return lines[0]


# --- numbers: the table, value by value (in-process), and the command line ----------------------------


@pytest.mark.parametrize(
    "override, message",
    [
        ("trainer.max_steps=abc", "trainer.max_steps='abc' must be an integer >= 1 (or -1)"),
        ("trainer.max_steps=0", "trainer.max_steps=0 must be an integer >= 1 (or -1)"),
        ("trainer.max_steps=2.5", "trainer.max_steps=2.5 must be an integer"),
        ("data.batch_size=0.5", "data.batch_size=0.5 must be an integer >= 1"),
        ("data.batch_size=null", "data.batch_size must be set: an integer >= 1"),
        ("trainer.limit_train_batches=1.5", "trainer.limit_train_batches=1.5 must be a fraction in (0, 1]"),
        ("trainer.limit_train_batches=0", "trainer.limit_train_batches=0 must be a fraction in (0, 1]"),
        ("trainer.log_every_n_steps=-2", "trainer.log_every_n_steps=-2 must be an integer >= 1"),
        ("model.optimizer_d.lr=-1e-4", "model.optimizer_d.lr=-0.0001 must be a number > 0"),
        ("model.optimizer_g.lr=fast", "model.optimizer_g.lr='fast' must be a number > 0"),
        ("model.optimizer_g.betas=[0.5]", "model.optimizer_g.betas=[0.5] must be a list of 2 numbers"),
        ("model.optimizer_g.betas=[0.5,1.5]", "(1.5 is not)"),
        ("model.n_critic=0", "model.n_critic=0 must be an integer >= 1"),
        ("model.ema_decay=1.0", "model.ema_decay=1.0 must be a number > 0 and < 1"),
        ("model.latent_dim=1e2", "model.latent_dim=100.0 must be an integer >= 1"),
        ("model.max_loss=0", "model.max_loss=0 must be a number > 0"),
        ("loss=wgan_gp", None),
        ("loss.gp_weight=-10", "loss.gp_weight=-10 must be a number >= 0"),
        ("data.shape=[1,0,28]", "data.shape=[1, 0, 28] must be a list of numbers, each an integer >= 1"),
        ("seed=-1", "seed=-1 must be an integer >= 0"),
        ("eval.kid_subset=0", "eval.kid_subset=0 must be an integer >= 1"),
        ("callbacks.last_checkpoint.every_n_steps=0.5", "callbacks.last_checkpoint.every_n_steps=0.5"),
        ("trainer.deterministic=1", "trainer.deterministic=1 must be true or false"),
        ("data=image_folder", "data.path must be set: add data.path=... to the command line"),
    ],
)
def test_numeric_settings_are_checked_at_start_up(override, message, tmp_path):
    extra = ["loss=wgan_gp"] if override.startswith("loss.gp") else []
    cfg = make_cfg([*extra, override], tmp_path)
    if message is None:  # a valid value passes
        check_config(cfg)
        return
    with pytest.raises(ConfigError) as e:
        check_config(cfg)
    assert message in str(e.value)


def test_every_shipped_config_passes_the_checks(tmp_path):
    """No false alarms: every option of every group passes (a value the option leaves to the user,
    `???`, is given here, as the user must)."""
    from conftest import CONF, choices
    from omegaconf import OmegaConf

    from src.validate import leaves

    for group in ("experiment", "model", "data", "trainer", "hparams_search"):
        for choice in choices(group):
            node = OmegaConf.to_container(OmegaConf.load(CONF / group / f"{choice}.yaml"))
            given = [f"{group}.{k}=x" for k, v in leaves(node) if v == "???"]
            check_config(make_cfg([f"{group}={choice}", *given], tmp_path))


def test_cli_bad_number_is_one_line_and_exit_2(tmp_path):
    code, err, _ = cli(["data.batch_size=abc", f"paths.log_dir={tmp_path}", *QUIET], tmp_path)
    assert code == 2
    assert one_error_line(err) == "error: data.batch_size='abc' must be an integer >= 1"
    assert not (tmp_path / "train").exists()  # refused before the run folder was made


# --- output folders and files --------------------------------------------------------------------------


def test_cli_output_folder_that_cannot_be_created(tmp_path):
    (tmp_path / "file").write_text("not a folder")
    code, err, _ = cli([f"paths.log_dir={tmp_path / 'file' / 'logs'}", *SMALL], tmp_path)
    assert code == 2
    line = one_error_line(err)
    assert (
        f"cannot create the output folder {tmp_path / 'file' / 'logs'}" in line and "Not a directory" in line
    )


def limit_file_size(nbytes):
    return lambda: resource.setrlimit(resource.RLIMIT_FSIZE, (nbytes, nbytes))


def test_cli_full_disk_while_writing_a_checkpoint_keeps_the_previous_one(tmp_path):
    """A file-size limit below a checkpoint's size stands in for a full disk: the write fails, the run
    says which file, and the checkpoint from before stays intact and loadable."""
    run = tmp_path / "run"
    code, err, _ = cli([f"hydra.run.dir={run}", *SMALL], tmp_path)
    assert code == 0, err[-2000:]
    ckpt = run / "checkpoints" / "last.ckpt"
    before = ckpt.read_bytes()
    resume = [f"hydra.run.dir={run}", *SMALL, "trainer.max_steps=4", f"ckpt_path={ckpt}"]
    code, err, _ = cli(resume, tmp_path, preexec_fn=limit_file_size(len(before) // 2))
    assert code == 2
    line = one_error_line(err)
    assert f"cannot write the checkpoint {ckpt}: File too large; the previous last.ckpt is intact" in line
    assert ckpt.read_bytes() == before
    assert load_checkpoint(ckpt)[2]["g_step"] == 2
    assert not list(ckpt.parent.glob("*.tmp")), "a half-written temporary file was left behind"


def test_cli_sample_figure_that_cannot_be_written(tmp_path):
    (tmp_path / "file").write_text("not a folder")
    args = [f"paths.log_dir={tmp_path}", *[o for o in SMALL if o != "~callbacks.samples"]]
    code, err, _ = cli([*args, f"callbacks.samples.dirpath={tmp_path / 'file' / 'samples'}"], tmp_path)
    assert code == 2
    line = one_error_line(err)
    assert f"cannot write the figure {tmp_path / 'file' / 'samples'}/samples_epoch000.png" in line


# --- checkpoints that do not fit the command ------------------------------------------------------------


@pytest.fixture(scope="module")
def dcgan_ckpt(tmp_path_factory):
    run = tmp_path_factory.mktemp("dcgan")
    run_train(["trainer.max_steps=1", "data.batch_size=16", "eval.metrics=[]", "~callbacks.samples"], run)
    return run / "checkpoints" / "last.ckpt"


def test_cli_resume_with_another_model_says_what_it_was_trained_with(dcgan_ckpt, tmp_path):
    code, err, _ = cli(
        ["model=gan", f"ckpt_path={dcgan_ckpt}", f"paths.log_dir={tmp_path}", *SMALL], tmp_path
    )
    assert code == 2
    line = one_error_line(err)
    assert f"ckpt_path={dcgan_ckpt} was trained with model=dcgan loss=rpgan data=mnist5k" in line
    assert "this command has model=gan loss=rpgan data=mnist5k" in line
    assert "to start fresh, leave out ckpt_path" in line


def test_resume_with_another_loss_or_size_is_refused_in_process(dcgan_ckpt, tmp_path):
    with pytest.raises(ConfigError, match="this command has model=dcgan loss=hinge data=mnist5k"):
        run_train(["loss=hinge", f"ckpt_path={dcgan_ckpt}", *TINY], tmp_path / "a")
    with pytest.raises(ConfigError, match=r"weights do not fit.*model.latent_dim: 100 -> 64"):
        run_train(["model.latent_dim=64", f"ckpt_path={dcgan_ckpt}", *TINY], tmp_path / "b")


# --- runs that go wrong -----------------------------------------------------------------------------------


def test_cli_exploding_losses_stop_the_run_with_the_reason(tmp_path):
    """lr 1e4: losses reach ~1e10 while staying finite; that must not end as a success."""
    args = ["model.optimizer_d.lr=1e4", "model.optimizer_g.lr=1e4", "trainer.max_steps=50"]
    code, err, _ = cli([*args, f"paths.log_dir={tmp_path}", *SMALL[1:]], tmp_path)
    assert code == 2
    line = one_error_line(err)
    assert "loss beyond model.max_loss=1e+06" in line and "diverged" in line and "training stopped" in line


def test_cli_sweep_metric_that_is_never_logged_is_refused_before_training(tmp_path):
    """An Optuna search whose metric needs evaluation, with evaluation off: refused at the first job's
    start, before it trains (was: a KeyError after the first trial had run)."""
    args = ["hparams_search=dcgan_fid", "hydra.sweeper.n_trials=2", f"paths.log_dir={tmp_path}", *SMALL]
    code, err, _ = cli(args, tmp_path, multirun=True)
    assert code == 2
    line = one_error_line(err)
    assert "optimized_metric=val/fid_domain is never logged by this config (evaluation is off" in line
    assert not list(tmp_path.rglob("*.ckpt")), "a trial trained before the refusal"


def test_checkpoint_of_a_resumed_model_still_loads_its_config(dcgan_ckpt):
    cfg, state, info = load_checkpoint(dcgan_ckpt)
    assert info["choices"] == {"model": "dcgan", "loss": "rpgan", "data": "mnist5k"}
    assert torch.is_tensor(next(iter(state.values())))
