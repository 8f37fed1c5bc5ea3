"""Shared pieces of the mnzoo model families: norm-layer factory, dataset cfgs and ``build_mn_model``.

Every family file builds its models through :func:`build_mn_model`, which wraps timm's
``build_model_with_cfg`` and adds what the zoo promises on top of it:

* keyword arguments are checked against the model class, so a typo raises ``TypeError`` naming it
  instead of vanishing in a ``**kwargs`` chain;
* an unknown pretrained tag raises ``ValueError`` listing the known tags (timm would warn and go on);
* ``pretrained=True`` goes through :func:`mnzoo.weights.pretrained_overlay`, which resolves the cfg,
  fetches a sha256-verified ``model.safetensors`` (local ``weights_cards`` first, then the Hub) and
  points timm's own loader at that file. Errors from that path (no published weights, tampered or
  corrupted file, Hub down) propagate unchanged.

Norm names used across the zoo (``<family>_<norm>``):

=====  ========================================  ==============================================
norm   conv feature maps (N, C, H, W)            hidden FC layers (N, C)
=====  ========================================  ==============================================
bn     ``nn.BatchNorm2d``                        ``nn.BatchNorm1d``
in     ``nn.InstanceNorm2d(affine=True)``        ``nn.LayerNorm`` over the features (see below)
ln     ``GroupNorm`` with 1 group (LN over C,H,W) ``nn.LayerNorm`` over the features
gn     ``GroupNorm`` with ``GN_GROUPS`` = 2      ``GroupNorm`` with 2 groups of features
mn     ``ModeNorm2d(num_modes=K)``               ``ModeNorm1d(num_modes=K)``
mgn    ``ModeGroupNorm(num_modes=K)``            ``ModeGroupNorm(num_modes=K)`` (per-feature gate)
=====  ========================================  ==============================================

Instance norm has no statistics on a (N, C) vector (one value per sample and channel), so its FC
analogue normalises each sample over its features, i.e. the vector is treated as one instance of
C positions; with a per-feature affine this is exactly ``nn.LayerNorm``. GN uses 2 groups, the
paper's setting for GN next to MGN with K=2 (section 4.1, Table 2).

``num_modes`` (K) is only meaningful for ``mn`` and ``mgn``: it defaults to 2 there, and giving it
to any other norm raises ``ValueError`` (a BN/GN model trained "with K=4" would be a silent lie).
"""
from __future__ import annotations

import functools
import inspect
import logging
import numbers
from typing import TYPE_CHECKING, Any, Callable, Dict, List, Optional, Tuple, Type, TypeVar, Union

import torch
from torch import nn
from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD
from timm.layers import GroupNorm, GroupNorm1, get_device_dtype
from timm.models import build_model_with_cfg, get_arch_pretrained_cfgs
from timm.models._builder import resolve_pretrained_cfg
from timm.models._features import feature_take_indices

if TYPE_CHECKING:
    from timm.layers import ClassifierHead

from ..layers import ModeGroupNorm, ModeNorm1d, ModeNorm2d
from .. import weights as _weights

__all__ = [
    'NORMS', 'MODE_NORMS', 'GN_GROUPS', 'DEFAULT_NUM_MODES', 'PAPER_ID',
    'CIFAR10_MEAN', 'CIFAR10_STD', 'CIFAR100_MEAN', 'CIFAR100_STD', 'MULTIDOMAIN_MEAN', 'MULTIDOMAIN_STD',
    'CIFAR10_LABELS', 'CIFAR100_LABELS', 'MNIST_LABELS', 'SVHN_LABELS', 'FASHION_MNIST_LABELS',
    'MULTIDOMAIN_DOMAINS', 'MULTIDOMAIN_LABELS', 'DATASET_CFGS',
    'resolve_num_modes', 'get_norm_layer', 'mn_cfg', 'build_mn_model', 'IntermediatesMixin', 'StagesHeadMixin',
]

_logger = logging.getLogger(__name__)

