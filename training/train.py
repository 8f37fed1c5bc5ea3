#!/usr/bin/env python3
"""Train a zoo model from a recipe, with timm's building blocks. CPU, CUDA and torchrun DDP.

    python training/train.py --config training/recipes/resnet20_cifar10.yaml --model resnet20_mn
    torchrun --nproc_per_node=4 training/train.py --config training/recipes/resnet18_imagenet.yaml
    python training/train.py --resume runs/resnet20_mn-cifar10/last.pth.tar     # continue a run
    python training/train.py --config training/recipes/resnet20_cifar100.yaml --model resnet20_mn.cifar10 \
        --pretrained --lr 0.01        # fine-tune published weights (new 100-way classifier)

A recipe (YAML) sets defaults for the flags below (keys are the flag names with underscores);
flags given on the command line override it. Each run writes runs/<experiment>/: config.yaml,
summary.csv (one row per epoch), last.pth.tar, model_best.pth.tar and metrics.json.

--batch-size is the *global* batch (the paper's N): each of P processes gets N/P samples, so a
recipe means the same on 1 CPU and on 8 GPUs. Randomness depends only on (--seed, epoch): the
shuffle, the crops and flips, and the model's initialisation; see training/README.md for what
remains non-deterministic.
"""
from __future__ import annotations

import os

# Before torch loads OpenMP: idle OpenMP threads sleep instead of spinning. On a shared CPU,
# spinning threads that wait for a descheduled peer made a 2-thread ResNet20 step 5x slower
# (36 vs 173 img/s measured under load); set OMP_WAIT_POLICY=ACTIVE to override.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
import argparse
import csv
import json
import math
import platform
import random
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
import yaml
from torch.nn.parallel import DistributedDataParallel as DDP

import timm
from timm.models import load_checkpoint, resume_checkpoint
from timm.optim import create_optimizer_v2
from timm.scheduler import create_scheduler_v2
from timm.utils import CheckpointSaver, ModelEmaV3, NativeScaler, distribute_bn, init_distributed_device

sys.path.insert(0, str(Path(__file__).resolve().parent))
from train_args import parse_args  # noqa: E402
from validate import autocast_context, build_loader, evaluate  # noqa: E402

import mnzoo  # noqa: E402,F401  (registers the zoo's models with timm)
from mnzoo.layers import ModeNorm2d, SyncModeNorm2d, convert_sync_mode_norm  # noqa: E402
from mnzoo.weights import WeightsError  # noqa: E402

REPO = Path(__file__).resolve().parents[1]


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def git_commit() -> Optional[str]:
    try:
        sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True, text=True,
                             check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--", "mnzoo", "training"], cwd=REPO,
                               capture_output=True, text=True).stdout.strip()
        return sha + ("-dirty" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return None


def hardware(device: torch.device, world_size: int) -> Dict[str, Any]:
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return {
        "device": device.type,
        "cpu": cpu,
        "cpu_cores": os.cpu_count(),
        "threads": torch.get_num_threads(),
        "gpu": torch.cuda.get_device_name(device) if device.type == "cuda" else None,
        "world_size": world_size,
        "load_avg_at_start": [round(x, 2) for x in os.getloadavg()],
        "torch": torch.__version__,
        "timm": timm.__version__,
        "mnzoo": mnzoo.__version__,
    }


def schedule_epochs(args: argparse.Namespace, updates_per_epoch: int) -> tuple:
    """(epochs to run, max updates or None, milestones, lr steps per epoch?) for the schedule unit.

    Milestones are epoch indices for --schedule-unit epochs, else update indices: the lr drops
    *after* that many epochs / updates / touches (torch.optim.lr_scheduler.MultiStepLR's meaning).
    """
    if args.schedule_unit == "epochs":
        return args.epochs, None, list(args.decay_milestones), True
    per_update = 1 if args.schedule_unit == "updates" else args.batch_size
    total_updates = math.ceil(args.schedule_length / per_update)
    milestones = [math.ceil(m / per_update) for m in args.decay_milestones]
    return math.ceil(total_updates / updates_per_epoch), total_updates, milestones, False


def create_model_and_optimizer(args: argparse.Namespace, device: torch.device):
    """timm model (synchronised norms under DDP with --sync-norm), timm optimizer, AMP grad scaler or None."""
    fresh = not args.resume  # a resumed run takes its weights from the checkpoint alone
    try:
        model = timm.create_model(args.model, pretrained=args.pretrained and fresh, num_classes=args.num_classes,
                                  **args.model_kwargs)
    except WeightsError as e:
        raise SystemExit(f"error: --pretrained: {e}") from None
    if args.initial_checkpoint and fresh:
        if not Path(args.initial_checkpoint).is_file():
            raise SystemExit(f"error: --initial-checkpoint {args.initial_checkpoint}: no such file")
        try:
            load_checkpoint(model, args.initial_checkpoint, use_ema=False, strict=True)
        except RuntimeError as e:  # missing, unexpected or mis-shaped keys
            raise SystemExit(f"error: --initial-checkpoint {args.initial_checkpoint} does not fit "
                             f"{args.model}: {e}") from None
    if args.sync_norm and getattr(args, "distributed", False):
        has_bn = any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules())
        if has_bn and device.type != "cuda":
            raise SystemExit("error: --sync-norm on CPU: torch's SyncBatchNorm needs CUDA "
                             "(models whose norms are all MN can sync on CPU)")
        model = convert_sync_mode_norm(model)
        model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
        unsynced = sorted({type(m).__name__ for m in model.modules()
                           if isinstance(m, ModeNorm2d) and not isinstance(m, SyncModeNorm2d)})
        if unsynced and args.rank == 0:
            print(f"warning: --sync-norm leaves {unsynced} layers per-process (only ModeNorm2d has a "
                  "synchronised version)", flush=True)
    model.to(device)
    if args.channels_last:
        model.to(memory_format=torch.channels_last)
    optimizer = create_optimizer_v2(model, opt=args.opt, lr=args.lr, weight_decay=args.weight_decay,
                                    momentum=args.momentum, filter_bias_and_bn=args.wd_filter_norm)
    loss_scaler = NativeScaler(device=device.type) if args.amp and args.amp_dtype == "float16" else None
    return model, optimizer, loss_scaler


