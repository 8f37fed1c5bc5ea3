"""The ``mnzoo`` command: as a real process (console script) for list/eval/predict/errors, and through
``mnzoo.cli.main`` in-process for the rest, to keep the suite fast (each process start imports torch+timm).

eval and predict are checked against an independent computation: images read with PIL, normalised by
hand with the model's mean/std, one forward pass each.
"""
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import timm
import mnzoo.models  # noqa: F401
from mnzoo import hub
from mnzoo.cli import main
from mnzoo.models import CIFAR10_LABELS

from conftest import REPO_ROOT, subprocess_env

SHARED_TAR = REPO_ROOT.parent / 'shared' / 'data' / 'cifar10' / 'test-lossless-1k.tar'
CONSOLE = Path(sys.executable).with_name('mnzoo')


def run(*args, env=None, ok=True, timeout=180):
    cmd = [str(CONSOLE)] if CONSOLE.exists() else [sys.executable, '-m', 'mnzoo.cli']
    r = subprocess.run(cmd + [str(a) for a in args], capture_output=True, text=True, timeout=timeout,
                       env=subprocess_env(**(env or {})))
    if ok:
        assert r.returncode == 0, r.stderr[-3000:]
    return r


@pytest.fixture(scope='module')
def weights_folder(tmp_path_factory):
    """An exported resnet20_mn.cifar10 with random tensors (buffers too, so predictions vary)."""
    torch.manual_seed(5)
    model = timm.create_model('resnet20_mn.cifar10')
    with torch.no_grad():
        for name, t in model.state_dict().items():
            if t.is_floating_point():
                t.copy_(torch.rand_like(t) + 0.5 if 'running_var' in name else torch.randn_like(t) * 0.5)
    return hub.export(model, tmp_path_factory.mktemp('cli') / 'resnet20_mn.cifar10',
                      metrics={'eval': {'t': {'top1': 1.0, 'top5': 2.0}}})


def _reference_logits(folder: Path, images):
    model = timm.create_model('resnet20_mn.cifar10')
    from safetensors.torch import load_file
    model.load_state_dict(load_file(str(folder / 'model.safetensors')))
    model.eval()
    mean = torch.tensor(model.pretrained_cfg['mean']).view(3, 1, 1)
    std = torch.tensor(model.pretrained_cfg['std']).view(3, 1, 1)
    xs = [(torch.from_numpy(np.asarray(Image.open(p).convert('RGB'), dtype=np.float32)).permute(2, 0, 1) / 255
           - mean) / std for p in images]
    with torch.no_grad():
        return model(torch.stack(xs))


@pytest.fixture(scope='module')
def image_folder(weights_folder, tmp_path_factory):
    """A tiny ImageFolder of random 32x32 PNGs; half are filed under the class the model predicts, so the
    expected accuracy is well above chance and known from an independent forward pass."""
    root = tmp_path_factory.mktemp('imgs')
    rng = np.random.default_rng(0)
    raw = []
    for i in range(12):
        p = root / f'{i:02d}.png'
        Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(p)
        raw.append(p)
    logits = _reference_logits(weights_folder, raw)
    data = root / 'data'
    labels = []
    for i, p in enumerate(raw):
        cls = int(logits[i].argmax()) if i % 2 == 0 else (int(logits[i].argmax()) + 1 + i % 3) % 10
        (data / CIFAR10_LABELS[cls]).mkdir(parents=True, exist_ok=True)
        p.rename(data / CIFAR10_LABELS[cls] / p.name)
        labels.append(cls)
    top5 = logits.topk(5, dim=1).indices
    y = torch.tensor(labels)
    expected = {'top1': round(100.0 * (top5[:, 0] == y).float().mean().item(), 4),
                'top5': round(100.0 * (top5 == y[:, None]).any(1).float().mean().item(), 4)}
    return data, expected


def test_version_names_mnzoo_timm_and_torch():
    r = run('--version')
    assert r.stdout.strip() == f'mnzoo {mnzoo.__version__} (timm {timm.__version__}, torch {torch.__version__})'
    pyproject = (REPO_ROOT / 'pyproject.toml').read_text()
    assert f'\nversion = "{mnzoo.__version__}"\n' in pyproject  # one version, package and metadata alike


