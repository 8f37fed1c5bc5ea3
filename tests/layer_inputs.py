"""Test helper: MN layers with non-trivial parameters, and inputs whose two halves differ like two
domains, so that every term of the paper's equations (and the modes) matters."""
from __future__ import annotations

from typing import List, Sequence

import torch
from torch import Tensor, nn


def randomise(layer: nn.Module, seed: int = 0) -> nn.Module:
    """Give gate and affine non-trivial values (affine vectors around 1, the rest around 0)."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in layer.parameters():
            p.copy_(torch.randn(p.shape, generator=gen, dtype=p.dtype) * 0.7
                    + (1.0 if p.dim() == 1 and p.shape[0] > 4 else 0.0))
    return layer


def mn_params(layer: nn.Module) -> List[Tensor]:
    """A ModeNorm layer's gate weight and bias, then its affine weight and bias (the oracle's order)."""
    return [layer.gate.weight, layer.gate.bias, layer.weight, layer.bias]


def two_domain_input(shape: Sequence[int], seed: int = 1, scale: float = 2.0, shift: float = 0.5) -> Tensor:
    """float64 noise whose first half has other statistics than the second: two "domains"."""
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(tuple(shape), generator=gen, dtype=torch.float64) * scale + shift
    x[: shape[0] // 2] = x[: shape[0] // 2] * 0.3 - 1.5
    return x
