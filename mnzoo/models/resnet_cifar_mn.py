"""ResNet20 / ResNet56 for CIFAR (He et al., 2016, section 4.2) with a choice of normalisation.

Three stages of ``n`` basic blocks (n=3: ResNet20, n=9: ResNet56) at widths 16/32/64 on 32x32
inputs, after a 3x3 stem conv. When a block changes shape (first block of stages 2 and 3) its
shortcut is a 1x1 stride-2 conv followed by a norm (He et al.'s option B), which is what the
paper's authors used: ResNet20 with MN (K=2) on 10 classes then has 274,084 parameters.

The residual blocks are timm's own ``BasicBlock``; every norm in the network (stem, both convs of
each block, projection shortcuts) is the model's norm. Names: ``resnet{20,56}_{bn,mn,gn,mgn}``.

Paper: Mode Normalization, Deecke, Murray & Bilen, ICLR 2019 (arXiv:1810.05466).
"""
from __future__ import annotations

import functools
from typing import TYPE_CHECKING, Any, Callable, Dict, List, Optional, Sequence, Tuple, Type, Union, cast

import torch
import torch.nn.functional as F
from torch import nn
from timm.layers import DropPath, create_classifier, get_device_dtype
from timm.models import checkpoint_seq, generate_default_cfgs, register_model
from timm.models.resnet import BasicBlock, downsample_conv

from ._builder import IntermediatesMixin, build_mn_model, get_norm_layer, mn_cfg, resolve_num_modes

__all__ = ['CifarResNet']


