"""The adversarial loss objects: closed forms, gradient directions, penalties, properties."""

from __future__ import annotations

import math

import pytest
import torch
from conftest import CONF, choices
from hydra.utils import instantiate
from hypothesis import given, settings
from hypothesis import strategies as st
from omegaconf import OmegaConf
from torch import nn

from src.losses import (
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


LOSS_NAMES = choices("loss")  # every loss config is tested, not a hand list
LOSS_CONFS = {name: OmegaConf.load(CONF / "loss" / f"{name}.yaml").loss for name in LOSS_NAMES}


def conf_loss(name: str):
    """The loss object conf/loss/<name>.yaml builds."""
    return instantiate(LOSS_CONFS[name])


def paired(loss, real: list, fake: list) -> tuple[list, list]:
    """Scores as the loss takes them: a relativistic loss pairs each real with a fake (equal counts)."""
    if not loss.pairs_real_in_g:
        return real, fake
    n = min(len(real), len(fake))
    return real[:n], fake[:n]


def softplus(v: float) -> float:
    return math.log1p(math.exp(v))


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


def test_closed_forms_tell_real_from_fake():
    """Away from the symmetric point: a loss that swapped its real and fake arguments fails here."""
    real, fake = t([1.0, 3.0]), t([-2.0, 0.5])
    # -log sigmoid(r) = softplus(-r); -log(1 - sigmoid(f)) = softplus(f)
    d_minimax = (softplus(-1.0) + softplus(-3.0)) / 2 + (softplus(-2.0) + softplus(0.5)) / 2
    assert Minimax().d_loss(real, fake).item() == pytest.approx(d_minimax)
    assert Minimax().g_loss(fake).item() == pytest.approx(-(softplus(-2.0) + softplus(0.5)) / 2)
    assert NonSaturating().g_loss(fake).item() == pytest.approx((softplus(2.0) + softplus(-0.5)) / 2)
    # 0.5 E[(r - 1)^2] + 0.5 E[f^2]; G: 0.5 E[(f - 1)^2]
    assert LSGAN().d_loss(real, fake).item() == pytest.approx(0.5 * (0 + 4) / 2 + 0.5 * (4 + 0.25) / 2)
    assert LSGAN().g_loss(fake).item() == pytest.approx(0.5 * (9 + 0.25) / 2)
    # E[relu(1 - r)] + E[relu(1 + f)]; G: -E[f]
    assert Hinge().d_loss(real, fake).item() == pytest.approx(0 + (0 + 1.5) / 2)
    assert Hinge().g_loss(fake).item() == pytest.approx(0.75)
    assert Wasserstein().g_loss(fake).item() == pytest.approx(0.75)
    assert WassersteinGP().d_loss(real, fake).item() == pytest.approx(-0.75 - 2.0)


@settings(max_examples=60, deadline=None)
@given(real=finite_logits, fake=finite_logits)
def test_finite_outputs_for_finite_logits(real, fake):
    for name in LOSS_NAMES:
        loss = conf_loss(name)
        real, fake = paired(loss, real, fake)
        d = loss.d_loss(t(real), t(fake))
        g = loss.g_loss(t(fake), t(real))
        assert torch.isfinite(d) and torch.isfinite(g), name


@settings(max_examples=60, deadline=None)
@given(fake=finite_logits)
def test_generator_gradient_pushes_fake_scores_up(fake):
    for name in LOSS_NAMES:
        loss = conf_loss(name)
        x = t(fake).requires_grad_(True)
        loss.g_loss(x, torch.zeros_like(x)).backward()  # a relativistic loss compares with the reals' scores
        if isinstance(loss, LSGAN):  # least squares pulls scores to G's target, from either side
            assert (torch.sign(x.grad) == torch.sign(x.detach() - loss.g_target)).all(), name
        else:  # gradient descent raises every fake score (weakly, where a term saturates)
            assert (x.grad <= 1e-12).all(), name


@settings(max_examples=60, deadline=None)
@given(real=finite_logits, fake=finite_logits)
def test_discriminator_gradient_separates(real, fake):
    for name in LOSS_NAMES:
        loss = conf_loss(name)
        real, fake = paired(loss, real, fake)
        r, f = t(real).requires_grad_(True), t(fake).requires_grad_(True)
        loss.d_loss(r, f).backward()
        if isinstance(loss, LSGAN):  # real scores pulled to the real target, fake scores to the fake one
            assert (torch.sign(r.grad) == torch.sign(r.detach() - loss.real_target)).all(), name
            assert (torch.sign(f.grad) == torch.sign(f.detach() - loss.fake_target)).all(), name
        else:
            assert (r.grad <= 1e-12).all() and (f.grad >= -1e-12).all(), name


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
    # The value, by hand at the interpolates it used: d critic / dx of tanh(x W1' + b1) W2' is
    # ((1 - tanh^2) * w2) W1, per row; then the mean of (||.|| - 1)^2.
    with torch.no_grad():
        w1, b1, w2 = critic[0].weight, critic[0].bias, critic[2].weight[0]
        h = torch.tanh(seen[0] @ w1.T + b1)
        grad = ((1 - h**2) * w2) @ w1
        expected = ((grad.norm(dim=1) - 1) ** 2).mean()
    assert gp.item() == pytest.approx(expected.item(), rel=1e-5)
    gp.backward()
    # The penalty trains the critic's weights (not the output bias, which has no input gradient).
    for weight in (critic[0].weight, critic[2].weight):
        assert weight.grad is not None and weight.grad.abs().sum() > 0


def test_gradient_penalty_grad_scale_unscales_and_avoids_fp16_underflow():
    """`grad_scale` (the fp16 loss scale): the input gradient is taken on the scaled output and divided back."""
    torch.manual_seed(0)
    w = t([0.3, -1.2, 0.5, 2.0])
    real, fake = torch.randn(8, 4, dtype=torch.float64), torch.randn(8, 4, dtype=torch.float64)
    scaled = gradient_penalty(lambda x: x @ w, real, fake, grad_scale=65536.0)
    assert scaled.item() == pytest.approx(((w.norm() - 1) ** 2).item(), rel=1e-9)  # by hand: unscaled
    # fp16 inputs, a critic with gradients of 1e-8 (below fp16's smallest subnormal, 6e-8): unscaled they
    # flush to zero; scaled by 2^16 they survive, and the penalty (centre 0: ||grad||^2) is 4 * 1e-16.
    tiny = torch.full((4,), 1e-8)
    real16, fake16 = real.half(), fake.half()
    critic = lambda x: x.float() @ tiny  # noqa: E731
    assert gradient_penalty(critic, real16, fake16, center=0.0).item() == 0.0  # what the scale is for
    gp16 = gradient_penalty(critic, real16, fake16, center=0.0, grad_scale=65536.0)
    assert gp16.item() == pytest.approx(4e-16, rel=1e-2, abs=0)


def test_gradient_penalty_groups_packed_samples():
    torch.manual_seed(0)
    critic = nn.Linear(6, 1).double()  # a packed input of 2 samples x 3 features
    real, fake = torch.randn(8, 3, dtype=torch.float64), torch.randn(8, 3, dtype=torch.float64)
    seen = []

    def packed(x):
        seen.append(x.detach().clone())
        return critic(x.reshape(4, 6)).squeeze(1)

    gp = gradient_penalty(packed, real, fake, group=2)
    # One gradient per packed input (6 values), not per sample (3): (||w|| - 1)^2 over the whole weight.
    assert gp.item() == pytest.approx(((critic.weight.norm() - 1) ** 2).item())
    # One interpolation factor per packed input: both samples of a pair share it, pairs differ.
    eps = ((seen[0] - fake) / (real - fake))[:, 0]
    assert torch.allclose(eps[0::2], eps[1::2]) and eps[0::2].std() > 0.05


def test_weight_clipping_after_d_step():
    d = nn.Linear(3, 2)
    with torch.no_grad():
        d.weight.copy_(torch.tensor([[-1.0, 0.005, 0.02], [0.0, -0.003, 7.0]]))
        d.bias.copy_(torch.tensor([0.5, -0.0099]))
    Wasserstein(clip=0.01).after_d_step(d)
    # Out-of-range values go to the bound; values inside stay as they were.
    assert torch.equal(d.weight, torch.tensor([[-0.01, 0.005, 0.01], [0.0, -0.003, 0.01]]))
    assert torch.equal(d.bias, torch.tensor([0.01, -0.0099]))


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
