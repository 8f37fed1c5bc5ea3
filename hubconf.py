"""torch.hub entrypoints for mnzoo: one per registered architecture, generated from the registry.

    import torch
    model = torch.hub.load('<mnzoo checkout>', 'resnet20_mn', source='local', pretrained=True)
    model = torch.hub.load('<mnzoo checkout>', 'lenet_mn', source='local', tag='multidomain', num_modes=4)

``pretrained=True`` loads the sha256-verified weights: from ``weights_cards/<arch>.<tag>/`` in the
checkout when present (offline), else from the Hub repo ``mnzoo/<arch>.<tag>``.
"""
from typing import Any as _Any, Callable as _Callable, Optional as _Optional

dependencies = ['torch', 'torchvision', 'timm', 'huggingface_hub', 'safetensors', 'yaml']

from mnzoo._factory import create_model as _create_model  # noqa: E402
from mnzoo.models import MODEL_NAMES as _MODEL_NAMES  # noqa: E402


def _doc(arch: str) -> str:
    from timm.models import get_arch_pretrained_cfgs
    from mnzoo.weights import published
    cfgs = get_arch_pretrained_cfgs(arch)
    tags = [n.split('.', 1)[1] for n in cfgs]
    pub = [n for n in published() if n.split('.', 1)[0] == arch]
    lines = [
        f'``{arch}`` from mnzoo (Mode Normalization, arXiv:1810.05466), built with ``timm.create_model``.',
        '',
        'Args:',
        '    pretrained: load verified weights of ``tag`` (local weights_cards/ first, then the Hub).',
        f'    tag: pretrained tag, one of {", ".join(tags) or "none"} (default: {tags[0] if tags else "none"}).',
        '    **kwargs: model arguments, e.g. num_classes, in_chans, drop_rate'
        + (', num_modes (K)' if arch.endswith(('_mn', '_mgn')) else '') + '.',
        '',
        f'Published weights: {", ".join(pub) or "none yet"}.',
    ]
    for name, cfg in cfgs.items():
        lines.append(f'Tag {name.split(".", 1)[1]}: {cfg.num_classes} classes, input {tuple(cfg.input_size)}.')
    return '\n'.join(lines)


def _entrypoint(arch: str) -> _Callable[..., _Any]:
    def entry(pretrained: bool = False, tag: _Optional[str] = None, **kwargs: _Any):
        return _create_model(f'{arch}.{tag}' if tag else arch, pretrained=pretrained, **kwargs)
    entry.__name__ = entry.__qualname__ = arch
    entry.__doc__ = _doc(arch)
    return entry


for _arch in _MODEL_NAMES:
    globals()[_arch] = _entrypoint(_arch)
