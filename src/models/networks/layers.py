"""Small building blocks shared by the networks."""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.nn.utils.parametrizations import spectral_norm

NORMS = ("batch", "layer", "instance", "spectral", "none")


def check_norm(norm: str, where: str) -> str:
    if norm not in NORMS:
        raise ValueError(f"{where}: unknown norm {norm!r}; valid choices: {', '.join(NORMS)}")
    return norm


def norm_layer(norm: str, channels: int, dims: int) -> nn.Module:
    """A normalisation layer for `dims`-D features (1 = vectors, 2 = images)."""
    if norm == "batch":
        return nn.BatchNorm1d(channels) if dims == 1 else nn.BatchNorm2d(channels)
    if norm == "layer":
        # Over (C, H, W) per sample for images: the "layer norm" WGAN-GP uses in its critic.
        return nn.LayerNorm(channels) if dims == 1 else nn.GroupNorm(1, channels)
    if norm == "instance":
        if dims == 1:
            raise ValueError(
                "norm=instance needs image features; use batch, layer, spectral or none for MLPs"
            )
        return nn.InstanceNorm2d(channels, affine=True)
    return nn.Identity()  # "none" and "spectral" (spectral wraps the weight layer instead)


def weight_layer(layer: nn.Module, norm: str) -> nn.Module:
    return spectral_norm(layer) if norm == "spectral" else layer


def pack_input(x: Tensor, pack: int) -> Tensor:
    """PacGAN packing: m consecutive samples become one input with m times the channels (features)."""
    if pack == 1:
        return x
    if x.shape[0] % pack:
        raise ValueError(f"batch of {x.shape[0]} is not divisible by model.pack={pack}")
    return x.reshape(x.shape[0] // pack, pack * x.shape[1], *x.shape[2:])


class MinibatchStd(nn.Module):
    """Appends the mean standard deviation of the features over groups of `group` samples (ProGAN).

    A discriminator that sees batch statistics can tell a collapsed (low-variety) batch from a real
    one. Works on flat features (B, F) -> (B, F + 1).
    """

    def __init__(self, group: int = 4):
        super().__init__()
        self.group = group

    def forward(self, h: Tensor) -> Tensor:
        b = h.shape[0]
        g = min(self.group, b)
        if b % g:
            g = 1 if b % 2 else 2
        std = h.reshape(g, b // g, -1).float().var(0, unbiased=False).add(1e-8).sqrt().mean(1)  # (b // g,)
        return torch.cat([h, std.to(h.dtype).repeat(g)[:, None]], 1)


def activation(name: str, leak: float = 0.2) -> nn.Module:
    """`leak`: the negative slope of leaky_relu."""
    acts = {
        "relu": nn.ReLU(),
        "leaky_relu": nn.LeakyReLU(leak),
        "elu": nn.ELU(),
        "silu": nn.SiLU(),
        "tanh": nn.Tanh(),
    }
    if name not in acts:
        raise ValueError(f"unknown activation {name!r}; valid choices: {', '.join(acts)}")
    return acts[name]


def output_activation(name: str, shape: tuple[int, ...]) -> nn.Module:
    """`auto`: tanh for images (data in [-1, 1]), identity for vectors such as 2D points."""
    if name == "auto":
        name = "tanh" if len(shape) == 3 else "identity"
    if name == "identity":
        return nn.Identity()
    if name == "sigmoid":
        return nn.Sigmoid()
    if name == "tanh":
        return nn.Tanh()
    raise ValueError(f"unknown output activation {name!r}; valid choices: auto, tanh, sigmoid, identity")


def init_weights(module: nn.Module, std: float = 0.02) -> None:
    """N(0, std) weights, as in DCGAN and PacGAN; norm layers get weight N(1, std), bias 0."""
    for m in module.modules():
        if isinstance(m, nn.Conv2d | nn.ConvTranspose2d | nn.Linear | nn.Embedding):
            w = m.parametrizations.weight.original if hasattr(m, "parametrizations") else m.weight
            nn.init.normal_(w, 0.0, std)
            if getattr(m, "bias", None) is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(
            m, nn.modules.batchnorm._BatchNorm | nn.GroupNorm | nn.LayerNorm | nn.InstanceNorm2d
        ) and (m.weight is not None):
            nn.init.normal_(m.weight, 1.0, std)
            nn.init.zeros_(m.bias)