def test_list(capsys):
    r = run('list')  # the console script, as a user runs it
    assert set(r.stdout.split()) == set(mnzoo.models.MODEL_NAMES)
    assert main(['list', '--pretrained']) == 0
    published = json.loads((REPO_ROOT / 'mnzoo' / 'weights_manifest.json').read_text())
    out = capsys.readouterr().out
    assert {line.split('\t')[0] for line in out.splitlines()} == set(published)
    assert main(['list', '--filter', 'resnet20_*']) == 0
    assert capsys.readouterr().out.split() == ['resnet20_bn', 'resnet20_mn', 'resnet20_gn', 'resnet20_mgn']


def test_info_json(capsys):
    assert main(['info', 'resnet20_mn.cifar10', '--json']) == 0
    info = json.loads(capsys.readouterr().out)
    assert info['num_params'] == 274084 and info['num_modes'] == 2
    # the data tags, plus the 40-epoch schedule tag that keeps the short-schedule weights
    assert info['tags'] == ['cifar10', 'cifar100', 'cifar10_40ep'] and info['input_size'] == [3, 32, 32]
    assert sorted(info['published']) == ['resnet20_mn.cifar10', 'resnet20_mn.cifar10_40ep']
    assert main(['info', 'resnet20_mn.cifar10']) == 0  # the text form: one line per eval set
    text = capsys.readouterr().out
    for set_name, res in info['metrics'].items():
        assert f"{set_name}: top-1 {res['top1']:.2f} %, top-5 {res['top5']:.2f} % ({res['n']} images)" in text


def test_unknown_name_is_one_clear_line(capsys):
    r = run('info', 'resnet20_nm', ok=False)
    assert r.returncode == 2
    assert r.stderr.strip().startswith("mnzoo: error: Unknown model 'resnet20_nm'")
    assert 'Did you mean: resnet20_mn' in r.stderr and 'Traceback' not in r.stderr
    assert main(['eval', 'resnet20_mn.cifar10', '--random-init', '--data', '/nonexistent']) == 2
    assert 'mnzoo: error: --data /nonexistent: no such file or folder' in capsys.readouterr().err
    split = str(REPO_ROOT) + '@test'  # an existing folder with a split but no domain
    assert main(['eval', 'resnet20_mn.cifar10', '--random-init', '--data', split]) == 2
    assert f'--data <domain>={split}' in capsys.readouterr().err
    assert main(['eval', 'resnet20_mn.cifar12', '--data', '/nonexistent']) == 2
    assert "Unknown tag 'cifar12'" in capsys.readouterr().err



@pytest.mark.parametrize('argv,message', [
    (['predict', 'resnet20_mn', 'x.png', '--topk', '0'], 'argument --topk: must be >= 1, got 0'),
    (['eval', 'resnet20_mn', '--data', 'x', '--batch-size', '0'], 'argument --batch-size: must be >= 1, got 0'),
    (['eval', 'resnet20_mn', '--data', 'x', '--limit', '-1'], 'argument --limit: must be >= 1, got -1'),
    (['eval', 'resnet20_mn', '--data', 'x', '--workers', 'two'], "argument --workers: expected an integer, got 'two'"),
    (['modes', 'resnet20_mn', '--data', 'x', '--per-mode', '0'], 'argument --per-mode: must be >= 1, got 0'),
    (['histograms', 'resnet20_mn', '--data', 'x', '--limit', '-3'], 'argument --limit: must be >= 0, got -3'),
    (['histograms', 'resnet20_mn', '--data', 'x', '--channels', '0', '-1'], 'argument --channels: must be >= 0'),
])
def test_bad_numbers_are_named_before_any_work(argv, message, capsys):
    """A count that cannot work is one argparse error naming the flag (it was an empty result or a
    torch error deep inside): nothing is loaded first."""
    with pytest.raises(SystemExit) as exit_:
        main(argv)
    assert exit_.value.code == 2 and message in capsys.readouterr().err

