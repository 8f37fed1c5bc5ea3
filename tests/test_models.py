"""Tests of mnzoo's model families: registration in timm, the timm model contract, norms, parameter
counts, feature extraction, configs, and the pretrained path through mnzoo.weights."""
import hashlib
import json
import logging
import re
import subprocess
import sys

import pytest
import torch
from torch import nn

import mnzoo  # noqa: F401  (registers the models)
import mnzoo.models as M
import timm
from mnzoo import ModeGroupNorm, ModeNorm1d, ModeNorm2d

MODE_LAYERS = (ModeNorm2d, ModeNorm1d, ModeGroupNorm)

# Expected number of norm layers per family, counted from the papers' layouts (not from the code):
# LeNet: 2 convs + 2 hidden FC; NIN: 3 + 3 + 2 convs; VGG13: 10 convs;
# CIFAR ResNet-n: stem + 2 per block + 2 projection shortcuts; ResNet18: stem + 16 + 3 shortcuts.
NORM_COUNT = {'lenet': 4, 'nin': 8, 'vgg13': 10, 'resnet20': 1 + 2 * 9 + 2, 'resnet56': 1 + 2 * 27 + 2,
              'resnet18': 1 + 2 * 8 + 3}
EXPECTED_NAMES = (
    [f'lenet_{n}' for n in ('bn', 'in', 'ln', 'gn', 'mn', 'mgn')]
    + ['nin_bn', 'nin_mn', 'vgg13_cifar_bn', 'vgg13_cifar_mn']
    + [f'resnet{d}_{n}' for d in (20, 56) for n in ('bn', 'mn', 'gn', 'mgn')] + ['resnet18_mn'])


def _input_size(name):
    return 64 if name == 'resnet18_mn' else 32  # resnet18 pools globally; 64 px keeps the test fast


def _norm_of(name):
    return name.rsplit('_', 1)[1]


def _family(name):
    return name.split('_')[0]


def _nparams(model):
    return sum(p.numel() for p in model.parameters())


def test_all_registered():
    assert sorted(M.MODEL_NAMES) == sorted(EXPECTED_NAMES)
    listed = set(timm.list_models())
    assert set(EXPECTED_NAMES) <= listed
    mn = set(timm.list_models('*_mn'))
    assert {n for n in EXPECTED_NAMES if n.endswith('_mn')} <= mn
    mods = set(timm.list_modules())
    assert {'lenet_mn', 'nin_mn', 'vgg_cifar_mn', 'resnet_cifar_mn', 'resnet_imagenet_mn'} <= mods
    for name in EXPECTED_NAMES:
        assert timm.models.model_entrypoint(name).__module__.startswith('mnzoo.models.')


def test_no_timm_name_shadowed():
    code = 'import json, timm; print(json.dumps([timm.list_models(), timm.list_modules()]))'
    out = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, check=True, timeout=120)
    timm_models, timm_modules = json.loads(out.stdout)
    assert 'resnet18' in timm_models and 'vgg13_bn' in timm_models  # the listing is real
    assert not set(EXPECTED_NAMES) & set(timm_models)
    assert not {'lenet_mn', 'nin_mn', 'vgg_cifar_mn', 'resnet_cifar_mn', 'resnet_imagenet_mn'} & set(timm_modules)
    # after importing mnzoo, every timm name still builds timm's own model
    for name in timm_models:
        assert timm.models.model_entrypoint(name).__module__.startswith('timm.'), name


