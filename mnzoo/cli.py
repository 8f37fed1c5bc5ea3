"""The ``mnzoo`` command: list, info, eval, predict, modes, histograms, export, register, check, table, publish.

Model names are anything ``mnzoo.create_model`` accepts: ``resnet20_mn``, ``resnet20_mn.cifar10``,
``hf-hub:mnzoo/resnet20_mn.cifar10`` or ``local-dir:weights_cards/resnet20_mn.cifar10``.
Errors are printed as one ``mnzoo: error: ...`` line and exit with status 2.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Dict, Iterable, List, Optional, Sequence, Tuple

if TYPE_CHECKING:  # torch and timm load lazily, so that `mnzoo --help` and errors are quick
    import torch
    from torch import Tensor

    from .data import ImageTensors

    Batches = Iterable[Tuple[Tensor, Tensor, Tensor]]  # (images, labels, domain indices)

# a timm model: an nn.Module with pretrained_cfg, num_classes and the rest of timm's contract, whose
# attributes nn.Module's typing cannot see
Model = Any

__all__ = ['main', 'build_parser']


def _int_at_least(minimum: int) -> Callable[[str], int]:
    """An argparse type: an int >= minimum, with an error that names the bound."""
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f'expected an integer, got {text!r}') from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f'must be >= {minimum}, got {value}')
        return value
    parse.__name__ = f'int >= {minimum}'
    return parse


def _log(msg: str) -> None:
    print(msg, file=sys.stderr)


# ---------------------------------------------------------------------------------------------- helpers

def _create(name: str, pretrained: bool, checkpoint: Optional[str] = None, use_ema: bool = False,
            **kwargs: Any) -> Model:
    from ._factory import create_model
    model = create_model(name, pretrained=pretrained and not checkpoint, **kwargs)
    if checkpoint:
        from timm.models import load_checkpoint
        if not Path(checkpoint).is_file():
            raise FileNotFoundError(f'checkpoint {checkpoint} does not exist')
        # weights_only: never unpickle arbitrary objects from a checkpoint file
        load_checkpoint(model, checkpoint, use_ema=use_ema, weights_only=True)
    return model.eval()


def _model_kwargs(args: argparse.Namespace) -> Dict[str, Any]:
    kw: Dict[str, Any] = {}
    if getattr(args, 'num_modes', None) is not None:
        kw['num_modes'] = args.num_modes
    if getattr(args, 'num_classes', None) is not None:
        kw['num_classes'] = args.num_classes
    return kw


def _transform(model: Model) -> Callable[[Any], Tensor]:
    from timm.data import create_transform, resolve_data_config
    return create_transform(**resolve_data_config({}, model=model), is_training=False)


def _labels(model: Model) -> List[str]:
    names = (getattr(model, 'pretrained_cfg', None) or {}).get('label_names')
    n = model.num_classes
    return list(names) if names and len(names) == n else [str(i) for i in range(n)]


# ---------------------------------------------------------------------------------------------- commands

def cmd_list(args: argparse.Namespace) -> int:
    import fnmatch
    from ._factory import list_models
    from .weights import get_entry
    names = list_models(pretrained=args.pretrained)
    if args.filter:
        names = [n for n in names if fnmatch.fnmatch(n, args.filter)]
    for n in names:
        if args.pretrained:
            entry = get_entry(n)
            sets = entry.metrics if entry is not None else {}
            best = ', '.join(f'{k} top-1 {v["top1"]:.2f}' for k, v in sets.items() if 'top1' in v)
            print(f'{n}\t{best}' if best else n)
        else:
            print(n)
    if not names:
        _log('no published weights yet' if args.pretrained else 'no models match')
    return 0


def cmd_info(args: argparse.Namespace) -> int:
    from timm.models import get_arch_pretrained_cfgs, split_model_name_tag
    from .hub import count_params, num_modes_of
    from .weights import get_entry, published, weights_dir
    model = _create(args.name, pretrained=False, **_model_kwargs(args))
    cfg = model.pretrained_cfg
    arch = cfg.get('architecture') or split_model_name_tag(args.name)[0]
    name = f'{arch}.{cfg["tag"]}' if cfg.get('tag') else arch
    entry = get_entry(name)
    info: Dict[str, Any] = {
        'name': name, 'architecture': arch, 'class': type(model).__name__,
        'num_params': count_params(model), 'num_modes': num_modes_of(model),
        'num_classes': model.num_classes, 'input_size': cfg.get('input_size'),
        'mean': cfg.get('mean'), 'std': cfg.get('std'),
        'tags': sorted(n.split('.', 1)[1] for n in get_arch_pretrained_cfgs(arch)),
        'published': [n for n in published() if n.split('.', 1)[0] == arch],
        'paper': cfg.get('paper_ids'), 'license': cfg.get('license'),
    }
    if entry is not None:
        local = weights_dir() / name
        info.update(hf_hub_id=entry.hf_hub_id, sha256=entry.sha256, file_size=entry.file_size,
                    metrics=entry.metrics, local_folder=str(local) if local.is_dir() else None)
    if args.json:
        print(json.dumps(info, indent=2, default=list))
        return 0
    for k, v in info.items():
        if k == 'metrics':  # one line per eval set, as in the card
            for i, (set_name, res) in enumerate(v.items()):
                print(f'{"" if i else k:12s} {set_name}: top-1 {res["top1"]:.2f} %, top-5 {res["top5"]:.2f} % '
                      f'({res["n"]} images)')
            continue
        print(f'{k:12s} {v if not isinstance(v, (list, tuple)) else ", ".join(map(str, v)) or "-"}')
    return 0


def _dataset(path: str, model: Model) -> Tuple[Any, Dict[int, int]]:
    """ImageFolder dir or ImageFolder-in-tar, with targets mapped onto the model's label order by name."""
    from timm.data import create_dataset
    p = Path(path)
    if not p.exists():
        hint = ''
        if '@' in path and Path(path.rsplit('@', 1)[0]).exists():
            hint = f'; for a split of a dataset name its domain: --data <domain>={path} (e.g. mnist={path})'
        raise FileNotFoundError(f'--data {path}: no such file or folder{hint}')
    ds = create_dataset('', root=str(p), transform=_transform(model))
    reader = ds.reader
    class_to_idx = getattr(reader, 'class_to_idx', None) or getattr(reader, 'class_name_to_idx', None) or {}
    if not class_to_idx or len(ds) == 0:
        raise ValueError(f'--data {path} holds no <class>/<image> files')
    labels = _labels(model)
    if set(class_to_idx) <= set(labels):
        remap = {i: labels.index(c) for c, i in class_to_idx.items()}
    elif len(class_to_idx) <= model.num_classes:
        _log(f'note: class folders {sorted(class_to_idx)[:5]}... do not match the model labels; using folder order')
        remap = {i: i for i in class_to_idx.values()}
    else:
        raise ValueError(f'--data {path} has {len(class_to_idx)} classes, the model predicts {model.num_classes}')
    return ds, remap


