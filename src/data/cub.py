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

import pickle
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch import Tensor

from src.data.captions import CaptionedDataModule
from src.errors import DataError, DataNotFoundError
from src.text.encoders import PrecomputedEmbeddings, encode_captions

SPLITS = {"train": "train", "val": "test"}  # ours: the release's
ALLOWED = {
    (module, name)
    for module in ("numpy.core.multiarray", "numpy._core.multiarray")
    for name in ("_reconstruct", "scalar")
} | {("numpy", "ndarray"), ("numpy", "dtype"), ("_codecs", "encode")}  # protocol-2 pickles of arrays
WHERE = (
    "Get the release's preprocessed char-CNN-RNN embeddings and captions (birds.zip / flowers.zip, linked from "
    "github.com/hanzhanggit/StackGAN) and the images (CUB_200_2011.tgz / Oxford-102 102flowers.tgz), unpack them "
    "as above, or set data.root to the folder that holds them."
)


class ReleaseUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refusing to load {module}.{name}")


def read_pickle(path: Path) -> Any:
    try:
        with open(path, "rb") as f:
            return ReleaseUnpickler(f, encoding="latin1").load()  # the release was written by Python 2
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, ImportError) as e:
        raise DataError(f"{path} is not a readable StackGAN release pickle ({e})") from None


class StackGANRelease:
    """Reads one release folder; every missing piece is a DataNotFoundError naming the paths tried."""

    def __init__(
        self,
        root: str | Path,
        text_paths: Sequence[str] = ("{root}/text_c10/{key}.txt", "{root}/text/{key}.txt"),
        image_paths: Sequence[str] = ("{root}/CUB_200_2011/images/{key}.jpg", "{root}/images/{key}.jpg"),
        name: str = "cub",
    ):
        self.root, self.name = Path(root).expanduser(), name
        self.text_paths, self.image_paths = list(text_paths), list(image_paths)
        self._cache: dict[tuple[str, str], Any] = {}

    def split_dir(self, split: str) -> Path:
        return self.root / split

    def file(self, split: str, name: str) -> Path:
        path = self.split_dir(split) / name
        if not path.is_file():
            where = "does not exist" if not self.root.is_dir() else f"has no {split}/{name}"
            raise DataNotFoundError(
                f"data={self.name}: the StackGAN release folder {self.root} {where}. Expected {self.root}/train/ and "
                f"{self.root}/test/ with filenames.pickle and the embeddings pickle, {self.root}/text_c10/<key>.txt "
                f"and the images ({self.image_paths[0]}). {WHERE}"
            )
        return path

    def read(self, split: str, name: str) -> Any:
        if (split, name) not in self._cache:
            self._cache[split, name] = read_pickle(self.file(split, name))
        return self._cache[split, name]

    def filenames(self, split: str) -> list[str]:
        keys = self.read(split, "filenames.pickle")
        return [k.decode() if isinstance(k, bytes) else str(k) for k in keys]

    def class_ids(self, split: str) -> list[int] | None:
        if not (self.split_dir(split) / "class_info.pickle").is_file():
            return None
        return [int(c) for c in self.read(split, "class_info.pickle")]

    def embeddings(self, split: str, file: str) -> np.ndarray:
        emb = np.asarray(self.read(split, file), dtype=np.float32)
        if len(emb) != len(self.filenames(split)):
            raise DataError(
                f"{self.split_dir(split) / file} has {len(emb)} rows for {len(self.filenames(split))} images"
            )
        return emb

    def candidates(self, templates: Sequence[str], split: str, i: int) -> list[Path]:
        key = self.filenames(split)[i]
        ids = self.class_ids(split)
        fields = {
            "root": self.root,
            "key": key,
            "name": key.rsplit("/", 1)[-1],
            "cls": ids[i] if ids else None,
        }
        out = []
        for t in templates:
            try:
                out.append(Path(t.format(**fields)))
            except (KeyError, ValueError, TypeError):  # e.g. {cls:05d} without class_info.pickle
                continue
        return out

    def find(self, templates: Sequence[str], split: str, i: int, what: str) -> Path:
        tried = self.candidates(templates, split, i)
        for path in tried:
            if path.is_file():
                return path
        raise DataNotFoundError(
            f"data={self.name}: the {what} of {self.filenames(split)[i]} ({split}) is not in the release: tried "
            f"{', '.join(map(str, tried))}. {WHERE}"
        )

    def captions(self, split: str) -> list[list[str]]:
        if (split, "captions") not in self._cache:
            out = []
            for i in range(len(self.filenames(split))):
                text = self.find(self.text_paths, split, i, "caption file").read_text(
                    encoding="utf-8", errors="replace"
                )
                out.append(
                    [line.replace("\ufffd\ufffd", " ").strip() for line in text.splitlines() if line.strip()]
                )
            self._cache[split, "captions"] = out
        return self._cache[split, "captions"]

    def bounding_boxes(self) -> dict[str, tuple[float, ...]]:
        """CUB's boxes by key (empty when its images.txt / bounding_boxes.txt are not there)."""
        folder = self.root / "CUB_200_2011"
        if not (folder / "images.txt").is_file() or not (folder / "bounding_boxes.txt").is_file():
            return {}
        keys = dict(
            line.split()[:2] for line in (folder / "images.txt").read_text().splitlines() if line.strip()
        )
        boxes = {}
        for line in (folder / "bounding_boxes.txt").read_text().splitlines():
            if line.strip():
                index, *box = line.split()
                boxes[keys[index].rsplit(".", 1)[0]] = tuple(float(v) for v in box)
        return boxes


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
