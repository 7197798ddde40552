"""Any folder of images: `python -m src.train data=image_folder data.path=/my/images`."""

from __future__ import annotations

import os
import warnings
from collections.abc import Sequence
from pathlib import Path

import torch

from src.data.disk import IMAGE_EXTENSIONS, Files, ImageFilesModule
from src.errors import DataError, DataNotFoundError


class ImageFolder(ImageFilesModule):
    """The images under `path`, searched recursively.

    Rules:
    - files ending in .jpg .jpeg .png .bmp .gif .webp .tif .tiff .ppm .pgm (any case) are read; other files
      and hidden files or folders (names starting with '.') are ignored;
    - every image is converted to `shape[0]` channels (1: grayscale 'L', 3: 'RGB'; RGBA, palette, CMYK and
      grayscale images are converted, transparent pixels composited onto white), center-cropped to the
      aspect ratio of `shape` and resized to it, so folders of mixed modes and sizes are fine;
    - `labels=True`: each immediate sub-folder of `path` (sorted by name) is a class; images directly in
      `path` are skipped with a warning. `labels=False`: unlabelled, y = -1;
    - `val_fraction` of the images (chosen with seed 0 whatever the run's seed) form the "val" split;
    - files that cannot be read are skipped with one warning giving their count and the first paths;
    - a missing path, a folder without images, a folder where no image can be read, or `labels=True` on a
      folder without sub-folders is an error;
    - in memory or from disk: see `ImageFilesModule` (auto: in memory up to 50,000 images and 2 GiB).
    """

    def __init__(
        self,
        path: str,
        shape: Sequence[int] = (3, 64, 64),
        labels: bool = False,
        val_fraction: float = 0.05,
        in_memory: bool | str = "auto",
        **kwargs,
    ):
        super().__init__(shape, in_memory=in_memory, **kwargs)
        if not 0 <= val_fraction < 1:
            raise DataError(f"data=image_folder: data.val_fraction must be in [0, 1), got {val_fraction}")
        self.path, self.labels, self.val_fraction = Path(path).expanduser(), labels, val_fraction

    @property
    def name(self) -> str:
        return "image_folder"

    def list_files(self) -> Files:
        root = self.path
        if not root.is_dir():
            what = "is not a folder" if root.exists() else "does not exist"
            raise DataNotFoundError(
                f"data=image_folder: data.path={root} {what}; expected a folder of images"
            )
        if self.labels:
            paths, labels = self.class_files(root)
        else:
            paths = find_images(root)
            labels = [-1] * len(paths)
        if not paths:
            raise DataNotFoundError(
                f"data=image_folder: no images in {root} (searched recursively for files ending in "
                f"{' '.join(IMAGE_EXTENSIONS)})"
            )
        g = torch.Generator().manual_seed(0)
        order = torch.randperm(len(paths), generator=g).tolist()
        n_val = int(len(paths) * self.val_fraction)
        split = {"train": sorted(order[n_val:]), "val": sorted(order[:n_val])}
        return {name: ([paths[i] for i in idx], [labels[i] for i in idx]) for name, idx in split.items()}

    def class_files(self, root: Path) -> tuple[list[str], list[int]]:
        """The images of each immediate sub-folder (sorted by name), labelled by the folder's rank."""
        classes = sorted(d.name for d in root.iterdir() if d.is_dir() and not d.name.startswith("."))
        if not classes:
            raise DataError(
                f"data=image_folder: data.labels=true takes each sub-folder of {root} as a class, but it "
                "has no sub-folders; put the images in one folder per class or set data.labels=false"
            )
        if self.num_classes is not None and self.num_classes != len(classes):
            raise DataError(
                f"data=image_folder: data.num_classes={self.num_classes} but {root} has {len(classes)} "
                f"class folders ({', '.join(classes)})"
            )
        self.num_classes = len(classes)
        paths, labels = [], []
        for k, name in enumerate(classes):
            found = find_images(root / name)
            paths += found
            labels += [k] * len(found)
        loose = [p for p in os.listdir(root) if p.lower().endswith(IMAGE_EXTENSIONS) and (root / p).is_file()]
        if loose:
            warnings.warn(
                "data=image_folder: with data.labels=true only images inside a class folder are used; "
                f"skipped {len(loose)} directly in {root}",
                stacklevel=2,
            )
        return paths, labels


def find_images(folder: Path) -> list[str]:
    """Image files under `folder`, recursively, sorted; hidden files and folders are left out."""
    found = []
    for parent, dirs, names in os.walk(folder, followlinks=True):
        dirs[:] = [d for d in dirs if not d.startswith(".")]
        names = [n for n in names if not n.startswith(".") and n.lower().endswith(IMAGE_EXTENSIONS)]
        found += [os.path.join(parent, n) for n in names]
    return sorted(found)
