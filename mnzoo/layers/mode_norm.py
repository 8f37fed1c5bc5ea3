"""Mode Normalization (Deecke, Murray & Bilen, ICLR 2019, arXiv:1810.05466).

All the MN math of mnzoo lives in this module.

Notation: x has shape (N, C, S) after flattening the spatial dims, m and v are its per-sample,
per-channel mean and (biased) variance over S, and K is the number of modes.

Both layers reduce to one affine map per (sample, channel),

    y[n, c, s] = a[n, c] * x[n, c, s] + b[n, c],

where a and b are small (N, C) functions of (m, v) and of the gate, affine and running
parameters. The K modes only ever touch these (N, K, C)-sized tensors, so the cost of a layer on a
feature map does not depend on K: one moment pass over x, one affine pass, and in training a
hand-written backward that needs two reductions and one elementwise pass.

Mode statistics use the law of total variance, sigma_k^2 = sum_n g_nk (v_n + (m_n - mu_k)^2) / N_k,
so no E[x^2] - E[x]^2 cancellation happens for inputs with large means.
"""
from __future__ import annotations

import contextlib
from typing import Callable, ContextManager, List, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = [
    "ModeNorm2d",
    "ModeNorm1d",
    "ModeGroupNorm",
    "mode_norm_coefficients",
    "mode_group_norm_coefficients",
]

# A mode whose total gate mass in a batch is below this (in units of samples) is treated as empty:
# it contributes nothing to the output and its running statistics are left untouched.
MIN_MODE_MASS = 1e-4

Reducer = Callable[[Tensor], Tensor]


def _identity(t: Tensor) -> Tensor:
    return t


def _nonzero(t: Tensor) -> Tensor:
    """Guard a denominator without changing it where it is a usable number."""
    return t.clamp_min(1e-12)


def mode_norm_coefficients(
    m: Tensor,
    v: Optional[Tensor],
    gate_weight: Tensor,
    gate_bias: Tensor,
    weight: Optional[Tensor],
    bias: Optional[Tensor],
    eps: float,
    mode_mean: Optional[Tensor] = None,
    mode_var: Optional[Tensor] = None,
    all_reduce: Reducer = _identity,
) -> Tuple[Tensor, Tensor, Tensor, Tensor, Tensor, Tensor]:
    """Per-(sample, channel) scale a and shift b of MN (paper eq. 2-3, Alg. 1 and 2).

    m, v: (N, C) per-sample spatial mean and biased variance. When ``mode_mean``/``mode_var``
    (K, C) are given (inference, Alg. 2) they are used instead of batch statistics and v may be
    None. ``all_reduce`` sums a tensor over processes (identity unless synchronised).

    Returns a, b of shape (N, C), then the gates g (N, K), the batch mode means and biased
    variances (K, C), and the mode masses N_k (K,) (the last three are the running-stat inputs).
    """
    g = torch.softmax(F.linear(m, gate_weight, gate_bias), dim=1)  # (N, K)
    if mode_mean is None or mode_var is None:
        assert v is not None
        mass = all_reduce(g.sum(0))  # N_k
        inv_mass = _nonzero(mass).reciprocal().unsqueeze(1)
        mu = all_reduce(g.t() @ m) * inv_mass  # (K, C)
        dev = v + (m - mu.unsqueeze(1)).square()  # (K, N, C): v_n + (m_n - mu_k)^2
        var = all_reduce(torch.bmm(g.t().unsqueeze(1), dev).squeeze(1)) * inv_mass
    else:
        mu, var, mass = mode_mean, mode_var, g.sum(0)
    scale = torch.rsqrt(var + eps)  # (K, C)
    if weight is not None:
        scale = scale * weight
    a = g @ scale
    shift = mu * scale
    b = -(g @ shift) if bias is None else torch.addmm(bias, g, shift, alpha=-1)
    return a, b, g, mu, var, mass


