"""MN layers with the outside world: torch.distributed (gloo), model conversion, compile, export."""
from __future__ import annotations

import functools
import os
import socket
import tempfile

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn

from mnzoo import ModeGroupNorm, ModeNorm2d, SyncModeNorm2d, convert_sync_mode_norm, convert_to_mode_norm
from mnzoo.layers import ModeNorm1d, SyncModeNorm1d


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _make_layer(dtype, dims: int = 4):
    torch.manual_seed(0)
    layer = (ModeNorm2d if dims == 4 else ModeNorm1d)(6, 3, momentum=0.3).to(dtype)
    with torch.no_grad():
        layer.gate.weight.normal_(0, 1.0)
        layer.weight.uniform_(0.5, 1.5)
        layer.bias.uniform_(-0.5, 0.5)
    return layer


def _batch(dtype, dims: int = 4):
    gen = torch.Generator().manual_seed(1)
    shape = (8, 6, 5, 5)[:dims]
    x = torch.randn(shape, generator=gen, dtype=dtype) * 2
    x[:4] = x[:4] * 0.5 + 1.0
    w = torch.randn(shape, generator=gen, dtype=dtype)
    return x, w


def _sync_worker(rank: int, world: int, port: int, dtype, out_path: str, dims: int) -> None:
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    try:
        layer = convert_sync_mode_norm(nn.Sequential(_make_layer(dtype, dims)))[0]
        assert isinstance(layer, SyncModeNorm2d if dims == 4 else SyncModeNorm1d)
        x, w = _batch(dtype, dims)
        part = slice(rank * 4, rank * 4 + 4)
        xr = x[part].clone().requires_grad_()
        for _ in range(2):  # two steps: running statistics accumulate across steps too
            xr.grad = None
            layer.zero_grad()
            y = layer(xr)
            (y * w[part]).sum().backward()
        grads = {n: p.grad.clone() for n, p in layer.named_parameters()}
        for g in grads.values():
            dist.all_reduce(g)
        ys = [torch.empty_like(y) for _ in range(world)]
        gxs = [torch.empty_like(xr.grad) for _ in range(world)]
        dist.all_gather(ys, y.detach())
        dist.all_gather(gxs, xr.grad)
        if rank == 0:
            torch.save({"y": torch.cat(ys), "gx": torch.cat(gxs), "grads": grads,
                        "state": layer.state_dict()}, out_path)
    finally:
        dist.destroy_process_group()


