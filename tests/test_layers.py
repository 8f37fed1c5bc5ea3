"""ModeNorm2d / ModeNorm1d / ModeGroupNorm against the literal float64 oracle in mn_reference.py."""
from __future__ import annotations

import copy
import io

import pytest
import torch
from torch import nn

from kernels import require_cpu_kernels
from layer_inputs import assert_autocast_keeps_fp32_statistics
from layer_inputs import mn_params as _mn_params, randomise as _randomise, two_domain_input as _input
from mn_reference import mgn_reference, mn_eval_reference, mn_train_reference
from mnzoo import ModeGroupNorm, ModeNorm1d, ModeNorm2d


@pytest.fixture(autouse=True, params=["cpu-kernels", "torch-ops"])
def mn_path(request, monkeypatch):
    """Run every test on both eager CPU paths: the fused C++ kernels and the torch-op path
    (the one CUDA, torch.compile and the exporters use)."""
    if request.param == "torch-ops":
        monkeypatch.setenv("MNZOO_CPU_KERNELS", "0")
    else:
        monkeypatch.setenv("MNZOO_CPU_KERNELS", "1")
        require_cpu_kernels()
    return request.param


@pytest.mark.parametrize("num_modes", [1, 2, 3])
@pytest.mark.parametrize("shape", [(6, 5, 4, 3), (4, 3, 1, 1)])
def test_mn_train_matches_literal_algorithm(num_modes, shape):
    layer = _randomise(ModeNorm2d(shape[1], num_modes).double())
    x = _input(shape).requires_grad_()
    x_ref = x.detach().clone().requires_grad_()
    params_ref = [p.detach().clone().requires_grad_() for p in _mn_params(layer)]

    y = layer(x)
    y_ref, _ = mn_train_reference(x_ref, *params_ref, eps=layer.eps)
    torch.testing.assert_close(y, y_ref, rtol=1e-10, atol=1e-10)

    upstream = torch.randn(shape, dtype=torch.float64, generator=torch.Generator().manual_seed(3))
    (y * upstream).sum().backward()
    (y_ref * upstream).sum().backward()
    torch.testing.assert_close(x.grad, x_ref.grad, rtol=1e-8, atol=1e-10)
    for p, p_ref in zip(_mn_params(layer), params_ref, strict=True):
        torch.testing.assert_close(p.grad, p_ref.grad, rtol=1e-8, atol=1e-10)