def _mode_norm_coefficients_backward(
    ga: Tensor, gb: Tensor, m: Tensor, v: Tensor, params: Sequence[Optional[Tensor]], eps: float,
    g: Tensor, mu: Tensor, var: Tensor, mass: Tensor,
) -> Tuple[Tensor, Tensor, List[Optional[Tensor]]]:
    """Hand-derived backward of ``mode_norm_coefficients`` (batch statistics, one process).

    Given dL/da and dL/db (N, C), returns dL/dm, dL/dv and the parameter gradients. It replaces
    re-running the small graph under autograd, whose op-by-op overhead dominated small layers.
    """
    gate_weight, _gate_bias, weight, bias = params
    r = torch.rsqrt(var + eps)
    scale = r if weight is None else r * weight
    shift = mu * scale
    gt = g.t()
    # a = g @ scale, b = bias - g @ shift
    d_g = ga @ scale.t() - gb @ shift.t()  # (N, K)
    d_scale = gt @ ga
    d_shift = -(gt @ gb)
    d_bias = gb.sum(0) if bias is not None else None
    d_r = d_scale + d_shift * mu  # through scale = r * w and shift = mu * r * w
    d_weight = (d_r * r).sum(0) if weight is not None else None
    if weight is not None:
        d_r = d_r * weight
    d_mu = d_shift * scale
    # var = sum_n g (v + (m - mu)^2) / N_k,  mu = sum_n g m / N_k,  r = (var + eps)^(-1/2)
    inv_mass = _nonzero(mass).reciprocal().unsqueeze(1)
    d_var = -0.5 * d_r * r.pow(3) * inv_mass  # already divided by N_k
    dev_m = m - mu.unsqueeze(1)  # (K, N, C)
    g_dev_m = gt.unsqueeze(2) * dev_m  # g_nk (m_n - mu_k)
    d_mu = (d_mu - 2.0 * d_var * g_dev_m.sum(1)) * inv_mass
    d_v = g @ d_var
    d_m = g @ d_mu + 2.0 * (g_dev_m * d_var.unsqueeze(1)).sum(0)
    dev = v + dev_m.square()
    d_g = d_g + ((dev * d_var.unsqueeze(1)).sum(2) + (dev_m * d_mu.unsqueeze(1)).sum(2)).t() \
        - (d_var * var).sum(1)
    # g = softmax(m W^T + b_g)
    d_z = g * (d_g - (g * d_g).sum(1, keepdim=True))
    d_m = d_m + d_z @ gate_weight
    return d_m, d_v, [d_z.t() @ m, d_z.sum(0), d_weight, d_bias]


def mode_group_norm_coefficients(
    m: Tensor,
    v: Tensor,
    gate_weight: Tensor,
    gate_bias: Tensor,
    weight: Optional[Tensor],
    bias: Optional[Tensor],
    eps: float,
) -> Tuple[Tensor, Tensor, Tensor]:
    """Per-(sample, channel) scale a and shift b of MGN (paper eq. 5, Alg. 3).

    Per sample, channel c goes to mode k with gate g[n, c, k] = softmax_k(w_k m[n, c] + b_k).
    Mode estimators average over the channels of a mode (gate-weighted) and over space, and
    the output is alpha * (1/K) * sum_k (x - mu_k) / sigma_k + beta. Returns a, b and the gates.
    """
    g = torch.softmax(m.unsqueeze(2) * gate_weight + gate_bias, dim=2)  # (N, C, K)
    mass = _nonzero(g.sum(1))  # (N, K)
    mu = torch.einsum("nck,nc->nk", g, m) / mass
    dev = v.unsqueeze(2) + (m.unsqueeze(2) - mu.unsqueeze(1)).square()  # (N, C, K)
    var = (g * dev).sum(1) / mass
    r = torch.rsqrt(var + eps)  # (N, K)
    a = r.mean(1, keepdim=True).expand_as(m)
    shift = (mu * r).mean(1, keepdim=True).expand_as(m)
    if weight is not None:
        a = a * weight
        shift = shift * weight
    b = -shift if bias is None else bias - shift
    return a, b, g


CoeffFn = Callable[[Tensor, Tensor, Sequence[Optional[Tensor]]], Tuple[Tensor, ...]]
CoeffBwd = Callable[..., Tuple[Tensor, Tensor, List[Optional[Tensor]]]]


def _moments(x: Tensor) -> Tuple[Tensor, Tensor]:
    """Per-(sample, channel) mean and biased variance over the last dim, two-pass (stable)."""
    m = x.mean(2)
    centred = x - m.unsqueeze(2)
    v = (centred.square_() if not centred.requires_grad else centred.square()).mean(2)
    return m, v


