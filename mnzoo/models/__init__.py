"""mnzoo's model families, registered in timm on import.

``import mnzoo.models`` (or ``import mnzoo``) registers every architecture below with timm, so
``timm.create_model('resnet20_mn.cifar10')`` works. Names are ``<family>_<norm>``; none shadows a
name timm registers itself.
"""
from ._builder import (
    CIFAR10_LABELS, CIFAR100_LABELS, DATASET_CFGS, GN_GROUPS, MODE_NORMS, MULTIDOMAIN_DOMAINS, MULTIDOMAIN_LABELS,
    NORMS, build_mn_model, get_norm_layer,
)
from .lenet_mn import LeNet
from .nin_mn import NetworkInNetwork
from .resnet_cifar_mn import CifarResNet
from .resnet_imagenet_mn import resnet18_mn
from .vgg_cifar_mn import CifarVGG

#: Every architecture mnzoo registers in timm, by family.
MODEL_NAMES = (
    'lenet_bn', 'lenet_in', 'lenet_ln', 'lenet_gn', 'lenet_mn', 'lenet_mgn',
    'nin_bn', 'nin_mn',
    'vgg13_cifar_bn', 'vgg13_cifar_mn',
    'resnet20_bn', 'resnet20_mn', 'resnet20_gn', 'resnet20_mgn',
    'resnet56_bn', 'resnet56_mn', 'resnet56_gn', 'resnet56_mgn',
    'resnet18_mn',
)

__all__ = [
    'LeNet', 'NetworkInNetwork', 'CifarVGG', 'CifarResNet', 'resnet18_mn', 'MODEL_NAMES',
    'NORMS', 'MODE_NORMS', 'GN_GROUPS', 'DATASET_CFGS', 'CIFAR10_LABELS', 'CIFAR100_LABELS',
    'MULTIDOMAIN_DOMAINS', 'MULTIDOMAIN_LABELS', 'build_mn_model', 'get_norm_layer',
]
