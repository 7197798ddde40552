"""DCGAN (Radford et al. 2016) networks for any square image side s0 * 2^k with s0 in 3..7."""

from __future__ import annotations

from collections.abc import Sequence

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


def dcgan_layout(shape: Sequence[int], who: str) -> tuple[int, int, int]:
    """(channels, side of the first feature map, number of stride-2 stages) for an image shape."""
    shape = tuple(shape)
    if len(shape) != 3:
        raise ValueError(
            f"{who} needs image data of shape [C, H, W]; the data gives shape {list(shape)}. "
            "For vectors such as 2D points use model=gan (MLP networks; model=cgan_mlp for a class-conditional GAN)."
        )
    c, h, w = shape
    if h != w:
        raise ValueError(
            f"{who} needs square images; got {h}x{w}. Set data.shape=[{c},{min(h, w)},{min(h, w)}]."
        )
    k, s = 0, h
    while s > 7 and s % 2 == 0:
        s, k = s // 2, k + 1
    if k == 0 or s > 7 or s < 3:
        raise ValueError(
            f"{who} needs an image side of s0 * 2^k with s0 in 3..7 and k >= 1 (e.g. 28, 32, 64, 128); got {h}."
        )
    return c, s, k


class DCGANGenerator(nn.Module):
    def __init__(
        self,
        latent_dim: int,
        shape: Sequence[int],
        base_channels: int = 64,
        max_channels: int = 512,
        norm: str = "batch",
        act: str = "relu",
        out_act: str = "auto",
        fc_dim: int | None = None,
        init_std: float | None = 0.02,
    ):
        """`fc_dim`: a fully connected hidden layer before the projection (InfoGAN's FC 1024)."""
        super().__init__()
        check_norm(norm, "DCGANGenerator")
        self.latent_dim, self.shape = latent_dim, tuple(shape)
        c_out, s0, k = dcgan_layout(shape, "model=dcgan generator")
        chans = [min(base_channels * 2 ** (k - 1 - i), max_channels) for i in range(k)]
        bias = norm in ("none", "spectral")
        fc = []
        if fc_dim:
            fc = [weight_layer(nn.Linear(latent_dim, fc_dim, bias=bias), norm), norm_layer(norm, fc_dim, 1)]
            fc.append(activation(act))
        self.project = nn.Sequential(
            *fc,
            weight_layer(nn.Linear(fc_dim or latent_dim, chans[0] * s0 * s0, bias=bias), norm),
            nn.Unflatten(1, (chans[0], s0, s0)),
            norm_layer(norm, chans[0], 2),
            activation(act),
        )
        blocks = []
        for c_in, c_next in zip(chans[:-1], chans[1:]):
            blocks += [weight_layer(nn.ConvTranspose2d(c_in, c_next, 4, 2, 1, bias=bias), norm)]
            blocks += [norm_layer(norm, c_next, 2), activation(act)]
        blocks += [nn.ConvTranspose2d(chans[-1], c_out, 4, 2, 1), output_activation(out_act, self.shape)]
        self.blocks = nn.Sequential(*blocks)
        if init_std:
            init_weights(self, init_std)

    def forward(self, z: Tensor) -> Tensor:
        return self.blocks(self.project(z))


class DCGANDiscriminator(nn.Module):
    """`trunk` maps a (packed) image to a feature vector; `head` maps it to one score per sample."""

    def __init__(
        self,
        shape: Sequence[int],
        base_channels: int = 64,
        max_channels: int = 512,
        norm: str = "batch",
        act: str = "leaky_relu",
        leak: float = 0.2,
        pack: int = 1,
        in_extra: int = 0,
        fc_dim: int | None = None,
        fc_norm: str | None = None,
        mbstd: int = 0,
        init_std: float | None = 0.02,
    ):
        """`fc_dim`: a fully connected hidden layer after the convolutions (InfoGAN's FC 1024), normalised
        with `fc_norm` (null: `norm`). BatchNorm there standardises each feature over a batch of only real
        or only fake images right before the score, which can leave D unable to tell them apart.
        `leak`: the negative slope of leaky_relu (DCGAN 0.2; the InfoGAN paper 0.1, its code 0.01).
        `mbstd`: minibatch standard deviation over groups of that many samples (0: off)."""
        super().__init__()
        check_norm(norm, "DCGANDiscriminator")
        fc_norm = norm if fc_norm is None else fc_norm
        check_norm(fc_norm, "DCGANDiscriminator (fc_norm)")
        if pack < 1:
            raise ValueError(f"pack must be >= 1, got {pack}")
        self.shape, self.pack, self.leak = tuple(shape), pack, leak
        c_in, s0, k = dcgan_layout(shape, "model=dcgan discriminator")
        chans = [min(base_channels * 2**i, max_channels) for i in range(k)]
        layers = [
            weight_layer(nn.Conv2d(pack * (c_in + in_extra), chans[0], 4, 2, 1), norm),
            activation(act, leak),
        ]
        for c, c_next in zip(chans[:-1], chans[1:]):
            layers += [weight_layer(nn.Conv2d(c, c_next, 4, 2, 1, bias=norm in ("none", "spectral")), norm)]
            layers += [norm_layer(norm, c_next, 2), activation(act, leak)]
        layers.append(nn.Flatten())
        self.feature_dim = chans[-1] * s0 * s0
        if fc_dim:
            layers += [
                weight_layer(nn.Linear(self.feature_dim, fc_dim), fc_norm),
                norm_layer(fc_norm, fc_dim, 1),
            ]
            layers.append(activation(act, leak))
            self.feature_dim = fc_dim
        if mbstd:
            layers.append(MinibatchStd(mbstd))
            self.feature_dim += 1
        self.trunk = nn.Sequential(*layers)
        self.head = weight_layer(nn.Linear(self.feature_dim, 1), norm)
        if init_std:
            init_weights(self, init_std)

    def features(self, x: Tensor) -> Tensor:
        return self.trunk(pack_input(x, self.pack))

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.features(x)).squeeze(1)
