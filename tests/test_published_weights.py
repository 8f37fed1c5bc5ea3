"""Every published weight reproduces its card: `mnzoo eval <arch>.<tag> --data <the run's eval sources>`
gives exactly the card's top-1 / top-5, for each eval set whose data is present on this machine."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from mnzoo.data import load_source

REPO = Path(__file__).resolve().parents[1]
FOLDERS = sorted(p for p in (REPO / "weights_cards").glob("*.*") if (p / "config.json").is_file())


def _path_of(spec: str) -> Path:
    """The file or folder a ``domain=path[@split]`` source reads (relative to the repo root)."""
    path = spec.split("=", 1)[1].rsplit("@", 1)[0] if "@" in spec else spec.split("=", 1)[1]
    return (REPO / path).resolve() if not Path(path).is_absolute() else Path(path)


def _cases():
    for folder in FOLDERS:
        mz = json.loads((folder / "config.json").read_text())["mnzoo"]
        for name, specs in (mz.get("eval_data") or {}).items():
            yield pytest.param(folder, name, specs, mz["metrics"][name], id=f"{folder.name}:{name}")


def test_every_published_weight_records_its_eval_data():
    """...and its card shows the `mnzoo eval` commands for them (the commands the next test runs)."""
    from mnzoo.hub.card import render_reproduce
    assert FOLDERS, "no published weights in weights_cards/"
    for folder in FOLDERS:
        mz = json.loads((folder / "config.json").read_text())["mnzoo"]
        assert mz.get("eval_data"), f"{folder.name}: config.json records no eval_data"
        assert set(mz["eval_data"]) == set(mz["metrics"]), folder.name
        card = (folder / "README.md").read_text()
        assert render_reproduce(folder.name, mz["eval_data"]) in card, folder.name
        for set_name, specs in mz["eval_data"].items():
            assert f"mnzoo eval {folder.name} --data {' '.join(specs)}   # {set_name}" in card


@pytest.fixture(scope="module")
def data_cache(tmp_path_factory):
    """One fresh decode cache for all cards (the real decode path, done once)."""
    return tmp_path_factory.mktemp("mnzoo-cache")


@pytest.mark.parametrize("folder,eval_set,specs,expected", list(_cases()))
def test_mnzoo_eval_reproduces_the_card(folder, eval_set, specs, expected, data_cache):
    missing = [s for s in specs if not _path_of(s).exists()]
    if missing:
        pytest.skip(f"eval data not on this machine: {missing}")
    out = subprocess.run(
        [sys.executable, "-m", "mnzoo.cli", "eval", folder.name, "--data", *specs, "--json", "--quiet"],
        cwd=REPO, capture_output=True, text=True, timeout=900,
        env={**os.environ, "MNZOO_CACHE": str(data_cache)})
    assert out.returncode == 0, out.stderr
    got = json.loads(out.stdout.strip().splitlines()[-1])
    assert got["num_samples"] == expected["n"]
    assert got["top1"] == expected["top1"]
    assert got["top5"] == expected["top5"]
    for dom, acc in expected.get("top1_per_domain", {}).items():
        assert got["top1_per_domain"][dom] == acc


def test_readme_model_table_is_current():
    """The README's table is `mnzoo table` output: made from the registry and the cards, never by hand."""
    from mnzoo.hub import model_table
    readme = (REPO / "README.md").read_text()
    start, end = "<!-- model-table -->\n", "\n<!-- /model-table -->"
    assert start in readme and end in readme
    current = readme[readme.index(start) + len(start):readme.index(end)]
    assert current.strip() == model_table().strip(), "README model table is stale: run `mnzoo table`"


def _card_usage(folder: Path) -> str:
    card = (folder / "README.md").read_text()
    return card[card.index("## Usage\n"):card.index("## Training\n")]


def _first_image(spec: str, cache: Path, multidomain: bool):
    """(the first image of a source as the eval pipeline reads it, normalised, and as uint8 HWC array)."""
    from mnzoo.data import TensorLoader, build_dataset
    data = build_dataset([spec], multidomain=multidomain, cache_dir=cache)
    x, _, _ = next(iter(TensorLoader(data.subset(torch.arange(1)), 1)))
    raw = load_source(spec, cache)[0][0]  # (C, H, W) uint8, before padding
    return x[0], raw.permute(1, 2, 0).squeeze(-1).numpy()


