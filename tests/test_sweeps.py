"""training/sweeps/summarize.py: the reproduction tables are computed from the runs' metrics.json."""
from __future__ import annotations

import csv
import importlib.util
import json
import os
import shutil
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



def test_curves_of_unfinished_runs_count_a_resumed_epoch_once(tmp_path, summarize):
    """--curves: per run folder, the last epoch and the mean of the last N, from summary.csv; an
    epoch logged again after a resume counts once (its later row), a set a run lacks shows '–'."""
    a, b = tmp_path / "run_a", tmp_path / "run_b"
    a.mkdir()
    b.mkdir()
    (a / "summary.csv").write_text(
        "epoch,train_top1,lr,x_top1,y_top1\n0,50,0.1,10,1\n1,60,0.1,20,2\n1,61,0.1,30,3\n2,70,0.01,40,4\n")
    (b / "summary.csv").write_text("epoch,train_top1,lr,x_top1\n0,50,0.1,70\n")
    table = summarize.curves([a, b], last=2).splitlines()
    assert table[0] == "| run | epochs done | lr | x top-1 last | mean last 2 | y top-1 last | mean last 2 |"
    assert table[2] == "| `run_a` | 3 | 0.01 | 40.00 | 35.00 | 4.00 | 3.50 |"  # rows of epochs 1 (later), 2
    assert table[3] == "| `run_b` | 1 | 0.1 | 70.00 | 70.00 | – | – |"
    out = subprocess.run([sys.executable, str(SCRIPT), "--curves", str(a), str(tmp_path / "missing")],
                         capture_output=True, text=True)
    assert out.returncode != 0 and "missing/summary.csv does not exist" in out.stderr
    doc = tmp_path / "doc.md"
    doc.write_text("a\n<!-- curves -->\nold\n<!-- /curves -->\nb\n")
    out = subprocess.run([sys.executable, str(SCRIPT), "--curves", str(a), str(b), "--last", "2", "--update",
                          str(doc), "--marker", "curves"], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert doc.read_text() == "a\n<!-- curves -->\n" + "\n".join(table) + "\n<!-- /curves -->\nb\n"

SHARED_DATA = ROOT.parent / "shared" / "data"
SHARED_1K = SHARED_DATA / "cifar10" / "test-lossless-1k.tar"
SWEEP_160 = ROOT / "training" / "sweeps" / "resnet20_cifar10_160.sh"


@pytest.mark.skipif(not SHARED_1K.is_file(), reason="shared data (../shared/data) not present")
def test_resnet20_160_script_trains_both_and_publishes_their_cards(tmp_path):
    """resnet20_cifar10_160.sh: `train` runs MN and BN with the paper recipe (here on 64 real
    CIFAR-10 images for 2 epochs), a second `train` skips finished runs, and `publish` writes
    cards whose numbers are the runs' metrics.json, manifest entries and the logs."""
    import torch
    from safetensors.torch import load_file

    out, weights, logs = tmp_path / "runs", tmp_path / "weights", tmp_path / "logs"
    manifest, readme = tmp_path / "manifest.json", tmp_path / "README.md"
    shutil.copy(ROOT / "mnzoo" / "weights_manifest.json", manifest)
    shutil.copy(ROOT / "README.md", readme)
    data = f"cifar10={SHARED_1K}"
    env = {**os.environ, "WEIGHTS": str(weights), "LOGS": str(logs), "MNZOO_MANIFEST": str(manifest),
           "README": str(readme),
           "TRAIN_ARGS": f"--train-data {data} --train-subset 64 --eval-data test-lossless-1k:{data} "
                         f"--eval-subset 100 --batch-size 32 --epochs 2 --decay-milestones 1 "
                         f"--cache-dir {tmp_path / 'cache'}"}

    def sweep(*args, ok=True):
        proc = subprocess.run(["bash", str(SWEEP_160), *args], cwd=tmp_path, env=env, capture_output=True,
                              text=True, timeout=900)
        assert (proc.returncode == 0) == ok, proc.stdout[-3000:] + proc.stderr[-3000:]
        return proc

    r = sweep("publish", str(out), ok=False)
    assert "not finished" in r.stderr
    sweep("train", str(out))
    report = sweep("report", str(out)).stdout.splitlines()
    assert report[0].startswith("| run | epochs done | lr | test-lossless-1k top-1 last | mean last 5 |")
    doc = tmp_path / "report.md"
    doc.write_text("<!-- t -->\n<!-- /t -->\n")
    sweep("report", str(out), "--update", str(doc), "--marker", "t")
    assert doc.read_text() == "<!-- t -->\n" + "\n".join(report) + "\n<!-- /t -->\n"
    assert "skip resnet20_mn-cifar10-160ep-s0 (done)" in sweep("train", str(out)).stdout
    sweep("publish", str(out))

    entries = json.loads(manifest.read_text())
    for m in ("mn", "bn"):
        run = out / f"resnet20_{m}-cifar10-160ep-s0"
        metrics = json.loads((run / "metrics.json").read_text())
        assert metrics["seed"] == 0 and metrics["epochs"] == 2
        assert "--channels-last" in metrics["command"] and "--threads 1" in metrics["command"]
        name = f"resnet20_{m}.cifar10"
        folder = weights / name
        card = (folder / "README.md").read_text()
        top1 = metrics["eval"]["test-lossless-1k"]["top1"]
        assert f"| test-lossless-1k | {top1:.2f} |" in card
        assert "the paper's 160 epochs" in card and f"resnet20_{m}.cifar10_40ep" in card
        assert "Trained in several segments" in card
        assert f"mnzoo eval {name} --data cifar10={SHARED_1K}   # test-lossless-1k" in card
        assert ("MN with K=2" in card) == (m == "mn")
        config = json.loads((folder / "config.json").read_text())
        assert entries[name]["sha256"] == config["mnzoo"]["sha256"] != "0" * 64
        ckpt = torch.load(run / "last.pth.tar", map_location="cpu", weights_only=False)  # our own run
        published = load_file(folder / "model.safetensors")
        assert all(published[k].equal(v) for k, v in ckpt["state_dict"].items())
        assert sorted(p.name for p in (logs / name).iterdir()) == ["config.yaml", "metrics.json", "summary.csv"]
        assert f"| `{name}` | {config['mnzoo']['num_params']:,} |" in readme.read_text()
        assert f"{top1:.2f} (test-lossless-1k) |" in readme.read_text().split(f"| `{name}` |")[1].splitlines()[0]
        # report: the last epoch is the published one; the mean is over both epochs' summary rows
        with open(run / "summary.csv", newline="") as f:
            rows = list(csv.DictReader(f))
        curve = [float(r["test-lossless-1k_top1"]) for r in rows]
        assert len(curve) == 2
        row = [c.strip() for c in next(line for line in report if f"`{run.name}`" in line).strip("|").split("|")]
        assert row[1:5] == ["2", f"{float(rows[-1]['lr']):.4g}", f"{top1:.2f}", f"{sum(curve) / 2:.2f}"]
    assert readme.read_text() != (ROOT / "README.md").read_text()  # the table took the new numbers


def test_lenet_table_sweeps_name_skip_and_report_their_runs(tmp_path, summarize):
    """table1_lenet.sh, table2_small_batch.sh and table6_large_batch.sh (through lenet_sweep.sh) on
    tiny real data: one run
    per <model>[:K]:<seed> named as the tables expect, into a folder they create; finished runs are
    skipped; a failing run is reported and the sweep goes on; summarize.py reads the result."""
    mnist, cifar = f"mnist={SHARED_DATA / 'mnist'}@test", f"cifar10={SHARED_1K}"
    quick = ["--", "--train-data", mnist, cifar, "--train-subset", "64", "--eval-data", f"test:{mnist},{cifar}",
             "--eval-subset", "64", "--batch-size", "32", "--schedule-unit", "updates", "--schedule-length", "4",
             "--decay-milestones", "2", "3",
             "--cache-dir", str(tmp_path / "cache")]
    out = tmp_path / "runs" / "new"  # does not exist yet

    def sweep(script, *args, env=None):
        proc = subprocess.run(["bash", str(ROOT / "training" / "sweeps" / script), *args], cwd=tmp_path,
                              capture_output=True, text=True, timeout=600, env={**os.environ, **(env or {})})
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
        return proc.stdout

    assert "FAILED lenet_nope-multidomain-s0" in sweep("table1_lenet.sh", str(out), "lenet_mn:4:0", "lenet_bn:1",
                                                       "lenet_nope:0", *quick)
    log = sweep("table1_lenet.sh", str(out), "lenet_mn:4:0", "lenet_bn:1", *quick)
    assert "skip lenet_mn_k4-multidomain-s0 (done)" in log and "skip lenet_bn-multidomain-s1 (done)" in log
    sweep("table2_small_batch.sh", str(out), "lenet_mgn:2", *quick, env={"BATCH": "16"})
    sweep("table6_large_batch.sh", str(out), "lenet_ln:0", *quick, env={"BATCH": "48"})
    done = sorted(p.parent.name for p in out.glob("*/metrics.json"))
    assert done == ["lenet_bn-multidomain-s1", "lenet_ln-multidomain_n48-s0", "lenet_mgn-smallbatch16-s2",
                    "lenet_mn_k4-multidomain-s0"]
    assert json.loads((out / "lenet_ln-multidomain_n48-s0" / "metrics.json").read_text())["batch_size"] == 48
    assert (out / "lenet_nope-multidomain-s0.log").read_text().strip()  # the failure kept its log
    m = json.loads((out / "lenet_mn_k4-multidomain-s0" / "metrics.json").read_text())
    assert (m["seed"], m["model_kwargs"], m["updates"]) == (0, {"num_modes": 4}, 4)
    mgn = json.loads((out / "lenet_mgn-smallbatch16-s2" / "metrics.json").read_text())
    assert mgn["seed"] == 2 and "--batch-size 16" in mgn["command"]
    table = summarize.summarize(summarize.load_runs(out, "*-multidomain-s*"), "test")
    assert "lenet_bn" in table and "| lenet_mn | 4 |" in table.replace("`", "")
