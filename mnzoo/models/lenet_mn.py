"""LeNet (LeCun et al., 1989/1998) for the paper's multi-domain task, with a choice of normalisation.

The classic LeNet-5 layout on 3x32x32 inputs, with a norm after each conv and each hidden FC layer
and ReLU/max-pool in place of the original squashing and subsampling:

    5x5 conv 6  -> norm -> ReLU -> 2x2 max pool     (32 -> 28 -> 14)
    5x5 conv 16 -> norm -> ReLU -> 2x2 max pool     (14 -> 10 -> 5)
    FC 400 -> 120 -> norm -> ReLU,  FC 120 -> 84 -> norm -> ReLU,  dropout,  FC 84 -> num_classes

Layers followed by a norm have no bias (the norm's shift replaces it). Hidden FC layers use the 1-d
form of the norm (``mnzoo.models._builder.get_norm_layer(dim=1)``): BatchNorm1d, ModeNorm1d,
GroupNorm(2) or ModeGroupNorm over the features, and LayerNorm over the features for both ``in``
and ``ln`` (instance norm has no statistics on a single feature vector).

Inputs of the multi-domain task (paper section 4.1; MNIST, CIFAR-10, SVHN, Fashion-MNIST, 40
classes): gray 28x28 digits and clothes are zero-padded by 2 px on each side (before mean/std
normalisation) and replicated to 3 channels, so every domain is 3x32x32. ``img_size`` may be set
for other input sizes (e.g. 28 for unpadded MNIST); the FC input size follows from it.

Paper: Mode Normalization, Deecke, Murray & Bilen, ICLR 2019 (arXiv:1810.05466).
"""
from __future__ import annotations

from typing import Any, Dict, List, Optional, Tuple, Union

import torch
from torch import nn
from timm.layers import get_device_dtype
from timm.models import generate_default_cfgs, register_model

from ._builder import NORMS, IntermediatesMixin, build_mn_model, get_norm_layer, mn_cfg, resolve_num_modes

__all__ = ['LeNet']


def _to_hw(img_size: Union[int, Tuple[int, int]]) -> Tuple[int, int]:
    if isinstance(img_size, int):
        return img_size, img_size
    h, w = img_size
    return int(h), int(w)


class LeNet(IntermediatesMixin, nn.Module):
    """LeNet-5 with a norm after both convs and both hidden FC layers.

    ``forward_features`` returns the (N, 16, 5, 5) conv map; ``forward_head(pre_logits=True)`` the
    84 hidden features; ``feature_info`` lists the two conv stages for ``features_only=True`` and
    ``forward_intermediates``.
    """

    def __init__(
            self,
            norm: str = 'bn',
            num_modes: Optional[int] = None,
            num_classes: int = 40,
            in_chans: int = 3,
            img_size: Union[int, Tuple[int, int]] = 32,
            drop_rate: float = 0.,
            widths: Tuple[int, int, int, int] = (6, 16, 120, 84),
            device: Optional[Union[torch.device, str]] = None,
            dtype: Optional[torch.dtype] = None,
    ) -> None:
        """
        Args:
            norm: One of bn, in, ln, gn, mn, mgn (see ``mnzoo.models._builder``).
            num_modes: K for mn/mgn (default 2); must be None for the other norms.
            num_classes: Classifier outputs (0 for no classifier); 40 for the multi-domain task.
            in_chans: Input image channels.
            img_size: Input height and width (fixes the size of the first FC layer).
            drop_rate: Dropout before the classifier.
            widths: Channels of the two convs and sizes of the two hidden FC layers.
        """
        super().__init__()
        dd: Dict[str, Any] = {'device': device, 'dtype': dtype}
        self.norm = norm
        self.num_modes = resolve_num_modes(norm, num_modes)
        norm2d = get_norm_layer(norm, self.num_modes, dim=2)
        norm1d = get_norm_layer(norm, self.num_modes, dim=1)
        self.num_classes = num_classes
        self.in_chans = in_chans
        self.drop_rate = drop_rate
        h, w = self.img_size = _to_hw(img_size)
        c1, c2, f1, f2 = widths

        stages: List[nn.Module] = []
        self.feature_info: List[Dict[str, Any]] = []
        in_chs, reduction = in_chans, 1
        for i, out_chs in enumerate((c1, c2)):
            stages.append(nn.Sequential(
                nn.Conv2d(in_chs, out_chs, kernel_size=5, bias=False, **dd),
                norm2d(out_chs, **dd),
                nn.ReLU(inplace=True),
                nn.MaxPool2d(kernel_size=2, stride=2),
            ))
            reduction *= 2
            self.feature_info.append(dict(num_chs=out_chs, reduction=reduction, module=f'stages.{i}'))
            in_chs = out_chs
            h, w = (h - 4) // 2, (w - 4) // 2
        if h < 1 or w < 1:
            raise ValueError(f'LeNet: img_size={self.img_size} is too small (needs at least 16x16)')
        self.stages = nn.Sequential(*stages)
        self.feature_size = (h, w)
        self.check_feature_size = True  # off once prune_intermediate_layers drops the hidden FC layers

        self.num_features = c2
        self.head_hidden_size = f2
        self.pre_logits: nn.Module = nn.Sequential(
            nn.Flatten(1),
            nn.Linear(c2 * h * w, f1, bias=False, **dd),
            norm1d(f1, **dd),
            nn.ReLU(inplace=True),
            nn.Linear(f1, f2, bias=False, **dd),
            norm1d(f2, **dd),
            nn.ReLU(inplace=True),
        )
        self.head_drop = nn.Dropout(drop_rate)
        self.fc = nn.Linear(f2, num_classes, **dd) if num_classes > 0 else nn.Identity()
        for m in self.stages.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode='fan_out', nonlinearity='relu')

    @torch.jit.ignore
    def group_matcher(self, coarse: bool = False) -> Dict[str, Any]:
        return dict(stem=r'^stages\.0', blocks=[(r'^stages\.(\d+)', None), (r'^pre_logits', (99,))])

    @torch.jit.ignore
    def set_grad_checkpointing(self, enable: bool = True) -> None:
        if enable:
            raise NotImplementedError('gradient checkpointing is not supported by LeNet')

    @torch.jit.ignore
    def get_classifier(self) -> nn.Module:
        return self.fc

    def reset_classifier(self, num_classes: int, global_pool: Optional[str] = None) -> None:
        """New classifier with ``num_classes`` outputs (0: identity). LeNet has no global pooling."""
        if global_pool is not None:
            raise ValueError(f'LeNet has no global pooling (it flattens a fixed-size map); got {global_pool!r}')
        self.num_classes = num_classes
        dd = get_device_dtype(self)
        self.fc = nn.Linear(self.head_hidden_size, num_classes, **dd) if num_classes > 0 else nn.Identity()
        self.fc.train(self.training)

    def _prune_head(self) -> None:
        """Drop the classifier; the hidden FC layers go too when stages were dropped (they take the
        last stage's fixed-size map), and ``forward_head`` then returns its input."""
        self.reset_classifier(0)
        if len(self.stages) < len(self.feature_info):
            self.pre_logits = nn.Identity()
            self.head_hidden_size = self.num_features
            self.check_feature_size = False

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        self._check_image(x)
        return self.stages(x)

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        if self.check_feature_size and (x.shape[-2] != self.feature_size[0] or x.shape[-1] != self.feature_size[1]):
            raise ValueError(
                f'LeNet was built for img_size={self.img_size} (a {self.feature_size} feature map) but got a '
                f'{x.shape[-2]}x{x.shape[-1]} feature map; build it with img_size=<input size>')
        x = self.head_drop(self.pre_logits(x))
        return x if pre_logits else self.fc(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))


