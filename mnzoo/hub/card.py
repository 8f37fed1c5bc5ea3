"""Model-card rendering: Hub YAML front matter plus a body built only from the numbers we are given.

The card never invents a number: measured metrics come from the training run's ``metrics.json`` (passed to
``export``), and the paper's numbers come from ``PAPER_RESULTS`` below, transcribed from the paper's tables
with the table named next to each.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple, Union

import yaml

__all__ = ['PAPER_RESULTS', 'BIBTEX', 'DATASETS', 'SCHEDULE_TAGS', 'load_metrics', 'eval_sets', 'dataset_label',
           'paper_rows', 'render_usage', 'render_reproduce', 'render_card', 'parse_front_matter']

PAPER = 'Mode Normalization (Deecke, Murray & Bilen, ICLR 2019, arXiv:1810.05466)'

BIBTEX = """@inproceedings{deecke2019mode,
  title     = {Mode Normalization},
  author    = {Deecke, Lucas and Murray, Iain and Bilen, Hakan},
  booktitle = {International Conference on Learning Representations (ICLR)},
  year      = {2019},
  eprint    = {1810.05466},
  archivePrefix = {arXiv},
  url       = {https://arxiv.org/abs/1810.05466}
}"""

#: tag -> (Hub dataset ids for the front matter, human name)
DATASETS: Dict[str, Tuple[List[str], str]] = {
    'cifar10': (['cifar10'], 'CIFAR-10'),
    'cifar100': (['cifar100'], 'CIFAR-100'),
    'multidomain': (['mnist', 'cifar10', 'fashion_mnist'], 'multi-domain (MNIST + CIFAR-10 + Fashion-MNIST)'),
    'multidomain_n8': (['mnist', 'cifar10', 'fashion_mnist'],
                       'multi-domain (MNIST + CIFAR-10 + Fashion-MNIST) with batches of 8'),
    'in1k': (['imagenet-1k'], 'ImageNet-1k (ILSVRC12)'),
    'mnist': (['mnist'], 'MNIST'),
    'fashion_mnist': (['fashion_mnist'], 'Fashion-MNIST'),
}

#: tags that name another training schedule on a tag's data -> (that tag, the schedule); their cards
#: compare with that tag's paper rows
SCHEDULE_TAGS: Dict[str, Tuple[str, str]] = {'cifar10_40ep': ('cifar10', '40-epoch schedule')}

# Paper numbers, as test error (%) = 100 - top-1 accuracy; (value, std or None, where, setting).
# Keys are '<arch>.<tag>'; LeNet MN rows are keyed by K as well.
PAPER_RESULTS: Dict[str, List[Dict[str, Any]]] = {}


def _add(name: str, err: float, where: str, setting: str, std: Optional[float] = None,
         metric: str = 'top1', num_modes: Optional[int] = None) -> None:
    PAPER_RESULTS.setdefault(name, []).append(
        dict(metric=metric, error=err, std=std, where=where, setting=setting, num_modes=num_modes))


_MD = '4 domains (MNIST, CIFAR-10, SVHN, Fashion-MNIST), 40 classes, N=128, mean of 5 runs'
_add('lenet_bn.multidomain', 26.91, 'Table 1', _MD, 1.08)
_add('lenet_in.multidomain', 28.87, 'Table 1', _MD, 2.28)
_add('lenet_ln.multidomain', 27.31, 'Table 1', _MD, 0.71)
_add('lenet_mn.multidomain', 23.16, 'Table 1', _MD + ', K=2', 1.23, num_modes=2)
_add('lenet_mn.multidomain', 24.25, 'Table 1', _MD + ', K=4', 0.71, num_modes=4)
_add('lenet_mn.multidomain', 25.12, 'Table 1', _MD + ', K=6', 1.48, num_modes=6)
_N8 = '4 domains, 40 classes, N=8, 50k updates, mean of 5 runs'
_add('lenet_bn.multidomain_n8', 31.98, 'Table 2', _N8, 1.53)
_add('lenet_mn.multidomain_n8', 29.05, 'Table 2', _N8 + ', K=2', 1.51, num_modes=2)
_add('lenet_gn.multidomain_n8', 28.60, 'Table 2', _N8 + ', 2 groups', 1.45)
_add('lenet_mgn.multidomain_n8', 26.83, 'Table 2', _N8 + ', K=2', 1.34, num_modes=2)
for _ds, _name, _vals in (('cifar10', 'CIFAR-10', (8.82, 8.42, 8.28, 7.79, 8.44, 7.99, 6.87, 6.47)),
                          ('cifar100', 'CIFAR-100', (32.30, 31.66, 31.15, 30.06, 32.24, 31.52, 29.70, 28.69))):
    _add(f'nin_bn.{_ds}', _vals[0], 'Table 3', f'NIN + BN, {_name}, 100 epochs')
    _add(f'nin_mn.{_ds}', _vals[1], 'Table 3', f'NIN + MN (K=2), {_name}, 100 epochs', num_modes=2)
    _add(f'vgg13_cifar_bn.{_ds}', _vals[2], 'Table 3', f'VGG13 + BN, {_name}, 100 epochs')
    _add(f'vgg13_cifar_mn.{_ds}', _vals[3], 'Table 3', f'VGG13 + MN (K=2), {_name}, 100 epochs', num_modes=2)
    _add(f'resnet20_bn.{_ds}', _vals[4], 'Table 4', f'ResNet20 + BN, {_name}, 160 epochs')
    _add(f'resnet20_mn.{_ds}', _vals[5], 'Table 4', f'ResNet20 + MN (K=2), {_name}, 160 epochs', num_modes=2)
    _add(f'resnet56_bn.{_ds}', _vals[6], 'Table 4', f'ResNet56 + BN, {_name}, 160 epochs')
    _add(f'resnet56_mn.{_ds}', _vals[7], 'Table 4', f'ResNet56 + MN (K=2), {_name}, 160 epochs', num_modes=2)
_add('resnet18_mn.in1k', 30.07, 'Table 5', 'ResNet18 + MN (K=2), ILSVRC12 val, 90 epochs', num_modes=2)
_add('resnet18_mn.in1k', 10.65, 'Table 5', 'ResNet18 + MN (K=2), ILSVRC12 val, 90 epochs', metric='top5',
     num_modes=2)


# ---------------------------------------------------------------------------------------------- metrics

def load_metrics(metrics: Union[None, str, Path, Mapping[str, Any]]) -> Dict[str, Any]:
    """Accept the training run's metrics as a dict or a path to ``metrics.json``."""
    if metrics is None:
        return {}
    if isinstance(metrics, (str, Path)):
        path = Path(metrics)
        if not path.is_file():
            raise FileNotFoundError(f'metrics file {path} does not exist')
        return json.loads(path.read_text(encoding='utf-8'))
    if not isinstance(metrics, Mapping):
        raise TypeError(f'metrics must be a dict or a path to metrics.json, got {type(metrics).__name__}')
    return dict(metrics)


def _is_result(v: Any) -> bool:
    return isinstance(v, Mapping) and ('top1' in v or 'top5' in v)


def eval_sets(metrics: Mapping[str, Any]) -> Dict[str, Dict[str, Any]]:
    """Per-eval-set results ``{set name: {'top1': .., 'top5': .., ...}}`` from a metrics.json dict.

    Accepts ``{'eval': {name: {...}}}`` (also ``eval_sets`` / ``results``), top-level ``{name: {'top1': ..}}``
    entries, or flat ``{'top1': .., 'top5': ..}`` (named by ``eval_set`` or ``'test'``).
    """
    for key in ('eval', 'eval_sets', 'results'):
        block = metrics.get(key)
        if isinstance(block, Mapping):  # the run says where its results are: use only those
            return {str(k): dict(v) for k, v in block.items() if _is_result(v)}
    # 'best' is the best-epoch checkpoint's score, not the exported weights': never report it as a result
    nested = {str(k): dict(v) for k, v in metrics.items() if _is_result(v) and k != 'best'}
    if nested:
        return nested
    if 'top1' in metrics or 'top5' in metrics:
        return {str(metrics.get('eval_set', 'test')): {k: metrics[k] for k in ('top1', 'top5') if k in metrics}}
    return {}


def _first(metrics: Mapping[str, Any], *keys: str) -> Any:
    for k in keys:
        if metrics.get(k) is not None:
            return metrics[k]
    return None


def _dataset(tag: str) -> Tuple[List[str], str]:
    """(Hub dataset ids, human name) of a tag's training data; a schedule tag has its data tag's."""
    data_tag = SCHEDULE_TAGS.get(tag, (tag,))[0]
    return DATASETS.get(data_tag, ([], data_tag))


def dataset_label(tag: str) -> str:
    """The human name of a tag's training data, with the schedule where the tag names one."""
    name = _dataset(tag)[1]
    return f'{name} ({SCHEDULE_TAGS[tag][1]})' if tag in SCHEDULE_TAGS else name


def paper_rows(name: str, num_modes: Optional[int]) -> List[Dict[str, Any]]:
    """Paper results for ``<arch>.<tag>`` (matching K where the paper varies it)."""
    arch, _, tag = name.partition('.')
    rows = PAPER_RESULTS.get(f'{arch}.{SCHEDULE_TAGS.get(tag, (tag,))[0]}', [])
    return [r for r in rows if r['num_modes'] is None or num_modes is None or r['num_modes'] == num_modes]


# ---------------------------------------------------------------------------------------------- rendering

def _fmt(v: Any, nd: int = 2) -> str:
    if isinstance(v, float):
        return f'{v:.{nd}f}'
    return '–' if v is None else str(v)


def _duration(seconds: Any) -> str:
    if not isinstance(seconds, (int, float)):
        return _fmt(seconds)
    h, rem = divmod(int(round(seconds)), 3600)
    return f'{seconds:.0f} s ({h} h {rem // 60:02d} min)'


def _hardware(hw: Any) -> Any:
    """A one-line hardware description; train.py records a dict (device, cpu, gpu, world size, versions)."""
    if not isinstance(hw, Mapping):
        return hw
    skip = {'load_avg_at_start'}
    parts = [f'{k.replace("_", " ")} {v}' for k, v in hw.items()
             if k not in skip and v not in (None, '', []) and not isinstance(v, (Mapping, list, tuple))]
    return ', '.join(parts) or None


def _segments(metrics: Mapping[str, Any]) -> List[str]:
    """A table of the processes of a resumed run (train.py's ``segments``): which epochs ran on
    which commit and machine. Empty for a run made in one go."""
    segments = metrics.get('segments') or []
    if len(segments) < 2:
        return []
    out = ['', 'The run was made in segments (stopped and resumed from its last checkpoint):', '',
           '| epochs | started (UTC) | git commit | hardware |', '|---|---|---|---|']
    for seg in segments:
        commits = [seg['git_commit']] if seg.get('recorded', True) else seg.get('git_commits') or []
        out.append(f'| {seg["first_epoch"]}-{seg["last_epoch"]} | {seg.get("started_utc") or "not recorded"} | '
                   f'{", ".join(f"`{c}`" for c in commits if c) or "not recorded"} | '
                   f'{_hardware(seg.get("hardware")) or "not recorded"} |')
    return out


def parse_front_matter(text: str) -> Tuple[Dict[str, Any], str]:
    """Split a card into (YAML front matter dict, body)."""
    if not text.startswith('---\n'):
        return {}, text
    end = text.index('\n---\n', 4)
    return yaml.safe_load(text[4:end]) or {}, text[end + 5:]


def _front_matter(name: str, license: str, datasets: List[str], tags: List[str],
                  sets: Dict[str, Dict[str, Any]], dataset_name: str) -> Dict[str, Any]:
    fm: Dict[str, Any] = {'library_name': 'timm', 'license': license, 'pipeline_tag': 'image-classification'}
    if datasets:
        fm['datasets'] = datasets
    fm['tags'] = tags
    results = []
    for set_name, res in sets.items():
        metrics = []
        for key, label in (('top1', 'top-1 accuracy'), ('top5', 'top-5 accuracy')):
            if res.get(key) is not None:
                metrics.append({'type': 'accuracy' if key == 'top1' else 'top_5_accuracy', 'name': label,
                                'value': float(res[key])})
        if metrics:
            results.append({
                'task': {'type': 'image-classification', 'name': 'Image Classification'},
                'dataset': {'type': datasets[0] if datasets else set_name,
                            'name': f'{dataset_name}: {set_name}', 'split': 'test'},
                'metrics': metrics,
            })
    if results:
        fm['model-index'] = [{'name': name, 'results': results}]
    return fm


def _epochs(metrics: Mapping[str, Any]) -> Any:
    """Epochs, with the updates behind them when the last epoch was partial (schedules set in
    updates or data touches)."""
    epochs = _first(metrics, 'epochs')
    updates, batch, images = (metrics.get(k) for k in ('updates', 'batch_size', 'train_images'))
    per_epoch = images // batch if images and batch else 0  # train.py drops the last short batch
    if epochs and updates and per_epoch and updates < epochs * per_epoch:
        return (f'{epochs}, the last one partial ({updates:,} updates of batch {batch} = '
                f'{updates / per_epoch:.2f} epochs)')
    return epochs


def _is_multidomain(tag: str) -> bool:
    return tag.startswith('multidomain')


def render_usage(name: str) -> str:
    """The card's Usage section for ``<arch>.<tag>``: load, preprocess one image as the card's numbers
    were measured, classify. Multi-domain weights normalise each domain with its own statistics, which
    timm's ``create_transform`` cannot know, so their cards use ``mnzoo.data.domain_transform``."""
    arch, _, tag = name.partition('.')
    lines = ['## Usage', '', '```python', 'import timm, torch, mnzoo  # importing mnzoo registers its models in timm',
             'from PIL import Image', '',
             f"model = timm.create_model('{name}', pretrained=True).eval()",
             f"# or from the Hub repo: timm.create_model('hf-hub:mnzoo/{name}', pretrained=True)",
             f"# or: torch.hub.load('<mnzoo checkout>', '{arch}', source='local', tag='{tag}', pretrained=True)", '']
    if _is_multidomain(tag):
        lines += ["# each domain has its own mean/std, and grey 28 x 28 images are zero-padded to 3 x 32 x 32, as in",
                  "# training: name the image's domain (mnist, cifar10, svhn or fashion_mnist)",
                  'from mnzoo.data import domain_transform',
                  "transform = domain_transform('mnist')",
                  "image = Image.open('digit.png')"]
        cli = f'mnzoo predict {name} digit.png --domain mnist'
    else:
        lines += ["# timm's eval preprocessing, from the model's pretrained_cfg (input size, mean/std above)",
                  'config = timm.data.resolve_model_data_config(model)',
                  'transform = timm.data.create_transform(**config, is_training=False)',
                  "image = Image.open('image.png').convert('RGB')"]
        cli = f'mnzoo predict {name} image.png'
    lines += ['with torch.inference_mode():',
              '    probs = model(transform(image).unsqueeze(0)).softmax(dim=1)[0]',
              "labels = model.pretrained_cfg['label_names']",
              'print([(labels[int(i)], round(float(p), 4)) for p, i in zip(*probs.topk(5), strict=True)])', '```', '',
              f'From the command line: `{cli}`; to measure accuracy on a labelled set: `mnzoo eval {name} --data ...`.',
              '']
    return '\n'.join(lines)


def render_reproduce(name: str, eval_data: Mapping[str, Sequence[str]]) -> str:
    """The commands that give each eval set's numbers of the card exactly (``mnzoo eval`` on the
    run's own eval sources; mnzoo's tests run them for every published weight)."""
    lines = ['To reproduce each row exactly (the data paths are where the run read them, `../shared/data` beside',
             'an mnzoo checkout; give your own copies\' paths):', '', '```bash']
    lines += [f'mnzoo eval {name} --data {" ".join(specs)}   # {set_name}' for set_name, specs in eval_data.items()]
    return '\n'.join(lines + ['```'])


def render_card(
        *,
        name: str,
        num_params: int,
        num_modes: Optional[int],
        sha256: str,
        file_size: int,
        pretrained_cfg: Mapping[str, Any],
        metrics: Mapping[str, Any],
        recipe: Optional[str] = None,
        command: Optional[str] = None,
        license: str = 'apache-2.0',
        deviations: Optional[List[str]] = None,
        limitations: Optional[List[str]] = None,
        notes: Optional[str] = None,
) -> str:
    """The README.md model card for one exported weight ``<arch>.<tag>``."""
    arch, _, tag = name.partition('.')
    ds_ids, ds_name = _dataset(tag)
    sets = eval_sets(metrics)
    norm = arch.rsplit('_', 1)[-1]
    tags = ['image-classification', 'timm', 'mnzoo', 'mode-normalization', f'norm-{norm}', 'arxiv:1810.05466']
    fm = _front_matter(name, license, ds_ids, tags, sets, ds_name)
    in_size = tuple(pretrained_cfg.get('input_size') or ())
    labels = pretrained_cfg.get('label_names')
    layer_name = 'Mode Group Normalization' if norm == 'mgn' else 'Mode Normalization'
    k_text = (f'{num_modes} ({layer_name} with K={num_modes})' if num_modes
              else 'none (no Mode Normalization layers; a baseline)')

    out: List[str] = ['---', yaml.safe_dump(fm, sort_keys=False).rstrip(), '---', '', f'# {name}', '']
    out += [f'`{arch}` trained on {dataset_label(tag)}, from the mnzoo model zoo for {PAPER}.', '']
    if notes:
        out += [notes.strip(), '']
    out += ['## Model details', '',
            f'- **Architecture:** `{arch}` (normalisation `{norm}`)',
            f'- **Modes K:** {k_text}',
            f'- **Parameters:** {num_params:,}',
            f'- **Input:** {" x ".join(str(s) for s in in_size)}, ' + (
                "each image normalised with its own domain's mean/std (`mnzoo.data.DOMAINS`); grey 28 x 28 "
                'images zero-padded to 32 x 32 and repeated to 3 channels' if _is_multidomain(tag) else
                f'mean {tuple(pretrained_cfg.get("mean", ()))}, std {tuple(pretrained_cfg.get("std", ()))}'),
            f'- **Classes:** {pretrained_cfg.get("num_classes")}'
            + (f' ({", ".join(map(str, labels[:12]))}{", ..." if len(labels) > 12 else ""})' if labels else ''),
            f'- **Weights:** `model.safetensors`, {file_size:,} bytes, sha256 `{sha256}`',
            f'- **Licence:** {license}', '']
    out += [render_usage(name)]
    out += ['## Training', '']
    facts = [('Recipe', recipe and f'`{recipe}`'), ('Seed', _first(metrics, 'seed')),
             ('Epochs', _epochs(metrics)), ('Hardware', _hardware(_first(metrics, 'hardware'))),
             ('Wall time', _first(metrics, 'wall_time_s', 'wall_time') is not None
              and ('at least ' if metrics.get('wall_time_lower_bound') else '')
              + _duration(_first(metrics, 'wall_time_s', 'wall_time'))),
             ('Git commit', _first(metrics, 'git_commit') and f"`{_first(metrics, 'git_commit')}`")]
    for label, value in facts:
        out.append(f'- **{label}:** {"not recorded" if value is None or value is False else value}')
    out += _segments(metrics)
    commands = [str(c) for c in metrics.get('commands') or []] or [command or 'not recorded']
    if command and command not in commands:
        commands = [command]
    out += ['', 'Command' + ('s (the run was resumed; in order):' if len(commands) > 1 else ':'), '', '```bash',
            *commands, '```', '']
    out += ['## Results', '']
    if sets:
        out += ['| eval set | top-1 (%) | top-5 (%) | images |', '|---|---|---|---|']
        for set_name, res in sets.items():
            out.append(f'| {set_name} | {_fmt(res.get("top1"))} | {_fmt(res.get("top5"))} | '
                       f'{_fmt(_first(res, "num_samples", "count", "n"))} |')
        for set_name, res in sets.items():
            per = res.get('top1_per_domain')
            if isinstance(per, Mapping) and per:
                out += ['', f'Top-1 (%) per domain on {set_name}: '
                        + ', '.join(f'{d} {_fmt(v)}' for d, v in per.items()) + '.']
        if metrics.get('eval_data'):
            out += ['', render_reproduce(name, metrics['eval_data'])]
    else:
        out.append('No measured results were supplied for this export.')
    rows = paper_rows(name, num_modes)
    out += ['', '### The paper', '']
    if rows:
        out += ['| source | setting | metric | paper error (%) | paper accuracy (%) |', '|---|---|---|---|---|']
        for r in rows:
            std = f' ± {r["std"]:.2f}' if r['std'] is not None else ''
            out.append(f'| {r["where"]} | {r["setting"]} | {r["metric"]} | {r["error"]:.2f}{std} | '
                       f'{100 - r["error"]:.2f} |')
    else:
        out.append('The paper reports no result for this architecture and dataset.')
    out += ['', '## Deviations from the paper', '']
    out += [f'- {d}' for d in deviations] if deviations else ['None recorded.']
    out += ['', '## Limitations', '']
    default_lim = [
        'Accuracy is measured on the eval sets listed above only; other data distributions may differ.',
        'GN and MGN keep no running statistics: outputs are the same in train and eval mode, and each sample '
        'is normalised on its own, so batch size does not matter at inference.'
        if norm in ('gn', 'mgn') else
        'MN keeps K sets of running statistics; like BN, eval-mode outputs depend on them, so fine-tuning with '
        'very small batches can degrade them.',
    ]
    out += [f'- {x}' for x in list(limitations or []) + default_lim]
    out += ['', '## Citation', '', '```bibtex', BIBTEX, '```', '']
    return '\n'.join(out)
