"""Export a trained model into a Hub-ready weights folder, register it, check it, publish it.

One folder per weight, ``weights_cards/<arch>.<tag>/``, holding exactly what the Hub repo
``mnzoo/<arch>.<tag>`` holds: ``model.safetensors`` (no pickle), ``config.json`` (timm's format plus an
``mnzoo`` section with sha256, file size, parameter count and K) and ``README.md`` (the model card).
"""
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence, Union, cast

from torch import nn

from ..weights import (
    CONFIG_FILENAME, HUB_ORG, WEIGHTS_FILENAME, check_safetensors, load_manifest, manifest_path, sha256_file,
)
from .card import eval_sets, load_metrics, parse_front_matter, render_card

__all__ = ['export', 'register', 'check_weights_folder', 'publish', 'count_params', 'num_modes_of']

CARD_FILENAME = 'README.md'


def count_params(model: nn.Module) -> int:
    """Number of parameters (not buffers), the figure papers quote."""
    return sum(p.numel() for p in model.parameters())


def num_modes_of(model: nn.Module) -> Optional[int]:
    """K of the model's Mode Normalization layers (None if it has none; the largest if they differ)."""
    ks = {k for m in model.modules() if isinstance(k := getattr(m, 'num_modes', None), int)}
    return max(ks) if ks else None


def _name_of(model: nn.Module, tag: Optional[str]) -> str:
    cfg = getattr(model, 'pretrained_cfg', None) or {}
    arch = cfg.get('architecture')
    if not arch:
        raise ValueError('export needs a timm model (created with timm.create_model / mnzoo.create_model): '
                         'model.pretrained_cfg has no architecture.')
    if tag and cfg.get('tag') and tag != cfg['tag']:
        raise ValueError(
            f'model was created as {arch}.{cfg["tag"]} but is exported as {arch}.{tag}: its pretrained_cfg '
            f'(mean/std, labels, input size) would describe the wrong data. Create it as '
            f'"{arch}.{tag}" (timm.create_model / mnzoo.create_model) and load the trained state into it.')
    tag = tag or cfg.get('tag')
    if not tag:
        raise ValueError(f'export of {arch} needs tag= (the training dataset, e.g. "cifar10").')
    if '.' in tag or '/' in tag:
        raise ValueError(f'tag {tag!r} must not contain "." or "/".')
    return f'{arch}.{tag}'


def export(
        model: nn.Module,
        folder: Union[str, Path],
        metrics: Union[None, str, Path, Mapping[str, Any]] = None,
        recipe: Union[None, str, Path] = None,
        *,
        tag: Optional[str] = None,
        command: Optional[str] = None,
        license: Optional[str] = None,
        deviations: Optional[Sequence[str]] = None,
        limitations: Optional[Sequence[str]] = None,
        notes: Optional[str] = None,
        register: bool = False,
        manifest: Optional[Union[str, Path]] = None,
) -> Path:
    """Write ``model.safetensors``, ``config.json`` and ``README.md`` for ``model`` into ``folder``.

    Args:
        model: a timm model (its ``pretrained_cfg`` gives architecture, mean/std, input size, labels).
        folder: output folder, normally ``weights_cards/<arch>.<tag>``.
        metrics: the run's ``metrics.json`` (dict or path): top1/top5 per eval set, params, wall time,
            hardware, git commit, seed, epochs, command. Every number in the card comes from here.
        recipe: the recipe file used (path shown in the card); defaults to ``metrics['recipe']``.
        tag: weight tag (training dataset); defaults to ``model.pretrained_cfg['tag']``.
        command: the training command; defaults to ``metrics['command']``.
        register: also write the manifest entry (see ``register``).
    Returns:
        The folder.
    """
    from timm.models._hub import save_config_for_hf
    from safetensors.torch import save_file

    name = _name_of(model, tag)
    arch, tag = name.split('.', 1)
    metrics = load_metrics(metrics)
    num_params = count_params(model)
    recorded = metrics.get('params', metrics.get('num_params'))
    if recorded is not None and int(recorded) != num_params:
        raise ValueError(f'metrics record {recorded} parameters but the model has {num_params}: '
                         f'these metrics belong to a different model.')
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)

    state = {k: v.detach().to('cpu').contiguous() for k, v in model.state_dict().items()}
    weights_path = folder / WEIGHTS_FILENAME
    # one metadata key only: safetensors writes a map in arbitrary order, and the sha256 of
    # the file must not depend on it (the name is in config.json)
    save_file(state, str(weights_path), metadata={'format': 'pt'})
    sha, size = sha256_file(weights_path), weights_path.stat().st_size
    k = num_modes_of(model)
    cfg = dict(cast(Mapping[str, Any], model.pretrained_cfg))
    license = license or cfg.get('license') or 'apache-2.0'
    sets = eval_sets(metrics)
    mnzoo_section = {
        'name': name, 'sha256': sha, 'file_size': size, 'num_params': num_params, 'num_modes': k,
        'metrics': sets,
    }
    if metrics.get('eval_data'):
        # the run's eval sources (domain=path[@split], relative to the repo root), so that
        # `mnzoo eval <name> --data ...` can reproduce every number of the card
        mnzoo_section['eval_data'] = {k: list(v) for k, v in metrics['eval_data'].items()}
    from .. import __version__
    mnzoo_section['mnzoo_version'] = __version__
    save_config_for_hf(model, str(folder / CONFIG_FILENAME), model_config={
        'pretrained_cfg': {'tag': tag, 'license': license, 'paper_ids': 'arXiv:1810.05466'},
        'mnzoo': mnzoo_section,
    })
    recipe = recipe if recipe is not None else metrics.get('recipe')
    if isinstance(recipe, Mapping):
        recipe = recipe.get('path') or json.dumps(dict(recipe), sort_keys=True)
    card = render_card(
        name=name, num_params=num_params, num_modes=k, sha256=sha, file_size=size,
        pretrained_cfg=json.loads((folder / CONFIG_FILENAME).read_text())['pretrained_cfg'],
        metrics=metrics, recipe=str(recipe) if recipe else None, command=command or metrics.get('command'),
        license=license, deviations=list(deviations or metrics.get('deviations') or []),
        limitations=list(limitations or []), notes=notes)
    (folder / CARD_FILENAME).write_text(card, encoding='utf-8')
    if register:
        _register(folder, manifest=manifest)
    return folder