def create_schedule(args: argparse.Namespace, optimizer: torch.optim.Optimizer, updates_per_epoch: int):
    """timm scheduler for the recipe's schedule, its unit converted with the real epoch length.

    timm's multistep applies milestone m from schedule index m - 1 (see its docstring); the paper
    and torch's MultiStepLR mean "after m epochs", so milestones are passed as m + 1.
    """
    num_epochs, _, milestones, step_on_epochs = schedule_epochs(args, updates_per_epoch)
    shifted = [m + 1 for m in milestones]
    scheduler, _ = create_scheduler_v2(optimizer, sched=args.sched, num_epochs=num_epochs,
                                       decay_milestones=shifted if step_on_epochs else
                                       [m / updates_per_epoch for m in shifted],
                                       decay_rate=args.decay_rate, warmup_epochs=args.warmup_epochs,
                                       warmup_lr=args.warmup_lr, min_lr=args.min_lr,
                                       step_on_epochs=step_on_epochs, updates_per_epoch=updates_per_epoch)
    if not step_on_epochs and hasattr(scheduler, "decay_t"):
        scheduler.decay_t = shifted  # exact update indices (m / U * U need not round-trip in float)
    return scheduler


def write_summary(path: Path, row: Dict[str, Any]) -> None:
    new = not path.exists() or path.stat().st_size == 0
    with open(path, "a", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(row))
        if new:
            w.writeheader()
        w.writerow(row)


def previous_wall_time(run_dir: Path, start_epoch: int) -> Tuple[float, bool]:
    """Wall time of the earlier segments of a resumed run, and whether it is only a lower bound.

    ``wall_time.json`` is rewritten after every checkpoint, so a segment killed at some epoch still
    counts up to its last checkpoint. Runs from before that file existed fall back to metrics.json
    (segments that ended normally), then to the kept summary rows' epoch + eval times (a lower
    bound: start-up and checkpointing are missing)."""
    for name in ("wall_time.json", "metrics.json"):
        path = run_dir / name
        if path.exists():
            recorded = json.loads(path.read_text()).get("wall_time_s")
            if recorded is not None:
                return float(recorded), False
    rows = [r for r in read_summary(run_dir / "summary.csv") if int(r["epoch"]) < start_epoch]
    return sum(float(r["epoch_time_s"]) + float(r.get("eval_time_s") or 0.0) for r in rows), bool(rows)


