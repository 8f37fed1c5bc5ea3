"""Dataset construction: source specs, the on-disk uint8 cache, the multi-domain mix and ImageNet.

A *source* is written ``domain=path[@split]``, for example ``cifar10=data/cifar10/train.tar``,
``mnist=data/mnist@test`` or ``svhn=~/torchvision-root@train``. The path may be

- an ImageFolder directory or a .tar of one (``<class>/<image>``; the split is implied by the path),
- a folder of MNIST-format IDX files (mnist, fashion_mnist; ``@train`` or ``@test``),
- a torchvision dataset root with the standard files (cifar10, cifar100, svhn, mnist, fashion_mnist).

**Multi-domain mix** (paper §4.1): every image becomes 3x32x32 (grey images are repeated to three
channels, 28x28 images are zero-padded by 2 px on each side in pixel space, i.e. with black), and
labels are shifted by a fixed per-domain offset into one 40-way label space, whichever domains
are present: mnist 0-9, cifar10 10-19, svhn 20-29, fashion_mnist 30-39. Without SVHN the classes
20-29 simply never occur. Each image is normalised with its own domain's channel mean and std
(:data:`DOMAINS`, the usual published train-set statistics), as a per-dataset pipeline would.
"""
from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor

from .loader import ImageTensors
from .readers import Decoded, read_image_folder, read_torchvision

__all__ = [
    "Domain",
    "DOMAINS",
    "Source",
    "parse_source",
    "default_cache_dir",
    "load_source",
    "build_dataset",
    "multidomain_classes",
    "domain_transform",
    "create_imagefolder_loader",
]

CACHE_VERSION = 1


@dataclass(frozen=True)
class Domain:
    """A dataset that can enter the zoo: label offset in the multi-domain head and its statistics."""

    offset: int
    num_classes: int
    mean: Tuple[float, ...]
    std: Tuple[float, ...]
    classes: Tuple[str, ...]


_DIGITS = tuple(str(i) for i in range(10))
DOMAINS: Dict[str, Domain] = {
    "mnist": Domain(0, 10, (0.1307,), (0.3081,), _DIGITS),
    "cifar10": Domain(10, 10, (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616),
                      ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")),
    "svhn": Domain(20, 10, (0.4377, 0.4438, 0.4728), (0.1980, 0.2010, 0.1970), _DIGITS),
    "fashion_mnist": Domain(30, 10, (0.2860,), (0.3530,),
                            ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker",
                             "Bag", "Ankle boot")),
    "cifar100": Domain(-1, 100, (0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762), ()),
}
MULTIDOMAIN_CLASSES = 40
_SPLITS = ("train", "test", "extra")


@dataclass(frozen=True)
class Source:
    domain: str
    path: str
    split: str = "train"

    def __str__(self) -> str:
        return f"{self.domain}={self.path}@{self.split}"


def parse_source(spec: str | Source) -> Source:
    """Parse ``domain=path[@split]`` (split defaults to train)."""
    if isinstance(spec, Source):
        return spec
    if not isinstance(spec, str) or "=" not in spec:
        raise ValueError(f"data source {spec!r} must look like 'domain=path[@split]', domain one of {sorted(DOMAINS)}")
    domain, path = spec.split("=", 1)
    split = "train"
    if "@" in path and path.rsplit("@", 1)[1] in _SPLITS:
        path, split = path.rsplit("@", 1)
    if domain not in DOMAINS:
        raise ValueError(f"unknown domain {domain!r} in {spec!r}; known: {sorted(DOMAINS)}")
    return Source(domain, os.path.expanduser(path), split)


def default_cache_dir() -> Path:
    """``$MNZOO_CACHE`` or ``~/.cache/mnzoo``."""
    return Path(os.environ.get("MNZOO_CACHE", Path.home() / ".cache" / "mnzoo"))


def _fingerprint(path: Path) -> str:
    """Size and mtime of the file, or of every file under the folder: the cache key of the data."""
    h = hashlib.sha1()
    files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
    for f in files:
        st = f.stat()
        h.update(f"{f.relative_to(path.parent)}:{st.st_size}:{st.st_mtime_ns};".encode())
    return h.hexdigest()[:16]


def _decode(src: Source, download: bool) -> Decoded:
    path = Path(src.path)
    if path.is_file() or (path.is_dir() and _is_image_folder(path)):
        return read_image_folder(path, channels=1 if src.domain in ("mnist", "fashion_mnist") else 3)
    if path.is_dir() or download:
        return read_torchvision(src.domain, path, src.split, download=download)
    raise FileNotFoundError(f"data source {src}: {path} does not exist (pass download=True / --download to fetch "
                            "torchvision datasets)")


