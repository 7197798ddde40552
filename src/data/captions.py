"""Captioned images for text-to-image models, and the embedded captioned data set (`data=shapes`).

A captioned data module holds uint8 images and, per image, the embeddings of its K captions (from the
configured text encoder). Each training batch pairs every image with one of its captions, drawn anew
each step (StackGAN's sampling), deterministically from the seed, the epoch and the batch.

`Shapes` draws scenes of one or two coloured shapes with captions such as "a small red circle above a
large blue square": no download, the same data for the same `data_seed`. Its held-out split has caption
templates and two-object colour/shape pairings that never occur in training.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor

from src.data.base import GANDataModule, TensorLoader, conform
from src.errors import ConfigError, DataError
from src.text.encoders import TextEncoder, encode_captions


class CaptionLoader(TensorLoader):
    """Like TensorLoader, with y of shape (N, K, dim): each batch takes one of the K captions per image."""

    def __init__(self, *args: Any, flip: bool = False, contrast: Tensor | None = None, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.flip, self.contrast = flip, contrast

    def make_batch(self, sel: Tensor, b: int) -> tuple[Tensor, ...]:
        """(images, one caption embedding each) and, with contrast captions, one of those each."""
        g = torch.Generator().manual_seed((self.seed * 1_000_003 + self.epoch) * 1_000_003 + b)
        k = torch.randint(self.y.shape[1], (len(sel),), generator=g).to(self.y.device)
        x = self.transform(self.x[sel])
        if self.flip:
            mirror = (torch.rand(len(sel), generator=g) < 0.5).to(x.device)
            x = torch.where(mirror[:, None, None, None], x.flip(3), x)
        if self.contrast is None:
            return x, self.y[sel, k]
        j = torch.randint(self.contrast.shape[1], (len(sel),), generator=g).to(self.y.device)
        return x, self.y[sel, k], self.contrast[sel, j]

    def to(self, device: torch.device | str) -> CaptionLoader:
        super().to(device)
        self.contrast = None if self.contrast is None else self.contrast.to(device)
        return self


class CaptionedDataModule(GANDataModule):
    """Base of captioned data: subclasses implement `load()` -> {split: (uint8 images, (N, K, dim) embeddings)}
    and fill `self.captions[split]` with the K caption texts of each image.

    Subclasses may also fill `self.contrast[split]` with (N, K', dim) embeddings of contrast captions: texts
    that describe each image wrongly in one attribute (hard negatives for a matching-aware discriminator);
    training batches then carry one of them per image as a third element.

    `stage1_shape`: the low resolution StackGAN's stage I uses on this data (model.stage1_shape defaults
    to it). `figure_captions`: the captions of the figures (null: the first caption of the first
    held-out images). `flip`: random horizontal flips (not for data whose captions say left or right).
    """

    def __init__(
        self,
        shape: Sequence[int],
        text_encoder: TextEncoder,
        stage1_shape: Sequence[int] | None = None,
        figure_captions: Sequence[str] | None = None,
        flip: bool = False,
        **kwargs: Any,
    ):
        super().__init__(shape, **kwargs)
        if not isinstance(text_encoder, TextEncoder):
            raise ConfigError(
                f"data.text_encoder must be a text encoder (conf/text/*.yaml), got {text_encoder!r}"
            )
        self.text_encoder, self.flip = text_encoder, flip
        self.stage1_shape = tuple(int(s) for s in stage1_shape) if stage1_shape else None
        self.figure_texts = list(figure_captions) if figure_captions else None
        self.captions: dict[str, list[list[str]]] = {}
        self.contrast: dict[str, Tensor] = {}

    @property
    def has_labels(self) -> bool:
        return False  # captions, not class labels: the domain classifier and class metrics do not apply

    @property
    def captioned(self) -> bool:
        return True

    @property
    def text_dim(self) -> int:
        return self.text_encoder.dim

    def setup(self, stage: str | None = None) -> None:
        if self.data:
            return
        for split, (x, y) in self.load().items():
            x = conform(x, self.shape, f"data={self.name} ({split})")
            if y.dim() != 3 or y.shape[0] != len(x) or y.shape[2] != self.text_dim:
                raise DataError(
                    f"data={self.name} ({split}): caption embeddings of shape {list(y.shape)} for {len(x)} "
                    f"images; expected ({len(x)}, captions, {self.text_dim})"
                )
            self.data[split] = (x, y.float())

    def loader(self, split: str, shuffle: bool, drop_last: bool, batch_size: int) -> CaptionLoader:
        x, y = self.data[split]
        rank, world = self._rank()
        flip = self.flip and split == "train"
        contrast = self.contrast.get(split) if split == "train" else None
        loader = CaptionLoader(
            x, y, batch_size, shuffle, drop_last, self.seed, True, rank, world, flip=flip, contrast=contrast
        )
        return loader.to(self._device())

    def figure_captions(self, n: int = 8) -> tuple[list[str], Tensor]:
        """(texts, embeddings) of the captions figures are drawn for."""
        if self.figure_texts:
            return self.figure_texts, self.text_encoder.encode(self.figure_texts)
        self.setup()
        split = "val" if len(self.data.get("val", ((), ()))[0]) else "train"
        n = min(n, len(self.data[split][0]))
        return [self.captions[split][i][0] for i in range(n)], self.data[split][1][:n, 0].clone()


# --- the embedded shapes ------------------------------------------------------------------------------
COLOURS = ["red", "green", "blue", "yellow", "purple", "white"]
RGB = [(220, 40, 40), (40, 170, 60), (40, 80, 230), (235, 210, 30), (150, 50, 190), (235, 235, 235)]
SHAPES = ["circle", "square", "triangle"]
SIZES = ["small", "large"]
POSITIONS = ["centre", "left", "right", "top", "bottom"]  # of a single object; layouts 0-4
VERTICAL, HORIZONTAL = 5, 6  # layouts of two objects: slot 0 above / left of slot 1
WORDS = {
    "colour": [["red", "crimson"], ["green", "emerald"], ["blue", "azure"], ["yellow", "golden"],
               ["purple", "violet"], ["white", "ivory"]],
    "shape": [["circle", "disc"], ["square", "box"], ["triangle", "triangular shape"]],
    "size": [["small", "little", "tiny"], ["large", "big", "huge"]],
    "position": [["in the centre", "in the middle"], ["on the left", "at the left"],
                 ["on the right", "at the right"], ["at the top", "near the top"],
                 ["at the bottom", "near the bottom"]],
    "relation": {"above": ["above", "on top of", "over"], "below": ["below", "under", "beneath"],
                 "left": ["to the left of", "left of"], "right": ["to the right of", "right of"]},
}  # fmt: skip
# {a}, {b}: "size colour shape" phrases; {pos}: a position; {rel}: where a is relative to b.
TEMPLATES = {
    "single": [
        "a {a} {pos}",
        "there is a {a} {pos}",
        "{pos} a {a}",
        "one {a} {pos}",
        "a picture with a {a} {pos}",
    ],
    "pair": ["a {a} {rel} a {b}", "there is a {a} {rel} a {b}", "a picture of a {a} {rel} a {b}"],
}
# Held out: new word orders of known words, only in the val split.
VAL_TEMPLATES = {
    "single": ["{pos} there is a {a}", "a picture of one {a} {pos}"],
    "pair": ["{rel} a {b} there is a {a}", "a {b}, a {a} {rel} the {b_shape}"],
}
# Object radius as a fraction of the side: (small, large) for one object and for each of two.
RADIUS = {"single": (0.13, 0.22), "pair": (0.11, 0.18)}
CENTRES = [(0.5, 0.5), (0.27, 0.5), (0.73, 0.5), (0.5, 0.27), (0.5, 0.73)]


def object_types() -> int:
    return len(COLOURS) * len(SHAPES)


def held_out_pairs(fraction: float, seed: int) -> set[tuple[int, int]]:
    """Unordered pairs of object types (colour, shape) that appear together only in the val split."""
    pairs = [(a, b) for a in range(object_types()) for b in range(a + 1, object_types())]
    order = np.random.default_rng(seed + 7919).permutation(len(pairs))
    return {pairs[i] for i in order[: round(fraction * len(pairs))]}


def sample_scenes(n: int, rng: np.random.Generator, two_objects: float, pairs: list[tuple[int, int]]) -> dict:
    """n scenes as arrays: layout (n,), colour/shape/size (n, 2) with -1 for no object, centre (n, 2, 2)."""
    k = len(SHAPES)
    two = rng.random(n) < two_objects
    layout = np.where(two, rng.integers(VERTICAL, HORIZONTAL + 1, n), rng.integers(0, len(POSITIONS), n))
    pick = np.asarray(pairs)[rng.integers(0, len(pairs), n)] if pairs else np.zeros((n, 2), int)
    swap = rng.random(n) < 0.5
    types = np.where(swap[:, None], pick[:, ::-1], pick)
    types[~two, 0] = rng.integers(0, object_types(), int((~two).sum()))
    types[~two, 1] = -1
    colour, shape = np.where(types >= 0, types // k, -1), np.where(types >= 0, types % k, -1)
    size = np.where(types >= 0, rng.integers(0, 2, (n, 2)), -1)
    centre = np.zeros((n, 2, 2))
    for i in range(n):
        if layout[i] == VERTICAL:
            centre[i] = [(0.5, 0.27), (0.5, 0.73)]
        elif layout[i] == HORIZONTAL:
            centre[i] = [(0.27, 0.5), (0.73, 0.5)]
        else:
            centre[i, 0] = CENTRES[layout[i]]
    centre += rng.uniform(-0.035, 0.035, centre.shape)
    return {"layout": layout, "colour": colour, "shape": shape, "size": size, "centre": centre}


def caption(scene: dict, i: int, templates: dict, rng: np.random.Generator) -> str:
    def word(kind: str, value: int) -> str:
        options = WORDS[kind][value]
        return options[rng.integers(len(options))]

    def phrase(j: int) -> str:
        c, s, z = (int(scene[key][i, j]) for key in ("colour", "shape", "size"))
        return f"{word('size', z)} {word('colour', c)} {word('shape', s)}"

    layout = int(scene["layout"][i])
    if layout < VERTICAL:
        template = templates["single"][rng.integers(len(templates["single"]))]
        return template.format(a=phrase(0), pos=word("position", layout))
    a, b = (0, 1) if rng.random() < 0.5 else (1, 0)  # describe either object relative to the other
    rel = {(VERTICAL, 0): "above", (VERTICAL, 1): "below", (HORIZONTAL, 0): "left", (HORIZONTAL, 1): "right"}
    rel_words = WORDS["relation"][rel[layout, a]]
    template = templates["pair"][rng.integers(len(templates["pair"]))]
    b_shape = word("shape", int(scene["shape"][i, b]))
    return template.format(
        a=phrase(a), b=phrase(b), rel=rel_words[rng.integers(len(rel_words))], b_shape=b_shape
    )


def contrast_scene(scene: dict, rng: np.random.Generator) -> dict:
    """A copy of the scenes, each described wrongly in one way: one object's colour or shape changed, or (two
    objects) their colours or shapes swapped. Its captions are hard negatives: they differ from a true caption
    in a word or two, where another image's caption differs in everything."""
    out = {k: np.array(v, copy=True) for k, v in scene.items()}
    sizes = {"colour": len(COLOURS), "shape": len(SHAPES)}
    for i in range(len(out["layout"])):
        two = out["layout"][i] >= VERTICAL
        kind = ["colour", "shape"][rng.integers(2)]
        if two and rng.random() < 0.5 and out[kind][i, 0] != out[kind][i, 1]:
            out[kind][i] = out[kind][i, ::-1]
        else:
            j = rng.integers(2) if two else 0
            out[kind][i, j] = (out[kind][i, j] + rng.integers(1, sizes[kind])) % sizes[kind]
    return out


