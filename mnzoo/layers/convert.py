"""Swap the normalisation layers of an existing model for MN or MGN."""
from __future__ import annotations

import logging
from typing import List

import torch
from torch import nn

from .mode_norm import ModeGroupNorm, ModeNorm2d

__all__ = ["convert_to_mode_norm"]

_logger = logging.getLogger(__name__)

_BN_TYPES = (nn.BatchNorm2d, nn.SyncBatchNorm)


def _bn_to_mn(bn: nn.modules.batchnorm._BatchNorm, num_modes: int) -> ModeNorm2d:
    ref = bn.weight if bn.weight is not None else bn.running_mean
    mn = ModeNorm2d(bn.num_features, num_modes, eps=bn.eps, momentum=bn.momentum, affine=bn.affine,
                    track_running_stats=bn.track_running_stats,
                    device=ref.device if ref is not None else None,
                    dtype=ref.dtype if ref is not None else None)
    with torch.no_grad():
        if bn.affine:
            mn.weight.copy_(bn.weight)
            mn.bias.copy_(bn.bias)
            mn.weight.requires_grad_(bn.weight.requires_grad)
            mn.bias.requires_grad_(bn.bias.requires_grad)
        if bn.track_running_stats:
            # every mode starts from the BN statistics, so eval outputs are unchanged
            mn.running_mean.copy_(bn.running_mean.expand_as(mn.running_mean))
            mn.running_var.copy_(bn.running_var.expand_as(mn.running_var))
            mn.num_batches_tracked.copy_(bn.num_batches_tracked)
    mn.train(bn.training)
    return mn


def _gn_to_mgn(gn: nn.GroupNorm, num_modes: int) -> ModeGroupNorm:
    ref = gn.weight
    mgn = ModeGroupNorm(gn.num_channels, num_modes, eps=gn.eps, affine=gn.affine,
                        device=ref.device if ref is not None else None,
                        dtype=ref.dtype if ref is not None else None)
    if gn.affine:
        with torch.no_grad():
            mgn.weight.copy_(gn.weight)
            mgn.bias.copy_(gn.bias)
    mgn.train(gn.training)
    return mgn


def convert_to_mode_norm(module: nn.Module, num_modes: int = 2, which: str = "all",
                         group: bool = False) -> nn.Module:
    """Replace BatchNorm2d layers by ModeNorm2d (or GroupNorm by ModeGroupNorm with ``group=True``).

    Weights, biases and BN running statistics are copied (each mode starts from the BN
    statistics), so a BN-pretrained network gives the same eval outputs right after conversion.
    ``which='first'`` converts only the first norm layer in module order (the paper authors'
    "init" setting). Returns the converted module; the root itself is replaced when it is a norm
    layer, as ``nn.SyncBatchNorm.convert_sync_batchnorm`` does. BatchNorm subclasses that add
    behaviour (e.g. timm's BatchNormAct2d) are left in place and reported in a warning.
    """
    if which not in ("all", "first"):
        raise ValueError(f"convert_to_mode_norm: which must be 'all' or 'first', got {which!r}")
    if not isinstance(module, nn.Module):
        raise TypeError(f"convert_to_mode_norm: expected an nn.Module, got {type(module).__name__}")
    targets = (nn.GroupNorm,) if group else _BN_TYPES
    skipped: List[str] = []
    done = [0]

    def convert(mod: nn.Module, path: str) -> nn.Module:
        if which == "first" and done[0]:
            return mod
        if type(mod) in targets:
            done[0] += 1
            return _gn_to_mgn(mod, num_modes) if group else _bn_to_mn(mod, num_modes)
        if isinstance(mod, targets):
            skipped.append(f"{path or '<root>'} ({type(mod).__name__})")
            return mod
        for name, child in list(mod.named_children()):
            new = convert(child, f"{path}.{name}" if path else name)
            if new is not child:
                setattr(mod, name, new)
        return mod

    out = convert(module, "")
    if skipped:
        _logger.warning("convert_to_mode_norm left %d norm subclass layer(s) unconverted: %s",
                        len(skipped), ", ".join(skipped))
    if done[0] == 0:
        kind = "GroupNorm" if group else "BatchNorm2d"
        raise ValueError(f"convert_to_mode_norm: the model has no {kind} layer to convert")
    return out
