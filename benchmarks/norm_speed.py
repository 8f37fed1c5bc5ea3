"""Speed of the MN layers against nn.BatchNorm2d and the paper's Algorithm 1 written literally.

Prints one table of medians measured in a single run; every row is also given as a ratio to
nn.BatchNorm2d on the same shape, timed interleaved with it, so a busy machine still gives stable
ratios. "MN K=2 torch-ops" is the same layer with the fused CPU kernels turned off
(MNZOO_CPU_KERNELS=0 for that call), i.e. the path CUDA and torch.compile use. With
--device cuda every MN row is that path (the torch-ops rows are left out) and each timing is
bracketed by torch.cuda.synchronize().
Usage: python benchmarks/norm_speed.py [--reps 15] [--threads 2] [--quick | --network-only]
       [--channels-last] [--device cuda]
"""
from __future__ import annotations

import argparse
import contextlib
import copy
import os
import statistics
import time
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from mnzoo import ModeNorm2d
from mnzoo.layers import build_cpu_kernels

TORCH_OPS = " torch-ops"  # suffix of the rows timed with the CPU kernels turned off


@contextlib.contextmanager
def _kernels(enabled: bool):
    old = os.environ.get("MNZOO_CPU_KERNELS")
    os.environ["MNZOO_CPU_KERNELS"] = "1" if enabled else "0"
    try:
        yield
    finally:
        if old is None:
            del os.environ["MNZOO_CPU_KERNELS"]
        else:
            os.environ["MNZOO_CPU_KERNELS"] = old

SHAPES: List[Tuple[str, Tuple[int, int, int, int]]] = [
    ("resnet20 stage1", (128, 16, 32, 32)),
    ("resnet20 stage2", (128, 32, 16, 16)),
    ("resnet20 stage3", (128, 64, 8, 8)),
    ("resnet18 layer1", (32, 64, 56, 56)),
    ("resnet18 layer4", (32, 512, 7, 7)),
]


class LiteralModeNorm(nn.Module):
    """Algorithm 1 as the paper writes it: a Python loop over modes, each a full pass over x."""

    def __init__(self, num_features: int, num_modes: int, eps: float = 1e-5) -> None:
        super().__init__()
        self.gate = nn.Linear(num_features, num_modes)
        self.weight = nn.Parameter(torch.ones(num_features))
        self.bias = nn.Parameter(torch.zeros(num_features))
        self.num_modes, self.eps = num_modes, eps

    def forward(self, x: Tensor) -> Tensor:
        g = torch.softmax(self.gate(x.mean((2, 3))), dim=1)
        out = torch.zeros_like(x)
        for k in range(self.num_modes):
            gk = g[:, k].view(-1, 1, 1, 1)
            n_k = g[:, k].sum() * x.shape[2] * x.shape[3]
            mean = (gk * x).sum((0, 2, 3), keepdim=True) / n_k
            mean_sq = (gk * x * x).sum((0, 2, 3), keepdim=True) / n_k
            out = out + gk * (x - mean) / torch.sqrt(mean_sq - mean * mean + self.eps)
        return out * self.weight.view(1, -1, 1, 1) + self.bias.view(1, -1, 1, 1)


