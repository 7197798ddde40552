"""Checkpoints of earlier versions still load: their stored configs are read in today's keys."""

from __future__ import annotations

import copy

import pytest
import torch
from conftest import make_cfg
from omegaconf import OmegaConf

from src.build import build_model
from src.checkpoint import upgrade_config
from src.errors import ConfigError

# The model sections as versions before model.terms stored them (flat options, optimizer `name`).
OLD = {
    "acgan": {"class_weight": 0.5, "d_on_fake": False, "mode_seeking": 0.0},
    "infogan": {"mi": {"weight_cat": 3.0, "invariance": 0.0, "cont_loss": "mse"}, "mode_seeking": 2.0},
    "dcgan": {"mode_seeking": 0.0},
}


def old_style(model: str, tmp_path) -> dict:
    """Today's composed config for `model`, rewritten the way an earlier version stored it."""
    config = OmegaConf.to_container(
        make_cfg([f"model={model}", "loss=wgan", "eval.metrics=[]"], tmp_path), resolve=True
    )
    section = config["model"]
    section.pop("terms")
    section.update(copy.deepcopy(OLD[model]))
    section["optimizer_g"] = {"name": "rmsprop", "lr": 5e-5, "betas": None}
    section["optimizer_d"] = {"name": "adam", "lr": 1e-4, "betas": [0.0, 0.9]}
    section["lr_schedule"] = {"name": "constant"}
    return config


@pytest.mark.parametrize("model", sorted(OLD))
def test_old_configs_build_the_same_model(model, tmp_path):
    upgraded = upgrade_config(old_style(model, tmp_path))
    built = build_model(OmegaConf.create(upgraded))
    opt_d, opt_g = built.configure_optimizers()[0]
    assert isinstance(opt_g, torch.optim.RMSprop) and isinstance(opt_d, torch.optim.Adam)
    assert opt_d.param_groups[0]["betas"] == (0.0, 0.9) and built.lr_schedule is None
    if model == "acgan":
        term = built.aux_terms["ac"]
        assert (term.weight, term.d_on_fake, term.num_classes) == (
            0.5,
            False,
            10,
        ) and "ms" not in built.aux_terms
        assert "cls" in built.discriminator.heads
    if model == "infogan":
        term = built.aux_terms["info"]
        assert (term.weight_cat, term.invariance, term.cat_dims, term.cont_dim) == (3.0, 0.0, [10], 2)
        assert built.aux_terms["ms"].weight == 2.0
    if model == "dcgan":
        assert len(built.aux_terms) == 0
    today = build_model(make_cfg([f"model={model}", "loss=wgan", "eval.metrics=[]"], tmp_path))
    assert {k: v.shape for k, v in built.state_dict().items()} == {
        k: v.shape for k, v in today.state_dict().items()
    }


def test_todays_configs_pass_unchanged(tmp_path):
    config = OmegaConf.to_container(make_cfg(["model=infogan"], tmp_path), resolve=True)
    assert upgrade_config(copy.deepcopy(config)) == config


def test_an_unknown_old_optimizer_is_named(tmp_path):
    config = old_style("dcgan", tmp_path)
    config["model"]["optimizer_g"] = {"name": "torch.optim.Adamax3", "lr": 1e-3}
    with pytest.raises(ConfigError, match="torch.optim.Adamax3"):
        build_model(OmegaConf.create(upgrade_config(config)))