@pytest.mark.parametrize('name', EXPECTED_NAMES)
def test_model_contract(name):
    k = 3 if _norm_of(name) in ('mn', 'mgn') else None
    model = timm.create_model(name, num_classes=7, in_chans=1, num_modes=k)
    s = _input_size(name)
    x = torch.randn(2, 1, s, s)
    model.train()
    assert model(x).shape == (2, 7)
    model.eval()
    with torch.no_grad():
        feats = model.forward_features(x)
        assert feats.dim() == 4 and feats.shape[1] == model.num_features
        pre = model.forward_head(feats, pre_logits=True)
        assert pre.shape == (2, model.head_hidden_size)
        logits = model.forward_head(feats)
        assert torch.allclose(logits, model(x))
        assert torch.allclose(logits, model.get_classifier()(pre), atol=1e-5)
    assert model.get_classifier().out_features == 7
    assert model.get_classifier().in_features == model.head_hidden_size
    assert model.pretrained_cfg is model.default_cfg
    assert model.pretrained_cfg['architecture'] == name
    assert model.pretrained_cfg['paper_ids'] == 'arXiv:1810.05466'
    # the names timm's loader uses to adapt in_chans and to drop a mismatched classifier
    stem = model.get_submodule(model.pretrained_cfg['first_conv'])
    assert isinstance(stem, nn.Conv2d) and stem.in_channels == 1
    assert model.get_submodule(model.pretrained_cfg['classifier']) is model.get_classifier()

    model.reset_classifier(3)
    with torch.no_grad():
        assert model(x).shape == (2, 3)
        model.reset_classifier(0)
        assert model(x).shape == (2, model.head_hidden_size)

    # norms: the right type everywhere, with K=num_modes for mode norms
    norm = _norm_of(name)
    modes = [m for m in model.modules() if isinstance(m, MODE_LAYERS)]
    n_norms = NORM_COUNT[_family(name)]
    if norm == 'mn':
        assert len(modes) == n_norms and all(isinstance(m, (ModeNorm2d, ModeNorm1d)) for m in modes)
        assert {m.num_modes for m in modes} == {3}
    elif norm == 'mgn':
        assert len(modes) == n_norms and all(isinstance(m, ModeGroupNorm) for m in modes)
        assert {m.num_modes for m in modes} == {3}
    else:
        assert not modes
        if norm == 'bn':
            bns = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
            assert len(bns) == n_norms
        if norm == 'gn':
            gns = [m for m in model.modules() if isinstance(m, nn.GroupNorm)]
            assert len(gns) == n_norms and {m.num_groups for m in gns} == {2}
    first = next(m for m in model.modules() if isinstance(m, nn.Conv2d))
    assert first.in_channels == 1


def test_lenet_in_ln_norm_layers():
    lin = timm.create_model('lenet_in')
    assert sum(isinstance(m, nn.InstanceNorm2d) for m in lin.modules()) == 2
    assert sum(isinstance(m, nn.LayerNorm) for m in lin.modules()) == 2
    lln = timm.create_model('lenet_ln')
    gn1 = [m for m in lln.modules() if isinstance(m, nn.GroupNorm)]
    assert len(gn1) == 2 and {m.num_groups for m in gn1} == {1}
    assert sum(isinstance(m, nn.LayerNorm) for m in lln.modules()) == 2
    # LN over (C, H, W): each sample's conv map is standardised as a whole
    conv_ln = gn1[0]
    y = conv_ln(torch.randn(3, 6, 5, 5) * 4 + 2)
    assert torch.allclose(y.mean((1, 2, 3)), torch.zeros(3), atol=1e-5)


def test_resnet20_mn_param_count():
    # the number of the authors' code, as stated in the issue
    assert _nparams(timm.create_model('resnet20_mn', num_classes=10)) == 274_084
    assert _nparams(timm.create_model('resnet20_mn', num_classes=10, num_modes=2)) == 274_084
    # each MN layer adds a C->K gate (K*C + K): 7 layers at each of the widths 16, 32, 64
    bn = _nparams(timm.create_model('resnet20_bn', num_classes=10))
    for k in (1, 3):
        gates = sum(7 * (k * c + k) for c in (16, 32, 64))
        assert _nparams(timm.create_model('resnet20_mn', num_classes=10, num_modes=k)) == bn + gates


def test_dropout_settings():
    # NIN: dropout 0.25 after the first two mlpconv blocks (paper section 4.2)
    drops = [m.p for m in timm.create_model('nin_mn').stages.modules() if isinstance(m, nn.Dropout)]
    assert drops == [0.25, 0.25]
    assert [m.p for m in timm.create_model('nin_bn', drop_rate=0.5).stages.modules()
            if isinstance(m, nn.Dropout)] == [0.5, 0.5]
    for name in ('resnet20_mn', 'vgg13_cifar_mn', 'lenet_mn'):
        model = timm.create_model(name, drop_rate=0.3).train()
        x = torch.randn(4, 3, 32, 32)
        with torch.no_grad():
            pre = model.forward_head(model.forward_features(x), pre_logits=True)
        assert (pre == 0).float().mean() > 0.1  # dropout acts on the pre-logits features in training


