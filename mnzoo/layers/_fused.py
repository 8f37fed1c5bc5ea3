"""The big-tensor passes of the MN layers: moments, the per-(sample, channel) affine map and its
hand-written backward, on torch's fused batch-norm kernels. The math of the coefficients a, b is
in ``functional.py``; this module only knows that y = a(m, v, p) * x + b(m, v, p).

A 4-D channels_last input is reduced and mapped in place of its layout with broadcasting ops
(the batch-norm trick needs the (N*C, S) rows of NCHW), so y and the input gradient come back
channels_last, as they do from ``nn.BatchNorm2d`` and the CPU kernels.
"""
from __future__ import annotations

from typing import Any, Callable, List, Optional, Sequence, Tuple

import torch
from torch import Tensor

__all__: List[str] = []

CoeffFn = Callable[[Tensor, Tensor, Sequence[Optional[Tensor]]], Tuple[Tensor, ...]]
CoeffBwd = Callable[..., Tuple[Tensor, Tensor, List[Optional[Tensor]]]]


def is_channels_last(x: Tensor) -> bool:
    """A 4-D tensor laid out NHWC in memory (and not also NCHW-contiguous, as when H = W = 1)."""
    return x.dim() == 4 and not x.is_contiguous() and x.is_contiguous(memory_format=torch.channels_last)


def _bcast(t: Tensor, like: Tensor) -> Tensor:
    """An (N, C) tensor viewed as (N, C, 1, ...) to broadcast against ``like`` (N, C, *)."""
    return t.view(t.shape + (1,) * (like.dim() - 2))


def _spatial(x: Tensor) -> Tuple[Tensor, Tuple[int, ...]]:
    """x as (N, C, S) rows and the dim to reduce, or as itself with (2, 3) when channels_last
    (reshaping that would copy it to NCHW)."""
    if is_channels_last(x):
        return x, (2, 3)
    return x.reshape(x.shape[0], x.shape[1], -1), (2,)


def _moments(x: Tensor) -> Tuple[Tensor, Tensor]:
    """Per-(sample, channel) mean and biased variance of x (N, C, *) over space, two-pass (stable)."""
    xs, dims = _spatial(x)
    m = xs.mean(dims)
    centred = xs - _bcast(m, xs)
    v = (centred.square_() if not centred.requires_grad else centred.square()).mean(dims)
    return m, v


def _spatial_mean(x: Tensor) -> Tensor:
    """Per-(sample, channel) mean of x (N, C, *) over space, without a layout copy."""
    xs, dims = _spatial(x)
    return xs.mean(dims)


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
    """y = a(m, v, p) * x + b(m, v, p), with m, v the spatial moments of x (N, C, *).

    The output has the shape of x and is not a view, so in-place ops after the layer (ReLU) cost
    no extra copies in autograd.

    The big (N, C, S) part is differentiated by hand on torch's fused batch-norm kernels. The
    small (N, C) graph from (m, v, p) to (a, b) is differentiated by ``coeff_bwd`` when given
    (called with the extras as keywords), else by re-running ``coeff_fn`` under autograd. Extra
    outputs of ``coeff_fn`` (gates, mode statistics) are returned but not differentiable.
    """

    @staticmethod
    def forward(ctx: Any, coeff_fn: CoeffFn, coeff_bwd: Optional[CoeffBwd], check: Callable, x: Tensor,
                *params: Optional[Tensor]) -> Tuple[Tensor, ...]:
        if is_channels_last(x):  # broadcasting ops in place of the layout; saved as 4-D
            xs = x
            m, v = _moments(x)
            check(m, v)
            a, b, *extras = coeff_fn(m, v, params)
            y = _affine(x, a, b)
        else:  # saved as the (N, C, S) view
            xs = x.reshape(x.shape[0], x.shape[1], -1)
            n, c, n_spatial = xs.shape
            # two-pass moments; the centred copy lives in the output buffer (one big allocation)
            m = xs.mean(2)
            y = xs.new_empty(x.shape)
            flat = y.view(1, n * c, n_spatial)
            _channel_affine(xs, torch.ones_like(m), torch.zeros_like(m), m, out=flat)
            v = torch.linalg.vector_norm(flat, dim=2).square_().view(n, c).div_(n_spatial)
            check(m, v)
            a, b, *extras = coeff_fn(m, v, params)
            _channel_affine(xs, a, b, out=flat)
        ctx.coeff_fn, ctx.coeff_bwd, ctx.n_params = coeff_fn, coeff_bwd, len(params)
        ctx.save_for_backward(xs, m, v, a, *params, *extras)
        ctx.mark_non_differentiable(*extras)
        return (y, *extras)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx: Any, gy: Tensor, *_unused: Any) -> Tuple[Optional[Tensor], ...]:
        x, m, v, a, *rest = ctx.saved_tensors  # the (N, C, S) view of the input, or a channels_last x
        params, extras = rest[:ctx.n_params], rest[ctx.n_params:]
        if x.dim() == 4:  # channels_last
            return (None, None, None, *_backward_channels_last(ctx, gy, x, m, v, a, params, extras))
        n, c, n_spatial = x.shape
        ones = torch.ones(n * c, dtype=x.dtype, device=x.device)
        # one fused reduction pass: sum_s gy * (x - m) and sum_s gy. save_mean / save_invstd must
        # be empty tensors, not None: CUDA's kernel asserts they are defined, and when they are
        # empty it takes mean and invstd from the "running" m and ones (eval mode, eps 0).
        empty = x.new_empty(0)
        _, gac, gb = torch.ops.aten.native_batch_norm_backward(
            gy.reshape(1, n * c, n_spatial), x.reshape(1, n * c, n_spatial), a.reshape(-1),
            m.reshape(-1), ones, empty, empty, False, 0.0, [False, True, True])
        gb = gb.view(n, c)
        ga = gac.view(n, c) + m * gb  # dL/da = sum_s gy * x
        gm, gv, grad_params = _coeff_backward(ctx, ga, gb, m, v, params, extras)
        # dy/dx = a, and m, v are means over S: dm/dx = 1/S, dv/dx = 2 (x - m) / S
        gx = _channel_affine(x, 2.0 / n_spatial * gv, gm / n_spatial, m).view(n, c, n_spatial)
        gx.addcmul_(gy.reshape(n, c, n_spatial), a.unsqueeze(2))
        return (None, None, None, gx.view(gy.shape), *grad_params)