NORMS: Tuple[str, ...] = ('bn', 'in', 'ln', 'gn', 'mn', 'mgn')
MODE_NORMS: Tuple[str, ...] = ('mn', 'mgn')
#: GroupNorm groups of the ``*_gn`` models: two, as for GN in the paper's Table 2 (next to MGN, K=2).
GN_GROUPS = 2
DEFAULT_NUM_MODES = 2
PAPER_ID = 'arXiv:1810.05466'
PAPER_NAME = 'Mode Normalization'
LICENSE = 'apache-2.0'

# -------------------------------------------------------------------------------------- dataset metadata

#: CIFAR-10 train-set channel statistics.
CIFAR10_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR10_STD = (0.2470, 0.2435, 0.2616)
#: CIFAR-100 train-set channel statistics (the values in common use).
CIFAR100_MEAN = (0.5071, 0.4865, 0.4409)
CIFAR100_STD = (0.2673, 0.2564, 0.2762)
#: Multi-domain training normalises each image with its own domain's statistics (mnzoo.data.DOMAINS);
#: a single mean/std can only be a domain-agnostic fallback: pixels in [0, 1] map to [-1, 1].
MULTIDOMAIN_MEAN = (0.5, 0.5, 0.5)
MULTIDOMAIN_STD = (0.5, 0.5, 0.5)

#: CIFAR-10 class names in label order.
CIFAR10_LABELS = (
    'airplane', 'automobile', 'bird', 'cat', 'deer', 'dog', 'frog', 'horse', 'ship', 'truck')
#: CIFAR-100 fine class names in label order (alphabetical, as in the dataset's meta file).
CIFAR100_LABELS = (
    'apple', 'aquarium_fish', 'baby', 'bear', 'beaver', 'bed', 'bee', 'beetle', 'bicycle', 'bottle',
    'bowl', 'boy', 'bridge', 'bus', 'butterfly', 'camel', 'can', 'castle', 'caterpillar', 'cattle',
    'chair', 'chimpanzee', 'clock', 'cloud', 'cockroach', 'couch', 'crab', 'crocodile', 'cup', 'dinosaur',
    'dolphin', 'elephant', 'flatfish', 'forest', 'fox', 'girl', 'hamster', 'house', 'kangaroo', 'keyboard',
    'lamp', 'lawn_mower', 'leopard', 'lion', 'lizard', 'lobster', 'man', 'maple_tree', 'motorcycle',
    'mountain', 'mouse', 'mushroom', 'oak_tree', 'orange', 'orchid', 'otter', 'palm_tree', 'pear',
    'pickup_truck', 'pine_tree', 'plain', 'plate', 'poppy', 'porcupine', 'possum', 'rabbit', 'raccoon',
    'ray', 'road', 'rocket', 'rose', 'sea', 'seal', 'shark', 'shrew', 'skunk', 'skyscraper', 'snail',
    'snake', 'spider', 'squirrel', 'streetcar', 'sunflower', 'sweet_pepper', 'table', 'tank', 'telephone',
    'television', 'tiger', 'tractor', 'train', 'trout', 'tulip', 'turtle', 'wardrobe', 'whale',
    'willow_tree', 'wolf', 'woman', 'worm')
MNIST_LABELS = tuple(str(i) for i in range(10))
#: SVHN digits as labelled by torchvision (the original label 10 for digit '0' becomes 0).
SVHN_LABELS = tuple(str(i) for i in range(10))
#: Fashion-MNIST class names as the dataset (and torchvision) spell them.
FASHION_MNIST_LABELS = (
    'T-shirt/top', 'Trouser', 'Pullover', 'Dress', 'Coat', 'Sandal', 'Shirt', 'Sneaker', 'Bag', 'Ankle boot')
#: Domains of the paper's multi-task setting (section 4.1), in label-block order:
#: label = 10 * domain_index + class_index.
MULTIDOMAIN_DOMAINS = ('mnist', 'cifar10', 'svhn', 'fashion_mnist')
MULTIDOMAIN_LABELS = tuple(
    f'{domain}/{name}'
    for domain, names in zip(
        MULTIDOMAIN_DOMAINS, (MNIST_LABELS, CIFAR10_LABELS, SVHN_LABELS, FASHION_MNIST_LABELS), strict=True)
    for name in names)


