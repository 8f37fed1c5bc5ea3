"""Literal float64 implementations of the paper's equations, written independently of mnzoo.

They follow Algorithms 1-3 of Deecke et al. (ICLR 2019) line by line, with explicit Python loops
over modes (and samples / channels where the paper writes sums), and E[x^2] - E[x]^2 variances
as in the algorithms. Slow and simple on purpose: they are the oracle for tests.
"""
from __future__ import annotations

import torch


def mn_train_reference(x, gate_w, gate_b, alpha, beta, eps):
    """Alg. 1 / eq. 2-3. x: (N, C, *). Returns output and per-mode (mean, biased var, N_k, sum g^2)."""
    n_samples, channels = x.shape[:2]
    xf = x.reshape(n_samples, channels, -1)
    pooled = xf.mean(2)
    logits = pooled @ gate_w.t() + gate_b
    g = torch.softmax(logits, dim=1)
    num_modes = g.shape[1]
    out = torch.zeros_like(xf)
    stats = []
    for k in range(num_modes):
        n_k = sum(g[n, k] for n in range(n_samples))
        mean_x = sum(g[n, k] * xf[n].mean(1) for n in range(n_samples)) / n_k
        mean_x2 = sum(g[n, k] * (xf[n] ** 2).mean(1) for n in range(n_samples)) / n_k
        var = mean_x2 - mean_x ** 2
        for n in range(n_samples):
            out[n] = out[n] + g[n, k] * (xf[n] - mean_x[:, None]) / torch.sqrt(var[:, None] + eps)
        stats.append((mean_x, var, n_k, sum(g[n, k] ** 2 for n in range(n_samples))))
    y = alpha[:, None] * out + beta[:, None]
    return y.reshape(x.shape), stats


def mn_eval_reference(x, gate_w, gate_b, alpha, beta, eps, run_mean, run_var):
    """Alg. 2: normalise with the running estimates of each mode."""
    n_samples, channels = x.shape[:2]
    xf = x.reshape(n_samples, channels, -1)
    g = torch.softmax(xf.mean(2) @ gate_w.t() + gate_b, dim=1)
    out = torch.zeros_like(xf)
    for k in range(g.shape[1]):
        for n in range(n_samples):
            out[n] = out[n] + g[n, k] * (xf[n] - run_mean[k][:, None]) / torch.sqrt(run_var[k][:, None] + eps)
    return (alpha[:, None] * out + beta[:, None]).reshape(x.shape)


def mgn_reference(x, gate_w, gate_b, alpha, beta, eps):
    """Alg. 3 / eq. 5, one sample at a time, channels gated by a scalar gate R -> R^K."""
    n_samples, channels = x.shape[:2]
    xf = x.reshape(n_samples, channels, -1)
    num_modes = gate_w.shape[0]
    out = torch.zeros_like(xf)
    for n in range(n_samples):
        pooled = xf[n].mean(1)  # (C,)
        g = torch.softmax(pooled[:, None] * gate_w[None, :] + gate_b[None, :], dim=1)  # (C, K)
        acc = torch.zeros_like(xf[n])
        for k in range(num_modes):
            c_k = sum(g[c, k] for c in range(channels))
            mean_x = sum(g[c, k] * xf[n, c].mean() for c in range(channels)) / c_k
            mean_x2 = sum(g[c, k] * (xf[n, c] ** 2).mean() for c in range(channels)) / c_k
            var = mean_x2 - mean_x ** 2
            acc = acc + (xf[n] - mean_x) / torch.sqrt(var + eps)
        out[n] = alpha[:, None] * acc / num_modes + beta[:, None]
    return out.reshape(x.shape)
