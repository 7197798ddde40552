"""The metrics that separate fidelity from diversity: known answers on hand-made sets, and a collapsed generator
that the FID alone ranks above a blurred but varied one."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import CACHE
from test_evaluation import PixelLabel, images_with_labels
from torch import nn

from src.data.mnist5k import EmbeddedMNIST
from src.metrics.classifier import load_or_train
from src.metrics.codes import assign, code_correlations, moments
from src.metrics.conditional import IntraClassFID, WithinDiversity
from src.metrics.features import DomainFeatures
from src.metrics.image import ClassBalance, RealFake
from src.metrics.manifold import Manifold, density_coverage, precision_recall


def clusters(n: int = 10, per: int = 4, dim: int = 8, seed: int = 0) -> torch.Tensor:
    """n tight clusters of `per` points, far apart: with k = per - 1 a point's k-NN ball holds its cluster."""
    gen = torch.Generator().manual_seed(seed)
    centres = torch.randn(n, dim, generator=gen) * 100
    return (centres[:, None] + 0.1 * torch.randn(n, per, dim, generator=gen)).reshape(n * per, dim)


def test_precision_recall_density_coverage_known_answers():
    real = clusters()
    # identical sets: everything inside; each point lies in its own ball and its 3 neighbours' (density 4/3)
    assert precision_recall(real, real, k=3) == (1.0, 1.0)
    assert density_coverage(real, real, k=3) == (pytest.approx(4 / 3), 1.0)
    # disjoint sets
    assert precision_recall(real, real + 1e4, k=3) == (0.0, 0.0)
    assert density_coverage(real, real + 1e4, k=3) == (0.0, 0.0)
    # samples = half of the clusters: all real (precision 1), half the data reached (recall, coverage 1/2)
    half = real[:20]
    assert precision_recall(real, half, k=3) == (1.0, 0.5)
    assert density_coverage(real, half, k=3) == (pytest.approx(4 / 3), 0.5)
    # samples = all of the data plus as many points far away: precision 1/2, recall 1
    assert precision_recall(real, torch.cat([real, real + 1e4]), k=3) == (0.5, 1.0)
    # the metric over batches gives the same as the functions on the whole sets
    metric = Manifold(nn.Identity(), prc_k=3, dc_k=3)
    for r, f in zip(real.split(20), half.split(10)):
        metric.update(real=r, fake=f)
    out = {k: float(v) for k, v in metric.compute().items()}
    assert out == {"precision": 1.0, "recall": 0.5, "density": pytest.approx(4 / 3), "coverage": 0.5}


def test_class_balance_by_hand():
    data = torch.tensor([30.0, 10, 10, 10, 10, 10, 10, 10, 0, 0])  # the data's class counts
    metric = ClassBalance(PixelLabel(), 1.0, data)
    labels = torch.tensor([0] * 20 + [1] * 60 + [2] * 20)
    metric.update(fake=images_with_labels(labels[:50]))
    metric.update(fake=images_with_labels(labels[50:]))
    out = {k: float(v) for k, v in metric.compute().items()}
    kl = 0.2 * math.log(0.2 / 0.3) + 0.6 * math.log(0.6 / 0.1) + 0.2 * math.log(0.2 / 0.1)
    assert out["class_kl"] == pytest.approx(kl, rel=1e-6)
    assert (out["class_min_share"], out["class_max_share"], out["classes_covered"]) == (
        0.0,
        pytest.approx(0.6),
        3,
    )
    assert [round(out[f"class_share_{c}"], 6) for c in range(10)] == [0.2, 0.6, 0.2] + [0.0] * 7
    chart = metric.figures()["class_balance"]
    assert chart.dtype == np.uint8 and chart.ndim == 3 and chart.std() > 10  # drawn, not blank
    # the data's own balance scores 0
    same = ClassBalance(PixelLabel(), 1.0, torch.ones(10))
    same.update(fake=images_with_labels(torch.arange(10).repeat(3)))
    assert float(same.compute()["class_kl"]) == pytest.approx(0.0, abs=1e-9)


