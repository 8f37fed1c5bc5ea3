"""The fused CPU kernels of ModeNorm (``csrc/mode_norm_cpu.cpp``), built once on first use.

On a CPU, a ModeNorm layer written as torch ops is ~40 small (N, K, C) ops plus a few passes
over x; the per-op overhead made its eval forward cost ~2x a BatchNorm2d and its training step
as much as torch's (slow) CPU batch norm. The kernels (eval ~1.1x BN, training ~0.4x BN per
layer, benchmarks/README.md) do the same math (``functional.py``) in 2 passes forward and 2
backward. They are compiled with torch's own extension builder the first time a ModeNorm layer
runs on the CPU (about a minute; cached under ``$TORCH_EXTENSIONS_DIR``, default
``~/.cache/torch_extensions``).

``MNZOO_CPU_KERNELS=0`` turns them off; without a C++ compiler, or if the build fails, mnzoo
warns once and uses the torch-op path, which computes the same values.
"""
from __future__ import annotations

import hashlib
import logging
import os
import sys
import threading
import warnings
from pathlib import Path
from typing import Any, List, Optional, Sequence, Tuple

import torch
from torch import Tensor

from ._fused import _plain_ops_only, is_channels_last

__all__ = ["build_cpu_kernels", "cpu_kernels_available"]

_SOURCE = Path(__file__).with_name("csrc") / "mode_norm_cpu.cpp"
_lock = threading.Lock()
_state: Optional[bool] = None  # None: not tried yet


def _enabled_by_env() -> bool:
    return os.environ.get("MNZOO_CPU_KERNELS", "1").strip().lower() not in ("0", "false", "no", "off")


def _isa_flags() -> List[str]:
    """-mavx2 -mfma where this x86 CPU has them (the build is named after them, so a cache
    shared with an older CPU never loads it there); nothing elsewhere."""
    try:
        flags = Path("/proc/cpuinfo").read_text().split()
    except OSError:
        return []
    return ["-mavx2", "-mfma"] if "avx2" in flags and "fma" in flags else []


def _headers_digest() -> str:
    digest = hashlib.sha256()
    for header in sorted(_SOURCE.parent.glob("*.h")):  # what _SOURCE includes
        digest.update(header.read_bytes())
    return digest.hexdigest()[:10]


def build_cpu_kernels(verbose: bool = False) -> bool:
    """Compile (or load the cached build of) the CPU kernels; True when they are usable.

    Called lazily by the layers; call it yourself (or run ``mnzoo build-kernels``) to pay the
    one-time build up front. Raises nothing: a failed build warns and returns False.
    """
    global _state
    if _state is not None:
        return _state
    if not _enabled_by_env():  # not cached: the variable may change (tests flip it)
        return False
    with _lock:
        if _state is not None:
            return _state
        if hasattr(torch.ops.mnzoo, "mode_norm_train_forward"):  # loaded by another copy
            _state = True
            return True
        try:
            # importing the builder on a machine without CUDA logs a warning that is noise here
            builder_log = logging.getLogger("torch.utils.cpp_extension")
            level = builder_log.level
            builder_log.setLevel(logging.ERROR)
            try:
                from torch.utils import cpp_extension
            finally:
                builder_log.setLevel(level)
            isa = _isa_flags()
            # torch's builder rebuilds when a source changes but does not look at headers: their
            # digest goes into the name, so a changed header gets a build of its own
            name = "mnzoo_mode_norm_cpu" + ("_avx2" if isa else "") + "_" + _headers_digest()
            build_dir = Path(cpp_extension._get_build_directory(name, verbose=False))
            if not (build_dir / f"{name}.so").exists():
                print(f"mnzoo: compiling the ModeNorm CPU kernels once (about a minute) into "
                      f"{build_dir}", file=sys.stderr, flush=True)
            cpp_extension.load(
                name=name,
                sources=[str(_SOURCE)],
                extra_cflags=["-O3", "-fopenmp", *isa],
                extra_ldflags=["-fopenmp"],
                is_python_module=False,
                verbose=verbose,
            )
            _state = hasattr(torch.ops.mnzoo, "mode_norm_train_forward")
        except Exception as err:  # no compiler, no ninja, a failed build: fall back, loudly
            warnings.warn(
                f"mnzoo: could not build the ModeNorm CPU kernels ({type(err).__name__}: "
                f"{str(err).strip().splitlines()[-1] if str(err).strip() else ''}); using the "
                "slower torch-op path. Set MNZOO_CPU_KERNELS=0 to silence this.",
                RuntimeWarning, stacklevel=2)
            _state = False
        return _state