@pytest.mark.parametrize("dtype,dims", [(torch.float64, 4), (torch.float32, 4), (torch.float64, 2)])
def test_sync_mode_norm_two_gloo_processes_match_one_process(dtype, dims):
    x, w = _batch(dtype, dims)
    ref = _make_layer(dtype, dims)
    xr = x.clone().requires_grad_()
    for _ in range(2):
        xr.grad = None
        ref.zero_grad()
        y_ref = ref(xr)
        (y_ref * w).sum().backward()
    with tempfile.TemporaryDirectory() as tmp:
        out_path = os.path.join(tmp, "out.pt")
        mp.start_processes(_sync_worker, args=(2, _free_port(), dtype, out_path, dims), nprocs=2,
                           join=True, start_method="spawn")
        got = torch.load(out_path, weights_only=True)
    tol = dict(rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(got["y"], y_ref.detach(), **tol)
    torch.testing.assert_close(got["gx"], xr.grad, **tol)
    for name, p in ref.named_parameters():
        torch.testing.assert_close(got["grads"][name], p.grad, **tol)
    for name, buf in ref.state_dict().items():
        torch.testing.assert_close(got["state"][name], buf, **tol)


def test_sync_mode_norm_without_process_group_is_mode_norm():
    layer = _make_layer(torch.float64)
    sync = convert_sync_mode_norm(layer)
    assert type(sync) is SyncModeNorm2d
    x, _ = _batch(torch.float64)
    torch.testing.assert_close(sync(x), _make_layer(torch.float64)(x))


def _bn_stats_randomised(model: nn.Module) -> nn.Module:
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.copy_(torch.randn(m.num_features, generator=gen) * 0.1)
                m.running_var.copy_(torch.rand(m.num_features, generator=gen) + 0.5)
                m.weight.copy_(torch.rand(m.num_features, generator=gen) + 0.5)
                m.bias.copy_(torch.randn(m.num_features, generator=gen) * 0.1)
    return model.eval()


@pytest.mark.parametrize("source", ["timm", "torchvision"])
def test_convert_resnet18_keeps_eval_outputs(source):
    if source == "timm":
        import timm
        model = timm.create_model("resnet18", pretrained=False, num_classes=10)
    else:
        import torchvision
        model = torchvision.models.resnet18(weights=None, num_classes=10)
    model = _bn_stats_randomised(model)
    n_bn = sum(isinstance(m, nn.BatchNorm2d) for m in model.modules())
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        before = model(x)
        converted = convert_to_mode_norm(model, num_modes=3)
        after = converted(x)
    mns = [m for m in converted.modules() if isinstance(m, ModeNorm2d)]
    assert len(mns) == n_bn == 20 and all(m.num_modes == 3 for m in mns)
    assert not any(isinstance(m, nn.BatchNorm2d) for m in converted.modules())
    torch.testing.assert_close(after, before, rtol=1e-4, atol=1e-5)
    # and it trains: a step in train mode runs and updates the mode statistics
    converted.train()
    converted(torch.randn(4, 3, 64, 64)).sum().backward()
    assert mns[0].gate.weight.grad is not None


def test_convert_first_only_and_group_norm():
    import torchvision
    model = torchvision.models.resnet18(weights=None)
    convert_to_mode_norm(model, which="first")
    assert isinstance(model.bn1, ModeNorm2d)
    assert sum(isinstance(m, ModeNorm2d) for m in model.modules()) == 1
    gn_model = nn.Sequential(nn.Conv2d(3, 8, 3), nn.GroupNorm(2, 8), nn.ReLU(), nn.Conv2d(8, 8, 3), nn.GroupNorm(2, 8))
    with torch.no_grad():
        gn_model[1].weight.fill_(2.0)
    gn_model[4].weight.requires_grad_(False)  # a frozen affine stays frozen, as for BN
    bn_model = nn.Sequential(nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8))
    bn_model[1].bias.requires_grad_(False)
    convert_to_mode_norm(gn_model, num_modes=2, group=True)
    convert_to_mode_norm(bn_model, num_modes=2)
    assert isinstance(gn_model[1], ModeGroupNorm) and isinstance(gn_model[4], ModeGroupNorm)
    assert torch.all(gn_model[1].weight == 2.0)
    assert [gn_model[4].weight.requires_grad, gn_model[4].bias.requires_grad] == [False, True]
    assert [bn_model[1].weight.requires_grad, bn_model[1].bias.requires_grad] == [True, False]
    with pytest.raises(ValueError, match="no BatchNorm2d"):
        convert_to_mode_norm(nn.Sequential(nn.Conv2d(3, 3, 1)))
    with pytest.raises(ValueError, match="which"):
        convert_to_mode_norm(model, which="last")


def _small_net(norm):
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), norm(8), nn.ReLU(), nn.Conv2d(8, 8, 3, padding=1),
                         norm(8), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 4))


def _trained_eval_net(norm):
    net = _small_net(norm)
    for s in range(3):
        net(torch.randn(8, 3, 12, 12) + s)
    return net.eval()


@pytest.mark.parametrize("dynamo", [True, False], ids=["dynamo", "torchscript"])
@pytest.mark.parametrize("norm", [lambda c: ModeNorm2d(c, 2), lambda c: ModeGroupNorm(c, 2)], ids=["mn", "mgn"])
def test_onnx_export_matches_onnxruntime(norm, dynamo, tmp_path):
    ort = pytest.importorskip("onnxruntime")
    pytest.importorskip("onnx")
    net = _trained_eval_net(norm)
    x = torch.randn(3, 3, 12, 12)
    path = tmp_path / "net.onnx"
    if dynamo:
        pytest.importorskip("onnxscript")
        torch.onnx.export(net, (x,), str(path), dynamo=True, input_names=["x"],
                          dynamic_shapes=({0: torch.export.Dim("n")},))
    else:
        torch.onnx.export(net, (x,), str(path), input_names=["x"], output_names=["y"],
                          dynamic_axes={"x": {0: "n"}}, dynamo=False)
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    x2 = torch.randn(5, 3, 12, 12)  # another batch size than at export
    (got,) = sess.run(None, {sess.get_inputs()[0].name: x2.numpy()})
    with torch.no_grad():
        torch.testing.assert_close(torch.from_numpy(got), net(x2), rtol=1e-4, atol=1e-5)


