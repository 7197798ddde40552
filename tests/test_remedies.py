"""The remedies of issue 21 on known answers: the relativistic pairing loss, R1 / R2, DiffAugment and ADA; and
a real run of every model with all of them on."""

from __future__ import annotations

import math

import pytest
import torch
from conftest import read_rows, run_train
from torch import nn

from src.losses import RelativisticPairing
from src.losses.auxiliary import DOut, Phase
from src.losses.penalties import ZeroCentredPenalty
from src.models.augment import DiffAugment


def test_relativistic_pairing_loss_on_hand_made_scores():
    real, fake = torch.tensor([2.0, 0.0]), torch.tensor([0.0, 1.0])
    loss = RelativisticPairing()
    # D: softplus(-(D(x) - D(G(z)))) per pair: gaps 2 and -1
    expected_d = (math.log1p(math.exp(-2.0)) + math.log1p(math.exp(1.0))) / 2
    assert loss.d_loss(real, fake).item() == pytest.approx(expected_d, rel=1e-6)
    # G: softplus(-(D(G(z)) - D(x))): gaps -2 and 1
    expected_g = (math.log1p(math.exp(2.0)) + math.log1p(math.exp(-1.0))) / 2
    assert loss.g_loss(fake, real).item() == pytest.approx(expected_g, rel=1e-6)
    # pairing, not means: the same means paired the other way give another loss
    assert loss.d_loss(real, fake.flip(0)).item() != pytest.approx(expected_d, rel=1e-3)
    # G's gradient flows through its own scores only
    fake_p, real_p = fake.clone().requires_grad_(True), real.clone().requires_grad_(True)
    loss.g_loss(fake_p, real_p).backward()
    assert real_p.grad is None and fake_p.grad is not None
    with pytest.raises(ValueError, match="real batch"):
        loss.g_loss(fake)


