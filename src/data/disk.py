"""Image sets stored as files: held in memory when they are few, read from disk by DataLoader workers otherwise.

Both ways give the same pixels: every image goes through `read_image` (channel conversion, center crop,
antialiased bilinear resize to `shape`), and batches are `(x in [-1, 1], y)` with y = -1 when unlabelled.
"""

from __future__ import annotations

import math
import os
import warnings
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
import torch
from PIL import Image, ImageOps
from torch import Tensor
from torch.utils.data import DataLoader, Dataset

from src.data.base import GANDataModule, TensorLoader
from src.errors import DataError

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm", ".pgm")
# in_memory="auto" holds the images in memory up to both limits (all splits together, uint8 at data.shape).
MAX_IN_MEMORY_IMAGES = 50_000
MAX_IN_MEMORY_BYTES = 2 * 2**30

Files = dict[str, tuple[list[str], list[int]]]  # split -> (paths, labels)


def convert(img: Image.Image, channels: int) -> Image.Image:
    """To 'L' (1 channel) or 'RGB' (3) from any mode; transparent pixels are composited onto white."""
    if img.mode.startswith("I;16"):  # 16-bit grayscale: scale to 8 bits (convert() would clip at 255)
        img = Image.fromarray((np.asarray(img, dtype=np.uint32) // 257).astype(np.uint8))
    if img.mode in ("RGBA", "LA", "PA", "RGBa", "La") or "transparency" in img.info:
        img = Image.alpha_composite(Image.new("RGBA", img.size, "white"), img.convert("RGBA"))
    return img.convert("L" if channels == 1 else "RGB")


def read_image(path: str, shape: Sequence[int], crop: int | None = None) -> Tensor:
    """One image file as uint8 (C, H, W) at `shape`.

    Center crop: a `crop` x `crop` square when given (CelebA's 178), else the largest box with the aspect
    ratio of `shape`, so that images are never stretched; then an antialiased bilinear resize.
    """
    c, h, w = shape
    with Image.open(path) as img:
        img = convert(ImageOps.exif_transpose(img), c)
    width, height = img.size
    if crop:
        box_w = box_h = min(crop, width, height)
    elif width * h > height * w:
        box_w, box_h = round(height * w / h), height
    else:
        box_w, box_h = width, round(width * h / w)
    left, top = round((width - box_w) / 2), round((height - box_h) / 2)
    img = img.crop((left, top, left + box_w, top + box_h)).resize((w, h), Image.Resampling.BILINEAR)
    x = torch.from_numpy(np.array(img, dtype=np.uint8))
    return x.unsqueeze(0) if x.dim() == 2 else x.permute(2, 0, 1).contiguous()


def verify_image(path: str) -> None:
    with Image.open(path) as img:
        img.verify()


class ImageFiles(Dataset):
    """Images read from their files at every access, as (x in [-1, 1] float (C, H, W), label)."""

    def __init__(self, paths: list[str], labels: list[int], shape: Sequence[int], crop: int | None = None):
        self.paths, self.labels = paths, torch.tensor(labels, dtype=torch.long)
        self.shape, self.crop = tuple(shape), crop

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> tuple[Tensor, Tensor]:
        # The set-up scan (PIL verify) misses truncated image data: rather than stop a long run on one bad
        # file, serve the next readable image and say which file was skipped.
        tries = min(len(self), 10)
        for j in range(i, i + tries):
            j %= len(self)
            try:
                x = read_image(self.paths[j], self.shape, self.crop)
            except Exception as e:
                warnings.warn(f"could not read {self.paths[j]} ({e}); serving the next image", stacklevel=2)
                continue
            return x.float().mul_(2 / 255).sub_(1), self.labels[j]
        raise OSError(f"{self.paths[i]} and the {tries - 1} files after it could not be read as images")


class ImageFilesModule(GANDataModule):
    """Base for image sets listed by `list_files()`: in memory when small, otherwise read from disk.

    `in_memory="auto"` holds the images in memory (uint8 on the training device, as every other data set)
    when all splits together have at most 50,000 images that take at most 2 GiB as uint8 at `shape`;
    otherwise each epoch reads them from disk with `num_workers` DataLoader processes. Files that cannot
    be read are skipped with one warning (count and first paths). The disk loaders are plain DataLoaders,
    so under DDP Lightning gives each process its own shard through a DistributedSampler.
    """

    verify_files = True  # scan every file with PIL verify() at set-up when reading from disk

    def __init__(
        self, shape: Sequence[int], in_memory: bool | str = "auto", crop: int | None = None, **kwargs
    ):
        super().__init__(shape, **kwargs)
        if len(self.shape) != 3 or self.shape[0] not in (1, 3):
            raise DataError(f"data={self.name}: data.shape must be [1 or 3, H, W], got {list(self.shape)}")
        if in_memory not in ("auto", True, False):
            raise DataError(
                f"data={self.name}: data.in_memory must be auto, true or false, got {in_memory!r}"
            )
        self.in_memory, self.crop = in_memory, crop
        self.datasets: dict[str, ImageFiles] = {}
        self._files: Files | None = None

    def list_files(self) -> Files:
        """{"train": (paths, labels), "val": (paths, labels)}; labels are -1 when unlabelled."""
        raise NotImplementedError

    def files(self) -> Files:
        if self._files is None:
            self._files = self.list_files()
        return self._files

    def keep_in_memory(self) -> bool:
        if self.in_memory != "auto":
            return bool(self.in_memory)
        n = sum(len(paths) for paths, _ in self.files().values())
        return n <= MAX_IN_MEMORY_IMAGES and n * math.prod(self.shape) <= MAX_IN_MEMORY_BYTES

    def readable(self, read: Callable[[str], Any]) -> dict[str, tuple[list[str], list[int], list[Any]]]:
        """Apply `read` to every file (threads), drop the files it fails on, and warn once about them."""
        files = self.files()
        everything = [p for paths, _ in files.values() for p in paths]
        with ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 1)) as pool:
            results = list(pool.map(lambda p: _attempt(read, p), everything))
        failed = [(p, r) for p, r in zip(everything, results) if isinstance(r, Exception)]
        if len(failed) == len(everything):
            raise DataError(
                f"data={self.name}: none of the {len(everything)} image files could be read "
                f"(first: {failed[0][0]}: {failed[0][1]})"
            )
        if failed:
            first = ", ".join(p for p, _ in failed[:5])
            more = f" and {len(failed) - 5} more" if len(failed) > 5 else ""
            warnings.warn(
                f"data={self.name}: skipped {len(failed)} of {len(everything)} files that could not be read "
                f"as images: {first}{more}",
                stacklevel=2,
            )
        out, start = {}, 0
        for split, (paths, labels) in files.items():
            chunk = results[start : start + len(paths)]
            start += len(paths)
            keep = [i for i, r in enumerate(chunk) if not isinstance(r, Exception)]
            out[split] = ([paths[i] for i in keep], [labels[i] for i in keep], [chunk[i] for i in keep])
        return out

    def load(self) -> dict[str, tuple[Tensor, Tensor]]:
        out = {}
        read = lambda path: read_image(path, self.shape, self.crop)  # noqa: E731
        for split, (_, labels, images) in self.readable(read).items():
            x = torch.stack(images) if images else torch.empty(0, *self.shape, dtype=torch.uint8)
            out[split] = (x, torch.tensor(labels, dtype=torch.long))
        return out

    def setup(self, stage: str | None = None) -> None:
        if self.data or self.datasets:
            return
        if self.keep_in_memory():
            super().setup(stage)
            return
        if self.verify_files:
            checked = self.readable(verify_image)
        else:
            checked = {split: (paths, labels, []) for split, (paths, labels) in self.files().items()}
        for split, (paths, labels, _) in checked.items():
            self.datasets[split] = ImageFiles(paths, labels, self.shape, self.crop)

    # --- loaders ---------------------------------------------------------------------------------------
    def disk_loader(self, split: str, shuffle: bool, drop_last: bool, batch_size: int) -> DataLoader:
        dataset = self.datasets[split]
        _, world = self._rank()
        if drop_last and len(dataset) // world < batch_size:
            raise DataError(
                f"data={self.name}: {len(dataset)} {split} images give {len(dataset) // world} per process: "
                f"fewer than data.batch_size={batch_size}"
            )
        return DataLoader(
            dataset,
            batch_size=batch_size,
            shuffle=shuffle,
            drop_last=drop_last,
            num_workers=self.num_workers,
            persistent_workers=self.num_workers > 0,
            pin_memory=self._device().type == "cuda",
        )

    def train_dataloader(self) -> TensorLoader | DataLoader:
        if not self.datasets:
            return super().train_dataloader()
        return self.disk_loader("train", shuffle=True, drop_last=True, batch_size=self.batch_size)

    def val_dataloader(self) -> TensorLoader | DataLoader | list:
        if not self.datasets:
            return super().val_dataloader()
        if len(self.datasets.get("val", ())) == 0:
            return []
        return self.disk_loader("val", shuffle=False, drop_last=False, batch_size=self.val_batch_size)

    @property
    def has_labels(self) -> bool:
        self.setup()
        if self.datasets:
            return bool((self.datasets["train"].labels >= 0).any())
        return super().has_labels


def _attempt(read: Callable[[str], Any], path: str) -> Any:
    try:
        return read(path)
    except Exception as e:  # PIL raises many types for broken files (OSError, SyntaxError, ValueError ...)
        return e
