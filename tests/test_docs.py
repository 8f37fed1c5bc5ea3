"""The Python examples in README.md and docs/weights.md run as written, so the docs cannot rot.

Each file's ```python blocks run in order in one namespace (later blocks use earlier imports), from
the repository root. Placeholders are filled in: the checkout path for torch.hub, and, for the one
line that loads from the Hub, a fresh repo on the local olah server holding the published folder
(the session's mirror may already hold a test repo under the real name).
"""
import re
import uuid
from pathlib import Path

import pytest
import torch
from torch import nn

import mnzoo

from conftest import REPO_ROOT

BLOCK = re.compile(r'^```python\n(.*?)^```', re.S | re.M)


def _run_blocks(path: Path, replacements: dict) -> dict:
    text = path.read_text(encoding='utf-8')
    blocks = BLOCK.findall(text)
    assert blocks, f'no python examples in {path.name}'
    ns: dict = {}
    for i, code in enumerate(blocks, 1):
        for old, new in replacements.items():
            code = code.replace(old, new)
        exec(compile(code, f'{path.name}, python block {i}', 'exec'), ns)
    return ns


def test_readme_examples_run(monkeypatch):
    monkeypatch.chdir(REPO_ROOT)
    ns = _run_blocks(REPO_ROOT / 'README.md', {'<path to an mnzoo checkout>': str(REPO_ROOT)})
    assert ns['y'].shape == (8, 64, 32, 32)
    assert sum(isinstance(m, mnzoo.ModeNorm2d) for m in ns['net'].modules()) == 20
    assert type(ns['model']).__name__ == 'LeNet' and ns['model'].get_classifier().out_features == 5
    assert [m.shape[1] for m in ns['maps']] == [6, 16]  # LeNet's two conv stages (the last `model`)
    assert ns['feats'](torch.randn(2, 3, 32, 32))[-1].shape == (2, 64, 8, 8)


def test_weights_doc_examples_run(hf_hub_env, monkeypatch):
    monkeypatch.setenv('MNZOO_WEIGHTS_DIR', str(REPO_ROOT / 'weights_cards'))  # the checkout's weights
    monkeypatch.chdir(REPO_ROOT)
    repo_id = f'mnzoo-docs-{uuid.uuid4().hex[:8]}/resnet20_mn.cifar10'
    hf_hub_env.add_repo(repo_id, REPO_ROOT / 'weights_cards' / 'resnet20_mn.cifar10')
    ns = _run_blocks(REPO_ROOT / 'docs' / 'weights.md', {
        'hf-hub:mnzoo/resnet20_mn.cifar10': f'hf-hub:{repo_id}', '<checkout>': str(REPO_ROOT)})
    model = ns['model']
    assert isinstance(model, nn.Module) and model.get_classifier().out_features == 5
    assert ns['x'].shape == ns['digit'].shape == (3, 32, 32) and ns['logits'].shape == (1, 40)
    assert float(ns['digit'][0, 0, 0]) == pytest.approx(-0.1307 / 0.3081, abs=1e-6)  # black pad, MNIST stats


@pytest.mark.parametrize('doc', ['README.md', 'docs/weights.md', 'docs/layers.md', 'docs/reproduction.md',
                                 'training/README.md', 'benchmarks/README.md'])
def test_relative_links_in_docs_resolve(doc):
    """Every relative link or image in the docs points at a file or folder that exists."""
    path = REPO_ROOT / doc
    links = re.findall(r'\]\(([^)\s]+)\)', path.read_text(encoding='utf-8'))
    missing = [t for t in links if not re.match(r'[a-z]+:', t) and not t.startswith('#')
               and not (path.parent / t.split('#', 1)[0]).exists()]
    assert missing == []