def _once(fn: Callable[[], None], device: torch.device = torch.device("cpu")) -> float:
    """Seconds one call of fn takes; on CUDA the queued kernels are waited for on both sides."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    t0 = time.perf_counter()
    fn()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter() - t0


def _train_step(layer: nn.Module, x: Tensor, gy: Tensor, kernels: bool = True) -> Callable[[], None]:
    """Forward + backward in training mode (batch statistics, running-stat update)."""
    layer.train()
    xr = x.clone().requires_grad_()

    def run() -> None:
        xr.grad = None
        layer.zero_grad(set_to_none=True)
        with _kernels(kernels):
            layer(xr).backward(gy)
    return run


def _eval_step(layer: nn.Module, x: Tensor, kernels: bool = True) -> Callable[[], None]:
    """Forward in eval mode (running statistics), no autograd."""
    layer.eval()

    def run() -> None:
        with torch.no_grad(), _kernels(kernels):
            layer(x)
    return run


def layer_steps(layers: Dict[str, nn.Module], x: Tensor, gy: Tensor
                ) -> Dict[str, Tuple[Callable[[], None], Callable[[], None]]]:
    """(train step, eval step) per layer. The eval step runs on a copy of the layer: train()
    and eval() set a module's mode for good, so one module cannot be timed in both modes
    (sessions 1-2 timed the "train" rows in eval mode this way)."""
    return {n: (_train_step(layer, x, gy, not n.endswith(TORCH_OPS)),
                _eval_step(copy.deepcopy(layer), x, not n.endswith(TORCH_OPS)))
            for n, layer in layers.items()}


def bench_layers(reps: int, quick: bool, memory_format: torch.memory_format = torch.contiguous_format,
                 device: torch.device = torch.device("cpu")) -> None:
    print(f"{'shape':<34}{'layer':<16}{'train ms':>10}{'x BN':>8}{'eval ms':>10}{'x BN':>8}")
    shapes = SHAPES[:3] if quick else SHAPES
    summary: Dict[str, List[float]] = {}
    for label, shape in shapes:
        torch.manual_seed(0)
        x = torch.randn(shape, device=device).contiguous(memory_format=memory_format)
        gy = torch.randn(shape, device=device).contiguous(memory_format=memory_format)
        c = shape[1]
        layers: Dict[str, nn.Module] = {"BatchNorm2d": nn.BatchNorm2d(c)}
        for k in (1, 2, 4, 6):
            layers[f"MN K={k}"] = ModeNorm2d(c, k)
        if device.type == "cpu":  # on CUDA the rows above already take the torch-op path
            layers["MN K=2" + TORCH_OPS] = ModeNorm2d(c, 2)
        layers["literal K=2"] = LiteralModeNorm(c, 2)
        layers["literal K=6"] = LiteralModeNorm(c, 6)
        layers = {n: layer.to(device) for n, layer in layers.items()}
        # interleave: each round times every layer once, so drifts hit all rows alike
        train: Dict[str, List[float]] = {n: [] for n in layers}
        evals: Dict[str, List[float]] = {n: [] for n in layers}
        steps = layer_steps(layers, x, gy)
        for tr, ev in steps.values():
            tr(), ev()
        for _ in range(reps):
            for n, (tr, ev) in steps.items():
                if n.startswith("literal") and len(train[n]) >= max(3, reps // 3):
                    continue  # the literal loop is slow; a few samples give its median
                train[n].append(_once(tr, device))
                evals[n].append(_once(ev, device))
        med_t = {n: statistics.median(v) for n, v in train.items()}
        med_e = {n: statistics.median(v) for n, v in evals.items()}
        for n in layers:
            rt, re = med_t[n] / med_t["BatchNorm2d"], med_e[n] / med_e["BatchNorm2d"]
            summary.setdefault(f"train {n}", []).append(rt)
            summary.setdefault(f"eval {n}", []).append(re)
            print(f"{label + ' ' + 'x'.join(map(str, shape)):<34}{n:<16}{med_t[n] * 1e3:>10.2f}{rt:>8.2f}"
                  f"{med_e[n] * 1e3:>10.2f}{re:>8.2f}")
        summary.setdefault("K=6 / K=2 train", []).append(med_t["MN K=6"] / med_t["MN K=2"])
        # the same ratio per round (K=2 and K=6 timed back to back), so that load drifts cancel
        paired = statistics.median(t6 / t2 for t6, t2 in zip(train["MN K=6"], train["MN K=2"], strict=True))
        summary.setdefault("K=6 / K=2 train, paired", []).append(paired)
        print(f"{'':<34}{'K=6/K=2 paired':<16}{paired:>10.2f}")
        summary.setdefault("literal / ours, K=6 train", []).append(med_t["literal K=6"] / med_t["MN K=6"])
        print()
    print("Median over shapes:")
    for key in ("train MN K=2", "eval MN K=2", "train MN K=2" + TORCH_OPS, "eval MN K=2" + TORCH_OPS,
                "K=6 / K=2 train", "K=6 / K=2 train, paired", "literal / ours, K=6 train"):
        if key in summary:
            print(f"  {key:<28}{statistics.median(summary[key]):>8.2f}")


def bench_network(reps: int, memory_format: torch.memory_format = torch.contiguous_format,
                  device: torch.device = torch.device("cpu")) -> None:
    import timm
    import mnzoo  # noqa: F401  (registers the models)

    if not (timm.is_model("resnet20_bn") and timm.is_model("resnet20_mn")):
        print("resnet20_bn / resnet20_mn not registered: skipping the whole-network line")
        return
    x = torch.randn(128, 3, 32, 32, device=device).contiguous(memory_format=memory_format)
    y = torch.randint(0, 10, (128,), device=device)
    variants = {"BN": ("resnet20_bn", True), "MN": ("resnet20_mn", True)}
    if device.type == "cpu":
        variants["MN" + TORCH_OPS] = ("resnet20_mn", False)
    times: Dict[str, List[float]] = {v: [] for v in variants}
    eval_times: Dict[str, List[float]] = {v: [] for v in variants}
    steps, forwards = {}, {}
    for label, (name, kernels) in variants.items():
        torch.manual_seed(0)
        net = timm.create_model(name, num_classes=10).to(device, memory_format=memory_format).train()
        opt = torch.optim.SGD(net.parameters(), lr=0.1, momentum=0.9)
        frozen = copy.deepcopy(net).eval()

        def step(net=net, opt=opt, kernels=kernels) -> None:
            opt.zero_grad(set_to_none=True)
            with _kernels(kernels):
                F.cross_entropy(net(x), y).backward()
            opt.step()

        def forward(net=frozen, kernels=kernels) -> None:
            with torch.no_grad(), _kernels(kernels):
                net(x)
        steps[label], forwards[label] = step, forward
        step(), forward()
    for _ in range(reps):
        for label in variants:
            times[label].append(_once(steps[label], device))
            eval_times[label].append(_once(forwards[label], device))
    for title, samples in (("training step", times), ("eval forward", eval_times)):
        med = {v: statistics.median(t) for v, t in samples.items()}
        print(f"ResNet20 {title}, batch 128 (median ms, ratio to BN):")
        for label in variants:
            print(f"  {label:<14}{med[label] * 1e3:>9.1f}{med[label] / med['BN']:>8.2f}")


def device_setup(ap: argparse.ArgumentParser, args: argparse.Namespace
                 ) -> Tuple[torch.device, torch.memory_format, str]:
    """(device, memory format, a line saying where it runs) from --device and --channels-last;
    --device cuda without a GPU stops with a message. Shared with norm_memory.py."""
    if args.device == "cuda" and not torch.cuda.is_available():
        ap.error("--device cuda: no CUDA device is available")
    device = torch.device(args.device)
    if device.type == "cuda":
        where = f"CUDA {torch.cuda.get_device_name(device)}, torch-op path"
    else:
        where = f"CPU, mnzoo CPU kernels {'on' if build_cpu_kernels() else 'NOT AVAILABLE'}"
    layout = "channels_last" if args.channels_last else "NCHW"
    return device, torch.channels_last if args.channels_last else torch.contiguous_format, f"{where}, {layout}"


def main(argv: Optional[Sequence[str]] = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--reps", type=int, default=15)
    ap.add_argument("--threads", type=int, default=torch.get_num_threads())
    ap.add_argument("--quick", action="store_true", help="ResNet20 shapes only, no network line")
    ap.add_argument("--network-only", action="store_true", help="only the whole-network lines")
    ap.add_argument("--channels-last", action="store_true",
                    help="inputs (and the ResNet20 models) in channels_last, BN as well")
    ap.add_argument("--device", default="cpu", choices=("cpu", "cuda"),
                    help="cuda: time the layers on the GPU (the torch-op path), synchronised")
    args = ap.parse_args(argv)
    device, memory_format, where = device_setup(ap, args)
    torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {args.threads} threads, {args.reps} reps, fp32, {where}\n")
    if not args.network_only:
        bench_layers(args.reps, args.quick, memory_format, device)
    if not args.quick:
        print()
        bench_network(args.reps, memory_format, device)


if __name__ == "__main__":
    main()
