"""Every model x loss x data pair that makes sense trains; the others refuse with a clear message."""

from __future__ import annotations

import csv
import math

import pytest
import torch
from conftest import CONF, choices, make_cfg, on_built_model, parameters, run_train
from hydra.utils import get_class
from omegaconf import OmegaConf
from torch import nn

from src.build import build_model
from src.errors import ConfigError
from src.losses import Wasserstein
from src.models.module import GANModule
from src.models.networks import DCGANGenerator


def model_class(name: str) -> type:
    """The class conf/model/<name>.yaml builds: its own `_target_`, else its base config's."""
    node = OmegaConf.load(CONF / "model" / f"{name}.yaml")
    if "_target_" in node:
        return get_class(node._target_)
    return model_class(next(d for d in node.defaults if d != "_self_"))


# The plain (unconditioned) models of conf/model/: label-, code- and text-conditioned ones have their own
# test files (test_conditional, test_stackgan). Every loss of conf/loss/; one vector and one image data set.
MODELS = [m for m in choices("model") if model_class(m) is GANModule]
LOSSES = choices("loss")
DATA = ["ring8", "mnist5k"]


def read_csv(path):
    with open(path) as f:
        return list(csv.DictReader(f))


def test_model_and_loss_lists_come_from_conf():
    assert {"gan", "dcgan"} <= set(MODELS) and not {"cgan", "infogan", "stackgan"} & set(MODELS)
    assert {"nonsaturating", "wgan_gp"} <= set(LOSSES)


@pytest.mark.parametrize("data", DATA)
@pytest.mark.parametrize("loss", LOSSES)
@pytest.mark.parametrize("model", MODELS)
def test_pair_trains_or_refuses(model, loss, data, tmp_path, monkeypatch):
    overrides = [
        f"model={model}",
        f"loss={loss}",
        f"data={data}",
        "trainer.max_steps=3",
        "data.batch_size=16",
    ]
    overrides += ["model.n_critic=2", "~callbacks.samples", "trainer.limit_val_batches=0"]
    cfg = make_cfg(overrides, tmp_path)
    # Convolutional networks need [C, H, W] images; fully connected ones take any shape.
    if issubclass(get_class(cfg.model.generator._target_), DCGANGenerator) and len(cfg.data.shape) != 3:
        with pytest.raises(ConfigError, match=r"needs image data.*use model=gan"):
            run_train(overrides, tmp_path)
        return
    start = {}
    on_built_model(monkeypatch, lambda m: start.update(parameters(m)))
    metrics, objects = run_train(overrides, tmp_path)
    module = objects["model"]
    assert (module.g_step, module.d_step) == (3, 6)  # max_steps counts G steps; 2 D steps each

    rows = [r for r in read_csv(tmp_path / "csv" / "metrics.csv") if r.get("train/g_loss")]
    assert [int(r["step"]) for r in rows] == [1, 2, 3]
    for key in ("train/d_loss", "train/g_loss"):
        values = [float(r[key]) for r in rows]
        assert all(math.isfinite(v) for v in values), (key, values)
        assert len(set(values)) > 1, f"{key} did not change: {values}"
    after = parameters(module)
    for net in ("generator", "discriminator"):
        moved = [k for k in start if k.startswith(f"{net}.") and not torch.equal(start[k], after[k])]
        assert moved, f"no {net} parameter moved"
    # D's loss is its adversarial term plus, for WGAN-GP (conf: loss.gp_weight), the gradient penalty: a real,
    # positive term.
    gp = "gp_weight" in cfg.loss
    for r in rows:
        expected = float(r["train/d_adv"]) + (float(r["train/d_gp"]) if gp else 0.0)
        assert float(r["train/d_loss"]) == pytest.approx(expected, rel=1e-5, abs=1e-6), r
        assert not gp or float(r["train/d_gp"]) > 1e-6, r
    if isinstance(module.loss, Wasserstein):  # the estimate E[D(x)] - E[D(G(z))] is minus the critic's loss
        for r in rows:
            estimate, d_adv = float(r["train/wasserstein"]), float(r["train/d_adv"])
            assert estimate == pytest.approx(-d_adv, rel=1e-5, abs=1e-6), r
    c = getattr(module.loss, "clip", None)
    if c is not None:  # WGAN: every critic weight is clipped to [-c, c] after each D step
        d_start = [v for k, v in start.items() if k.startswith("discriminator.")]
        assert max(v.abs().max().item() for v in d_start) > c  # the initial critic has weights to clip
        d_max = max(p.abs().max().item() for p in module.discriminator.parameters())
        assert d_max == pytest.approx(c, rel=1e-6)  # weights reach +-c, none goes past it


