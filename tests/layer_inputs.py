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


def assert_autocast_keeps_fp32_statistics(device: str) -> None:
    """Under bf16 autocast a ModeNorm2d returns bf16 but computes its statistics in fp32: at
    |x| ~ 100 the bf16 input rounding (~0.4, ~0.08 std units) bounds the error, it does not grow."""
    from mnzoo import ModeNorm2d

    layer = randomise(ModeNorm2d(8, 2)).to(device)
    x = (torch.randn(8, 8, 6, 6, generator=torch.Generator().manual_seed(5)) * 5 + 100).to(device)
    ref = layer(x)
    with torch.autocast(device, dtype=torch.bfloat16):
        out = layer(x.bfloat16())
    assert out.dtype == torch.bfloat16
    assert (out.float() - ref).abs().mean() < 0.1
