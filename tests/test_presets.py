"""Every experiment preset composes, builds its model, and names its paper."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from conftest import CONF, make_cfg

from src.build import build_model

PRESETS = sorted(p.stem for p in (CONF / "experiment").glob("*.yaml"))


@pytest.mark.parametrize("preset", PRESETS)
def test_preset_composes_and_builds(preset, tmp_path):
    cfg = make_cfg([f"experiment={preset}", "eval.metrics=[]"], tmp_path)
    text = (CONF / "experiment" / f"{preset}.yaml").read_text()
    assert text.startswith("# @package _global_") and "python -m src.train experiment=" in text
    if cfg.data._target_.endswith(("CelebA", "CUB", "Oxford102")):  # needs a download: build the model only
        model = build_model(cfg)
    else:
        from src.build import build_datamodule

        model = build_model(cfg, build_datamodule(cfg))
    assert model.sample(2).shape[0] == 2 and torch.isfinite(model.sample(2)).all()


def test_paper_settings_are_what_the_presets_say(tmp_path):
    info = make_cfg(["experiment=infogan_mnist"], tmp_path).model
    assert (info.latent_dim, list(info.cat_dims), info.cont_dim, info.mi.weight_cat) == (62, [10], 2, 1.0)
    assert (info.mi.weight_cont, info.mi.invariance) == (1.0, 0.0)  # the paper's lambda, no extra term
    assert (info.optimizer_d.lr, info.optimizer_g.lr) == (2e-4, 1e-3)
    gp = make_cfg(["experiment=wgan_gp"], tmp_path).model
    assert (gp.n_critic, gp.optimizer_d.lr, list(gp.optimizer_d.betas), gp.discriminator.norm) == (
        5,
        1e-4,
        [0, 0.9],
        "layer",
    )
    pac = make_cfg(["experiment=pacgan_2d"], tmp_path)
    assert (pac.model.pack, pac.model.latent_dim, pac.data.std, pac.model.optimizer_d.betas[0]) == (
        2,
        2,
        0.05,
        0.8,
    )


def test_paper_names_in_every_preset():
    for preset in PRESETS:
        text = (CONF / "experiment" / f"{preset}.yaml").read_text()
        assert any(
            w in text for w in ("et al", "Radford", "Mirza", "Odena", "Arjovsky", "Gulrajani", "fast")
        ), preset
    assert Path(CONF / "experiment").is_dir()
