"""training/train.py and validate.py end to end, on small subsets of the real shared data.

Runs are real subprocesses (python training/train.py, torchrun with gloo), with real timm models
from the zoo; outputs are read back from the run folder. Sizes are tiny so the file runs in
about a minute on two (shared) cores.
"""
from __future__ import annotations

import csv
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared" / "data"
TRAIN = REPO / "training" / "train.py"
VALIDATE = REPO / "training" / "validate.py"
RECIPES = sorted((REPO / "training" / "recipes").glob("*.yaml"))

needs_data = pytest.mark.skipif(not (SHARED / "mnist").is_dir() or not (SHARED / "cifar10").is_dir(),
                                reason="shared data (../shared/data) not present")

MNIST = f"mnist={SHARED / 'mnist'}@test"
CIFAR = f"cifar10={SHARED / 'cifar10' / 'test-lossless-1k.tar'}"


def run(args, cwd=REPO, timeout=600, env=None):
    proc = subprocess.run(args, cwd=cwd, capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, **(env or {})})
    if proc.returncode != 0:
        raise AssertionError(f"{' '.join(map(str, args))} failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n"
                             f"{proc.stderr[-6000:]}")
    return proc.stdout


def rows(run_dir: Path):
    with open(run_dir / "summary.csv", newline="") as f:
        return list(csv.DictReader(f))


def load(path: Path):
    return torch.load(path, map_location="cpu", weights_only=False)


@pytest.fixture(scope="session")
def cache_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("mnzoo_cache")


def lenet_args(out: Path, cache: Path, experiment: str, epochs: int = 2):
    """A LeNet-MN run on a 640-image multi-domain subset (MNIST + CIFAR-10), lr step after epoch 1."""
    return [sys.executable, str(TRAIN), "--model", "lenet_mn", "--dataset", "multidomain",
            "--train-data", MNIST, CIFAR, "--train-subset", "640",
            "--eval-data", f"mix:{MNIST},{CIFAR}", f"cifar:{CIFAR}", "--eval-subset", "300",
            "--batch-size", "64", "--lr", "0.05", "--epochs", str(epochs), "--decay-milestones", "1",
            "--crop-pad", "2", "--hflip", "--seed", "7", "--threads", "1", "--log-interval", "5",
            "--cache-dir", str(cache), "--output", str(out), "--experiment", experiment]


@pytest.fixture(scope="module")
def lenet_run(tmp_path_factory, cache_dir):
    if not (SHARED / "mnist").is_dir():
        pytest.skip("shared data not present")
    out = tmp_path_factory.mktemp("runs")
    stdout = run(lenet_args(out, cache_dir, "full"))
    return out / "full", stdout


