"""ResNet18 for ImageNet with Mode Normalization, built on timm's own ``ResNet`` class.

``resnet18_mn`` is timm's ``resnet18`` (BasicBlock, layers 2-2-2-2, 7x7 stem) with every
``BatchNorm2d`` replaced by ``ModeNorm2d(num_modes=K)`` through ``norm_layer=``: stem, both convs
of each block and the downsample shortcuts. The BN baseline is timm's ``resnet18``. As in timm, the
last norm weight of each block is zero-initialised (``zero_init_last=True``).

Paper: Mode Normalization, Deecke, Murray & Bilen, ICLR 2019 (arXiv:1810.05466), Table 5.
"""
from __future__ import annotations

from typing import Any, Dict

from timm.models import generate_default_cfgs, register_model
from timm.models.resnet import BasicBlock, ResNet

from ._builder import build_mn_model, get_norm_layer, mn_cfg

__all__ = ['resnet18_mn']

_FIXED = ('block', 'layers', 'norm_layer')


def _create_resnet_mn(variant: str, pretrained: bool, num_modes: Any, kwargs: Dict[str, Any]) -> ResNet:
    fixed = [k for k in _FIXED if k in kwargs]
    if fixed:
        raise TypeError(f'{variant}() fixes {", ".join(fixed)}; build timm.models.resnet.ResNet directly instead')
    return build_mn_model(
        ResNet, variant, pretrained,
        block=BasicBlock, layers=(2, 2, 2, 2), norm_layer=get_norm_layer('mn', num_modes), **kwargs)


def _cfg(arch: str, tag: str) -> Dict[str, Any]:
    return mn_cfg(arch, tag, first_conv='conv1', classifier='fc')


default_cfgs = generate_default_cfgs({'resnet18_mn.in1k': _cfg('resnet18_mn', 'in1k')})


@register_model
def resnet18_mn(pretrained: bool = False, num_modes: int = 2, **kwargs: Any) -> ResNet:
    """ResNet18 (timm's ResNet class) with Mode Normalization, K=num_modes (default 2)."""
    return _create_resnet_mn('resnet18_mn', pretrained, num_modes, kwargs)