def test_torchscript_trace_eval():
    net = _trained_eval_net(lambda c: ModeNorm2d(c, 2))
    x = torch.randn(2, 3, 12, 12)
    traced = torch.jit.trace(net, (x,))
    x2 = torch.randn(4, 3, 12, 12)
    with torch.no_grad():
        torch.testing.assert_close(traced(x2), net(x2))


def test_torch_compile_train_and_eval_match_eager():
    net = _small_net(lambda c: ModeNorm2d(c, 3))
    eager = _small_net(lambda c: ModeNorm2d(c, 3))
    compiled = torch.compile(net, backend="aot_eager")
    x = torch.randn(6, 3, 12, 12)
    y_c, y_e = compiled(x), eager(x)
    torch.testing.assert_close(y_c, y_e, rtol=1e-5, atol=1e-6)
    y_c.square().sum().backward()
    y_e.square().sum().backward()
    for (n, p), q in zip(net.named_parameters(), eager.parameters(), strict=True):
        torch.testing.assert_close(p.grad, q.grad, rtol=1e-4, atol=1e-6, msg=n)
    torch.testing.assert_close(net[1].running_var, eager[1].running_var)
    net.eval(), eager.eval()
    with torch.no_grad():
        torch.testing.assert_close(compiled(x), eager(x), rtol=1e-5, atol=1e-6)


def _distribute_bn_worker(rank: int, world: int, port: int, out_path: str) -> None:
    from timm.utils import distribute_bn
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    try:
        layer = _make_layer(torch.float64)  # plain (unsynchronised) MN: each rank sees its half
        x, _ = _batch(torch.float64)
        layer(x[rank * 4: rank * 4 + 4])
        distribute_bn(layer, world, reduce=True)  # timm averages running_mean / running_var
        if rank == 0:
            torch.save(layer.state_dict(), out_path)
    finally:
        dist.destroy_process_group()


def test_mode_norm_is_a_norm_layer_for_timm_models():
    """ModeNorm2d plugs into a timm model's norm_layer like nn.BatchNorm2d (num_features first,
    BN keywords); timm's get_norm_layer passes the class through. Trains, then evaluates on the
    running statistics it gathered."""
    import timm
    from timm.layers import get_norm_layer
    assert get_norm_layer(ModeNorm2d) is ModeNorm2d
    torch.manual_seed(0)
    model = timm.create_model('resnet18', num_classes=3, norm_layer=functools.partial(ModeNorm2d, num_modes=3))
    norms = [m for m in model.modules() if isinstance(m, ModeNorm2d)]
    assert len(norms) == 20 and all(m.num_modes == 3 for m in norms)
    assert not any(isinstance(m, nn.BatchNorm2d) for m in model.modules())
    x = torch.randn(4, 3, 64, 64)
    model(x).square().mean().backward()
    assert all(m.gate.weight.grad is not None for m in norms)
    assert int(norms[0].num_batches_tracked) == 1 and not torch.equal(norms[0].running_mean[1], torch.zeros(64))
    with torch.no_grad():  # eval uses the running statistics: a sample's output ignores the rest of the batch
        torch.testing.assert_close(model.eval()(x[:1]), model(x)[:1], rtol=1e-4, atol=1e-5)
        model.train()
        assert not torch.allclose(model(x[:2])[:1], model(x)[:1], rtol=1e-4, atol=1e-5)  # training does not