def _is_multidomain(model: Model) -> bool:
    from .data import multidomain_classes
    cfg = getattr(model, 'pretrained_cfg', None) or {}
    names = cfg.get('label_names')
    return (str(cfg.get('tag', '')).startswith('multidomain')
            or (names is not None and list(names) == multidomain_classes()))


def _batches_from_sources(args: argparse.Namespace, model: Model,
                          device: torch.device) -> Tuple[Any, List[str]]:
    """``domain=path[@split]`` sources through mnzoo.data, exactly as training/validate.py reads them
    (uint8 cache, per-domain normalisation, multi-domain label offsets): yields (x, y, domain)."""
    from .data import TensorLoader, build_dataset
    data = build_dataset(args.data, multidomain=_is_multidomain(model))
    if data.num_classes > model.num_classes:
        raise ValueError(f'--data has {data.num_classes} classes, the model predicts {model.num_classes}')
    if args.limit:
        import torch
        data = data.subset(torch.arange(min(args.limit, len(data))))
    return TensorLoader(data, args.batch_size, shuffle=False, device=device), list(data.domain_names)


def _batches_from_folder(args: argparse.Namespace, model: Model) -> Tuple[Batches, int]:
    """One ImageFolder dir or ImageFolder-in-tar through timm, with the model's own preprocessing."""
    import torch
    if len(args.data) != 1:
        raise ValueError('--data takes one ImageFolder path, or domain=path[@split] sources')
    ds, remap = _dataset(args.data[0], model)
    if args.limit:
        ds = torch.utils.data.Subset(ds, range(min(args.limit, len(ds))))
    loader = torch.utils.data.DataLoader(ds, batch_size=args.batch_size, num_workers=args.workers, shuffle=False)
    lut = torch.tensor([remap.get(i, i) for i in range(max(remap, default=0) + 1)])
    return ((x, lut[y], torch.zeros_like(y)) for x, y in loader), len(loader)


