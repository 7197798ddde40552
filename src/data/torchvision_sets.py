"""The torchvision data sets: MNIST, Fashion-MNIST and CIFAR-10 held in memory, CelebA from its image files.

Files are looked for under `root` in torchvision's layout and downloaded there when missing and
`download=True`. Whatever stops them being found, downloaded or read raises `DataNotFoundError`, naming
the data set, the folder, the files expected and what to do. Every network operation is bounded by
`NETWORK_TIMEOUT_S`, so a machine without internet fails in seconds instead of hanging.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
import torchvision.datasets as tv
from torch import Tensor

from src.data.base import GANDataModule
from src.data.disk import Files, ImageFilesModule
from src.errors import DataError, DataNotFoundError
from src.utils.network import network_timeout

NETWORK_TIMEOUT_S = 10.0


class TorchvisionFiles:
    """Where a torchvision data set keeps its files under `root`, and opening it with clear errors."""

    key = ""  # data=<key>
    title = ""  # the data set's name, as torchvision.datasets spells its class
    root: Path
    download: bool

    def folder(self) -> Path:
        raise NotImplementedError

    def expected(self) -> list[str]:
        raise NotImplementedError

    def fix(self) -> str:
        sub = self.folder().relative_to(self.root).parts[0]
        return (
            f"To fix: on a machine with internet run `python -c 'import torchvision; "
            f'torchvision.datasets.{self.title}("data", download=True)\'` and copy data/{sub}/ to '
            f"{self.root}/, or set data.root to a folder that holds {sub}/."
        )

    def missing(self) -> list[str]:
        return [f for f in self.expected() if not (self.folder() / f).exists()]

    def open(self, split: str) -> Any:
        raise NotImplementedError

    def open_with(self, make: Callable[[bool], Any]) -> Any:
        """`make(download)`, a torchvision constructor, with any failure turned into a DataNotFoundError."""
        try:
            with network_timeout(NETWORK_TIMEOUT_S):
                return make(self.download)
        # torchvision raises RuntimeError for missing or corrupt files, the network OSError (URLError, timeouts)
        except (RuntimeError, OSError) as e:
            missing, expected = self.missing(), self.expected()
            cause = " ".join(str(e).split())[:400].rstrip(".") or type(e).__name__
            if not missing:
                problem = (
                    f"The files are there but could not be read ({cause}): a partial download? Delete them."
                )
            else:
                problem = (
                    "None of them is there." if missing == expected else f"Missing: {', '.join(missing)}."
                )
                problem += f" Downloading failed: {cause}." if self.download else " data.download=false."
            raise DataNotFoundError(
                f"data={self.key}: {self.title} not found in {self.folder()} "
                f"(expected {', '.join(expected)}). {problem} {self.fix()}"
            ) from e

    def prepare_data(self) -> None:
        # Lightning calls this on one process per node before `setup`, so DDP processes do not all download.
        if self.download and self.missing():
            self.open("train")


class TorchvisionImages(TorchvisionFiles, GANDataModule):
    """A torchvision image set held in memory: its train split for training, its official test split as "val"."""

    def __init__(
        self, root: str = "data", download: bool = True, shape: Sequence[int] = (1, 28, 28), **kwargs
    ):
        super().__init__(shape, **kwargs)
        self.root, self.download = Path(root).expanduser().absolute(), download

    @property
    def name(self) -> str:
        return self.key

    def open(self, split: str) -> Any:
        cls = getattr(tv, self.title)
        return self.open_with(lambda download: cls(str(self.root), train=split == "train", download=download))

    def load(self) -> dict[str, tuple[Tensor, Tensor]]:
        out = {}
        for split, source in (("train", "train"), ("val", "test")):
            ds = self.open(source)
            x = torch.as_tensor(ds.data)
            x = x.unsqueeze(1) if x.dim() == 3 else x.permute(0, 3, 1, 2)  # (N, H, W) or (N, H, W, C)
            out[split] = (x.contiguous(), torch.as_tensor(ds.targets, dtype=torch.long))
        return out


class MNIST(TorchvisionImages):
    key, title = "mnist", "MNIST"

    def folder(self) -> Path:
        return self.root / self.title / "raw"

    def expected(self) -> list[str]:
        return [os.path.splitext(name)[0] for name, _ in getattr(tv, self.title).resources]


class FashionMNIST(MNIST):
    key, title = "fashion_mnist", "FashionMNIST"


class CIFAR10(TorchvisionImages):
    key, title = "cifar10", "CIFAR10"

    def __init__(self, shape: Sequence[int] = (3, 32, 32), **kwargs):
        super().__init__(shape=shape, **kwargs)

    def folder(self) -> Path:
        return self.root / tv.CIFAR10.base_folder

    def expected(self) -> list[str]:
        batches = tv.CIFAR10.train_list + tv.CIFAR10.test_list
        return [name for name, _ in batches] + [tv.CIFAR10.meta["filename"]]


class CelebA(TorchvisionFiles, ImageFilesModule):
    """CelebA's aligned faces: split "train" for training, "valid" as "val"; center crop `crop`, then resize.

    Unlabelled (y = -1) unless `label_attr` names one of the 40 binary attributes (index or name, e.g.
    "Smiling"), which then is the label (0/1, num_classes 2). 162,770 training images: by default they are
    read from disk by DataLoader workers (see `ImageFilesModule` for the in-memory rule).
    """

    key, title = "celeba", "CelebA"
    verify_files = False  # a known set: `list_files` checks instead that every listed image is there

    def __init__(
        self,
        root: str = "data",
        download: bool = True,
        shape: Sequence[int] = (3, 64, 64),
        crop: int | None = 178,
        label_attr: int | str | None = None,
        in_memory: bool | str = "auto",
        **kwargs,
    ):
        super().__init__(shape, in_memory=in_memory, crop=crop, **kwargs)
        self.root, self.download, self.label_attr = Path(root).expanduser().absolute(), download, label_attr
        if label_attr is not None and self.num_classes is None:
            self.num_classes = 2

    @property
    def name(self) -> str:
        return self.key

    def folder(self) -> Path:
        return self.root / tv.CelebA.base_folder

    def expected(self) -> list[str]:
        lists = [name for _, _, name in tv.CelebA.file_list if not name.endswith(".zip")]
        return [*lists, "img_align_celeba"]

    def fix(self) -> str:
        folder, lists = self.folder(), ", ".join(self.expected()[:-1])
        return (
            "Google Drive often refuses these downloads (quota; torchvision also needs `pip install gdown`). "
            "To fix by hand: get img_align_celeba.zip and the list files from "
            "https://mmlab.ie.cuhk.edu.hk/projects/CelebA.html (its Google Drive, or a mirror), unzip the "
            f"images so that {folder}/img_align_celeba/000001.jpg exists, and put {lists} (the original "
            f"files: torchvision checks their md5) in {folder}/; or set data.root to a folder holding celeba/."
        )

    def open(self, split: str) -> Any:
        return self.open_with(
            lambda download: tv.CelebA(str(self.root), split=split, target_type="attr", download=download)
        )

    def attr_column(self, names: list[str]) -> int | None:
        names = [n for n in names if n]  # the header line ends with a space, which reads as an empty name
        if self.label_attr is None:
            return None
        if isinstance(self.label_attr, int) and 0 <= self.label_attr < len(names):
            return self.label_attr
        if self.label_attr in names:
            return names.index(self.label_attr)
        raise DataError(
            f"data=celeba: data.label_attr={self.label_attr!r} is not a CelebA attribute: give an index 0-{len(names) - 1} "
            f"or one of {', '.join(names)}"
        )

    def list_files(self) -> Files:
        images = self.folder() / "img_align_celeba"
        out = {}
        for split, source in (("train", "train"), ("val", "valid")):
            ds = self.open(source)
            column = self.attr_column(ds.attr_names)
            labels = ds.attr[:, column].tolist() if column is not None else [-1] * len(ds.filename)
            out[split] = ([str(images / f) for f in ds.filename], labels)
        present = set(os.listdir(images))
        listed = [p for paths, _ in out.values() for p in paths]
        missing = [p for p in listed if os.path.basename(p) not in present]
        if missing:
            raise DataNotFoundError(
                f"data=celeba: {len(missing)} of the {len(listed)} images listed in "
                f"{self.folder()}/list_eval_partition.txt are not in {images} (first: {missing[0]}): "
                f"an incomplete unzip of img_align_celeba.zip? {self.fix()}"
            )
        return out