def shape_sdf(shape: int, dx: Tensor, dy: Tensor, r: Tensor) -> Tensor:
    """Signed distance in pixels (negative inside) to a circle, square or upward triangle of radius r."""
    if shape == 0:
        return torch.sqrt(dx**2 + dy**2) - r
    if shape == 1:
        h = 0.886 * r  # the square of the circle's area
        qx, qy = dx.abs() - h, dy.abs() - h
        return torch.sqrt(qx.clamp(min=0) ** 2 + qy.clamp(min=0) ** 2) + torch.maximum(qx, qy).clamp(max=0)
    t, k = 1.25 * r, 3**0.5  # half the side of an equilateral triangle, centred on its centroid
    x, y = dx.abs() - t, -dy + t / k
    fold = x + k * y > 0
    x, y = torch.where(fold, (x - k * y) / 2, x), torch.where(fold, (-k * x - y) / 2, y)
    x = x - torch.maximum(torch.minimum(x, torch.zeros_like(x)), -2 * t)
    return -torch.sqrt(x**2 + y**2) * torch.sign(y)


def render(scene: dict, side: int, rng: np.random.Generator, chunk: int = 512) -> Tensor:
    """uint8 (n, 3, side, side): a plain dark background, antialiased objects with slightly varied colours."""
    n = len(scene["layout"])
    background = torch.from_numpy(rng.uniform(20, 60, n)).float()
    jitter = torch.from_numpy(rng.uniform(-15, 15, (n, 2, 3))).float()
    ys = (torch.arange(side, dtype=torch.float32) + 0.5)[None, :, None]
    xs = (torch.arange(side, dtype=torch.float32) + 0.5)[None, None, :]
    colour, kind = torch.from_numpy(scene["colour"]), torch.from_numpy(scene["shape"])
    size = torch.from_numpy(scene["size"]).clamp(min=0)
    pair = colour[:, 1:] >= 0
    radius = torch.where(pair, torch.tensor(RADIUS["pair"])[size], torch.tensor(RADIUS["single"])[size])
    radius, centre = radius.float() * side, torch.from_numpy(scene["centre"]).float() * side
    paint = (torch.tensor(RGB, dtype=torch.float32)[colour.clamp(min=0)] + jitter).clamp(0, 255)
    out = torch.empty(n, 3, side, side, dtype=torch.uint8)
    for lo in range(0, n, chunk):
        hi = min(lo + chunk, n)
        img = background[lo:hi, None, None, None].repeat(1, 3, side, side)
        for j in range(2):  # the two objects never overlap
            for s in range(len(SHAPES)):
                sel = ((kind[lo:hi, j] == s) & (colour[lo:hi, j] >= 0)).nonzero().squeeze(1)
                if not len(sel):
                    continue
                i = sel + lo
                dx, dy = xs - centre[i, j, 0, None, None], ys - centre[i, j, 1, None, None]
                alpha = (0.5 - shape_sdf(s, dx, dy, radius[i, j, None, None])).clamp(0, 1)[:, None]
                img[sel] = torch.lerp(img[sel], paint[i, j, :, None, None].expand_as(img[sel]), alpha)
        out[lo:hi] = img.round_().clamp_(0, 255).to(torch.uint8)
    return out


