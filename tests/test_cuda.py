"""The MN layers on CUDA, against the literal float64 oracle in mn_reference.py (on the CPU).

CUDA uses the torch-op path (no C++ kernels), under eager autograd, torch.compile and autocast.
These tests skip without a GPU, and so skip in CI: run them on a GPU machine with
``python -m pytest tests/test_cuda.py`` (set MNZOO_REQUIRE_CUDA=1 to fail instead of skipping).
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch
from torch import nn

from conftest import load_benchmark
from layer_inputs import assert_autocast_keeps_fp32_statistics
from layer_inputs import mn_params as _mn_params, randomise as _randomise, two_domain_input as _input
from mn_reference import mgn_reference, mn_eval_reference, mn_train_reference
from mnzoo import ModeGroupNorm, ModeNorm2d

REPO = Path(__file__).resolve().parents[1]

if not torch.cuda.is_available():
    if os.environ.get("MNZOO_REQUIRE_CUDA") == "1":
        raise RuntimeError("MNZOO_REQUIRE_CUDA=1 but torch sees no CUDA device")
    pytest.skip("no CUDA device", allow_module_level=True)

DEV = torch.device("cuda")


@pytest.fixture(autouse=True)
def exact_fp32():
    """TF32 would make fp32 convolutions and matmuls differ from the CPU by ~1e-3."""
    old = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    yield
    torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = old


@pytest.mark.parametrize("num_modes", [1, 2, 3])
def test_mn_train_on_cuda_matches_literal_algorithm(num_modes):
    layer = _randomise(ModeNorm2d(5, num_modes).double()).to(DEV)
    x_cpu = _input((6, 5, 4, 3))
    x = x_cpu.to(DEV, copy=True).requires_grad_()
    x_ref = x_cpu.clone().requires_grad_()
    params_ref = [p.detach().cpu().clone().requires_grad_() for p in _mn_params(layer)]
    y = layer(x)
    y_ref, stats = mn_train_reference(x_ref, *params_ref, eps=layer.eps)
    assert y.device.type == "cuda"
    torch.testing.assert_close(y.cpu(), y_ref, rtol=1e-10, atol=1e-10)
    upstream = torch.randn(x_cpu.shape, dtype=torch.float64, generator=torch.Generator().manual_seed(3))
    (y * upstream.to(DEV)).sum().backward()
    (y_ref * upstream).sum().backward()
    torch.testing.assert_close(x.grad.cpu(), x_ref.grad, rtol=1e-8, atol=1e-10)
    for p, p_ref in zip(_mn_params(layer), params_ref, strict=True):
        torch.testing.assert_close(p.grad.cpu(), p_ref.grad, rtol=1e-8, atol=1e-10)
    # eq. 4 with the documented unbiasing (n_eff = S * N_k^2 / sum g^2), momentum 0.1
    for k, (mean_k, var_k, n_k, sq_k) in enumerate(stats):
        n_eff = 12 * n_k ** 2 / sq_k
        torch.testing.assert_close(layer.running_mean[k].cpu(), 0.1 * mean_k.detach(), rtol=1e-10, atol=1e-12)
        torch.testing.assert_close(layer.running_var[k].cpu(), 0.9 + 0.1 * (var_k * n_eff / (n_eff - 1)).detach(),
                                   rtol=1e-10, atol=1e-12)


def test_mn_eval_on_cuda_uses_running_statistics():
    layer = _randomise(ModeNorm2d(4, 2).double()).to(DEV)
    with torch.no_grad():
        layer.running_mean.copy_(torch.randn(2, 4, dtype=torch.float64))
        layer.running_var.copy_(torch.rand(2, 4, dtype=torch.float64) + 0.5)
    layer.eval()
    x = _input((5, 4, 3, 3))
    y = layer(x.to(DEV))
    y_ref = mn_eval_reference(x, *[p.detach().cpu() for p in _mn_params(layer)], layer.eps,
                              layer.running_mean.cpu(), layer.running_var.cpu())
    torch.testing.assert_close(y.cpu(), y_ref, rtol=1e-10, atol=1e-10)


def test_mgn_on_cuda_matches_literal_algorithm():
    layer = _randomise(ModeGroupNorm(6, 3).double()).to(DEV)
    x_cpu = _input((3, 6, 4, 2))
    x = x_cpu.to(DEV, copy=True).requires_grad_()
    x_ref = x_cpu.clone().requires_grad_()
    params = [layer.gate_weight, layer.gate_bias, layer.weight, layer.bias]
    params_ref = [p.detach().cpu().clone().requires_grad_() for p in params]
    y = layer(x)
    y_ref = mgn_reference(x_ref, *params_ref, eps=layer.eps)
    torch.testing.assert_close(y.cpu(), y_ref, rtol=1e-10, atol=1e-10)
    y.sum().backward()
    y_ref.sum().backward()
    torch.testing.assert_close(x.grad.cpu(), x_ref.grad, rtol=1e-8, atol=1e-10)


@pytest.mark.parametrize("kind", ["mn", "mgn"])
def test_channels_last_on_cuda_keeps_layout_and_matches_literal_algorithm(kind):
    """channels_last in, channels_last out (and gradient), with the oracle's values."""
    if kind == "mn":
        layer = _randomise(ModeNorm2d(6, 3).double()).to(DEV)
        params = _mn_params(layer)
    else:
        layer = _randomise(ModeGroupNorm(6, 3).double()).to(DEV)
        params = [layer.gate_weight, layer.gate_bias, layer.weight, layer.bias]
    x_cpu = _input((5, 6, 4, 3))
    x = x_cpu.to(DEV).contiguous(memory_format=torch.channels_last).requires_grad_()
    x_ref = x_cpu.clone().requires_grad_()
    ref_params = [p.detach().cpu().clone() for p in params]
    reference = mn_train_reference(x_ref, *ref_params, eps=layer.eps)[0] if kind == "mn" \
        else mgn_reference(x_ref, *ref_params, eps=layer.eps)
    upstream = torch.randn(x_cpu.shape, dtype=torch.float64, generator=torch.Generator().manual_seed(3))
    y = layer(x)
    (y * upstream.to(DEV)).sum().backward()
    (reference * upstream).sum().backward()
    assert y.is_contiguous(memory_format=torch.channels_last)
    assert x.grad.is_contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(y.cpu(), reference, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(x.grad.cpu(), x_ref.grad, rtol=1e-8, atol=1e-10)


def test_resnet20_mn_training_step_on_cuda_matches_cpu():
    """One SGD step of a whole network, fp32: CUDA and CPU agree on loss, gradients and buffers."""
    import timm

    torch.manual_seed(0)
    cpu = timm.create_model("resnet20_mn", num_classes=10)
    gpu = timm.create_model("resnet20_mn", num_classes=10)
    gpu.load_state_dict(cpu.state_dict())
    gpu.to(DEV)
    x = torch.randn(16, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    y = torch.randint(0, 10, (16,), generator=torch.Generator().manual_seed(2))
    losses = []
    for model, dev in ((cpu, "cpu"), (gpu, DEV)):
        loss = nn.functional.cross_entropy(model(x.to(dev)), y.to(dev))
        loss.backward()
        losses.append(loss.item())
    assert losses[0] == pytest.approx(losses[1], rel=1e-4)
    for (name, p_cpu), p_gpu in zip(cpu.named_parameters(), gpu.parameters(), strict=True):
        torch.testing.assert_close(p_gpu.grad.cpu(), p_cpu.grad, rtol=2e-3, atol=2e-5, msg=name)
    for (name, b_cpu), b_gpu in zip(cpu.named_buffers(), gpu.buffers(), strict=True):
        torch.testing.assert_close(b_gpu.cpu(), b_cpu, rtol=1e-4, atol=1e-5, msg=name)


def test_compiled_mn_on_cuda_matches_eager():
    layer = _randomise(ModeNorm2d(16, 2)).to(DEV)
    twin = _randomise(ModeNorm2d(16, 2)).to(DEV)
    compiled = torch.compile(twin)
    x = (torch.randn(32, 16, 8, 8, generator=torch.Generator().manual_seed(4)) * 3 + 1).to(DEV)
    xa, xb = x.clone().requires_grad_(), x.clone().requires_grad_()
    ya, yb = layer(xa), compiled(xb)
    torch.testing.assert_close(yb, ya, rtol=1e-4, atol=1e-4)
    up = torch.randn_like(ya)
    (ya * up).sum().backward()
    (yb * up).sum().backward()
    torch.testing.assert_close(xb.grad, xa.grad, rtol=1e-3, atol=1e-4)
    torch.testing.assert_close(twin.gate.weight.grad, layer.gate.weight.grad, rtol=1e-3, atol=1e-4)
    torch.testing.assert_close(twin.running_var, layer.running_var, rtol=1e-5, atol=1e-6)


def test_autocast_bf16_on_cuda_keeps_fp32_statistics():
    assert_autocast_keeps_fp32_statistics("cuda")


def test_non_finite_input_on_cuda_raises_and_keeps_buffers():
    layer = ModeNorm2d(4, 2).to(DEV)
    x = torch.randn(4, 4, 3, 3, device=DEV)
    x[1, 2, 0, 0] = float("nan")
    before = layer.running_mean.clone(), layer.running_var.clone()
    with pytest.raises(ValueError, match="non-finite"):
        layer(x)
    assert torch.equal(layer.running_mean, before[0]) and torch.equal(layer.running_var, before[1])


CARD = REPO / "weights_cards" / "resnet20_mn.cifar10"
DATA = REPO.parent / "shared" / "data" / "cifar10" / "test-lossless-1k.tar"


@pytest.mark.skipif(not DATA.exists(), reason=f"{DATA} is not here")
def test_published_resnet20_mn_on_cuda_matches_its_card():
    """The CPU-evaluated card number, reproduced on the GPU to within 2 of the 1000 images
    (fp32 without TF32; summation order differs)."""
    import timm
    from mnzoo.data.factory import build_dataset
    from mnzoo.data.loader import TensorLoader

    expected = json.loads((CARD / "config.json").read_text())["mnzoo"]["metrics"]["test-lossless-1k"]["top1"]
    model = timm.create_model("resnet20_mn.cifar10", pretrained=True).to(DEV).eval()
    loader = TensorLoader(build_dataset([f"cifar10={DATA}"]), batch_size=500, device=DEV)
    correct = 0
    with torch.no_grad():
        for x, y, _ in loader:
            correct += int((model(x).argmax(1) == y).sum())
    assert abs(100 * correct / 1000 - expected) <= 0.2


def test_norm_speed_benchmark_runs_on_cuda(capsys):
    """benchmarks/norm_speed.py --device cuda: the layer table with synchronised timings (the
    GPU session's speed figure for the torch-op path comes from this script)."""
    bench = load_benchmark("norm_speed")
    bench.main(["--device", "cuda", "--quick", "--reps", "3", "--channels-last"])
    out = capsys.readouterr().out
    assert "CUDA" in out and "torch-ops" not in out
    assert len([line for line in out.splitlines() if line.startswith("resnet20 stage")]) == 3 * 7


def test_norm_memory_benchmark_runs_on_cuda(capsys):
    """benchmarks/norm_memory.py --device cuda: saved bytes and the allocator's peak per layer;
    the torch-op path MN keeps what BN keeps on the GPU too."""
    bench = load_benchmark("norm_memory")
    medians = bench.bench_layers(True, torch.contiguous_format, torch.device("cuda"))
    out = capsys.readouterr().out
    assert "peak MiB" in out and "torch-ops" not in out
    assert 1.0 <= medians["MN K=2"] < 1.1 and medians["literal K=2"] > 4


def test_train_speed_benchmark_with_cuda_graphs(capsys):
    """benchmarks/train_speed.py --device cuda --compile-mode reduce-overhead: ResNet20 BN / MN
    training steps under CUDA graphs (the speed that decides whether 160 epochs fit a GPU lease)."""
    bench = load_benchmark("train_speed")
    bench.main(["--device", "cuda", "--compile-mode", "reduce-overhead", "--rounds", "2", "--steps", "5"])
    out = capsys.readouterr().out
    assert "torch.compile mode reduce-overhead" in out
    assert [line.split("|")[1].strip() for line in out.splitlines()
            if line.startswith("| ") and "model" not in line] == ["BN", "MN K=2", "MN K=6"]
