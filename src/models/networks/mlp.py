"""Fully connected generator and discriminator: the original GAN and PacGAN's 2D networks."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor, nn

from src.models.networks.layers import (
    MinibatchStd,
    activation,
    check_norm,
    init_weights,
    norm_layer,
    output_activation,
    pack_input,
    weight_layer,
)


class MLPGenerator(nn.Module):
    def __init__(
        self,
        latent_dim: int,
        shape: Sequence[int],
        hidden: Sequence[int] = (256, 512, 1024),
        norm: str = "batch",
        act: str = "relu",
        out_act: str = "auto",
        init_std: float | None = 0.02,
    ):
        super().__init__()
        check_norm(norm, "MLPGenerator")
        if norm == "instance":
            raise ValueError("MLPGenerator: norm=instance needs images; use batch, layer, spectral or none")
        self.latent_dim, self.shape = latent_dim, tuple(shape)
        layers, width = [], latent_dim
        for h in hidden:
            layers += [weight_layer(nn.Linear(width, h, bias=norm in ("none", "spectral")), norm)]
            layers += [norm_layer(norm, h, 1), activation(act)]
            width = h
        layers += [nn.Linear(width, math.prod(self.shape)), output_activation(out_act, self.shape)]
        self.net = nn.Sequential(*layers)
        if init_std:
            init_weights(self, init_std)

    def forward(self, z: Tensor) -> Tensor:
        return self.net(z).view(z.shape[0], *self.shape)


class MLPDiscriminator(nn.Module):
    """`trunk` maps a (packed) sample to features; `head` maps features to one score per sample."""

    def __init__(
        self,
        shape: Sequence[int],
        hidden: Sequence[int] = (512, 256),
        norm: str = "none",
        act: str = "leaky_relu",
        dropout: float = 0.0,
        pack: int = 1,
        in_extra: int = 0,
        mbstd: int = 0,
        init_std: float | None = 0.02,
    ):
        super().__init__()
        check_norm(norm, "MLPDiscriminator")
        if norm == "instance":
            raise ValueError(
                "MLPDiscriminator: norm=instance needs images; use batch, layer, spectral or none"
            )
        if pack < 1:
            raise ValueError(f"pack must be >= 1, got {pack}")
        self.shape, self.pack = tuple(shape), pack
        layers, width = [], pack * (math.prod(self.shape) + in_extra)
        for i, h in enumerate(hidden):
            layers.append(weight_layer(nn.Linear(width, h), norm))
            if i > 0:  # no normalisation on the input layer, as in DCGAN
                layers.append(norm_layer(norm, h, 1))
            layers.append(activation(act))
            if dropout:
                layers.append(nn.Dropout(dropout))
            width = h
        if mbstd:  # minibatch standard deviation over groups of `mbstd` samples
            layers.append(MinibatchStd(mbstd))
            width += 1
        self.trunk = nn.Sequential(nn.Flatten(), *layers)
        self.feature_dim = width
        self.head = weight_layer(nn.Linear(width, 1), norm)
        if init_std:
            init_weights(self, init_std)

    def features(self, x: Tensor) -> Tensor:
        return self.trunk(pack_input(x, self.pack))

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.features(x)).squeeze(1)


class MaxoutDiscriminator(MLPDiscriminator):
    """PacGAN's 2D discriminator: maxout layers (several linear pieces, elementwise max)."""

    def __init__(
        self,
        shape: Sequence[int],
        hidden: Sequence[int] = (200, 200, 200),
        pieces: int = 5,
        pack: int = 1,
        in_extra: int = 0,
        norm: str = "none",
        dropout: float = 0.0,
        mbstd: int = 0,
        init_std: float | None = 0.02,
    ):
        super().__init__(shape, hidden=(), norm=norm, pack=pack, in_extra=in_extra, init_std=None)
        layers, width = [], pack * (math.prod(self.shape) + in_extra)
        for h in hidden:
            layers.append(Maxout(width, h, pieces))
            if dropout:
                layers.append(nn.Dropout(dropout))
            width = h
        if mbstd:
            layers.append(MinibatchStd(mbstd))
            width += 1
        self.trunk = nn.Sequential(nn.Flatten(), *layers)
        self.feature_dim = width
        self.head = weight_layer(nn.Linear(width, 1), norm)
        if init_std:
            init_weights(self, init_std)


class Maxout(nn.Module):
    def __init__(self, d_in: int, d_out: int, pieces: int):
        super().__init__()
        self.d_out, self.pieces = d_out, pieces
        self.linear = nn.Linear(d_in, d_out * pieces)

    def forward(self, x: Tensor) -> Tensor:
        return torch.amax(self.linear(x).view(x.shape[0], self.d_out, self.pieces), dim=2)
