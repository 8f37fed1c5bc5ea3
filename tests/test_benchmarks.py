"""The benchmarks time what their rows say (a benchmark that times the wrong mode is a silent
lie: sessions 1-2 timed the per-layer "train" rows in eval mode)."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from mnzoo import ModeNorm2d

from conftest import load_benchmark


@pytest.fixture(scope="module")
def norm_speed():
    return load_benchmark("norm_speed")


def test_layer_steps_time_train_and_eval_mode(norm_speed):
    torch.manual_seed(0)
    shape = (8, 4, 5, 5)
    x, gy = torch.randn(shape) * 2 + 1, torch.randn(shape)
    layers = {"BatchNorm2d": nn.BatchNorm2d(4), "MN K=2": ModeNorm2d(4, 2),
              "MN K=2" + norm_speed.TORCH_OPS: ModeNorm2d(4, 2)}
    steps = norm_speed.layer_steps(layers, x, gy)
    for name, (train, evaluate) in steps.items():
        layer = layers[name]
        before = layer.running_mean.clone()
        tracked = int(layer.num_batches_tracked)
        evaluate()
        assert torch.equal(layer.running_mean, before), f"{name}: the eval step touched the trained layer"
        train()
        assert layer.training, f"{name}: the train step left training mode"
        assert int(layer.num_batches_tracked) == tracked + 1, f"{name}: the train step used no batch statistics"
        assert not torch.equal(layer.running_mean, before)
        train()
        assert int(layer.num_batches_tracked) == tracked + 2
        evaluate()
        assert int(layer.num_batches_tracked) == tracked + 2, f"{name}: the eval step updated statistics"


def test_norm_speed_table_on_cpu_and_a_clear_error_without_cuda(norm_speed, monkeypatch, capsys):
    """The layer table runs end to end (tiny shapes): every row, ratios to BN, the torch-op rows
    on the CPU; asking for CUDA where there is none stops with a message, not a traceback."""
    monkeypatch.setattr(norm_speed, "SHAPES", [("tiny", (8, 4, 6, 6))] * 3)
    norm_speed.main(["--quick", "--reps", "2", "--threads", "1"])
    out = capsys.readouterr().out
    rows = [line for line in out.splitlines() if line.startswith("tiny")]
    assert len(rows) == 3 * 8  # BN, MN K=1/2/4/6, torch-ops, literal K=2/6 per shape
    assert all(line.split()[-3] == "1.00" and line.split()[-1] == "1.00" for line in rows if "BatchNorm2d" in line)
    assert "train MN K=2 torch-ops" in out and "CPU, mnzoo CPU kernels" in out
    if not torch.cuda.is_available():
        with pytest.raises(SystemExit):
            norm_speed.main(["--device", "cuda", "--quick"])
        assert "no CUDA device" in capsys.readouterr().err


def test_train_speed_table_on_cpu_and_a_clear_error_without_cuda(capsys):
    """train_speed.py end to end on synthetic data (one step per model): a row per model, BN the
    baseline; --device cuda without a GPU stops with a message."""
    train_speed = load_benchmark("train_speed")
    train_speed.main(["--batch-size", "16", "--rounds", "1", "--steps", "1", "--warmup", "0", "--threads", "1"])
    out = capsys.readouterr().out
    rows = [line.split("|") for line in out.splitlines() if line.startswith("| ") and "model" not in line]
    assert [r[1].strip() for r in rows] == ["BN", "MN K=2", "MN K=6"]
    assert rows[0][5].strip() == "1.00" and "synthetic data, eager" in out
    if not torch.cuda.is_available():
        with pytest.raises(SystemExit):
            train_speed.main(["--device", "cuda"])
        assert "no CUDA device" in capsys.readouterr().err


@pytest.fixture(scope="module")
def norm_memory():
    return load_benchmark("norm_memory")


def test_saved_bytes_counts_each_saved_storage_once(norm_memory):
    x = torch.randn(6, 5, requires_grad=True)
    nbytes = x.numel() * 4
    assert norm_memory.saved_bytes(lambda: torch.sin(x))[0] == nbytes  # sin keeps its input
    assert norm_memory.saved_bytes(lambda: x * 2.0)[0] == 0  # a constant factor keeps nothing
    # two views of one buffer: one storage
    assert norm_memory.saved_bytes(lambda: torch.sin(x[:3]) + torch.cos(x[3:]))[0] == nbytes
    # exp keeps its output, a new buffer: two storages in all
    assert norm_memory.saved_bytes(lambda: torch.exp(torch.sin(x)))[0] == 2 * nbytes


def test_norm_memory_table_and_mn_keeps_what_bn_keeps(norm_memory, monkeypatch, capsys):
    """The memory table end to end (tiny shapes). MN in training keeps one input-sized tensor for
    backward, as BN does (plus (K, C)-sized statistics), on both CPU paths; the paper's loop over
    modes keeps several per mode, which shows the count sees extra tensors."""
    monkeypatch.setattr(norm_memory, "SHAPES", [("tiny", (16, 8, 12, 12))] * 3)
    medians = norm_memory.bench_layers(True, torch.contiguous_format, torch.device("cpu"))
    out = capsys.readouterr().out
    assert len([line for line in out.splitlines() if line.startswith("tiny")]) == 3 * 8
    assert medians["BatchNorm2d"] == 1.0
    for name in ("MN K=1", "MN K=2", "MN K=6", "MN K=2 torch-ops"):
        assert 1.0 <= medians[name] < 1.1, (name, medians[name])
    assert medians["literal K=2"] > 4 and medians["literal K=6"] > 2 * medians["literal K=2"]
    ratios = norm_memory.bench_network(torch.channels_last, torch.device("cpu"), batch_size=8)
    assert ratios["BN"] == 1.0 and all(1.0 <= r < 1.1 for r in ratios.values()), ratios
    assert "ResNet20 training step, batch 8" in capsys.readouterr().out
    if not torch.cuda.is_available():
        with pytest.raises(SystemExit):
            norm_memory.main(["--device", "cuda", "--quick"])
        assert "no CUDA device" in capsys.readouterr().err
