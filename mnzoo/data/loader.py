"""In-memory uint8 datasets, batched augmentation and a loader without worker processes.

Small-image datasets (CIFAR, MNIST, SVHN, ...) fit in memory as uint8: 50,000 CIFAR images are
150 MB. Indexing that tensor and augmenting a whole batch at once costs well under a millisecond
per batch, so no DataLoader workers are needed and the data path stays a few percent of a step.

Randomness is a pure function of ``(seed, epoch)``: the shuffle order and every crop offset and
flip come from generators seeded with both, so a run resumed at epoch e sees exactly the batches
an uninterrupted run would, and N processes see the same global batches as one process.
"""
from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass, field
from typing import Iterator, List, Optional, Sequence, Tuple

import torch
from torch import Tensor

__all__ = ["ImageTensors", "BatchAugment", "TensorLoader", "epoch_generator"]


@dataclass
class ImageTensors:
    """A decoded split: uint8 images (N, C, H, W), int64 labels, and per-sample domain indices.

    ``mean``/``std`` (D, C) are per-domain normalisation statistics in [0, 1] pixel units;
    sample n is normalised with the row ``domains[n]``.
    """

    images: Tensor
    labels: Tensor
    domains: Tensor
    domain_names: List[str]
    mean: Tensor
    std: Tensor
    num_classes: int
    classes: List[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        n = self.images.shape[0]
        if self.images.dtype != torch.uint8 or self.images.ndim != 4:
            raise ValueError(f"images must be uint8 (N, C, H, W), got {self.images.dtype} {tuple(self.images.shape)}")
        if self.labels.shape != (n,) or self.domains.shape != (n,):
            raise ValueError(f"labels {tuple(self.labels.shape)} / domains {tuple(self.domains.shape)} "
                             f"do not match {n} images")
        c = self.images.shape[1]
        d = len(self.domain_names)
        if self.mean.shape != (d, c) or self.std.shape != (d, c):
            raise ValueError(f"mean/std must be ({d}, {c}), got {tuple(self.mean.shape)} / {tuple(self.std.shape)}")

    def __len__(self) -> int:
        return self.images.shape[0]

    def subset(self, index: Tensor) -> "ImageTensors":
        """The samples at ``index`` (same domains, classes and statistics)."""
        return ImageTensors(self.images[index], self.labels[index], self.domains[index], self.domain_names,
                            self.mean, self.std, self.num_classes, self.classes)


@contextlib.contextmanager
def _one_cpu_thread(device: torch.device) -> Iterator[None]:
    """Run batch preparation on one CPU thread.

    It is memory-bound and small: splitting it over OpenMP threads gains nothing, and on a shared
    machine a parallel region waits for its slowest thread, which made a 0.3 ms pad take 30 ms
    while another process held the second core.
    """
    if device.type != "cpu" or torch.get_num_threads() == 1:
        yield
        return
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(n)


def epoch_generator(seed: int, epoch: int, stream: int) -> torch.Generator:
    """A CPU generator determined by (seed, epoch, stream): the same on every process and resume."""
    return torch.Generator().manual_seed((seed * 1_000_003 + epoch) * 7 + stream)


@dataclass
class BatchAugment:
    """Random crop after zero padding by ``pad`` pixels, and horizontal flip, on a uint8 batch."""

    pad: int = 4
    hflip: bool = True

    def sample(self, n: int, generator: torch.Generator) -> Tuple[Tensor, Tensor, Tensor]:
        """Draw (dy, dx, flip) for n images."""
        offsets = torch.randint(0, 2 * self.pad + 1, (2, n), generator=generator)
        flip = torch.rand(n, generator=generator) < 0.5 if self.hflip else torch.zeros(n, dtype=torch.bool)
        return offsets[0], offsets[1], flip

    def apply(self, x: Tensor, dy: Tensor, dx: Tensor, flip: Tensor) -> Tensor:
        """Crop each image of x (N, C, H, W) at (dy, dx) of its padded copy, then flip where asked.

        One gather from the padded batch does both: the flip is folded into the column indices.
        """
        n, c, h, w = x.shape
        dy, dx, flip = dy.to(x.device), dx.to(x.device), flip.to(x.device)
        p = self.pad
        padded = torch.nn.functional.pad(x, (p, p, p, p)) if p else x
        cols = torch.arange(w, device=x.device).expand(n, w)
        if self.hflip:
            cols = torch.where(flip[:, None], w - 1 - cols, cols)
        cols = cols + (dx[:, None] if p else 0)
        rows = torch.arange(h, device=x.device) + (dy[:, None] if p else torch.zeros_like(dy)[:, None])
        flat = (rows[:, :, None] * (w + 2 * p) + cols[:, None, :]).view(n, 1, h * w).expand(n, c, h * w)
        return torch.gather(padded.reshape(n, c, -1), 2, flat).view(n, c, h, w)


class TensorLoader:
    """Batches of normalised float images from an :class:`ImageTensors`, in the training process.

    ``batch_size`` is the global batch: with ``world_size`` processes each gets a contiguous
    ``batch_size // world_size`` slice of every global batch, so the union over processes is the
    batch one process would see. Evaluation loaders (``shuffle=False``) instead give each process
    a contiguous shard of the dataset and keep the last, smaller batch.
    """

    def __init__(
        self,
        data: ImageTensors,
        batch_size: int,
        shuffle: bool = False,
        augment: Optional[BatchAugment] = None,
        drop_last: Optional[bool] = None,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
        device: torch.device | str = "cpu",
        channels_last: bool = False,
    ) -> None:
        if batch_size < 1 or batch_size % world_size:
            raise ValueError(f"batch_size {batch_size} must be positive and divisible by world_size {world_size}")
        self.data = data
        self.batch_size = batch_size
        self.local_batch = batch_size // world_size
        self.shuffle = shuffle
        self.augment = augment
        self.drop_last = shuffle if drop_last is None else drop_last
        self.seed = seed
        self.rank = rank
        self.world_size = world_size
        self.device = torch.device(device)
        self.channels_last = channels_last
        self.epoch = 0
        # Device-resident copies: indexing and augmentation happen where the model runs.
        self.images = data.images.to(self.device)
        self.labels = data.labels.to(self.device)
        self.domains = data.domains.to(self.device)
        self.scale = (1.0 / (255.0 * data.std)).to(self.device)  # (D, C)
        self.shift = (-data.mean / data.std).to(self.device)
        if self.shuffle:
            n_batches = len(data) // batch_size if self.drop_last else math.ceil(len(data) / batch_size)
            if n_batches == 0:
                raise ValueError(f"dataset of {len(data)} images is smaller than one batch of {batch_size}")

    @property
    def num_classes(self) -> int:
        return self.data.num_classes

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def _shard(self) -> Tuple[int, int]:
        per = math.ceil(len(self.data) / self.world_size)
        return min(self.rank * per, len(self.data)), min((self.rank + 1) * per, len(self.data))

    def __len__(self) -> int:
        if self.shuffle:
            n = len(self.data)
            return n // self.batch_size if self.drop_last else math.ceil(n / self.batch_size)
        lo, hi = self._shard()
        return math.ceil((hi - lo) / self.local_batch)

    def normalize(self, x: Tensor, domains: Tensor) -> Tensor:
        """uint8 (N, C, H, W) -> float32, normalised with each sample's domain statistics."""
        memory_format = torch.channels_last if self.channels_last else torch.contiguous_format
        out = x.to(dtype=torch.float32, memory_format=memory_format)
        return out.mul_(self.scale[domains][:, :, None, None]).add_(self.shift[domains][:, :, None, None])

    def __iter__(self) -> Iterator[Tuple[Tensor, Tensor, Tensor]]:
        """Yield (images float32, labels int64, domain indices int64) on the loader's device."""
        n = len(self.data)
        if self.shuffle:
            order = torch.randperm(n, generator=epoch_generator(self.seed, self.epoch, 0))
            aug: Optional[Tuple[Tensor, ...]] = (
                self.augment.sample(n, epoch_generator(self.seed, self.epoch, 1)) if self.augment else None)
            # one copy per epoch: a per-batch host-to-device copy would synchronise every step on CUDA
            order = order.to(self.device)
            aug = None if aug is None else tuple(t.to(self.device) for t in aug)
            for b in range(len(self)):
                lo = b * self.batch_size + self.rank * self.local_batch
                hi = min(lo + self.local_batch, (b + 1) * self.batch_size, n)
                yield self._batch(order[lo:hi], None if aug is None else tuple(t[lo:hi] for t in aug))
        else:
            lo, hi = self._shard()
            for start in range(lo, hi, self.local_batch):
                idx = torch.arange(start, min(start + self.local_batch, hi), device=self.device)
                yield self._batch(idx, None)

    def _batch(self, idx: Tensor, aug: Optional[Sequence[Tensor]]) -> Tuple[Tensor, Tensor, Tensor]:
        """The samples at ``idx``, augmented with ``aug``; both already on the loader's device."""
        with _one_cpu_thread(self.device):
            x, d = self.images[idx], self.domains[idx]
            if aug is not None and self.augment is not None:
                x = self.augment.apply(x, *aug)
            return self.normalize(x, d), self.labels[idx], d