def _is_image_folder(path: Path) -> bool:
    from .readers import IMAGE_EXTENSIONS

    for sub in path.iterdir():
        if sub.is_dir() and any(f.suffix.lower() in IMAGE_EXTENSIONS for f in sub.iterdir()):
            return True
    return False


def load_source(spec: str | Source, cache_dir: Optional[str | os.PathLike] = None, download: bool = False,
                use_cache: bool = True) -> Decoded:
    """Decode one source to uint8 tensors, reusing ``<cache_dir>/<domain>-<split>-<key>.pt`` when present."""
    src = parse_source(spec)
    path = Path(src.path)
    if not use_cache or not path.exists():
        return _decode(src, download)
    cache = Path(cache_dir) if cache_dir else default_cache_dir()
    key = hashlib.sha1(f"{CACHE_VERSION}|{src.domain}|{path.resolve()}|{src.split}|{_fingerprint(path)}".encode())
    file = cache / f"{src.domain}-{src.split}-{key.hexdigest()[:16]}.pt"
    if file.is_file():
        blob = torch.load(file, weights_only=True)
        return blob["images"], blob["labels"], list(blob["classes"])
    images, labels, classes = _decode(src, download)
    cache.mkdir(parents=True, exist_ok=True)
    tmp = file.with_suffix(f".tmp{os.getpid()}")
    torch.save({"images": images, "labels": labels, "classes": classes, "source": str(src)}, tmp)
    os.replace(tmp, file)  # atomic: concurrent processes may both build, neither reads a partial file
    return images, labels, classes


def _to_rgb32(images: Tensor) -> Tensor:
    """Grey -> 3 channels, and 28x28 -> 32x32 by zero padding 2 px (black, like MNIST's background)."""
    if images.shape[1] == 1:
        images = images.expand(-1, 3, -1, -1)
    h, w = images.shape[-2:]
    if (h, w) == (28, 28):
        images = F.pad(images, (2, 2, 2, 2))
    if images.shape[-2:] != (32, 32):
        raise ValueError(f"multi-domain images must be 28x28 or 32x32, got {h}x{w}")
    return images.contiguous()


def domain_transform(domain: str, multidomain: bool = True) -> Callable[[Any], Tensor]:
    """Preprocessing of one PIL image of ``domain``, exactly as :func:`build_dataset` and
    :class:`TensorLoader` feed training and ``mnzoo eval``: the domain's own channel mean/std and, for
    a multi-domain model, grey -> 3 channels and 28x28 zero-padded to 32x32. Returns a (C, H, W) float32.

    Use it for models that normalise per domain (the ``multidomain`` weights), where timm's
    ``create_transform`` cannot know the domain of an image.
    """
    import numpy as np

    if domain not in DOMAINS:
        raise ValueError(f"unknown domain {domain!r}; known: {', '.join(sorted(DOMAINS))}")
    dom = DOMAINS[domain]
    if multidomain and dom.offset < 0:
        raise ValueError(f"domain {domain!r} is not part of the multi-domain label space")
    channels = 3 if multidomain else len(dom.mean)
    mean, std = _stats(dom, channels)
    scale, shift = 1.0 / (255.0 * std), -mean / std  # the loader's affine map, so results are identical

    def transform(image: Any) -> Tensor:
        arr = np.asarray(image.convert("L" if len(dom.mean) == 1 else "RGB"))
        x = torch.from_numpy(arr.copy())
        x = x[None, None] if x.ndim == 2 else x.permute(2, 0, 1)[None]
        if multidomain:
            x = _to_rgb32(x)
        return x[0].float().mul_(scale[:, None, None]).add_(shift[:, None, None])
    return transform


def multidomain_classes() -> List[str]:
    """The 40 class names of the multi-domain head, ``<domain>/<class>`` in label order."""
    names = [""] * MULTIDOMAIN_CLASSES
    for name, d in DOMAINS.items():
        if d.offset >= 0:
            names[d.offset:d.offset + d.num_classes] = [f"{name}/{c}" for c in d.classes]
    return names


