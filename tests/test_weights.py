"""Weight resolution without a server: manifest, local weights_cards, sha256, format checks, create_model.

Every case uses a real export of resnet20_mn (random init) and a test manifest via MNZOO_MANIFEST.
"""
import json
import logging
import struct

import pytest
import torch
from safetensors.torch import load_file, save_file

import timm
import mnzoo.models  # noqa: F401
from mnzoo import hub, weights
from mnzoo._factory import UnknownModelError, create_model, list_models

ARCH, TAG = 'resnet20_mn', 'cifar10'
NAME = f'{ARCH}.{TAG}'


@pytest.fixture(scope='module')
def cards(tmp_path_factory):
    """A weights_cards-like folder holding one exported weight, and its manifest."""
    root = tmp_path_factory.mktemp('cards')
    torch.manual_seed(1)
    model = timm.create_model(ARCH)
    with torch.no_grad():
        for t in model.state_dict().values():
            if t.is_floating_point():
                t.copy_(torch.rand_like(t) + 0.1)
    hub.export(model, root / 'weights_cards' / NAME,
               metrics={'eval': {'test': {'top1': 50.0, 'top5': 90.0}}}, recipe='r.yaml')
    manifest = root / 'manifest.json'
    hub.register(root / 'weights_cards' / NAME, manifest=manifest)
    return root / 'weights_cards', manifest


@pytest.fixture
def zoo(cards, monkeypatch, tmp_path):
    """Environment where NAME is published and present locally; the Hub is unreachable."""
    cards_dir, manifest = cards
    monkeypatch.setenv('MNZOO_MANIFEST', str(manifest))
    monkeypatch.setenv('MNZOO_WEIGHTS_DIR', str(cards_dir))
    monkeypatch.setenv('HF_ENDPOINT', 'http://127.0.0.1:9')  # discard port: nothing listens
    return cards_dir


def _copy_cards(cards_dir, dst):
    dst.mkdir()
    (dst / NAME).mkdir()
    for f in (cards_dir / NAME).iterdir():
        (dst / NAME / f.name).write_bytes(f.read_bytes())
    return dst


# --------------------------------------------------------------------------------------- manifest

def test_hub_id_only_for_published(zoo, monkeypatch, tmp_path):
    assert weights.hub_id(ARCH, TAG) == f'mnzoo/{NAME}'
    assert weights.hub_id(ARCH, 'cifar100') is None
    assert weights.published(ARCH) == [NAME] and weights.published_tags(ARCH) == [TAG]
    empty = tmp_path / 'empty.json'
    empty.write_text('{}')
    monkeypatch.setenv('MNZOO_MANIFEST', str(empty))
    assert weights.hub_id(ARCH, TAG) is None


def test_packaged_manifest_is_a_mapping():
    data = json.loads(weights.manifest_path().read_text()) if weights.manifest_path().is_file() else {}
    assert isinstance(data, dict)
    for name, entry in data.items():
        assert name.count('.') == 1 and len(entry['sha256']) == 64


def test_invalid_manifest_is_a_clear_error(monkeypatch, tmp_path):
    bad = tmp_path / 'bad.json'
    bad.write_text('{not json')
    monkeypatch.setenv('MNZOO_MANIFEST', str(bad))
    with pytest.raises(weights.WeightsError, match='not valid JSON'):
        weights.hub_id(ARCH, TAG)


# --------------------------------------------------------------------------------------- integrity

