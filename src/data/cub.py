"""CUB-200-2011 birds and Oxford-102 flowers in the StackGAN release format (data=cub, data=oxford102).

The release (Zhang et al. 2017, with the captions and char-CNN-RNN embeddings of Reed et al. 2016):

    <root>/train/filenames.pickle                 image keys, e.g. 002.Laysan_Albatross/Laysan_Albatross_0002_1027
    <root>/train/char-CNN-RNN-embeddings.pickle   (images, 10, 1024): one embedding per caption
    <root>/train/class_info.pickle                class ids (optional)
    <root>/test/...                               the same for the held-out split (our "val")
    <root>/text_c10/<key>.txt                     the 10 captions, one per line, in the embeddings' order
    images                                        CUB: <root>/CUB_200_2011/images/<key>.jpg; flowers: <root>/jpg/<name>.jpg

`image_paths` and `text_paths` list where files are looked for ({root}, {key}, {name}: the key's last
part, {cls}: its class id). CUB images are cropped around the bird's bounding box as StackGAN does when
CUB_200_2011/bounding_boxes.txt and images.txt are there. Pickles are read with a restricted unpickler
that only rebuilds numpy arrays, lists and strings.
"""

from __future__ import annotations

from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch import Tensor

from src.data.captions import CaptionedDataModule
from src.data.release import StackGANRelease
from src.errors import DataError
from src.text.encoders import PrecomputedEmbeddings, encode_captions

SPLITS = {"train": "train", "val": "test"}  # ours: the release's


def read_image(path: Path, shape: Sequence[int], box: tuple[float, ...] | None) -> Tensor:
    """uint8 (C, H, W): cropped to a square of 1.5 x the box's larger side around its centre (StackGAN's
    crop), when a box is given, then resized (bilinear) to `shape`."""
    c, h, w = shape
    with Image.open(path) as img:
        img = img.convert("RGB" if c == 3 else "L")
    if box is not None:
        x, y, bw, bh = box
        r, cx, cy = int(max(bw, bh) * 0.75), int(x + bw / 2), int(y + bh / 2)
        img = img.crop((max(0, cx - r), max(0, cy - r), min(img.width, cx + r), min(img.height, cy + r)))
    x = np.asarray(img.resize((w, h), Image.Resampling.BILINEAR), dtype=np.uint8)
    x = torch.from_numpy(x.copy())
    return x.permute(2, 0, 1) if x.dim() == 3 else x[None]


class CUB(CaptionedDataModule):
    """CUB-200-2011 (8,855 training and 2,933 held-out birds, 10 captions each) from the StackGAN release.

    `limit`: only the first that many images of each split (quick tries). With text=precomputed the release's
    embeddings are used; any other text encoder encodes the captions from the text files.
    """

    title = "cub"

    def __init__(
        self,
        root: str,
        shape: Sequence[int] = (3, 256, 256),
        text_paths: Sequence[str] = ("{root}/text_c10/{key}.txt", "{root}/text/{key}.txt"),
        image_paths: Sequence[str] = ("{root}/CUB_200_2011/images/{key}.jpg", "{root}/images/{key}.jpg"),
        bbox: bool = True,
        limit: int | None = None,
        **kwargs: Any,
    ):
        super().__init__(shape, **kwargs)
        self.release = StackGANRelease(root, text_paths, image_paths, self.title)
        self.bbox, self.limit = bbox, limit

    @property
    def name(self) -> str:
        return self.title

    def load(self) -> dict[str, tuple[Tensor, Tensor]]:
        boxes = self.release.bounding_boxes() if self.bbox else {}
        out = {}
        for ours, theirs in SPLITS.items():
            n = len(self.release.filenames(theirs))
            n = min(n, self.limit) if self.limit else n
            self.captions[ours] = self.release.captions(theirs)[:n]
            if isinstance(self.text_encoder, PrecomputedEmbeddings):
                emb = self.text_encoder.embeddings(theirs)[:n]
            else:
                emb = encode_captions(self.text_encoder, self.captions[ours])
            keys = self.release.filenames(theirs)[:n]
            paths = [self.release.find(self.release.image_paths, theirs, i, "image") for i in range(n)]
            with ThreadPoolExecutor(max(1, self.num_workers)) as pool:
                images = list(pool.map(lambda p, k: read_image(p, self.shape, boxes.get(k)), paths, keys))
            if not images:
                raise DataError(f"data={self.name}: the release's {theirs} split has no images")
            out[ours] = (torch.stack(images), emb)
        return out


class Oxford102(CUB):
    """Oxford-102 flowers (7,034 training and 1,155 held-out images, 10 captions each) from the StackGAN release."""

    title = "oxford102"
