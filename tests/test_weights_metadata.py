"""Published-weight metadata, in the spirit of torchvision's test_extended_models.

For every ``weights_cards/<arch>.<tag>/`` folder: config matches the registry, sha256 / file size /
parameter count match config.json and the manifest, the card carries measured metrics. The manifest and
the folders must name the same weights. The same checker is run on a freshly exported example and on
damaged copies of it, which must fail, so the checker itself is tested even while no weight is published.
"""
import json
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

import timm
import mnzoo.models  # noqa: F401
from mnzoo import hub, weights
from mnzoo.hub.card import parse_front_matter

REPO_ROOT = Path(__file__).resolve().parent.parent
CARDS = REPO_ROOT / 'weights_cards'
PACKAGED_MANIFEST = REPO_ROOT / 'mnzoo' / 'weights_manifest.json'


def _folders():
    return sorted(p for p in CARDS.iterdir() if p.is_dir()) if CARDS.is_dir() else []


def _manifest():
    return json.loads(PACKAGED_MANIFEST.read_text())


def test_manifest_entries_equal_weight_folders():
    assert set(_manifest()) == {p.name for p in _folders()}


def test_registry_pretrained_tags_equal_manifest():
    """timm.list_pretrained tells the truth: exactly the published weights carry a Hub id."""
    zoo = set(mnzoo.models.MODEL_NAMES)
    listed = {n for n in timm.list_pretrained() if n.split('.', 1)[0] in zoo}
    assert listed == set(_manifest())
    for name in _manifest():
        assert timm.models.get_pretrained_cfg(name).hf_hub_id == f'mnzoo/{name}'


def test_published_weight_folders():
    """Every committed weights folder passes the checker (problems name the folder)."""
    problems = [p for f in _folders() for p in hub.check_weights_folder(f, manifest_entry=_manifest().get(f.name))]
    assert problems == []


@pytest.mark.parametrize('name', sorted(_manifest()))
def test_cards_read_right_with_huggingface_hub(name):
    """The Hub's own parser (huggingface_hub.ModelCard) reads each card's metadata as we mean it:
    library, licence, datasets, and one model-index result per eval set whose top-1 and top-5 are
    the manifest's numbers (what the Hub shows on the model page and in its leaderboards)."""
    from huggingface_hub import ModelCard
    entry = _manifest()[name]
    data = ModelCard.load(CARDS / name / 'README.md').data
    assert (data.library_name, data.license, data.pipeline_tag) == ('timm', entry['license'], 'image-classification')
    assert data.datasets == entry['datasets']
    assert data.model_name == name
    found = {}
    for r in data.eval_results:
        assert r.task_type == 'image-classification'
        split = r.dataset_name.rsplit(': ', 1)[1]
        found[(split, r.metric_type)] = r.metric_value
    expected = {}
    for split, m in entry['metrics'].items():
        expected[(split, 'accuracy')] = m['top1']
        expected[(split, 'top_5_accuracy')] = m['top5']
    assert found == expected


LOGS = REPO_ROOT / 'training' / 'logs'


@pytest.mark.parametrize('name', sorted(_manifest()))
def test_every_published_weight_keeps_its_training_log(name):
    """training/logs/<arch>.<tag>/ holds the run folder's summary.csv, metrics.json and config.yaml
    (the run folders themselves live outside the repo). They must be that weight's run: one
    summary row per epoch, and the seed, epochs, command and metrics its card states."""
    import csv
    import yaml
    log = LOGS / name
    rows = list(csv.DictReader((log / 'summary.csv').open()))
    metrics = json.loads((log / 'metrics.json').read_text())
    config = yaml.safe_load((log / 'config.yaml').read_text())
    card = (CARDS / name / 'README.md').read_text()
    assert [int(r['epoch']) for r in rows] == list(range(metrics['epochs']))
    assert metrics['model'] == config['model'] == name.split('.')[0] and metrics['seed'] == config['seed']
    assert f"- **Seed:** {metrics['seed']}\n" in card and f"- **Epochs:** {metrics['epochs']}" in card
    assert metrics['command'] in card
    # the card's metrics: the run's own last evaluation, or a later CPU evaluation of the same
    # weights (metrics_cpu_eval.json, for weights trained on a GPU); the last summary row agrees
    cpu_eval = log / 'metrics_cpu_eval.json'
    published = json.loads(cpu_eval.read_text())['eval'] if cpu_eval.exists() else metrics['eval']
    for set_name, res in _manifest()[name]['metrics'].items():
        assert published[set_name]['top1'] == res['top1'], set_name
        assert abs(float(rows[-1][f'{set_name}_top1']) - metrics['eval'][set_name]['top1']) < 1e-6
        assert abs(metrics['eval'][set_name]['top1'] - res['top1']) <= 100 * 1.5 / res.get('n', 1000), set_name