class CifarResNet(IntermediatesMixin, nn.Module):
    """CIFAR ResNet: 3x3 stem, three stages of basic blocks, global pool and linear classifier.

    ``forward_features`` returns the (N, 64, H/4, W/4) map of the last stage. ``feature_info`` lists
    the stem and the three stages (reductions 1, 1, 2, 4) for ``features_only=True`` and
    ``forward_intermediates``.
    """

    if TYPE_CHECKING:  # added by name in __init__ (no run-time annotations: TorchScript resolves them)
        layer1: nn.Sequential
        layer2: nn.Sequential
        layer3: nn.Sequential

    def __init__(
            self,
            layers: Sequence[int] = (3, 3, 3),
            channels: Sequence[int] = (16, 32, 64),
            norm: str = 'bn',
            num_modes: Optional[int] = None,
            num_classes: int = 10,
            in_chans: int = 3,
            global_pool: str = 'avg',
            drop_rate: float = 0.,
            drop_path_rate: float = 0.,
            zero_init_last: bool = False,
            device: Optional[Union[torch.device, str]] = None,
            dtype: Optional[torch.dtype] = None,
    ) -> None:
        """
        Args:
            layers: Basic blocks in each of the 3 stages (3, 3, 3 for ResNet20; 9, 9, 9 for ResNet56).
            channels: Widths of the 3 stages; the stem has ``channels[0]`` channels.
            norm: One of bn, in, ln, gn, mn, mgn (see ``mnzoo.models._builder``).
            num_modes: K for mn/mgn (default 2); must be None for the other norms.
            num_classes: Classifier outputs (0 for no classifier).
            in_chans: Input image channels.
            global_pool: timm pooling type before the classifier.
            drop_rate: Dropout before the classifier.
            drop_path_rate: Stochastic depth rate, linearly increasing over blocks (0 in the paper).
            zero_init_last: Zero the last norm weight of each block (timm's trick; not in the paper).
        """
        super().__init__()
        dd: Dict[str, Any] = {'device': device, 'dtype': dtype}
        if len(layers) != 3 or len(channels) != 3:
            raise ValueError(
                f'CIFAR ResNets have 3 stages; got layers={tuple(layers)}, channels={tuple(channels)}')
        self.norm = norm
        self.num_modes = resolve_num_modes(norm, num_modes)
        norm_layer = get_norm_layer(norm, self.num_modes)
        norm_cls = cast(Type[nn.Module], norm_layer)  # timm's blocks annotate a class; a partial works alike
        self.num_classes = num_classes
        self.in_chans = in_chans
        self.drop_rate = drop_rate
        self.grad_checkpointing = False

        self.conv1 = nn.Conv2d(in_chans, channels[0], kernel_size=3, padding=1, bias=False, **dd)
        self.bn1 = norm_layer(channels[0], **dd)
        self.act1 = nn.ReLU(inplace=True)
        self.feature_info: List[Dict[str, Any]] = [dict(num_chs=channels[0], reduction=1, module='act1')]

        total = sum(layers)
        dpr = torch.linspace(0, drop_path_rate, total).tolist() if total else []
        in_chs, reduction, block_idx = channels[0], 1, 0
        for stage_idx, (n, chs) in enumerate(zip(layers, channels, strict=True)):
            stride = 1 if stage_idx == 0 else 2
            reduction *= stride
            blocks = []
            for i in range(n):
                s = stride if i == 0 else 1
                downsample = None
                if s != 1 or in_chs != chs:
                    downsample = downsample_conv(in_chs, chs, kernel_size=1, stride=s, norm_layer=norm_cls, **dd)
                rate = dpr[block_idx]
                blocks.append(BasicBlock(
                    in_chs, chs, stride=s, downsample=downsample, norm_layer=norm_cls,
                    drop_path=DropPath(rate) if rate > 0 else None, **dd))
                in_chs = chs
                block_idx += 1
            name = f'layer{stage_idx + 1}'
            self.add_module(name, nn.Sequential(*blocks))
            self.feature_info.append(dict(num_chs=chs, reduction=reduction, module=name))

        self.num_features = self.head_hidden_size = in_chs
        self._num_feature_parts = len(self.feature_info)  # fewer after prune_intermediate_layers
        self.global_pool, self.fc = create_classifier(in_chs, num_classes, pool_type=global_pool, **dd)
        self.init_weights(zero_init_last=zero_init_last)

    @torch.jit.ignore
    def init_weights(self, zero_init_last: bool = False) -> None:
        """He init for convs (fan_out); norms keep their own init (the MN gate must stay near uniform)."""
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode='fan_out', nonlinearity='relu')
        if zero_init_last:
            for m in self.modules():
                if isinstance(m, BasicBlock):
                    m.zero_init_last()

    @torch.jit.ignore
    def group_matcher(self, coarse: bool = False) -> Dict[str, Any]:
        return dict(stem=r'^conv1|bn1', blocks=r'^layer(\d+)' if coarse else r'^layer(\d+)\.(\d+)')

    @torch.jit.ignore
    def set_grad_checkpointing(self, enable: bool = True) -> None:
        self.grad_checkpointing = enable

    @torch.jit.ignore
    def get_classifier(self) -> nn.Module:
        return self.fc

    def reset_classifier(self, num_classes: int, global_pool: Optional[str] = None) -> None:
        """New classifier with ``num_classes`` outputs (0: identity); keeps the pooling unless given."""
        dd = get_device_dtype(self)
        self.num_classes = num_classes
        if global_pool is None:
            global_pool = self.global_pool.pool_type
        self.global_pool, self.fc = create_classifier(self.num_features, num_classes, pool_type=global_pool, **dd)
        self.global_pool.train(self.training)
        self.fc.train(self.training)

    def _stem(self, x: torch.Tensor) -> torch.Tensor:
        return self.act1(self.bn1(self.conv1(x)))

    def _feature_parts(self) -> List[Callable[[torch.Tensor], torch.Tensor]]:
        layers: List[Callable[[torch.Tensor], torch.Tensor]] = [self.layer1, self.layer2, self.layer3]
        if self.grad_checkpointing and not torch.jit.is_scripting():
            layers = [functools.partial(checkpoint_seq, layer) for layer in layers]
        return [self._stem, *layers][:self._num_feature_parts]

    def _drop_parts_after(self, index: int) -> None:
        for i in range(index + 1, 4):  # part i >= 1 is layer<i>; empty, so forward_features still runs
            setattr(self, f'layer{i}', nn.Sequential())
        self._num_feature_parts = index + 1

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        self._check_image(x)
        x = self._stem(x)
        if self.grad_checkpointing and not torch.jit.is_scripting():
            x = checkpoint_seq([self.layer1, self.layer2, self.layer3], x, flatten=True)
        else:
            x = self.layer1(x)
            x = self.layer2(x)
            x = self.layer3(x)
        return x

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        x = self.global_pool(x)
        if self.drop_rate:
            x = F.dropout(x, p=float(self.drop_rate), training=self.training)
        return x if pre_logits else self.fc(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))