def cmd_eval(args: argparse.Namespace) -> int:
    import torch
    from tqdm import tqdm
    model = _create(args.name, pretrained=not args.random_init, checkpoint=args.checkpoint, **_model_kwargs(args))
    device = torch.device(args.device)
    model.to(device)
    if any('=' in d for d in args.data):
        loader, domains = _batches_from_sources(args, model, device)
        total = len(loader)
    elif _is_multidomain(model):
        # a plain folder would go through timm's transform: the fallback mean/std and a resize, not
        # the per-domain statistics and padding the model was trained with
        raise ValueError(f'{args.name} normalises each domain with its own statistics: name the domain of '
                         f'the data, --data <domain>=PATH[@split] (domains: mnist, cifar10, svhn, fashion_mnist)')
    else:
        loader, total = _batches_from_folder(args, model)
        domains = ['all']
    k = min(5, model.num_classes)
    n = c5 = 0
    hits = torch.zeros(len(domains), dtype=torch.float64)
    counts = torch.zeros(len(domains), dtype=torch.float64)
    with torch.inference_mode():
        for x, y, d in tqdm(loader, total=total, desc=f'eval {args.name}', unit='batch', file=sys.stderr,
                            disable=args.quiet):
            x, y, d = x.to(device), y.to(device), d.to(device)
            top = model(x).topk(k, dim=1).indices
            hit1 = (top[:, 0] == y).double()
            c5 += (top == y[:, None]).any(dim=1).sum().item()
            hits += torch.bincount(d, weights=hit1, minlength=len(domains)).cpu()
            counts += torch.bincount(d, minlength=len(domains)).double().cpu()
            n += y.numel()
    if n == 0:
        raise ValueError(f'--data {" ".join(args.data)} holds no images')
    res = {'model': args.name, 'data': ' '.join(args.data), 'num_samples': n,
           'top1': round(100.0 * float(hits.sum()) / n, 4), 'top5': round(100.0 * c5 / n, 4)}
    if len(domains) > 1:
        res['top1_per_domain'] = {dom: round(100.0 * float(hits[i] / counts[i]), 4)
                                  for i, dom in enumerate(domains) if counts[i] > 0}
    if args.json:
        print(json.dumps(res))
    else:
        per = ''.join(f'\n  {dom}: top-1 {v:.2f} %' for dom, v in res.get('top1_per_domain', {}).items())
        print(f'{args.name} on {res["data"]}: top-1 {res["top1"]:.2f} %  top-5 {res["top5"]:.2f} %  '
              f'({n} images){per}')
    return 0


def _seeded_subset(data: ImageTensors, limit: Optional[int]) -> ImageTensors:
    """``limit`` images of ``data`` drawn at random with seed 0 (all of them for None or 0)."""
    import torch
    if not limit:
        return data
    return data.subset(torch.randperm(len(data), generator=torch.Generator().manual_seed(0))[:limit])


def _domain_sources(args: argparse.Namespace) -> None:
    if not all('=' in d for d in args.data):
        raise ValueError(f'{args.command} reads domain=path[@split] sources (as training does), '
                         f'got {" ".join(args.data)}')


def cmd_modes(args: argparse.Namespace) -> int:
    """The paper's Figure 3 for an MN model: per mode, the images its gate claims most strongly."""
    from .data import build_dataset
    from .modes import save_modes_figure
    model = _create(args.name, pretrained=not args.random_init, checkpoint=args.checkpoint,
                    **_model_kwargs(args))
    _domain_sources(args)
    data = _seeded_subset(build_dataset(args.data, multidomain=_is_multidomain(model)), args.limit)
    summary = save_modes_figure(model, data, args.out, layers=args.layers, per_mode=args.per_mode)
    for name, info in summary.items():
        share = ', '.join(f'{v:.2f}' for v in info['share'])
        print(f'{name}: K={info["num_modes"]}, mean gate share per mode {share}')
    print(args.out)
    return 0


