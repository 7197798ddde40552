"""Every model x loss x data pair that makes sense trains; the others refuse with a clear message."""

from __future__ import annotations

import csv
import math

import lightning as L
import pytest
import torch
from conftest import make_cfg, run_train

from src.build import build_datamodule, build_model
from src.errors import ConfigError

MODELS = ["gan", "dcgan"]
LOSSES = ["minimax", "nonsaturating", "lsgan", "hinge", "wgan", "wgan_gp"]
DATA = ["ring8", "mnist5k"]
REFUSED = {("dcgan", "ring8")}


def initial_weights(cfg):
    """The weights train() starts from: same seed, same build order."""
    L.seed_everything(cfg.seed, verbose=False)
    model = build_model(cfg, build_datamodule(cfg))
    return {k: v.clone() for k, v in model.state_dict().items() if v.is_floating_point()}


def read_csv(path):
    with open(path) as f:
        return list(csv.DictReader(f))


@pytest.mark.parametrize("data", DATA)
@pytest.mark.parametrize("loss", LOSSES)
@pytest.mark.parametrize("model", MODELS)
def test_pair_trains_or_refuses(model, loss, data, tmp_path):
    overrides = [
        f"model={model}",
        f"loss={loss}",
        f"data={data}",
        "trainer.max_steps=3",
        "data.batch_size=16",
    ]
    overrides += ["model.n_critic=2", "~callbacks.samples", "trainer.limit_val_batches=0"]
    if (model, data) in REFUSED:
        with pytest.raises(ConfigError, match=r"needs image data.*use model=gan"):
            run_train(overrides, tmp_path)
        return
    cfg = make_cfg(overrides, tmp_path)
    before = initial_weights(cfg)
    metrics, objects = run_train(overrides, tmp_path)
    module = objects["model"]
    assert (module.g_step, module.d_step) == (3, 6)  # max_steps counts G steps; 2 D steps each

    rows = [r for r in read_csv(tmp_path / "csv" / "metrics.csv") if r.get("train/g_loss")]
    assert [int(r["step"]) for r in rows] == [1, 2, 3]
    for key in ("train/d_loss", "train/g_loss"):
        values = [float(r[key]) for r in rows]
        assert all(math.isfinite(v) for v in values), (key, values)
        assert len(set(values)) > 1, f"{key} did not change: {values}"
    after = module.state_dict()
    for net in ("generator", "discriminator"):
        moved = [k for k in before if k.startswith(net) and not torch.equal(before[k], after[k])]
        assert moved, f"no {net} parameter moved"
    if loss in ("wgan", "wgan_gp"):
        assert "train/wasserstein" in metrics
    if loss == "wgan":
        clip = max(p.abs().max().item() for p in module.discriminator.parameters())
        assert clip <= 0.01 + 1e-7
    if loss == "wgan_gp":
        assert metrics["train/d_gp"] >= 0


def test_loss_configs_carry_paper_defaults_and_overrides_win(tmp_path):
    cfg = make_cfg(["loss=wgan"], tmp_path)
    assert cfg.model.n_critic == 5 and cfg.loss.clip == 0.01
    assert cfg.model.optimizer_d.name == "rmsprop" and cfg.model.optimizer_d.lr == 5e-5
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
        (["model.optimizer_g.name=adamax"], r"unknown optimizer 'adamax'; valid choices: adam"),
        (["loss=wgan", "model.optimizer_d.betas=[0.5,0.9]"], r"rmsprop.*does not accept"),
        (["model.n_critic=0"], r"n_critic must be >= 1"),
        (
            ["trainer.max_steps=-1", "trainer.max_epochs=-1"],
            r"linear_decay needs the run's length",
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


def test_networks_follow_the_data_shape(tmp_path):
    for shape, model in (([3, 32, 32], "dcgan"), ([1, 64, 64], "dcgan"), ([3, 16, 16], "gan")):
        cfg = make_cfg([f"model={model}", f"data.shape=[{','.join(map(str, shape))}]"], tmp_path)
        module = build_model(cfg)
        x = module.sample(4)
        assert list(x.shape) == [4, *shape]
        assert module.discriminator(x).shape == (4,)
        assert x.min() >= -1 and x.max() <= 1  # tanh output for images
