"""Every command in the README's bash blocks: composes (default suite) and runs with tiny settings (slow)."""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys

import pytest
from conftest import CACHE, ROOT, run_train

from src.build import build_model
from src.errors import ConfigError
from src.utils.compose import compose_config

BLOCKS = re.findall(r"```bash\n(.*?)```", (ROOT / "README.md").read_text(), re.S)
COMMANDS = []
for block in BLOCKS:
    for line in block.splitlines():
        line = line.split("  #")[0].strip()
        if "python -m src." in line or "python benchmarks/" in line:
            COMMANDS.append(line[line.index("python") :])
TINY = ["trainer.max_steps=2", "data.batch_size=16", "eval.metrics=[]", "trainer.limit_val_batches=0"]
QUIET = ["extras.print_config=false", "trainer.enable_progress_bar=false", "~callbacks.rich_progress_bar"]
NEEDS_DOWNLOAD = ("data=cifar10", "data=mnist ", "data=celeba", "experiment=dcgan", "data=cub")


def split(command: str) -> tuple[str, list[str]]:
    words = shlex.split(command)
    return words[2] if words[1] == "-m" else words[1], [w for w in words[3 if words[1] == "-m" else 2 :]]


def on_cpu(args: list[str]) -> list[str]:
    """GPU commands run on CPU here: gpu -> cpu, ddp -> ddp_cpu (2 processes)."""
    swap = {
        "trainer=gpu": "trainer=cpu",
        "trainer=ddp": "trainer=ddp_cpu",
        "trainer.devices=4": "trainer.devices=2",
    }
    return [swap.get(a, a) for a in args if a not in ("-m", "--cfg", "job")]


def first_choices(args: list[str]) -> list[str]:
    return [a.split(",")[0] if "=" in a and "," in a and "[" not in a else a for a in args]


def test_readme_has_the_commands():
    assert any(c.startswith("python -m src.train") for c in COMMANDS)
    assert any(c.startswith("python -m src.sample") for c in COMMANDS)
    assert any(c.startswith("python -m src.eval") for c in COMMANDS)


@pytest.mark.parametrize("command", [c for c in COMMANDS if c.startswith("python -m src.train")])
def test_train_command_composes_and_builds(command, tmp_path):
    _, args = split(command)
    args = [a.replace("outputs/train/runs/<run>", str(tmp_path / "stage1")) for a in args]
    cfg = compose_config(first_choices(on_cpu(args)) + ["eval.metrics=[]"], tmp_path)
    if "model.stage1_ckpt=" in command:  # a stage-I run of the user's: here, its absence is named
        with pytest.raises(ConfigError, match=r"model.stage1_ckpt.*stage1"):
            build_model(cfg)
        return
    model = build_model(cfg)
    assert model.sample(2).shape[0] == 2


@pytest.mark.parametrize(
    "command", [c for c in COMMANDS if c.startswith(("python -m src.sample", "python -m src.eval"))]
)
def test_sample_and_eval_commands_compose(command, tmp_path):
    module, args = split(command)
    args = [a.replace("<run>", str(tmp_path)) for a in args if a != "--help"]
    cfg = compose_config(args, tmp_path, config_name={"src.sample": "sample", "src.eval": "evaluate"}[module])
    if "--help" not in command:
        assert str(tmp_path) in cfg.ckpt or cfg.ckpt.startswith("outputs/")


@pytest.mark.slow
@pytest.mark.parametrize("command", COMMANDS)
def test_readme_command_runs(command, tmp_path):
    """Each README command for real, shortened; downloads that cannot happen here must fail clearly."""
    module, args = split(command)
    env = {**os.environ, "GAN_ZOO_CACHE": str(CACHE)}
    if module == "src.train":
        args = [a.replace("outputs/train/runs/<run>", str(tmp_path / "stage1")) for a in args]
        args = (
            on_cpu(args) + TINY + QUIET + [f"paths.log_dir={tmp_path}", f"paths.data_dir={tmp_path / 'data'}"]
        )
        if "experiment=stackgan" in command:  # stage II's own length comes from model.stage2_overrides
            args.append('model.stage2_overrides=["trainer.max_steps=2"]')
        if "-m" in command.split()[3:]:
            args = ["-m", *args]
        if "--cfg" in command:
            args = ["--cfg", "job", *args]
    elif module in ("src.sample", "src.eval"):
        model = ["model=stackgan", "data=shapes"] if "prompt=" in command else ["model=cgan"]
        run_train([*model, "trainer.max_steps=2", "data.batch_size=16", "eval.metrics=[]"], tmp_path / "run")
        args = [a.replace("<run>/stage2", "<run>") for a in args]
        args = [
            a.replace("outputs/train/runs/<run>", str(tmp_path / "run")).replace(
                "<run>", str(tmp_path / "run")
            )
            for a in args
        ]
        if module == "src.eval":
            args = [a for a in args if not a.startswith("eval.inception_weights")] + ["limit_val_batches=2"]
    else:
        args = ["--help"]
        module = None
    cmd = [sys.executable, "-m", module, *args] if module else [sys.executable, command.split()[1], *args]
    out = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    needs_download = any(k in command + " " for k in NEEDS_DOWNLOAD) or "inception" in command
    if needs_download:
        assert out.returncode in (0, 2), out.stderr[-2000:]
        if out.returncode == 2:
            assert "error:" in out.stderr and "Traceback" not in out.stderr
    else:
        assert out.returncode == 0, out.stderr[-3000:]