def test_intra_class_fid_and_within_diversity_by_hand():
    # class 0: two points 2 apart; class 1: two points 4 apart -> real within-class distance 3
    real = torch.tensor([[0.0, 0], [2, 0], [0, 0], [0, 4]])
    labels = torch.tensor([0, 0, 1, 1])
    diversity = WithinDiversity(nn.Identity())
    # samples: condition 0 an equilateral triangle of side 3 (mean distance 3), condition 1 one point thrice
    s = math.sqrt(3) / 2 * 3
    fake = torch.tensor([[0.0, 0], [3, 0], [1.5, s], [5, 5], [5, 5], [5, 5]])
    groups = torch.tensor([0, 0, 0, 1, 1, 1])
    diversity.update(real=real, fake=fake, labels=labels, groups=groups)
    assert float(diversity.compute()["within_diversity"]) == pytest.approx((3 + 0) / 2 / 3, rel=1e-6)
    # one image per condition: 0; the data itself: 1
    collapsed = WithinDiversity(nn.Identity())
    collapsed.update(real=real, fake=torch.ones(6, 2), labels=labels, groups=groups)
    assert float(collapsed.compute()["within_diversity"]) == 0.0
    itself = WithinDiversity(nn.Identity())
    itself.update(real=real, fake=real, labels=labels, groups=labels)
    assert float(itself.compute()["within_diversity"]) == pytest.approx(1.0)
    # intra-class FID: samples of class 1 moved by (3, 4) -> 25 for class 1, 0 for class 0, mean 12.5
    gen = torch.Generator().manual_seed(0)
    real = torch.randn(40, 3, generator=gen)
    labels = torch.arange(2).repeat(20)
    fake = real + (labels[:, None] == 1) * torch.tensor([3.0, 4.0, 0.0])
    fid = IntraClassFID(nn.Identity())
    fid.update(real=real, fake=fake, labels=labels, groups=labels)
    assert float(fid.compute()["intra_fid"]) == pytest.approx(12.5, rel=1e-4)


def bar(angle: float = 0.0, width: float = 3.0, size: int = 28) -> torch.Tensor:
    """A white bar 16 px long through the centre, `angle` degrees from the vertical (top to the right)."""
    ys, xs = torch.meshgrid(torch.arange(size) - 13.5, torch.arange(size) - 13.5, indexing="ij")
    t = math.radians(angle)
    along = -ys * math.cos(t) + xs * math.sin(t)  # up the bar (y points down)
    across = xs * math.cos(t) + ys * math.sin(t)
    ink = ((along.abs() <= 8) & (across.abs() <= width / 2)).float()
    return (ink * 2 - 1)[None, None]


def transform(x: torch.Tensor, angle: torch.Tensor, widen: torch.Tensor) -> torch.Tensor:
    """Each image turned by `angle` degrees (top to the right) and stretched sideways by `widen`."""
    t = angle * math.pi / 180
    cos, sin = torch.cos(t), torch.sin(t)
    # affine_grid maps output coordinates to input ones: the inverse of "stretch, then turn"
    theta = torch.zeros(len(x), 2, 3)
    theta[:, 0, 0], theta[:, 0, 1] = cos / widen, sin / widen
    theta[:, 1, 0], theta[:, 1, 1] = -sin, cos
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, padding_mode="border", align_corners=False)


def test_image_moments_read_rotation_and_width():
    angle, width = moments(torch.cat([bar(0, width=4), bar(25), bar(-25), bar(0, width=8)]))
    assert angle.tolist() == pytest.approx([0, 25, -25, 0], abs=1.5)
    # across an upright bar w whole pixels wide: the std of w evenly spaced columns, sqrt((w^2 - 1) / 12)
    assert width[0].item() == pytest.approx(math.sqrt(15 / 12), rel=1e-5)
    assert width[3].item() == pytest.approx(math.sqrt(63 / 12), rel=1e-5)
    assert moments(transform(bar(0), torch.tensor([20.0]), torch.tensor([1.0])))[0].item() == pytest.approx(
        20, abs=2
    )


@pytest.fixture(scope="module")
def digits():
    dm = EmbeddedMNIST()
    net, acc = load_or_train(dm, CACHE / "classifiers", epochs=6, batch_size=128, lr=1e-3, seed=0)
    x, y = dm.data["val"]
    xt, yt = dm.data["train"]
    return net, acc, x.float() / 127.5 - 1, y, xt.float() / 127.5 - 1, yt