def test_eval_matches_independent_forward(weights_folder, image_folder):
    data, expected = image_folder
    r = run('eval', f'local-dir:{weights_folder}', '--data', data, '--json', '--batch-size', 5)
    res = json.loads(r.stdout)
    assert res['num_samples'] == 12
    assert (res['top1'], res['top5']) == (expected['top1'], expected['top5'])
    assert res['top1'] >= 50.0
    assert 'eval' in r.stderr and '100%' in r.stderr  # the progress bar


@pytest.mark.skipif(not SHARED_TAR.is_file(), reason=f'{SHARED_TAR} not present')
def test_eval_on_shared_imagefolder_tar(weights_folder, capsys):
    assert main(['eval', f'local-dir:{weights_folder}', '--data', str(SHARED_TAR), '--limit', '200', '--json',
                 '--quiet']) == 0
    res = json.loads(capsys.readouterr().out)
    assert res['num_samples'] == 200 and 0 <= res['top1'] <= res['top5'] <= 100


def test_predict_top5_with_label_names(weights_folder, image_folder):
    data, _ = image_folder
    img = sorted(data.rglob('*.png'))[0]
    r = run('predict', f'local-dir:{weights_folder}', img, '--json')
    (out,) = json.loads(r.stdout)
    top = out['top']
    assert len(top) == 5 and all(t['label'] in CIFAR10_LABELS for t in top)
    probs = _reference_logits(weights_folder, [img]).softmax(1)[0]
    assert top[0]['index'] == int(probs.argmax()) and top[0]['label'] == CIFAR10_LABELS[int(probs.argmax())]
    assert abs(top[0]['prob'] - float(probs.max())) < 1e-5
    assert [t['prob'] for t in top] == sorted([t['prob'] for t in top], reverse=True)


def test_export_register_check_commands(tmp_path, capsys):
    """The run -> weights folder -> manifest path, each one command (in-process to stay fast), with a
    metrics.json shaped like training/train.py's (model_kwargs, eval sets, best, resumed commands)."""
    model = timm.create_model('resnet20_mn.cifar10', num_modes=3)
    ckpt = tmp_path / 'last.pth.tar'
    torch.save({'state_dict': model.state_dict(), 'epoch': 1}, ckpt)
    metrics = tmp_path / 'metrics.json'
    metrics.write_text(json.dumps({
        'model': 'resnet20_mn', 'model_kwargs': {'num_modes': 3}, 'num_classes': 10,
        'params': sum(p.numel() for p in model.parameters()), 'seed': 0, 'epochs': 1,
        'eval': {'test-lossless-1k': {'top1': 10.0, 'top5': 50.0, 'loss': 2.3, 'n': 1000},
                 'test-lossless-1k_ema': {'top1': 11.0, 'top5': 51.0, 'n': 1000}},
        'best': {'epoch': 0, 'top1': 99.0}, 'commands': ['python train.py a', 'python train.py a --resume'],
        'command': 'python train.py a --resume', 'recipe': 'training/recipes/resnet20_cifar10.yaml',
        'segments': [{'first_epoch': 0, 'last_epoch': 0, 'recorded': False, 'git_commits': ['abc123'],
                      'commands': ['python train.py a']},
                     {'first_epoch': 1, 'last_epoch': 1, 'recorded': True, 'git_commit': 'def456',
                      'command': 'python train.py a --resume', 'started_utc': '2026-11-26T10:00:00Z',
                      'hardware': {'device': 'cpu', 'threads': 1}}]}))
    assert main(['export', 'resnet20_mn.cifar10', '--checkpoint', str(ckpt), '--metrics', str(metrics),
                 '--out', str(tmp_path / 'cards')]) == 0
    folder = tmp_path / 'cards' / 'resnet20_mn.cifar10'
    cfg = json.loads((folder / 'config.json').read_text())
    assert cfg['mnzoo']['num_modes'] == 3 and cfg['model_args']['num_modes'] == 3
    card = (folder / 'README.md').read_text()
    assert 'python train.py a\npython train.py a --resume' in card and '99.0' not in card
    assert 'training/recipes/resnet20_cifar10.yaml' in card and 'K=3' in card
    assert '| 0-0 | not recorded | `abc123` | not recorded |' in card  # the segments of the resumed run
    assert '| 1-1 | 2026-11-26T10:00:00Z | `def456` | device cpu, threads 1 |' in card
    manifest = tmp_path / 'manifest.json'
    assert main(['register', str(folder), '--manifest', str(manifest)]) == 0
    entry = json.loads(manifest.read_text())['resnet20_mn.cifar10']
    assert entry['metrics'] == {'test-lossless-1k': {'top1': 10.0, 'top5': 50.0, 'loss': 2.3, 'n': 1000}}
    assert entry['num_modes'] == 3
    # the package's manifest now publishes a real resnet20_mn.cifar10, which this folder is not
    assert main(['check', str(folder)]) == 1
    assert main(['check', str(folder), '--manifest', str(manifest)]) == 0
    (folder / 'model.safetensors').write_bytes(b'junk')
    assert main(['check', str(folder), '--manifest', str(manifest)]) == 1
    assert 'not a valid safetensors file' in capsys.readouterr().out


