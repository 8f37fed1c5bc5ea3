"""The command line of training/train.py: its flags, recipe YAML as their defaults, and checks.

A recipe's keys are the flag names with underscores; flags given on the command line override it.
A resumed run (``--resume``) reads its own config.yaml the same way.
"""
from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any, Optional, Sequence

import torch
import yaml

from validate import DATASET_KINDS, parse_eval_data, parse_model_kwargs

__all__ = ["COMPILE_MODES", "build_parser", "parse_args"]

REPO = Path(__file__).resolve().parents[1]

COMPILE_MODES = ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", default=None, help="recipe YAML; its keys set the defaults of the flags below")
    g = p.add_argument_group("model")
    g.add_argument("--model", default=None, help="timm model name, e.g. resnet20_mn")
    g.add_argument("--model-kwargs", nargs="*", default=None, help="key=value for timm.create_model (e.g. num_modes=4)")
    g.add_argument("--num-classes", type=int, default=None, help="default: the training set's")
    g.add_argument("--pretrained", action="store_true",
                   help="start from the published weights of --model (e.g. lenet_mn.multidomain); a new "
                        "classifier when --num-classes differs from theirs")
    g.add_argument("--initial-checkpoint", default=None,
                   help="start from the weights of this file (a train.py checkpoint, a state_dict or "
                        "safetensors; every key must match); --resume, by contrast, continues a run")
    g = p.add_argument_group("data")
    g.add_argument("--dataset", default="single", choices=DATASET_KINDS,
                   help="single: one small-image source; multidomain: the 40-way mix; imagefolder: ImageNet-style")
    g.add_argument("--train-data", nargs="+", default=None, help="domain=path[@split] source(s) (imagefolder: a root)")
    g.add_argument("--eval-data", nargs="*", default=None,
                   help="name:domain=path[@split][,...]; first one ranks checkpoints")
    g.add_argument("--train-subset", type=int, default=None, help="train on a seeded random subset of this size")
    g.add_argument("--eval-subset", type=int, default=None, help="evaluate on a seeded random subset of this size")
    g.add_argument("--cache-dir", default=None, help="uint8 tensor cache (default $MNZOO_CACHE or ~/.cache/mnzoo)")
    g.add_argument("--no-cache", action="store_true", help="decode the data without reading or writing the cache")
    g.add_argument("--download", action="store_true", help="let torchvision download CIFAR/SVHN/MNIST into the root")
    g.add_argument("--crop-pad", type=int, default=0, help="random crop after zero padding by this many px (0: off)")
    g.add_argument("--hflip", action=argparse.BooleanOptionalAction, default=False, help="random horizontal flip")
    g.add_argument("--input-size", type=int, default=224, help="imagefolder crop size")
    g.add_argument("--workers", type=int, default=4, help="imagefolder DataLoader workers")
    g = p.add_argument_group("optimisation")
    g.add_argument("--batch-size", type=int, default=128, help="global batch size N (split over processes)")
    g.add_argument("--eval-batch-size", type=int, default=500)
    g.add_argument("--opt", default="momentum", help="timm optimizer ('momentum' = SGD+momentum, 'sgd' = Nesterov)")
    g.add_argument("--lr", type=float, default=0.1)
    g.add_argument("--momentum", type=float, default=0.9)
    g.add_argument("--weight-decay", type=float, default=1e-4)
    g.add_argument("--wd-filter-norm", action=argparse.BooleanOptionalAction, default=False,
                   help="exempt biases and norm weights from weight decay "
                        "(timm's habit; the paper's PyTorch SGD does not)")
    g.add_argument("--sched", default="multistep", help="timm scheduler name")
    g.add_argument("--epochs", type=int, default=160, help="epochs (when --schedule-unit is epochs)")
    g.add_argument("--schedule-unit", default="epochs", choices=("epochs", "updates", "touches"),
                   help="unit of --schedule-length and --decay-milestones; updates/touches step the lr per update")
    g.add_argument("--schedule-length", type=float, default=None, help="total updates or touches (non-epoch units)")
    g.add_argument("--decay-milestones", type=float, nargs="*", default=[80, 120])
    g.add_argument("--decay-rate", type=float, default=0.1)
    g.add_argument("--warmup-epochs", type=float, default=0)
    g.add_argument("--warmup-lr", type=float, default=1e-5)
    g.add_argument("--min-lr", type=float, default=0.0)
    g.add_argument("--model-ema", action="store_true", help="keep a ModelEmaV3 copy and evaluate it too")
    g.add_argument("--model-ema-decay", type=float, default=0.9998)
    g = p.add_argument_group("runtime")
    g.add_argument("--seed", type=int, default=0)
    g.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    g.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: cores / local processes)")
    g.add_argument("--amp", action="store_true", help="autocast (with a grad scaler for float16)")
    g.add_argument("--amp-dtype", default="float16", choices=("float16", "bfloat16"))
    g.add_argument("--channels-last", action=argparse.BooleanOptionalAction, default=False)
    g.add_argument("--compile", action="store_true", help="torch.compile the model")
    g.add_argument("--compile-mode", default=None, choices=COMPILE_MODES,
                   help="torch.compile mode (with --compile); reduce-overhead and max-autotune use CUDA graphs on GPU")
    g.add_argument("--sync-norm", action="store_true", help="DDP: MN -> SyncModeNorm2d, BN -> SyncBatchNorm")
    g.add_argument("--deterministic", action="store_true", help="torch.use_deterministic_algorithms (CUDA)")
    g.add_argument("--output", default=str(REPO / "runs"), help="parent folder of run folders")
    g.add_argument("--experiment", default=None, help="run folder name (default: <model>-<recipe>)")
    g.add_argument("--resume", default=None, help="checkpoint to continue from (its run folder is reused)")
    g.add_argument("--log-interval", type=int, default=50, help="log a line every N steps")
    g.add_argument("--checkpoint-hist", type=int, default=1, help="numbered checkpoints kept besides last/best")
    return p