def test_grad_checkpointing_resnet_cifar():
    torch.manual_seed(0)
    model = timm.create_model('resnet20_bn')
    x = torch.randn(2, 3, 32, 32)
    model(x).sum().backward()
    ref = model.conv1.weight.grad.clone()
    model.zero_grad()
    model.set_grad_checkpointing(True)
    model(x).sum().backward()
    assert torch.allclose(model.conv1.weight.grad, ref, atol=1e-5)



# blocks of the paper's layouts: ResNet-n on CIFAR has (n - 2) / 6 basic blocks per stage, ResNet18 2 x 4
RESNET_BLOCKS = {'resnet20': 9, 'resnet56': 27, 'resnet18': 8}


@pytest.mark.parametrize('name', EXPECTED_NAMES)
def test_group_matcher_drives_timm_layer_decay(name):
    """timm's layer-wise lr decay (create_optimizer_v2(layer_decay=...)) groups parameters with
    group_matcher: the stem comes first with the smallest lr scale, the classifier alone last with
    scale 1, scales never grow towards the input, and ResNets get one group per basic block."""
    from timm.models import group_parameters
    from timm.optim import create_optimizer_v2

    model = timm.create_model(name, num_classes=10)
    names = [n for n, _ in model.named_parameters()]
    classifier = model.pretrained_cfg['classifier']
    for coarse in (False, True):
        groups = list(group_parameters(model, model.group_matcher(coarse=coarse)).values())
        assert sorted(n for g in groups for n in g) == sorted(names)
        assert groups[-1] == [n for n in names if n.startswith(classifier + '.')]
        assert any(n.startswith(model.pretrained_cfg['first_conv'] + '.') for n in groups[0])
        order = {n: i for i, g in enumerate(groups) for n in g}
        assert [order[n] for n in names] == sorted(order[n] for n in names), 'groups out of layer order'
        if _family(name) in RESNET_BLOCKS:  # stem + (stages or blocks) + classifier
            stages = 4 if name == 'resnet18_mn' else 3
            assert len(groups) == 2 + (stages if coarse else RESNET_BLOCKS[_family(name)])
    opt = create_optimizer_v2(model, 'sgd', lr=0.1, layer_decay=0.5)
    scale = {id(p): g['lr_scale'] for g in opt.param_groups for p in g['params']}
    params = dict(model.named_parameters())
    scales = [scale[id(params[n])] for n in names]
    assert scales == sorted(scales) and scales[-1] == 1.0 and scales[0] < scales[-1]

def test_nin_mn_overhead_below_one_percent():
    # paper, section 4.2: MN with K=2 adds less than 1% to NIN's parameters
    bn, mn = (_nparams(timm.create_model(n)) for n in ('nin_bn', 'nin_mn'))
    assert 0 < mn - bn < 0.01 * bn