def test_check_safetensors_accepts_export_and_rejects_damage(cards, tmp_path):
    good = cards[0] / NAME / 'model.safetensors'
    weights.check_safetensors(good)
    data = good.read_bytes()
    cases = {
        'truncated': data[: len(data) // 2],
        'padded': data + b'\0' * 16,
        'tiny': b'abc',
        'huge header': struct.pack('<Q', 10 ** 12) + data[8:],
        'not json': struct.pack('<Q', 4) + b'\xff\xfe{[' + data[12:],
    }
    torch.save({'w': torch.zeros(2)}, tmp_path / 'pickle.safetensors')  # a pickle in disguise
    cases['pickle'] = (tmp_path / 'pickle.safetensors').read_bytes()
    for label, blob in cases.items():
        p = tmp_path / f'{label}.safetensors'
        p.write_bytes(blob)
        with pytest.raises(weights.CorruptWeightsError, match='not a valid safetensors file') as e:
            weights.check_safetensors(p)
        assert str(p) in str(e.value), label


def test_verify_file_names_file_and_both_hashes(cards):
    path = cards[0] / NAME / 'model.safetensors'
    actual = weights.sha256_file(path)
    assert weights.verify_file(path, actual.upper()) == path
    with pytest.raises(weights.IntegrityError) as e:
        weights.verify_file(path, '0' * 64)
    assert str(path) in str(e.value) and actual in str(e.value) and '0' * 64 in str(e.value)


# --------------------------------------------------------------------------------------- fetch_verified

def test_fetch_verified_prefers_local_folder(zoo):
    path = weights.fetch_verified({'architecture': ARCH, 'tag': TAG})
    assert path == zoo / NAME / 'model.safetensors'
    # the hf-hub form of the same published weight resolves to the same verified local file
    assert weights.fetch_verified({'architecture': ARCH, 'hf_hub_id': f'mnzoo/{NAME}', 'source': 'hf-hub'}) == path


def test_fetch_verified_rejects_tampered_local_file(zoo, monkeypatch, tmp_path):
    cards_dir = _copy_cards(zoo, tmp_path / 'cards')
    sd = load_file(str(cards_dir / NAME / 'model.safetensors'))
    sd['fc.bias'][0] += 1
    save_file(sd, str(cards_dir / NAME / 'model.safetensors'))
    monkeypatch.setenv('MNZOO_WEIGHTS_DIR', str(cards_dir))
    with pytest.raises(weights.IntegrityError, match='sha256 mismatch') as e:
        create_model(NAME, pretrained=True)
    assert str(cards_dir / NAME / 'model.safetensors') in str(e.value)


def test_fetch_verified_rejects_corrupted_local_file(zoo, monkeypatch, tmp_path):
    cards_dir = _copy_cards(zoo, tmp_path / 'cards')
    (cards_dir / NAME / 'model.safetensors').write_bytes(b'\x00' * 100)
    monkeypatch.setenv('MNZOO_WEIGHTS_DIR', str(cards_dir))
    with pytest.raises(weights.CorruptWeightsError, match='not a valid safetensors'):
        create_model(NAME, pretrained=True)


def test_unpublished_tag_lists_published_ones(zoo):
    with pytest.raises(weights.WeightsNotFoundError, match=f"'{ARCH}.cifar100'.*{NAME}"):
        create_model(f'{ARCH}.cifar100', pretrained=True)
    with pytest.raises(weights.WeightsNotFoundError, match='resnet56_mn: none'):
        create_model('resnet56_mn.cifar10', pretrained=True)


# --------------------------------------------------------------------------------------- create_model

def test_create_model_loads_local_weights_offline(zoo):
    ref = load_file(str(zoo / NAME / 'model.safetensors'))
    model = create_model(NAME, pretrained=True)
    assert all(torch.equal(model.state_dict()[k], v) for k, v in ref.items())
    assert model.pretrained_cfg['file'] == str(zoo / NAME / 'model.safetensors')


def test_finetune_new_classes_keeps_backbone(zoo, caplog):
    ref = load_file(str(zoo / NAME / 'model.safetensors'))
    with caplog.at_level(logging.INFO):
        model = create_model(NAME, pretrained=True, num_classes=5)
    sd = model.state_dict()
    assert sd['fc.weight'].shape == (5, 64)
    assert all(torch.equal(sd[k], v) for k, v in ref.items() if not k.startswith('fc.'))
    assert 're-initialising the classifier' in caplog.text


def test_in_chans_adapted_when_possible_and_rejected_otherwise(zoo):
    ref = load_file(str(zoo / NAME / 'model.safetensors'))
    gray = create_model(NAME, pretrained=True, in_chans=1)
    torch.testing.assert_close(gray.conv1.weight, ref['conv1.weight'].sum(dim=1, keepdim=True))
    with pytest.raises((ValueError, TypeError), match='in_chans'):
        create_model(NAME, pretrained=True, in_chans=0)
    cfg = dict(architecture=ARCH, tag=TAG, input_size=(3, 32, 32), num_classes=10, first_conv=None)
    with pytest.raises(ValueError, match='in_chans=1 is incompatible'):
        weights.pretrained_overlay(ARCH, cfg, None, in_chans=1)


def test_unknown_name_suggests_close_names():
    with pytest.raises(UnknownModelError, match="Unknown model 'resnet20_nm'.*Did you mean: resnet20_mn"):
        create_model('resnet20_nm')
    with pytest.raises(UnknownModelError, match="Unknown tag 'cifar11'.*Did you mean: cifar10"):
        create_model('resnet20_mn.cifar11')
    with pytest.raises(UnknownModelError, match='Registered tags: cifar10, cifar100'):
        create_model('resnet20_mn.imagenet')


def test_list_models_matches_registry_and_manifest(zoo):
    assert set(list_models()) == set(mnzoo.models.MODEL_NAMES)
    assert list_models(pretrained=True) == [NAME]
    assert all(timm.is_model(n) for n in list_models())


def test_user_weight_file_via_overlay(zoo, tmp_path):
    """A user's own file is loaded as given (no manifest needed), after a format check."""
    model = timm.create_model(ARCH)
    mine = tmp_path / 'mine.safetensors'
    save_file(model.state_dict(), str(mine))
    loaded = create_model(f'{ARCH}.cifar100', pretrained=True, num_classes=10,
                          pretrained_cfg_overlay=dict(file=str(mine), num_classes=10))
    assert all(torch.equal(loaded.state_dict()[k], v) for k, v in model.state_dict().items())
    (tmp_path / 'bad.safetensors').write_bytes(b'nope')
    with pytest.raises(weights.CorruptWeightsError):
        create_model(ARCH, pretrained=True, pretrained_cfg_overlay=dict(file=str(tmp_path / 'bad.safetensors')))
    with pytest.raises(weights.WeightsNotFoundError, match='does not exist'):
        create_model(ARCH, pretrained=True, pretrained_cfg_overlay=dict(file=str(tmp_path / 'none.safetensors')))


def test_export_register_flag_writes_manifest(tmp_path):
    model = timm.create_model('resnet20_gn.cifar10')
    manifest = tmp_path / 'm.json'
    hub.export(model, tmp_path / 'resnet20_gn.cifar10', metrics={'top1': 1.5, 'top5': 7.5}, register=True,
               manifest=manifest)
    entry = json.loads(manifest.read_text())['resnet20_gn.cifar10']
    assert entry['metrics'] == {'test': {'top1': 1.5, 'top5': 7.5}} and entry['num_modes'] is None


def test_model_table_comes_from_manifest(zoo):
    table = hub.model_table(include_unpublished=False)
    rows = table.strip().splitlines()
    assert len(rows) == 3  # header, rule, the one published weight
    assert rows[2] == (f'| `{NAME}` | 274,084 | 2 | CIFAR-10 | 50.00 (test) | '
                       f'[card](weights_cards/{NAME}/README.md) |')


def test_readme_table_update_keeps_the_rest_of_the_file(zoo, tmp_path, capsys):
    from mnzoo.cli import main
    readme = tmp_path / 'README.md'
    before, after = '# zoo\n\nintro\n<!-- model-table -->\n', '\n<!-- /model-table -->\n\nmore text\n'
    readme.write_text(before + '| stale |' + after)
    assert main(['table', '--update', str(readme)]) == 0 and 'updated' in capsys.readouterr().out
    text = readme.read_text()
    assert text == before + hub.model_table().rstrip('\n') + after
    assert f'| `{NAME}` | 274,084 | 2 | CIFAR-10 | 50.00 (test) |' in text
    assert hub.update_readme_table(readme) is False  # already current: untouched
    readme.write_text('# no markers\n')
    assert main(['table', '--update', str(readme)]) == 2
    assert 'no model table to update' in capsys.readouterr().err and readme.read_text() == '# no markers\n'
