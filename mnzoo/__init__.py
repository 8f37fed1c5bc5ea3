"""mnzoo: the model zoo for Mode Normalization (Deecke, Murray & Bilen, ICLR 2019)."""
from .layers import (
    ModeGroupNorm,
    ModeNorm1d,
    ModeNorm2d,
    SyncModeNorm1d,
    SyncModeNorm2d,
    convert_sync_mode_norm,
    convert_to_mode_norm,
    register_timm_norm_names,
)
from . import models  # noqa: F401  (registers the model families with timm)
from ._factory import UnknownModelError, create_model, list_models
from . import hub, weights  # noqa: E402  (public submodules)

register_timm_norm_names()  # norm_layer='modenorm2d' etc. in timm's norm factory

__version__ = "0.1.0"
__all__ = [
    "ModeNorm2d",
    "ModeNorm1d",
    "ModeGroupNorm",
    "SyncModeNorm2d",
    "SyncModeNorm1d",
    "convert_sync_mode_norm",
    "convert_to_mode_norm",
    "create_model",
    "list_models",
    "UnknownModelError",
    "hub",
    "weights",
    "__version__",
]