def cmd_histograms(args: argparse.Namespace) -> int:
    """The paper's Figure 2: one norm layer's channel histograms before and after, one row per model."""
    from .data import build_dataset
    from .histograms import save_histograms_figure
    _domain_sources(args)
    rows = []
    for name in args.names:
        model = _create(name, pretrained=not args.random_init)
        rows.append((name, model, _seeded_subset(build_dataset(args.data, multidomain=_is_multidomain(model)),
                                                 args.limit)))
    summary = save_histograms_figure(rows, args.out, layer=args.layer, channels=args.channels)
    if args.json:
        print(json.dumps(summary))
        return 0
    for label, info in summary.items():
        print(f'{label}: layer {info["layer"]} ({info["type"]})')
        for ch, b, a in zip(info['channels'], info['before'], info['after'], strict=True):
            print(f'  channel {ch}: bimodality {b["bimodality"]:.2f} -> {a["bimodality"]:.2f}, '
                  f'std {b["std"]:.3f} -> {a["std"]:.3f}')
    print(args.out)
    return 0


def cmd_predict(args: argparse.Namespace) -> int:
    import torch
    from PIL import Image
    model = _create(args.name, pretrained=not args.random_init, checkpoint=args.checkpoint, **_model_kwargs(args))
    if args.domain:
        from .data import domain_transform
        tf = domain_transform(args.domain, multidomain=_is_multidomain(model))
    elif _is_multidomain(model):
        raise ValueError(f'{args.name} normalises each domain with its own statistics: pass --domain '
                         f'(mnist, cifar10, svhn or fashion_mnist)')
    else:
        tf = _transform(model)
    labels = _labels(model)
    k = min(args.topk, model.num_classes)
    out = []
    for path in args.images:
        if not Path(path).is_file():
            raise FileNotFoundError(f'image {path} does not exist')
        with Image.open(path) as im:
            x = tf(im if args.domain else im.convert('RGB')).unsqueeze(0)
        with torch.inference_mode():
            prob = model(x).softmax(dim=1)[0]
        p, idx = prob.topk(k)
        preds = [{'label': labels[i], 'index': int(i), 'prob': round(float(q), 6)} for q, i in zip(p, idx, strict=True)]
        out.append({'image': path, 'top': preds})
        if not args.json:
            print(path)
            for r in preds:
                print(f'  {r["prob"] * 100:6.2f} %  {r["label"]} ({r["index"]})')
    if args.json:
        print(json.dumps(out))
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from .hub import export
    from timm.models import split_model_name_tag
    arch, tag = split_model_name_tag(args.name)
    if not tag:
        raise ValueError(f'export needs <arch>.<tag>, got {args.name!r}')
    from .hub import load_metrics
    metrics = load_metrics(args.metrics)
    run_config = Path(args.metrics).with_name('config.yaml')
    if 'eval_data' not in metrics and run_config.is_file():
        import yaml
        metrics['eval_data'] = yaml.safe_load(run_config.read_text()).get('eval_data')
    # Build the model the run trained: its recorded model_kwargs / num_classes, unless given here.
    kwargs = {k: v for k, v in (metrics.get('model_kwargs') or {}).items() if k not in ('pretrained',)}
    if metrics.get('num_classes') is not None:
        kwargs['num_classes'] = metrics['num_classes']
    kwargs.update(_model_kwargs(args))
    evals = metrics.get('eval')
    if isinstance(evals, dict) and any(k.endswith('_ema') for k in evals):
        # train.py --model-ema evaluates both copies; the card reports only the weights being exported
        metrics['eval'] = ({k[:-4]: v for k, v in evals.items() if k.endswith('_ema')} if args.use_ema
                           else {k: v for k, v in evals.items() if not k.endswith('_ema')})
    model = _create(args.name, pretrained=False, checkpoint=args.checkpoint, use_ema=args.use_ema, **kwargs)
    folder = Path(args.out) / args.name
    export(model, folder, metrics=metrics, recipe=args.recipe, tag=tag, register=args.register,
           deviations=args.deviation or None, limitations=args.limitation or None)
    print(folder)
    return 0


def cmd_register(args: argparse.Namespace) -> int:
    from .hub import register
    entry = register(args.folder, manifest=args.manifest)
    print(json.dumps({Path(args.folder).name: entry}, indent=2))
    return 0


def cmd_check(args: argparse.Namespace) -> int:
    from .hub import check_weights_folder
    from .weights import load_manifest
    bad = 0
    for folder in args.folders:
        problems = check_weights_folder(folder, manifest_entry=load_manifest(args.manifest).get(Path(folder).name))
        print(f'{folder}: ' + ('ok' if not problems else '\n  ' + '\n  '.join(problems)))
        bad += bool(problems)
    return 1 if bad else 0


