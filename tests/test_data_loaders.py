"""The real data sets on tiny fabricated copies of their on-disk formats: no test touches the network."""

from __future__ import annotations

import math
import os
import pickle
import socket
import struct
import threading
import time
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision.datasets as tv
from conftest import make_cfg, run_train
from omegaconf.errors import MissingMandatoryValue
from PIL import Image
from torch.utils.data import DataLoader

import src.data.disk as disk
import src.data.torchvision_sets as tvs
from src.build import build_datamodule
from src.data.image_folder import ImageFolder
from src.errors import DataNotFoundError


def datamodule(overrides: list[str], tmp_path: Path):
    dm = build_datamodule(make_cfg(overrides, tmp_path / "run"))
    dm.setup()
    return dm


def exists_only(fpath, md5=None) -> bool:
    return os.path.isfile(fpath)


@pytest.fixture
def no_md5(monkeypatch):
    # torchvision md5-checks the CIFAR-10 batches and the CelebA list files against the real ones; fabricated
    # copies cannot match, so only that check is replaced by "the file exists".
    monkeypatch.setattr(tv.cifar, "check_integrity", exists_only)
    monkeypatch.setattr(tv.celeba, "check_integrity", exists_only)


def from_data(xb: torch.Tensor, yb: torch.Tensor, x: torch.Tensor, y: torch.Tensor) -> bool:
    """Whether each batch sample is one of the uint8 images `x`, scaled by hand to v / 127.5 - 1, with its label."""
    scaled = x.double().flatten(1) / 127.5 - 1
    gap = (xb.double().flatten(1)[:, None] - scaled[None]).abs().amax(2)  # (batch, data set)
    return bool(((gap < 1e-6) & (yb[:, None] == y[None])).any(1).all())


# --- fabricated on-disk formats ---------------------------------------------------------------------------
def write_idx(path: Path, array: np.ndarray) -> None:
    """The MNIST idx-ubyte format: magic 0x0800 + ndim, big-endian sizes, then the uint8 data."""
    header = struct.pack(">I", 0x0800 + array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    path.write_bytes(header + np.ascontiguousarray(array, dtype=np.uint8).tobytes())


def fake_mnist(root: Path, folder: str = "MNIST", n_train: int = 40, n_test: int = 10) -> dict:
    raw = root / folder / "raw"
    raw.mkdir(parents=True)
    rng = np.random.default_rng(0)
    out = {}
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        x = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)
        x[:, 0, 0], x[:, 0, 1] = 0, 255
        y = (np.arange(n) * 3 % 10).astype(np.uint8)
        write_idx(raw / f"{prefix}-images-idx3-ubyte", x)
        write_idx(raw / f"{prefix}-labels-idx1-ubyte", y)
        out[prefix] = (torch.from_numpy(x), torch.from_numpy(y).long())
    return out


def fake_cifar(root: Path, per_batch: int = 6) -> dict:
    """Python pickles of {"data": (n, 3072) uint8 rows in CHW order, "labels": [...]}, as the real batches."""
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    out = {}
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        x = rng.integers(0, 256, (per_batch, 3072), dtype=np.uint8)
        y = rng.integers(0, 10, per_batch).tolist()
        (folder / name).write_bytes(pickle.dumps({"data": x, "labels": y}))
        out[name] = (torch.from_numpy(x).view(-1, 3, 32, 32), torch.tensor(y))
    (folder / "batches.meta").write_bytes(pickle.dumps({"label_names": [f"class{i}" for i in range(10)]}))
    return out


CELEBA_ATTRS = [f"Attr_{i}" for i in range(40)]
CELEBA_ATTRS[31] = "Smiling"