def _imagenet_labels() -> Dict[str, Any]:
    from timm.data import ImageNetInfo
    info = ImageNetInfo('imagenet-1k')
    return dict(label_names=tuple(info.label_names()), label_descriptions=info.label_descriptions(as_dict=True))


_MULTIDOMAIN: Dict[str, Any] = dict(
    num_classes=40, input_size=(3, 32, 32), crop_pct=1.0, interpolation='bilinear',
    mean=MULTIDOMAIN_MEAN, std=MULTIDOMAIN_STD, label_names=MULTIDOMAIN_LABELS,
    notes=(
        'Multi-domain task of the paper (section 4.1): MNIST, CIFAR-10, SVHN, Fashion-MNIST, '
        'label = 10 * domain_index + class in that domain order (40 classes).',
        'Gray 28x28 images (MNIST, Fashion-MNIST) are zero-padded by 2 px on each side to 32x32 '
        '(before mean/std normalisation) and replicated to 3 channels.',
        'Each image is normalised with the train-set mean/std of its own domain (mnzoo.data.DOMAINS); '
        'mean/std here (0.5) are a fallback for images of unknown domain.',
    ))

_CIFAR10: Dict[str, Any] = dict(
    num_classes=10, input_size=(3, 32, 32), crop_pct=1.0, interpolation='bilinear',
    mean=CIFAR10_MEAN, std=CIFAR10_STD, label_names=CIFAR10_LABELS)

#: Per-tag data settings shared by every architecture trained on that dataset.
DATASET_CFGS: Dict[str, Dict[str, Any]] = {
    'cifar10': _CIFAR10,
    # the same data, on the paper's schedule shortened 4x (resnet20_cifar10_short.yaml: 40 epochs)
    'cifar10_40ep': _CIFAR10,
    'cifar100': dict(
        num_classes=100, input_size=(3, 32, 32), crop_pct=1.0, interpolation='bilinear',
        mean=CIFAR100_MEAN, std=CIFAR100_STD, label_names=CIFAR100_LABELS),
    'multidomain': _MULTIDOMAIN,
    # the same data, trained with batches of 8 (paper Table 2, lenet_small_batch.yaml)
    'multidomain_n8': _MULTIDOMAIN,
    'in1k': dict(
        num_classes=1000, input_size=(3, 224, 224), pool_size=(7, 7), crop_pct=0.875, interpolation='bilinear',
        mean=IMAGENET_DEFAULT_MEAN, std=IMAGENET_DEFAULT_STD),
}


def mn_cfg(arch: str, tag: str, *, first_conv: str, classifier: str, **kwargs: Any) -> Dict[str, Any]:
    """Pretrained cfg of ``<arch>.<tag>``: the dataset's settings, paper/licence metadata, and
    ``hf_hub_id`` only when that weight is published (so ``timm.list_pretrained`` tells the truth)."""
    if tag not in DATASET_CFGS:
        raise ValueError(f'No dataset settings for tag {tag!r}; known: {", ".join(DATASET_CFGS)}')
    cfg: Dict[str, Any] = dict(url='', hf_hub_id=_weights.hub_id(arch, tag))
    cfg.update(DATASET_CFGS[tag])
    if tag == 'in1k':
        cfg.update(_imagenet_labels())
    cfg.update(
        first_conv=first_conv, classifier=classifier, license=LICENSE,
        paper_ids=PAPER_ID, paper_name=PAPER_NAME)
    cfg.update(kwargs)
    return cfg


# -------------------------------------------------------------------------------------- norm layers

def resolve_num_modes(norm: str, num_modes: Optional[int]) -> Optional[int]:
    """K for a mode norm (default 2); None for the others, which reject an explicit ``num_modes``."""
    if norm not in NORMS:
        raise ValueError(f'Unknown norm {norm!r}; expected one of {", ".join(NORMS)}')
    if norm in MODE_NORMS:
        k = DEFAULT_NUM_MODES if num_modes is None else num_modes
        if isinstance(k, bool) or not isinstance(k, int):
            raise TypeError(f'num_modes must be an int, got {type(k).__name__}')
        if k < 1:
            raise ValueError(f'num_modes must be >= 1, got {k}')
        return k
    if num_modes is not None:
        raise ValueError(
            f'num_modes={num_modes!r} was given to a model with norm {norm!r}, which has no modes; '
            f'num_modes only applies to the *_mn and *_mgn models')
    return None