def cpu_kernels_available() -> bool:
    """True when the fused CPU kernels are built and enabled (builds them on first call)."""
    return _enabled_by_env() and build_cpu_kernels()


def use_cpu_kernels(x: Tensor, params: Sequence[Optional[Tensor]]) -> bool:
    """Whether this call can run on the fused CPU kernels: eager mode, CPU, fp32/fp64."""
    dtype = x.dtype
    return (x.is_cpu and (dtype is torch.float32 or dtype is torch.float64)
            and all(p is None or p.dtype is dtype for p in params)
            and not _plain_ops_only() and cpu_kernels_available())


def dense(x: Tensor) -> Tensor:
    """x in a layout the kernels take: a channels_last 4-D input stays channels_last (the
    kernels have passes for it, and y comes back in it), anything else is made contiguous."""
    if is_channels_last(x):
        return x
    return x.contiguous()


def needs_grad(x: Tensor, params: Sequence[Optional[Tensor]]) -> bool:
    """Whether autograd will record this call."""
    return torch.is_grad_enabled() and (
        x.requires_grad or any(p is not None and p.requires_grad for p in params))


# (running_mean, running_var, momentum, min_mass): updated in place by the forward kernel
Running = Tuple[Optional[Tensor], Optional[Tensor], float, float]
NO_RUNNING: Running = (None, None, 0.0, 0.0)


class _CpuModeNormFunction(torch.autograd.Function):
    """ModeNorm with batch statistics on the fused CPU kernels (forward and backward)."""

    @staticmethod
    def forward(ctx: Any, x: Tensor, gate_w: Tensor, gate_b: Tensor, weight: Optional[Tensor],
                bias: Optional[Tensor], eps: float, running: Running) -> Tuple[Tensor, ...]:
        y, m, v, a, g, mu, var, mass, nonfinite = torch.ops.mnzoo.mode_norm_train_forward(
            x, gate_w, gate_b, weight, bias, eps, *running)
        ctx.save_for_backward(x, m, v, a, g, mu, var, mass, gate_w, weight)
        ctx.eps, ctx.has_bias = eps, bias is not None
        ctx.mark_non_differentiable(mu, var, mass, g)
        return y, mu, var, mass, g, nonfinite

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx: Any, gy: Tensor, *_unused: Any) -> Tuple[Optional[Tensor], ...]:
        x, m, v, a, g, mu, var, mass, gate_w, weight = ctx.saved_tensors
        gx, d_gw, d_gb, d_w, d_b = torch.ops.mnzoo.mode_norm_train_backward(
            gy, x, m, v, a, g, mu, var, mass, gate_w, weight, ctx.has_bias, ctx.eps)
        return (gx, d_gw, d_gb, d_w if weight is not None else None,
                d_b if ctx.has_bias else None, None, None)


def cpu_mode_norm_train(x: Tensor, params: Sequence[Optional[Tensor]], eps: float,
                        running: Running = NO_RUNNING
                        ) -> Tuple[Tensor, Tensor, Tensor, Tensor, Tensor, int]:
    """Batch-statistics ModeNorm of x (N, C, *).

    Returns y, the mode statistics mu, var (K, C), masses (K,), gates (N, K), and the number
    of non-finite input variances; when that is not 0, y is undefined and the running
    statistics were left alone. Otherwise they were updated (eq. 4) if ``running`` names them.
    """
    x = dense(x)
    if needs_grad(x, params):
        return _CpuModeNormFunction.apply(x, *params, eps, running)
    y, _m, _v, _a, g, mu, var, mass, nonfinite = torch.ops.mnzoo.mode_norm_train_forward(
        x, *params, eps, *running)
    return y, mu, var, mass, g, nonfinite


def cpu_mode_norm_eval(x: Tensor, params: Sequence[Optional[Tensor]], running_mean: Tensor,
                       running_var: Tensor, eps: float) -> Tuple[Tensor, int]:
    """Running-statistics ModeNorm of x (N, C, *), no autograd: y and the number of
    non-finite pooled means."""
    return torch.ops.mnzoo.mode_norm_eval_forward(dense(x), *params, running_mean,
                                                  running_var, eps)