class Linear(nn.Module):
    """D(x) = <w, x> + b on flattened inputs of `pack` samples."""

    def __init__(self, w: torch.Tensor, pack: int = 1):
        super().__init__()
        self.w, self.pack = w, pack

    def forward(self, x):
        return x.reshape(x.shape[0] // self.pack, -1) @ self.w + 3.0


def phase_for(d: nn.Module, step: int = 0) -> Phase:
    real, fake = torch.randn(8, 1, 2, 2), torch.randn(8, 1, 2, 2)
    dummy = DOut(torch.zeros(8))
    return Phase(
        "d", real, None, {"z": torch.randn(8, 3)}, fake, dummy, dummy, RelativisticPairing(),
        lambda x, y: DOut(d(x)), None, None, step=step,
    )  # fmt: skip


@pytest.mark.parametrize("samples", ["real", "fake"])
def test_r1_and_r2_of_a_linear_discriminator_are_gamma_half_w_squared(samples):
    w = torch.tensor([1.0, -2.0, 0.5, 3.0])
    term = ZeroCentredPenalty(gamma=0.4, samples=samples)
    value = term.d_terms(phase_for(Linear(w)))["penalty"]
    assert value.item() == pytest.approx(0.4 / 2 * (w**2).sum().item(), rel=1e-6)  # 2.85


def test_r1_on_packed_inputs_takes_one_gradient_per_critic_input():
    w = torch.tensor([1.0, -2.0, 0.5, 3.0, 1.0, 1.0, 1.0, 1.0])  # pack 2: D sees 2 samples of 4 values
    value = ZeroCentredPenalty(gamma=2.0).d_terms(phase_for(Linear(w, pack=2)))["penalty"]
    assert value.item() == pytest.approx(2.0 / 2 * (w**2).sum().item(), rel=1e-6)


def test_lazy_penalty_runs_every_interval_steps_scaled_by_the_interval():
    w = torch.tensor([1.0, 0.0, 0.0, 0.0])
    term = ZeroCentredPenalty(gamma=1.0, interval=4)
    assert term.d_terms(phase_for(Linear(w), step=8))["penalty"].item() == pytest.approx(4 * 0.5)
    assert term.d_terms(phase_for(Linear(w), step=9)) == {}


def test_r1_of_a_quadratic_discriminator_depends_on_where_it_is_taken():
    # D(x) = sum(x^2): grad 2x, so R1 = gamma/2 * E||2x||^2 on the reals, R2 on the fakes
    d = lambda x: (x**2).flatten(1).sum(1)  # noqa: E731
    phase = phase_for(d)
    for samples, images in (("real", phase.real), ("fake", phase.fake)):
        value = ZeroCentredPenalty(gamma=1.0, samples=samples).d_terms(phase)["penalty"]
        expected = 0.5 * (4 * images**2).flatten(1).sum(1).mean()
        assert value.item() == pytest.approx(expected.item(), rel=1e-5)


def one_pixel(n: int = 16, size: int = 16) -> torch.Tensor:
    x = torch.zeros(n, 1, size, size)
    x[:, :, 8, 8] = 1.0
    return x


def test_translation_moves_the_image_by_at_most_the_ratio_and_pads_with_zeros():
    torch.manual_seed(0)
    aug = DiffAugment(policy=["translation"], translation=0.125)  # up to 2 pixels on 16
    out = aug(one_pixel())
    shifts = set()
    for img in out[:, 0]:
        (r, c), *rest = img.nonzero().tolist()
        assert not rest and img[r, c] == 1.0  # moved, not blurred
        shifts.add((r - 8, c - 8))
        assert abs(r - 8) <= 2 and abs(c - 8) <= 2
    assert len(shifts) > 4  # a shift per sample, not one for the batch
    edge = torch.zeros(1, 1, 16, 16)
    edge[..., 0] = 1.0  # the left column
    moved = [aug(edge)[0, 0] for _ in range(20)]
    assert any(m.sum() < 16 for m in moved)  # shifted out of the frame: zeros come in, nothing wraps around


def test_cutout_zeroes_one_square_per_sample_and_passes_gradients_elsewhere():
    torch.manual_seed(0)
    x = torch.ones(32, 1, 16, 16, requires_grad=True)
    out = DiffAugment(policy=["cutout"], cutout=0.5)(x)
    for img in out[:, 0].detach():
        rows, cols = (img == 0).nonzero().unbind(1)
        assert 0 < len(rows) <= 64
        assert len(rows) == (rows.max() - rows.min() + 1) * (cols.max() - cols.min() + 1)  # a rectangle
        assert rows.max() - rows.min() < 8 and cols.max() - cols.min() < 8
    out.sum().backward()
    assert torch.equal(x.grad, (out != 0).float())  # differentiable: 1 where kept, 0 where cut


def test_colour_changes_three_channel_images_only():
    torch.manual_seed(0)
    aug = DiffAugment(policy=["color"])
    grey = torch.rand(4, 1, 8, 8)
    assert torch.equal(aug(grey), grey) and aug.active_ops(1) == ()
    rgb = torch.rand(4, 3, 8, 8)
    assert not torch.allclose(aug(rgb), rgb)


def test_probability_zero_leaves_images_alone_and_one_always_augments():
    x = torch.rand(64, 1, 16, 16) + 0.1
    assert torch.equal(DiffAugment(policy=["cutout"], p=0.0)(x), x)
    assert (DiffAugment(policy=["cutout"], p=1.0)(x) == 0).flatten(1).any(1).all()
    torch.manual_seed(0)
    half = (DiffAugment(policy=["cutout"], p=0.5)(torch.rand(400, 1, 16, 16) + 0.1) == 0).flatten(1).any(1)
    assert 0.4 < half.float().mean() < 0.6  # seeded: 400 draws of p = 0.5


def test_ada_moves_p_towards_the_target_by_the_images_seen():
    aug = DiffAugment(policy=["translation"], p=0.0, target=0.6, speed_kimg=1.28, interval=2)
    sure, unsure = torch.full((64,), 2.0), torch.tensor([1.0, -1.0] * 32)  # r_t = 1 and 0
    aug.observe(sure, 0.0, 64)
    assert aug.p.item() == 0.0  # the window is 2 D steps
    aug.observe(sure, 0.0, 64)
    assert aug.p.item() == pytest.approx(0.1) and aug.rt.item() == 1.0  # 128 images / 1,280
    aug.observe(sure, 0.0, 64), aug.observe(sure, 0.0, 64)
    assert aug.p.item() == pytest.approx(0.2)
    aug.observe(unsure, 0.0, 64), aug.observe(unsure, 0.0, 64)
    assert aug.p.item() == pytest.approx(0.1) and aug.rt.item() == 0.0
    # the threshold is the loss's: scores of 2 against a threshold of 3 are unsure
    aug.observe(sure, 3.0, 64), aug.observe(sure, 3.0, 64)
    assert aug.p.item() == pytest.approx(0.0)
    restored = DiffAugment(policy=["translation"], p=0.0, target=0.6)
    aug.observe(sure, 0.0, 64), aug.observe(sure, 0.0, 64)
    restored.load_state_dict(aug.state_dict())
    assert restored.p.item() == pytest.approx(0.1)  # a resumed run continues with the adapted p


def test_bad_augment_settings_are_refused_with_the_choices():
    with pytest.raises(ValueError, match="'blur'.*translation, cutout, color"):
        DiffAugment(policy=["blur"])
    with pytest.raises(ValueError, match="target"):
        DiffAugment(target=1.5)


FAST_RUN = ["trainer.max_steps=2", "data.batch_size=8", "~callbacks.samples", "trainer.limit_val_batches=0"]


def test_every_image_d_sees_is_augmented_in_both_phases(tmp_path):
    # A cutout twice the image erases everything D sees (the square is centred anywhere in the image): if every pass of D goes through the augmentation,
    # reals and fakes score alike and G receives no gradient at all.
    overrides = ["model/augment=diffaugment", "model.augment.policy=[cutout]", "model.augment.cutout=2.0"]
    run_train(overrides + FAST_RUN, tmp_path)
    rows = read_rows(tmp_path / "csv" / "metrics.csv", "train/g_grad_norm")
    assert rows and all(float(r["train/g_grad_norm"]) == 0.0 for r in rows)
    assert all(float(r["train/d_real"]) == float(r["train/d_fake"]) for r in rows)
    assert all(float(r["train/aug_p"]) == 1.0 for r in rows)


@pytest.mark.parametrize(
    "model",
    [
        ["model=gan"],
        ["model=dcgan"],
        ["model=cgan"],
        ["model=acgan"],
        ["model=infogan"],
        ["model=stackgan", "data=shapes", "model.augment.policy=[translation,cutout]"],
    ],
    ids=lambda m: m[0].split("=")[1],
)
def test_every_model_trains_with_ada_r1_and_r2(model, tmp_path):
    # with a loss that does not bring them (rpgan, the default, brings R1 and R2)
    remedies = [
        "loss=nonsaturating",
        "model/augment=ada",
        "model.terms.r1.gamma=1.0",
        "model.terms.r2.gamma=1.0",
    ]
    remedies += ["model.terms.r1.interval=2", "model.augment.interval=1", "model.augment.speed_kimg=0.008"]
    metrics, objects = run_train(
        model[:1] + remedies + model[1:] + FAST_RUN + ["trainer.max_steps=4"], tmp_path
    )
    rows = read_rows(tmp_path / "csv" / "metrics.csv", "train/d_loss")
    r1 = [float(r["train/d_r1_penalty"]) for r in rows if r.get("train/d_r1_penalty")]
    r2 = [float(r["train/d_r2_penalty"]) for r in rows if r.get("train/d_r2_penalty")]
    assert r1 and r2 and all(v > 0 and math.isfinite(v) for v in r1 + r2)
    assert len(r1) < len(r2)  # R1 lazy: on every second D step only
    # ADA adjusts p after every D step (interval 1) by 8 images / 8: a whole unit, so p is 1 after a step whose
    # reals' mean sign beat the target 0.6, else 0 (r_t moves in eighths: never exactly 0.6)
    for r in rows:
        assert float(r["train/aug_p"]) == (1.0 if float(r["train/ada_rt"]) > 0.6 else 0.0), r
    assert math.isfinite(metrics["train/g_loss"])
