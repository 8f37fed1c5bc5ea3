"""mnzoo.histograms: the paper's Figure 2 (a norm layer's channel histograms before and after)."""
from __future__ import annotations

import copy
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import timm
import torch
from PIL import Image
from scipy import stats
from torch import nn

import mnzoo  # noqa: F401  (registers the models)
from mnzoo.data import ImageTensors
from mnzoo.histograms import channel_stats, collect_norm_io, norm_layers, save_histograms_figure

REPO = Path(__file__).resolve().parents[1]
TAR_1K = REPO.parent / "shared" / "data" / "cifar10" / "test-lossless-1k.tar"


def _data(n: int = 20) -> ImageTensors:
    gen = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (n, 3, 8, 8), generator=gen, dtype=torch.uint8)
    return ImageTensors(images, torch.zeros(n, dtype=torch.long), torch.zeros(n, dtype=torch.long), ["cifar10"],
                        torch.tensor([[0.4, 0.5, 0.6]]), torch.tensor([[0.2, 0.25, 0.3]]), 10)


def _bn_net() -> nn.Module:
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 6, 3, padding=1), nn.BatchNorm2d(6), nn.ReLU(), nn.Conv2d(6, 4, 1),
                        nn.BatchNorm2d(4))
    with torch.no_grad():  # eval statistics that are not the identity
        net[1].running_mean.uniform_(-1, 1)
        net[1].running_var.uniform_(0.5, 2)
        net[1].weight.uniform_(0.5, 1.5)
    return net


def test_layer_io_is_what_the_layer_sees_and_returns():
    net, data = _bn_net(), _data()
    assert [n for n, _ in norm_layers(net)] == ["1", "4"]
    name, before, after = collect_norm_io(net, data, "first", channels=(4, 1), batch_size=7)
    # independently: normalise as (pixel / 255 - mean) / std, run the conv, then the BN in eval
    x = (data.images.double() / 255 - data.mean.double()[0, :, None, None]) / data.std.double()[0, :, None, None]
    net64 = copy.deepcopy(net).double().eval()
    with torch.no_grad():
        conv = net64[0](x)
        out = net64[1](conv)
    assert name == "1" and before.shape == after.shape == (2, 20 * 8 * 8)
    for row, c in enumerate((4, 1)):
        torch.testing.assert_close(before[row].double(), conv[:, c].flatten(), rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(after[row].double(), out[:, c].flatten(), rtol=1e-5, atol=1e-5)
    assert net.training  # the model's mode is restored


def test_channel_stats_match_scipy_and_bn_keeps_each_channels_shape():
    gen = torch.Generator().manual_seed(1)
    two_modes = torch.cat([torch.randn(3000, generator=gen) - 3, torch.randn(3000, generator=gen) + 3])
    values = torch.stack([torch.randn(6000, generator=gen), two_modes])
    got = channel_stats(values)
    for row, s in zip(values.double().numpy(), got, strict=True):
        skew, kurt = stats.skew(row), stats.kurtosis(row, fisher=False)
        assert s["mean"] == pytest.approx(row.mean()) and s["std"] == pytest.approx(row.std())
        assert s["bimodality"] == pytest.approx((skew ** 2 + 1) / kurt)
    assert got[0]["bimodality"] == pytest.approx(1 / 3, abs=0.02) and got[1]["bimodality"] > 5 / 9
    # BN in eval is one affine map per channel: each channel's shape (skew, kurtosis) is kept
    _, before, after = collect_norm_io(_bn_net(), _data(), "first", channels=(0, 1, 2))
    for b, a in zip(channel_stats(before), channel_stats(after), strict=True):
        assert a["bimodality"] == pytest.approx(b["bimodality"], rel=1e-4)


def test_figure_rows_and_clear_errors(tmp_path):
    net, data = _bn_net(), _data()
    mn = timm.create_model("lenet_mn", num_classes=10)
    lenet_data = ImageTensors(torch.randint(0, 256, (8, 3, 32, 32), dtype=torch.uint8), torch.zeros(8).long(),
                              torch.zeros(8).long(), ["cifar10"], data.mean, data.std, 10)
    out = tmp_path / "fig.png"
    summary = save_histograms_figure([("bn net", net, data), ("lenet_mn", mn, lenet_data)], out,
                                     layer="last", channels=(0, 2))
    assert Image.open(out).size == (230 + 2 * (360 + 24), 22 + 2 * (190 + 24 + 14))
    assert summary["bn net"]["layer"] == "4" and summary["bn net"]["type"] == "BatchNorm2d"
    assert summary["lenet_mn"]["type"] == "ModeNorm1d" and len(summary["lenet_mn"]["after"]) == 2
    with pytest.raises(ValueError, match="has no normalisation layer"):
        save_histograms_figure([("x", nn.Sequential(nn.Conv2d(3, 3, 1)), data)], out)
    with pytest.raises(ValueError, match="unknown layer 'nope'"):
        collect_norm_io(net, data, "nope")
    with pytest.raises(ValueError, match=r"channels \[9\] out of range for layer 1 with 6 channels"):
        collect_norm_io(net, data, "first", channels=(9,))


@pytest.mark.skipif(not TAR_1K.is_file(), reason="shared data (../shared/data) not present")
def test_cli_histograms_of_the_published_resnet20_pair(tmp_path):
    out = tmp_path / "fig2.png"
    env = {**os.environ, "MNZOO_CACHE": str(tmp_path / "cache")}
    run = subprocess.run([sys.executable, "-m", "mnzoo.cli", "histograms", "resnet20_bn.cifar10",
                          "resnet20_mn.cifar10", "--data", f"cifar10={TAR_1K}", "--limit", "64", "--channels", "0",
                          "3", "--json", "--out", str(out)], cwd=REPO, env=env, capture_output=True, text=True,
                         timeout=600)
    assert run.returncode == 0, run.stderr
    summary = json.loads(run.stdout)
    assert [(s["layer"], s["type"]) for s in summary.values()] == [("bn1", "BatchNorm2d"), ("bn1", "ModeNorm2d")]
    assert np.asarray(Image.open(out)).shape == (22 + 2 * (190 + 24 + 14), 230 + 2 * (360 + 24), 3)
    bad = subprocess.run([sys.executable, "-m", "mnzoo.cli", "histograms", "resnet20_bn", "--random-init",
                          "--data", str(TAR_1K), "--out", str(tmp_path / "x.png")], cwd=REPO, env=env,
                         capture_output=True, text=True, timeout=600)
    assert bad.returncode == 2 and "domain=path[@split]" in bad.stderr