def get_norm_layer(norm: str, num_modes: Optional[int] = None, dim: int = 2) -> Callable[..., nn.Module]:
    """Norm layer constructor ``f(num_features, device=None, dtype=None)`` for conv (dim=2) or FC (dim=1)
    layers. Returns a class or ``functools.partial`` (the forms timm's ``get_norm_layer`` accepts)."""
    if dim not in (1, 2):
        raise ValueError(f'dim must be 1 (FC) or 2 (conv), got {dim}')
    k = resolve_num_modes(norm, num_modes)
    if norm == 'bn':
        return nn.BatchNorm2d if dim == 2 else nn.BatchNorm1d
    if norm == 'in':
        return functools.partial(nn.InstanceNorm2d, affine=True) if dim == 2 else nn.LayerNorm
    if norm == 'ln':
        return GroupNorm1 if dim == 2 else nn.LayerNorm
    if norm == 'gn':
        return functools.partial(GroupNorm, num_groups=GN_GROUPS)
    assert k is not None  # resolve_num_modes gives the mode norms an int K
    if norm == 'mn':
        return functools.partial(ModeNorm2d if dim == 2 else ModeNorm1d, num_modes=k)
    return functools.partial(ModeGroupNorm, num_modes=k)


# -------------------------------------------------------------------------------------- model builder

def _accepted_kwargs(model_cls: Callable[..., nn.Module]) -> Tuple[str, ...]:
    params = inspect.signature(model_cls).parameters.values()
    return tuple(p.name for p in params if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY))


def _check_tag(variant: str, pretrained_cfg: Any) -> None:
    if not isinstance(pretrained_cfg, str):
        return
    known = sorted(n.split('.', 1)[1] for n in get_arch_pretrained_cfgs(variant))
    if pretrained_cfg not in known:
        raise ValueError(
            f'Unknown pretrained tag {pretrained_cfg!r} for {variant}; known tags: {", ".join(known) or "none"}')


def _check_positive_int(variant: str, name: str, value: Any, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f'{variant}: {name} must be an int, got {type(value).__name__}')
    if value < minimum:
        raise ValueError(f'{variant}: {name} must be >= {minimum}, got {value}')


