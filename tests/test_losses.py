"""The adversarial loss objects: closed forms, gradient directions, penalties, properties."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from src.losses import (
    LOSSES,
    LSGAN,
    Hinge,
    Minimax,
    NonSaturating,
    Wasserstein,
    WassersteinGP,
    gradient_penalty,
)

LOG2 = math.log(2.0)
finite_logits = st.lists(st.floats(-30, 30, allow_nan=False, allow_subnormal=False), min_size=1, max_size=16)


def t(values):
    return torch.tensor(values, dtype=torch.float64)


def test_closed_forms_at_d_one_half():
    zero = torch.zeros(8, dtype=torch.float64)  # logit 0 <=> D = 0.5
    assert Minimax().d_loss(zero, zero).item() == pytest.approx(2 * LOG2)
    assert Minimax().g_loss(zero).item() == pytest.approx(-LOG2)  # log(1 - 0.5)
    assert NonSaturating().g_loss(zero).item() == pytest.approx(LOG2)  # -log 0.5
    half = torch.full((8,), 0.5, dtype=torch.float64)
    assert LSGAN().d_loss(half, half).item() == pytest.approx(0.25)
    assert LSGAN().g_loss(half).item() == pytest.approx(0.125)
    assert Hinge().d_loss(zero, zero).item() == pytest.approx(2.0)
    assert Wasserstein().d_loss(t([3.0]), t([1.0])).item() == pytest.approx(-2.0)


@settings(max_examples=60, deadline=None)
@given(real=finite_logits, fake=finite_logits)
def test_finite_outputs_for_finite_logits(real, fake):
    for cls in LOSSES.values():
        loss = cls()
        d = loss.d_loss(t(real), t(fake))
        g = loss.g_loss(t(fake))
        assert torch.isfinite(d) and torch.isfinite(g), cls.name


@settings(max_examples=60, deadline=None)
@given(fake=finite_logits)
def test_generator_gradient_pushes_fake_scores_up(fake):
    for cls in LOSSES.values():
        x = t(fake).requires_grad_(True)
        cls().g_loss(x).backward()
        if cls is LSGAN:  # least squares pulls scores to the target (1), from either side
            assert (torch.sign(x.grad) == torch.sign(x.detach() - 1.0)).all()
        else:  # gradient descent raises every fake score (weakly, where a term saturates)
            assert (x.grad <= 1e-12).all(), cls.name


@settings(max_examples=60, deadline=None)
@given(real=finite_logits, fake=finite_logits)
def test_discriminator_gradient_separates(real, fake):
    for cls in LOSSES.values():
        r, f = t(real).requires_grad_(True), t(fake).requires_grad_(True)
        cls().d_loss(r, f).backward()
        if cls is LSGAN:  # real scores pulled to 1, fake scores to 0
            assert (torch.sign(r.grad) == torch.sign(r.detach() - 1.0)).all()
            assert (torch.sign(f.grad) == torch.sign(f.detach())).all()
        else:
            assert (r.grad <= 1e-12).all() and (f.grad >= -1e-12).all(), cls.name


def test_minimax_saturates_where_nonsaturating_does_not():
    confident = t([-12.0] * 4).requires_grad_(True)  # D(G(z)) ~ 6e-6: the samples are rejected
    Minimax().g_loss(confident).backward()
    mm = confident.grad.abs().sum().item()
    confident.grad = None
    NonSaturating().g_loss(confident).backward()
    ns = confident.grad.abs().sum().item()
    assert mm < 1e-4 and ns > 0.99
    assert ns / mm > 1e4


@settings(max_examples=30, deadline=None)
@given(w=st.lists(st.floats(-5, 5, allow_nan=False), min_size=3, max_size=3), b=st.floats(-3, 3))
def test_gradient_penalty_exact_for_linear_critic(w, b):
    critic = nn.Linear(3, 1).double()
    with torch.no_grad():
        critic.weight.copy_(t([w]))
        critic.bias.fill_(b)
    real, fake = torch.randn(16, 3, dtype=torch.float64), torch.randn(16, 3, dtype=torch.float64)
    gp = gradient_penalty(lambda x: critic(x).squeeze(1), real, fake)
    expected = (torch.linalg.vector_norm(t(w)) - 1) ** 2
    assert gp.item() == pytest.approx(expected.item(), rel=1e-9, abs=1e-12)


def test_gradient_penalty_interpolates_per_sample_and_trains_critic():
    torch.manual_seed(0)
    critic = nn.Sequential(nn.Linear(2, 8), nn.Tanh(), nn.Linear(8, 1))
    real, fake = torch.randn(32, 2), torch.randn(32, 2)
    seen = []

    def spy(x):
        seen.append(x.detach().clone())
        return critic(x).squeeze(1)

    gp = gradient_penalty(spy, real, fake)
    # x_hat - fake = eps * (real - fake) with one eps per row (not per coordinate).
    ratio = (seen[0] - fake) / (real - fake)
    assert torch.allclose(ratio[:, 0], ratio[:, 1], atol=1e-5)
    assert ratio.min() >= 0 and ratio.max() <= 1 and ratio[:, 0].std() > 0.1
    gp.backward()
    # The penalty trains the critic's weights (not the output bias, which has no input gradient).
    for weight in (critic[0].weight, critic[2].weight):
        assert weight.grad is not None and weight.grad.abs().sum() > 0


def test_gradient_penalty_grad_scale_gives_same_penalty():
    torch.manual_seed(0)
    critic = nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 1))
    real, fake = torch.randn(8, 4), torch.randn(8, 4)
    torch.manual_seed(1)
    a = gradient_penalty(lambda x: critic(x).squeeze(1), real, fake)
    torch.manual_seed(1)
    b = gradient_penalty(lambda x: critic(x).squeeze(1), real, fake, grad_scale=65536.0)
    assert b.item() == pytest.approx(a.item(), rel=1e-5)


def test_gradient_penalty_groups_packed_samples():
    critic = nn.Linear(6, 1).double()  # a packed input of 2 samples x 3 features
    real, fake = torch.randn(8, 3, dtype=torch.float64), torch.randn(8, 3, dtype=torch.float64)
    gp = gradient_penalty(lambda x: critic(x.reshape(4, 6)).squeeze(1), real, fake, group=2)
    assert gp.item() == pytest.approx(((critic.weight.norm() - 1) ** 2).item())


def test_weight_clipping_after_d_step():
    d = nn.Linear(4, 4)
    with torch.no_grad():
        d.weight.mul_(100)
    Wasserstein(clip=0.01).after_d_step(d)
    assert d.weight.abs().max().item() <= 0.01 and d.bias.abs().max().item() <= 0.01


def test_wgan_gp_refuses_batchnorm_critic():
    d = nn.Sequential(nn.Linear(2, 4), nn.BatchNorm1d(4), nn.Linear(4, 1))
    with pytest.raises(ValueError, match=r"(?s)wgan_gp.*BatchNorm.*norm=layer"):
        WassersteinGP().check(d)
    Wasserstein().check(d)  # the original WGAN used BatchNorm in its critic: allowed
    with pytest.raises(ValueError, match="clip must be positive"):
        Wasserstein(clip=-1.0)


def test_accuracy_and_probabilities():
    real, fake = t([2.0, 3.0, -1.0, 4.0]), t([-2.0, -3.0, 1.0, -4.0])
    acc_r, acc_f = NonSaturating().accuracy(real, fake)
    assert acc_r.item() == pytest.approx(0.75) and acc_f.item() == pytest.approx(0.75)
    assert NonSaturating().prob(t([0.0])).item() == pytest.approx(0.5)
    # A critic has no absolute zero: the midpoint between the mean scores decides.
    acc_r, acc_f = Wasserstein().accuracy(real + 100, fake + 100)
    assert acc_r.item() == pytest.approx(0.75) and acc_f.item() == pytest.approx(0.75)
