"""VGG13 for CIFAR (Simonyan & Zisserman, 2015) with a norm after every conv.

The conv stack of VGG13 (configuration B: 2+2+2+2+2 3x3 convs at widths 64/128/256/512/512, a 2x2
max pool closing each of the five stages) followed by conv -> norm -> ReLU. On 32x32 inputs the
last stage leaves a 1x1x512 map; global average pooling and one linear layer on the 512 features
classify it (no 4096-wide MLP, as usual for CIFAR VGGs and in the paper's section 4.2).

timm registers ``vgg13``/``vgg13_bn`` (ImageNet); these are ``vgg13_cifar_bn`` and ``vgg13_cifar_mn``.

Paper: Mode Normalization, Deecke, Murray & Bilen, ICLR 2019 (arXiv:1810.05466).
"""
from __future__ import annotations

from typing import Any, Dict, List, Optional, Sequence, Union

import torch
from torch import nn
from timm.layers import ClassifierHead
from timm.models import generate_default_cfgs, register_model

from ._builder import StagesHeadMixin, build_mn_model, get_norm_layer, mn_cfg, resolve_num_modes

__all__ = ['CifarVGG', 'VGG_CFGS']

#: Conv widths per stage ('M' closes a stage with a 2x2 max pool).
VGG_CFGS: Dict[str, List[Union[int, str]]] = {
    'vgg13': [64, 64, 'M', 128, 128, 'M', 256, 256, 'M', 512, 512, 'M', 512, 512, 'M'],
}


class CifarVGG(StagesHeadMixin, nn.Module):
    """VGG conv stack with a norm after each conv, global pooling and a linear classifier.

    ``stages`` holds one ``nn.Sequential`` per max-pooled stage; ``feature_info`` lists their outputs
    (reductions 2, 4, 8, 16, 32) for ``features_only=True``.
    """

    def __init__(
            self,
            cfg: Sequence[Union[int, str]],
            norm: str = 'bn',
            num_modes: Optional[int] = None,
            num_classes: int = 10,
            in_chans: int = 3,
            global_pool: str = 'avg',
            drop_rate: float = 0.,
            device: Optional[Union[torch.device, str]] = None,
            dtype: Optional[torch.dtype] = None,
    ) -> None:
        """
        Args:
            cfg: Conv widths, with 'M' after the last conv of each stage.
            norm: One of bn, in, ln, gn, mn, mgn (see ``mnzoo.models._builder``).
            num_modes: K for mn/mgn (default 2); must be None for the other norms.
            num_classes: Classifier outputs (0 for no classifier).
            in_chans: Input image channels.
            global_pool: timm pooling type before the classifier.
            drop_rate: Dropout before the classifier.
        """
        super().__init__()
        dd: Dict[str, Any] = {'device': device, 'dtype': dtype}
        self.norm = norm
        self.num_modes = resolve_num_modes(norm, num_modes)
        norm_layer = get_norm_layer(norm, self.num_modes)
        self.num_classes = num_classes
        self.in_chans = in_chans
        self.drop_rate = drop_rate
        self.feature_info: List[Dict[str, Any]] = []

        stages: List[nn.Module] = []
        layers: List[nn.Module] = []
        prev_chs, reduction = in_chans, 1
        for v in cfg:
            if v == 'M':
                layers.append(nn.MaxPool2d(kernel_size=2, stride=2))
                reduction *= 2
                self.feature_info.append(dict(num_chs=prev_chs, reduction=reduction, module=f'stages.{len(stages)}'))
                stages.append(nn.Sequential(*layers))
                layers = []
            else:
                v = int(v)
                layers += [
                    nn.Conv2d(prev_chs, v, kernel_size=3, padding=1, bias=False, **dd),
                    norm_layer(v, **dd),
                    nn.ReLU(inplace=True),
                ]
                prev_chs = v
        if layers:
            raise ValueError("VGG cfg must end with 'M' (every stage closes with a max pool)")
        self.stages = nn.Sequential(*stages)

        self.num_features = self.head_hidden_size = prev_chs
        self.head = ClassifierHead(prev_chs, num_classes, pool_type=global_pool, drop_rate=drop_rate, **dd)
        self._init_weights()

    @torch.jit.ignore
    def group_matcher(self, coarse: bool = False) -> Dict[str, Any]:
        return dict(stem=r'^stages\.0', blocks=r'^stages\.(\d+)' if coarse else r'^stages\.(\d+)\.(\d+)')


def _create_vgg_cifar(variant: str, pretrained: bool, norm: str, kwargs: Dict[str, Any]) -> CifarVGG:
    if 'norm' in kwargs:
        raise TypeError(f'{variant}() fixes norm={norm!r}; use CifarVGG directly for other settings')
    return build_mn_model(
        CifarVGG, variant, pretrained, model_cfg=VGG_CFGS[variant.split('_')[0]],
        feature_cfg=dict(flatten_sequential=True, out_indices=(0, 1, 2, 3, 4)), norm=norm, **kwargs)


def _cfg(arch: str, tag: str) -> Dict[str, Any]:
    return mn_cfg(arch, tag, first_conv='stages.0.0', classifier='head.fc', pool_size=(1, 1))


default_cfgs = generate_default_cfgs({
    f'{arch}.{tag}': _cfg(arch, tag)
    for arch in ('vgg13_cifar_bn', 'vgg13_cifar_mn') for tag in ('cifar10', 'cifar100')
})


@register_model
def vgg13_cifar_bn(pretrained: bool = False, **kwargs: Any) -> CifarVGG:
    """VGG13 for CIFAR with BatchNorm after every conv."""
    return _create_vgg_cifar('vgg13_cifar_bn', pretrained, 'bn', kwargs)


@register_model
def vgg13_cifar_mn(pretrained: bool = False, **kwargs: Any) -> CifarVGG:
    """VGG13 for CIFAR with Mode Normalization (K=num_modes, default 2) after every conv."""
    return _create_vgg_cifar('vgg13_cifar_mn', pretrained, 'mn', kwargs)
