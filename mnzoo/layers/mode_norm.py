"""Mode Normalization layers (Deecke, Murray & Bilen, ICLR 2019, arXiv:1810.05466).

``ModeNorm2d`` / ``ModeNorm1d`` (paper Alg. 1-2, drop-ins for BatchNorm) and ``ModeGroupNorm``
(Alg. 3, a drop-in for GroupNorm). The equations are in ``functional.py``, the fused passes over
the feature map in ``_fused.py``; this module holds the modules, their buffers and input checks.
"""
from __future__ import annotations

import contextlib
import numbers
from typing import Any, ContextManager, Dict, List, Optional, Tuple, Union, overload

import torch
from torch import Tensor, nn

from ._cpu import NO_RUNNING, Running, cpu_mode_norm_eval, cpu_mode_norm_train, needs_grad, use_cpu_kernels
from ._fused import _affine, _checks_enabled, _FusedAffineNorm, _moments, _spatial_mean, _use_fused
from .functional import (
    MIN_MODE_MASS,
    Params,
    Reducer,
    _identity,
    _mode_norm_coefficients_backward,
    _nonzero,
    _split_params,
    mode_group_norm_coefficients,
    mode_norm_coefficients,
)

__all__ = ["ModeNorm2d", "ModeNorm1d", "ModeGroupNorm"]


class _NormBase(nn.Module):
    """Shared input validation and dtype handling of the MN layers."""

    _expected_dims: Tuple[int, ...] = (4,)
    _shape_doc = "(N, C, H, W)"
    num_features: int

    def _check_input(self, x: Tensor) -> None:
        if not isinstance(x, Tensor):
            raise TypeError(f"{self._get_name()}: expected a torch.Tensor, got {type(x).__name__}")
        if x.dim() not in self._expected_dims:
            raise ValueError(
                f"{self._get_name()}({self.extra_repr()}): expected a {self._shape_doc} input "
                f"with {' or '.join(map(str, self._expected_dims))} dims, got shape {tuple(x.shape)}")
        if x.shape[1] != self.num_features:
            raise ValueError(
                f"{self._get_name()}({self.extra_repr()}): input has {x.shape[1]} channels, "
                f"layer expects num_features={self.num_features} (shape {tuple(x.shape)})")
        if not x.is_floating_point():
            raise TypeError(f"{self._get_name()}: expected a floating point input, got {x.dtype}")

    def _check_stats(self, m: Tensor, v: Optional[Tensor] = None) -> None:
        """Raise on NaN/Inf statistics. v is computed from x - m, so a non-finite m (or x)
        always shows in v: checking v alone is enough when it is given."""
        if not _checks_enabled():
            return
        if not bool(torch.isfinite(m if v is None else v).all()):
            self._raise_nonfinite()

    def _raise_nonfinite(self) -> None:
        raise ValueError(
            f"{self._get_name()}({self.extra_repr()}): non-finite input statistics "
            "(the input holds NaN or Inf, or overflows its dtype)")

    @staticmethod
    def _compute_dtype(x: Tensor) -> torch.dtype:
        # statistics of half-precision inputs are computed in fp32 (also under autocast)
        return torch.float32 if x.dtype in (torch.float16, torch.bfloat16) else x.dtype


def _no_autocast(x: Tensor) -> ContextManager:
    """Leave autocast while the statistics are computed (entering a context costs time)."""
    if torch.is_autocast_enabled(x.device.type):
        return torch.autocast(device_type=x.device.type, enabled=False)
    return contextlib.nullcontext()


def _own(module: nn.Module, *names: str) -> Tuple[Optional[Tensor], ...]:
    """module.<name> for parameters and buffers, read from the module's dicts when they hold
    the name (fast), else through getattr (parametrized or user-replaced attributes)."""
    params, buffers = module._parameters, module._buffers
    return tuple(params[n] if n in params else buffers[n] if n in buffers else getattr(module, n)
                 for n in names)


@overload
def _as(t: Tensor, dtype: torch.dtype) -> Tensor: ...
@overload
def _as(t: None, dtype: torch.dtype) -> None: ...
@overload
def _as(t: Optional[Tensor], dtype: torch.dtype) -> Optional[Tensor]: ...
def _as(t: Optional[Tensor], dtype: torch.dtype) -> Optional[Tensor]:
    """t in dtype; t itself (no ``.to`` call, which costs ~2.5 us) when it already is, or None."""
    return t if t is None or t.dtype is dtype else t.to(dtype)


def _check_num_modes(name: str, num_modes: int) -> None:
    if isinstance(num_modes, bool) or not isinstance(num_modes, int):
        raise TypeError(f"{name}: num_modes must be an int, got {type(num_modes).__name__}")
    if num_modes < 1:
        raise ValueError(f"{name}: num_modes must be >= 1, got {num_modes}")