@pytest.mark.parametrize('name', ['resnet20_mn', 'resnet56_gn', 'vgg13_cifar_mn', 'nin_mn', 'lenet_mgn', 'resnet18_mn'])
def test_features_only(name):
    s = _input_size(name)
    model = timm.create_model(name, features_only=True)
    info = model.feature_info
    with torch.no_grad():
        outs = model.eval()(torch.randn(2, 3, s, s))
    assert len(outs) == len(info.channels()) >= 2
    assert [o.shape[1] for o in outs] == info.channels()
    if name.startswith('lenet'):  # unpadded 5x5 convs: 32 -> 28 -> 14 -> 10 -> 5 (strides 2, 4)
        assert [o.shape[-1] for o in outs] == [14, 5] and info.reduction() == [2, 4]
    else:
        assert [s // o.shape[-1] for o in outs] == info.reduction()
    one = timm.create_model(name, features_only=True, out_indices=(1,))
    with torch.no_grad():
        (o,) = one.eval()(torch.randn(2, 3, s, s))
    assert o.shape[1] == info.channels()[1]


def _hooked_features(model, x):
    """The outputs of the modules named in ``feature_info``, caught by forward hooks on a plain
    forward pass: an account of the feature maps that does not go through forward_intermediates."""
    caught = []
    hooks = [model.get_submodule(i['module']).register_forward_hook(lambda m, a, out: caught.append(out.clone()))
             for i in model.feature_info]
    with torch.no_grad():
        logits = model(x)
    for h in hooks:
        h.remove()
    return logits, caught


@pytest.mark.parametrize('name', ['resnet20_mn', 'resnet56_mgn', 'vgg13_cifar_mn', 'nin_bn', 'lenet_mn'])
def test_forward_intermediates_and_pruning_follow_timm(name):
    """timm's forward_intermediates / prune_intermediate_layers contract, and
    features_only=True, feature_cls='getter' built on it (as for timm's own models)."""
    torch.manual_seed(0)
    model = timm.create_model(name).eval()
    x = torch.randn(3, 3, 32, 32)
    logits, hooked = _hooked_features(model, x)
    n = len(model.feature_info)
    with torch.no_grad():
        final, inter = model.forward_intermediates(x)
        assert len(inter) == n and all(torch.equal(a, b) for a, b in zip(inter, hooked, strict=True))
        assert torch.equal(model.forward_head(final), logits)
        last2 = model.forward_intermediates(x, indices=2, intermediates_only=True)
        assert [t.shape for t in last2] == [t.shape for t in hooked[-2:]]
        (first,) = model.forward_intermediates(x, indices=[0], intermediates_only=True)
        assert torch.equal(first, hooked[0])
    with pytest.raises(ValueError, match='NCHW'):
        model.forward_intermediates(x, output_fmt='NHWC')
    with pytest.raises(AssertionError, match='out of range'):
        model.forward_intermediates(x, indices=[n])

    getter = timm.create_model(name, features_only=True, feature_cls='getter', out_indices=(0, 1))
    inner = getter.model  # timm's FeatureGetterNet holds the pruned model
    inner.load_state_dict({k: v for k, v in model.state_dict().items() if k in inner.state_dict()})
    with torch.no_grad():
        outs = getter.eval()(x)
    assert [torch.equal(a, b) for a, b in zip(outs, hooked[:2], strict=True)] == [True, True]
    assert getter.feature_info.channels() == [i['num_chs'] for i in model.feature_info[:2]]
    kept = set(inner.state_dict())
    assert kept < set(model.state_dict()) and not any(k.startswith(('fc.', 'head.fc.')) for k in kept)

    assert model.prune_intermediate_layers([0]) == [0]
    assert model.num_features == model.feature_info[0]['num_chs']
    with torch.no_grad():
        final, (only,) = model.forward_intermediates(x, indices=[0])
        assert torch.equal(only, hooked[0]) and torch.equal(model.forward_head(final), hooked[0])


@pytest.mark.filterwarnings('ignore::FutureWarning')
@pytest.mark.parametrize('name', ['resnet20_bn', 'lenet_bn', 'nin_bn', 'vgg13_cifar_bn'])
def test_baseline_families_script(name):
    """The model classes stay TorchScript-able (as timm's are) with a scriptable norm; the MN
    layers themselves are not (docs/layers.md: trace them)."""
    model = timm.create_model(name).eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.allclose(torch.jit.script(model)(x), model(x), atol=1e-6)


def test_forward_intermediates_with_grad_checkpointing():
    torch.manual_seed(0)
    model = timm.create_model('resnet20_mn').eval()
    x = torch.randn(2, 3, 32, 32, requires_grad=True)
    _, plain = model.forward_intermediates(x)
    model.set_grad_checkpointing(True)
    calls = []
    model.layer2[0].register_forward_pre_hook(lambda *a: calls.append(1))  # a pre-hook: recompute may stop early
    final, ckpt = model.forward_intermediates(x)
    assert all(torch.equal(a, b) for a, b in zip(plain, ckpt, strict=True)) and len(calls) == 1
    final.sum().backward()
    assert len(calls) == 2  # the block ran again in backward: checkpointed
    assert x.grad is not None and x.grad.abs().sum() > 0


def test_resnet_cifar_and_vgg_feature_maps():
    # widths 16/32/64 at strides 1/2/4 (He et al.); VGG13 stages 64..512 down to 1x1 on 32 px
    r = timm.create_model('resnet56_mn', features_only=True)
    assert r.feature_info.channels() == [16, 16, 32, 64] and r.feature_info.reduction() == [1, 1, 2, 4]
    v = timm.create_model('vgg13_cifar_bn', features_only=True)
    assert v.feature_info.channels() == [64, 128, 256, 512, 512]
    assert v.feature_info.reduction() == [2, 4, 8, 16, 32]


def test_mode_norm_batch_of_one():
    model = timm.create_model('resnet20_mn').eval()
    with torch.no_grad():
        assert model(torch.randn(1, 3, 32, 32)).shape == (1, 10)
    model.train()
    with pytest.raises(ValueError, match='batch of 1'):
        model(torch.randn(1, 3, 32, 32))


@pytest.mark.parametrize('name', ['lenet_mn', 'resnet20_bn', 'nin_mn', 'vgg13_cifar_bn'])
def test_wrong_input_shape_is_named_at_the_model(name):
    model = timm.create_model(name).eval()
    for bad in (torch.randn(2, 1, 32, 32), torch.randn(3, 32, 32)):  # channel mismatch; one unbatched image
        shape = re.escape(str(list(bad.shape)))
        with pytest.raises(ValueError, match=r'shape \(N, 3, H, W\) \(in_chans=3\), got shape ' + shape):
            model(bad)
        with pytest.raises(ValueError, match=shape):
            model.forward_intermediates(bad)
    gray = timm.create_model(name, in_chans=1).eval()
    assert gray(torch.randn(2, 1, 32, 32)).shape == (2, 10 if 'lenet' not in name else 40)


def test_bad_kwargs():
    for name, key, bad in (('resnet20_mn', 'drop_rate', 1.5), ('resnet56_bn', 'drop_path_rate', -0.1),
                           ('nin_mn', 'drop_rate', 1.0), ('lenet_mn', 'drop_rate', '0.1')):
        with pytest.raises(ValueError, match=rf'{name}: {key} must be a number in \[0, 1\), got'):
            timm.create_model(name, **{key: bad})
    assert timm.create_model('resnet20_mn', drop_rate=0.0, drop_path_rate=0.5).drop_rate == 0.0
    with pytest.raises(TypeError, match="'num_mode'"):
        timm.create_model('resnet20_mn', num_mode=3)
    with pytest.raises(TypeError, match="'dropout'"):
        timm.create_model('resnet18_mn', dropout=0.1)
    with pytest.raises(TypeError, match='fixes norm'):
        timm.create_model('vgg13_cifar_mn', norm='bn')
    with pytest.raises(TypeError, match='norm_layer'):
        timm.create_model('resnet18_mn', norm_layer=nn.BatchNorm2d)
    with pytest.raises(ValueError, match='no modes'):
        timm.create_model('resnet20_bn', num_modes=2)
    with pytest.raises(ValueError, match='num_modes must be >= 1'):
        timm.create_model('lenet_mn', num_modes=0)
    with pytest.raises(ValueError, match='in_chans must be >= 1'):
        timm.create_model('nin_mn', in_chans=0)
    with pytest.raises(ValueError, match='num_classes must be >= 0'):
        timm.create_model('nin_mn', num_classes=-1)
    with pytest.raises(ValueError, match=r"Unknown pretrained tag 'cifar11'.*cifar10, cifar100"):
        timm.create_model('resnet20_mn.cifar11')


def test_lenet_img_size():
    m = timm.create_model('lenet_mn', img_size=28, num_classes=10).eval()
    with torch.no_grad():
        assert m(torch.randn(2, 3, 28, 28)).shape == (2, 10)
    with pytest.raises(ValueError, match='img_size'):
        m(torch.randn(2, 3, 32, 32))


def test_default_cfgs():
    import mnzoo.weights as W
    published = set(W.published())
    expect_tags = {'lenet': ['multidomain'], 'resnet18': ['in1k']}
    small_batch = {'lenet_gn', 'lenet_mgn'}  # Table 2 models: the N=8 tag comes first (their default)
    short_schedule = {'resnet20_bn', 'resnet20_mn'}  # + the 40-epoch weights; cifar10 stays the default
    for arch in EXPECTED_NAMES:
        cfgs = timm.models.get_arch_pretrained_cfgs(arch)
        tags = [n.split('.', 1)[1] for n in cfgs]
        expected = expect_tags.get(_family(arch), ['cifar10', 'cifar100'])
        if arch in small_batch:
            assert tags[0] == 'multidomain_n8', arch
            expected = ['multidomain_n8'] + expected
        if arch in short_schedule:
            assert tags[0] == 'cifar10', arch
            expected = expected + ['cifar10_40ep']
        assert sorted(tags) == sorted(expected)
        for full, cfg in cfgs.items():
            assert cfg.paper_ids == 'arXiv:1810.05466' and cfg.license
            assert len(cfg.label_names) == cfg.num_classes
            assert cfg.first_conv and cfg.classifier
            assert (cfg.hf_hub_id == f'mnzoo/{full}') == (full in published)
            assert (cfg.hf_hub_id is None) == (full not in published)
    pretrained = {n for n in timm.list_pretrained() if n.split('.')[0] in EXPECTED_NAMES}
    assert pretrained == {n for n in published if n.split('.')[0] in EXPECTED_NAMES}

    c10 = timm.models.get_pretrained_cfg('resnet20_mn.cifar10')
    assert c10.label_names[:3] == ('airplane', 'automobile', 'bird') and c10.label_names[-1] == 'truck'
    assert c10.mean == (0.4914, 0.4822, 0.4465) and c10.std == (0.2470, 0.2435, 0.2616)
    assert c10.input_size == (3, 32, 32)
    c100 = timm.models.get_pretrained_cfg('nin_mn.cifar100').label_names
    assert len(set(c100)) == 100 and list(c100) == sorted(c100)  # the meta file lists fine labels alphabetically
    assert c100[0] == 'apple' and c100[-1] == 'worm'
    md = timm.models.get_pretrained_cfg('lenet_mn.multidomain')
    assert md.num_classes == 40 and md.input_size == (3, 32, 32)
    assert md.label_names[0] == 'mnist/0' and md.label_names[10] == 'cifar10/airplane'
    assert md.label_names[20] == 'svhn/0' and md.label_names[39] == 'fashion_mnist/Ankle boot'
    # the data pipeline builds the same 40-way label space
    from mnzoo.data import multidomain_classes
    assert list(md.label_names) == multidomain_classes()
    inet = timm.models.get_pretrained_cfg('resnet18_mn.in1k')
    assert inet.mean == timm.data.IMAGENET_DEFAULT_MEAN and inet.num_classes == 1000
    assert inet.label_names[0] == 'n01440764'


# ---------------------------------------------------------------------------------------------- pretrained

@pytest.fixture
def published_resnet20_mn(tmp_path, monkeypatch):
    """A real published weight for resnet20_mn.cifar10: safetensors file in a weights dir + manifest."""
    from safetensors.torch import save_file
    torch.manual_seed(0)
    src = timm.create_model('resnet20_mn', num_classes=10)
    with torch.no_grad():
        for p in src.parameters():
            p.add_(torch.randn_like(p) * 0.1)
    sd = {k: v.contiguous() for k, v in src.state_dict().items()}
    folder = tmp_path / 'cards' / 'resnet20_mn.cifar10'
    folder.mkdir(parents=True)
    path = folder / 'model.safetensors'
    save_file(sd, str(path))
    manifest = {'resnet20_mn.cifar10': {
        'hf_hub_id': 'mnzoo/resnet20_mn.cifar10', 'sha256': hashlib.sha256(path.read_bytes()).hexdigest(),
        'file_size': path.stat().st_size, 'num_params': _nparams(src), 'metrics': {}}}
    (tmp_path / 'manifest.json').write_text(json.dumps(manifest))
    monkeypatch.setenv('MNZOO_MANIFEST', str(tmp_path / 'manifest.json'))
    monkeypatch.setenv('MNZOO_WEIGHTS_DIR', str(tmp_path / 'cards'))
    monkeypatch.setenv('HF_HUB_OFFLINE', '1')
    return sd


def test_pretrained_loads_verified_file(published_resnet20_mn):
    sd = published_resnet20_mn
    model = timm.create_model('resnet20_mn.cifar10', pretrained=True)
    got = model.state_dict()
    assert set(got) == set(sd)
    assert all(torch.equal(got[k], sd[k]) for k in sd)
    assert model.pretrained_cfg['tag'] == 'cifar10'


def test_pretrained_new_classifier_and_in_chans(published_resnet20_mn, caplog):
    sd = published_resnet20_mn
    with caplog.at_level(logging.INFO):
        model = timm.create_model('resnet20_mn.cifar10', pretrained=True, num_classes=5, in_chans=1)
    assert 're-initialising the classifier' in caplog.text
    assert 'in_chans=1 differs' in caplog.text
    got = model.state_dict()
    assert got['fc.weight'].shape == (5, 64)
    assert torch.equal(got['layer3.2.bn2.gate.weight'], sd['layer3.2.bn2.gate.weight'])
    assert torch.equal(got['layer1.0.conv1.weight'], sd['layer1.0.conv1.weight'])
    # timm adapts an RGB stem to one channel by summing over the input channels
    assert torch.allclose(got['conv1.weight'], sd['conv1.weight'].sum(1, keepdim=True))


def test_pretrained_features_only(published_resnet20_mn):
    sd = published_resnet20_mn
    feats = timm.create_model('resnet20_mn.cifar10', pretrained=True, features_only=True, out_indices=(3,))
    assert torch.equal(feats.state_dict()['layer3.2.conv2.weight'], sd['layer3.2.conv2.weight'])
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        (out,) = feats.eval()(x)
    assert out.shape == (2, 64, 8, 8)
    getter = timm.create_model('resnet20_mn.cifar10', pretrained=True, features_only=True, feature_cls='getter',
                               out_indices=(3,))
    with torch.no_grad():
        assert torch.equal(getter.eval()(x)[0], out)  # the same weights through forward_intermediates


def test_pretrained_with_another_num_modes_is_named_before_loading():
    """The published weights fix K; another num_modes is a clear error, not a size-mismatch dump."""
    with pytest.raises(ValueError, match=r'lenet_mn.multidomain was trained with num_modes=2, got num_modes=4'):
        timm.create_model('lenet_mn.multidomain', pretrained=True, num_modes=4)
    with pytest.raises(ValueError, match=r'resnet20_mn.cifar10 was trained with num_modes=2, got num_modes=1'):
        timm.create_model('resnet20_mn', pretrained=True, num_modes=1)  # the default tag
    assert timm.create_model('lenet_mn.multidomain', pretrained=True, num_modes=2).stages[0][1].num_modes == 2


def test_pretrained_errors(published_resnet20_mn):
    from mnzoo.weights import IntegrityError, WeightsNotFoundError
    with pytest.raises(WeightsNotFoundError, match='resnet56_mn'):
        timm.create_model('resnet56_mn', pretrained=True)
    with pytest.raises(WeightsNotFoundError, match='resnet20_mn.cifar100'):
        timm.create_model('resnet20_mn.cifar100', pretrained=True)
    with pytest.raises(ValueError, match='in_chans'):
        timm.create_model('resnet20_mn.cifar10', pretrained=True, in_chans=0)
    import os
    path = os.path.join(os.environ['MNZOO_WEIGHTS_DIR'], 'resnet20_mn.cifar10', 'model.safetensors')
    data = bytearray(open(path, 'rb').read())
    data[-1] ^= 0xFF
    open(path, 'wb').write(bytes(data))
    with pytest.raises(IntegrityError, match='sha256'):
        timm.create_model('resnet20_mn.cifar10', pretrained=True)
