"""SyncModeNorm2d: ModeNorm2d whose mode statistics are pooled over all processes.

Every gate-weighted sum that feeds a mode statistic (N_k, sum_n g_nk m_n, the weighted squared
deviations, and sum_n g_nk^2 for the running-variance correction) is all-reduced, so P processes
with batch B each compute exactly the statistics of one process with batch P*B. The all-reduce is
differentiable: the gradient of a sum over processes is the sum over processes of the
gradients, so its backward is an all-reduce as well.
"""
from __future__ import annotations

from typing import Any, Dict, Optional, Tuple, Type, Union, cast

import torch
import torch.distributed as dist
from torch import Tensor, nn

from .functional import Reducer, _identity
from .mode_norm import ModeNorm1d, ModeNorm2d

__all__ = ["SyncModeNorm2d", "SyncModeNorm1d", "convert_sync_mode_norm"]


class _AllReduceSum(torch.autograd.Function):
    """Sum a tensor over the processes of ``group``, differentiably."""

    @staticmethod
    def forward(ctx: Any, t: Tensor, group: Optional[Any]) -> Tensor:
        ctx.group = group
        out = t.clone().contiguous()
        dist.all_reduce(out, op=dist.ReduceOp.SUM, group=group)
        return out

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> Tuple[Tensor, None]:
        out = grad.clone().contiguous()
        dist.all_reduce(out, op=dist.ReduceOp.SUM, group=ctx.group)
        return out, None


class SyncModeNorm2d(ModeNorm2d):
    """ModeNorm2d with statistics synchronised over ``process_group`` (default: the world)."""

    def __init__(
        self,
        num_features: int,
        num_modes: int = 2,
        eps: float = 1e-5,
        momentum: Optional[float] = 0.1,
        affine: bool = True,
        track_running_stats: bool = True,
        process_group: Optional[Any] = None,
        device: Optional[Union[torch.device, str]] = None,
        dtype: Optional[torch.dtype] = None,
    ) -> None:
        super().__init__(num_features, num_modes, eps, momentum, affine, track_running_stats,
                         device=device, dtype=dtype)
        self.process_group = process_group

    def _synced(self) -> bool:
        return (self.training and dist.is_available() and dist.is_initialized()
                and dist.get_world_size(self.process_group) > 1)

    def _all_reduce(self) -> Reducer:
        if not self._synced():
            return _identity
        group = self.process_group

        def reduce(t: Tensor) -> Tensor:
            return _AllReduceSum.apply(t, group)

        return reduce

    def _local_batch_ok(self, n: int) -> bool:
        # one sample per process is fine when the statistics are pooled over several processes
        return n >= 2 or (n == 1 and self._synced())


class SyncModeNorm1d(SyncModeNorm2d):
    """ModeNorm1d with statistics synchronised over ``process_group``."""

    _expected_dims = ModeNorm1d._expected_dims
    _shape_doc = ModeNorm1d._shape_doc


_SYNC_OF: Dict[type, Type[SyncModeNorm2d]] = {ModeNorm2d: SyncModeNorm2d, ModeNorm1d: SyncModeNorm1d}


def convert_sync_mode_norm(module: nn.Module, process_group: Optional[Any] = None) -> nn.Module:
    """Return ``module`` with every ModeNorm2d / ModeNorm1d replaced by its synchronised
    version (state copied).

    The counterpart of ``nn.SyncBatchNorm.convert_sync_batchnorm``; BatchNorm layers are left
    alone (convert them with that function).
    """
    out = module
    sync_cls = _SYNC_OF.get(type(module))
    if sync_cls is not None:
        mn = cast(ModeNorm2d, module)  # exactly a ModeNorm2d or ModeNorm1d
        out = sync_cls(mn.num_features, mn.num_modes, mn.eps, mn.momentum, mn.affine, mn.track_running_stats,
                       process_group, device=mn.gate.weight.device, dtype=mn.gate.weight.dtype)
        out.load_state_dict(mn.state_dict())
        out.train(mn.training)
        for p_new, p_old in zip(out.parameters(), mn.parameters(), strict=True):
            p_new.requires_grad_(p_old.requires_grad)
    for name, child in module.named_children():
        new_child = convert_sync_mode_norm(child, process_group)
        if new_child is not child:
            out.add_module(name, new_child)
    return out