def test_publish_command(hub_servers, weights_folder, capsys):
    assert main(['publish', str(weights_folder), 'mnzoo-cli/r20', '--endpoint', hub_servers.upload,
                 '--token', 't']) == 0
    sha = capsys.readouterr().out.strip().rsplit('/', 1)[-1]
    repo = hub_servers.mirrors / 'models' / 'mnzoo-cli' / 'r20'
    files = subprocess.run(['git', '-C', str(repo), 'ls-tree', '--name-only', sha], capture_output=True,
                           text=True, check=True).stdout.split()
    assert sorted(files) == ['README.md', 'config.json', 'model.safetensors']


def test_eval_domain_sources_match_folder_path(weights_folder, tmp_path, monkeypatch, capsys):
    """``cifar10=<folder>`` goes through mnzoo.data (as training does): the same numbers as the folder path
    and as an independent forward pass. (All 10 class folders are present: mnzoo.data labels a domain's
    ImageFolder by the folder names it finds.)"""
    monkeypatch.setenv('MNZOO_CACHE', str(tmp_path / 'cache'))
    rng = np.random.default_rng(3)
    paths, labels = [], []
    for i in range(20):
        p = tmp_path / 'data' / CIFAR10_LABELS[i % 10] / f'{i:02d}.png'
        p.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(p)
        paths.append(p)
        labels.append(i % 10)
    top = _reference_logits(weights_folder, paths).topk(5, dim=1).indices
    y = torch.tensor(labels)
    expected = (20, round(100.0 * (top[:, 0] == y).float().mean().item(), 4),
                round(100.0 * (top == y[:, None]).any(1).float().mean().item(), 4))
    for data in (f'cifar10={tmp_path / "data"}', str(tmp_path / 'data')):
        assert main(['eval', f'local-dir:{weights_folder}', '--data', data, '--json', '--quiet']) == 0
        res = json.loads(capsys.readouterr().out)
        assert (res['num_samples'], res['top1'], res['top5']) == expected, data


def _random_multidomain_export(tmp_path):
    """A lenet_mn.multidomain with random weights and running statistics, exported to tmp_path."""
    model = timm.create_model('lenet_mn.multidomain')
    with torch.no_grad():
        for name, t in model.state_dict().items():
            if t.is_floating_point():
                t.copy_(torch.rand_like(t) + 0.5 if 'running_var' in name else torch.randn_like(t) * 0.5)
    return model, hub.export(model, tmp_path / 'lenet_mn.multidomain', metrics={'top1': 1.0})