def fake_celeba(root: Path, partition=(0, 0, 0, 0, 0, 0, 1, 1, 2)) -> list[int]:
    """img_align_celeba/*.jpg (178x218: green, a blue 100x100 square in the middle) and the five list files."""
    folder = root / "celeba"
    (folder / "img_align_celeba").mkdir(parents=True)
    names = [f"{i + 1:06d}.jpg" for i in range(len(partition))]
    image = np.zeros((218, 178, 3), np.uint8)
    image[..., 1] = 255
    image[59:159, 39:139] = (0, 0, 255)
    for name in names:
        Image.fromarray(image).save(folder / "img_align_celeba" / name, quality=95)
    smiling = [i % 2 for i in range(len(names))]
    rows = lambda values: "".join(f"{n} {' '.join(map(str, v))}\n" for n, v in zip(names, values))  # noqa: E731
    count = f"{len(names)}\n"
    (folder / "list_eval_partition.txt").write_text(rows([[p] for p in partition]))
    (folder / "identity_CelebA.txt").write_text(rows([[i + 1] for i in range(len(names))]))
    (folder / "list_bbox_celeba.txt").write_text(
        count + "image_id x_1 y_1 width height\n" + rows([[1, 2, 3, 4]] * len(names))
    )
    marks = " ".join(f"p{i}" for i in range(10))
    (folder / "list_landmarks_align_celeba.txt").write_text(
        count + marks + "\n" + rows([list(range(10))] * len(names))
    )
    attrs = [[1 if (j == 31 and s) else -1 for j in range(40)] for s in smiling]
    (folder / "list_attr_celeba.txt").write_text(count + " ".join(CELEBA_ATTRS) + " \n" + rows(attrs))
    return smiling


def save(path: Path, img: Image.Image, **kwargs) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    img.save(path, **kwargs)
    return path


def fake_folder(root: Path) -> dict:
    """Two classes, nested, in mixed modes and sizes, plus a corrupt file, a text file and a hidden folder."""
    gray = Image.new("L", (50, 40), 77)
    cats = [
        save(root / "cats" / "a.png", Image.new("RGB", (40, 30), (200, 10, 10))),
        save(root / "cats" / "deep" / "b.png", Image.new("RGBA", (20, 20), (255, 0, 0, 0))),  # transparent
        save(root / "cats" / "c.gif", Image.new("RGB", (24, 24), (0, 0, 250)).convert("P")),
        save(root / "cats" / "d.jpg", Image.new("CMYK", (30, 30), (0, 255, 255, 0))),
        save(root / "cats" / "e.PNG", gray),
        save(root / "cats" / "f.bmp", Image.new("RGB", (16, 64), (10, 200, 10))),
    ]
    dogs = [save(root / "dogs" / f"{i}.jpg", Image.new("RGB", (33, 33), (10, 10, 20 * i))) for i in range(6)]
    bad = root / "cats" / "broken.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n this is not an image")
    (root / "notes.txt").write_text("not an image")
    save(root / ".cache" / "thumb.png", gray)
    return {"cats": cats, "dogs": dogs, "bad": bad}


# --- MNIST, Fashion-MNIST, CIFAR-10 ----------------------------------------------------------------------
@pytest.mark.parametrize("key,folder", [("mnist", "MNIST"), ("fashion_mnist", "FashionMNIST")])
def test_mnist_sets_read_idx_files(tmp_path, key, folder):
    made = fake_mnist(tmp_path / "data", folder)
    root = f"data.root={tmp_path / 'data'}"
    dm = datamodule([f"data={key}", root, "data.download=false", "data.batch_size=8"], tmp_path)
    x, y = dm.data["train"]
    assert x.dtype == torch.uint8 and torch.equal(x, made["train"][0].unsqueeze(1))
    assert torch.equal(y, made["train"][1]) and torch.equal(dm.data["val"][1], made["t10k"][1])
    xb, yb = next(iter(dm.train_dataloader()))
    assert xb.shape == (8, 1, 28, 28) and xb.dtype == torch.float32 and yb.dtype == torch.long
    assert xb.min() == -1 and xb.max() == 1

    resized = datamodule([f"data={key}", root, "data.shape=[3,32,32]", "data.batch_size=8"], tmp_path)
    xb, _ = next(iter(resized.train_dataloader()))
    assert xb.shape == (8, 3, 32, 32) and torch.equal(xb[:, 0], xb[:, 2])


