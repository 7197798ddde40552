"""Conditioning and auxiliary heads, written once around any base network (MLP, DCGAN, yours).

The base network class is named by a dotted path and built with the remaining arguments, so a
conditional model's config has the same keys as its unconditional base (`model.generator.base_channels`).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from hydra.utils import get_class
from torch import Tensor, nn

from src.models.networks.layers import activation, norm_layer, weight_layer
from src.models.networks.mlp import MLPDiscriminator


def build_base(base: str, **kwargs) -> nn.Module:
    try:
        cls = get_class(base)
    except Exception as e:  # hydra raises ImportError or a plain Exception depending on what is missing
        raise ValueError(f"base network {base!r} cannot be imported: {e}") from None
    return cls(**kwargs)


def add_heads(discriminator: nn.Module, heads: dict[str, int]) -> None:
    """Give D the auxiliary heads the model's terms read ({name: output size}); only AuxHeadDiscriminator has any."""
    if not heads:
        return
    if not isinstance(discriminator, AuxHeadDiscriminator):
        raise ValueError(
            f"the terms of this model read D's heads {sorted(heads)}: it needs "
            "model.discriminator._target_=src.models.networks.conditional.AuxHeadDiscriminator"
        )
    for name, size in heads.items():
        discriminator.add_head(name, size)


def require_classes(num_classes: int | None) -> None:
    if not num_classes or num_classes < 2:
        raise ValueError(
            f"a class-conditional model needs labelled data with >= 2 classes (data.num_classes={num_classes}): "
            "use labelled data (mnist5k, mnist, fashion_mnist, cifar10, ring8, grid25, image_folder with "
            "data.labels=true and data.num_classes) or an unconditional model (gan, dcgan, infogan)"
        )


class ConditionalGenerator(nn.Module):
    """G([z, e(y)]): e is a learned embedding (`embed_dim`) or, with embed_dim null, the one-hot label."""

    def __init__(self, base: str, latent_dim: int, num_classes: int, embed_dim: int | None = None, **kwargs):
        super().__init__()
        require_classes(num_classes)
        self.latent_dim, self.num_classes = latent_dim, num_classes
        self.embed = nn.Embedding(num_classes, embed_dim) if embed_dim else None
        self.net = build_base(base, latent_dim=latent_dim + (embed_dim or num_classes), **kwargs)
        self.shape = self.net.shape

    def condition(self, y: Tensor, dtype: torch.dtype) -> Tensor:
        return self.embed(y).to(dtype) if self.embed is not None else F.one_hot(y, self.num_classes).to(dtype)

    def forward(self, z: Tensor, y: Tensor) -> Tensor:
        return self.net(torch.cat([z, self.condition(y, z.dtype)], 1))


class ConditionalDiscriminator(nn.Module):
    """D(x, y).

    `concat` (Mirza & Osindero 2014): the one-hot label is appended to the input, as extra constant
    channels for images. `projection` (Miyato & Koyama 2018): D(x, y) = head(phi(x)) + <embed(y), phi(x)>.
    """

    def __init__(self, base: str, num_classes: int, cond: str = "projection", **kwargs):
        super().__init__()
        if cond not in ("concat", "projection"):
            raise ValueError(f"model.discriminator.cond must be 'concat' or 'projection', got {cond!r}")
        require_classes(num_classes)
        self.num_classes, self.cond = num_classes, cond
        extra = {"in_extra": num_classes} if cond == "concat" else {}
        self.net = build_base(base, **kwargs, **extra)
        self.pack, self.shape = getattr(self.net, "pack", 1), self.net.shape
        # An MLP reads flat inputs: the one-hot goes after the flattened image, not as image planes.
        self.flat = isinstance(self.net, MLPDiscriminator)
        if cond == "projection":
            if self.pack > 1:
                raise ValueError(
                    "model.pack > 1 needs model.discriminator.cond=concat (one label per packed input)"
                )
            embed = nn.Embedding(num_classes, self.net.feature_dim)
            nn.init.normal_(embed.weight, 0.0, 0.02)
            self.embed = weight_layer(embed, kwargs.get("norm", ""))

    def forward(self, x: Tensor, y: Tensor) -> Tensor:
        if self.cond == "concat":
            onehot = F.one_hot(y, self.num_classes).to(x.dtype)
            if x.dim() == 4 and not self.flat:
                onehot = onehot[:, :, None, None].expand(-1, -1, x.shape[2], x.shape[3])
            else:
                x = x.flatten(1)
            return self.net(torch.cat([x, onehot], 1))
        h = self.net.features(x)
        return self.net.head(h).squeeze(1) + (self.embed(y) * h).sum(1)


class CodeGenerator(nn.Module):
    """InfoGAN's generator input: G([z, one-hot(c_cat_1), ..., c_cont]) for sampled latent codes."""

    def __init__(
        self, base: str, latent_dim: int, cat_dims: Sequence[int] = (10,), cont_dim: int = 2, **kwargs
    ):
        super().__init__()
        self.latent_dim, self.cat_dims, self.cont_dim = latent_dim, [int(k) for k in cat_dims], int(cont_dim)
        self.net = build_base(base, latent_dim=latent_dim + sum(self.cat_dims) + self.cont_dim, **kwargs)
        self.shape = self.net.shape

    def forward(self, z: Tensor, c_cat: Tensor, c_cont: Tensor) -> Tensor:
        onehots = [F.one_hot(c_cat[:, i], k).to(z.dtype) for i, k in enumerate(self.cat_dims)]
        return self.net(torch.cat([z, *onehots, c_cont.to(z.dtype)], 1))


class AuxHeadDiscriminator(nn.Module):
    """A base discriminator whose trunk features also feed auxiliary heads (AC-GAN's classifier, InfoGAN's Q).

    The model adds the heads it needs (`add_head`). The adversarial path (trunk + head) is `critic`:
    what a critic's clipping and norm rules apply to. A head is linear, or with `head_hidden` has one
    hidden layer (InfoGAN's Q: FC 128 - BN - LReLU - FC).
    """

    def __init__(self, base: str, head_hidden: int | None = None, head_norm: str = "batch", **kwargs):
        super().__init__()
        self.net = build_base(base, **kwargs)
        if getattr(self.net, "pack", 1) > 1:
            raise ValueError("auxiliary heads (AC-GAN, InfoGAN) predict per sample: use model.pack=1")
        self.pack, self.shape = 1, self.net.shape
        self.head_hidden, self.head_norm = head_hidden, head_norm
        self.heads = nn.ModuleDict()

    def add_head(self, name: str, out_dim: int) -> None:
        feat, hidden = self.net.feature_dim, self.head_hidden
        if hidden:
            self.heads[name] = nn.Sequential(
                nn.Linear(feat, hidden), norm_layer(self.head_norm, hidden, 1),
                activation("leaky_relu", getattr(self.net, "leak", 0.2)),
                nn.Linear(hidden, out_dim),
            )  # fmt: skip
        else:
            self.heads[name] = nn.Linear(feat, out_dim)

    @property
    def critic(self) -> nn.Module:
        return self.net

    def forward(self, x: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        h = self.net.features(x)
        return self.net.head(h).squeeze(1), {name: head(h) for name, head in self.heads.items()}