def _create_lenet(variant: str, pretrained: bool, norm: str, kwargs: Dict[str, Any]) -> LeNet:
    if 'norm' in kwargs:
        raise TypeError(f'{variant}() fixes norm={norm!r}; use LeNet directly for other settings')
    return build_mn_model(
        LeNet, variant, pretrained, feature_cfg=dict(flatten_sequential=True, out_indices=(0, 1)),
        norm=norm, **kwargs)


def _cfg(arch: str, tag: str) -> Dict[str, Any]:
    return mn_cfg(arch, tag, first_conv='stages.0.0', classifier='fc', fixed_input_size=True)


default_cfgs = generate_default_cfgs({
    # GN and MGN are the paper's small-batch models (Table 2): their weights, and default tag, are N=8
    **{f'lenet_{n}.multidomain_n8': _cfg(f'lenet_{n}', 'multidomain_n8') for n in ('gn', 'mgn')},
    **{f'lenet_{n}.multidomain': _cfg(f'lenet_{n}', 'multidomain') for n in NORMS},
})


@register_model
def lenet_bn(pretrained: bool = False, **kwargs: Any) -> LeNet:
    """LeNet with BatchNorm (multi-domain baseline)."""
    return _create_lenet('lenet_bn', pretrained, 'bn', kwargs)


@register_model
def lenet_in(pretrained: bool = False, **kwargs: Any) -> LeNet:
    """LeNet with InstanceNorm on convs and LayerNorm on hidden FC layers."""
    return _create_lenet('lenet_in', pretrained, 'in', kwargs)


@register_model
def lenet_ln(pretrained: bool = False, **kwargs: Any) -> LeNet:
    """LeNet with LayerNorm (GroupNorm with one group on convs, LayerNorm on hidden FC layers)."""
    return _create_lenet('lenet_ln', pretrained, 'ln', kwargs)


@register_model
def lenet_gn(pretrained: bool = False, **kwargs: Any) -> LeNet:
    """LeNet with GroupNorm (2 groups, as in the paper's Table 2)."""
    return _create_lenet('lenet_gn', pretrained, 'gn', kwargs)


@register_model
def lenet_mn(pretrained: bool = False, **kwargs: Any) -> LeNet:
    """LeNet with Mode Normalization (K=num_modes, default 2)."""
    return _create_lenet('lenet_mn', pretrained, 'mn', kwargs)


@register_model
def lenet_mgn(pretrained: bool = False, **kwargs: Any) -> LeNet:
    """LeNet with Mode Group Normalization (K=num_modes, default 2)."""
    return _create_lenet('lenet_mgn', pretrained, 'mgn', kwargs)