# ------------------------------------------------------------------------ the checker on a generated example

@pytest.fixture(scope='module')
def example(tmp_path_factory):
    root = tmp_path_factory.mktemp('meta')
    torch.manual_seed(0)
    model = timm.create_model('resnet20_mn.cifar10')
    metrics = {'eval': {'test-lossless-1k': {'top1': 33.3, 'top5': 80.1, 'num_samples': 1000},
                        'test-jpeg-10k': {'top1': 32.0, 'top5': 79.5}},
               'params': 274084, 'seed': 7, 'epochs': 2, 'hardware': 'cpu', 'wall_time_s': 60,
               'git_commit': 'abc1234', 'command': 'python training/train.py --recipe x.yaml'}
    folder = hub.export(model, root / 'resnet20_mn.cifar10', metrics=metrics, recipe='training/recipes/x.yaml',
                        deviations=['2 epochs instead of 160'])
    manifest = root / 'manifest.json'
    entry = hub.register(folder, manifest=manifest)
    return folder, entry, manifest, metrics


def _copy(folder: Path, dst: Path) -> Path:
    shutil.copytree(folder, dst / folder.name)
    return dst / folder.name


def test_example_passes_and_matches_its_inputs(example):
    folder, entry, manifest, metrics = example
    assert hub.check_weights_folder(folder, manifest_entry=entry) == []
    assert json.loads(manifest.read_text()) == {folder.name: entry}
    assert entry['num_params'] == 274084 and entry['num_modes'] == 2
    assert entry['sha256'] == weights.sha256_file(folder / 'model.safetensors')
    assert entry['file_size'] == (folder / 'model.safetensors').stat().st_size
    front, body = parse_front_matter((folder / 'README.md').read_text())
    assert front['library_name'] == 'timm' and front['license'] and front['datasets'] == ['cifar10']
    values = [m['value'] for r in front['model-index'][0]['results'] for m in r['metrics']]
    assert sorted(values) == sorted([33.3, 80.1, 32.0, 79.5])
    for text in ('274,084', 'K=2', 'python training/train.py --recipe x.yaml', 'training/recipes/x.yaml',
                 '2 epochs instead of 160', 'Table 4', '92.01', 'abc1234', '@inproceedings{deecke2019mode',
                 '**Seed:** 7'):
        assert text in body, text
    # nothing was invented: no eval set or number beyond the inputs shows up in the results table
    assert 'not recorded' not in body.split('## Results')[0].split('Wall time')[0]


def test_checker_catches_tampered_weights(example, tmp_path):
    folder, entry, _, _ = example
    bad = _copy(folder, tmp_path)
    sd = load_file(str(bad / 'model.safetensors'))
    sd['fc.weight'] = sd['fc.weight'] * 2
    save_file(sd, str(bad / 'model.safetensors'))
    problems = hub.check_weights_folder(bad, manifest_entry=entry)
    assert any('sha256' in p for p in problems), problems