@pytest.mark.parametrize("folder", FOLDERS, ids=[f.name for f in FOLDERS])
def test_card_usage_snippet_runs_and_preprocesses_like_eval(folder, data_cache, tmp_path, monkeypatch):
    """The card's Usage code is render_usage's, and run as written (on a real test image) it gives the
    probabilities of the eval pipeline (mnzoo.data, which measured the card's numbers) for that image."""
    from PIL import Image

    import mnzoo  # noqa: F401  (registers the models in timm)
    import timm
    from mnzoo.hub.card import render_usage
    usage = _card_usage(folder)
    assert usage == render_usage(folder.name) + "\n", "card Usage section is stale: rerun render_usage"
    mz = json.loads((folder / "config.json").read_text())["mnzoo"]
    multidomain = folder.name.split(".", 1)[1].startswith("multidomain")
    domain = "mnist" if multidomain else "cifar10"
    spec = next(s for specs in mz["eval_data"].values() for s in specs if s.startswith(domain + "="))
    if not _path_of(spec).exists():
        pytest.skip(f"{spec} not on this machine")
    spec = spec.split("=", 1)[0] + "=" + str(_path_of(spec)) + ("@" + spec.rsplit("@", 1)[1] if "@" in spec else "")
    x, raw = _first_image(spec, data_cache, multidomain)
    Image.fromarray(raw).save(tmp_path / ("digit.png" if multidomain else "image.png"))
    code = usage.split("```python\n", 1)[1].split("```", 1)[0]
    monkeypatch.chdir(tmp_path)
    namespace: dict = {}
    exec(compile(code, f"{folder.name}/README.md", "exec"), namespace)
    # the snippet's preprocessing is the eval pipeline's, to float rounding (a wrong mean/std, resize or
    # padding would be off by >= one grey level, ~0.015 after normalisation) ...
    torch.testing.assert_close(namespace["transform"](namespace["image"]), x, rtol=0, atol=1e-6)
    # ... so its probabilities are too: the rounding reaches them through the logits, hence atol 1e-5
    model = timm.create_model(folder.name, pretrained=True).eval()
    with torch.no_grad():
        expected = model(x[None]).softmax(dim=1)[0]
    torch.testing.assert_close(namespace["probs"], expected, rtol=0, atol=1e-5)


@pytest.mark.parametrize("folder", [f for f in FOLDERS if not f.name.split(".", 1)[1].startswith("multidomain")],
                         ids=lambda f: f.name)
def test_timm_eval_transform_reproduces_the_card(folder):
    """A timm user's own pipeline (create_dataset on the ImageFolder tar, the eval transform from
    resolve_model_data_config) gives exactly the card's top-1 / top-5 on the 1k lossless set."""
    import mnzoo  # noqa: F401
    import timm
    from timm.data import create_dataset, create_transform, resolve_model_data_config
    mz = json.loads((folder / "config.json").read_text())["mnzoo"]
    small = {k: v for k, v in mz["eval_data"].items() if mz["metrics"][k]["n"] <= 1000}
    assert small, f"{folder.name}: no eval set of <= 1000 images to check the timm path on"
    for name, (spec,) in small.items():
        path = _path_of(spec)
        if not path.exists():
            pytest.skip(f"{path} not on this machine")
        model = timm.create_model(folder.name, pretrained=True).eval()
        transform = create_transform(**resolve_model_data_config(model), is_training=False)
        ds = create_dataset("", root=str(path), transform=transform)
        hit1 = hit5 = 0
        with torch.no_grad():
            for x, y in torch.utils.data.DataLoader(ds, batch_size=250):
                top5 = model(x).topk(5, dim=1).indices
                hit1 += int((top5[:, 0] == y).sum())
                hit5 += int((top5 == y[:, None]).any(dim=1).sum())
        expected = mz["metrics"][name]
        assert len(ds) == expected["n"]
        assert (round(100.0 * hit1 / len(ds), 4), round(100.0 * hit5 / len(ds), 4)) == \
            (expected["top1"], expected["top5"]), name