def test_cifar10_reads_python_batches(tmp_path, no_md5):
    made = fake_cifar(tmp_path)
    dm = datamodule(
        ["data=cifar10", f"data.root={tmp_path}", "data.download=false", "data.batch_size=4"], tmp_path
    )
    train = [made[f"data_batch_{i}"] for i in range(1, 6)]
    assert torch.equal(dm.data["train"][0], torch.cat([x for x, _ in train]))
    assert torch.equal(dm.data["train"][1], torch.cat([y for _, y in train]))
    assert torch.equal(dm.data["val"][0], made["test_batch"][0])
    xb, yb = next(iter(dm.train_dataloader()))
    assert xb.shape == (4, 3, 32, 32) and xb.dtype == torch.float32
    assert from_data(xb, yb, *(torch.cat(parts) for parts in zip(*train)))

    gray = datamodule(["data=cifar10", f"data.root={tmp_path}", "data.shape=[1,16,16]"], tmp_path)
    assert gray.data["train"][0].shape == (30, 1, 16, 16)


def test_cifar10_with_wrong_checksums_says_so(tmp_path):
    fake_cifar(tmp_path)  # the real md5 check is left in place: the fabricated batches fail it
    with pytest.raises(
        DataNotFoundError, match=r"CIFAR10 not found .* files are there but could not be read"
    ):
        datamodule(["data=cifar10", f"data.root={tmp_path}", "data.download=false"], tmp_path)


@pytest.mark.parametrize(
    "key,folder,expected",
    [
        ("mnist", "MNIST/raw", "train-images-idx3-ubyte"),
        ("fashion_mnist", "FashionMNIST/raw", "t10k-labels-idx1-ubyte"),
        ("cifar10", "cifar-10-batches-py", "data_batch_1"),
        ("celeba", "celeba", "list_eval_partition.txt"),
    ],
)
def test_missing_data_names_set_folder_and_files(tmp_path, key, folder, expected):
    root = tmp_path / "empty"
    with pytest.raises(DataNotFoundError) as err:
        datamodule([f"data={key}", f"data.root={root}", "data.download=false"], tmp_path)
    message = str(err.value)
    assert f"data={key}:" in message and str(root / folder) in message and expected in message
    assert "data.download=false" in message and "data.root" in message
    assert isinstance(err.value, FileNotFoundError)


def test_download_without_network_fails_fast(tmp_path, monkeypatch):
    # A local server that accepts connections and never answers: a download hangs unless the timeout works.
    # It closes after 20 s, so a broken timeout makes this test fail rather than hang.
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(8)
    closer = threading.Timer(20, server.close)
    closer.start()
    monkeypatch.setattr(tv.MNIST, "mirrors", [f"http://127.0.0.1:{server.getsockname()[1]}/"])
    monkeypatch.setattr(tvs, "NETWORK_TIMEOUT_S", 1.0)
    dm = tvs.MNIST(root=str(tmp_path), download=True)
    start = time.perf_counter()
    try:
        with pytest.raises(DataNotFoundError) as err:
            dm.prepare_data()
    finally:
        closer.cancel()
        server.close()
    assert time.perf_counter() - start < 10
    message = str(err.value)
    assert "data=mnist: MNIST not found in" in message and str(tmp_path / "MNIST" / "raw") in message
    assert "Downloading failed" in message and "timed out" in message
    assert socket.getdefaulttimeout() is None


# --- CelebA --------------------------------------------------------------------------------------------------
def test_celeba_reads_aligned_faces(tmp_path, no_md5):
    smiling = fake_celeba(tmp_path)
    base = ["data=celeba", f"data.root={tmp_path}", "data.download=false", "data.batch_size=4"]
    dm = datamodule(base, tmp_path)
    x, y = dm.data["train"]
    assert x.shape == (6, 3, 64, 64) and len(dm.data["val"][0]) == 2 and (y == -1).all()
    assert x[:, 1, 0, 0].float().mean() > 200  # crop 178 keeps the green border around the blue square
    xb, yb = next(iter(dm.train_dataloader()))
    assert xb.shape == (4, 3, 64, 64) and xb.dtype == torch.float32 and (yb == -1).all()

    square = datamodule([*base, "data.crop=100", "data.shape=[3,32,32]"], tmp_path).data["train"][0].float()
    assert square[:, 2].mean() > 240 and square[:, 1].mean() < 15  # only the blue square is left

    for attr in ("Smiling", "31"):
        labelled = datamodule([*base, f"data.label_attr={attr}"], tmp_path)
        assert labelled.data["train"][1].tolist() == smiling[:6] and labelled.num_classes == 2
    with pytest.raises(ValueError, match="data.label_attr=.Frowning. is not a CelebA attribute"):
        datamodule([*base, "data.label_attr=Frowning"], tmp_path)

    (tmp_path / "celeba" / "img_align_celeba" / "000003.jpg").unlink()
    with pytest.raises(DataNotFoundError, match=r"1 of the 8 images listed .* are not in .*img_align_celeba"):
        datamodule(base, tmp_path)