def _coerce(parser: argparse.ArgumentParser, dest: str, value: Any) -> Any:
    """Apply the flag's type to a recipe value (YAML reads 2.5e6 as a string, argparse never sees it)."""
    action = next(a for a in parser._actions if a.dest == dest)
    convert = action.type
    if not callable(convert):  # None: a plain string flag
        return value
    try:
        if isinstance(value, list):
            return [convert(v) for v in value]
        return convert(value) if value is not None else None
    except (TypeError, ValueError) as e:
        name = getattr(convert, "__name__", repr(convert))
        raise SystemExit(f"error: recipe key {dest}: {value!r} is not a valid {name} ({e})") from None


def _check_numbers(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Values no run can use, named before any data loads, whether they came from the command line,
    a recipe or a resumed run's config.yaml (argparse checks none of these ranges)."""
    at_least = {"batch_size": 1, "eval_batch_size": 1, "epochs": 1, "crop_pad": 0, "input_size": 1, "workers": 0,
                "log_interval": 0, "checkpoint_hist": 0, "warmup_epochs": 0, "warmup_lr": 0, "min_lr": 0, "lr": 0,
                "weight_decay": 0, "threads": 1, "num_classes": 1, "train_subset": 1, "eval_subset": 1}
    for dest, low in at_least.items():
        value = getattr(args, dest)
        if value is not None and value < low:
            parser.error(f"--{dest.replace('_', '-')} must be >= {low}, got {value}")
    above_zero = {"decay_rate": args.decay_rate, "schedule_length": args.schedule_length}  # lr 0: a frozen run
    for dest, value in above_zero.items():
        if value is not None and not value > 0:
            parser.error(f"--{dest.replace('_', '-')} must be > 0, got {value}")
    if not 0 <= args.momentum < 1:
        parser.error(f"--momentum must be in [0, 1), got {args.momentum}")
    if not 0 < args.model_ema_decay < 1:
        parser.error(f"--model-ema-decay must be in (0, 1), got {args.model_ema_decay}")
    steps = list(args.decay_milestones or [])
    if any(m < 0 for m in steps) or steps != sorted(steps):
        parser.error(f"--decay-milestones must be >= 0 and increasing, got {steps}")


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    """Recipe YAML (or the resumed run's config.yaml) as defaults, then command-line overrides."""
    parser = build_parser()
    pre, _ = parser.parse_known_args(argv)
    config_path = pre.config
    if config_path is None and pre.resume:
        config_path = str(Path(pre.resume).parent / "config.yaml")
    if config_path:
        with open(config_path) as f:
            cfg = yaml.safe_load(f) or {}
        known = {a.dest for a in parser._actions}
        unknown = sorted(set(cfg) - known - {"recipe", "resolved"})
        if unknown:
            raise SystemExit(f"error: {config_path}: unknown keys {unknown}")
        parser.set_defaults(**{k: _coerce(parser, k, v) for k, v in cfg.items() if k in known and k != "config"})
    args = parser.parse_args(argv)
    args.recipe = pre.config if pre.config else (cfg.get("recipe") if config_path else None)
    if not args.model:
        parser.error("--model is required (in the recipe or on the command line)")
    if not args.train_data:
        parser.error("--train-data is required (in the recipe or on the command line)")
    if args.schedule_unit != "epochs" and not args.schedule_length:
        parser.error(f"--schedule-unit {args.schedule_unit} needs --schedule-length")
    if args.compile_mode is not None and args.compile_mode not in COMPILE_MODES:  # a recipe skips choices
        parser.error(f"--compile-mode {args.compile_mode!r}: choose from {', '.join(COMPILE_MODES)}")
    if args.compile_mode is not None and not args.compile:
        parser.error(f"--compile-mode {args.compile_mode} needs --compile")
    _check_numbers(parser, args)
    # A resumed run continues in its checkpoint's folder unless --experiment is given on the command line.
    args.run_dir = str(Path(args.resume).resolve().parent) if args.resume and not pre.experiment else str(
        Path(args.output) / (args.experiment or f"{args.model}-{Path(args.recipe).stem if args.recipe else 'run'}"))
    args.model_kwargs = parse_model_kwargs(args.model_kwargs)
    args.eval_data = parse_eval_data(args.eval_data)
    return args