def _check_eps_momentum(name: str, eps: float, momentum: Optional[float] = None) -> None:
    """eps >= 0 (a negative one can take sqrt of a negative variance) and momentum in [0, 1] or
    None (the cumulative average), as nn.BatchNorm2d means them (it does not check them)."""
    if isinstance(eps, bool) or not isinstance(eps, numbers.Real) or not 0 <= eps < float("inf"):
        raise ValueError(f"{name}: eps must be a finite number >= 0, got {eps!r}")
    if momentum is not None and (isinstance(momentum, bool) or not isinstance(momentum, numbers.Real)
                                 or not 0 <= momentum <= 1):
        raise ValueError(f"{name}: momentum must be in [0, 1] or None (cumulative average), got {momentum!r}")


class ModeNorm2d(_NormBase):
    """Mode Normalization for (N, C, H, W) inputs; a drop-in for ``nn.BatchNorm2d``.

    A gate softmax(Linear(C -> K)) on the per-sample spatial mean softly assigns each sample to
    ``num_modes`` modes; each mode has its own gate-weighted mean and variance (eq. 2-3). The
    affine ``weight``/``bias`` (C,) are shared by all modes (paper, footnote 3).

    Buffers ``running_mean``/``running_var`` have shape (K, C) and follow ``nn.BatchNorm2d``'s
    momentum convention (``momentum=None`` is a cumulative average). ``running_var`` stores the
    *unbiased* mode variance, with the reliability-weights correction
    n_eff / (n_eff - 1), n_eff = S * (sum_n g_nk)^2 / sum_n g_nk^2, so that K=1 matches
    ``nn.BatchNorm2d`` exactly, running statistics included. Modes with (almost) no gate mass
    in a batch keep their running statistics.
    """

    weight: Optional[Tensor]  # None unless affine
    bias: Optional[Tensor]
    running_mean: Optional[Tensor]  # None unless track_running_stats
    running_var: Optional[Tensor]
    num_batches_tracked: Optional[Tensor]

    def __init__(
        self,
        num_features: int,
        num_modes: int = 2,
        eps: float = 1e-5,
        momentum: Optional[float] = 0.1,
        affine: bool = True,
        track_running_stats: bool = True,
        device: Optional[Union[torch.device, str]] = None,
        dtype: Optional[torch.dtype] = None,
    ) -> None:
        super().__init__()
        _check_num_modes(type(self).__name__, num_modes)
        _check_eps_momentum(type(self).__name__, eps, momentum)
        if num_features < 1:
            raise ValueError(f"{type(self).__name__}: num_features must be >= 1, got {num_features}")
        factory: Dict[str, Any] = {"device": device, "dtype": dtype}
        self.num_features = num_features
        self.num_modes = num_modes
        self.eps = eps
        self.momentum = momentum
        self.affine = affine
        self.track_running_stats = track_running_stats
        self.gate = nn.Linear(num_features, num_modes, **factory)
        if affine:
            self.weight = nn.Parameter(torch.empty(num_features, **factory))
            self.bias = nn.Parameter(torch.empty(num_features, **factory))
        else:
            self.register_parameter("weight", None)
            self.register_parameter("bias", None)
        if track_running_stats:
            self.register_buffer("running_mean", torch.zeros(num_modes, num_features, **factory))
            self.register_buffer("running_var", torch.ones(num_modes, num_features, **factory))
            self.register_buffer("num_batches_tracked", torch.tensor(0, dtype=torch.long, device=device))
        else:
            self.register_buffer("running_mean", None)
            self.register_buffer("running_var", None)
            self.register_buffer("num_batches_tracked", None)
        self.reset_parameters()

    def _running(self) -> Tuple[Tensor, Tensor, Tensor]:
        """running_mean, running_var, num_batches_tracked; only called when they are tracked."""
        rm, rv, n = _own(self, "running_mean", "running_var", "num_batches_tracked")
        assert rm is not None and rv is not None and n is not None, "running statistics are not tracked"
        return rm, rv, n

    def reset_running_stats(self) -> None:
        if self.track_running_stats:
            rm, rv, n = self._running()
            rm.zero_()
            rv.fill_(1)
            n.zero_()

    def reset_parameters(self) -> None:
        """Affine to identity; gate near-uniform but not symmetric, so modes can separate."""
        self.reset_running_stats()
        if self.weight is not None and self.bias is not None:  # affine
            nn.init.ones_(self.weight)
            nn.init.zeros_(self.bias)
        nn.init.normal_(self.gate.weight, std=0.01)
        nn.init.zeros_(self.gate.bias)

    def extra_repr(self) -> str:
        return (f"{self.num_features}, num_modes={self.num_modes}, eps={self.eps}, "
                f"momentum={self.momentum}, affine={self.affine}, "
                f"track_running_stats={self.track_running_stats}")

    def _params(self, dtype: torch.dtype) -> List[Optional[Tensor]]:
        """gate weight, gate bias, weight, bias, cast to the compute dtype."""
        ps = (*_own(self.gate, "weight", "bias"), *_own(self, "weight", "bias"))
        return [_as(p, dtype) for p in ps]

    def _all_reduce(self) -> Reducer:
        return _identity

    def _local_batch_ok(self, n: int) -> bool:
        return n >= 2

    def forward(self, x: Tensor) -> Tensor:
        # Attributes are read from the module's dicts (_own): nn.Module.__getattr__ costs ~1.5 us
        # per parameter or buffer, which was a third of a small eval layer's time.
        self._check_input(x)
        use_batch_stats = self.training or not self.track_running_stats
        if use_batch_stats and not self._local_batch_ok(x.shape[0]):
            where = "in training" if self.training else "from the batch (track_running_stats=False)"
            hint = ", or call .eval()" if self.training and self.track_running_stats else ""
            raise ValueError(
                f"{self._get_name()}({self.extra_repr()}): a batch of {x.shape[0]} sample"
                f"{'' if x.shape[0] == 1 else 's'} cannot give mode statistics {where}; "
                f"use batches of 2 or more{hint}")
        in_dtype = x.dtype
        cdtype = self._compute_dtype(x)
        with _no_autocast(x):
            xc = _as(x, cdtype)
            params = self._params(cdtype)
            update = self.training and self.track_running_stats
            if use_batch_stats and self._all_reduce() is _identity and use_cpu_kernels(xc, params):
                y = self._forward_cpu_kernels(xc, params, update)
            elif use_batch_stats:
                y, mu, var, mass, g = self._forward_batch_stats(xc, params)
                if update:
                    self._update_running_stats(mu, var, mass, g, xc[0, 0].numel())
            else:
                rm, rv, _ = self._running()
                rm, rv = _as(rm, cdtype), _as(rv, cdtype)
                if not needs_grad(xc, params) and use_cpu_kernels(xc, params):
                    y, nonfinite = cpu_mode_norm_eval(xc, params, rm, rv, self.eps)
                    if nonfinite:
                        self._raise_nonfinite()
                else:
                    m = _spatial_mean(xc)
                    self._check_stats(m)
                    a, b, *_ = mode_norm_coefficients(m, None, *_split_params(params), eps=self.eps,
                                                      mode_mean=rm, mode_var=rv)
                    y = _affine(xc, a, b)
        return _as(y, in_dtype)

    def _forward_cpu_kernels(self, x: Tensor, params: List[Optional[Tensor]], update: bool) -> Tensor:
        """Batch statistics on the fused CPU kernels, which also update the running statistics
        when their dtype matches x's (else they are updated here, as on the other paths)."""
        running: Running = NO_RUNNING
        counter: Optional[Tensor] = None  # num_batches_tracked, when the kernel updates the statistics
        if update:
            rm, rv, n = self._running()
            if rm.dtype == x.dtype:
                running, counter = (rm, rv, self._next_momentum(), MIN_MODE_MASS), n
        y, mu, var, mass, g, nonfinite = cpu_mode_norm_train(x, params, self.eps, running)
        if nonfinite:
            self._raise_nonfinite()
        if counter is not None:
            counter.add_(1)
        elif update:
            self._update_running_stats(mu, var, mass, g, x[0, 0].numel())
        return y

    def _forward_batch_stats(self, x: Tensor, params: List[Optional[Tensor]]) -> Tuple[Tensor, ...]:
        """Normalise x (N, C, *) with batch statistics; returns y and the running-stat inputs."""
        reduce = self._all_reduce()

        eps = self.eps

        def coeff_fn(m: Tensor, v: Tensor, p: Params) -> Tuple[Tensor, ...]:
            a, b, g, mu, var, mass = mode_norm_coefficients(m, v, *_split_params(p), eps=eps, all_reduce=reduce)
            return a, b, mu, var, mass, g

        def coeff_bwd(ga: Tensor, gb: Tensor, m: Tensor, v: Tensor, p: Params, mu: Tensor, var: Tensor,
                      mass: Tensor, g: Tensor) -> Tuple[Tensor, Tensor, List[Optional[Tensor]]]:
            return _mode_norm_coefficients_backward(ga, gb, m, v, p, eps, g, mu, var, mass)

        if _use_fused(x, params) and reduce is _identity:
            return _FusedAffineNorm.apply(coeff_fn, coeff_bwd, self._check_stats, x, *params)
        m, v = _moments(x)
        self._check_stats(m, v)
        a, b, mu, var, mass, g = coeff_fn(m, v, params)
        return _affine(x, a, b), mu, var, mass, g

    def _next_momentum(self) -> float:
        """The running-average weight of the batch about to be counted (cumulative when
        ``momentum`` is None, as in ``nn.BatchNorm2d``)."""
        if self.momentum is None:
            return 1.0 / (float(self._running()[2]) + 1.0)
        return float(self.momentum)

    @torch.no_grad()
    def _update_running_stats(self, mu: Tensor, var: Tensor, mass: Tensor, g: Tensor,
                              n_spatial: int) -> None:
        momentum = self._next_momentum()
        rm, rv, n = self._running()
        n.add_(1)
        sq_mass = self._all_reduce()(torch.linalg.vecdot(g, g, dim=0))  # sum_n g_nk^2
        n_eff = mass.square().mul_(n_spatial).div_(_nonzero(sq_mass))
        unbias = torch.where(n_eff > 1.0 + 1e-6, n_eff / (n_eff - 1.0).clamp_min(1e-6), 1.0)
        step = (mass > MIN_MODE_MASS).to(rm.dtype).mul_(momentum).unsqueeze(1)  # (K, 1)
        rm.lerp_(mu.to(rm.dtype), step)
        rv.lerp_(var.mul(unbias.unsqueeze(1)).to(rv.dtype), step)


