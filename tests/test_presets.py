"""Every experiment preset composes, builds its model, gets its own settings, and names its paper."""

from __future__ import annotations

import re

import pytest
import torch
import yaml
from conftest import CONF, choices, make_cfg
from omegaconf import OmegaConf

from src.build import build_model

PRESETS = choices("experiment")


def preset_yaml(preset: str) -> dict:
    return yaml.safe_load((CONF / "experiment" / f"{preset}.yaml").read_text())


def leaves(node, prefix: str = ""):
    """(dotted key, value) for every non-dict value of a nested dict."""
    for key, value in node.items():
        if isinstance(value, dict):
            yield from leaves(value, f"{prefix}{key}.")
        else:
            yield f"{prefix}{key}", value


@pytest.mark.parametrize("preset", PRESETS)
def test_preset_composes_and_builds(preset, tmp_path):
    cfg = make_cfg([f"experiment={preset}", "eval.metrics=[]"], tmp_path)
    text = (CONF / "experiment" / f"{preset}.yaml").read_text()
    assert text.startswith("# @package _global_") and f"python -m src.train experiment={preset}" in text
    if cfg.data._target_.endswith(("CelebA", "CUB", "Oxford102")):  # needs a download: build the model only
        model = build_model(cfg)
    else:
        from src.build import build_datamodule

        model = build_model(cfg, build_datamodule(cfg))
    # StackGAN with stage=both trains (and samples) stage I first, at data.stage1_shape.
    shape = cfg.data.stage1_shape if cfg.model.get("stage") in ("both", 1) else cfg.data.shape
    x = model.sample(2)
    assert tuple(x.shape) == (2, *shape) and torch.isfinite(x).all()


@pytest.mark.parametrize("preset", PRESETS)
def test_the_run_gets_what_the_preset_sets(preset, tmp_path):
    """Presets win over the model and loss defaults (a loss config sets model.* too): every value the
    preset file writes, and every group it picks, is what the composed config holds."""
    own = preset_yaml(preset)
    cfg = make_cfg([f"experiment={preset}"], tmp_path, fast=False)
    for key, value in leaves({k: v for k, v in own.items() if k != "defaults"}):
        got = OmegaConf.select(cfg, key)
        got = OmegaConf.to_container(got) if OmegaConf.is_config(got) else got
        assert got == value, f"{preset}: {key} = {got!r}, the preset says {value!r}"
    for entry in own["defaults"]:
        if not isinstance(entry, dict):
            continue
        ((group, choice),) = entry.items()
        group = group.removeprefix("override /")
        target = yaml.safe_load((CONF / group / f"{choice}.yaml").read_text())
        target = target.get(group, target)["_target_"]  # loss configs are @package _global_
        if (group, "_target_") not in [tuple(k.split(".", 1)) for k, _ in leaves(own)]:
            assert cfg[group]._target_ == target, f"{preset}: {group} is not {choice}"


# What each paper says (read from the paper, not from conf/): first author, then settings.
PAPERS = {
    "acgan": ("Odena", {"data.batch_size": 100, "model.latent_dim": 100, "model.optimizer_g.lr": 2e-4,
                        "model.optimizer_d.lr": 2e-4, "model.optimizer_d.betas": [0.5, 0.999]}),
    "cgan_mnist": ("Mirza", {"data.batch_size": 100, "model.latent_dim": 100, "model.z_dist": "uniform",
                             "model.optimizer_d._target_": "torch.optim.SGD", "model.optimizer_d.lr": 0.1,
                             "model.optimizer_d.momentum": 0.5, "model.discriminator.dropout": 0.5}),
    "dcgan": ("Radford", {"data.batch_size": 128, "model.latent_dim": 100, "model.z_dist": "uniform",
                          "model.generator.init_std": 0.02, "model.discriminator.init_std": 0.02,
                          "model.optimizer_g.lr": 2e-4, "model.optimizer_g.betas": [0.5, 0.999],
                          "model.lr_schedule": None}),
    "infogan_mnist": ("Chen", {"data.batch_size": 128, "model.latent_dim": 62, "model.cat_dims": [10],
                               "model.cont_dim": 2, "model.terms.info.weight_cat": 1.0, "model.terms.info.weight_cont": 1.0,
                               "model.terms.info.invariance": 0.0, "model.optimizer_d.lr": 2e-4,
                               "model.optimizer_g.lr": 1e-3}),
    "pacgan_2d": ("Lin", {"data.batch_size": 100, "data.std": 0.05, "model.pack": 2, "model.latent_dim": 2,
                          "model.generator.hidden": [400] * 4, "model.discriminator.hidden": [200] * 3,
                          "model.discriminator.pieces": 5, "model.optimizer_d.lr": 1e-4,
                          "model.optimizer_d.betas": [0.8, 0.999]}),
    "stackgan_cub": ("Zhang", {"data.batch_size": 64, "data.shape": [3, 256, 256],
                               "data.stage1_shape": [3, 64, 64], "model.latent_dim": 100, "model.c_dim": 128,
                               "model.terms.ca.weight": 2.0, "model.optimizer_g.lr": 2e-4,
                               "model.optimizer_d.betas": [0.5, 0.999]}),
    "wgan": ("Arjovsky", {"data.batch_size": 64, "loss.clip": 0.01, "model.n_critic": 5,
                          "model.optimizer_d._target_": "torch.optim.RMSprop", "model.optimizer_d.lr": 5e-5,
                          "model.optimizer_g.lr": 5e-5}),
    "wgan_gp": ("Gulrajani", {"data.batch_size": 64, "loss.gp_weight": 10.0, "model.n_critic": 5,
                              "model.optimizer_d.lr": 1e-4, "model.optimizer_d.betas": [0.0, 0.9],
                              "model.discriminator.norm": "layer"}),
}  # fmt: skip


@pytest.mark.parametrize("preset", [p for p in PRESETS if "paper" in preset_yaml(p)["tags"]])
def test_paper_presets_cite_the_paper_and_use_its_settings(preset, tmp_path):
    assert preset in PAPERS, f"{preset} is tagged paper: add the paper's settings to PAPERS"
    author, settings = PAPERS[preset]
    header = (CONF / "experiment" / f"{preset}.yaml").read_text().split("\ndefaults:")[0]
    assert re.search(rf"\({author}\b[^()]*\b(19|20)\d\d\b", header), f"{preset} does not cite {author}"
    cfg = make_cfg([f"experiment={preset}"], tmp_path, fast=False)
    for key, value in settings.items():
        got = OmegaConf.select(cfg, key)
        got = OmegaConf.to_container(got) if OmegaConf.is_config(got) else got
        assert got == value, f"{preset}: {key} = {got!r}, the paper says {value!r}"


def test_every_preset_is_a_paper_or_a_fast_run():
    assert PRESETS and set(PAPERS) <= set(PRESETS)
    for preset in PRESETS:
        tags = preset_yaml(preset)["tags"]
        assert ("paper" in tags) != ("fast" in tags), f"{preset}: tags {tags}"