class Shapes(CaptionedDataModule):
    """Scenes of one or two coloured shapes, captioned: colour (6), shape (circle, square, triangle),
    size (small, large), and the position of one object (centre, left, right, top, bottom) or the
    relation of two (above, below, left of, right of), in varied templates and synonyms.

    The val split is held out twice over: its captions use templates never seen in training, and its
    two-object scenes pair object types (colour + shape) that never appear together in training
    (`val_pairs`, a fraction of all pairings). `scenes[split]` keeps every scene's attributes.
    `contrast_captions` > 0: that many contrast captions per training image (`contrast_scene`).
    """

    def __init__(
        self,
        shape: Sequence[int] = (3, 64, 64),
        n_train: int = 8000,
        n_val: int = 1000,
        captions_per_image: int = 5,
        two_objects: float = 0.5,
        val_pairs: float = 0.2,
        data_seed: int = 0,
        contrast_captions: int = 0,
        **kwargs: Any,
    ):
        super().__init__(shape, **kwargs)
        c, h, w = self.shape
        if c != 3 or h != w:
            raise ConfigError(
                f"data=shapes draws square RGB images: data.shape=[3,S,S], got {list(self.shape)}"
            )
        if n_train < 1 or n_val < 0 or captions_per_image < 1:
            raise ConfigError("data=shapes needs n_train >= 1, n_val >= 0 and captions_per_image >= 1")
        if not 0 <= two_objects <= 1 or not 0 < val_pairs < 1:
            raise ConfigError("data=shapes needs two_objects in [0, 1] and val_pairs in (0, 1)")
        if contrast_captions < 0:
            raise ConfigError(f"data.contrast_captions must be >= 0, got {contrast_captions}")
        self.contrast_k = contrast_captions
        self.n = {"train": n_train, "val": n_val}
        self.k, self.two_objects, self.val_pairs, self.data_seed = (
            captions_per_image,
            two_objects,
            val_pairs,
            data_seed,
        )
        self.scenes: dict[str, dict] = {}

    @property
    def name(self) -> str:
        return "shapes"

    def load(self) -> dict[str, tuple[Tensor, Tensor]]:
        held = held_out_pairs(self.val_pairs, self.data_seed)
        everything = [(a, b) for a in range(object_types()) for b in range(a + 1, object_types())]
        pairs = {"train": [p for p in everything if p not in held], "val": sorted(held)}
        out = {}
        for i, split in enumerate(("train", "val")):
            rng = np.random.default_rng([self.data_seed, i])
            scene = sample_scenes(self.n[split], rng, self.two_objects, pairs[split])
            templates = TEMPLATES if split == "train" else VAL_TEMPLATES
            self.captions[split] = [
                [caption(scene, j, templates, rng) for _ in range(self.k)] for j in range(self.n[split])
            ]
            self.scenes[split] = {k: torch.from_numpy(np.asarray(v)) for k, v in scene.items()}
            images = render(scene, self.shape[1], rng)
            out[split] = (images, encode_captions(self.text_encoder, self.captions[split]))
            if self.contrast_k and split == "train":
                wrong = [contrast_scene(scene, rng) for _ in range(self.contrast_k)]
                texts = [[caption(w, j, templates, rng) for w in wrong] for j in range(self.n[split])]
                self.contrast[split] = encode_captions(self.text_encoder, texts).float()
        return out
