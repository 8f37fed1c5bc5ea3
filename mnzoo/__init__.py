"""mnzoo: the model zoo for Mode Normalization (Deecke, Murray & Bilen, ICLR 2019)."""
from .layers import ModeGroupNorm, ModeNorm1d, ModeNorm2d

__version__ = "0.1.0"
__all__ = ["ModeNorm2d", "ModeNorm1d", "ModeGroupNorm", "__version__"]