def _coeff_backward(ctx: Any, ga: Tensor, gb: Tensor, m: Tensor, v: Tensor, params: Sequence[Optional[Tensor]],
                    extras: Sequence[Tensor]) -> Tuple[Tensor, Tensor, List[Optional[Tensor]]]:
    """dL/dm, dL/dv and the parameter gradients from dL/da and dL/db (N, C)."""
    needs = ctx.needs_input_grad[4:]
    if ctx.coeff_bwd is not None:
        gm, gv, grad_params = ctx.coeff_bwd(ga, gb, m, v, params, *extras)
        return gm, gv, [gp if need else None for gp, need in zip(grad_params, needs, strict=True)]
    return _autograd_coeff_backward(ctx.coeff_fn, ga, gb, m, v, params, needs)


def _backward_channels_last(ctx: Any, gy: Tensor, x: Tensor, m: Tensor, v: Tensor, a: Tensor,
                            params: Sequence[Optional[Tensor]],
                            extras: Sequence[Tensor]) -> Tuple[Optional[Tensor], ...]:
    """The backward of ``_FusedAffineNorm`` for a channels_last x (N, C, H, W), on broadcasting
    ops; the input gradient comes back channels_last. Same equations as the NCHW path."""
    n_spatial = x.shape[2] * x.shape[3]
    centred = x - _bcast(m, x)
    gb = gy.sum((2, 3))
    ga = (gy * centred).sum((2, 3)).addcmul_(m, gb)  # dL/da = sum_s gy * x
    gm, gv, grad_params = _coeff_backward(ctx, ga, gb, m, v, params, extras)
    # dy/dx = a, and m, v are means over S: dm/dx = 1/S, dv/dx = 2 (x - m) / S
    gx = centred.mul_(_bcast(2.0 / n_spatial * gv, x))
    gx.add_(_bcast(gm / n_spatial, x)).addcmul_(gy, _bcast(a, x))
    return (gx, *grad_params)


def _autograd_coeff_backward(coeff_fn: CoeffFn, ga: Tensor, gb: Tensor, m: Tensor, v: Tensor,
                             params: Sequence[Optional[Tensor]],
                             needs: Sequence[bool]) -> Tuple[Tensor, Tensor, List[Optional[Tensor]]]:
    """Differentiate the small coefficient graph by re-running it under autograd."""
    with torch.enable_grad():
        m_ = m.detach().requires_grad_()
        v_ = v.detach().requires_grad_()
        p_ = [p.detach().requires_grad_(need) if p is not None else None
              for p, need in zip(params, needs, strict=True)]
        a_, b_, *_ = coeff_fn(m_, v_, p_)
        wrt = [m_, v_] + [p for p in p_ if p is not None and p.requires_grad]
        grads = list(torch.autograd.grad((a_, b_), wrt, (ga, gb), allow_unused=True))
    gm, gv = [torch.zeros_like(m) if t is None else t for t in grads[:2]]
    pgrads = iter(grads[2:])
    return gm, gv, [next(pgrads) if p is not None and p.requires_grad else None for p in p_]


def _affine(x: Tensor, a: Tensor, b: Tensor) -> Tensor:
    """a * x + b per (sample, channel) of x (N, C, *), in x's shape and memory format: the fused
    kernel for NCHW in eager mode, one broadcasting op for channels_last and for tracers."""
    if _plain_ops_only() or is_channels_last(x):
        return torch.addcmul(_bcast(b, x), x, _bcast(a, x))
    return _channel_affine(x.reshape(x.shape[0], x.shape[1], -1), a, b).view(x.shape)


def _plain_ops_only() -> bool:
    """True under TorchScript, the jit tracer and dynamo. Both ONNX exporters are covered: the
    TorchScript one traces (is_tracing), the dynamo one runs torch.export (is_compiling)."""
    return torch.jit.is_scripting() or torch.jit.is_tracing() or torch.compiler.is_compiling()


def _use_fused(x: Tensor, params: Sequence[Optional[Tensor]]) -> bool:
    """The hand-written backward is used in eager autograd; compilers and exporters trace the
    plain ops instead (they cannot see through a custom backward)."""
    if not torch.is_grad_enabled():
        return False
    if not (x.requires_grad or any(p is not None and p.requires_grad for p in params)):
        return False
    return not _plain_ops_only()


def _checks_enabled() -> bool:
    """Data-dependent input checks run in eager mode only (tracers cannot branch on data)."""
    return not _plain_ops_only()
