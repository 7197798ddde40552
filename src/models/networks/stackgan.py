"""StackGAN (Zhang et al. 2017) networks: conditioning augmentation, the stage-I and stage-II generators and
the text-conditioned discriminator both stages use.

Widths follow the official code: stage-I G has base_channels * 2^k channels at its first (s0 x s0) map,
halving per 2x upsampling down to base_channels at full size (base 64 at 64 px: 1024 ... 64); stage-II G
encodes the stage-I image to a quarter of its side with 4 * base_channels channels, joins the text code,
applies residual blocks and upsamples to the output size; D is a strided-conv trunk down to s0 x s0,
joined with the compressed text (replicated spatially), then a 3x3 conv and an s0 x s0 conv to one score.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from src.models.networks.dcgan import dcgan_layout
from src.models.networks.layers import check_norm, init_weights, norm_layer, weight_layer


class CANet(nn.Module):
    """Conditioning augmentation: text embedding -> (mu, log sigma^2) -> c = mu + sigma * eps.

    Linear, as in the paper; the official code puts a ReLU on mu and log sigma^2, which keeps sigma >= 1.
    `eps` ~ N(0, I) comes from the caller, so that seeded samples are reproducible.
    """

    def __init__(self, text_dim: int, c_dim: int):
        super().__init__()
        self.c_dim = c_dim
        self.fc = nn.Linear(text_dim, 2 * c_dim)

    def forward(self, emb: Tensor, eps: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        mu, logvar = self.fc(emb.to(self.fc.weight.dtype)).chunk(2, 1)
        logvar = logvar.clamp(-10, 10)
        return mu + torch.exp(0.5 * logvar) * eps.to(mu.dtype), mu, logvar


def up_block(c_in: int, c_out: int, norm: str) -> nn.Sequential:
    """2x nearest upsampling, 3x3 conv, norm, ReLU (the official upBlock)."""
    conv = weight_layer(nn.Conv2d(c_in, c_out, 3, 1, 1, bias=norm in ("none", "spectral")), norm)
    return nn.Sequential(
        nn.Upsample(scale_factor=2, mode="nearest"), conv, norm_layer(norm, c_out, 2), nn.ReLU()
    )


def conv_norm(c_in: int, c_out: int, norm: str, k: int = 3, stride: int = 1, act: nn.Module | None = None):
    pad = (k - 1) // 2 if stride == 1 else 1
    conv = weight_layer(nn.Conv2d(c_in, c_out, k, stride, pad, bias=norm in ("none", "spectral")), norm)
    return nn.Sequential(conv, norm_layer(norm, c_out, 2), act or nn.ReLU())


class ResBlock(nn.Module):
    def __init__(self, channels: int, norm: str):
        super().__init__()
        self.body = nn.Sequential(
            conv_norm(channels, channels, norm),
            weight_layer(nn.Conv2d(channels, channels, 3, 1, 1, bias=norm in ("none", "spectral")), norm),
            norm_layer(norm, channels, 2),
        )
        self.act = nn.ReLU()

    def forward(self, x: Tensor) -> Tensor:
        return self.act(x + self.body(x))


def text_planes(code: Tensor, like: Tensor) -> Tensor:
    """A (B, D) code replicated over the spatial size of `like`."""
    return code[:, :, None, None].expand(-1, -1, like.shape[2], like.shape[3]).to(like.dtype)


class Stage1Generator(nn.Module):
    """G(z, text) -> a low-resolution image: [CA(text), z] -> FC -> s0 x s0 map -> k up-blocks -> tanh."""

    def __init__(
        self,
        text_dim: int,
        c_dim: int,
        latent_dim: int,
        shape: Sequence[int],
        base_channels: int = 64,
        max_channels: int = 1024,
        norm: str = "batch",
        init_std: float | None = 0.02,
    ):
        super().__init__()
        check_norm(norm, "StackGAN stage-I generator")
        self.shape, self.latent_dim = tuple(shape), latent_dim
        c, s0, k = dcgan_layout(shape, "StackGAN stage-I generator")
        chans = [min(base_channels * 2 ** (k - i), max_channels) for i in range(k + 1)]
        self.ca = CANet(text_dim, c_dim)
        self.project = nn.Sequential(
            weight_layer(
                nn.Linear(c_dim + latent_dim, chans[0] * s0 * s0, bias=norm in ("none", "spectral")), norm
            ),
            nn.Unflatten(1, (chans[0], s0, s0)),
            norm_layer(norm, chans[0], 2),
            nn.ReLU(),
        )
        self.blocks = nn.Sequential(*[up_block(a, b, norm) for a, b in zip(chans[:-1], chans[1:])])
        self.out = nn.Sequential(nn.Conv2d(chans[-1], c, 3, 1, 1), nn.Tanh())
        if init_std:
            init_weights(self, init_std)

    def forward(self, z: Tensor, emb: Tensor, eps: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        c, mu, logvar = self.ca(emb, eps)
        x = self.out(self.blocks(self.project(torch.cat([c, z.to(c.dtype)], 1))))
        return x, {"mu": mu, "logvar": logvar}


class Stage2Generator(nn.Module):
    """G(stage-I image, text) -> a high-resolution image; no noise input (stage I's sample carries it)."""

    def __init__(
        self,
        text_dim: int,
        c_dim: int,
        shape: Sequence[int],
        low_shape: Sequence[int],
        base_channels: int = 64,
        res_blocks: int = 2,
        min_channels: int = 16,
        skip: bool = False,
        norm: str = "batch",
        init_std: float | None = 0.02,
    ):
        """`skip`: add the network's output to the upsampled stage-I image before the tanh (not in the paper;
        the output layer starts at zero, so stage II starts as stage I's image and learns a correction,
        which helps short runs)."""
        super().__init__()
        check_norm(norm, "StackGAN stage-II generator")
        self.skip = skip
        self.shape, self.low_shape = tuple(shape), tuple(low_shape)
        c, hi, _ = self.shape
        c_low, lo, _ = self.low_shape
        ratio = hi / (lo / 4)
        if lo % 4 or hi < lo or ratio != 2 ** round(math.log2(ratio)):
            raise ValueError(
                f"StackGAN stage II maps {lo} px stage-I images to {hi} px: it needs a stage-I side divisible by 4 "
                "and an output side that is the stage-I side times a power of 2 (e.g. 64 -> 256, 32 -> 64)"
            )
        ngf = base_channels
        self.ca = CANet(text_dim, c_dim)
        self.encode = nn.Sequential(
            nn.Conv2d(c_low, ngf, 3, 1, 1),
            nn.ReLU(),
            conv_norm(ngf, 2 * ngf, norm, 4, 2),
            conv_norm(2 * ngf, 4 * ngf, norm, 4, 2),
        )
        self.joint = conv_norm(4 * ngf + c_dim, 4 * ngf, norm)
        self.residual = nn.Sequential(*[ResBlock(4 * ngf, norm) for _ in range(res_blocks)])
        n_up = round(math.log2(ratio))
        chans = [4 * ngf] + [max(4 * ngf // 2 ** (j + 1), min_channels) for j in range(n_up)]
        self.up = nn.Sequential(*[up_block(a, b, norm) for a, b in zip(chans[:-1], chans[1:])])
        self.out = nn.Sequential(nn.Conv2d(chans[-1], c, 3, 1, 1), nn.Identity() if skip else nn.Tanh())
        if init_std:
            init_weights(self, init_std)
        if skip:  # start as the upsampled stage-I image exactly; training learns the correction
            nn.init.zeros_(self.out[0].weight)
            nn.init.zeros_(self.out[0].bias)

    def forward(self, low: Tensor, emb: Tensor, eps: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        c, mu, logvar = self.ca(emb, eps)
        h = self.encode(low)
        h = self.joint(torch.cat([h, text_planes(c, h)], 1))
        out = self.out(self.up(self.residual(h)))
        if self.skip:
            base = F.interpolate(low, size=self.shape[1:], mode="bilinear", align_corners=False)
            out = torch.tanh(out + torch.atanh(base.clamp(-0.99, 0.99)))
        return out, {"mu": mu, "logvar": logvar}


class TextDiscriminator(nn.Module):
    """D(x, text) -> one score: conv trunk to s0 x s0, [features, replicated FC(text)] -> 3x3 conv -> s0 x s0 conv.

    `embed_dim` > 0: also an image embedding (the trunk's features, pooled, one linear layer; it never sees the
    text) and a text embedding (one linear layer) in a shared space, for the image-text contrastive term
    (src/losses/text.py); returned as aux outputs {"image", "text"} next to the score.
    """

    def __init__(
        self,
        text_dim: int,
        shape: Sequence[int],
        base_channels: int = 64,
        max_channels: int = 512,
        cond_dim: int = 128,
        norm: str = "batch",
        init_std: float | None = 0.02,
        embed_dim: int = 0,
    ):
        super().__init__()
        check_norm(norm, "StackGAN discriminator")
        if embed_dim < 0:
            raise ValueError(f"model.discriminator.embed_dim must be >= 0, got {embed_dim}")
        self.shape, self.pack = tuple(shape), 1
        c, s0, k = dcgan_layout(shape, "StackGAN discriminator")
        chans = [min(base_channels * 2**i, max_channels) for i in range(k)]
        act = nn.LeakyReLU(0.2)
        layers = [weight_layer(nn.Conv2d(c, chans[0], 4, 2, 1), norm), act]
        layers += [conv_norm(a, b, norm, 4, 2, nn.LeakyReLU(0.2)) for a, b in zip(chans[:-1], chans[1:])]
        self.trunk = nn.Sequential(*layers)
        self.text = nn.Sequential(weight_layer(nn.Linear(text_dim, cond_dim), norm), nn.LeakyReLU(0.2))
        self.joint = conv_norm(chans[-1] + cond_dim, chans[-1], norm, act=nn.LeakyReLU(0.2))
        self.head = weight_layer(nn.Conv2d(chans[-1], 1, s0, 1, 0), norm)
        self.embed = None
        if embed_dim:
            self.embed = nn.ModuleDict(
                {"image": nn.Linear(chans[-1], embed_dim), "text": nn.Linear(text_dim, embed_dim)}
            )
        if init_std:
            init_weights(self, init_std)

    def forward(self, x: Tensor, emb: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        features = self.trunk(x)
        emb = emb.to(features.dtype)
        h = self.joint(torch.cat([features, text_planes(self.text(emb), features)], 1))
        aux = {}
        if self.embed is not None:
            aux = {"image": self.embed["image"](features.mean((2, 3))), "text": self.embed["text"](emb)}
        return self.head(h).flatten(), aux
