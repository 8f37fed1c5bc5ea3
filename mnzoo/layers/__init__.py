"""Normalisation layers of mnzoo: MN, MGN, their synchronised variant and model conversion."""
from ._cpu import build_cpu_kernels
from .convert import convert_to_mode_norm
from .functional import mode_group_norm_coefficients, mode_norm_coefficients
from .mode_norm import ModeGroupNorm, ModeNorm1d, ModeNorm2d
from .sync import SyncModeNorm1d, SyncModeNorm2d, convert_sync_mode_norm
from .timm_names import TIMM_NORM_NAMES, register_timm_norm_names

__all__ = [
    "ModeNorm2d",
    "ModeNorm1d",
    "ModeGroupNorm",
    "SyncModeNorm2d",
    "SyncModeNorm1d",
    "convert_sync_mode_norm",
    "convert_to_mode_norm",
    "mode_norm_coefficients",
    "mode_group_norm_coefficients",
    "build_cpu_kernels",
    "TIMM_NORM_NAMES",
    "register_timm_norm_names",
]
