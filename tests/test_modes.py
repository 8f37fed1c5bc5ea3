"""mnzoo.modes: the paper's Figure 3 for an MN model."""
from __future__ import annotations

import numpy as np
import pytest
import timm
import torch
from PIL import Image

import mnzoo  # noqa: F401  (registers the models)
from mnzoo.data import ImageTensors
from mnzoo.modes import collect_gates, mode_layers, save_modes_figure


def _data(n: int = 24) -> ImageTensors:
    gen = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (n, 3, 32, 32), generator=gen, dtype=torch.uint8)
    images[: n // 2] //= 4  # a dark "domain" and a bright one
    domains = torch.zeros(n, dtype=torch.long)
    return ImageTensors(images, torch.zeros(n, dtype=torch.long), domains, ["cifar10"],
                        torch.full((1, 3), 0.5), torch.full((1, 3), 0.25), 40)


def test_modes_figure_shows_the_top_gated_images(tmp_path):
    torch.manual_seed(0)
    model = timm.create_model("lenet_mn", num_modes=3).eval()
    layers = mode_layers(model)
    assert len(layers) == 4  # two conv and two FC MN layers
    with torch.no_grad():  # make the first gate decisive so the ranking is meaningful
        layers[0][1].gate.weight.normal_(0, 3)
    data = _data()
    # independent gates of the first layer: capture its input and apply eq. (softmax of the gate)
    seen = []
    h = layers[0][1].register_forward_hook(lambda m, a, o: seen.append(a[0].detach()))
    x = (data.images.float() / 255 - 0.5) / 0.25
    with torch.no_grad():
        model(x)
    h.remove()
    pooled = seen[0].mean((2, 3))
    g_ref = torch.softmax(pooled @ layers[0][1].gate.weight.t() + layers[0][1].gate.bias, dim=1)
    g = collect_gates(model, data, [layers[0][0]])[layers[0][0]]
    torch.testing.assert_close(g, g_ref)

    out = tmp_path / "modes.png"
    summary = save_modes_figure(model, data, out, per_mode=5, scale=2)
    first = summary[layers[0][0]]
    assert first["num_modes"] == 3 and abs(sum(first["share"]) - 1) < 1e-5
    assert first["top"][1] == g_ref[:, 1].topk(5).indices.tolist()
    img = np.asarray(Image.open(out).convert("RGB"))
    assert img.shape[1] == 170 + 5 * (64 + 4)
    # the first tile of mode 0 is the top image of mode 0, enlarged 2x
    top0 = data.images[first["top"][0][0]].permute(1, 2, 0).numpy()
    tile = img[18:18 + 64, 170:170 + 64]
    assert np.array_equal(tile[::2, ::2], top0)


def test_modes_figure_needs_an_mn_model(tmp_path):
    with pytest.raises(ValueError, match="no ModeNorm layer"):
        save_modes_figure(timm.create_model("lenet_bn"), _data(), tmp_path / "x.png")
    with pytest.raises(ValueError, match="unknown layer"):
        save_modes_figure(timm.create_model("lenet_mn"), _data(), tmp_path / "x.png", layers=("nope",))


def test_cli_modes_writes_figure_for_published_weight(tmp_path):
    """`mnzoo modes` on the published lenet_mn.multidomain and real CIFAR-10 test images."""
    import subprocess
    import sys
    from pathlib import Path
    repo = Path(__file__).resolve().parents[1]
    tar = repo.parent / "shared" / "data" / "cifar10" / "test-lossless-1k.tar"
    if not tar.exists():
        pytest.skip(f"{tar} not on this machine")
    out = tmp_path / "modes.png"
    res = subprocess.run([sys.executable, "-m", "mnzoo.cli", "modes", "lenet_mn.multidomain",
                          "--data", f"cifar10={tar}@test", "--limit", "64", "--per-mode", "4",
                          "--out", str(out)], cwd=repo, capture_output=True, text=True, timeout=600,
                         env={**__import__("os").environ, "MNZOO_CACHE": str(tmp_path / "cache")})
    assert res.returncode == 0, res.stderr
    assert "K=2" in res.stdout and out.is_file()
    assert Image.open(out).size == (170 + 4 * (64 + 4), 2 * 18 + 4 * (64 + 4))
    bad = subprocess.run([sys.executable, "-m", "mnzoo.cli", "modes", "lenet_bn", "--random-init",
                          "--data", f"cifar10={tar}@test", "--limit", "8", "--out", str(tmp_path / "x.png")],
                         cwd=repo, capture_output=True, text=True, timeout=600)
    assert bad.returncode == 2 and "no ModeNorm layer" in bad.stderr
