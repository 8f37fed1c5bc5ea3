"""Readers that decode small-image datasets into uint8 tensors.

Every reader returns ``(images, labels, classes)``: images uint8 of shape (N, C, H, W), labels
int64 of shape (N,), and the class names in label order. Nothing here downloads unless the caller
passes ``download=True`` to a torchvision reader, and nothing reads a default location: every path
comes from the caller.
"""
from __future__ import annotations

import gzip
import io
import os
import re
import tarfile
from pathlib import Path, PurePosixPath
from typing import Dict, Iterator, List, Tuple

import numpy as np
from numpy.typing import DTypeLike
import torch
from torch import Tensor

__all__ = [
    "read_idx",
    "read_idx_split",
    "read_image_folder",
    "read_torchvision",
    "IMAGE_EXTENSIONS",
    "Decoded",
]

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".ppm", ".gif", ".webp", ".tif", ".tiff")
Decoded = Tuple[Tensor, Tensor, List[str]]

# IDX type codes (LeCun's format): code -> numpy big-endian dtype
_IDX_DTYPES: Dict[int, DTypeLike] = {0x08: np.uint8, 0x09: np.int8, 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


def read_idx(path: str | os.PathLike) -> Tensor:
    """Read one IDX file (optionally gzip-compressed) into a tensor of its stored shape."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"IDX file not found: {path}")
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as f:
        raw = f.read()
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in _IDX_DTYPES:
        raise ValueError(f"{path} is not an IDX file (bad magic number {raw[:4].hex()})")
    ndim = raw[3]
    dims = [int.from_bytes(raw[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim)]
    dtype = np.dtype(_IDX_DTYPES[raw[2]])
    offset = 4 + 4 * ndim
    expected = int(np.prod(dims)) * dtype.itemsize
    if len(raw) - offset != expected:
        raise ValueError(f"{path}: header says {dims} ({expected} bytes) but {len(raw) - offset} bytes follow")
    arr = np.frombuffer(raw, dtype=dtype, offset=offset).reshape(dims)
    return torch.from_numpy(arr.astype(dtype.newbyteorder("=")))


def _find_idx(root: Path, prefix: str, kind: str) -> Path:
    """Locate ``<prefix>-<kind>-idx?-ubyte[.gz]`` in root or in a torchvision ``*/raw`` folder below it."""
    candidates = [root] + sorted(p for p in root.glob("*/raw") if p.is_dir())
    for folder in candidates:
        for name in sorted(os.listdir(folder)):
            if re.fullmatch(rf"{prefix}-{kind}-idx\d-ubyte(\.gz)?", name):
                return folder / name
    raise FileNotFoundError(f"no {prefix}-{kind}-idx*-ubyte[.gz] file in {root} (or {root}/*/raw)")


def read_idx_split(root: str | os.PathLike, split: str = "train") -> Decoded:
    """Read an MNIST-format split (MNIST, Fashion-MNIST) from a folder of IDX files.

    split 'train' reads ``train-*``, 'test' reads ``t10k-*``. Images come back as (N, 1, 28, 28).
    """
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"IDX folder not found: {root}")
    if split not in ("train", "test"):
        raise ValueError(f"IDX split must be 'train' or 'test', got {split!r}")
    prefix = "train" if split == "train" else "t10k"
    images = read_idx(_find_idx(root, prefix, "images"))
    labels = read_idx(_find_idx(root, prefix, "labels"))
    if images.ndim != 3 or labels.ndim != 1 or images.shape[0] != labels.shape[0]:
        raise ValueError(f"IDX files in {root} disagree: images {tuple(images.shape)}, labels {tuple(labels.shape)}")
    labels = labels.long()
    return images.to(torch.uint8).unsqueeze(1).contiguous(), labels, [str(i) for i in range(int(labels.max()) + 1)]


def _natural_key(name: str) -> list:
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", name)]


def _iter_folder(path: Path) -> Iterator[Tuple[str, bytes]]:
    for file in path.rglob("*"):
        if file.is_file() and file.suffix.lower() in IMAGE_EXTENSIONS:
            yield file.relative_to(path).as_posix(), file.read_bytes()


def _iter_tar(path: Path) -> Iterator[Tuple[str, bytes]]:
    with tarfile.open(path) as tf:
        for member in tf:
            if PurePosixPath(member.name).suffix.lower() not in IMAGE_EXTENSIONS:
                continue
            f = tf.extractfile(member) if member.isfile() else None
            if f is not None:
                yield member.name, f.read()


def read_image_folder(path: str | os.PathLike, channels: int = 3) -> Decoded:
    """Decode an ImageFolder (``<class>/<file>``), given as a folder or a .tar of one.

    Classes are the parent folder names sorted alphabetically (torchvision's ImageFolder order);
    files within a class are in natural order (2.png before 10.png). All images must have the
    same size: use this for small-image datasets, and timm's ImageFolder loaders for ImageNet.
    """
    from PIL import Image

    path = Path(path)
    if path.is_dir():
        items = _iter_folder(path)
    elif path.is_file() and tarfile.is_tarfile(path):
        items = _iter_tar(path)
    else:
        raise FileNotFoundError(f"{path} is neither an ImageFolder directory nor a tar file")
    mode = {1: "L", 3: "RGB"}[channels]
    records = []
    for name, data in items:
        p = PurePosixPath(name)
        if len(p.parts) < 2:
            raise ValueError(f"{path}: image {name!r} is not inside a class folder")
        with Image.open(io.BytesIO(data)) as im:
            arr = np.asarray(im.convert(mode))
        records.append((p.parent.name, _natural_key(p.name), arr))
    if not records:
        raise ValueError(f"{path} holds no images with extensions {IMAGE_EXTENSIONS}")
    records.sort(key=lambda r: (r[0], r[1]))
    classes = sorted({r[0] for r in records})
    shapes = {r[2].shape for r in records}
    if len(shapes) != 1:
        raise ValueError(f"{path}: images differ in size {sorted(shapes)[:4]}; this reader is for fixed-size datasets")
    arr = np.stack([r[2] for r in records])
    arr = arr[:, None] if channels == 1 else arr.transpose(0, 3, 1, 2)
    index = {c: i for i, c in enumerate(classes)}
    labels = torch.tensor([index[r[0]] for r in records], dtype=torch.long)
    return torch.from_numpy(np.ascontiguousarray(arr)), labels, classes


def _unpickle(path: Path) -> dict:
    import pickle

    if not path.is_file():
        raise FileNotFoundError(f"missing {path}")
    with open(path, "rb") as f:
        return pickle.load(f, encoding="latin1")


def _read_cifar_batches(folder: Path, files: List[str], label_key: str, meta: str, names_key: str) -> Decoded:
    data, labels = [], []
    for name in files:
        batch = _unpickle(folder / name)
        data.append(np.asarray(batch["data"], dtype=np.uint8).reshape(-1, 3, 32, 32))
        labels.extend(batch[label_key])
    classes = list(_unpickle(folder / meta)[names_key])
    return torch.from_numpy(np.concatenate(data)), torch.tensor(labels, dtype=torch.long), classes


def read_torchvision(name: str, root: str | os.PathLike, split: str = "train", download: bool = False) -> Decoded:
    """Read CIFAR-10/100, SVHN, MNIST or Fashion-MNIST from a torchvision dataset root.

    The root holds the standard on-disk files (``cifar-10-batches-py/``, ``cifar-100-python/``,
    ``train_32x32.mat``, ``MNIST/raw/``, ``FashionMNIST/raw/``), which are decoded here directly.
    Only with ``download=True`` is torchvision asked to fetch (and checksum) them first.
    """
    splits = ("train", "test", "extra") if name == "svhn" else ("train", "test")
    if split not in splits:
        raise ValueError(f"{name} split must be one of {splits}, got {split!r}")
    root = Path(root)
    if download:
        import torchvision.datasets as tvd

        if name == "svhn":
            tvd.SVHN(str(root), split=split, download=True)
        else:
            cls = {"cifar10": tvd.CIFAR10, "cifar100": tvd.CIFAR100, "mnist": tvd.MNIST,
                   "fashion_mnist": tvd.FashionMNIST}[name]
            cls(str(root), train=split == "train", download=True)
    if name == "cifar10":
        files = [f"data_batch_{i}" for i in range(1, 6)] if split == "train" else ["test_batch"]
        return _read_cifar_batches(root / "cifar-10-batches-py", files, "labels", "batches.meta", "label_names")
    if name == "cifar100":
        return _read_cifar_batches(root / "cifar-100-python", [split], "fine_labels", "meta", "fine_label_names")
    if name == "svhn":
        from scipy.io import loadmat  # torchvision's SVHN needs scipy too

        path = root / f"{split}_32x32.mat"
        if not path.is_file():
            raise FileNotFoundError(f"missing {path} (pass download=True / --download to fetch SVHN)")
        mat = loadmat(str(path))
        images = np.ascontiguousarray(np.asarray(mat["X"], dtype=np.uint8).transpose(3, 2, 0, 1))
        labels = np.asarray(mat["y"], dtype=np.int64).reshape(-1) % 10  # SVHN stores digit 0 as label 10
        return torch.from_numpy(images), torch.from_numpy(labels), [str(i) for i in range(10)]
    if name in ("mnist", "fashion_mnist"):
        sub = root / ("MNIST" if name == "mnist" else "FashionMNIST") / "raw"
        return read_idx_split(sub if sub.is_dir() else root, split)
    raise ValueError(f"no torchvision-format reader for dataset {name!r}")
