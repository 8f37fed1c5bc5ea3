"""Normalisation layers of mnzoo: MN, MGN, their synchronised variant and model conversion."""
from .mode_norm import ModeGroupNorm, ModeNorm1d, ModeNorm2d, mode_group_norm_coefficients, mode_norm_coefficients

__all__ = ["ModeNorm2d", "ModeNorm1d", "ModeGroupNorm", "mode_norm_coefficients", "mode_group_norm_coefficients"]
