"""Reading a StackGAN release folder (the preprocessed CUB / Oxford-102 captions and char-CNN-RNN embeddings):
shared by the data modules (src/data/cub.py) and the precomputed text encoder (src/text/encoders.py).
Pickles are read with an allow-list: arrays and strings only, never arbitrary objects."""

from __future__ import annotations

import pickle
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from src.errors import DataError, DataNotFoundError

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
