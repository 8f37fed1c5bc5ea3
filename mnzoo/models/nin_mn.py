"""Network in Network (Lin, Chen & Yan, ICLR 2014) for CIFAR, with a norm after every conv.

The CIFAR model of Lin et al.: three mlpconv blocks,

    5x5 conv 192, 1x1 conv 160, 1x1 conv 96,  3x3/2 max pool, dropout
    5x5 conv 192, 1x1 conv 192, 1x1 conv 192, 3x3/2 avg pool, dropout
    3x3 conv 192, 1x1 conv 192, [1x1 conv num_classes, global avg pool]

with conv -> norm -> ReLU everywhere, as the paper adds a norm to every conv (section 4.2), and
dropout 0.25 instead of the original 0.5 (also section 4.2). Pools use ceil mode (Caffe's), so a
32x32 input gives 16x16 and then 8x8 maps.

The last 1x1 conv to ``num_classes`` followed by global average pooling equals global average
pooling followed by a linear layer, so it is written that way: it becomes timm's classifier
(``head.fc``, swappable by ``reset_classifier``), and like every classifier in the zoo it has no norm
and no ReLU (the original's ReLU on the class maps forced non-negative logits).

Paper: Mode Normalization, Deecke, Murray & Bilen, ICLR 2019 (arXiv:1810.05466).
"""
from __future__ import annotations

from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple, Union

import torch
from torch import nn
from timm.layers import ClassifierHead
from timm.models import generate_default_cfgs, register_model

from ._builder import StagesHeadMixin, build_mn_model, get_norm_layer, mn_cfg, resolve_num_modes

__all__ = ['NetworkInNetwork']

#: (out_channels, kernel_size) of the convs of each mlpconv block.
NIN_BLOCKS: Tuple[Tuple[Tuple[int, int], ...], ...] = (
    ((192, 5), (160, 1), (96, 1)),
    ((192, 5), (192, 1), (192, 1)),
    ((192, 3), (192, 1)),
)


def _mlpconv(
        in_chs: int,
        convs: Sequence[Tuple[int, int]],
        norm_layer: Callable[..., nn.Module],
        pool: Optional[nn.Module],
        drop_rate: float,
        dd: Dict[str, Any],
) -> nn.Sequential:
    layers: List[nn.Module] = []
    for out_chs, k in convs:
        layers += [
            nn.Conv2d(in_chs, out_chs, kernel_size=k, padding=k // 2, bias=False, **dd),
            norm_layer(out_chs, **dd),
            nn.ReLU(inplace=True),
        ]
        in_chs = out_chs
    if pool is not None:
        layers += [pool, nn.Dropout(drop_rate)]
    return nn.Sequential(*layers)


class NetworkInNetwork(StagesHeadMixin, nn.Module):
    """NIN with a norm after every conv; ``stages`` are the three mlpconv blocks (with their pooling
    and dropout), ``head`` global-average-pools and applies the linear classifier."""

    def __init__(
            self,
            norm: str = 'bn',
            num_modes: Optional[int] = None,
            num_classes: int = 10,
            in_chans: int = 3,
            global_pool: str = 'avg',
            drop_rate: float = 0.25,
            device: Optional[Union[torch.device, str]] = None,
            dtype: Optional[torch.dtype] = None,
    ) -> None:
        """
        Args:
            norm: One of bn, in, ln, gn, mn, mgn (see ``mnzoo.models._builder``).
            num_modes: K for mn/mgn (default 2); must be None for the other norms.
            num_classes: Classifier outputs (0 for no classifier).
            in_chans: Input image channels.
            global_pool: timm pooling type before the classifier.
            drop_rate: Dropout after the first two mlpconv blocks (0.25 in the paper).
        """
        super().__init__()
        dd: Dict[str, Any] = {'device': device, 'dtype': dtype}
        self.norm = norm
        self.num_modes = resolve_num_modes(norm, num_modes)
        norm_layer = get_norm_layer(norm, self.num_modes)
        self.num_classes = num_classes
        self.in_chans = in_chans
        self.drop_rate = drop_rate

        pools = (
            nn.MaxPool2d(kernel_size=3, stride=2, ceil_mode=True),
            nn.AvgPool2d(kernel_size=3, stride=2, ceil_mode=True),
            None,
        )
        stages: List[nn.Module] = []
        self.feature_info: List[Dict[str, Any]] = []
        in_chs, reduction = in_chans, 1
        for i, (convs, pool) in enumerate(zip(NIN_BLOCKS, pools, strict=True)):
            stages.append(_mlpconv(in_chs, convs, norm_layer, pool, drop_rate, dd))
            in_chs = convs[-1][0]
            reduction *= 2 if pool is not None else 1
            self.feature_info.append(dict(num_chs=in_chs, reduction=reduction, module=f'stages.{i}'))
        self.stages = nn.Sequential(*stages)

        self.num_features = self.head_hidden_size = in_chs
        self.head = ClassifierHead(in_chs, num_classes, pool_type=global_pool, **dd)
        self._init_weights()

    @torch.jit.ignore
    def group_matcher(self, coarse: bool = False) -> Dict[str, Any]:
        return dict(stem=r'^stages\.0\.[0-2]\.', blocks=r'^stages\.(\d+)' if coarse else r'^stages\.(\d+)\.(\d+)')


def _create_nin(variant: str, pretrained: bool, norm: str, kwargs: Dict[str, Any]) -> NetworkInNetwork:
    if 'norm' in kwargs:
        raise TypeError(f'{variant}() fixes norm={norm!r}; use NetworkInNetwork directly for other settings')
    return build_mn_model(
        NetworkInNetwork, variant, pretrained,
        feature_cfg=dict(flatten_sequential=True, out_indices=(0, 1, 2)), norm=norm, **kwargs)


def _cfg(arch: str, tag: str) -> Dict[str, Any]:
    return mn_cfg(arch, tag, first_conv='stages.0.0', classifier='head.fc', pool_size=(8, 8))


default_cfgs = generate_default_cfgs({
    f'{arch}.{tag}': _cfg(arch, tag) for arch in ('nin_bn', 'nin_mn') for tag in ('cifar10', 'cifar100')
})


@register_model
def nin_bn(pretrained: bool = False, **kwargs: Any) -> NetworkInNetwork:
    """Network in Network for CIFAR with BatchNorm after every conv, dropout 0.25."""
    return _create_nin('nin_bn', pretrained, 'bn', kwargs)


@register_model
def nin_mn(pretrained: bool = False, **kwargs: Any) -> NetworkInNetwork:
    """Network in Network for CIFAR with Mode Normalization (K=num_modes, default 2), dropout 0.25."""
    return _create_nin('nin_mn', pretrained, 'mn', kwargs)