def test_loss_configs_carry_paper_defaults_and_overrides_win(tmp_path):
    cfg = make_cfg(["loss=wgan"], tmp_path)
    assert cfg.model.n_critic == 5 and cfg.loss.clip == 0.01
    assert cfg.model.optimizer_d._target_ == "torch.optim.RMSprop" and cfg.model.optimizer_d.lr == 5e-5
    cfg = make_cfg(["loss=wgan_gp"], tmp_path)
    assert cfg.model.n_critic == 5 and cfg.loss.gp_weight == 10
    assert cfg.model.discriminator.norm == "layer"
    assert list(cfg.model.optimizer_g.betas) == [0.0, 0.9] and cfg.model.optimizer_g.lr == 1e-4
    cfg = make_cfg(["loss=wgan_gp", "model.n_critic=2", "model.optimizer_d.lr=3e-4"], tmp_path)
    assert cfg.model.n_critic == 2 and cfg.model.optimizer_d.lr == 3e-4
    model = build_model(cfg)
    opt_d, _ = model.configure_optimizers()[0]
    assert isinstance(opt_d, torch.optim.Adam) and opt_d.param_groups[0]["lr"] == 3e-4
    model = build_model(make_cfg(["loss=wgan"], tmp_path))
    assert all(isinstance(o, torch.optim.RMSprop) for o in model.configure_optimizers()[0])


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (
            ["loss=wgan_gp", "model.discriminator.norm=batch"],
            r"wgan_gp cannot train a discriminator with BatchNorm",
        ),
        (["model.discriminator.norm=weird"], r"unknown norm 'weird'; valid choices: batch, layer"),
        (["data.shape=[1,30,30]"], r"image side of s0 \* 2\^k"),
        (
            ["model.optimizer_g._target_=torch.optim.Adamax2"],
            r"Error loading 'torch.optim.Adamax2'.* importable",
        ),
        (
            ["loss=wgan", "model.optimizer_d.betas=[0.5,0.9]"],
            r"model.optimizer_d: RMSprop does not accept \['betas', 'lr'\]",
        ),
        (["model.n_critic=0"], r"model.n_critic=0 must be an integer >= 1"),
        (
            ["trainer.max_steps=-1", "trainer.max_epochs=-1"],
            r"linear decay\) needs the run's length",
        ),
        (
            ["model.pack=2", "model.discriminator.pack=1"],
            r"pack=2 but the discriminator was built for pack=1",
        ),
    ],
)
def test_bad_settings_refuse_at_start_up(overrides, message, tmp_path):
    with pytest.raises(ConfigError, match=message):
        run_train(["trainer.max_steps=1", *overrides], tmp_path)


@pytest.mark.parametrize("model", MODELS)
def test_networks_follow_the_data_shape(model, tmp_path):
    torch.manual_seed(0)
    for shape in ([3, 32, 32], [1, 64, 64], [3, 16, 16]):
        cfg = make_cfg([f"model={model}", f"data.shape=[{','.join(map(str, shape))}]"], tmp_path)
        module = build_model(cfg)
        x = module.sample(4)
        assert list(x.shape) == [4, *shape]
        assert module.discriminator(x).shape == (4,)
        # Images come out of a tanh: with the last layer's weights blown up, samples saturate at +-1
        # (without the tanh they would run far past it).
        last = [m for m in module.generator.modules() if isinstance(m, nn.Linear | nn.ConvTranspose2d)][-1]
        with torch.no_grad():
            last.weight.mul_(1e4)
        x = module.sample(4)
        assert x.abs().max() <= 1 and (x.abs() > 0.999).float().mean() > 0.5, (shape, x.abs().max())
