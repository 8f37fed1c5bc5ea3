"""Datasets for mnzoo: IDX, ImageFolder (folder or tar), torchvision roots, the multi-domain mix.

Small-image datasets are decoded once into uint8 tensors (cached on disk) and served by
:class:`TensorLoader`, which augments whole batches in the training process.
"""
from .factory import (DOMAINS, Domain, Source, build_dataset, create_imagefolder_loader, default_cache_dir,
                      domain_transform, load_source, multidomain_classes, parse_source)
from .loader import BatchAugment, ImageTensors, TensorLoader, epoch_generator
from .readers import read_idx, read_idx_split, read_image_folder, read_torchvision

__all__ = [
    "DOMAINS", "Domain", "Source", "build_dataset", "create_imagefolder_loader", "default_cache_dir",
    "domain_transform", "load_source", "multidomain_classes", "parse_source",
    "BatchAugment", "ImageTensors", "TensorLoader", "epoch_generator",
    "read_idx", "read_idx_split", "read_image_folder", "read_torchvision",
]
