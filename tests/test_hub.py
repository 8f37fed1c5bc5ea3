"""Hub distribution against real servers on 127.0.0.1: olah (download) and tests/hub_server.py (upload).

Exported weights travel as real git repos through olah; nothing is mocked. Local weights_cards are
hidden (MNZOO_WEIGHTS_DIR points at an empty folder) so every load below really goes through the server.
"""
import json
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

import timm
import mnzoo.models  # noqa: F401  (registers the zoo)
from mnzoo import hub, weights
from mnzoo._factory import create_model

from conftest import REPO_ROOT, free_port, subprocess_env

ARCH, TAG = 'resnet20_mn', 'cifar10'
METRICS = {'eval': {'test-lossless-1k': {'top1': 12.5, 'top5': 51.0, 'num_samples': 1000}},
           'seed': 3, 'epochs': 1, 'hardware': 'test machine', 'wall_time_s': 1.0,
           'command': 'python training/train.py --recipe test', 'params': 274084}


def _random_model(seed: int = 0) -> torch.nn.Module:
    """resnet20_mn with every tensor, buffers included, drawn at random (so defaults cannot match)."""
    torch.manual_seed(seed)
    model = timm.create_model(ARCH)
    with torch.no_grad():
        for name, t in model.state_dict().items():
            if t.is_floating_point():
                t.copy_(torch.rand_like(t) + 0.5 if 'running_var' in name else torch.randn_like(t))
    return model


@pytest.fixture(scope='module')
def exported(tmp_path_factory):
    folder = tmp_path_factory.mktemp('export') / f'{ARCH}.{TAG}'
    hub.export(_random_model(), folder, metrics=METRICS, recipe='training/recipes/test.yaml')
    return folder


def _assert_same_tensors(model: torch.nn.Module, folder: Path) -> None:
    ref = load_file(str(folder / 'model.safetensors'))
    sd = model.state_dict()
    assert set(sd) == set(ref)
    for k, v in ref.items():
        assert torch.equal(sd[k], v), k


def _fresh(prefix: str = 'mnzoo-test') -> str:
    return f'{prefix}/{ARCH}.{uuid.uuid4().hex[:8]}'


def test_timm_hf_hub_loads_export_through_olah(hf_hub_env, exported):
    repo_id = _fresh()
    hf_hub_env.add_repo(repo_id, exported)
    model = timm.create_model(f'hf-hub:{repo_id}', pretrained=True)
    _assert_same_tensors(model, exported)
    # the verified file in the HF cache was loaded, not anything local
    assert model.pretrained_cfg['source'] == 'file'
    assert 'hf-cache' in model.pretrained_cfg['file']
    assert model.pretrained_cfg['label_names'][0] == 'airplane'
    # mnzoo.create_model takes the same route
    _assert_same_tensors(create_model(f'hf-hub:{repo_id}', pretrained=True), exported)


def test_create_model_cache_dir_receives_the_download(hf_hub_env, exported, tmp_path, monkeypatch):
    """timm.create_model(..., cache_dir=...) puts the weights there, as for timm's own models, and a
    later load with the Hub down finds them there (not in the default Hub cache)."""
    repo_id = _fresh()
    hf_hub_env.add_repo(repo_id, exported)
    cache = tmp_path / 'my-cache'
    model = timm.create_model(f'hf-hub:{repo_id}', pretrained=True, cache_dir=cache)
    _assert_same_tensors(model, exported)
    assert Path(model.pretrained_cfg['file']).is_relative_to(cache)
    assert {p.name for p in cache.rglob('*') if p.is_file() and p.parent.name != 'blobs'} >= {
        'model.safetensors', 'config.json'}
    assert not (tmp_path / 'hf-cache' / f"models--{repo_id.replace('/', '--')}").exists()
    monkeypatch.setenv('HF_ENDPOINT', f'http://127.0.0.1:{free_port()}')  # the Hub goes away
    again = create_model(f'hf-hub:{repo_id}', pretrained=True, cache_dir=cache)
    assert again.pretrained_cfg['file'] == model.pretrained_cfg['file']
    with pytest.raises(weights.HubUnavailableError):  # the default cache never had it
        create_model(f'hf-hub:{repo_id}', pretrained=True)


