"""The paper's Figure 3: the test images that each mode of an MN layer claims most strongly.

For a trained model with ModeNorm layers, run images through it in eval mode, record every chosen
layer's gates g_nk (the softmax of its gate on the pooled input), and lay out, for each mode k, the
images with the highest g_nk. One block of K rows per layer, early layer first.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, List, Sequence, Tuple

import torch
from PIL import Image, ImageDraw
from torch import Tensor, nn

from .data import ImageTensors, TensorLoader
from .layers import ModeNorm2d

__all__ = ["mode_layers", "forward_in_eval", "collect_gates", "top_images_per_mode", "save_modes_figure"]


def mode_layers(model: nn.Module) -> List[Tuple[str, ModeNorm2d]]:
    """The model's MN layers (ModeNorm2d and ModeNorm1d) in forward-definition order."""
    return [(name, m) for name, m in model.named_modules() if isinstance(m, ModeNorm2d)]


def _pick(layers: List[Tuple[str, ModeNorm2d]], which: Sequence[str]) -> List[Tuple[str, ModeNorm2d]]:
    if not layers:
        raise ValueError("the model has no ModeNorm layer: the modes figure needs an MN model (*_mn)")
    names = [n for n, _ in layers]
    picked = []
    for w in which:
        if w == "first":
            picked.append(layers[0])
        elif w == "last":
            picked.append(layers[-1])
        elif w in names:
            picked.append(layers[names.index(w)])
        else:
            raise ValueError(f"unknown layer {w!r}: use 'first', 'last' or one of {names}")
    return picked


@torch.no_grad()
def forward_in_eval(model: nn.Module, data: ImageTensors, batch_size: int = 256) -> None:
    """Run all of ``data`` through ``model`` in eval mode, fed as eval feeds it (TensorLoader), for
    the hooks the caller has registered; the model's train/eval mode is restored afterwards."""
    was_training = model.training
    model.eval()
    try:
        device = next(model.parameters()).device
        for x, _, _ in TensorLoader(data, batch_size, shuffle=False, device=device):
            model(x)
    finally:
        model.train(was_training)


@torch.no_grad()
def collect_gates(model: nn.Module, data: ImageTensors, layer_names: Sequence[str],
                  batch_size: int = 256) -> Dict[str, Tensor]:
    """Gate values (N, K) of the named MN layers for every image of ``data`` (eval mode)."""
    modules = dict(model.named_modules())
    gates: Dict[str, List[Tensor]] = {n: [] for n in layer_names}
    hooks = []
    for name in layer_names:
        layer = modules[name]

        def hook(mod: ModeNorm2d, args: Tuple[Tensor], name: str = name) -> None:
            x = args[0]
            pooled = x.flatten(2).mean(2) if x.dim() > 2 else x
            gates[name].append(torch.softmax(mod.gate(pooled.float()), dim=1))
        hooks.append(layer.register_forward_pre_hook(hook))
    try:
        forward_in_eval(model, data, batch_size)
    finally:
        for h in hooks:
            h.remove()
    return {n: torch.cat(v) for n, v in gates.items()}


def top_images_per_mode(gates: Tensor, per_mode: int) -> Tensor:
    """Indices (K, per_mode) of the images with the highest gate value for each mode."""
    per_mode = min(per_mode, gates.shape[0])
    return gates.topk(per_mode, dim=0).indices.t()


def _tile(images: Tensor, scale: int) -> Image.Image:
    """uint8 (C, H, W) -> RGB PIL image, enlarged ``scale`` times (nearest neighbour)."""
    if images.shape[0] == 1:
        images = images.expand(3, -1, -1)
    img = Image.fromarray(images.permute(1, 2, 0).contiguous().numpy(), "RGB")
    return img.resize((img.width * scale, img.height * scale), Image.Resampling.NEAREST)


def save_modes_figure(model: nn.Module, data: ImageTensors, path: str | Path,
                      layers: Sequence[str] = ("first", "last"), per_mode: int = 10,
                      batch_size: int = 256, scale: int = 2) -> Dict[str, Dict[str, Any]]:
    """Write the Figure-3 PNG to ``path``; returns, per layer, K, the mean gate share of each
    mode over the data and the chosen image indices."""
    chosen = _pick(mode_layers(model), layers)
    gates = collect_gates(model, data, [n for n, _ in chosen], batch_size)
    _, _, h, w = data.images.shape
    cell_w, cell_h, label_w, pad = w * scale, h * scale, 170, 4
    rows = sum(m.num_modes for _, m in chosen)
    canvas = Image.new("RGB", (label_w + per_mode * (cell_w + pad), rows * (cell_h + pad) + len(chosen) * 18),
                       "white")
    draw = ImageDraw.Draw(canvas)
    y = 0
    summary: Dict[str, Dict[str, Any]] = {}
    for name, layer in chosen:
        g = gates[name]
        top = top_images_per_mode(g, per_mode)
        draw.text((2, y + 2), f"layer {name} (K={layer.num_modes})", fill="black")
        y += 18
        for k in range(layer.num_modes):
            draw.text((2, y + cell_h // 2 - 6), f"mode {k}: share {g[:, k].mean().item():.2f}", fill="black")
            for j, i in enumerate(top[k].tolist()):
                canvas.paste(_tile(data.images[i], scale), (label_w + j * (cell_w + pad), y))
            y += cell_h + pad
        summary[name] = {"num_modes": layer.num_modes, "share": g.mean(0).tolist(), "top": top.tolist()}
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    canvas.save(path)
    return summary
