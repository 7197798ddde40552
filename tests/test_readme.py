"""Every command in the README's bash blocks: composes (default suite) and runs with tiny settings (slow)."""

from __future__ import annotations

import csv
import math
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from conftest import CACHE, ROOT, run_train
from omegaconf import OmegaConf

from src.build import build_model
from src.errors import ConfigError
from src.utils.compose import compose_config


def readme_commands(text: str) -> list[str]:
    """The `python -m src.*` and `python benchmarks/*` commands of the bash blocks; a line that chains
    several commands with && (the quick start) gives each of its own."""
    commands = []
    for block in re.findall(r"```bash\n(.*?)```", text, re.S):
        for line in block.splitlines():
            for part in line.split("  #")[0].split("&&"):
                part = part.strip()
                if part.startswith(("python -m src.", "python benchmarks/")):
                    commands.append(part)
    return list(dict.fromkeys(commands))  # a command shown twice runs once


COMMANDS = readme_commands((ROOT / "README.md").read_text())
TINY = ["trainer.max_steps=2", "data.batch_size=16", "eval.metrics=[]", "trainer.limit_val_batches=0"]
# A search returns its optimized_metric, which only exists with evaluation on: a few held-out batches.
TINY_SEARCH = ["trainer.max_steps=2", "data.batch_size=16", "trainer.limit_val_batches=2"]
QUIET = ["extras.print_config=false", "trainer.enable_progress_bar=false", "~callbacks.rich_progress_bar"]


def split(command: str) -> tuple[str, list[str]]:
    """(module or script, its arguments) of `python -m module args` / `python script args`."""
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


def sweep_size(args: list[str]) -> int:
    """Jobs of a plain Hydra grid: the product of the comma-separated choices."""
    return math.prod(len(a.split("=", 1)[1].split(",")) for a in args if "=" in a and "[" not in a)


def test_readme_commands_are_the_commands_themselves():
    """Each command is `python -m src.<entry point>` or `python benchmarks/<script>`, never the shell line
    around it (the quick start chains venv, pip and the first run with &&)."""
    text = "```bash\npython3 -m venv .venv && . .venv/bin/activate && python -m src.train  # first run\n```\n"
    assert readme_commands(text) == ["python -m src.train"]
    for command in COMMANDS:
        module, _ = split(command)
        assert module in ("src.train", "src.sample", "src.eval", "src.report") or (ROOT / module).is_file(), (
            command
        )
    assert "python -m src.train" in COMMANDS  # the quick start's own first run


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
    shape = cfg.data.stage1_shape if cfg.model.get("stage") in ("both", 1) else cfg.data.shape
    assert tuple(model.sample(2).shape) == (2, *shape)


@pytest.mark.parametrize(
    "command", [c for c in COMMANDS if c.startswith(("python -m src.sample", "python -m src.eval"))]
)
def test_sample_and_eval_commands_compose(command, tmp_path):
    module, args = split(command)
    args = [a.replace("<run>", str(tmp_path)) for a in args if a != "--help"]
    cfg = compose_config(args, tmp_path, config_name={"src.sample": "sample", "src.eval": "evaluate"}[module])
    ckpt = next((a.split("=", 1)[1] for a in args if a.startswith("ckpt=")), None)
    if "--help" in command:
        assert ckpt is None and OmegaConf.is_missing(cfg, "ckpt")
    elif "reference=" in command:  # no checkpoint: the real-vs-real reference of a data config
        assert ckpt is None and cfg.reference
    else:
        assert ckpt and cfg.ckpt == ckpt


# What a command that needs files this machine does not have must say (exit status 2, no traceback).
NOT_DOWNLOADED = r"data=\w+: \w+ not found in \S+ .* data\.download=false\."
NO_STAGE1 = r"model\.stage1_ckpt: checkpoint \S*stage1 does not exist"
NO_INCEPTION = (
    r"eval\.feature_extractor=inception needs the Inception-v3 weights file \S+ \([^)]*\): not found\."
)


def last_logged(run: Path, name: str) -> float:
    with open(run / "csv" / "metrics.csv") as f:
        return float([row[name] for row in csv.DictReader(f) if row.get(name)][-1])


