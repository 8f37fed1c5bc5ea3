"""The paper's Figure 2: channel-wise histograms of a norm layer's input and output.

The paper shows, for one early layer of VGG13 on 1024 CIFAR-10 test images, the distribution of a
few channels before and after BN (top row) and MN (bottom row), to argue that MN normalises
channels with multi-modal behaviour that BN leaves as it is. This module draws the same figure for
any models with a norm layer (one row per model), from images fed as in evaluation, and returns
per-channel statistics, including Sarle's bimodality coefficient b = (skew^2 + 1) / kurtosis
(1/3 for a normal distribution, 1 for two equal spikes; above 5/9 suggests more than one mode).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, List, Sequence, Tuple

import torch
from PIL import Image, ImageDraw
from torch import Tensor, nn

from .data import ImageTensors
from .layers import ModeGroupNorm, ModeNorm2d
from .modes import forward_in_eval

__all__ = ["norm_layers", "collect_norm_io", "channel_stats", "save_histograms_figure"]

_NORM_TYPES = (nn.modules.batchnorm._NormBase, nn.GroupNorm, nn.LayerNorm, ModeNorm2d, ModeGroupNorm)
_COLOURS = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#e377c2", "#17becf")


def norm_layers(model: nn.Module) -> List[Tuple[str, nn.Module]]:
    """The model's normalisation layers (BN, IN, GN, LN, MN, MGN) in definition order."""
    return [(n, m) for n, m in model.named_modules() if isinstance(m, _NORM_TYPES)]


def _pick(model: nn.Module, which: str) -> Tuple[str, nn.Module]:
    layers = norm_layers(model)
    if not layers:
        raise ValueError(f"{type(model).__name__} has no normalisation layer to draw")
    names = [n for n, _ in layers]
    if which in ("first", "last"):
        return layers[0 if which == "first" else -1]
    if which not in names:
        raise ValueError(f"unknown layer {which!r}: use 'first', 'last' or one of {names}")
    return layers[names.index(which)]


@torch.no_grad()
def collect_norm_io(model: nn.Module, data: ImageTensors, layer: str = "first",
                    channels: Sequence[int] = (0, 1, 2, 3), batch_size: int = 256) -> Tuple[str, Tensor, Tensor]:
    """(layer name, input, output) of one norm layer in eval mode over all of ``data``: for each
    of ``channels`` every value over images and positions, as (len(channels), N * H * W) float32."""
    name, module = _pick(model, layer)
    seen: Dict[str, List[Tensor]] = {"in": [], "out": []}
    chans = list(channels)

    def hook(mod: nn.Module, args: Tuple[Tensor, ...], out: Tensor) -> None:
        num = args[0].shape[1]
        if any(not 0 <= c < num for c in chans):
            raise ValueError(f"channels {chans} out of range for layer {name} with {num} channels")
        for key, t in (("in", args[0]), ("out", out)):
            seen[key].append(t[:, chans].float().transpose(0, 1).reshape(len(chans), -1))

    handle = module.register_forward_hook(hook)
    try:
        forward_in_eval(model, data, batch_size)
    finally:
        handle.remove()
    return name, torch.cat(seen["in"], 1).cpu(), torch.cat(seen["out"], 1).cpu()


def channel_stats(values: Tensor) -> List[Dict[str, float]]:
    """Per row of ``values`` (channels, samples): mean, std and Sarle's bimodality coefficient."""
    v = values.double()
    mean = v.mean(1, keepdim=True)
    centred = v - mean
    var = centred.square().mean(1)
    std = var.sqrt()
    skew = centred.pow(3).mean(1) / var.pow(1.5)
    kurt = centred.pow(4).mean(1) / var.square()
    bimod = (skew.square() + 1) / kurt
    return [{"mean": float(m), "std": float(s), "bimodality": float(b)}
            for m, s, b in zip(mean.squeeze(1), std, bimod, strict=True)]


def _panel(draw: ImageDraw.ImageDraw, box: Tuple[int, int, int, int], values: Tensor, title: str,
           bins: int) -> None:
    """Histograms (as densities) of every row of ``values``, overlaid as step lines, in ``box``."""
    x0, y0, x1, y1 = box
    flat = values.flatten()
    flat = flat[::max(1, flat.numel() // 1_000_000)]  # torch.quantile takes at most 16M values
    lo, hi = torch.quantile(flat, torch.tensor([0.001, 0.999])).tolist()
    if hi <= lo:
        lo, hi = lo - 0.5, hi + 0.5
    hists = [torch.histc(row.clamp(lo, hi), bins=bins, min=lo, max=hi) / row.numel() for row in values]
    top = max(float(h.max()) for h in hists) or 1.0
    draw.rectangle(box, outline="black")
    draw.text((x0 + 4, y0 + 3), title, fill="black")
    draw.text((x0, y1 + 3), f"{lo:.2f}", fill="black")
    draw.text((x1 - 40, y1 + 3), f"{hi:.2f}", fill="black")
    width, height = x1 - x0, y1 - y0 - 16
    for c, h in enumerate(hists):
        points = []
        for i, p in enumerate(h.tolist()):
            y = y1 - p / top * height
            points += [(x0 + i * width / bins, y), (x0 + (i + 1) * width / bins, y)]
        draw.line(points, fill=_COLOURS[c % len(_COLOURS)], width=2)


def save_histograms_figure(models: Sequence[Tuple[str, nn.Module, ImageTensors]], path: str | Path,
                           layer: str = "first", channels: Sequence[int] = (0, 1, 2, 3), bins: int = 50,
                           batch_size: int = 256) -> Dict[str, Dict[str, Any]]:
    """Write the Figure-2 PNG: one row per (label, model, data), the layer's input and output.
    Returns, per label, the layer's name and type and the per-channel statistics before and after."""
    panel_w, panel_h, label_w, pad = 360, 190, 230, 24
    canvas = Image.new("RGB", (label_w + 2 * (panel_w + pad), 22 + len(models) * (panel_h + pad + 14)), "white")
    draw = ImageDraw.Draw(canvas)
    for c, ch in enumerate(channels):
        draw.text((label_w + c * 70, 4), f"channel {ch}", fill=_COLOURS[c % len(_COLOURS)])
    summary: Dict[str, Dict[str, Any]] = {}
    for r, (label, model, data) in enumerate(models):
        name, before, after = collect_norm_io(model, data, layer, channels, batch_size)
        kind = type(model.get_submodule(name)).__name__
        y = 22 + r * (panel_h + pad + 14)
        draw.text((4, y + panel_h // 2 - 12), f"{label}\nlayer {name} ({kind})\n{len(data)} images", fill="black")
        for p, (values, title) in enumerate(((before, "before normalisation"), (after, "after normalisation"))):
            x = label_w + p * (panel_w + pad)
            _panel(draw, (x, y, x + panel_w, y + panel_h), values, title, bins)
        summary[label] = {"layer": name, "type": kind, "channels": list(channels),
                          "before": channel_stats(before), "after": channel_stats(after)}
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    canvas.save(path)
    return summary