def test_mn_running_stats_follow_eq4_with_documented_unbiasing():
    layer = _randomise(ModeNorm2d(4, 3, momentum=0.1).double())
    x1, x2 = _input((8, 4, 3, 3), seed=5), _input((8, 4, 3, 3), seed=6)
    rm = torch.zeros(3, 4, dtype=torch.float64)
    rv = torch.ones(3, 4, dtype=torch.float64)
    for x in (x1, x2):
        layer(x)
        _, stats = mn_train_reference(x, *[p.detach() for p in _mn_params(layer)], eps=layer.eps)
        for k, (mean_k, var_k, n_k, sq_k) in enumerate(stats):
            n_eff = 9 * n_k ** 2 / sq_k  # 9 = H*W values per sample, reliability weights g_nk
            rm[k] = 0.9 * rm[k] + 0.1 * mean_k
            rv[k] = 0.9 * rv[k] + 0.1 * var_k * n_eff / (n_eff - 1)
    torch.testing.assert_close(layer.running_mean, rm, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(layer.running_var, rv, rtol=1e-10, atol=1e-12)
    assert int(layer.num_batches_tracked) == 2


def test_mn_cumulative_average_when_momentum_is_none():
    layer = _randomise(ModeNorm2d(3, 2, momentum=None).double())
    xs = [_input((6, 3, 2, 2), seed=s) for s in (10, 11, 12)]
    means = []
    for x in xs:
        layer(x)
        _, stats = mn_train_reference(x, *[p.detach() for p in _mn_params(layer)], eps=layer.eps)
        means.append(torch.stack([s[0] for s in stats]))
    torch.testing.assert_close(layer.running_mean, sum(means) / 3, rtol=1e-10, atol=1e-12)


def test_mn_eval_uses_running_statistics():
    layer = _randomise(ModeNorm2d(4, 2).double())
    with torch.no_grad():
        layer.running_mean.copy_(torch.randn(2, 4, dtype=torch.float64))
        layer.running_var.copy_(torch.rand(2, 4, dtype=torch.float64) + 0.5)
    layer.eval()
    x = _input((5, 4, 3, 3))
    y = layer(x)
    y_ref = mn_eval_reference(x, *[p.detach() for p in _mn_params(layer)], layer.eps,
                              layer.running_mean, layer.running_var)
    torch.testing.assert_close(y, y_ref, rtol=1e-10, atol=1e-10)
    # eval differs from train on the same batch: the statistics really come from the buffers
    layer.train()
    assert not torch.allclose(layer(x), y)


def test_mn_without_running_stats_uses_batch_stats_in_eval():
    layer = _randomise(ModeNorm2d(4, 2, track_running_stats=False).double()).eval()
    assert layer.running_mean is None and "running_mean" not in layer.state_dict()
    x = _input((6, 4, 2, 2))
    y_ref, _ = mn_train_reference(x, *[p.detach() for p in _mn_params(layer)], eps=layer.eps)
    torch.testing.assert_close(layer(x), y_ref, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("train", [True, False])
def test_mn_gradcheck_float64(train):
    layer = _randomise(ModeNorm2d(3, 2).double()).train(train)
    x = _input((4, 3, 2, 2)).requires_grad_()
    params = list(layer.parameters())

    def fn(inp, *_params):
        return layer(inp)

    assert torch.autograd.gradcheck(fn, (x, *params), eps=1e-6, atol=1e-6)


def test_mgn_matches_literal_algorithm_and_gradcheck():
    layer = _randomise(ModeGroupNorm(6, 3).double())
    x = _input((3, 6, 4, 2)).requires_grad_()
    x_ref = x.detach().clone().requires_grad_()
    params = [layer.gate_weight, layer.gate_bias, layer.weight, layer.bias]
    params_ref = [p.detach().clone().requires_grad_() for p in params]
    y = layer(x)
    y_ref = mgn_reference(x_ref, *params_ref, eps=layer.eps)
    torch.testing.assert_close(y, y_ref, rtol=1e-10, atol=1e-10)
    upstream = torch.randn_like(y)
    (y * upstream).sum().backward()
    (y_ref * upstream).sum().backward()
    torch.testing.assert_close(x.grad, x_ref.grad, rtol=1e-8, atol=1e-10)
    for p, p_ref in zip(params, params_ref, strict=True):
        torch.testing.assert_close(p.grad, p_ref.grad, rtol=1e-8, atol=1e-10)
    # identical in train and eval, and per-sample: no dependence on the rest of the batch
    with torch.no_grad():
        torch.testing.assert_close(layer.eval()(x), y)
        torch.testing.assert_close(layer(x[1:2]), y[1:2])
    assert torch.autograd.gradcheck(lambda inp, *_: layer(inp), (x.detach().requires_grad_(), *params))


@pytest.mark.parametrize("shape", [(7, 4), (5, 4, 6)])
def test_mode_norm_1d_matches_literal_algorithm(shape):
    layer = _randomise(ModeNorm1d(4, 2).double())
    x = _input(shape)
    y_ref, _ = mn_train_reference(x, *[p.detach() for p in _mn_params(layer)], eps=layer.eps)
    torch.testing.assert_close(layer(x), y_ref, rtol=1e-10, atol=1e-10)
    with pytest.raises(ValueError, match="4D|dims"):
        layer(torch.randn(2, 4, 3, 3, dtype=torch.float64))


@pytest.mark.parametrize("case", ["mn-train", "mn-eval", "mn-no-grad-train", "mgn"])
def test_channels_last_input_keeps_its_layout_and_matches_the_oracle(case):
    """A channels_last input, as ``model.to(memory_format=torch.channels_last)`` gives, comes out
    channels_last with the oracle's values, and so does its gradient, as with nn.BatchNorm2d."""
    shape = (5, 6, 4, 3)
    if case == "mgn":
        layer = _randomise(ModeGroupNorm(6, 3).double())
        params = [layer.gate_weight, layer.gate_bias, layer.weight, layer.bias]
    else:
        layer = _randomise(ModeNorm2d(6, 3).double())
        params = _mn_params(layer)
        with torch.no_grad():
            layer.running_mean.copy_(torch.randn(3, 6, dtype=torch.float64))
            layer.running_var.copy_(torch.rand(3, 6, dtype=torch.float64) + 0.5)
        layer.train(case != "mn-eval")
    x = _input(shape).contiguous(memory_format=torch.channels_last)
    assert not x.is_contiguous()
    x_ref = x.detach().contiguous().requires_grad_()
    ref_params = [p.detach().clone() for p in params]
    if case == "mgn":
        y_ref = mgn_reference(x_ref, *ref_params, eps=layer.eps)
    elif case == "mn-eval":
        y_ref = mn_eval_reference(x_ref, *ref_params, layer.eps, layer.running_mean.clone(),
                                  layer.running_var.clone())
    else:
        y_ref, _ = mn_train_reference(x_ref, *ref_params, eps=layer.eps)
    upstream = torch.randn(shape, dtype=torch.float64, generator=torch.Generator().manual_seed(3))
    (y_ref * upstream).sum().backward()

    if case == "mn-no-grad-train":
        with torch.no_grad():
            y = layer(x)
    else:
        x.requires_grad_()
        y = layer(x)
        (y * upstream).sum().backward()
        assert x.grad.is_contiguous(memory_format=torch.channels_last), "input gradient left channels_last"
        torch.testing.assert_close(x.grad, x_ref.grad, rtol=1e-8, atol=1e-10)
    assert y.is_contiguous(memory_format=torch.channels_last), "output left channels_last"
    torch.testing.assert_close(y, y_ref, rtol=1e-10, atol=1e-10)


def test_k1_is_batchnorm_outputs_grads_running_stats_and_eval():
    torch.manual_seed(0)
    mn, bn = ModeNorm2d(5, 1, momentum=0.2), nn.BatchNorm2d(5, momentum=0.2)
    with torch.no_grad():
        bn.weight.uniform_(0.5, 1.5)
        bn.bias.uniform_(-1, 1)
        mn.weight.copy_(bn.weight)
        mn.bias.copy_(bn.bias)
    for step in range(3):
        x = torch.randn(8, 5, 6, 6) * 3 + step
        x_mn, x_bn = x.clone().requires_grad_(), x.clone().requires_grad_()
        y_mn, y_bn = mn(x_mn), bn(x_bn)
        torch.testing.assert_close(y_mn, y_bn, rtol=1e-5, atol=1e-5)
        g = torch.randn_like(y_bn)
        (y_mn * g).sum().backward()
        (y_bn * g).sum().backward()
        torch.testing.assert_close(x_mn.grad, x_bn.grad, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(mn.weight.grad, bn.weight.grad, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(mn.bias.grad, bn.bias.grad, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(mn.running_mean[0], bn.running_mean, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(mn.running_var[0], bn.running_var, rtol=1e-5, atol=1e-6)
    x = torch.randn(3, 5, 4, 4)
    torch.testing.assert_close(mn.eval()(x), bn.eval()(x), rtol=1e-5, atol=1e-5)


def test_large_mean_is_stable_in_fp32():
    torch.manual_seed(0)
    layer = _randomise(ModeNorm2d(4, 2))
    with torch.no_grad():  # keep the gate soft at |x| ~ 1e4, so both modes hold mass
        layer.gate.weight.mul_(1e-4)
    x64 = torch.randn(16, 4, 8, 8, dtype=torch.float64) + 1e4
    x64[:8] += torch.randn(8, 4, 1, 1, dtype=torch.float64) * 3
    y = layer(x64.float())
    y_ref_raw, _ = mn_train_reference(x64, *[p.detach().double() for p in _mn_params(layer)], eps=layer.eps)
    assert torch.isfinite(y).all()
    torch.testing.assert_close(y.double(), y_ref_raw, rtol=0, atol=2e-2)
    # K=1 with mean 1e4, std 1: per-channel output mean 0, std 1 (no E[x^2]-E[x]^2 cancellation)
    k1 = ModeNorm2d(4, 1)
    out = k1(x64.float())
    assert out.mean((0, 2, 3)).abs().max() < 1e-3
    assert (out.std((0, 2, 3), unbiased=False) - 1).abs().max() < 1e-3


def test_empty_mode_is_finite_and_keeps_running_stats():
    layer = _randomise(ModeNorm2d(4, 3).double())
    with torch.no_grad():
        layer.gate.bias.copy_(torch.tensor([0.0, 0.0, -1e4], dtype=torch.float64))
        layer.running_mean[2].fill_(0.25)
        layer.running_var[2].fill_(2.0)
    x = _input((6, 4, 3, 3)).requires_grad_()
    y = layer(x)
    y.sum().backward()
    assert torch.isfinite(y).all() and torch.isfinite(x.grad).all()
    assert all(torch.isfinite(p.grad).all() for p in layer.parameters())
    assert torch.all(layer.running_mean[2] == 0.25) and torch.all(layer.running_var[2] == 2.0)
    assert not torch.all(layer.running_mean[0] == 0)  # live modes were updated
    assert torch.isfinite(layer.eval()(x.detach())).all()


def test_autocast_computes_statistics_in_fp32():
    assert_autocast_keeps_fp32_statistics("cpu")


def test_state_dict_round_trip_is_bit_identical():
    layer = _randomise(ModeNorm2d(4, 2))
    for s in range(3):
        layer(torch.randn(6, 4, 3, 3) + s)
    buf = io.BytesIO()
    torch.save(layer.state_dict(), buf)
    assert {"running_mean", "running_var", "num_batches_tracked", "gate.weight"} <= set(layer.state_dict())
    fresh = ModeNorm2d(4, 2)
    buf.seek(0)
    fresh.load_state_dict(torch.load(buf, weights_only=True))
    x = torch.randn(5, 4, 3, 3)
    assert torch.equal(layer.eval()(x), fresh.eval()(x))


def test_bad_input_errors_name_layer_and_problem():
    layer = ModeNorm2d(4, 2)
    with pytest.raises(ValueError, match=r"ModeNorm2d.*4 dims.*\(2, 4, 3\)"):
        layer(torch.randn(2, 4, 3))
    with pytest.raises(ValueError, match=r"ModeNorm2d.*3 channels.*num_features=4"):
        layer(torch.randn(2, 3, 5, 5))
    with pytest.raises(ValueError, match=r"ModeNorm2d.*batch of 1"):
        layer(torch.randn(1, 4, 5, 5))
    layer.eval()(torch.randn(1, 4, 5, 5))  # fine in eval
    layer.train()
    with pytest.raises(ValueError, match=r"batch of 0 samples cannot give mode statistics in training"):
        layer(torch.randn(0, 4, 5, 5))
    no_running = ModeNorm2d(4, 2, track_running_stats=False).eval()  # eval on batch statistics
    with pytest.raises(ValueError, match=r"batch of 1 sample cannot .*track_running_stats=False\); use batches "
                                         r"of 2 or more$"):
        no_running(torch.randn(1, 4, 5, 5))
    for bad_eps in (-1e-5, float("nan"), float("inf"), "1e-5"):
        with pytest.raises(ValueError, match=r"ModeNorm2d: eps must be a finite number >= 0"):
            ModeNorm2d(4, 2, eps=bad_eps)
        with pytest.raises(ValueError, match=r"ModeGroupNorm: eps must be a finite number >= 0"):
            ModeGroupNorm(4, 2, eps=bad_eps)
    for bad_momentum in (-0.1, 1.5, float("nan"), "0.1"):
        with pytest.raises(ValueError, match=r"ModeNorm1d: momentum must be in \[0, 1\] or None"):
            ModeNorm1d(4, 2, momentum=bad_momentum)
    for ok in (dict(eps=0.0, momentum=None), dict(eps=1, momentum=0), dict(momentum=1.0)):
        ModeNorm2d(4, 2, **ok)(torch.randn(3, 4, 2, 2))  # BN's edge values stay allowed
    with pytest.raises(ValueError, match=r"num_modes must be >= 1"):
        ModeNorm2d(4, 0)
    with pytest.raises(TypeError, match=r"num_modes must be an int"):
        ModeNorm2d(4, 2.5)
    with pytest.raises(ValueError, match=r"ModeGroupNorm.*num_modes must be >= 1"):
        ModeGroupNorm(4, -1)
    bad = torch.randn(4, 4, 3, 3)
    bad[1, 2, 0, 0] = float("nan")
    with pytest.raises(ValueError, match=r"ModeNorm2d.*non-finite"):
        ModeNorm2d(4, 2)(bad)
    with pytest.raises(ValueError, match=r"ModeNorm2d.*non-finite"):
        ModeNorm2d(4, 2).eval()(bad)
    with pytest.raises(ValueError, match=r"ModeGroupNorm.*non-finite"):
        ModeGroupNorm(4, 2)(bad)
    with pytest.raises(ValueError, match=r"ModeGroupNorm.*channels"):
        ModeGroupNorm(4, 2)(torch.randn(2, 5, 3, 3))
    with pytest.raises(TypeError, match="floating point"):
        layer(torch.ones(2, 4, 3, 3, dtype=torch.long))
    with pytest.raises(TypeError, match="torch.Tensor"):
        layer([[1.0]])


def test_plain_and_fused_paths_agree():
    """The hand-written backward (eager) and the plain-op path (compile/export) agree."""
    layer = _randomise(ModeNorm2d(4, 3).double())
    x = _input((6, 4, 3, 3))
    grads = []
    for fused in (True, False):
        lay = copy.deepcopy(layer)
        xi = x.clone().requires_grad_()
        if fused:
            y = lay(xi)
        else:
            v, m = torch.var_mean(xi.flatten(2), dim=2, unbiased=False)
            from mnzoo.layers.functional import mode_norm_coefficients
            a, b, *_ = mode_norm_coefficients(m, v, *_mn_params(lay), eps=lay.eps)
            y = (xi.flatten(2) * a[..., None] + b[..., None]).reshape(x.shape)
        (y ** 2).sum().backward()
        grads.append((y.detach(), xi.grad, lay.gate.weight.grad))
    for a, b in zip(*grads, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("train", [True, False])
def test_parametrized_weights_are_used(train):
    """The layers read parameters from the module's dicts for speed; a parametrization (which
    moves them behind a property) must still be honoured, in training and in eval."""
    from torch.nn.utils import parametrize

    class Double(nn.Module):
        def forward(self, w):
            return 2 * w

    layer = _randomise(ModeNorm2d(4, 2).double())
    with torch.no_grad():
        layer.running_mean.copy_(torch.randn(2, 4, dtype=torch.float64))
        layer.running_var.copy_(torch.rand(2, 4, dtype=torch.float64) + 0.5)
    layer.train(train)
    x = _input((5, 4, 3, 3))
    reference = copy.deepcopy(layer)
    with torch.no_grad():
        reference.weight.mul_(2)
        reference.gate.weight.mul_(2)
    parametrize.register_parametrization(layer, "weight", Double())
    parametrize.register_parametrization(layer.gate, "weight", Double())
    torch.testing.assert_close(layer(x), reference(x), rtol=1e-12, atol=1e-12)