def cmd_table(args: argparse.Namespace) -> int:
    from .hub import model_table, update_readme_table
    if args.update:
        if args.published_only:
            raise ValueError('--update writes the whole table; drop --published-only')
        changed = update_readme_table(args.update, link_prefix=args.link_prefix)
        print(f'{args.update}: model table {"updated" if changed else "already current"}')
        return 0
    print(model_table(link_prefix=args.link_prefix, include_unpublished=not args.published_only), end='')
    return 0


def cmd_publish(args: argparse.Namespace) -> int:
    from .hub import publish
    repo_id = args.repo_id or f'mnzoo/{Path(args.folder).name}'
    print(publish(args.folder, repo_id, endpoint=args.endpoint, token=args.token, private=args.private))
    return 0


def cmd_build_kernels(args: argparse.Namespace) -> int:
    from .layers import build_cpu_kernels
    ok = build_cpu_kernels(verbose=args.verbose)
    print('mnzoo ModeNorm CPU kernels: ' + ('ready' if ok else 'NOT available, the layers use the torch-op path'))
    return 0 if ok else 1


# ---------------------------------------------------------------------------------------------- parser

def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog='mnzoo', description='Mode Normalization model zoo (arXiv:1810.05466).')
    ap.add_argument('--version', action='version', version=_versions())
    sub = ap.add_subparsers(dest='command', required=True, metavar='COMMAND')

    def model_opts(p: argparse.ArgumentParser, weights: bool = True) -> None:
        p.add_argument('name', help='model name, e.g. resnet20_mn.cifar10, hf-hub:org/repo, local-dir:PATH')
        p.add_argument('--num-modes', type=int, default=None, help='K for *_mn / *_mgn models')
        p.add_argument('--num-classes', type=int, default=None)
        if weights:
            p.add_argument('--checkpoint', default=None, help='load this checkpoint (weights_only) instead')
            p.add_argument('--random-init', action='store_true', help='do not load pretrained weights')

    p = sub.add_parser('list', help='list architectures (or published weights)')
    p.add_argument('--pretrained', action='store_true', help='only published <arch>.<tag> weights')
    p.add_argument('--filter', default=None, help='wildcard, e.g. "resnet*"')
    p.set_defaults(func=cmd_list)

    p = sub.add_parser('info', help='architecture, parameters, K, tags, published weights')
    model_opts(p, weights=False)
    p.add_argument('--json', action='store_true')
    p.set_defaults(func=cmd_info)

    p = sub.add_parser('eval', help='top-1/top-5 on an ImageFolder (folder or tar) or on domain=path[@split] sources')
    model_opts(p)
    p.add_argument('--data', required=True, nargs='+',
                   help='an ImageFolder directory or .tar of <class>/<image> files (read with the model\'s '
                        'preprocessing), or domain=path[@split] sources as in training (e.g. '
                        'cifar10=../shared/data/cifar10/test-lossless-1k.tar mnist=../shared/data/mnist@test; '
                        'several sources form the multi-domain eval set)')
    p.add_argument('--batch-size', type=_int_at_least(1), default=256)
    p.add_argument('--workers', type=_int_at_least(0), default=0)
    p.add_argument('--limit', type=_int_at_least(1), default=None, help='only the first N images')
    p.add_argument('--device', default='cpu')
    p.add_argument('--json', action='store_true')
    p.add_argument('--quiet', action='store_true', help='no progress bar')
    p.set_defaults(func=cmd_eval)

    p = sub.add_parser('predict', help='top-k labels for image files')
    model_opts(p)
    p.add_argument('images', nargs='+')
    p.add_argument('--topk', type=_int_at_least(1), default=5)
    p.add_argument('--domain', default=None,
                   help='preprocess as this training domain (mnist, cifar10, svhn, fashion_mnist): its own '
                        'statistics; required for multi-domain models')
    p.add_argument('--json', action='store_true')
    p.set_defaults(func=cmd_predict)

    p = sub.add_parser('modes', help="the paper's Figure 3: top-gated images per mode of MN layers (PNG)")
    model_opts(p)
    p.add_argument('--data', nargs='+', required=True, help='domain=path[@split] sources, as in eval')
    p.add_argument('--out', default='modes.png', help='PNG to write')
    p.add_argument('--layers', nargs='+', default=['first', 'last'],
                   help="MN layers: 'first', 'last' or module names (default: first last)")
    p.add_argument('--per-mode', type=_int_at_least(1), default=10, help='images shown per mode')
    p.add_argument('--limit', type=_int_at_least(1), default=None, help='a seeded random subset of N images')
    p.set_defaults(func=cmd_modes)

    p = sub.add_parser('histograms', help="the paper's Figure 2: a norm layer's channel histograms before and "
                                          "after, one row per model (PNG)")
    p.add_argument('names', nargs='+', help='models, one row each (e.g. resnet20_bn.cifar10 resnet20_mn.cifar10)')
    p.add_argument('--random-init', action='store_true', help='do not load pretrained weights')
    p.add_argument('--data', nargs='+', required=True, help='domain=path[@split] sources, as in eval')
    p.add_argument('--layer', default='first', help="norm layer: 'first', 'last' or a module name (default: first)")
    p.add_argument('--channels', nargs='+', type=_int_at_least(0), default=[0, 1, 2, 3],
                   help='channels drawn (default: 0 1 2 3)')
    p.add_argument('--limit', type=_int_at_least(0), default=1024,
                   help='a seeded random subset of N images (the paper: 1024; 0: all)')
    p.add_argument('--out', default='histograms.png', help='PNG to write')
    p.add_argument('--json', action='store_true', help='print the per-channel statistics as JSON')
    p.set_defaults(func=cmd_histograms)

    p = sub.add_parser('export', help='checkpoint + metrics.json -> weights folder (model.safetensors, config, card)')
    model_opts(p, weights=False)
    p.add_argument('--checkpoint', required=True, help='training checkpoint (loaded with weights_only=True)')
    p.add_argument('--use-ema', action='store_true', help="export the checkpoint's EMA weights (state_dict_ema)")
    p.add_argument('--metrics', required=True, help="the run's metrics.json")
    p.add_argument('--recipe', default=None)
    p.add_argument('--out', default='weights_cards', help='parent folder; writes OUT/<arch>.<tag>/')
    p.add_argument('--register', action='store_true', help='also write the manifest entry')
    p.add_argument('--deviation', action='append', default=[], metavar='TEXT',
                   help='a deviation from the paper, for the card (repeatable)')
    p.add_argument('--limitation', action='append', default=[], metavar='TEXT',
                   help='a limitation of the weight, for the card (repeatable)')
    p.set_defaults(func=cmd_export)

    p = sub.add_parser('register', help='write the manifest entry of a weights folder')
    p.add_argument('folder')
    p.add_argument('--manifest', default=None, help='default: mnzoo/weights_manifest.json or $MNZOO_MANIFEST')
    p.set_defaults(func=cmd_register)

    p = sub.add_parser('check', help='check weights folders (sha256, sizes, registry, card metrics)')
    p.add_argument('folders', nargs='+')
    p.add_argument('--manifest', default=None, help="compare with this manifest (default: the package's)")
    p.set_defaults(func=cmd_check)

    p = sub.add_parser('table', help="the README's markdown model table, from the registry and manifest")
    p.add_argument('--link-prefix', default='weights_cards')
    p.add_argument('--published-only', action='store_true')
    p.add_argument('--update', metavar='README', default=None,
                   help='rewrite the table between the <!-- model-table --> markers of this file instead of printing')
    p.set_defaults(func=cmd_table)

    p = sub.add_parser('publish', help='push a weights folder to the Hub (create_repo + upload_folder)')
    p.add_argument('folder')
    p.add_argument('repo_id', nargs='?', default=None, help='default: mnzoo/<folder name>')
    p.add_argument('--endpoint', default=None, help='default: $HF_ENDPOINT or huggingface.co')
    p.add_argument('--token', default=None, help='default: the saved Hugging Face token')
    p.add_argument('--private', action='store_true')
    p.set_defaults(func=cmd_publish)

    p = sub.add_parser('build-kernels', help="compile the ModeNorm CPU kernels now (else on first use)")
    p.add_argument('--verbose', action='store_true', help="show the compiler's output")
    p.set_defaults(func=cmd_build_kernels)
    return ap


def _versions() -> str:
    """mnzoo and the versions it runs with (what a bug report needs)."""
    import timm
    import torch
    from . import __version__
    return f'mnzoo {__version__} (timm {timm.__version__}, torch {torch.__version__})'


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except (ValueError, TypeError, RuntimeError, OSError, KeyError) as e:
        msg = str(e).strip().strip('"') or type(e).__name__
        print(f'mnzoo: error: {msg}', file=sys.stderr)
        return 2


if __name__ == '__main__':
    sys.exit(main())
