#!/usr/bin/env python3
"""Training speed of CIFAR ResNet20 on this machine: BN vs MN (K=2, K=6), with the real data path.

One timed step = fetch a batch from the uint8-tensor loader (index, pad-4 crop, flip, normalise)
+ forward + cross-entropy + backward + SGD(momentum) step, batch 128, exactly as train.py does.
The models are measured in interleaved rounds (BN, MN2, MN6, BN, ...) so that load from other
processes on a shared machine hits all of them alike; the table reports medians over all timed
steps and ratios to BN measured in the same run.

    python benchmarks/train_speed.py --data ../shared/data/cifar10/train.tar
    python benchmarks/train_speed.py --threads 1 --rounds 5 --steps 10
    python benchmarks/train_speed.py --formats nchw channels_last   # both layouts in one run
    python benchmarks/train_speed.py --device cuda --compile-mode reduce-overhead   # on a GPU

With several --formats, every model runs in each layout (batches are converted in the timed
step for channels_last), and "vs NCHW" compares each to the same model in NCHW. With
--device cuda each step is bracketed by torch.cuda.synchronize(); --compile-mode compiles every
model with that torch.compile mode (compilation happens in the untimed warm-up steps).
"""
from __future__ import annotations

import os

# Before torch loads OpenMP: idle OpenMP threads sleep instead of spinning. On a shared CPU,
# spinning threads that wait for a descheduled peer made a 2-thread ResNet20 step 5x slower
# (36 vs 173 img/s measured under load); set OMP_WAIT_POLICY=ACTIVE to override.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
import argparse
import platform
import statistics
import time
from typing import Dict, List, Optional, Sequence

import torch
import torch.nn.functional as F

import timm
import mnzoo  # noqa: F401  (registers resnet20_bn / resnet20_mn)
from mnzoo.data import BatchAugment, ImageTensors, TensorLoader, build_dataset

COMPILE_MODES = ("eager", "default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")
CONFIGS = [("BN", "resnet20_bn", {}), ("MN K=2", "resnet20_mn", {"num_modes": 2}),
           ("MN K=6", "resnet20_mn", {"num_modes": 6})]


def synthetic_cifar(n: int = 10000) -> ImageTensors:
    g = torch.Generator().manual_seed(0)
    return ImageTensors(torch.randint(0, 256, (n, 3, 32, 32), dtype=torch.uint8, generator=g),
                        torch.randint(0, 10, (n,), generator=g), torch.zeros(n, dtype=torch.long), ["cifar10"],
                        torch.tensor([[0.4914, 0.4822, 0.4465]]), torch.tensor([[0.2470, 0.2435, 0.2616]]), 10)


def cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            return next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        return platform.processor() or platform.machine()


def main(argv: Optional[Sequence[str]] = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", default=None, help="CIFAR-10 train ImageFolder tar/folder (default: synthetic uint8)")
    p.add_argument("--cache-dir", default=None)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--steps", type=int, default=10, help="timed steps per model per round")
    p.add_argument("--warmup", type=int, default=3, help="untimed steps per model before the first round")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--formats", nargs="+", choices=["nchw", "channels_last"], default=["nchw"],
                   help="memory layouts to time, interleaved (default: nchw)")
    p.add_argument("--channels-last", action="store_true", help="same as --formats channels_last")
    p.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    p.add_argument("--compile-mode", default="eager", choices=COMPILE_MODES,
                   help="torch.compile every model with this mode (eager: no compile)")
    args = p.parse_args(argv)
    if args.device == "cuda" and not torch.cuda.is_available():
        p.error("--device cuda: no CUDA device is available")
    device = torch.device(args.device)
    cuda = device.type == "cuda"
    mark_step = args.compile_mode in ("reduce-overhead", "max-autotune")  # CUDA graphs: one per step
    if args.channels_last:
        args.formats = ["channels_last"]
    formats = list(dict.fromkeys(args.formats))
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)

    data = build_dataset([f"cifar10={args.data}"], cache_dir=args.cache_dir) if args.data else synthetic_cifar()
    loader = TensorLoader(data, args.batch_size, shuffle=True, augment=BatchAugment(4, True),
                          channels_last=formats == ["channels_last"])
    batches = iter(())

    def next_batch(epoch=[0]):  # noqa: B006 (a counter that survives calls)
        nonlocal batches
        try:
            return next(batches)
        except StopIteration:
            epoch[0] += 1
            loader.set_epoch(epoch[0])
            batches = iter(loader)
            return next(batches)

    layouts = {"nchw": torch.contiguous_format, "channels_last": torch.channels_last}
    convert = len(formats) > 1  # the loader's batches are NCHW then; each step converts its own
    setups = []  # ((config label, format), model, optimiser)
    for fmt in formats:
        for label, name, kwargs in CONFIGS:
            model = timm.create_model(name, num_classes=10, **kwargs).to(device, memory_format=layouts[fmt]).train()
            opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-4)
            if args.compile_mode != "eager":
                model = torch.compile(model, mode=args.compile_mode)
            setups.append(((label, fmt), model, opt))

    def step(key, model, opt) -> tuple:
        if cuda:
            torch.cuda.synchronize(device)
        t0 = time.perf_counter()
        x, y, _ = next_batch()
        x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
        if convert:
            x = x.contiguous(memory_format=layouts[key[1]])
        t1 = time.perf_counter()
        if mark_step:
            torch.compiler.cudagraph_mark_step_begin()
        loss = F.cross_entropy(model(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if cuda:
            torch.cuda.synchronize(device)
        return t1 - t0, time.perf_counter() - t0

    for key, model, opt in setups:
        for _ in range(args.warmup):
            step(key, model, opt)
    times: Dict[tuple, List[tuple]] = {key: [] for key, _, _ in setups}
    load_before = os.getloadavg()
    for _ in range(args.rounds):
        for key, model, opt in setups:
            times[key] += [step(key, model, opt) for _ in range(args.steps)]
    load_after = os.getloadavg()

    bs = args.batch_size
    med = {k: statistics.median(t for _, t in v) for k, v in times.items()}
    where = torch.cuda.get_device_name(device) if cuda else cpu_name()
    print(f"# ResNet20 training step, batch {bs}, {where}, {torch.get_num_threads()} threads, "
          f"OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY')}, torch {torch.__version__}, "
          f"{' and '.join(formats)}, "
          f"{'real CIFAR-10 data' if args.data else 'synthetic data'}, "
          f"{'eager' if args.compile_mode == 'eager' else 'torch.compile mode ' + args.compile_mode}")
    print(f"# {args.rounds} interleaved rounds x {args.steps} steps per model; load average "
          f"{load_before[0]:.1f} before, {load_after[0]:.1f} after (2 = both cores busy)")
    print("| model | step (ms, median) | img/s | 50k-image epoch (s) | time vs BN | data share |"
          + (" time vs NCHW |" if convert else ""))
    print("|---|---|---|---|---|---|" + ("---|" if convert else ""))
    for (label, fmt), v in times.items():
        t = med[label, fmt]
        share = statistics.median(d for d, _ in v) / t
        vs_nchw = (f" {t / med[label, 'nchw']:.2f} |" if "nchw" in formats else " – |") if convert else ""
        print(f"| {f'{label}, {fmt}' if convert else label} | {1e3 * t:.0f} | {bs / t:.0f} | "
              f"{50000 / (bs / t):.0f} | {t / med['BN', fmt]:.2f} | {100 * share:.1f} % |{vs_nchw}")


if __name__ == "__main__":
    main()