def test_cached_hub_weights_survive_hub_outage(hf_hub_env, exported, monkeypatch):
    repo_id = _fresh()
    hf_hub_env.add_repo(repo_id, exported)
    cfg = {'architecture': ARCH, 'hf_hub_id': repo_id, 'source': 'hf-hub'}
    first = weights.fetch_verified(cfg)
    monkeypatch.setenv('HF_ENDPOINT', f'http://127.0.0.1:{free_port()}')  # the Hub goes away
    t0 = time.monotonic()
    assert weights.fetch_verified(cfg) == first  # served from the HF cache, still sha-verified
    assert time.monotonic() - t0 < 5
    first.unlink()  # drop the cached file: now it must fail, quickly and clearly
    with pytest.raises(weights.HubUnavailableError, match='did not answer'):
        weights.fetch_verified(cfg)


def test_registered_name_loads_from_olah_and_from_local_folder(hub_servers, exported, tmp_path):
    """The registry path needs the weight in the manifest at import time: run it in a fresh process with a
    test manifest (MNZOO_MANIFEST), the real Hub repo name mnzoo/<arch>.<tag>, and no local folder. Then the
    same with the local folder present and the Hub down (offline), including torch.hub.load."""
    name = f'{ARCH}.{TAG}'
    if not (hub_servers.mirrors / 'models' / 'mnzoo' / name).exists():
        hub_servers.add_repo(f'mnzoo/{name}', exported)
    manifest = tmp_path / 'manifest.json'
    hub.register(exported, manifest=manifest)
    assert json.loads(manifest.read_text())[name]['hf_hub_id'] == f'mnzoo/{name}'
    (tmp_path / 'empty').mkdir()
    script = (
        'import os, sys, timm, torch, mnzoo.models\n'
        'from mnzoo._factory import create_model\n'
        'from safetensors.torch import save_file\n'
        'out, root, local, dead = sys.argv[1:]\n'
        f'assert timm.list_pretrained("{ARCH}*") == ["{name}"], timm.list_pretrained("{ARCH}*")\n'
        f'm = create_model("{name}", pretrained=True)\n'
        'print("HUB_FILE", m.pretrained_cfg["file"])\n'
        'save_file(m.state_dict(), out + ".hub")\n'
        '# now offline with the local weights_cards folder present\n'
        'os.environ.update(MNZOO_WEIGHTS_DIR=local, HF_ENDPOINT=dead)\n'
        f'm = create_model("{name}", pretrained=True)\n'
        'print("LOCAL_FILE", m.pretrained_cfg["file"])\n'
        'save_file(m.state_dict(), out + ".local")\n'
        f'h = torch.hub.load(root, "{ARCH}", source="local", pretrained=True)\n'
        'save_file(h.state_dict(), out + ".torchhub")\n')
    out = tmp_path / 'loaded'
    r = subprocess.run(
        [sys.executable, '-c', script, str(out), str(REPO_ROOT), str(exported.parent),
         f'http://127.0.0.1:{free_port()}'],
        capture_output=True, text=True, timeout=180, cwd=tmp_path,
        env=subprocess_env(MNZOO_MANIFEST=str(manifest), HF_HOME=str(tmp_path / 'hf'), HF_ENDPOINT=hub_servers.olah,
                           MNZOO_WEIGHTS_DIR=str(tmp_path / 'empty')))
    assert r.returncode == 0, r.stderr[-3000:]
    assert f'HUB_FILE {tmp_path / "hf"}' in r.stdout  # 1. from olah into the HF cache
    assert f'LOCAL_FILE {exported / "model.safetensors"}' in r.stdout  # 2. the local folder, Hub down
    for suffix in ('.hub', '.local', '.torchhub'):
        _assert_same_tensors(_load_into_model(Path(str(out) + suffix)), exported)


def _load_into_model(path: Path) -> torch.nn.Module:
    model = timm.create_model(ARCH)
    model.load_state_dict(load_file(str(path)), strict=True)
    return model


