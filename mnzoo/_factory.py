"""``mnzoo.create_model``: timm's factory with mnzoo's registry loaded and errors that help.

A thin wrapper: it imports the zoo (which registers every mnzoo architecture in timm), checks the name
and tag up front (suggesting close names), bounds the wait for an unreachable Hub, and then calls
``timm.create_model``. Anything ``timm.create_model`` accepts works here too.
"""
from __future__ import annotations

import difflib
from pathlib import Path
from typing import Any, List

from torch import nn

from .weights import WeightsNotFoundError, hub_offline_if_cached, published

__all__ = ['create_model', 'list_models', 'UnknownModelError']


class UnknownModelError(ValueError):
    """The model name or its pretrained tag is not registered."""


def _registry() -> List[str]:
    from . import models
    return list(models.MODEL_NAMES)


def list_models(pretrained: bool = False) -> List[str]:
    """mnzoo's architectures, or with ``pretrained=True`` the published ``<arch>.<tag>`` weights."""
    names = _registry()
    if not pretrained:
        return names
    return [n for n in published() if n.split('.', 1)[0] in names]


def _suggest(word: str, candidates: List[str]) -> str:
    close = difflib.get_close_matches(word, candidates, n=5, cutoff=0.6)
    return f' Did you mean: {", ".join(close)}?' if close else ''


def create_model(name: str, pretrained: bool = False, **kwargs: Any) -> nn.Module:
    """Create a model by name: ``'resnet20_mn'``, ``'resnet20_mn.cifar10'``, ``'hf-hub:org/repo'`` or
    ``'local-dir:<folder written by mnzoo.hub.export>'``.

    Raises ``UnknownModelError`` (with close-name suggestions) for an unknown architecture or tag, and the
    ``mnzoo.weights`` errors for weight problems (not published, sha256 mismatch, corrupt file, missing
    Hub repo, Hub unreachable within ``MNZOO_HUB_TIMEOUT`` seconds).
    """
    import timm
    from timm.models import get_arch_pretrained_cfgs, split_model_name_tag

    zoo = _registry()
    if not isinstance(name, str) or not name:
        raise UnknownModelError(f'model name must be a non-empty string, got {name!r}')
    if name.startswith(('hf-hub:', 'hf_hub:')):
        repo_rev = name.split(':', 1)[1]
        repo, _, rev = repo_rev.partition('@')
        from huggingface_hub.errors import EntryNotFoundError, RepositoryNotFoundError
        try:
            # a dead Hub fails within MNZOO_HUB_TIMEOUT s, unless the repo is cached (then: offline)
            with hub_offline_if_cached(repo, 'config.json', rev or None, kwargs.get('cache_dir')):
                return timm.create_model(name, pretrained=pretrained, **kwargs)
        except RepositoryNotFoundError as e:
            raise WeightsNotFoundError(f'Hub repo {repo!r} not found (missing or private).') from e
        except EntryNotFoundError as e:
            raise WeightsNotFoundError(f'Hub repo {repo!r} has no config.json; is it a timm model?') from e

    if name.startswith('local-dir:'):
        folder = Path(name.split(':', 1)[1])
        if not (folder / 'config.json').is_file():
            raise WeightsNotFoundError(f'{folder} is not a weights folder (no config.json); see mnzoo.hub.export.')
        return timm.create_model(name, pretrained=pretrained, **kwargs)

    arch, tag = split_model_name_tag(name)
    if not timm.is_model(arch):
        candidates = zoo + [m for m in timm.list_models() if m not in zoo]
        raise UnknownModelError(
            f'Unknown model {arch!r}.{_suggest(arch, candidates)} mnzoo models: {", ".join(zoo)}.')
    if tag:
        tags = sorted(n.split('.', 1)[1] for n in get_arch_pretrained_cfgs(arch))
        if tag not in tags:
            pub = [n for n in published() if n.split('.', 1)[0] == arch]
            raise UnknownModelError(
                f'Unknown tag {tag!r} for {arch}.{_suggest(tag, tags)} Registered tags: {", ".join(tags) or "none"};'
                f' with published weights: {", ".join(pub) or "none"}.')
    return timm.create_model(name, pretrained=pretrained, **kwargs)
