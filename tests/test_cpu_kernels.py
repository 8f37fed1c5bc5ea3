"""The fused CPU kernels (mnzoo/layers/csrc) on realistic shapes, against the literal float64
oracle; that the layers really dispatch to them; and their edge cases. test_layers.py runs its
whole suite on both eager paths as well."""
from __future__ import annotations

import copy
import os
import subprocess
import sys

import pytest
import torch

from kernels import require_cpu_kernels
from mn_reference import mn_eval_reference, mn_train_reference
from mnzoo import ModeNorm1d, ModeNorm2d


@pytest.fixture(autouse=True)
def cpu_kernels(monkeypatch):
    monkeypatch.setenv("MNZOO_CPU_KERNELS", "1")
    require_cpu_kernels()


def _layer(c: int, k: int, dtype=torch.float32, seed: int = 0, **kw) -> ModeNorm2d:
    layer = ModeNorm2d(c, k, **kw).to(dtype)
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        layer.gate.weight.copy_(torch.randn(layer.gate.weight.shape, generator=gen) * 0.5)
        if layer.affine:
            layer.weight.copy_(torch.rand(c, generator=gen) + 0.5)
            layer.bias.copy_(torch.randn(c, generator=gen))
    return layer


def _two_domains(shape, seed=1, dtype=torch.float32):
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(shape, generator=gen, dtype=torch.float64) * 2 + 0.5
    x[: shape[0] // 2] = x[: shape[0] // 2] * 0.3 - 1.5
    return x.to(dtype)


def _params64(layer):
    return [p.detach().double() for p in (layer.gate.weight, layer.gate.bias, layer.weight, layer.bias)]


@pytest.mark.parametrize("memory_format", [torch.contiguous_format, torch.channels_last], ids=["nchw", "nhwc"])
@pytest.mark.parametrize("shape,k", [((16, 8, 16, 16), 2), ((12, 24, 7, 7), 6), ((10, 4, 5, 7), 3),
                                     ((64, 32, 32, 32), 2)])
def test_fp32_kernels_match_float64_oracle_on_realistic_rows(shape, k, memory_format):
    """NCHW rows of 256, 49 and 35 values: full 8-lane blocks and odd tails; the 8 MiB map takes
    the streaming-store path of the output and input-gradient passes (on AVX2 CPUs). NHWC
    (channels_last) runs the channels-innermost passes: 4, 8, 24 and 32 channels, and 35 to 1024
    pixels summed in blocks of 64 with 4-pixel steps and tails. y and the x-gradient keep x's layout."""
    layer = _layer(shape[1], k)
    x = _two_domains(shape).contiguous(memory_format=memory_format).requires_grad_()
    y = layer(x)
    assert "CpuModeNorm" in type(y.grad_fn).__name__, "the layer did not use the CPU kernels"
    assert y.is_contiguous(memory_format=memory_format)
    x64 = x.detach().double().requires_grad_()
    p64 = [p.requires_grad_() for p in _params64(layer)]
    y_ref, stats = mn_train_reference(x64, *p64, eps=layer.eps)
    torch.testing.assert_close(y.double(), y_ref, rtol=1e-4, atol=1e-4)
    gy = torch.randn(shape, generator=torch.Generator().manual_seed(7))
    y.backward(gy)
    y_ref.backward(gy.double())
    assert x.grad.is_contiguous(memory_format=memory_format)
    torch.testing.assert_close(x.grad.double(), x64.grad, rtol=1e-3, atol=1e-4)
    for p, p_ref in zip((layer.gate.weight, layer.gate.bias, layer.weight, layer.bias), p64, strict=True):
        torch.testing.assert_close(p.grad.double(), p_ref.grad, rtol=1e-3, atol=1e-3)
    # running statistics (eq. 4, unbiased with the reliability weights) and eval (Alg. 2)
    s = shape[2] * shape[3]
    for j, (mean_k, var_k, n_k, sq_k) in enumerate(stats):
        n_eff = s * n_k ** 2 / sq_k
        torch.testing.assert_close(layer.running_mean[j].double(), 0.1 * mean_k, rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(layer.running_var[j].double(),
                                   0.9 + 0.1 * var_k * n_eff / (n_eff - 1), rtol=1e-4, atol=1e-5)
    layer.eval()
    with torch.no_grad():
        y_eval = layer(x.detach())
    y_eval_ref = mn_eval_reference(x64.detach(), *_params64(layer), layer.eps,
                                   layer.running_mean.double(), layer.running_var.double())
    assert y_eval.is_contiguous(memory_format=memory_format)
    torch.testing.assert_close(y_eval.double(), y_eval_ref, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("memory_format", [torch.contiguous_format, torch.channels_last], ids=["nchw", "nhwc"])
@pytest.mark.parametrize("k", [2, 6])
def test_fp32_kernels_are_accurate_at_large_means(k, memory_format):
    """Mean 1e4, std ~1, two domains: the fp32 output, every gradient and the eval output match
    the float64 oracle. The kernels sum in fp32, so this needs every sum centred: a sum of gy * x
    or of g * m at 1e4 loses ~1e-3 of each value. The gate's logits are W m + b with W m ~ 1e4
    cancelled by b, which also checks that the softmax is stabilised with the bias included
    (it once used W m alone, and every gate came out 0/0 = NaN here)."""
    torch.manual_seed(0)
    layer = _layer(24, k, momentum=None)  # running stats = this batch's, so eval is O(1) too
    with torch.no_grad():  # logits W (m - 1e4): the gate sees the domains, not the offset
        layer.gate.weight.mul_(0.2)
        layer.gate.bias.copy_(-1e4 * layer.gate.weight.sum(1))
    x = (_two_domains((16, 24, 7, 7), dtype=torch.float64) + 1e4).float()
    x = x.contiguous(memory_format=memory_format).requires_grad_()
    y = layer(x)
    assert "CpuModeNorm" in type(y.grad_fn).__name__ and y.is_contiguous(memory_format=memory_format)
    x_ref = x.detach().double().requires_grad_()  # the same fp32 values, in float64
    p64 = [p.requires_grad_() for p in _params64(layer)]
    y_ref, stats = mn_train_reference(x_ref, *p64, eps=layer.eps)
    assert min(float(n_k.detach()) for _, _, n_k, _ in stats) > 1.0, "a mode is empty: the test lost its point"
    torch.testing.assert_close(y.double(), y_ref, rtol=0, atol=2e-3)
    gy = torch.randn(y.shape, generator=torch.Generator().manual_seed(3))
    y.backward(gy)
    y_ref.backward(gy.double())
    torch.testing.assert_close(x.grad.double(), x_ref.grad, rtol=0, atol=1e-3)
    # The gate's gradients are differences of nearly equal per-mode terms (measured error
    # 0.2-0.7 % of their largest entry; the torch-op path: 2-7 %); weight and bias are ~1e-4.
    for name, p, p_ref, tol in zip(("gate.weight", "gate.bias", "weight", "bias"),
                                   (layer.gate.weight, layer.gate.bias, layer.weight, layer.bias),
                                   p64, (2e-2, 2e-2, 1e-3, 1e-3), strict=True):
        atol = tol * p_ref.grad.abs().max().item()
        torch.testing.assert_close(p.grad.double(), p_ref.grad, rtol=0, atol=atol,
                                   msg=lambda m, name=name: f"{name}: {m}")
    layer.eval()
    with torch.no_grad():
        y_eval = layer(x.detach())
    y_eval_ref = mn_eval_reference(x_ref.detach(), *_params64(layer), layer.eps,
                                   layer.running_mean.double(), layer.running_var.double())
    torch.testing.assert_close(y_eval.double(), y_eval_ref, rtol=0, atol=2e-3)


def test_kernels_and_torch_ops_agree_on_a_training_run(monkeypatch):
    """Three optimiser steps of a small MN net: same outputs, grads and buffers on both paths."""
    def run(flag: str):
        monkeypatch.setenv("MNZOO_CPU_KERNELS", flag)
        torch.manual_seed(0)
        net = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3), ModeNorm2d(8, 3), torch.nn.ReLU(),
                                  torch.nn.Conv2d(8, 4, 3), ModeNorm2d(4, 2, momentum=None))
        opt = torch.optim.SGD(net.parameters(), lr=0.1)
        for step in range(3):
            x = _two_domains((6, 3, 9, 9), seed=step)
            loss = net(x).square().mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
        net.eval()
        with torch.no_grad():
            out = net(_two_domains((5, 3, 9, 9), seed=9))
        return out, net.state_dict()

    out_k, sd_k = run("1")
    out_t, sd_t = run("0")
    torch.testing.assert_close(out_k, out_t, rtol=1e-4, atol=1e-5)
    for key in sd_k:
        torch.testing.assert_close(sd_k[key], sd_t[key], rtol=1e-4, atol=1e-5, msg=key)


@pytest.mark.parametrize("kernels", ["1", "0"], ids=["kernels", "torch-ops"])
def test_channels_last_model_trains_like_nchw(monkeypatch, kernels):
    """resnet20_mn converted with .to(memory_format=torch.channels_last), as train.py
    --channels-last does: two SGD steps give the same outputs, weights and running statistics as
    in NCHW on both paths, and every ModeNorm output stays channels_last.
    In float64: in fp32 the two layouts round differently, and a ReLU input of ~1e-6 that flips
    sign changes the gradient of every earlier layer by a few percent (seen on this data)."""
    import timm
    import mnzoo  # noqa: F401  (registers resnet20_mn)
    monkeypatch.setenv("MNZOO_CPU_KERNELS", kernels)

    def run(memory_format):
        torch.manual_seed(0)
        net = timm.create_model("resnet20_mn", num_classes=10).double().to(memory_format=memory_format)
        opt = torch.optim.SGD(net.parameters(), lr=0.1, momentum=0.9)
        layouts = []
        for mod in net.modules():
            if isinstance(mod, ModeNorm2d):
                mod.register_forward_hook(lambda m, i, o: layouts.append(o.is_contiguous(memory_format=memory_format)))
        for step in range(2):
            x = _two_domains((6, 3, 16, 16), seed=step, dtype=torch.float64).contiguous(memory_format=memory_format)
            loss = torch.nn.functional.cross_entropy(net(x), torch.arange(6))
            opt.zero_grad()
            loss.backward()
            opt.step()
        net.eval()
        with torch.no_grad():
            out = net(_two_domains((4, 3, 16, 16), seed=5, dtype=torch.float64).contiguous(
                memory_format=memory_format))
        return out, net.state_dict(), layouts

    out_cl, sd_cl, layouts = run(torch.channels_last)
    out, sd, _ = run(torch.contiguous_format)
    assert len(layouts) == 3 * 21  # 19 + 2 shortcut norms, 3 forwards
    assert all(layouts), "a ModeNorm output left the channels_last layout"
    torch.testing.assert_close(out_cl, out, rtol=1e-9, atol=1e-9)
    for key in sd:
        torch.testing.assert_close(sd_cl[key], sd[key], rtol=1e-9, atol=1e-10, msg=key)


def test_non_contiguous_inputs_and_gradients():
    layer = _layer(6, 2)
    x = _two_domains((4, 6, 5, 5)).to(memory_format=torch.channels_last).requires_grad_()
    ref = copy.deepcopy(layer)
    y = layer(x)
    gy = torch.randn(5, 5, 6, 4).permute(3, 2, 0, 1)  # a non-contiguous upstream gradient
    y.backward(gy)
    x2 = x.detach().contiguous().requires_grad_()
    y2 = ref(x2)
    y2.backward(gy.contiguous())
    assert y.is_contiguous(memory_format=torch.channels_last) and y2.is_contiguous()
    torch.testing.assert_close(y, y2)
    torch.testing.assert_close(x.grad, x2.grad)


def test_non_finite_batch_raises_and_leaves_running_stats_alone():
    layer = _layer(3, 2)
    layer(_two_domains((4, 3, 4, 4)))
    before = {k: v.clone() for k, v in layer.state_dict().items()}
    bad = _two_domains((4, 3, 4, 4))
    bad[1, 2, 0, 0] = float("inf")
    with pytest.raises(ValueError, match="ModeNorm2d.*non-finite"):
        layer(bad)
    with pytest.raises(ValueError, match="ModeNorm2d.*non-finite"):
        layer(bad.requires_grad_())
    for k, v in layer.state_dict().items():
        assert torch.equal(v, before[k]), f"{k} changed on a rejected batch"
    layer.eval()
    with pytest.raises(ValueError, match="ModeNorm2d.*non-finite"):
        with torch.no_grad():
            layer(bad.detach())


def test_fp64_buffers_with_fp32_input_update_on_the_python_side():
    """Buffers whose dtype differs from the computation are updated outside the kernel."""
    layer = _layer(4, 2)
    layer.running_mean = layer.running_mean.double()
    layer.running_var = layer.running_var.double()
    x = _two_domains((6, 4, 3, 3))
    layer(x)
    _, stats = mn_train_reference(x.double(), *_params64(layer), eps=layer.eps)
    torch.testing.assert_close(layer.running_mean[0], 0.1 * stats[0][0], rtol=1e-4, atol=1e-5)
    assert layer.running_mean.dtype == torch.float64 and int(layer.num_batches_tracked) == 1


def test_mode_norm_1d_uses_the_kernels_for_vectors():
    layer = ModeNorm1d(5, 2)
    x = torch.randn(8, 5, requires_grad=True)
    y = layer(x)
    assert "CpuModeNorm" in type(y.grad_fn).__name__
    y_ref, _ = mn_train_reference(x.detach().double(), *_params64(layer), eps=layer.eps)
    torch.testing.assert_close(y.double(), y_ref, rtol=1e-4, atol=1e-4)


def test_a_failed_build_warns_and_falls_back_to_torch_ops(tmp_path):
    """No usable compiler: one clear warning, and the layer still trains on the torch-op path."""
    code = (
        "import warnings, torch\n"
        "from mnzoo import ModeNorm2d\n"
        "with warnings.catch_warnings(record=True) as caught:\n"
        "    warnings.simplefilter('always')\n"
        "    y = ModeNorm2d(3, 2)(torch.randn(4, 3, 5, 5, requires_grad=True))\n"
        "    y.sum().backward()\n"
        "print(type(y.grad_fn).__name__)\n"
        "print(sum('could not build the ModeNorm CPU kernels' in str(w.message) for w in caught))\n")
    env = {**os.environ, "TORCH_EXTENSIONS_DIR": str(tmp_path), "CXX": str(tmp_path / "no-c++"),
           "MNZOO_CPU_KERNELS": "1"}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == 0, out.stderr
    grad_fn, warned = out.stdout.split()
    assert grad_fn == "_FusedAffineNormBackward" and warned == "1", out.stdout + out.stderr


def test_cli_build_kernels_reports_ready(capsys):
    from mnzoo.cli import main

    assert main(["build-kernels"]) == 0
    assert "kernels: ready" in capsys.readouterr().out