def test_eval_multidomain_sources(tmp_path, monkeypatch, capsys):
    """Two domains mixed into the 40-way label space, checked against a literal re-implementation of the
    documented preprocessing: grey 28x28 -> zero-pad to 32, 3 channels; per-domain mean/std; label offsets."""
    from mnzoo.data import DOMAINS
    monkeypatch.setenv('MNZOO_CACHE', str(tmp_path / 'cache'))
    torch.manual_seed(2)
    model, folder = _random_multidomain_export(tmp_path)
    model.eval()
    rng = np.random.default_rng(1)
    xs, ys, doms = [], [], []
    for dom, shape, classes in (('mnist', (28, 28), [str(i) for i in range(10)]),
                                ('cifar10', (32, 32, 3), list(CIFAR10_LABELS))):
        d = DOMAINS[dom]
        mean, std = torch.tensor(d.mean).view(-1, 1, 1), torch.tensor(d.std).view(-1, 1, 1)
        for i in range(10):
            cls = i  # every class folder present (see the test above)
            pix = rng.integers(0, 256, shape, dtype=np.uint8)
            path = tmp_path / dom / classes[cls] / f'{i}.png'
            path.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(pix).save(path)
            x = torch.from_numpy(pix).float() / 255
            x = x[None] if x.ndim == 2 else x.permute(2, 0, 1)
            x = (x - mean) / std
            if x.shape[-1] == 28:  # zero-pad in pixel space = pad with the normalised value of black
                x = torch.nn.functional.pad(x, (2, 2, 2, 2), value=float(-mean.flatten()[0] / std.flatten()[0]))
            xs.append(x.expand(3, 32, 32))
            ys.append(d.offset + cls)
            doms.append(dom)
    with torch.no_grad():
        top = model(torch.stack(xs)).topk(5, dim=1).indices
    y = torch.tensor(ys)
    hit1 = top[:, 0] == y
    assert main(['eval', f'local-dir:{folder}', '--data', f'mnist={tmp_path / "mnist"}',
                 f'cifar10={tmp_path / "cifar10"}', '--json', '--quiet', '--batch-size', '5']) == 0
    res = json.loads(capsys.readouterr().out)
    assert res['num_samples'] == 20
    assert res['top1'] == round(100.0 * hit1.float().mean().item(), 4)
    assert res['top5'] == round(100.0 * (top == y[:, None]).any(1).float().mean().item(), 4)
    for dom in ('mnist', 'cifar10'):
        sel = torch.tensor([d == dom for d in doms])
        assert res['top1_per_domain'][dom] == round(100.0 * hit1[sel].float().mean().item(), 4)


def test_predict_multidomain_needs_domain_and_matches_eval(tmp_path, monkeypatch, capsys):
    """predict --domain preprocesses one image exactly like the eval/training pipeline does."""
    monkeypatch.setenv('MNZOO_CACHE', str(tmp_path / 'cache'))
    torch.manual_seed(4)
    model, folder = _random_multidomain_export(tmp_path)
    rng = np.random.default_rng(5)
    for c in range(10):
        p = tmp_path / 'mnist' / str(c) / 'a.png'
        p.parent.mkdir(parents=True)
        Image.fromarray(rng.integers(0, 256, (28, 28), dtype=np.uint8)).save(p)
    img = tmp_path / 'mnist' / '3' / 'a.png'
    assert main(['predict', f'local-dir:{folder}', str(img)]) == 2
    assert 'pass --domain' in capsys.readouterr().err
    # eval of a plain folder would use timm's generic transform: refused, with the form to use
    assert main(['eval', f'local-dir:{folder}', '--data', str(tmp_path / 'mnist')]) == 2
    assert '--data <domain>=PATH[@split]' in capsys.readouterr().err
    assert main(['predict', f'local-dir:{folder}', str(img), '--domain', 'mnist', '--json', '--topk', '40']) == 0
    (pred,) = json.loads(capsys.readouterr().out)
    # the same image through mnzoo.data, as training and `mnzoo eval --data mnist=...` read it
    from mnzoo.data import TensorLoader, build_dataset
    data = build_dataset([f'mnist={tmp_path / "mnist"}'], multidomain=True)
    x, y, _ = next(iter(TensorLoader(data, 10)))
    assert int(y[3]) == 3
    model.eval()
    with torch.no_grad():
        probs = model(x)[3].softmax(0)
    assert len(pred['top']) == 40
    for t in pred['top']:
        assert abs(t['prob'] - float(probs[t['index']])) < 1e-5, t
    assert pred['top'][0]['index'] == int(probs.argmax())
    assert pred['top'][0]['label'] == mnzoo.models.MULTIDOMAIN_LABELS[int(probs.argmax())]