def _read_folder(folder: Path) -> Dict[str, Any]:
    config = json.loads((folder / CONFIG_FILENAME).read_text(encoding='utf-8'))
    front, _ = parse_front_matter((folder / CARD_FILENAME).read_text(encoding='utf-8'))
    return {'config': config, 'front': front}


def _card_metrics(front: Mapping[str, Any]) -> Dict[str, Dict[str, float]]:
    """``{dataset name: {metric type: value}}`` from the card's model-index."""
    out: Dict[str, Dict[str, float]] = {}
    for entry in front.get('model-index') or []:
        for res in entry.get('results') or []:
            ds = res.get('dataset', {}).get('name', '?')
            for m in res.get('metrics') or []:
                out.setdefault(ds, {})[m.get('type')] = m.get('value')
    return out


def register(folder: Union[str, Path], manifest: Optional[Union[str, Path]] = None) -> Dict[str, Any]:
    """Write (or refresh) the manifest entry of a weights folder; return the entry.

    The manifest defaults to ``mnzoo/weights_manifest.json`` (or ``$MNZOO_MANIFEST``). sha256 and file size
    are measured from the file, and must agree with what ``export`` wrote into config.json.
    """
    folder = Path(folder)
    problems = check_weights_folder(folder, manifest_entry=None, check_registry=False)
    if problems:
        raise ValueError(f'{folder} cannot be registered:\n  ' + '\n  '.join(problems))
    info = _read_folder(folder)
    mz = info['config']['mnzoo']
    entry = {
        'hf_hub_id': f'{HUB_ORG}/{folder.name}',
        'sha256': mz['sha256'], 'file_size': mz['file_size'], 'num_params': mz['num_params'],
        'num_modes': mz.get('num_modes'), 'num_classes': info['config'].get('num_classes'),
        'license': info['front'].get('license'), 'datasets': info['front'].get('datasets', []),
        'metrics': mz.get('metrics', {}),
    }
    path = Path(manifest) if manifest is not None else manifest_path()
    data = dict(load_manifest(path))
    data[folder.name] = entry
    path.write_text(json.dumps(dict(sorted(data.items())), indent=2, sort_keys=False) + '\n', encoding='utf-8')
    return entry


_register = register  # export's ``register=`` flag shadows the function name inside export


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, float) or isinstance(b, float):
        return isinstance(a, (int, float)) and isinstance(b, (int, float)) and math.isclose(a, b, rel_tol=1e-6)
    return a == b