def _check_rate(variant: str, name: str, value: Any) -> None:
    """A dropout-style probability: a number in [0, 1) (nn.Dropout would only object at forward)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not 0 <= float(value) < 1:
        raise ValueError(f'{variant}: {name} must be a number in [0, 1), got {value!r}')


def _check_pretrained_modes(variant: str, pretrained_cfg: Any, overlay: Optional[Dict[str, Any]],
                            num_modes: Any) -> None:
    """Before any download: a published weight's K is fixed (its gates and running statistics are
    K-sized), so another num_modes is named here rather than as a size mismatch at load time."""
    tag = resolve_pretrained_cfg(variant, pretrained_cfg=pretrained_cfg, pretrained_cfg_overlay=overlay).tag
    entry = _weights.get_entry(f'{variant}.{tag}') if tag else None
    trained = entry.extra.get('num_modes') if entry is not None else None
    if trained is not None and num_modes != trained:
        raise ValueError(
            f'{variant}.{tag} was trained with num_modes={trained}, got num_modes={num_modes}; use '
            f'num_modes={trained}, or pretrained=False for a model with K={num_modes}.')


ModelT = TypeVar('ModelT', bound=nn.Module)


def build_mn_model(
        model_cls: Union[Type[ModelT], Callable[..., ModelT]],
        variant: str,
        pretrained: bool = False,
        *,
        model_cfg: Optional[Any] = None,
        feature_cfg: Optional[Dict[str, Any]] = None,
        pretrained_cfg: Optional[Any] = None,
        pretrained_cfg_overlay: Optional[Dict[str, Any]] = None,
        cache_dir: Optional[Any] = None,
        pretrained_model_args: Optional[Dict[str, Any]] = None,
        features_only: bool = False,
        out_indices: Optional[Any] = None,
        feature_cls: Optional[Any] = None,
        **model_kwargs: Any,
) -> ModelT:
    """Build ``variant`` with timm's ``build_model_with_cfg``, loading verified weights when pretrained.

    ``model_kwargs`` must all be arguments of ``model_cls`` (else ``TypeError`` naming them). The
    keyword-only arguments are the ones ``timm.create_model`` and the features wrapper pass.
    """
    accepted = _accepted_kwargs(model_cls)
    unknown = sorted(k for k in model_kwargs if k not in accepted or k == 'cfg')
    if unknown:
        raise TypeError(
            f'{variant}() got unexpected keyword argument(s) {", ".join(map(repr, unknown))}; '
            f'it accepts: {", ".join(a for a in accepted if a != "cfg")}, features_only, out_indices, feature_cls')
    _check_tag(variant, pretrained_cfg)
    if 'in_chans' in model_kwargs:
        _check_positive_int(variant, 'in_chans', model_kwargs['in_chans'], 1)
    if 'num_classes' in model_kwargs:
        _check_positive_int(variant, 'num_classes', model_kwargs['num_classes'], 0)
    for key in ('drop_rate', 'drop_path_rate'):
        if key in model_kwargs:
            _check_rate(variant, key, model_kwargs[key])

    if pretrained:
        if 'num_modes' in model_kwargs:
            _check_pretrained_modes(variant, pretrained_cfg, pretrained_cfg_overlay, model_kwargs['num_modes'])
        overlay = _weights.pretrained_overlay(
            variant, pretrained_cfg, pretrained_cfg_overlay, model_kwargs.get('in_chans'), cache_dir)
        src = resolve_pretrained_cfg(variant, pretrained_cfg=pretrained_cfg, pretrained_cfg_overlay=overlay)
        name = f'{variant}.{src.tag}' if src.tag else variant
        n_cls = model_kwargs.get('num_classes', src.num_classes)
        if not features_only and n_cls != src.num_classes:
            _logger.info(
                f'{name}: num_classes={n_cls} differs from the weights ({src.num_classes}); loading the '
                f'backbone and re-initialising the classifier ({src.classifier}).')
        in_chans = model_kwargs.get('in_chans', src.input_size[0])
        if in_chans != src.input_size[0]:
            _logger.info(
                f'{name}: in_chans={in_chans} differs from the weights ({src.input_size[0]}); timm adapts the '
                f'first conv ({src.first_conv}).')
        pretrained_cfg_overlay = overlay

    extra: Dict[str, Any] = {}
    if features_only:
        extra['features_only'] = True
    if out_indices is not None:
        extra['out_indices'] = out_indices
    if feature_cls is not None:
        extra['feature_cls'] = feature_cls
    return build_model_with_cfg(
        model_cls,
        variant,
        pretrained,
        pretrained_cfg=pretrained_cfg,
        pretrained_cfg_overlay=pretrained_cfg_overlay,
        model_cfg=model_cfg,
        feature_cfg=dict(feature_cfg or {}),
        cache_dir=cache_dir,
        pretrained_model_args=pretrained_model_args,
        **extra,
        **model_kwargs,
    )


if TYPE_CHECKING:  # the mixins are only ever mixed into nn.Module models
    _ModuleBase = nn.Module
else:
    _ModuleBase = object


class IntermediatesMixin(_ModuleBase):
    """timm's ``forward_intermediates`` / ``prune_intermediate_layers`` for a trunk made of parts,
    one per ``feature_info`` entry, whose composition is ``forward_features``.

    timm's ``features_only=True, feature_cls='getter'`` wraps a model through these two methods, and
    code that wants several feature maps calls ``forward_intermediates`` directly, as for timm's own
    models. By default the parts are the entries of an ``nn.Sequential`` ``stages`` (one stage per
    ``feature_info`` entry), and pruning slices it; a family with another trunk overrides
    ``_feature_parts()`` and ``_drop_parts_after(index)``. ``_prune_head`` defaults to
    ``reset_classifier(0, '')`` (no pooling, no classifier), as timm's ResNet does.
    """

    # no class-level annotations at run time: TorchScript would try to resolve them on the model
    if TYPE_CHECKING:
        stages: nn.Sequential
        in_chans: int
        num_features: int
        head_hidden_size: int
        feature_info: List[Dict[str, Any]]

        def reset_classifier(self, num_classes: int, global_pool: Optional[str] = None) -> None: ...

    def _feature_parts(self) -> List[Callable[[torch.Tensor], torch.Tensor]]:
        return list(self.stages)

    def _drop_parts_after(self, index: int) -> None:
        self.stages = self.stages[:index + 1]

    def _prune_head(self) -> None:
        self.reset_classifier(0, '')

    def _check_image(self, x: torch.Tensor) -> None:
        """A clear error for a batch that is not (N, in_chans, H, W): torch's own names the conv's
        weight shape, and takes a 3-dim input for one unbatched image."""
        if x.dim() != 4 or x.shape[1] != self.in_chans:
            raise ValueError(f'expected an image batch of shape (N, {self.in_chans}, H, W) '
                             f'(in_chans={self.in_chans}), got shape {list(x.shape)}')

    def forward_intermediates(
            self,
            x: torch.Tensor,
            indices: Optional[Union[int, List[int]]] = None,
            norm: bool = False,
            stop_early: bool = False,
            output_fmt: str = 'NCHW',
            intermediates_only: bool = False,
    ) -> Union[List[torch.Tensor], Tuple[torch.Tensor, List[torch.Tensor]]]:
        """The trunk's output and the outputs of the parts in ``indices`` (timm's convention: None
        for all, n for the last n, a sequence for those, negative counting from the end).

        ``norm`` is accepted for timm's API; these models have no norm after the trunk. With
        ``stop_early`` (or ``intermediates_only``) the parts after the last index do not run.
        """
        if output_fmt != 'NCHW':
            raise ValueError(f'{type(self).__name__}.forward_intermediates: output_fmt must be NCHW, '
                             f'got {output_fmt!r}')
        self._check_image(x)
        parts = self._feature_parts()
        take, max_index = feature_take_indices(len(parts), indices)
        if stop_early or intermediates_only:
            parts = parts[:max_index + 1]
        intermediates = []
        for i, part in enumerate(parts):
            x = part(x)
            if i in take:
                intermediates.append(x)
        return intermediates if intermediates_only else (x, intermediates)

    def prune_intermediate_layers(
            self,
            indices: Union[int, List[int]] = 1,
            prune_norm: bool = False,
            prune_head: bool = True,
    ) -> List[int]:
        """Drop the parts after the last of ``indices`` and, with ``prune_head`` or when parts were
        dropped, the classifier; returns the absolute indices kept (``prune_norm`` has nothing to do)."""
        n_parts = len(self._feature_parts())
        take, max_index = feature_take_indices(n_parts, indices)
        if max_index < n_parts - 1:
            self._drop_parts_after(max_index)
            self.num_features = self.head_hidden_size = self.feature_info[max_index]['num_chs']
            prune_head = True
        if prune_head:
            self._prune_head()
        return take


class StagesHeadMixin(IntermediatesMixin):
    """timm's model contract for a ``stages`` trunk followed by a timm ``ClassifierHead`` ``head``
    (shared by the NIN and CIFAR-VGG families; ``group_matcher`` stays with each family). Each
    stage is one ``feature_info`` entry."""

    if TYPE_CHECKING:
        head: ClassifierHead
        num_classes: int

    def _init_weights(self) -> None:
        """He init for convs (fan_out); norms and the classifier keep their own init."""
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode='fan_out', nonlinearity='relu')

    @torch.jit.ignore
    def set_grad_checkpointing(self, enable: bool = True) -> None:
        if enable:
            raise NotImplementedError(f'gradient checkpointing is not supported by {type(self).__name__}')

    @torch.jit.ignore
    def get_classifier(self) -> nn.Module:
        return self.head.fc

    def reset_classifier(self, num_classes: int, global_pool: Optional[str] = None) -> None:
        """New classifier with ``num_classes`` outputs (0: identity); keeps the pooling unless given."""
        self.num_classes = num_classes
        self.head.reset(num_classes, global_pool, **get_device_dtype(self))

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        self._check_image(x)
        return self.stages(x)

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        return self.head(x, pre_logits=pre_logits)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))
