"""Swap the normalisation layers of an existing model for MN or MGN."""
from __future__ import annotations

import logging
from typing import List, Optional, cast

import torch
from torch import Tensor, nn

from .mode_norm import ModeGroupNorm, ModeNorm2d

__all__ = ["convert_to_mode_norm"]

_logger = logging.getLogger(__name__)

_BN_TYPES = (nn.BatchNorm2d, nn.SyncBatchNorm)


def _copy_into(dst: Optional[Tensor], src: Optional[Tensor]) -> None:
    """dst <- src (broadcast to dst's shape), frozen or not as src; both exist when the flags say so."""
    assert dst is not None and src is not None
    dst.copy_(src.expand_as(dst))
    dst.requires_grad_(src.requires_grad)


def _bn_to_mn(bn: nn.modules.batchnorm._BatchNorm, num_modes: int) -> ModeNorm2d:
    ref = bn.weight if bn.weight is not None else bn.running_mean
    mn = ModeNorm2d(bn.num_features, num_modes, eps=bn.eps, momentum=bn.momentum, affine=bn.affine,
                    track_running_stats=bn.track_running_stats,
                    device=ref.device if ref is not None else None,
                    dtype=ref.dtype if ref is not None else None)
    with torch.no_grad():
        if bn.affine:
            _copy_into(mn.weight, bn.weight)
            _copy_into(mn.bias, bn.bias)
        if bn.track_running_stats:
            # every mode starts from the BN statistics, so eval outputs are unchanged
            _copy_into(mn.running_mean, bn.running_mean)
            _copy_into(mn.running_var, bn.running_var)
            _copy_into(mn.num_batches_tracked, bn.num_batches_tracked)
    mn.train(bn.training)
    return mn


def _gn_to_mgn(gn: nn.GroupNorm, num_modes: int) -> ModeGroupNorm:
    ref = gn.weight
    mgn = ModeGroupNorm(gn.num_channels, num_modes, eps=gn.eps, affine=gn.affine,
                        device=ref.device if ref is not None else None,
                        dtype=ref.dtype if ref is not None else None)
    if gn.affine:
        with torch.no_grad():
            _copy_into(mgn.weight, gn.weight)
            _copy_into(mgn.bias, gn.bias)
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
            if group:
                return _gn_to_mgn(cast(nn.GroupNorm, mod), num_modes)
            return _bn_to_mn(cast(nn.modules.batchnorm._BatchNorm, mod), num_modes)
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
