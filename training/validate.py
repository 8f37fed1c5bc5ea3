#!/usr/bin/env python3
"""Evaluate a training checkpoint (or any timm model) on one or more eval sets: top-1, top-5, loss.

    python training/validate.py --checkpoint runs/resnet20_mn-cifar10/last.pth.tar
    python training/validate.py --checkpoint runs/x/model_best.pth.tar \
        --eval-data test-lossless-1k:cifar10=../shared/data/cifar10/test-lossless-1k.tar

Without --eval-data the eval sets recorded in the checkpoint's run config are used, so this
reproduces the numbers train.py wrote to metrics.json. train.py imports the helpers below.
"""
from __future__ import annotations

import os

# Before torch loads OpenMP: idle OpenMP threads sleep instead of spinning. On a shared CPU,
# spinning threads that wait for a descheduled peer made a 2-thread ResNet20 step 5x slower
# (36 vs 173 img/s measured under load); set OMP_WAIT_POLICY=ACTIVE to override.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
import argparse
import contextlib
import json
from typing import Any, Callable, ContextManager, Dict, List, Optional, Sequence

import torch
import torch.distributed as dist
import torch.nn.functional as F
import yaml

import timm
import mnzoo  # noqa: F401  (registers the zoo's models with timm)
from mnzoo.data import BatchAugment, TensorLoader, build_dataset, create_imagefolder_loader

DATASET_KINDS = ("single", "multidomain", "imagefolder")


def parse_eval_data(value: Any) -> Dict[str, List[str]]:
    """Eval sets as {name: [source, ...]} from a YAML mapping or CLI strings ``name:src[,src...]``."""
    if value is None:
        return {}
    if isinstance(value, dict):
        return {str(k): [v] if isinstance(v, str) else list(v) for k, v in value.items()}
    out: Dict[str, List[str]] = {}
    for item in value:
        name, sep, srcs = str(item).partition(":")
        if not sep or not srcs:
            raise ValueError(f"eval data {item!r} must look like 'name:domain=path[@split][,domain=path...]'")
        out[name] = srcs.split(",")
    return out


def parse_model_kwargs(value: Any) -> Dict[str, Any]:
    """Model kwargs from a YAML mapping or CLI ``key=value`` strings (values parsed as YAML scalars)."""
    if value is None:
        return {}
    if isinstance(value, dict):
        return dict(value)
    out = {}
    for item in value:
        key, sep, val = str(item).partition("=")
        if not sep:
            raise ValueError(f"model kwarg {item!r} must look like key=value")
        out[key] = yaml.safe_load(val)
    return out


def build_loader(args: argparse.Namespace, sources: Sequence[str], train: bool, rank: int = 0, world_size: int = 1,
                 device: torch.device | str = "cpu", subset: Optional[int] = None):
    """A loader for ``sources`` following args.dataset: uint8-tensor loader, or timm ImageFolder for imagefolder."""
    if args.dataset not in DATASET_KINDS:
        raise ValueError(f"dataset must be one of {DATASET_KINDS}, got {args.dataset!r}")
    if args.dataset == "imagefolder":
        if len(sources) != 1:
            raise ValueError(f"imagefolder takes one root path per split, got {list(sources)}")
        root, _, split = str(sources[0]).partition("@")
        root = root.partition("=")[2] or root  # accept 'imagenet=/path' and '/path'
        bs = (args.batch_size if train else args.eval_batch_size) // world_size
        return create_imagefolder_loader(root, split or ("train" if train else "val"), train, bs,
                                         input_size=args.input_size, workers=args.workers,
                                         distributed=world_size > 1, device=device,
                                         channels_last=args.channels_last, seed=args.seed)
    data = build_dataset(sources, multidomain=args.dataset == "multidomain", cache_dir=args.cache_dir,
                         download=args.download, use_cache=not args.no_cache)
    if subset and subset < len(data):
        # A seeded random subset, the same in every process: quick runs and tests.
        data = data.subset(torch.randperm(len(data), generator=torch.Generator().manual_seed(args.seed))[:subset])
    augment = BatchAugment(args.crop_pad, args.hflip) if train and (args.crop_pad or args.hflip) else None
    return TensorLoader(data, args.batch_size if train else args.eval_batch_size, shuffle=train, augment=augment,
                        seed=args.seed, rank=rank, world_size=world_size, device=device,
                        channels_last=args.channels_last)


def autocast_context(args: argparse.Namespace, device: torch.device) -> Callable[[], ContextManager]:
    """A factory of autocast contexts (or no-ops) for --amp / --amp-dtype."""
    if not args.amp:
        return contextlib.nullcontext
    dtype = {"float16": torch.float16, "bfloat16": torch.bfloat16}[args.amp_dtype]
    return lambda: torch.autocast(device_type=device.type, dtype=dtype)


