"""Training memory of the MN layers against nn.BatchNorm2d: what a forward pass keeps for backward.

Activation memory (the tensors autograd saves between forward and backward) is what grows with
batch size and depth, so it is what decides how large a batch fits. It is counted exactly, with
torch.autograd.graph.saved_tensors_hooks: every saved tensor's storage once (views of one buffer
count once), parameters included (they are small). The count does not depend on timing, so one
pass per row is enough and the figures are the same on any machine; rows are given as ratios to
nn.BatchNorm2d on the same input. "MN K=2 torch-ops" is the layer with the fused CPU kernels off
(the path CUDA and torch.compile use); "literal" is the paper's Algorithm 1 written as a loop over
modes (benchmarks/norm_speed.py). With --device cuda, the peak memory the allocator reaches during
forward + backward, above what was allocated before, is measured as well (CUDA tracks peaks; the
CPU allocator does not).
Usage: python benchmarks/norm_memory.py [--quick] [--channels-last] [--device cuda]
"""
from __future__ import annotations

import argparse
import contextlib
import statistics
import sys
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

sys.path.insert(0, str(Path(__file__).resolve().parent))  # norm_speed.py, when loaded from elsewhere
from norm_speed import SHAPES, TORCH_OPS, LiteralModeNorm, _kernels, device_setup  # noqa: E402

from mnzoo import ModeNorm2d  # noqa: E402

MIB = 2.0 ** 20


def saved_bytes(fn: Callable[[], Tensor]) -> Tuple[int, Tensor]:
    """(bytes of the storages autograd saves while fn runs, fn's output)."""
    storages: Dict[int, int] = {}

    def pack(t: Tensor) -> Tensor:
        s = t.untyped_storage()
        if s.nbytes():  # keyed by address: saved tensors stay alive, so no address is reused
            storages[s.data_ptr()] = s.nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = fn()
    return sum(storages.values()), out


def peak_bytes(fn: Callable[[], Tensor], device: torch.device) -> int:
    """CUDA only: the allocator's peak during fn() and its backward, above the memory in use before."""
    torch.cuda.synchronize(device)
    base = torch.cuda.memory_allocated(device)
    torch.cuda.reset_peak_memory_stats(device)
    out = fn()
    out.backward(torch.ones_like(out))
    torch.cuda.synchronize(device)
    return torch.cuda.max_memory_allocated(device) - base


def _row(layer: nn.Module, x: Tensor, kernels: bool) -> Callable[[], Tensor]:
    def run() -> Tensor:
        with _kernels(kernels) if x.device.type == "cpu" else contextlib.nullcontext():
            return layer(x.detach().requires_grad_())
    return run


def layer_rows(c: int, device: torch.device) -> Dict[str, Tuple[nn.Module, bool]]:
    """name -> (layer in training mode, fused CPU kernels on)."""
    rows: Dict[str, Tuple[nn.Module, bool]] = {"BatchNorm2d": (nn.BatchNorm2d(c), True)}
    for k in (1, 2, 4, 6):
        rows[f"MN K={k}"] = (ModeNorm2d(c, k), True)
    if device.type == "cpu":  # on CUDA the rows above already take the torch-op path
        rows["MN K=2" + TORCH_OPS] = (ModeNorm2d(c, 2), False)
    rows["literal K=2"] = (LiteralModeNorm(c, 2), True)
    rows["literal K=6"] = (LiteralModeNorm(c, 6), True)
    return {n: (layer.to(device).train(), kernels) for n, (layer, kernels) in rows.items()}


def bench_layers(quick: bool, memory_format: torch.memory_format, device: torch.device) -> Dict[str, float]:
    """Prints the per-layer table; returns the medians over shapes of each row's ratio to BN."""
    cuda = device.type == "cuda"
    print(f"{'shape':<34}{'layer':<18}{'saved MiB':>10}{'x input':>9}{'x BN':>7}"
          + (f"{'peak MiB':>10}{'x BN':>7}" if cuda else ""))
    ratios: Dict[str, List[float]] = {}
    for label, shape in SHAPES[:3] if quick else SHAPES:
        torch.manual_seed(0)
        x = torch.randn(shape, device=device).contiguous(memory_format=memory_format)
        saved: Dict[str, float] = {}
        peak: Dict[str, float] = {}
        for name, (layer, kernels) in layer_rows(shape[1], device).items():
            saved[name] = float(saved_bytes(_row(layer, x, kernels))[0])
            if cuda:
                peak[name] = float(peak_bytes(_row(layer, x, kernels), device))
            ratios.setdefault(name, []).append(saved[name] / saved["BatchNorm2d"])
            line = (f"{label + ' ' + str(tuple(shape)):<34}{name:<18}{saved[name] / MIB:>10.2f}"
                    f"{saved[name] / (x.numel() * x.element_size()):>9.2f}{saved[name] / saved['BatchNorm2d']:>7.2f}")
            if cuda:
                line += f"{peak[name] / MIB:>10.2f}{peak[name] / peak['BatchNorm2d']:>7.2f}"
            print(line)
        print()
    medians = {name: statistics.median(r) for name, r in ratios.items()}
    print("Median over shapes, saved bytes / BatchNorm2d:")
    for name, r in medians.items():
        print(f"  {name:<28}{r:>8.2f}")
    return medians


def bench_network(memory_format: torch.memory_format, device: torch.device, batch_size: int = 128) -> Dict[str, float]:
    """ResNet20 (CIFAR), one training forward + loss: saved MiB per variant; returns ratios to BN."""
    import timm
    import mnzoo  # noqa: F401  (registers the models)

    x = torch.randn(batch_size, 3, 32, 32, device=device).contiguous(memory_format=memory_format)
    y = torch.randint(0, 10, (batch_size,), device=device)
    variants = {"BN": ("resnet20_bn", {}, True), "MN K=2": ("resnet20_mn", {"num_modes": 2}, True),
                "MN K=6": ("resnet20_mn", {"num_modes": 6}, True)}
    if device.type == "cpu":
        variants["MN K=2" + TORCH_OPS] = ("resnet20_mn", {"num_modes": 2}, False)
    saved: Dict[str, float] = {}
    print(f"ResNet20 training step, batch {batch_size}: bytes saved for backward (MiB, ratio to BN)")
    for label, (name, kwargs, kernels) in variants.items():
        torch.manual_seed(0)
        net = timm.create_model(name, num_classes=10, **kwargs).to(device, memory_format=memory_format).train()

        def loss(net=net, kernels=kernels) -> Tensor:
            with _kernels(kernels) if device.type == "cpu" else contextlib.nullcontext():
                return F.cross_entropy(net(x), y)
        saved[label] = float(saved_bytes(loss)[0])
        line = f"  {label:<22}{saved[label] / MIB:>9.1f}{saved[label] / saved['BN']:>8.2f}"
        if device.type == "cuda":
            line += f"   peak {peak_bytes(loss, device) / MIB:>9.1f} MiB"
        print(line)
    return {label: s / saved["BN"] for label, s in saved.items()}


def main(argv: Optional[Sequence[str]] = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="ResNet20 shapes only, no network lines")
    ap.add_argument("--channels-last", action="store_true", help="inputs and models in channels_last")
    ap.add_argument("--device", default="cpu", choices=("cpu", "cuda"),
                    help="cuda: also the allocator's peak during forward + backward")
    args = ap.parse_args(argv)
    device, memory_format, where = device_setup(ap, args)
    print(f"torch {torch.__version__}, fp32, {where}\n")
    bench_layers(args.quick, memory_format, device)
    if not args.quick:
        print()
        bench_network(memory_format, device)


if __name__ == "__main__":
    main()