class ModeNorm1d(ModeNorm2d):
    """Mode Normalization for (N, C) or (N, C, L) inputs; a drop-in for ``nn.BatchNorm1d``."""

    _expected_dims = (2, 3)
    _shape_doc = "(N, C) or (N, C, L)"


class ModeGroupNorm(_NormBase):
    """Mode Group Normalization (paper Alg. 3, eq. 5); a drop-in for ``nn.GroupNorm``.

    Per sample, a gate R -> R^K (``gate_weight``, ``gate_bias`` of shape (K,)) on each channel's
    spatial mean softly assigns channels to modes; mode statistics are gate-weighted averages over
    the channels of the mode and over space, and the output is
    alpha * (1/K) * sum_k (x - mu_k) / sqrt(sigma_k^2 + eps) + beta. It behaves the same in
    training and in eval, and has no running statistics.
    """

    _expected_dims = (2, 3, 4, 5)
    _shape_doc = "(N, C, *)"

    def __init__(
        self,
        num_channels: int,
        num_modes: int = 2,
        eps: float = 1e-5,
        affine: bool = True,
        device: Optional[Union[torch.device, str]] = None,
        dtype: Optional[torch.dtype] = None,
    ) -> None:
        super().__init__()
        _check_num_modes(type(self).__name__, num_modes)
        _check_eps_momentum(type(self).__name__, eps)
        if num_channels < 1:
            raise ValueError(f"{type(self).__name__}: num_channels must be >= 1, got {num_channels}")
        factory: Dict[str, Any] = {"device": device, "dtype": dtype}
        self.num_channels = num_channels
        self.num_modes = num_modes
        self.eps = eps
        self.affine = affine
        self.gate_weight = nn.Parameter(torch.empty(num_modes, **factory))
        self.gate_bias = nn.Parameter(torch.empty(num_modes, **factory))
        if affine:
            self.weight = nn.Parameter(torch.empty(num_channels, **factory))
            self.bias = nn.Parameter(torch.empty(num_channels, **factory))
        else:
            self.register_parameter("weight", None)
            self.register_parameter("bias", None)
        self.reset_parameters()

    @property
    def num_features(self) -> int:  # type: ignore[override]
        return self.num_channels

    def reset_parameters(self) -> None:
        """Affine to identity; gate slopes spread around 0 so modes start distinct."""
        if self.affine:
            nn.init.ones_(self.weight)
            nn.init.zeros_(self.bias)
        nn.init.normal_(self.gate_weight, std=0.01)
        nn.init.zeros_(self.gate_bias)

    def extra_repr(self) -> str:
        return f"{self.num_channels}, num_modes={self.num_modes}, eps={self.eps}, affine={self.affine}"

    def forward(self, x: Tensor) -> Tensor:
        self._check_input(x)
        in_dtype = x.dtype
        cdtype = self._compute_dtype(x)
        with _no_autocast(x):
            xc = _as(x, cdtype)
            params = [_as(p, cdtype) for p in _own(self, "gate_weight", "gate_bias", "weight", "bias")]

            def coeff_fn(m: Tensor, v: Tensor, p: Params) -> Tuple[Tensor, ...]:
                return mode_group_norm_coefficients(m, v, *_split_params(p), eps=self.eps)

            if _use_fused(xc, params):
                y, _g = _FusedAffineNorm.apply(coeff_fn, None, self._check_stats, xc, *params)
            else:
                m, v = _moments(xc)
                self._check_stats(m, v)
                a, b, _g = coeff_fn(m, v, params)
                y = _affine(xc, a, b)
        return _as(y, in_dtype)