def _all_reduce(t: torch.Tensor) -> torch.Tensor:
    if dist.is_available() and dist.is_initialized():
        dist.all_reduce(t)
    return t


@torch.no_grad()
def evaluate(model: torch.nn.Module, loader, autocast: Callable[[], ContextManager] = contextlib.nullcontext,
             domain_names: Optional[Sequence[str]] = None) -> Dict[str, Any]:
    """Top-1/top-5 accuracy (%) and mean loss over the whole eval set (summed over processes).

    With more than one domain, also the top-1 of each domain (multi-domain eval sets).
    """
    model.eval()
    device = next(model.parameters()).device
    if domain_names is None:
        domain_names = getattr(getattr(loader, "data", None), "domain_names", None)
    n_dom = len(domain_names) if domain_names else 1
    sums = torch.zeros(3 + 2 * n_dom, dtype=torch.float64, device=device)  # n, loss, top5, correct_d, n_d
    for x, y, d in loader:
        with autocast():
            out = model(x)
        out = out.float()
        sums[0] += y.numel()
        sums[1] += F.cross_entropy(out, y, reduction="sum").double()
        topk = out.topk(min(5, out.shape[1]), dim=1).indices
        hit = topk == y[:, None]
        sums[2] += hit.any(1).sum()
        sums[3:3 + n_dom] += torch.bincount(d, weights=hit[:, 0].double(), minlength=n_dom)
        sums[3 + n_dom:] += torch.bincount(d, minlength=n_dom).double()
    sums = _all_reduce(sums).cpu()
    n = int(sums[0])
    if n == 0:
        raise ValueError("eval set is empty")
    res: Dict[str, Any] = {
        "top1": round(100.0 * float(sums[3:3 + n_dom].sum()) / n, 4),
        "top5": round(100.0 * float(sums[2]) / n, 4),
        "loss": round(float(sums[1]) / n, 6),
        "n": n,
    }
    if domain_names and n_dom > 1:
        res["top1_per_domain"] = {
            name: round(100.0 * float(sums[3 + i]) / float(sums[3 + n_dom + i]), 4)
            for i, name in enumerate(domain_names) if sums[3 + n_dom + i] > 0
        }
    return res


def _checkpoint_args(path: str) -> Dict[str, Any]:
    from timm.models._helpers import _torch_load

    ckpt = _torch_load(path, weights_only=True)
    if not isinstance(ckpt, dict) or "state_dict" not in ckpt or "args" not in ckpt:
        raise ValueError(f"{path} is not a train.py checkpoint (needs 'state_dict' and 'args')")
    return ckpt


def main(argv: Optional[Sequence[str]] = None) -> Dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", required=True, help="train.py checkpoint (last.pth.tar, model_best.pth.tar)")
    parser.add_argument("--ema", action="store_true", help="evaluate the EMA weights stored in the checkpoint")
    parser.add_argument("--eval-data", nargs="+", default=None,
                        help="name:domain=path[@split][,...] (default: the run's)")
    parser.add_argument("--batch-size", type=int, default=None, help="eval batch size (default: the run's)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--cache-dir", default=None)
    parser.add_argument("--output", default=None, help="write the results as JSON here")
    cli = parser.parse_args(argv)

    ckpt = _checkpoint_args(cli.checkpoint)
    args = ckpt["args"]
    if cli.cache_dir is not None:
        args.cache_dir = cli.cache_dir
    if cli.batch_size:
        args.eval_batch_size = cli.batch_size
    device = torch.device(cli.device)
    model = timm.create_model(args.model, num_classes=args.num_classes, **parse_model_kwargs(args.model_kwargs))
    key = "state_dict_ema" if cli.ema else "state_dict"
    if key not in ckpt:
        raise ValueError(f"{cli.checkpoint} has no {key!r}")
    model.load_state_dict(ckpt[key])
    model.to(device)
    if args.channels_last:
        model.to(memory_format=torch.channels_last)
    eval_sets = parse_eval_data(cli.eval_data) if cli.eval_data else parse_eval_data(args.eval_data)
    if not eval_sets:
        raise ValueError("no eval data: pass --eval-data or use a checkpoint whose run had eval sets")
    autocast = autocast_context(args, device)
    results = {}
    for name, sources in eval_sets.items():
        loader = build_loader(args, sources, train=False, device=device, subset=args.eval_subset)
        results[name] = evaluate(model, loader, autocast)
        print(f"{name}: top1 {results[name]['top1']:.2f} top5 {results[name]['top5']:.2f} "
              f"loss {results[name]['loss']:.4f} (n={results[name]['n']})", flush=True)
    out = {"checkpoint": os.path.abspath(cli.checkpoint), "epoch": ckpt.get("epoch"), "model": args.model,
           "eval": results}
    if cli.output:
        with open(cli.output, "w") as f:
            json.dump(out, f, indent=2)
    return out


if __name__ == "__main__":
    main()