# ---------------------------------------------------------------- recipes
@pytest.mark.parametrize("recipe", RECIPES, ids=[r.stem for r in RECIPES])
def test_recipe_parses_and_builds(recipe):
    sys.path.insert(0, str(REPO / "training"))
    import train  # noqa: E402

    cfg = yaml.safe_load(recipe.read_text())
    text = recipe.read_text()
    assert text.startswith("#") and ("Table" in text.split("model:")[0]), "recipes cite the paper's table"
    args = train.parse_args(["--config", str(recipe)])
    args.num_classes = {"multidomain": 40, "imagefolder": 1000}.get(args.dataset) or \
        (100 if "cifar100" in args.train_data[0] else 10)
    model, optimizer, scaler = train.create_model_and_optimizer(args, torch.device("cpu"))
    upe = 10
    scheduler = train.create_schedule(args, optimizer, upe)
    size = 64 if args.dataset == "imagefolder" else 32
    model.eval()
    with torch.no_grad():
        assert model(torch.randn(2, 3, size, size)).shape == (2, args.num_classes)
    # The lr the schedule gives just before and after the first milestone, in the recipe's unit.
    epochs, max_updates, milestones, per_epoch = train.schedule_epochs(args, upe)
    first = milestones[0]
    if per_epoch:
        scheduler.step(int(first) - 1)
        before = optimizer.param_groups[0]["lr"]
        scheduler.step(int(first))
    else:
        scheduler.step_update(first - 1)  # lr of update index first - 1
        before = optimizer.param_groups[0]["lr"]
        scheduler.step_update(first)
    assert before == pytest.approx(cfg["lr"])
    assert optimizer.param_groups[0]["lr"] == pytest.approx(cfg["lr"] * cfg.get("decay_rate", 0.1))
    if cfg.get("schedule_unit") == "touches":  # lr drops after ceil(touches / N) updates
        assert first == -(-cfg["decay_milestones"][0] // cfg["batch_size"])
        assert max_updates == -(-cfg["schedule_length"] // cfg["batch_size"])


def test_bad_recipe_key_is_named(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("model: lenet_mn\nlearning_rate: 0.1\ntrain_data: [mnist=x]\n")
    proc = subprocess.run([sys.executable, str(TRAIN), "--config", str(bad)], capture_output=True, text=True,
                          cwd=REPO, timeout=120)
    assert proc.returncode != 0 and "learning_rate" in proc.stderr



@pytest.mark.parametrize("flags,message", [
    (["--lr=-0.1"], "--lr must be >= 0, got -0.1"),
    (["--batch-size", "0"], "--batch-size must be >= 1, got 0"),
    (["--epochs", "0"], "--epochs must be >= 1, got 0"),
    (["--momentum", "1"], "--momentum must be in [0, 1), got 1.0"),
    (["--weight-decay=-1e-4"], "--weight-decay must be >= 0, got -0.0001"),
    (["--decay-milestones", "120", "80"], "--decay-milestones must be >= 0 and increasing, got [120.0, 80.0]"),
    (["--train-subset", "0"], "--train-subset must be >= 1, got 0"),
    (["--model-ema-decay", "1.5"], "--model-ema-decay must be in (0, 1), got 1.5"),
])
def test_numbers_no_run_can_use_are_named_before_data_loads(flags, message, capsys):
    sys.path.insert(0, str(REPO / "training"))
    import train  # noqa: E402

    with pytest.raises(SystemExit) as exit_:
        train.parse_args(["--config", str(REPO / "training" / "recipes" / "resnet20_cifar10.yaml"),
                          "--model", "resnet20_mn", *flags])
    assert exit_.value.code == 2 and message in capsys.readouterr().err


def test_a_recipe_value_gets_the_same_check(tmp_path, capsys):
    sys.path.insert(0, str(REPO / "training"))
    import train  # noqa: E402

    recipe = tmp_path / "r.yaml"
    recipe.write_text("model: lenet_mn\ntrain_data: [mnist=x]\nbatch_size: 0\n")
    with pytest.raises(SystemExit):
        train.parse_args(["--config", str(recipe)])
    assert "--batch-size must be >= 1, got 0" in capsys.readouterr().err

# ---------------------------------------------------------------- a real run
@needs_data
def test_run_lowers_loss_and_writes_outputs(lenet_run):
    run_dir, stdout = lenet_run
    for name in ("config.yaml", "summary.csv", "last.pth.tar", "model_best.pth.tar", "metrics.json"):
        assert (run_dir / name).is_file(), name
    assert "img/s" in stdout and "eta" in stdout  # progress lines
    r = rows(run_dir)
    assert [int(x["epoch"]) for x in r] == [0, 1]
    for col in ("train_loss", "train_top1", "lr", "img_per_s", "epoch_time_s", "mix_top1", "cifar_top5"):
        assert col in r[0]
    assert float(r[1]["train_loss"]) < 0.95 * float(r[0]["train_loss"])
    assert float(r[0]["lr"]) == pytest.approx(0.05) and float(r[1]["lr"]) == pytest.approx(0.005)
    m = json.loads((run_dir / "metrics.json").read_text())
    assert set(m["eval"]) == {"mix", "cifar"}
    for res in m["eval"].values():
        assert 0 <= res["top1"] <= res["top5"] <= 100
    assert set(m["eval"]["mix"]["top1_per_domain"]) == {"mnist", "cifar10"}
    assert m["eval"]["mix"]["top1"] == float(r[1]["mix_top1"])  # metrics.json is the last epoch's model
    import mnzoo  # noqa: F401
    import timm

    assert m["params"] == sum(p.numel() for p in timm.create_model("lenet_mn", num_classes=40).parameters())
    assert m["epochs"] == 2 and m["seed"] == 7 and m["train_images"] == 640
    assert m["hardware"]["cpu"] and m["hardware"]["threads"] == 1
    assert m["wall_time_s"] > 0 and "train.py" in m["command"] and m["git_commit"]
    assert m["git_commits"] == [m["git_commit"]]
    cfg = yaml.safe_load((run_dir / "config.yaml").read_text())
    assert cfg["model"] == "lenet_mn" and cfg["resolved"]["updates_per_epoch"] == 10


@needs_data
def test_validate_reproduces_recorded_top1(lenet_run, cache_dir, tmp_path):
    run_dir, _ = lenet_run
    out = tmp_path / "val.json"
    run([sys.executable, str(VALIDATE), "--checkpoint", str(run_dir / "last.pth.tar"), "--cache-dir", str(cache_dir),
         "--output", str(out)])
    recorded = json.loads((run_dir / "metrics.json").read_text())["eval"]
    got = json.loads(out.read_text())["eval"]
    for name in ("mix", "cifar"):
        assert got[name]["top1"] == recorded[name]["top1"]
        assert got[name]["top5"] == recorded[name]["top5"]
        assert got[name]["n"] == recorded[name]["n"] == 300


@needs_data
def test_resume_continues_identically(lenet_run, cache_dir, tmp_path):
    """1 epoch, then --resume for the 2nd: same weights, running stats, optimizer state and lr as 2 straight."""
    full_dir, _ = lenet_run
    run(lenet_args(tmp_path, cache_dir, "split", epochs=1))
    part = tmp_path / "moved"
    (tmp_path / "split").rename(part)  # a resumed run continues in its checkpoint's folder, wherever it is
    first = load(part / "last.pth.tar")
    assert first["epoch"] == 0
    run([sys.executable, str(TRAIN), "--resume", str(part / "last.pth.tar"), "--epochs", "2"])
    a, b = load(full_dir / "last.pth.tar"), load(part / "last.pth.tar")
    assert a["epoch"] == b["epoch"] == 1
    assert a["state_dict"].keys() == b["state_dict"].keys()
    assert any("running_mean" in k for k in a["state_dict"])
    for k in a["state_dict"]:
        assert torch.equal(a["state_dict"][k], b["state_dict"][k]), k
    sa, sb = a["optimizer"], b["optimizer"]
    assert [g["lr"] for g in sa["param_groups"]] == [g["lr"] for g in sb["param_groups"]]
    for i in sa["state"]:
        assert torch.equal(sa["state"][i]["momentum_buffer"], sb["state"][i]["momentum_buffer"])
    ra, rb = rows(full_dir), rows(part)
    keep = ("epoch", "train_loss", "train_top1", "lr", "mix_top1", "mix_loss", "cifar_top1")
    assert [{k: r[k] for k in keep} for r in ra] == [{k: r[k] for k in keep} for r in rb]
    ma = json.loads((full_dir / "metrics.json").read_text())
    mb = json.loads((part / "metrics.json").read_text())
    assert ma["eval"] == mb["eval"] and mb["epochs"] == 2 and len(mb["commands"]) == 2
    assert len(mb["git_commits"]) == 2 and mb["git_commits"][-1] == mb["git_commit"]
    assert not (tmp_path / "split").exists()


def test_wall_time_survives_a_killed_segment(cache_dir, tmp_path):
    """A long run is stopped at a session's end and resumed: the wall time of a segment that never
    wrote metrics.json still counts (wall_time.json, rewritten at every checkpoint), and a run from
    before that file is counted from its summary rows and flagged as a lower bound."""
    if not (SHARED / "mnist").is_dir():
        pytest.skip("shared data not present")
    run(lenet_args(tmp_path, cache_dir, "seg", epochs=1))
    seg, old = tmp_path / "seg", tmp_path / "old"
    w1 = json.loads((seg / "wall_time.json").read_text())["wall_time_s"]
    m1 = json.loads((seg / "metrics.json").read_text())
    assert m1["wall_time_s"] >= w1 > 0 and m1["wall_time_lower_bound"] is False
    shutil.copytree(seg, old)
    resume = [sys.executable, str(TRAIN), "--epochs", "2", "--resume"]

    (seg / "metrics.json").unlink()  # killed after its epoch-0 checkpoint
    run(resume + [str(seg / "last.pth.tar")])
    m = json.loads((seg / "metrics.json").read_text())
    assert m["epochs"] == 2 and m["wall_time_lower_bound"] is False and m["wall_time_s"] > w1
    assert json.loads((seg / "wall_time.json").read_text())["epoch"] == 1
    # both processes are on record, the killed one included, with their epochs and commands
    s0, s1 = m["segments"]
    assert (s0["first_epoch"], s0["last_epoch"], s1["first_epoch"], s1["last_epoch"]) == (0, 0, 1, 1)
    assert s0["recorded"] and s1["recorded"] and "--resume" not in s0["command"] and "--resume" in s1["command"]
    assert m["commands"] == [s0["command"], s1["command"]] and m["git_commits"][-1] == m["git_commit"]
    assert s1["hardware"]["device"] == "cpu" and s1["started_utc"].endswith("Z")

    (old / "metrics.json").unlink()
    (old / "wall_time.json").unlink()  # a run from before wall_time.json existed
    run(resume + [str(old / "last.pth.tar")])
    m = json.loads((old / "metrics.json").read_text())
    first = rows(old)[0]
    assert m["wall_time_lower_bound"] is True
    assert m["wall_time_s"] > float(first["epoch_time_s"]) + float(first["eval_time_s"])
    unknown, this = m["segments"]  # the epochs before records began are marked as such
    assert unknown == {"first_epoch": 0, "last_epoch": 0, "recorded": False, "git_commits": [], "commands": []}
    assert this["first_epoch"] == 1 and m["commands"] == [this["command"]]


# ---------------------------------------------------------------- torchrun
def _torchrun_args(out: Path, cache: Path, experiment: str, nproc: int, sync: bool):
    args = [sys.executable, "-m", "torch.distributed.run", f"--nproc_per_node={nproc}", "--master_port",
            str(29500 + (os.getpid() + nproc + 2 * sync) % 1000)] if nproc > 1 else [sys.executable]
    args += [str(TRAIN), "--model", "resnet20_mn", "--train-data", CIFAR, "--train-subset", "32",
             "--eval-data", f"test:{CIFAR}", "--eval-subset", "200", "--batch-size", "32", "--eval-batch-size", "100",
             "--epochs", "1", "--lr", "0.1", "--crop-pad", "4", "--hflip", "--seed", "3", "--threads", "1",
             "--cache-dir", str(cache), "--output", str(out), "--experiment", experiment, "--log-interval", "0"]
    return args + (["--sync-norm"] if sync else [])


@needs_data
@pytest.mark.slow
def test_torchrun_sync_mode_norm_matches_one_process(cache_dir, tmp_path, monkeypatch):
    """2 gloo processes x 16 images with SyncModeNorm2d == 1 process x 32 images, for one SGD step.

    Same global batch and augmentation (they depend only on seed and epoch), mode statistics
    all-reduced in the forward and backward, DDP averaging the gradients: only the float32
    summation order differs. Measured: <= 4e-7 on any weight after the step (lr 0.1) and 1e-7 on
    the running statistics; we allow 5e-6. Without synchronisation (each process normalising its
    own 16 images) the weights differ by ~1e-2, which the test checks so that it can fail.
    One step, not several: early ResNet training amplifies float-order noise ~100x per step (two
    single-process runs with 1 vs 2 threads already differ by 8e-6 after two steps), so a
    multi-step tolerance would have to be loose enough to hide real errors.
    SyncModeNorm runs on the torch-op path, so the 1-process run does too (MNZOO_CPU_KERNELS=0):
    the fused CPU kernels sum in another order, which this tolerance would also see.
    """
    monkeypatch.setenv("MNZOO_CPU_KERNELS", "0")
    run(_torchrun_args(tmp_path, cache_dir, "one", 1, sync=False))
    run(_torchrun_args(tmp_path, cache_dir, "sync", 2, sync=True))
    run(_torchrun_args(tmp_path, cache_dir, "nosync", 2, sync=False))
    one, sync, nosync = (load(tmp_path / e / "last.pth.tar")["state_dict"] for e in ("one", "sync", "nosync"))
    assert one.keys() == sync.keys()

    def max_diff(a, b, what):
        return max((a[k].double() - b[k].double()).abs().max().item() for k in a if what(k))

    weights = lambda k: "running" not in k and "num_batches" not in k  # noqa: E731
    stats = lambda k: "running_" in k  # noqa: E731
    assert max_diff(one, sync, weights) < 5e-6
    assert max_diff(one, sync, stats) < 5e-6
    assert max_diff(one, nosync, weights) > 1e-3
    m_one = json.loads((tmp_path / "one" / "metrics.json").read_text())
    m_sync = json.loads((tmp_path / "sync" / "metrics.json").read_text())
    assert m_sync["hardware"]["world_size"] == 2 and m_sync["command"].startswith("torchrun")
    assert abs(m_one["eval"]["test"]["top1"] - m_sync["eval"]["test"]["top1"]) <= 1.0  # 2 of 200 images


@needs_data
def test_compiled_run_matches_eager(cache_dir, tmp_path):
    """--compile (here with --compile-mode reduce-overhead, the CUDA-graph mode; on the CPU it runs
    inductor's code) trains the same weights as eager to float rounding, and saves them under the
    model's own names (no torch.compile wrapper prefix)."""
    run(lenet_args(tmp_path, cache_dir, "eager", epochs=1))
    run(lenet_args(tmp_path, cache_dir, "compiled", epochs=1) + ["--compile", "--compile-mode", "reduce-overhead"],
        timeout=900)
    eager, compiled = (load(tmp_path / n / "last.pth.tar")["state_dict"] for n in ("eager", "compiled"))
    assert sorted(compiled) == sorted(eager)
    for k, v in eager.items():
        assert torch.allclose(compiled[k].double(), v.double(), atol=1e-5, rtol=1e-4), k
    cfg = yaml.safe_load((tmp_path / "compiled" / "config.yaml").read_text())
    assert cfg["compile"] is True and cfg["compile_mode"] == "reduce-overhead"
    m_e, m_c = (json.loads((tmp_path / n / "metrics.json").read_text()) for n in ("eager", "compiled"))
    assert m_c["eval"]["mix"]["top1"] == m_e["eval"]["mix"]["top1"]


def test_pretrained_and_initial_checkpoint_start_from_those_weights(cache_dir, tmp_path):
    """--pretrained starts from the published weights (a new classifier for another class count)
    and --initial-checkpoint from a file's; with lr 0 the trained weights are still exactly those.
    A model without weights, a missing file or a checkpoint of another model is a clear error."""
    import mnzoo
    published = mnzoo.create_model("lenet_mn.multidomain", pretrained=True).state_dict()
    base = lenet_args(tmp_path, cache_dir, "ft", epochs=1)
    base = base[:base.index("--lr")] + ["--lr", "0"] + base[base.index("--lr") + 2:]
    at = base.index("lenet_mn")
    run(base[:at] + ["lenet_mn.multidomain", "--pretrained", "--num-classes", "50"] + base[at + 1:])
    tuned = load(tmp_path / "ft" / "last.pth.tar")["state_dict"]
    kept = [k for k in published if not k.startswith("fc.") and "running_" not in k and "num_batches" not in k]
    assert len(kept) > 10 and all(torch.equal(tuned[k], published[k]) for k in kept)
    assert tuned["fc.weight"].shape == (50, published["fc.weight"].shape[1])  # 40 published
    assert yaml.safe_load((tmp_path / "ft" / "config.yaml").read_text())["pretrained"] is True
    run(base[:at] + ["lenet_mn", "--num-classes", "50", "--initial-checkpoint", str(tmp_path / "ft" / "last.pth.tar")]
        + base[at + 1:] + ["--experiment", "init"])
    again = load(tmp_path / "init" / "last.pth.tar")["state_dict"]
    assert all(torch.equal(again[k], tuned[k]) for k in kept + ["fc.weight"])
    # resuming needs neither the initial file nor the Hub: the run's checkpoint has the weights
    (tmp_path / "ft" / "last.pth.tar").rename(tmp_path / "ft.pth.tar")
    run(base[:at] + ["lenet_mn", "--num-classes", "50", "--initial-checkpoint", str(tmp_path / "ft" / "last.pth.tar")]
        + base[at + 1:] + ["--resume", str(tmp_path / "init" / "last.pth.tar"), "--epochs", "2",
                           "--experiment", "init"])
    assert len(rows(tmp_path / "init")) == 2
    (tmp_path / "ft.pth.tar").rename(tmp_path / "ft" / "last.pth.tar")
    for extra, message in ((["--model", "nin_mn", "--pretrained"], "No published weights for 'nin_mn"),
                           (["--initial-checkpoint", str(tmp_path / "none.pth")], "none.pth: no such file"),
                           (["--model", "resnet20_mn", "--initial-checkpoint", str(tmp_path / "ft" / "last.pth.tar")],
                            "does not fit resnet20_mn"),
                           (["--num-classes", "10"], "--num-classes 10 is fewer than the 40 label values")):
        proc = subprocess.run(base + extra + ["--experiment", "bad"], cwd=REPO, capture_output=True, text=True,
                              timeout=300)
        assert proc.returncode != 0 and message in proc.stderr, proc.stderr[-2000:]


def test_compile_mode_needs_compile_and_a_known_mode(tmp_path):
    base = [sys.executable, str(TRAIN), "--model", "lenet_mn", "--train-data", CIFAR, "--output", str(tmp_path)]
    for extra, msg in ((["--compile-mode", "default"], "needs --compile"),
                       (["--compile", "--compile-mode", "fast"], "invalid choice")):
        proc = subprocess.run(base + extra, cwd=REPO, capture_output=True, text=True, timeout=300)
        assert proc.returncode == 2 and msg in proc.stderr, proc.stderr[-2000:]


def test_ema_and_bfloat16_autocast_run(cache_dir, tmp_path):
    """--model-ema keeps and evaluates an EMA copy; --amp (bfloat16 on CPU) trains through autocast."""
    args = lenet_args(tmp_path, cache_dir, "ema", epochs=1)
    args[args.index("--train-subset") + 1] = "320"  # 5 updates: timm's EMA copies the model for the first two
    run(args + ["--model-ema", "--model-ema-decay", "0.9", "--amp", "--amp-dtype", "bfloat16"])
    ckpt = load(tmp_path / "ema" / "last.pth.tar")
    assert "state_dict_ema" in ckpt
    diff = max((ckpt["state_dict"][k].float() - ckpt["state_dict_ema"][k].float()).abs().max().item()
               for k in ckpt["state_dict"] if k.endswith("weight"))
    assert diff > 0  # the EMA lags the trained weights
    m = json.loads((tmp_path / "ema" / "metrics.json").read_text())
    assert {"mix", "cifar", "mix_ema", "cifar_ema"} <= set(m["eval"])
    out = tmp_path / "val.json"
    run([sys.executable, str(VALIDATE), "--checkpoint", str(tmp_path / "ema" / "last.pth.tar"), "--ema",
         "--cache-dir", str(cache_dir), "--output", str(out)])
    assert json.loads(out.read_text())["eval"]["cifar"]["top1"] == m["eval"]["cifar_ema"]["top1"]


def test_imagefolder_run_and_validate(tmp_path):
    """--dataset imagefolder (the ImageNet path: timm dataset, transforms, DataLoader) trains and validates."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    for split in ("train", "val"):
        for c in ("n01", "n02", "n03"):
            (tmp_path / "inet" / split / c).mkdir(parents=True)
            for i in range(4):
                Image.fromarray(rng.integers(0, 256, (40, 48, 3), dtype=np.uint8)).save(
                    tmp_path / "inet" / split / c / f"{i}.jpg")
    root = tmp_path / "inet"
    run([sys.executable, str(TRAIN), "--model", "lenet_bn", "--dataset", "imagefolder", "--train-data",
         f"{root}@train", "--eval-data", f"val:{root}@val", "--input-size", "32", "--workers", "0",
         "--batch-size", "4", "--eval-batch-size", "5", "--epochs", "1", "--output", str(tmp_path),
         "--experiment", "inet"])
    m = json.loads((tmp_path / "inet" / "metrics.json").read_text())
    assert m["num_classes"] == 3 and m["train_images"] == 12 and m["eval"]["val"]["n"] == 12
    out = tmp_path / "val.json"
    run([sys.executable, str(VALIDATE), "--checkpoint", str(tmp_path / "inet" / "last.pth.tar"), "--output", str(out)])
    assert json.loads(out.read_text())["eval"]["val"]["top1"] == m["eval"]["val"]["top1"]