def build_dataset(sources: Sequence[str | Source], multidomain: bool = False,
                  cache_dir: Optional[str | os.PathLike] = None, download: bool = False,
                  use_cache: bool = True) -> ImageTensors:
    """Decode the sources into one :class:`ImageTensors`.

    Without ``multidomain`` exactly one source is allowed and images keep their native shape.
    With it, the sources are mixed into the 40-way 3x32x32 multi-domain dataset (module docstring).
    """
    srcs = [parse_source(s) for s in sources]
    if not srcs:
        raise ValueError("no data sources given")
    if not multidomain:
        if len(srcs) != 1:
            raise ValueError(f"{len(srcs)} sources given for a single-domain dataset; use multidomain for a mix")
        src = srcs[0]
        dom = DOMAINS[src.domain]
        images, labels, classes = load_source(src, cache_dir, download, use_cache)
        _check_labels(src, labels, dom.num_classes)
        n, c = images.shape[:2]
        mean, std = _stats(dom, c)
        return ImageTensors(images, labels, torch.zeros(n, dtype=torch.long), [src.domain], mean[None], std[None],
                            dom.num_classes, list(dom.classes) or classes)
    domains = [s.domain for s in srcs]
    if len(set(domains)) != len(domains):
        raise ValueError(f"multi-domain sources repeat a domain: {domains}")
    parts = []
    for i, src in enumerate(srcs):
        dom = DOMAINS[src.domain]
        if dom.offset < 0:
            raise ValueError(f"domain {src.domain!r} is not part of the multi-domain label space")
        images, labels, _ = load_source(src, cache_dir, download, use_cache)
        _check_labels(src, labels, dom.num_classes)
        parts.append((_to_rgb32(images), labels + dom.offset, torch.full_like(labels, i)))
    mean = torch.stack([_stats(DOMAINS[d], 3)[0] for d in domains])
    std = torch.stack([_stats(DOMAINS[d], 3)[1] for d in domains])
    return ImageTensors(torch.cat([p[0] for p in parts]), torch.cat([p[1] for p in parts]),
                        torch.cat([p[2] for p in parts]), domains, mean, std, MULTIDOMAIN_CLASSES,
                        multidomain_classes())


def _stats(dom: Domain, channels: int) -> Tuple[Tensor, Tensor]:
    mean, std = torch.tensor(dom.mean), torch.tensor(dom.std)
    if mean.numel() != channels:
        mean, std = mean.mean().expand(channels).clone(), std.mean().expand(channels).clone()
    return mean, std


def _check_labels(src: Source, labels: Tensor, num_classes: int) -> None:
    if labels.numel() and (labels.min() < 0 or labels.max() >= num_classes):
        raise ValueError(f"{src}: labels span {int(labels.min())}..{int(labels.max())}, "
                         f"expected 0..{num_classes - 1} for {src.domain}")


class _FolderLoader:
    """timm's ImageFolder loader, yielding (images, labels, domains) like :class:`TensorLoader`."""

    def __init__(self, loader: torch.utils.data.DataLoader, device: torch.device, channels_last: bool) -> None:
        self.loader, self.device, self.channels_last = loader, device, channels_last
        self.data = loader.dataset
        mapping = getattr(getattr(self.data, "reader", None), "class_to_idx", None) or {}
        self.classes = sorted(mapping, key=lambda c: mapping[c])
        self.num_classes = len(self.classes)

    def set_epoch(self, epoch: int) -> None:
        set_epoch = getattr(getattr(self.loader, "sampler", None), "set_epoch", None)
        if set_epoch is not None:
            set_epoch(epoch)

    def __len__(self) -> int:
        return len(self.loader)

    def __iter__(self) -> Iterator[Tuple[Tensor, Tensor, Tensor]]:
        fmt = torch.channels_last if self.channels_last else torch.contiguous_format
        for x, y in self.loader:
            x = x.to(self.device, non_blocking=True, memory_format=fmt)
            y = y.to(self.device, non_blocking=True)
            yield x, y, torch.zeros_like(y)


def create_imagefolder_loader(root: str | os.PathLike, split: str, is_training: bool, batch_size: int,
                              input_size: int = 224, workers: int = 4, distributed: bool = False,
                              device: torch.device | str = "cpu", channels_last: bool = False,
                              seed: int = 0) -> _FolderLoader:
    """ImageNet-style loader: ``root/<split>/<class>/<image>`` (or ``root`` itself an ImageFolder).

    Uses timm's ImageFolder dataset and its standard train (random-resized crop + flip) and eval
    (resize + center crop) transforms with ImageNet statistics; ``batch_size`` is per process.
    """
    from timm.data import create_dataset, create_loader

    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"ImageFolder root not found: {root}")
    folder = root / split if (root / split).is_dir() else root
    ds = create_dataset("", root=str(folder), is_training=is_training, seed=seed)
    if len(ds) == 0:
        raise ValueError(f"no images found in {folder}")
    dev = torch.device(device)
    loader = create_loader(ds, input_size=(3, input_size, input_size), batch_size=batch_size,
                           is_training=is_training, use_prefetcher=False, num_workers=workers,
                           distributed=distributed, pin_memory=dev.type == "cuda", device=dev)
    return _FolderLoader(loader, dev, channels_last)