def test_mn_layers_by_name_in_timms_norm_factory(monkeypatch):
    """`import mnzoo` names the layers in timm's norm factory, so string norm_layer arguments work
    as 'batchnorm2d' does; none of timm's own names is taken, and a clash keeps timm's layer."""
    import subprocess
    import sys

    import timm
    from timm.layers import create_norm, create_norm_layer, get_norm_layer
    from mnzoo.layers import TIMM_NORM_NAMES, register_timm_norm_names
    assert get_norm_layer("modenorm2d") is ModeNorm2d and get_norm_layer("Mode_Norm1d") is ModeNorm1d
    assert isinstance(create_norm_layer("mode_group_norm", 8), ModeGroupNorm)
    assert get_norm_layer("batchnorm2d") is nn.BatchNorm2d
    fresh = subprocess.run([sys.executable, "-c", "from timm.layers import create_norm as c; print(*c._NORM_MAP)"],
                           capture_output=True, text=True, check=True).stdout.split()
    assert "batchnorm2d" in fresh and not set(fresh) & set(TIMM_NORM_NAMES)
    model = timm.create_model("resnet18", norm_layer="modenorm2d", num_classes=3)
    norms = [m for m in model.modules() if isinstance(m, ModeNorm2d)]
    assert len(norms) == 20 and all(m.num_modes == 2 for m in norms)
    model(torch.randn(2, 3, 32, 32)).sum().backward()
    assert norms[0].gate.weight.grad is not None
    table = dict(create_norm._NORM_MAP, modenorm=nn.BatchNorm2d)  # as if timm had its own 'modenorm'
    monkeypatch.setattr(create_norm, "_NORM_MAP", table)
    with pytest.warns(UserWarning, match="'modenorm'"):
        assert register_timm_norm_names()
    assert table["modenorm"] is nn.BatchNorm2d and table["modenorm2d"] is ModeNorm2d


def test_timm_distribute_bn_averages_mode_statistics():
    x, _ = _batch(torch.float64)
    halves = []
    for r in range(2):
        layer = _make_layer(torch.float64)
        layer(x[r * 4: r * 4 + 4])
        halves.append(layer.state_dict())
    with tempfile.TemporaryDirectory() as tmp:
        out_path = os.path.join(tmp, "out.pt")
        mp.start_processes(_distribute_bn_worker, args=(2, _free_port(), out_path), nprocs=2,
                           join=True, start_method="spawn")
        got = torch.load(out_path, weights_only=True)
    for key in ("running_mean", "running_var"):
        assert got[key].shape == (3, 6)
        torch.testing.assert_close(got[key], (halves[0][key] + halves[1][key]) / 2)


def test_timm_model_ema_treats_k1_mode_norm_like_batchnorm():
    from timm.utils import ModelEmaV3
    torch.manual_seed(0)
    bn_net = _small_net(nn.BatchNorm2d)
    mn_net = _small_net(lambda c: ModeNorm2d(c, 1))
    mn_net.load_state_dict({k: v.unsqueeze(0) if "running_" in k else v
                            for k, v in bn_net.state_dict().items()}, strict=False)
    emas = [ModelEmaV3(net, decay=0.5) for net in (bn_net, mn_net)]
    opts = [torch.optim.SGD(net.parameters(), lr=0.1) for net in (bn_net, mn_net)]
    for step in range(3):
        x = torch.randn(8, 3, 12, 12) + step
        for net, ema, opt in zip((bn_net, mn_net), emas, opts, strict=True):
            opt.zero_grad()
            net(x).square().mean().backward()
            opt.step()
            ema.update(net, step=step)
    x = torch.randn(4, 3, 12, 12)
    with torch.no_grad():
        out_bn, out_mn = emas[0].module.eval()(x), emas[1].module.eval()(x)
    torch.testing.assert_close(out_mn, out_bn, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(emas[1].module[1].running_var[0], emas[0].module[1].running_var)


def test_convert_leaves_batchnorm_subclasses_with_extra_behaviour_and_says_so(caplog):
    from timm.layers import BatchNormAct2d
    model = nn.Sequential(nn.Conv2d(3, 4, 3), BatchNormAct2d(4), nn.Conv2d(4, 4, 3), nn.BatchNorm2d(4))
    with caplog.at_level("WARNING", logger="mnzoo.layers.convert"):
        convert_to_mode_norm(model)
    assert isinstance(model[1], BatchNormAct2d)  # its activation is not silently dropped
    assert isinstance(model[3], ModeNorm2d)
    assert "1 norm subclass layer(s) unconverted: 1 (BatchNormAct2d)" in caplog.text