def _channel_affine(x: Tensor, scale: Tensor, shift: Tensor, center: Optional[Tensor] = None,
                    out: Optional[Tensor] = None) -> Tensor:
    """scale * (x - center) + shift for each (sample, channel) row of x (N, C, S).

    Runs on torch's fused inference batch-norm kernel over the (1, N*C, S) view, with unit
    variance and eps=0, which is exactly this affine map and faster than broadcasting ops.
    Returns the (1, N*C, S) result (callers reshape: a custom Function must not return a view);
    ``out`` may be given to reuse a buffer of that shape.
    """
    n, c, s = x.shape
    flat = x.reshape(1, n * c, s)
    ones = torch.ones(n * c, dtype=x.dtype, device=x.device)
    mean = torch.zeros_like(ones) if center is None else center.reshape(-1)
    if out is None:
        return torch.native_batch_norm(flat, scale.reshape(-1), shift.reshape(-1), mean, ones,
                                       False, 0.0, 0.0)[0]
    empty = ones.new_empty(0)
    torch.ops.aten.native_batch_norm.out(flat, scale.reshape(-1), shift.reshape(-1), mean, ones,
                                         False, 0.0, 0.0, out=out, save_mean=empty,
                                         save_invstd=empty.clone())
    return out


class _FusedAffineNorm(torch.autograd.Function):
    """y = a(m, v, p) * x + b(m, v, p), with m, v the spatial moments of x.

    The big (N, C, S) part is differentiated by hand on torch's fused batch-norm kernels. The
    small (N, C) graph from (m, v, p) to (a, b) is differentiated by ``coeff_bwd`` when given
    (called with the extras as keywords), else by re-running ``coeff_fn`` under autograd. Extra
    outputs of ``coeff_fn`` (gates, mode statistics) are returned but not differentiable.
    """

    @staticmethod
    def forward(ctx, coeff_fn: CoeffFn, coeff_bwd: Optional[CoeffBwd], check: Callable, x: Tensor,
                *params: Optional[Tensor]):
        n, c, n_spatial = x.shape
        # two-pass moments; the centred copy lives in the output buffer (one big allocation)
        m = x.mean(2)
        buf = _channel_affine(x, torch.ones_like(m), torch.zeros_like(m), m,
                              out=x.new_empty(1, n * c, n_spatial))
        v = torch.linalg.vector_norm(buf, dim=2).square_().view(n, c).div_(n_spatial)
        check(m, v)
        a, b, *extras = coeff_fn(m, v, params)
        y = _channel_affine(x, a, b, out=buf)
        ctx.coeff_fn, ctx.coeff_bwd, ctx.n_params = coeff_fn, coeff_bwd, len(params)
        ctx.save_for_backward(x, m, v, a, *params, *extras)
        ctx.mark_non_differentiable(*extras)
        return (y, *extras)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, gy: Tensor, *_unused):
        x, m, v, a, *rest = ctx.saved_tensors
        params, extras = rest[:ctx.n_params], rest[ctx.n_params:]
        n, c, n_spatial = x.shape
        ones = torch.ones(n * c, dtype=x.dtype, device=x.device)
        # one fused reduction pass: sum_s gy * (x - m) and sum_s gy
        _, gac, gb = torch.ops.aten.native_batch_norm_backward(
            gy.reshape(1, n * c, n_spatial), x.reshape(1, n * c, n_spatial), a.reshape(-1),
            m.reshape(-1), ones, None, None, False, 0.0, [False, True, True])
        gb = gb.view(n, c)
        ga = gac.view(n, c) + m * gb  # dL/da = sum_s gy * x
        needs = ctx.needs_input_grad[4:]
        if ctx.coeff_bwd is not None:
            gm, gv, grad_params = ctx.coeff_bwd(ga, gb, m, v, params, *extras)
            grad_params = [gp if need else None for gp, need in zip(grad_params, needs)]
        else:
            gm, gv, grad_params = _autograd_coeff_backward(ctx.coeff_fn, ga, gb, m, v, params, needs)
        # dy/dx = a, and m, v are means over S: dm/dx = 1/S, dv/dx = 2 (x - m) / S
        gx = _channel_affine(x, 2.0 / n_spatial * gv, gm / n_spatial, m).view(n, c, n_spatial)
        gx.addcmul_(gy.reshape(n, c, n_spatial), a.unsqueeze(2))
        return (None, None, None, gx, *grad_params)