def test_checker_catches_wrong_manifest_entry(example):
    folder, entry, _, _ = example
    for key, value in (('num_params', 1), ('file_size', 2), ('sha256', 'f' * 64)):
        problems = hub.check_weights_folder(folder, manifest_entry=dict(entry, **{key: value}))
        assert any(f'manifest {key}' in p for p in problems), (key, problems)


def test_checker_catches_config_registry_mismatch(example, tmp_path):
    folder, entry, _, _ = example
    bad = _copy(folder, tmp_path)
    cfg = json.loads((bad / 'config.json').read_text())
    cfg['pretrained_cfg']['mean'] = [0.5, 0.5, 0.5]
    (bad / 'config.json').write_text(json.dumps(cfg))
    assert any('mean' in p and 'registry' in p for p in hub.check_weights_folder(bad))


def test_checker_catches_card_without_metrics(example, tmp_path):
    folder, _, _, _ = example
    bad = _copy(folder, tmp_path)
    text = (bad / 'README.md').read_text()
    front, body = parse_front_matter(text)
    del front['model-index']
    import yaml
    (bad / 'README.md').write_text('---\n' + yaml.safe_dump(front) + '---\n' + body)
    assert any('no measured metrics' in p for p in hub.check_weights_folder(bad))


def test_checker_catches_wrong_architecture_and_missing_files(example, tmp_path):
    folder, _, _, _ = example
    wrong = tmp_path / 'resnet20_bn.cifar10'
    shutil.copytree(folder, wrong)
    problems = hub.check_weights_folder(wrong)
    assert any('architecture' in p for p in problems) and any('do not load' in p for p in problems)
    (wrong / 'README.md').unlink()
    assert hub.check_weights_folder(wrong) == [f'{wrong}: missing README.md']


def test_export_refuses_metrics_of_another_model(tmp_path):
    model = timm.create_model('resnet20_bn.cifar10')
    with pytest.raises(ValueError, match='different model'):
        hub.export(model, tmp_path / 'x', metrics={'params': 274084, 'top1': 1.0})
    with pytest.raises(ValueError, match='describe the wrong data'):
        hub.export(model, tmp_path / 'z', tag='cifar100')
    with pytest.raises(ValueError, match='needs a timm model'):
        hub.export(torch.nn.Linear(2, 2), tmp_path / 'y')  # not a timm model at all


def test_card_reads_only_the_runs_results():
    """eval sets come from the run's own 'eval' block; 'best' (another checkpoint) is never reported."""
    from mnzoo.hub.card import eval_sets, render_card
    m = {'eval': {'a': {'top1': 1.0, 'top5': 2.0, 'top1_per_domain': {'mnist': 3.0, 'cifar10': 4.0}}},
         'best': {'top1': 77.0}}
    assert eval_sets(m) == {'a': m['eval']['a']}
    assert eval_sets({'eval': {}, 'best': {'top1': 77.0}}) == {}
    assert eval_sets({'top1': 5.0, 'top5': 6.0, 'eval_set': 'val'}) == {'val': {'top1': 5.0, 'top5': 6.0}}
    card = render_card(name='lenet_mn.multidomain', num_params=1, num_modes=4, sha256='0' * 64, file_size=1,
                       pretrained_cfg={'input_size': (3, 32, 32), 'num_classes': 40}, metrics=m)
    assert 'mnist 3.00, cifar10 4.00' in card and '77' not in card
    hw = {'device': 'cuda', 'gpu': 'NVIDIA H100', 'cpu_cores': 16, 'world_size': 4, 'load_avg_at_start': [1, 2]}
    hw_card = render_card(name='resnet20_mn.cifar10', num_params=1, num_modes=2, sha256='0' * 64, file_size=1,
                          pretrained_cfg={}, metrics={'hardware': hw, 'top1': 1.0})
    assert '**Hardware:** device cuda, gpu NVIDIA H100, cpu cores 16, world size 4\n' in hw_card
    # the paper rows follow K: K=4 gives the 24.25 row of Table 1 only
    assert '24.25 ± 0.71' in card and '23.16' not in card
    empty = render_card(name='nin_mn.cifar10', num_params=1, num_modes=2, sha256='0' * 64, file_size=1,
                        pretrained_cfg={}, metrics={})
    assert 'No measured results were supplied' in empty and 'model-index' not in empty