def test_code_sweeps_find_the_code_that_turns_and_the_one_that_widens(digits):
    base = digits[2][:30]

    def turn_then_widen(row, codes):  # code 1 turns the digit (15 degrees per unit), code 2 widens it
        return transform(base[row], 15 * codes[:, 0], 1 + 0.2 * codes[:, 1])

    corr = code_correlations(turn_then_widen, rows=30, cont_dim=2)
    assert corr[0, 0] > 0.95 and corr[1, 1] > 0.95  # code 1 - rotation, code 2 - width
    # turning leaves the width alone; stretching sideways also tilts digits that lean (most lean right): 0.40
    assert corr[0, 1] < 0.3 and corr[1, 0] < 0.6
    assert {p: c for p, (c, _) in assign(corr).items()} == {"rotation": 0, "width": 1}
    swapped = code_correlations(lambda row, codes: turn_then_widen(row, codes.flip(1)), rows=30, cont_dim=2)
    assert {p: c for p, (c, _) in assign(swapped).items()} == {"rotation": 1, "width": 0}
    ignored = code_correlations(lambda row, codes: base[row], rows=30, cont_dim=2)
    assert ignored.abs().max() == 0


def scores(digits, fake: torch.Tensor, groups: torch.Tensor) -> dict[str, float]:
    net, acc, x, y, _, yt = digits
    feats = DomainFeatures(net)
    metrics = [
        RealFake("fid", feats, "d"),
        Manifold(feats),
        ClassBalance(net, acc, torch.bincount(yt, minlength=10)),
        WithinDiversity(feats),
    ]
    for i in range(0, len(x), 100):
        batch = dict(
            real=x[i : i + 100], fake=fake[i : i + 100], labels=y[i : i + 100], groups=groups[i : i + 100]
        )
        for m in metrics:
            m.update(**batch)
    return {k: float(v) for m in metrics for k, v in m.compute().items()}


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_a_collapsed_generator_scores_low_diversity_and_recall_where_the_fid_ranks_it_above_a_blurred_one(
    digits, seed
):
    _, _, x, y, xt, yt = digits
    gen = torch.Generator().manual_seed(seed)
    idx = torch.randperm(len(xt), generator=gen)[: len(x)]
    healthy = scores(digits, xt[idx], yt[idx])  # other real digits
    blurred = scores(digits, F.avg_pool2d(xt[idx], 3, 1, 1), yt[idx])  # varied, but every digit blurred
    # one training image per class, drawn for each held-out label (a cGAN that ignores its noise)
    one = torch.stack(
        [(yt == c).nonzero()[torch.randint((yt == c).sum(), (), generator=gen)] for c in range(10)]
    )
    collapsed = scores(digits, xt[one.flatten()[y]], y)
    # the FID alone prefers the collapsed generator to the blurred one...
    assert collapsed["fid_d"] < blurred["fid_d"]
    # ...recall, coverage and within-class diversity name the collapse
    assert collapsed["recall"] < 0.02 < 0.05 < blurred["recall"] and healthy["recall"] > 0.8
    assert collapsed["coverage"] < 0.5 * blurred["coverage"] and healthy["coverage"] > 0.9
    assert collapsed["within_diversity"] == 0.0 and blurred["within_diversity"] > 0.5
    assert healthy["within_diversity"] > 0.9 and healthy["precision"] > 0.8
    # a generator collapsed onto three images: the class balance names it too
    few = one.flatten()[torch.tensor([1, 4, 9])][torch.arange(len(x)) % 3]
    three = scores(digits, xt[few], yt[few])
    assert three["class_kl"] > 1.0 > 0.05 > healthy["class_kl"]
    assert three["class_min_share"] == 0.0 and three["recall"] < 0.02


def test_infogan_code_metric_sweeps_the_models_own_codes(compose_cfg, digits):
    """ContinuousCodes on an InfoGAN whose generator is replaced by hand: c1 picks a real digit, the second
    continuous code turns it and the first widens it. The metric must find them in that order."""
    from src.build import build_datamodule, build_model
    from src.metrics.codes import ContinuousCodes

    cfg = compose_cfg(["model=infogan", "eval.metrics=[]"])
    model = build_model(cfg, build_datamodule(cfg))
    base = digits[2][:10]

    def generate_eval(latent):
        c = latent["c_cont"]
        return transform(base[latent["c_cat"][:, 0]], 15 * c[:, 1], 1 + 0.2 * c[:, 0])

    model.generate_eval = generate_eval
    out = {k: float(v) for k, v in ContinuousCodes(model, model.continuous_codes, rows=20).compute().items()}
    assert (out["rotation_code"], out["width_code"]) == (2, 1)
    assert out["rotation_rho"] > 0.95 and out["width_rho"] > 0.95 and out["code1_rotation"] < 0.6
