"""The MN layers by name in timm's norm-layer factory (``timm.layers.get_norm_layer``).

timm models that resolve ``norm_layer`` through that factory (ResNet among them) then take the
layers as strings, as they take ``'batchnorm2d'``::

    timm.create_model('resnet50', norm_layer='modenorm2d')       # MN, K=2
    timm.layers.create_norm_layer('mode_group_norm', 64)        # timm drops '_' and case

For another K, pass ``functools.partial(ModeNorm2d, num_modes=K)`` instead of a name.
timm has no public registry for norm layers, so the names are added to its factory table; a name
timm already uses is never replaced.
"""
from __future__ import annotations

import warnings
from typing import Dict

from torch import nn

from .mode_norm import ModeGroupNorm, ModeNorm1d, ModeNorm2d

__all__ = ["TIMM_NORM_NAMES", "register_timm_norm_names"]

#: names as timm looks them up (lower case, no '_')
TIMM_NORM_NAMES: Dict[str, type[nn.Module]] = {
    "modenorm": ModeNorm2d,
    "modenorm2d": ModeNorm2d,
    "modenorm1d": ModeNorm1d,
    "modegroupnorm": ModeGroupNorm,
}


def register_timm_norm_names() -> bool:
    """Add :data:`TIMM_NORM_NAMES` to timm's norm factory; False when this timm has no such table."""
    from timm.layers import create_norm

    table = getattr(create_norm, "_NORM_MAP", None)
    if not isinstance(table, dict):
        return False
    for name, layer in TIMM_NORM_NAMES.items():
        if table.get(name, layer) is not layer:
            warnings.warn(f"timm already has a norm layer named {name!r} ({table[name]!r}); mnzoo leaves it",
                          stacklevel=2)
            continue
        table[name] = layer
    types = getattr(create_norm, "_NORM_TYPES", None)
    if isinstance(types, set):
        types.update(TIMM_NORM_NAMES.values())
    return True