def test_card_of_a_weight_on_another_schedule():
    """A schedule tag (cifar10_40ep) names its schedule in the card and the README table, keeps the
    dataset's own name and Hub id in the model-index, and compares with the paper rows of its data."""
    from mnzoo.hub.card import dataset_label, parse_front_matter, render_card
    m = {'eval': {'test-lossless-1k': {'top1': 90.6, 'top5': 99.9}}, 'epochs': 40}
    card = render_card(name='resnet20_mn.cifar10_40ep', num_params=1, num_modes=2, sha256='0' * 64,
                       file_size=1, pretrained_cfg={}, metrics=m)
    assert '`resnet20_mn` trained on CIFAR-10 (40-epoch schedule), from' in card
    assert '| Table 4 |' in card and '7.99' in card  # the paper's 160-epoch CIFAR-10 row
    fm, _ = parse_front_matter(card)
    assert fm['datasets'] == ['cifar10']
    assert fm['model-index'][0]['results'][0]['dataset']['name'] == 'CIFAR-10: test-lossless-1k'
    assert dataset_label('cifar10_40ep') == 'CIFAR-10 (40-epoch schedule)'
    assert dataset_label('cifar10') == 'CIFAR-10' and dataset_label('unknown') == 'unknown'
    # the paper-schedule tag itself has no schedule note
    card10 = render_card(name='resnet20_mn.cifar10', num_params=1, num_modes=2, sha256='0' * 64,
                         file_size=1, pretrained_cfg={}, metrics=m)
    assert '`resnet20_mn` trained on CIFAR-10, from' in card10 and '7.99' in card10


def test_card_of_a_small_batch_mgn_weight():
    """MGN cards name the layer, say it keeps no running statistics, show the partial last epoch
    of an update-based schedule, and cite the Table 2 row."""
    from mnzoo.hub.card import render_card
    m = {'eval': {'test': {'top1': 80.0, 'top5': 97.0}}, 'epochs': 3, 'updates': 50000,
         'batch_size': 8, 'train_images': 170000}
    card = render_card(name='lenet_mgn.multidomain_n8', num_params=1, num_modes=2, sha256='0' * 64,
                       file_size=1, pretrained_cfg={'input_size': (3, 32, 32), 'num_classes': 40}, metrics=m)
    assert 'Mode Group Normalization with K=2' in card
    assert 'GN and MGN keep no running statistics' in card and 'MN keeps K sets' not in card
    assert '**Epochs:** 3, the last one partial (50,000 updates of batch 8 = 2.35 epochs)' in card
    assert '| Table 2 |' in card and '26.83 ± 1.34' in card
    # 40 full epochs of 390 updates (50,000 images, the last short batch dropped) are not partial
    full = render_card(name='resnet20_mn.cifar10', num_params=1, num_modes=2, sha256='0' * 64, file_size=1,
                       pretrained_cfg={}, metrics={'epochs': 40, 'updates': 15600, 'batch_size': 128,
                                                   'train_images': 50000, 'top1': 1.0})
    assert '**Epochs:** 40\n' in full and 'MN keeps K sets' in full
    # a resumed run whose killed segments are counted from summary rows only says "at least"
    m.update(wall_time_s=7300.0, wall_time_lower_bound=True)
    bound = render_card(name='lenet_mgn.multidomain_n8', num_params=1, num_modes=2, sha256='0' * 64,
                        file_size=1, pretrained_cfg={}, metrics=m)
    assert '**Wall time:** at least 7300 s (2 h 01 min)' in bound
    assert '**Wall time:** 7300 s' in render_card(
        name='lenet_mgn.multidomain_n8', num_params=1, num_modes=2, sha256='0' * 64, file_size=1,
        pretrained_cfg={}, metrics={**m, 'wall_time_lower_bound': False})