def _create_resnet_cifar(variant: str, pretrained: bool = False, **kwargs: Any) -> CifarResNet:
    return build_mn_model(
        CifarResNet, variant, pretrained, feature_cfg=dict(out_indices=(0, 1, 2, 3)), **kwargs)


def _cfg(arch: str, tag: str) -> Dict[str, Any]:
    return mn_cfg(arch, tag, first_conv='conv1', classifier='fc', pool_size=(8, 8))


_ARCHS = tuple(f'resnet{d}_{n}' for d in (20, 56) for n in ('bn', 'mn', 'gn', 'mgn'))

default_cfgs = generate_default_cfgs({
    **{f'{arch}.{tag}': _cfg(arch, tag) for arch in _ARCHS for tag in ('cifar10', 'cifar100')},
    # the first ResNet20 weights: the paper's recipe on a 40-epoch schedule (kept loadable by name)
    **{f'resnet20_{n}.cifar10_40ep': _cfg(f'resnet20_{n}', 'cifar10_40ep') for n in ('bn', 'mn')},
})


def _resnet(variant: str, pretrained: bool, layers: Tuple[int, int, int], norm: str,
            kwargs: Dict[str, Any]) -> CifarResNet:
    for fixed in ('layers', 'norm'):
        if fixed in kwargs:
            raise TypeError(f'{variant}() fixes {fixed!r}; use CifarResNet directly for other settings')
    return _create_resnet_cifar(variant, pretrained, layers=layers, norm=norm, **kwargs)


@register_model
def resnet20_bn(pretrained: bool = False, **kwargs: Any) -> CifarResNet:
    """ResNet20 for CIFAR with BatchNorm (the paper's baseline)."""
    return _resnet('resnet20_bn', pretrained, (3, 3, 3), 'bn', kwargs)


@register_model
def resnet20_mn(pretrained: bool = False, **kwargs: Any) -> CifarResNet:
    """ResNet20 for CIFAR with Mode Normalization (K=num_modes, default 2)."""
    return _resnet('resnet20_mn', pretrained, (3, 3, 3), 'mn', kwargs)


@register_model
def resnet20_gn(pretrained: bool = False, **kwargs: Any) -> CifarResNet:
    """ResNet20 for CIFAR with GroupNorm (2 groups)."""
    return _resnet('resnet20_gn', pretrained, (3, 3, 3), 'gn', kwargs)


@register_model
def resnet20_mgn(pretrained: bool = False, **kwargs: Any) -> CifarResNet:
    """ResNet20 for CIFAR with Mode Group Normalization (K=num_modes, default 2)."""
    return _resnet('resnet20_mgn', pretrained, (3, 3, 3), 'mgn', kwargs)


@register_model
def resnet56_bn(pretrained: bool = False, **kwargs: Any) -> CifarResNet:
    """ResNet56 for CIFAR with BatchNorm (the paper's baseline)."""
    return _resnet('resnet56_bn', pretrained, (9, 9, 9), 'bn', kwargs)


@register_model
def resnet56_mn(pretrained: bool = False, **kwargs: Any) -> CifarResNet:
    """ResNet56 for CIFAR with Mode Normalization (K=num_modes, default 2)."""
    return _resnet('resnet56_mn', pretrained, (9, 9, 9), 'mn', kwargs)


@register_model
def resnet56_gn(pretrained: bool = False, **kwargs: Any) -> CifarResNet:
    """ResNet56 for CIFAR with GroupNorm (2 groups)."""
    return _resnet('resnet56_gn', pretrained, (9, 9, 9), 'gn', kwargs)


@register_model
def resnet56_mgn(pretrained: bool = False, **kwargs: Any) -> CifarResNet:
    """ResNet56 for CIFAR with Mode Group Normalization (K=num_modes, default 2)."""
    return _resnet('resnet56_mgn', pretrained, (9, 9, 9), 'mgn', kwargs)