def previous_segments(run_dir: Path, start_epoch: int) -> List[Dict[str, Any]]:
    """The earlier segments (processes) of a resumed run, from ``wall_time.json``, cut to the
    epochs before ``start_epoch`` (later ones are about to be re-run).

    A run from before segments were recorded gets one entry for epochs 0..start_epoch-1 with
    ``recorded: false`` and whatever commits and commands its metrics.json kept (segments that
    were killed never wrote one)."""
    if start_epoch <= 0:
        return []
    path = run_dir / "wall_time.json"
    segments = json.loads(path.read_text()).get("segments") if path.exists() else None
    if segments is None:
        old = json.loads((run_dir / "metrics.json").read_text()) if (run_dir / "metrics.json").exists() else {}
        return [{"first_epoch": 0, "last_epoch": start_epoch - 1, "recorded": False,
                 "git_commits": old.get("git_commits", [old["git_commit"]] if "git_commit" in old else []),
                 "commands": old.get("commands", [old["command"]] if "command" in old else [])}]
    return [{**s, "last_epoch": min(s["last_epoch"], start_epoch - 1)}
            for s in segments if s["first_epoch"] < start_epoch and s["last_epoch"] is not None]


def run_command(args) -> str:
    cmd = " ".join([Path(sys.executable).name] + sys.argv)
    return f"torchrun --nproc_per_node={args.world_size} " + " ".join(sys.argv) if args.world_size > 1 else cmd


def read_summary(path: Path) -> List[Dict[str, str]]:
    if not path.exists():
        return []
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def trim_summary(path: Path, start_epoch: int) -> None:
    """On resume, drop rows of epochs that are about to be re-run."""
    rows = [r for r in read_summary(path) if int(r["epoch"]) < start_epoch]
    if path.exists():
        path.unlink()
    for r in rows:
        write_summary(path, r)


