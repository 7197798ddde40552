"""Data modules that hold small data sets as tensors on the training device.

Images are kept as uint8 (N, C, H, W) and turned into floats in [-1, 1] per batch, on the device,
so the input pipeline costs one gather and one multiply-add per step.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from typing import Any

import lightning as L
import torch
import torch.nn.functional as F
from torch import Tensor

from src.errors import DataError


class TensorLoader:
    """Batches from in-memory tensors: seeded shuffling per epoch, DDP sharding, resumable position."""

    def __init__(
        self,
        x: Tensor,
        y: Tensor,
        batch_size: int,
        shuffle: bool,
        drop_last: bool,
        seed: int = 0,
        normalize: bool = True,
        rank: int = 0,
        world_size: int = 1,
    ):
        if len(x) != len(y):
            raise DataError(f"{len(x)} samples but {len(y)} labels")
        self.x, self.y = x, y
        self.batch_size, self.shuffle, self.drop_last = batch_size, shuffle, drop_last
        self.seed, self.normalize, self.rank, self.world_size = seed, normalize, rank, world_size
        self.epoch = 0  # the epoch being drawn (or last drawn)
        self.batch = 0  # batches of it taken so far, for exact resume
        self.next_epoch, self.resume_batch = 0, 0  # where the next `iter()` starts
        self.pending = False  # a restored position not drawn from yet
        # How many batches the trainer takes per epoch (limit_train_batches); None: all of them.
        self.epoch_batches: Callable[[], int | None] = lambda: None
        n = len(x) // world_size  # equal shards on every rank (DDP needs the same number of steps)
        self.per_rank = n
        if n < batch_size and drop_last:
            raise DataError(
                f"data set of {len(x)} samples gives {n} per process: fewer than data.batch_size={batch_size}"
            )

    def __len__(self) -> int:
        return self.per_rank // self.batch_size if self.drop_last else -(-self.per_rank // self.batch_size)

    def order(self, epoch: int) -> Tensor:
        if self.shuffle:
            g = torch.Generator().manual_seed(self.seed * 100_003 + epoch)
            idx = torch.randperm(len(self.x), generator=g)
        else:
            idx = torch.arange(len(self.x))
        return idx[self.rank : self.per_rank * self.world_size : self.world_size].to(self.x.device)

    def __iter__(self) -> Iterator[tuple[Tensor, Tensor]]:
        # Every `iter()` begins a new epoch with a new order, however the previous one ended:
        # exhausted, or cut short by limit_train_batches or a stop (unless resuming inside it).
        self.epoch, start = self.next_epoch, self.resume_batch
        self.next_epoch, self.resume_batch, self.batch, self.pending = self.epoch + 1, 0, start, False
        idx = self.order(self.epoch)
        for b in range(start, len(self)):
            sel = idx[b * self.batch_size : (b + 1) * self.batch_size]
            self.batch = b + 1
            yield self.make_batch(sel, b)

    def make_batch(self, sel: Tensor, b: int) -> tuple[Tensor, Tensor]:
        """Batch `b` of the epoch from the indices `sel`."""
        return self.transform(self.x[sel]), self.y[sel]

    def transform(self, x: Tensor) -> Tensor:
        if self.normalize and x.dtype == torch.uint8:
            return x.float().mul_(2 / 255).sub_(1)
        return x

    def to(self, device: torch.device | str) -> TensorLoader:
        self.x, self.y = self.x.to(device), self.y.to(device)
        return self

    def state_dict(self) -> dict[str, int]:
        """Where a resumed run continues: inside this epoch, or at the next one if the trainer has
        taken all the batches it takes per epoch."""
        if self.pending:  # restored and not drawn from since
            return {"epoch": self.next_epoch, "batch": self.resume_batch}
        taken = self.epoch_batches()
        done = self.batch >= (len(self) if taken is None else min(taken, len(self)))
        if done:
            return {"epoch": self.epoch + 1, "batch": 0}
        return {"epoch": self.epoch, "batch": self.batch}

    def load_state_dict(self, state: dict[str, int]) -> None:
        self.next_epoch, self.resume_batch, self.pending = state["epoch"], state["batch"], True


class GANDataModule(L.LightningDataModule):
    """Base for every data set. Subclasses implement `load()`; the module does the rest.

    `shape` is what the networks are built for ([C, H, W] for images, [D] for vectors): images are
    resized and converted to it once, at set-up.
    """

    def __init__(
        self,
        shape: Sequence[int],
        batch_size: int = 64,
        val_batch_size: int | None = None,
        num_classes: int | None = None,
        seed: int = 0,
        device: str = "auto",
        num_workers: int = 0,
    ):
        super().__init__()
        self.shape = tuple(int(s) for s in shape)
        if batch_size < 1:
            raise DataError(f"data.batch_size must be >= 1, got {batch_size}")
        self.batch_size = batch_size
        self.val_batch_size = val_batch_size or batch_size
        self.num_classes, self.seed, self.device_choice = num_classes, seed, device
        self.num_workers = num_workers
        self.data: dict[str, tuple[Tensor, Tensor]] = {}
        self.position: dict[str, int] | None = None  # a restored training-data position, for the next loader

    # --- what subclasses provide -------------------------------------------------------------------------
    @property
    def name(self) -> str:
        return type(self).__name__

    def load(self) -> dict[str, tuple[Tensor, Tensor]]:
        """{"train": (x, y), "val": (x, y)}: uint8 images (N, C, H, W) or float vectors; y = -1 if unlabelled."""
        raise NotImplementedError

    # --- facts the metrics registry reads (src/metrics/registry.py) ---------------------------------------
    @property
    def modes(self) -> tuple[Tensor, float] | None:
        """A Gaussian mixture's (means, std): mode coverage applies."""
        return None

    @property
    def stacked(self) -> tuple[int, int] | None:
        """Stacked digits (channels, classes per channel): stacked-mode coverage applies."""
        return None

    @property
    def classifier_data(self) -> GANDataModule:
        """The data the domain classifier (FID features, class metrics) learns from: this data set."""
        return self

    # --- Lightning -----------------------------------------------------------------------------------
    def setup(self, stage: str | None = None) -> None:
        if self.data:
            return
        data = self.load()
        for split, (x, y) in data.items():
            x = conform(x, self.shape, f"data={self.name} ({split})")
            self.data[split] = (x, y.long())
        labels = self.data["train"][1]
        if self.num_classes is not None and (labels >= 0).any():
            found = int(labels.max()) + 1
            if found > self.num_classes:
                raise DataError(
                    f"data={self.name}: labels go up to {found - 1} but data.num_classes={self.num_classes}"
                )

    def _device(self) -> torch.device:
        if self.device_choice == "cpu" or self.trainer is None:
            return torch.device("cpu")
        return self.trainer.strategy.root_device

    def _rank(self) -> tuple[int, int]:
        if self.trainer is None:
            return 0, 1
        return self.trainer.global_rank, self.trainer.world_size

    def loader(self, split: str, shuffle: bool, drop_last: bool, batch_size: int) -> TensorLoader:
        x, y = self.data[split]
        rank, world = self._rank()
        loader = TensorLoader(x, y, batch_size, shuffle, drop_last, self.seed, True, rank, world)
        return loader.to(self._device())

    def train_dataloader(self) -> TensorLoader:
        loader = self.loader("train", shuffle=True, drop_last=True, batch_size=self.batch_size)
        loader.epoch_batches = self.batches_per_epoch
        if self.position is not None:
            loader.load_state_dict(self.position)
            self.position = None
        self.train_loader = loader
        return loader

    # The data position lives in the datamodule's checkpoint state: Lightning restores the loader's own
    # state only when it resumes inside an epoch, but a run stopped by trainer.max_steps ends its epoch
    # early and an extended run must continue that epoch where it stopped.
    def state_dict(self) -> dict[str, Any]:
        loader = getattr(self, "train_loader", None)
        return {"train_position": loader.state_dict()} if isinstance(loader, TensorLoader) else {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.position = state.get("train_position")

    def batches_per_epoch(self) -> int | None:
        """Training batches the trainer takes per epoch (after limit_train_batches); None: unknown."""
        n = getattr(self.trainer, "num_training_batches", None) if self.trainer is not None else None
        return int(n) if isinstance(n, int | float) and n != float("inf") else None

    def val_dataloader(self) -> TensorLoader | list:
        if "val" not in self.data or len(self.data["val"][0]) == 0:
            return []
        return self.loader("val", shuffle=False, drop_last=False, batch_size=self.val_batch_size)

    @property
    def has_labels(self) -> bool:
        self.setup()
        return bool((self.data["train"][1] >= 0).any())

    @property
    def captioned(self) -> bool:
        """Whether batches carry caption embeddings (text-to-image data) instead of class labels."""
        return False


def conform(x: Tensor, shape: tuple[int, ...], what: str) -> Tensor:
    """Bring data to `shape`: images are resized (antialiased) and converted between 1 and 3 channels."""
    if x.dim() - 1 != len(shape):
        raise DataError(
            f"{what} has samples of shape {list(x.shape[1:])}, which cannot be made {list(shape)}"
        )
    if len(shape) == 1:
        if x.shape[1] != shape[0]:
            raise DataError(f"{what} has {x.shape[1]}-D samples but data.shape={list(shape)}")
        return x
    c, h, w = shape
    if x.shape[1] != c:
        if x.shape[1] == 1 and c == 3:
            x = x.expand(-1, 3, -1, -1).contiguous()
        elif x.shape[1] == 3 and c == 1:
            x = (x.float() * torch.tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1)).sum(1, keepdim=True)
            x = x.round().clamp(0, 255).to(torch.uint8)
        else:
            raise DataError(f"{what} has {x.shape[1]} channels; cannot convert to data.shape={list(shape)}")
    if tuple(x.shape[2:]) != (h, w):
        out = []
        for chunk in x.split(4096):
            y = F.interpolate(
                chunk.float(), size=(h, w), mode="bilinear", antialias=True, align_corners=False
            )
            out.append(y.round().clamp(0, 255).to(torch.uint8))
        x = torch.cat(out)
    return x