def test_publish_roundtrip_through_upload_server_and_olah(hf_hub_env, exported):
    repo_id = _fresh('mnzoo-pub')
    url = hub.publish(exported, repo_id, endpoint=hf_hub_env.upload, token='test-token')
    sha = url.rsplit('/', 1)[-1]
    repo = hf_hub_env.mirrors / 'models' / repo_id
    head = subprocess.run(['git', '-C', str(repo), 'rev-parse', 'HEAD'], capture_output=True, text=True).stdout
    assert head.strip() == sha
    from huggingface_hub import hf_hub_download
    for fname in ('model.safetensors', 'config.json', 'README.md'):
        got = Path(hf_hub_download(repo_id, fname))
        assert got.read_bytes() == (exported / fname).read_bytes(), fname
    model = timm.create_model(f'hf-hub:{repo_id}', pretrained=True)
    _assert_same_tensors(model, exported)


def test_publish_refuses_broken_folder(hf_hub_env, exported, tmp_path):
    bad = tmp_path / exported.name
    bad.mkdir()
    for f in ('config.json', 'README.md'):
        (bad / f).write_bytes((exported / f).read_bytes())
    with pytest.raises(ValueError, match='missing model.safetensors'):
        hub.publish(bad, _fresh('mnzoo-pub'), endpoint=hf_hub_env.upload, token='t')


# ------------------------------------------------------------------------------------------- bad input

def _tampered_copy(src: Path, dst: Path) -> Path:
    """Same header, one tensor value changed: still valid safetensors, different sha256."""
    dst.mkdir(parents=True)
    for f in ('config.json', 'README.md'):
        (dst / f).write_bytes((src / f).read_bytes())
    sd = load_file(str(src / 'model.safetensors'))
    sd['fc.bias'] = sd['fc.bias'] + 1.0
    save_file(sd, str(dst / 'model.safetensors'), metadata={'format': 'pt'})
    return dst


def test_tampered_hub_file_is_rejected(hf_hub_env, exported, tmp_path):
    repo_id = _fresh()
    hf_hub_env.add_repo(repo_id, _tampered_copy(exported, tmp_path / 'tampered'))
    expected = json.loads((exported / 'config.json').read_text())['mnzoo']['sha256']
    with pytest.raises(weights.IntegrityError, match='sha256 mismatch') as e:
        timm.create_model(f'hf-hub:{repo_id}', pretrained=True)
    assert expected in str(e.value) and 'model.safetensors' in str(e.value)


def test_corrupted_hub_file_is_rejected(hf_hub_env, exported, tmp_path):
    bad = tmp_path / 'corrupt'
    bad.mkdir()
    for f in ('config.json', 'README.md'):
        (bad / f).write_bytes((exported / f).read_bytes())
    (bad / 'model.safetensors').write_bytes((exported / 'model.safetensors').read_bytes()[:5000])
    repo_id = _fresh()
    hf_hub_env.add_repo(repo_id, bad)
    with pytest.raises(weights.CorruptWeightsError, match='not a valid safetensors file'):
        create_model(f'hf-hub:{repo_id}', pretrained=True)


def test_hub_repo_without_recorded_sha_is_rejected(hf_hub_env, exported, tmp_path):
    bad = tmp_path / 'nosha'
    bad.mkdir()
    cfg = json.loads((exported / 'config.json').read_text())
    del cfg['mnzoo']
    (bad / 'config.json').write_text(json.dumps(cfg))
    (bad / 'model.safetensors').write_bytes((exported / 'model.safetensors').read_bytes())
    repo_id = _fresh()
    hf_hub_env.add_repo(repo_id, bad)
    with pytest.raises(weights.IntegrityError, match='no recorded sha256'):
        timm.create_model(f'hf-hub:{repo_id}', pretrained=True)


def test_missing_hub_repo(hf_hub_env, monkeypatch, exported, tmp_path):
    with pytest.raises(weights.WeightsNotFoundError, match='not found'):
        create_model('hf-hub:mnzoo/does-not-exist.cifar10', pretrained=True)
    # a manifest weight whose Hub repo is gone, and no local folder
    manifest = tmp_path / 'm.json'
    hub.register(exported, manifest=manifest)
    data = json.loads(manifest.read_text())
    data[f'{ARCH}.{TAG}']['hf_hub_id'] = 'mnzoo/gone.cifar10'
    manifest.write_text(json.dumps(data))
    monkeypatch.setenv('MNZOO_MANIFEST', str(manifest))
    with pytest.raises(weights.WeightsNotFoundError, match="'mnzoo/gone.cifar10' not found"):
        weights.fetch_verified({'architecture': ARCH, 'tag': TAG})


