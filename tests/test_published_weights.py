"""Every published weight reproduces its card: `mnzoo eval <arch>.<tag> --data <the run's eval sources>`
gives exactly the card's top-1 / top-5, for each eval set whose data is present on this machine."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

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
    assert FOLDERS, "no published weights in weights_cards/"
    for folder in FOLDERS:
        mz = json.loads((folder / "config.json").read_text())["mnzoo"]
        assert mz.get("eval_data"), f"{folder.name}: config.json records no eval_data"
        assert set(mz["eval_data"]) == set(mz["metrics"]), folder.name


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