def main(argv: Optional[Sequence[str]] = None) -> Dict[str, Any]:
    args = parse_args(argv)
    t_start = time.time()
    commit = git_commit()  # now, not when metrics.json is written: the code that runs is this one
    args.dist_backend = None
    device = init_distributed_device(args)  # sets args.rank/world_size/distributed; gloo on CPU, nccl on CUDA
    primary = args.rank == 0
    if args.threads:
        torch.set_num_threads(args.threads)
    elif device.type == "cpu" and args.world_size > 1:
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // int(os.environ.get("LOCAL_WORLD_SIZE", args.world_size))))
    if args.deterministic:
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.benchmark = False
    seed_everything(args.seed)

    def log(msg: str) -> None:
        if primary:
            print(msg, flush=True)

    # Data
    train_loader = build_loader(args, args.train_data, train=True, rank=args.rank, world_size=args.world_size,
                                device=device, subset=args.train_subset)
    eval_loaders = {name: build_loader(args, srcs, train=False, rank=args.rank, world_size=args.world_size,
                                       device=device, subset=args.eval_subset)
                    for name, srcs in args.eval_data.items()}
    train_data = getattr(train_loader, "data", None)
    if args.num_classes is None:
        args.num_classes = train_loader.num_classes
    elif args.num_classes < train_loader.num_classes:
        raise SystemExit(f"error: --num-classes {args.num_classes} is fewer than the {train_loader.num_classes} "
                         "label values of the training data")
    updates_per_epoch = len(train_loader)
    num_epochs, max_updates, milestones, step_on_epochs = schedule_epochs(args, updates_per_epoch)

    model, optimizer, loss_scaler = create_model_and_optimizer(args, device)
    n_params = sum(p.numel() for p in model.parameters())
    autocast = autocast_context(args, device)

    run_dir = Path(args.run_dir)
    start_epoch = 0
    if args.resume:
        start_epoch = resume_checkpoint(model, args.resume, optimizer=optimizer, loss_scaler=loss_scaler,
                                        log_info=primary) or 0
    model_ema = None
    if args.model_ema:
        model_ema = ModelEmaV3(model, decay=args.model_ema_decay)
        if args.resume:
            from timm.models._helpers import _torch_load
            ema_state = _torch_load(args.resume).get("state_dict_ema")
            if ema_state is None:
                log(f"warning: {args.resume} has no EMA weights; the EMA restarts from the resumed model")
            else:
                model_ema.module.load_state_dict(ema_state)
    train_model = model
    if args.compile:
        train_model = torch.compile(model, mode=args.compile_mode)
    # CUDA graphs reuse their output memory: mark where each training step begins (torch's advice
    # for training loops under cudagraph trees; a no-op where no graphs are recorded)
    mark_step = args.compile and args.compile_mode in ("reduce-overhead", "max-autotune")
    if args.distributed:
        train_model = DDP(train_model, device_ids=[device.index] if device.type == "cuda" else None)
    scheduler = create_schedule(args, optimizer, updates_per_epoch)
    num_updates = start_epoch * updates_per_epoch
    if scheduler is not None and start_epoch > 0:
        scheduler.step(start_epoch) if step_on_epochs else scheduler.step_update(num_updates)

    saver = None
    wall_before, wall_lower_bound = 0.0, False  # earlier segments of a resumed run
    # This process is one segment of the run; wall_time.json keeps them all, killed ones included.
    segment = {"first_epoch": start_epoch, "last_epoch": None, "recorded": True, "git_commit": commit,
               "command": run_command(args), "started_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
               "hardware": hardware(device, args.world_size)}
    segments: List[Dict[str, Any]] = [segment]

    def wall_time() -> float:
        """Wall time of the whole run so far: earlier segments plus this process."""
        return wall_before + time.time() - t_start
    summary_path = run_dir / "summary.csv"
    if primary:
        run_dir.mkdir(parents=True, exist_ok=True)
        runtime = ("config", "rank", "local_rank", "world_size", "distributed", "dist_backend", "run_dir")
        resolved = {k: v for k, v in vars(args).items() if k not in runtime}
        resolved["resolved"] = {"num_epochs": num_epochs, "max_updates": max_updates, "milestones": milestones,
                                "updates_per_epoch": updates_per_epoch,
                                "train_images": len(train_data) if train_data is not None else None}
        with open(run_dir / "config.yaml", "w") as f:
            yaml.safe_dump(resolved, f, sort_keys=False)
        saver = CheckpointSaver(model, optimizer, args=args, model_ema=model_ema, amp_scaler=loss_scaler,
                                checkpoint_dir=str(run_dir), recovery_dir=str(run_dir), decreasing=False,
                                max_history=args.checkpoint_hist)
        if args.resume:
            saver.load_state_dict_from_checkpoint(args.resume)
            wall_before, wall_lower_bound = previous_wall_time(run_dir, start_epoch)
            segments = previous_segments(run_dir, start_epoch) + [segment]
            trim_summary(summary_path, start_epoch)
    log(f"{args.model}: {n_params / 1e6:.3f}M params, {len(train_data) if train_data is not None else '?'} train "
        f"images, {updates_per_epoch} updates/epoch, epochs {start_epoch}->{num_epochs}, world {args.world_size}, "
        f"device {device}, threads {torch.get_num_threads()}, run {run_dir}")

    for epoch in range(start_epoch, num_epochs):
        train_loader.set_epoch(epoch)
        train_model.train()
        sums = torch.zeros(3, dtype=torch.float64, device=device)  # loss*n, correct, n
        t0 = time.perf_counter()
        data_time = 0.0
        t_data = time.perf_counter()
        for step, (x, y, _) in enumerate(train_loader):
            if max_updates is not None and num_updates >= max_updates:
                break
            data_time += time.perf_counter() - t_data
            if mark_step:
                torch.compiler.cudagraph_mark_step_begin()
            with autocast():
                out = train_model(x)
                loss = F.cross_entropy(out, y)
            optimizer.zero_grad(set_to_none=True)
            if loss_scaler is not None:
                loss_scaler(loss, optimizer)
            else:
                loss.backward()
                optimizer.step()
            if model_ema is not None:
                model_ema.update(model, step=num_updates)
            num_updates += 1
            if scheduler is not None:
                scheduler.step_update(num_updates)
            with torch.no_grad():
                # torch.full, not torch.tensor: a host-to-device copy would synchronise every step on CUDA
                sums += torch.stack([loss.detach().double() * y.numel(), (out.argmax(1) == y).sum().double(),
                                     torch.full((), float(y.numel()), dtype=torch.float64, device=device)])
            if primary and args.log_interval and (step + 1) % args.log_interval == 0:
                el = time.perf_counter() - t0
                ips = (step + 1) * args.batch_size / el
                left = (max_updates or num_epochs * updates_per_epoch) - num_updates
                eta = min(updates_per_epoch - step - 1, left) * el / (step + 1)
                log(f"epoch {epoch} [{step + 1}/{updates_per_epoch}] loss {float(sums[0] / sums[2]):.4f} "
                    f"lr {optimizer.param_groups[0]['lr']:.4g} {ips:.0f} img/s data {100 * data_time / el:.1f}% "
                    f"eta {eta:.0f}s (run {left * el / (step + 1) / 60:.1f} min)")
            t_data = time.perf_counter()
        if device.type == "cuda":
            torch.cuda.synchronize()
        epoch_time = time.perf_counter() - t0
        if args.distributed:
            torch.distributed.all_reduce(sums)
            if not args.sync_norm:
                distribute_bn(model, args.world_size, reduce=True)  # average running stats (BN and MN)
        lr = optimizer.param_groups[0]["lr"]
        t_eval = time.perf_counter()
        evals = {name: evaluate(model, ld, autocast) for name, ld in eval_loaders.items()}
        if model_ema is not None:
            evals.update({f"{name}_ema": evaluate(model_ema.module, ld, autocast) for name, ld in eval_loaders.items()})
        eval_time = time.perf_counter() - t_eval
        if scheduler is not None and step_on_epochs:
            scheduler.step(epoch + 1)
        n_seen = float(sums[2])
        row = {"epoch": epoch, "train_loss": round(float(sums[0]) / n_seen, 6),
               "train_top1": round(100 * float(sums[1]) / n_seen, 4), "lr": lr,
               "img_per_s": round(n_seen / epoch_time, 1), "epoch_time_s": round(epoch_time, 2),
               "data_share": round(data_time / epoch_time, 4), "eval_time_s": round(eval_time, 2)}
        for name, res in evals.items():
            row.update({f"{name}_top1": res["top1"], f"{name}_top5": res["top5"], f"{name}_loss": res["loss"]})
        log(" ".join(f"{k} {v}" for k, v in row.items()))
        if primary:
            write_summary(summary_path, row)
            metric = next(iter(evals.values()))["top1"] if evals else None
            assert saver is not None  # made above, by the primary process
            saver.save_checkpoint(epoch, metric=metric)
            segment["last_epoch"] = epoch
            (run_dir / "wall_time.json").write_text(json.dumps(
                {"epoch": epoch, "wall_time_s": round(wall_time(), 1), "segments": segments}, indent=1))
        if max_updates is not None and num_updates >= max_updates:
            break

    result: Dict[str, Any] = {}
    if primary:
        result = write_metrics(args, run_dir, device, n_params, train_data, evals if num_epochs > start_epoch else {},
                               saver, num_updates, wall_time(), wall_lower_bound, commit, segments)
        log(f"metrics: {run_dir / 'metrics.json'}")
    if args.distributed:
        torch.distributed.barrier()
        torch.distributed.destroy_process_group()
    return result