def _manifest_env(monkeypatch, exported, tmp_path):
    manifest = tmp_path / 'm.json'
    hub.register(exported, manifest=manifest)
    monkeypatch.setenv('MNZOO_MANIFEST', str(manifest))
    monkeypatch.setenv('MNZOO_WEIGHTS_DIR', str(tmp_path / 'none'))
    monkeypatch.setenv('HF_HOME', str(tmp_path / 'hf'))


def test_hub_down_fails_fast(monkeypatch, exported, tmp_path):
    _manifest_env(monkeypatch, exported, tmp_path)
    from huggingface_hub import constants
    monkeypatch.setattr(constants, 'HF_HUB_CACHE', str(tmp_path / 'hf-cache'))
    monkeypatch.setenv('HF_ENDPOINT', f'http://127.0.0.1:{free_port()}')  # nothing listens there
    t0 = time.monotonic()
    with pytest.raises(weights.HubUnavailableError, match='did not answer'):
        weights.fetch_verified({'architecture': ARCH, 'tag': TAG})
    with pytest.raises(weights.HubUnavailableError):
        create_model('hf-hub:mnzoo/anything', pretrained=True)
    assert time.monotonic() - t0 < 10


def test_hub_black_hole_times_out(monkeypatch, exported, tmp_path):
    """A server that accepts connections but never answers: bounded by MNZOO_HUB_TIMEOUT, never hangs."""
    _manifest_env(monkeypatch, exported, tmp_path)
    sock = socket.socket()
    sock.bind(('127.0.0.1', 0))
    sock.listen(16)  # never accept(): the kernel completes the handshake, nobody answers
    monkeypatch.setenv('HF_ENDPOINT', f'http://127.0.0.1:{sock.getsockname()[1]}')
    monkeypatch.setattr(weights, 'HUB_TIMEOUT_S', 1.0)
    t0 = time.monotonic()
    try:
        with pytest.raises(weights.HubUnavailableError, match='within 1 s'):
            weights.fetch_verified({'architecture': ARCH, 'tag': TAG})
    finally:
        sock.close()
    assert time.monotonic() - t0 < 5


# ------------------------------------------------------------------------------------------- hubconf

def test_hubconf_has_one_documented_entrypoint_per_model():
    import importlib.util
    spec = importlib.util.spec_from_file_location('mnzoo_hubconf', REPO_ROOT / 'hubconf.py')
    hubconf = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(hubconf)
    import importlib
    for dep in hubconf.dependencies:
        assert importlib.util.find_spec(dep) is not None, dep
    public = {n for n in dir(hubconf) if callable(getattr(hubconf, n)) and not n.startswith('_')}
    assert public == set(mnzoo.models.MODEL_NAMES)
    for name in public:
        doc = getattr(hubconf, name).__doc__
        assert name in doc and 'pretrained' in doc and 'Tag ' in doc, name


def test_torch_hub_load_local_checkout():
    model = torch.hub.load(str(REPO_ROOT), 'resnet20_mn', source='local', pretrained=False, num_modes=3,
                           num_classes=7)
    assert model.num_classes == 7 and hub.num_modes_of(model) == 3
    lenet = torch.hub.load(str(REPO_ROOT), 'lenet_mn', source='local', tag='multidomain')
    assert lenet.pretrained_cfg['tag'] == 'multidomain' and lenet(torch.randn(2, 3, 32, 32)).shape == (2, 40)
    # the cards' torch.hub line: a tag other than the architecture's first, with its verified weights
    short = torch.hub.load(str(REPO_ROOT), 'resnet20_mn', source='local', tag='cifar10_40ep', pretrained=True)
    expected = load_file(REPO_ROOT / 'weights_cards' / 'resnet20_mn.cifar10_40ep' / 'model.safetensors')
    assert short.pretrained_cfg['tag'] == 'cifar10_40ep'
    assert set(short.state_dict()) == set(expected)
    assert all(torch.equal(v, expected[k]) for k, v in short.state_dict().items())
