"""training/sweeps/summarize.py: the reproduction tables are computed from the runs' metrics.json."""
from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "training" / "sweeps" / "summarize.py"


@pytest.fixture(scope="module")
def summarize():
    spec = importlib.util.spec_from_file_location("sweeps_summarize", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def _run(root: Path, name: str, model: str, seed: int, top1: float, best: float, **kw) -> None:
    folder = root / name
    folder.mkdir(parents=True)
    (folder / "metrics.json").write_text(json.dumps({
        "model": model, "seed": seed, "model_kwargs": kw,
        "eval": {"test": {"top1": top1, "top1_per_domain": {"mnist": top1 + 10}}},
        "best": {"top1": best, "eval_set": "test"}}))


def test_mean_and_sample_std_over_seeds_and_block_update(tmp_path, summarize):
    for seed, top1 in enumerate((80.0, 82.0, 84.0)):
        _run(tmp_path, f"lenet_mgn-smallbatch8-s{seed}", "lenet_mgn", seed, top1, top1 + 1)
    _run(tmp_path, "lenet_bn-smallbatch8-s0", "lenet_bn", 0, 79.5, 80.0)
    _run(tmp_path, "lenet_bn-multidomain-s0", "lenet_bn", 0, 10.0, 10.0)  # another table: not matched
    table = summarize.summarize(summarize.load_runs(tmp_path, "*-smallbatch8-s*"), "test")
    rows = {line.split("|")[1].strip(): line for line in table.splitlines()[2:]}
    assert set(rows) == {"`lenet_bn`", "`lenet_mgn`"}
    # error = 100 - top-1: 20, 18, 16 -> mean 18, sample std 2; best 19, 17, 15 -> 17 ± 2
    assert "| 0,1,2 | 18.00 ± 2.00 | 17.00 ± 2.00 | 92.00 ± 2.00 |" in rows["`lenet_mgn`"]
    assert "| 2 | 0,1,2 |" in rows["`lenet_mgn`"]  # K defaults to 2 for mode norms
    assert "| – | 0 | 20.50 | 20.00 | 89.50 |" in rows["`lenet_bn`"]

    doc = tmp_path / "doc.md"
    doc.write_text("intro\n<!-- table2 -->\nold\n<!-- /table2 -->\nrest\n")
    out = subprocess.run([sys.executable, str(SCRIPT), str(tmp_path), "--glob", "*-smallbatch8-s*",
                          "--update", str(doc), "--marker", "table2"], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    text = doc.read_text()
    assert text.startswith("intro\n<!-- table2 -->\n| model |") and text.endswith("<!-- /table2 -->\nrest\n")
    assert "old" not in text and "18.00 ± 2.00" in text
    with pytest.raises(ValueError, match="table3"):
        summarize.update_block(text, "table3", table)