@pytest.mark.slow
@pytest.mark.parametrize("command", COMMANDS)
def test_readme_command_runs(command, tmp_path):
    """Each README command for real, shortened. Data sets that need a download run with downloads off (the
    same on every machine), Inception weights are looked for in empty folders: those commands must stop with
    exit status 2 and a message naming what is missing."""
    module, args = split(command)
    readme_args = list(args)
    env = {**os.environ, "GAN_ZOO_CACHE": str(CACHE), "COLUMNS": "500"}  # error lines unwrapped
    multirun, search, missing = "-m" in args, any(a.startswith("hparams_search=") for a in args), None
    if module == "src.train":
        args = [a.replace("outputs/train/runs/<run>", str(tmp_path / "stage1")) for a in args]
        args = [a.replace("sqlite:///outputs/", f"sqlite:///{tmp_path}/") for a in args]
        if "model.stage1_ckpt=" in command:  # the user's stage-I run: here, its absence is named
            missing = NO_STAGE1
        elif compose_config(first_choices(on_cpu(args)), tmp_path / "composed").data.get("download"):
            args.append("data.download=false")
            missing = NOT_DOWNLOADED
        tiny = [*TINY_SEARCH, "hydra.sweeper.n_trials=2"] if search else TINY
        args = (
            on_cpu(args) + tiny + QUIET + [f"paths.log_dir={tmp_path}", f"paths.data_dir={tmp_path / 'data'}"]
        )
        if "experiment=stackgan" in command:  # stage II's own length comes from model.stage2_overrides
            args.append('stage2_overrides=["trainer.max_steps=2"]')
        if multirun:
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
            if "reference=" in command:
                args.append(f"output={tmp_path / 'run' / 'eval.json'}")
            if "inception" in command:
                args += [f"eval.inception_dir={tmp_path / 'weights'}", "eval.inception_download=false"]
                env["TORCH_HOME"] = str(tmp_path / "torch")  # nor in torch hub's cache
                missing = NO_INCEPTION
    elif module == "src.report":
        run_train(["trainer.max_steps=2", "data.batch_size=16", "eval.metrics=[]"], tmp_path / "run")
        args = [a.replace("outputs/train/runs/<run>", str(tmp_path / "run")) for a in args]
    else:  # a benchmark: its options are the check (a timed run takes minutes)
        args = ["--help"]
        module = None
    cmd = [sys.executable, "-m", module, *args] if module else [sys.executable, command.split()[1], *args]
    out = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)

    if missing:
        assert out.returncode == 2, out.stderr[-3000:]
        assert "error:" in out.stderr and "Traceback" not in out.stderr, out.stderr[-3000:]
        assert re.search(missing, " ".join(out.stderr.split())), out.stderr[-3000:]
        return
    assert out.returncode == 0, out.stderr[-3000:]
    if "--help" in args:
        usage = f"python -m {module} ckpt=PATH" if module else f"usage: {Path(command.split()[1]).name}"
        assert usage in out.stdout, out.stdout[-2000:]
    elif "--cfg" in args:
        assert yaml.safe_load(out.stdout)["model"]["_target_"], out.stdout[-2000:]
    elif multirun:
        sweep = max(Path(tmp_path).glob("train/multiruns/*"))
        jobs = sorted(p for p in sweep.iterdir() if p.is_dir() and p.name.isdigit())
        if search:  # two trials, each returning the metric it logged; the best is one of them
            assert [j.name for j in jobs] == ["0", "1"]
            metric = compose_config(
                first_choices(on_cpu(readme_args)), tmp_path / "composed"
            ).optimized_metric
            best = yaml.safe_load((sweep / "optimization_results.yaml").read_text())["best_value"]
            assert math.isfinite(best) and best in [last_logged(j, metric) for j in jobs], best
        else:
            assert len(jobs) == sweep_size(readme_args), jobs
    elif module == "src.train":
        assert list(Path(tmp_path).glob("train/runs/*/checkpoints/last.ckpt")), out.stdout[-2000:]
    elif module == "src.eval":
        assert (tmp_path / "run" / "eval.json").is_file()
    elif module == "src.sample":
        assert ".png" in out.stdout, out.stdout[-2000:]
    elif module == "src.report":
        assert (tmp_path / "run" / "report.html").is_file() and (tmp_path / "run" / "report.png").is_file()


def section(text: str, title: str) -> str:
    return text.split(f"## {title}\n", 1)[1].split("\n## ", 1)[0]


def files_of(section_text: str) -> dict[str, str]:
    """The section's code blocks that start with a `# <path>` comment, by path."""
    blocks = re.findall(r"```(?:python|yaml)\n# (\S+)\n(.*?)```", section_text, re.S)
    return {path: body for path, body in blocks}


def test_readme_adds_a_loss_and_a_model_as_shown(tmp_path):
    """The README's "Adding a loss" and "Adding a model" sections, whole: their files written to a fresh folder
    (nothing in the repository is touched), found through Hydra's search path, then the commands they show
    train, and the new model trains with the new loss."""
    text = (ROOT / "README.md").read_text()
    shown = {}
    for title in ("Adding a loss", "Adding a model"):
        part = section(text, title)
        shown.update(files_of(part))
        commands = re.findall(r"```text\n(python -m src\.train [^\n]*)\n```", part)
        assert len(commands) == 1, (title, commands)
        shown[title] = commands[0]
    assert {
        "mypackage/losses.py",
        "conf/loss/softplus2.yaml",
        "mypackage/models.py",
        "conf/model/truncated.yaml",
    } <= set(shown)
    for path, body in shown.items():
        if "/" in path:
            (tmp_path / path).parent.mkdir(parents=True, exist_ok=True)
            (tmp_path / path).write_text(body)
    (tmp_path / "mypackage" / "__init__.py").write_text("")
    env = {**os.environ, "PYTHONPATH": str(tmp_path), "GAN_ZOO_CACHE": str(CACHE)}
    extra = [
        *TINY,
        *QUIET,
        f"hydra.searchpath=[file://{tmp_path / 'conf'}]",
        f"paths.log_dir={tmp_path / 'runs'}",
        "trainer.log_every_n_steps=1",
    ]
    loss_run, model_run = shlex.split(shown["Adding a loss"]), shlex.split(shown["Adding a model"])
    both = [*model_run[:3], "model=truncated", "loss=softplus2"]
    for i, command in enumerate([loss_run, model_run, both]):
        args = [a for a in command[3:] if not a.startswith("trainer.max_steps=")]
        out = tmp_path / f"run{i}"
        done = subprocess.run(
            [sys.executable, "-m", "src.train", *args, *extra, f"hydra.run.dir={out}"],
            cwd=ROOT, env=env, capture_output=True, text=True, timeout=600,
        )  # fmt: skip
        assert done.returncode == 0, done.stderr[-3000:]
        state = torch.load(out / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)[
            "gan_zoo"
        ]
        config = state["config"]
        if "loss=softplus2" in args:
            assert config["loss"]["_target_"] == "mypackage.losses.Softplus2"
        if "model=truncated" in args:
            assert config["model"]["_target_"] == "mypackage.models.TruncatedGAN"
        assert state["g_step"] == 2 and math.isfinite(last_logged(out, "train/g_loss"))