def check_weights_folder(
        folder: Union[str, Path],
        manifest_entry: Optional[Mapping[str, Any]] = None,
        check_registry: bool = True,
) -> List[str]:
    """Every inconsistency of a weights folder, as readable strings (empty list = good).

    Checks: the three files exist; the file is valid safetensors whose sha256 and size match config.json
    (and the manifest entry, if given); the tensors load strictly into the registered architecture built
    from config.json and the parameter count matches; the card has Hub front matter with measured metrics
    that agree with config.json; with ``check_registry``, config.json matches the registry's pretrained cfg
    for ``<arch>.<tag>`` (classes, input size, mean/std, labels).
    """
    import timm
    from safetensors.torch import load_file
    from .. import models  # noqa: F401  (registers mnzoo's architectures in timm)

    folder = Path(folder)
    problems: List[str] = []
    for fname in (WEIGHTS_FILENAME, CONFIG_FILENAME, CARD_FILENAME):
        if not (folder / fname).is_file():
            problems.append(f'{folder}: missing {fname}')
    if problems:
        return problems
    name = folder.name
    if name.count('.') != 1:
        return [f'{folder}: folder name must be <arch>.<tag>']
    arch, tag = name.split('.')
    try:
        info = _read_folder(folder)
    except (json.JSONDecodeError, ValueError, UnicodeDecodeError) as e:
        return [f'{folder}: unreadable config.json or README.md front matter: {e}']
    config, front = info['config'], info['front']
    mz = config.get('mnzoo') or {}
    pcfg = config.get('pretrained_cfg') or {}
    if config.get('architecture') != arch:
        problems.append(f'{name}: config architecture {config.get("architecture")!r} != folder arch {arch!r}')
    if pcfg.get('tag') not in (None, tag):
        problems.append(f'{name}: config tag {pcfg.get("tag")!r} != folder tag {tag!r}')

    wpath = folder / WEIGHTS_FILENAME
    try:
        check_safetensors(wpath)
    except RuntimeError as e:
        return problems + [str(e)]
    sha, size = sha256_file(wpath), wpath.stat().st_size
    if mz.get('sha256') != sha:
        problems.append(f'{name}: sha256 of {WEIGHTS_FILENAME} is {sha}, config.json records {mz.get("sha256")}')
    if mz.get('file_size') != size:
        problems.append(f'{name}: file size {size} != config.json {mz.get("file_size")}')
    if manifest_entry is not None:
        for key, actual in (('sha256', sha), ('file_size', size), ('num_params', mz.get('num_params'))):
            if manifest_entry.get(key) != actual:
                problems.append(f'{name}: manifest {key} {manifest_entry.get(key)!r} != {actual!r}')
        if manifest_entry.get('metrics') != mz.get('metrics'):
            problems.append(f'{name}: manifest metrics differ from config.json metrics')

    if not timm.is_model(arch):
        problems.append(f'{name}: architecture {arch!r} is not registered in timm')
        return problems
    try:
        args = dict(config.get('model_args') or {})
        args.setdefault('num_classes', config.get('num_classes'))
        model = timm.create_model(arch, pretrained=False, **args)
        model.load_state_dict(load_file(str(wpath)), strict=True)
    except (RuntimeError, TypeError, ValueError) as e:
        problems.append(f'{name}: tensors do not load into {arch}: {str(e)[:500]}')
        return problems
    n = count_params(model)
    if mz.get('num_params') != n:
        problems.append(f'{name}: model has {n} parameters, config.json records {mz.get("num_params")}')
    if mz.get('num_modes') != num_modes_of(model):
        problems.append(f'{name}: model K={num_modes_of(model)}, config.json records {mz.get("num_modes")}')

    if front.get('library_name') != 'timm':
        problems.append(f'{name}: card front matter lacks library_name: timm')
    if not front.get('license'):
        problems.append(f'{name}: card front matter lacks a license')
    card = _card_metrics(front)
    if not card:
        problems.append(f'{name}: card has no measured metrics (model-index)')
    measured = mz.get('metrics') or {}
    card_values = sorted(v for d in card.values() for v in d.values())
    cfg_values = sorted(float(r[k]) for r in measured.values() for k in ('top1', 'top5') if r.get(k) is not None)
    if not _same(card_values, cfg_values):
        problems.append(f'{name}: card metrics {card_values} != config.json metrics {cfg_values}')

    if check_registry:
        from timm.models import get_pretrained_cfg
        try:
            reg = get_pretrained_cfg(name)
        except RuntimeError as e:
            reg = None
            problems.append(f'{name}: tag not in the registry ({e})')
        if reg is not None:
            for key in ('num_classes', 'input_size', 'mean', 'std', 'label_names', 'first_conv', 'classifier'):
                if getattr(reg, key, None) is not None and not _same(pcfg.get(key), getattr(reg, key)):
                    problems.append(f'{name}: config {key}={pcfg.get(key)!r} != registry {getattr(reg, key)!r}')
    return problems


def publish(
        folder: Union[str, Path],
        repo_id: str,
        endpoint: Optional[str] = None,
        token: Optional[str] = None,
        private: bool = False,
        commit_message: Optional[str] = None,
) -> str:
    """Push a weights folder to the Hub (``HfApi.create_repo`` + ``upload_folder``); return the commit URL.

    The folder is checked first (files present, sha256 matching config.json), so a broken export is never
    published. ``endpoint`` defaults to ``HF_ENDPOINT`` / huggingface.co.
    """
    from huggingface_hub import HfApi
    folder = Path(folder)
    problems = [p for p in check_weights_folder(folder, check_registry=False)
                if 'not registered' not in p]
    if problems:
        raise ValueError(f'refusing to publish {folder}:\n  ' + '\n  '.join(problems))
    from ..weights import hub_endpoint
    api = HfApi(endpoint=endpoint or hub_endpoint(), token=token)
    api.create_repo(repo_id, repo_type='model', private=private, exist_ok=True)
    info = api.upload_folder(
        folder_path=str(folder), repo_id=repo_id, repo_type='model',
        commit_message=commit_message or f'Upload {folder.name} with mnzoo.hub.publish',
        allow_patterns=[WEIGHTS_FILENAME, CONFIG_FILENAME, CARD_FILENAME])
    return str(getattr(info, 'commit_url', info))