def _autograd_coeff_backward(coeff_fn: CoeffFn, ga: Tensor, gb: Tensor, m: Tensor, v: Tensor,
                             params: Sequence[Optional[Tensor]], needs: Sequence[bool]):
    """Differentiate the small coefficient graph by re-running it under autograd."""
    with torch.enable_grad():
        m_ = m.detach().requires_grad_()
        v_ = v.detach().requires_grad_()
        p_ = [p.detach().requires_grad_(need) if p is not None else None
              for p, need in zip(params, needs)]
        a_, b_, *_ = coeff_fn(m_, v_, p_)
        wrt = [m_, v_] + [p for p in p_ if p is not None and p.requires_grad]
        grads = list(torch.autograd.grad((a_, b_), wrt, (ga, gb), allow_unused=True))
    gm, gv = [torch.zeros_like(m) if t is None else t for t in grads[:2]]
    pgrads = iter(grads[2:])
    return gm, gv, [next(pgrads) if p is not None and p.requires_grad else None for p in p_]


def _affine(x: Tensor, a: Tensor, b: Tensor) -> Tensor:
    """a * x + b per (sample, channel): the fused kernel in eager mode, plain ops for tracers."""
    if _plain_ops_only():
        return torch.addcmul(b.unsqueeze(2), x, a.unsqueeze(2))
    return _channel_affine(x, a, b)


def _plain_ops_only() -> bool:
    return (torch.jit.is_scripting() or torch.jit.is_tracing() or torch.compiler.is_compiling()
            or torch.onnx.is_in_onnx_export())


def _use_fused(x: Tensor, params: Sequence[Optional[Tensor]]) -> bool:
    """The hand-written backward is used in eager autograd; compilers and exporters trace the
    plain ops instead (they cannot see through a custom backward)."""
    if not torch.is_grad_enabled():
        return False
    if not (x.requires_grad or any(p is not None and p.requires_grad for p in params)):
        return False
    return not _plain_ops_only()


def _checks_enabled() -> bool:
    return not (torch.jit.is_tracing() or torch.compiler.is_compiling()
                or torch.onnx.is_in_onnx_export())


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