# --- image folders -----------------------------------------------------------------------------------------
def test_image_folder_classes_modes_and_corrupt_files(tmp_path):
    made = fake_folder(tmp_path / "imgs")
    overrides = [
        "data=image_folder",
        f"data.path={tmp_path / 'imgs'}",
        "data.labels=true",
        "data.val_fraction=0",
    ]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        dm = datamodule([*overrides, "data.shape=[3,16,16]", "data.batch_size=4"], tmp_path)
    skipped = [str(w.message) for w in caught if "skipped" in str(w.message)]
    assert len(skipped) == 1 and "skipped 1 of 13 files" in skipped[0] and str(made["bad"]) in skipped[0]
    x, y = dm.data["train"]
    assert x.shape == (12, 3, 16, 16) and x.dtype == torch.uint8 and dm.num_classes == 2
    assert y.tolist() == [0] * 6 + [1] * 6  # cats, dogs: sorted sub-folders
    by_name = dict(zip(sorted(str(p) for p in made["cats"]), x[:6]))
    assert (by_name[str(made["cats"][1])] == 255).all()  # transparent RGBA -> white
    assert by_name[str(made["cats"][4])].unique().tolist() == [77]  # grayscale 'L' -> RGB
    assert by_name[str(made["cats"][2])][2].float().mean() > 240  # palette image
    assert by_name[str(made["cats"][3])][0].float().mean() > 200  # CMYK (0, 255, 255, 0) is red
    xb, yb = next(iter(dm.train_dataloader()))
    assert xb.shape == (4, 3, 16, 16) and xb.dtype == torch.float32 and from_data(xb, yb, x, y)

    gray = datamodule([*overrides, "data.shape=[1,8,8]", "data.labels=false"], tmp_path)
    assert gray.data["train"][0].shape == (12, 1, 8, 8) and (gray.data["train"][1] == -1).all()
    split = datamodule(
        ["data=image_folder", f"data.path={tmp_path / 'imgs'}", "data.val_fraction=0.25"], tmp_path
    )
    assert len(split.data["train"][0]) == 9 and len(split.data["val"][0]) == 3


def test_image_folder_from_disk_matches_memory(tmp_path, monkeypatch):
    fake_folder(tmp_path / "imgs")
    base = [
        "data=image_folder",
        f"data.path={tmp_path / 'imgs'}",
        "data.shape=[3,16,16]",
        "data.val_fraction=0.5",
    ]
    with pytest.warns(UserWarning, match="skipped 1 of 13"):
        on_disk = datamodule(
            [*base, "data.in_memory=false", "data.batch_size=4", "data.num_workers=0"], tmp_path
        )
    assert not on_disk.data
    loader = on_disk.train_dataloader()
    assert isinstance(loader, DataLoader) and loader.drop_last and len(loader) == len(loader.dataset) // 4
    xb, yb = next(iter(loader))
    assert xb.shape == (4, 3, 16, 16) and xb.dtype == torch.float32 and (yb == -1).all()

    # A truncated JPEG passes the set-up scan (PIL verify) and fails when decoded: the disk loader serves the
    # next image instead, the in-memory load skips it.
    val = on_disk.datasets["val"]
    i = next(j for j, p in enumerate(val.paths) if p.endswith(".jpg"))
    Path(val.paths[i]).write_bytes(Path(val.paths[i]).read_bytes()[:-20])
    with pytest.warns(UserWarning, match=f"could not read {val.paths[i]}"):
        assert torch.equal(val[i][0], val[(i + 1) % len(val)][0])
    with pytest.warns(UserWarning, match="skipped 2 of 13"):
        in_memory = datamodule(base, tmp_path)
    from_disk = torch.stack([val[j][0] for j in range(len(val)) if j != i])
    assert torch.equal(from_disk, in_memory.data["val"][0].float() * (2 / 255) - 1)
    assert from_data(xb, yb, *in_memory.data["train"])  # the disk loader's batch: train images, same pixels

    monkeypatch.setattr(disk, "MAX_IN_MEMORY_IMAGES", 5)
    with pytest.warns(UserWarning, match="skipped 1 of 13"):
        assert datamodule(base, tmp_path).datasets  # auto: 13 files > 5, so from disk


