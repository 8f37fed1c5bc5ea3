"""The equations of Mode Normalization (Deecke, Murray & Bilen, ICLR 2019, arXiv:1810.05466).

All the MN and MGN math of mnzoo is in this module, as small (N, C)-sized functions.

Notation: x has shape (N, C, S) after flattening the spatial dims, m and v are its per-sample,
per-channel mean and (biased) variance over S, and K is the number of modes. Both layers reduce
to one affine map per (sample, channel),

    y[n, c, s] = a[n, c] * x[n, c, s] + b[n, c],

where a and b are functions of (m, v) and of the gate, affine and running parameters computed
here. The K modes only ever touch (N, K, C)-sized tensors, so the cost of a layer on a feature
map does not depend on K (the big passes live in ``_fused.py``).

Mode statistics use the law of total variance, sigma_k^2 = sum_n g_nk (v_n + (m_n - mu_k)^2) / N_k,
so no E[x^2] - E[x]^2 cancellation happens for inputs with large means.
"""
from __future__ import annotations

from typing import Callable, List, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["mode_norm_coefficients", "mode_group_norm_coefficients", "MIN_MODE_MASS"]

MIN_MODE_MASS = 1e-4

Reducer = Callable[[Tensor], Tensor]
#: (gate weight, gate bias, weight, bias) as the layers pass them; only the affine pair may be None
Params = Sequence[Optional[Tensor]]


def _split_params(params: Params) -> Tuple[Tensor, Tensor, Optional[Tensor], Optional[Tensor]]:
    gate_weight, gate_bias, weight, bias = params
    assert gate_weight is not None and gate_bias is not None, "the gate's parameters are never None"
    return gate_weight, gate_bias, weight, bias


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
    gate_weight, _gate_bias, weight, bias = _split_params(params)
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