def _check_num_modes(name: str, num_modes: int) -> None:
    if isinstance(num_modes, bool) or not isinstance(num_modes, int):
        raise TypeError(f"{name}: num_modes must be an int, got {type(num_modes).__name__}")
    if num_modes < 1:
        raise ValueError(f"{name}: num_modes must be >= 1, got {num_modes}")


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

    def __init__(
        self,
        num_features: int,
        num_modes: int = 2,
        eps: float = 1e-5,
        momentum: Optional[float] = 0.1,
        affine: bool = True,
        track_running_stats: bool = True,
        device=None,
        dtype=None,
    ) -> None:
        super().__init__()
        _check_num_modes(type(self).__name__, num_modes)
        if num_features < 1:
            raise ValueError(f"{type(self).__name__}: num_features must be >= 1, got {num_features}")
        factory = {"device": device, "dtype": dtype}
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

    def reset_running_stats(self) -> None:
        if self.track_running_stats:
            self.running_mean.zero_()
            self.running_var.fill_(1)
            self.num_batches_tracked.zero_()

    def reset_parameters(self) -> None:
        """Affine to identity; gate near-uniform but not symmetric, so modes can separate."""
        self.reset_running_stats()
        if self.affine:
            nn.init.ones_(self.weight)
            nn.init.zeros_(self.bias)
        nn.init.normal_(self.gate.weight, std=0.01)
        nn.init.zeros_(self.gate.bias)

    def extra_repr(self) -> str:
        return (f"{self.num_features}, num_modes={self.num_modes}, eps={self.eps}, "
                f"momentum={self.momentum}, affine={self.affine}, "
                f"track_running_stats={self.track_running_stats}")

    def _params(self, dtype: torch.dtype) -> List[Optional[Tensor]]:
        ps = [self.gate.weight, self.gate.bias, self.weight, self.bias]
        return [p if p is None or p.dtype == dtype else p.to(dtype) for p in ps]

    def _all_reduce(self) -> Reducer:
        return _identity

    def _local_batch_ok(self, n: int) -> bool:
        return n >= 2

    def forward(self, x: Tensor) -> Tensor:
        self._check_input(x)
        use_batch_stats = self.training or not self.track_running_stats
        if use_batch_stats and not self._local_batch_ok(x.shape[0]):
            raise ValueError(
                f"{self._get_name()}({self.extra_repr()}): a batch of {x.shape[0]} sample cannot "
                "give mode statistics in training; use batches of 2 or more, or call .eval()")
        in_dtype = x.dtype
        cdtype = self._compute_dtype(x)
        with _no_autocast(x):
            x3 = x.reshape(x.shape[0], x.shape[1], -1).to(cdtype)
            params = self._params(cdtype)
            if use_batch_stats:
                y3, mu, var, mass, g = self._forward_batch_stats(x3, params)
                if self.training and self.track_running_stats:
                    self._update_running_stats(mu, var, mass, g, x3.shape[2])
            else:
                m = x3.mean(2)
                self._check_stats(m)
                a, b, *_ = mode_norm_coefficients(
                    m, None, *params, eps=self.eps,
                    mode_mean=self.running_mean.to(cdtype), mode_var=self.running_var.to(cdtype))
                y3 = _affine(x3, a, b)
        return y3.reshape(x.shape).to(in_dtype)

    def _forward_batch_stats(self, x3: Tensor, params: List[Optional[Tensor]]):
        reduce = self._all_reduce()

        eps = self.eps

        def coeff_fn(m: Tensor, v: Tensor, p: Sequence[Optional[Tensor]]):
            a, b, g, mu, var, mass = mode_norm_coefficients(m, v, *p, eps=eps, all_reduce=reduce)
            return a, b, mu, var, mass, g

        def coeff_bwd(ga, gb, m, v, p, mu, var, mass, g):
            return _mode_norm_coefficients_backward(ga, gb, m, v, p, eps, g, mu, var, mass)

        if _use_fused(x3, params) and reduce is _identity:
            y3, mu, var, mass, g = _FusedAffineNorm.apply(coeff_fn, coeff_bwd, self._check_stats,
                                                          x3, *params)
        else:
            m, v = _moments(x3)
            self._check_stats(m, v)
            a, b, mu, var, mass, g = coeff_fn(m, v, params)
            y3 = _affine(x3, a, b)
        return y3, mu, var, mass, g

    @torch.no_grad()
    def _update_running_stats(self, mu: Tensor, var: Tensor, mass: Tensor, g: Tensor,
                              n_spatial: int) -> None:
        self.num_batches_tracked.add_(1)
        if self.momentum is None:
            momentum = 1.0 / float(self.num_batches_tracked)
        else:
            momentum = self.momentum
        sq_mass = self._all_reduce()(torch.linalg.vecdot(g, g, dim=0))  # sum_n g_nk^2
        n_eff = mass.square().mul_(n_spatial).div_(_nonzero(sq_mass))
        unbias = torch.where(n_eff > 1.0 + 1e-6, n_eff / (n_eff - 1.0).clamp_min(1e-6), 1.0)
        rm, rv = self.running_mean, self.running_var
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
        device=None,
        dtype=None,
    ) -> None:
        super().__init__()
        _check_num_modes(type(self).__name__, num_modes)
        if num_channels < 1:
            raise ValueError(f"{type(self).__name__}: num_channels must be >= 1, got {num_channels}")
        factory = {"device": device, "dtype": dtype}
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
            x3 = x.reshape(x.shape[0], x.shape[1], -1).to(cdtype)
            ps = [self.gate_weight, self.gate_bias, self.weight, self.bias]
            params = [p if p is None or p.dtype == cdtype else p.to(cdtype) for p in ps]

            def coeff_fn(m: Tensor, v: Tensor, p: Sequence[Optional[Tensor]]):
                return mode_group_norm_coefficients(m, v, *p, eps=self.eps)

            if _use_fused(x3, params):
                y3, _g = _FusedAffineNorm.apply(coeff_fn, None, self._check_stats, x3, *params)
            else:
                m, v = _moments(x3)
                self._check_stats(m, v)
                a, b, _g = coeff_fn(m, v, params)
                y3 = _affine(x3, a, b)
        return y3.reshape(x.shape).to(in_dtype)