def write_metrics(args, run_dir: Path, device, n_params: int, train_data, evals, saver, num_updates: int,
                  wall_time: float, wall_lower_bound: bool, commit: Optional[str],
                  segments: List[Dict[str, Any]]) -> Dict[str, Any]:
    """metrics.json: what the model card needs. ``eval`` is the final (last.pth.tar) model;
    ``git_commit`` is the checkout this process started from; ``segments`` has one entry per
    process of a resumed run (epochs, commit, command, hardware), and ``git_commits`` /
    ``commands`` list theirs in order."""
    rows = read_summary(run_dir / "summary.csv")
    old = {}
    if (run_dir / "metrics.json").exists() and args.resume:
        old = json.loads((run_dir / "metrics.json").read_text())
    if not evals and old:
        evals = old.get("eval", {})
    cmd = run_command(args)
    metrics = {
        "model": args.model,
        "model_kwargs": args.model_kwargs,
        "num_classes": args.num_classes,
        "params": n_params,
        "dataset": args.dataset,
        "train_data": args.train_data,
        "train_images": len(train_data) if train_data is not None else None,
        "epochs": len(rows),
        "updates": num_updates,
        "batch_size": args.batch_size,
        "seed": args.seed,
        "eval": evals,
        "checkpoint": "last.pth.tar",
        "best": {"epoch": saver.best_epoch, "top1": saver.best_metric, "checkpoint": "model_best.pth.tar",
                 "eval_set": next(iter(args.eval_data), None)},
        "train_time_s": round(sum(float(r["epoch_time_s"]) for r in rows), 1),
        "wall_time_s": round(wall_time, 1),
        "wall_time_lower_bound": wall_lower_bound,
        "img_per_s_median": float(np.median([float(r["img_per_s"]) for r in rows])) if rows else None,
        "hardware": hardware(device, args.world_size),
        "git_commit": commit,
        "git_commits": [c for seg in segments for c in seg.get("git_commits", [seg.get("git_commit")])],
        "command": cmd,
        "commands": [c for seg in segments for c in seg.get("commands", [seg.get("command")])],
        "segments": segments,
        "recipe": args.recipe,
    }
    with open(run_dir / "metrics.json", "w") as f:
        json.dump(metrics, f, indent=2)
    return metrics


if __name__ == "__main__":
    main()