def test_image_folder_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match=f"data.path={tmp_path / 'nope'} does not exist"):
        ImageFolder(tmp_path / "nope").setup()
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "readme.md").write_text("no images")
    with pytest.raises(FileNotFoundError, match=r"no images in .*empty \(searched recursively for .*\.png"):
        ImageFolder(tmp_path / "empty").setup()
    save(tmp_path / "flat" / "a.png", Image.new("RGB", (8, 8)))
    with pytest.raises(ValueError, match=r"labels=true .* sub-folder .*flat.* has no sub-folders"):
        ImageFolder(tmp_path / "flat", labels=True).setup()
    for name in ("a.png", "b.jpg"):
        save(tmp_path / "broken" / name, Image.new("RGB", (8, 8)))
        (tmp_path / "broken" / name).write_bytes(b"garbage")
    with pytest.raises(ValueError, match=r"none of the 2 image files could be read \(first: .*broken"):
        ImageFolder(tmp_path / "broken").setup()
    fake_folder(tmp_path / "imgs")
    with pytest.raises(ValueError, match=r"data.num_classes=3 but .*imgs has 2 class folders \(cats, dogs\)"):
        ImageFolder(tmp_path / "imgs", labels=True, num_classes=3).setup()
    save(tmp_path / "imgs" / "loose.png", Image.new("RGB", (8, 8)))
    with pytest.warns(
        UserWarning, match=r"only images inside a class folder are used; skipped 1 directly in"
    ):
        ImageFolder(tmp_path / "imgs", labels=True, shape=(3, 8, 8)).setup()
    with pytest.raises(MissingMandatoryValue, match="Missing mandatory value: data.path"):
        build_datamodule(make_cfg(["data=image_folder"], tmp_path))


def test_read_image_scales_16_bit_and_crops_to_aspect(tmp_path):
    deep = save(tmp_path / "deep.png", Image.fromarray(np.full((6, 6), 40000, np.uint16)))
    assert disk.read_image(str(deep), (1, 4, 4)).unique().tolist() == [40000 // 257]  # not clipped to 255
    wide = np.zeros((10, 30, 3), np.uint8)
    wide[:, 10:20] = 255  # a white square between two black ones: the center crop of a square `shape`
    assert (disk.read_image(str(save(tmp_path / "wide.png", Image.fromarray(wide))), (3, 5, 5)) == 255).all()


# --- end to end --------------------------------------------------------------------------------------------
def test_mnist_trains_end_to_end(tmp_path):
    fake_mnist(tmp_path / "data")
    overrides = ["data=mnist", f"data.root={tmp_path / 'data'}", "trainer.max_steps=2", "data.batch_size=8"]
    metrics, objects = run_train(overrides, tmp_path / "run")
    assert objects["model"].g_step == 2 and math.isfinite(metrics["train/g_loss"])


def test_image_folder_trains_end_to_end_from_disk(tmp_path):
    fake_folder(tmp_path / "imgs")
    overrides = [
        "data=image_folder",
        f"data.path={tmp_path / 'imgs'}",
        "data.shape=[3,32,32]",
        "data.in_memory=false",
        "data.num_workers=1",
        "trainer.max_steps=2",
        "data.batch_size=8",
    ]
    with pytest.warns(UserWarning, match="skipped 1 of 13"):
        metrics, objects = run_train(overrides, tmp_path / "run")
    assert objects["model"].g_step == 2 and math.isfinite(metrics["train/g_loss"])
