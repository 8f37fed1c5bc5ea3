"""The scripts for a lent GPU machine, checked here without one. scripts/gpu_data.sh: CIFAR-10 files
travel as parts and arrive intact, or unpack says they did not (small stand-in files, a 1 KiB part
size so that there are several). scripts/gpu_checks.sh: logs under $OUT, and a failing or unknown
step shows in its exit status."""
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from conftest import REPO_ROOT

FILES = ('train.tar', 'test.tar', 'test-lossless-1k.tar')


def _checkout(root: Path) -> Path:
    (root / 'scripts').mkdir(parents=True)
    shutil.copy(REPO_ROOT / 'scripts' / 'gpu_data.sh', root / 'scripts')
    return root


def _run(root: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(['bash', 'scripts/gpu_data.sh', *args], cwd=root, capture_output=True, text=True,
                          env=dict(os.environ, GPU_DATA_PART_SIZE='1K'))


@pytest.fixture
def packed(tmp_path):
    data = tmp_path / 'data'
    data.mkdir()
    for i, name in enumerate(FILES):
        (data / name).write_bytes(os.urandom(1500 + 700 * i))
    here = _checkout(tmp_path / 'here')
    proc = _run(here, 'pack', str(data))
    assert proc.returncode == 0, proc.stderr
    parts = sorted((here / 'gpu_data').glob('cifar10.part-*'))
    assert len(parts) > 3 and all(p.stat().st_size <= 1024 for p in parts)
    # the GPU machine's copy: a checkout with the carried files only
    there = _checkout(tmp_path / 'there')
    shutil.copytree(here / 'gpu_data', there / 'gpu_data')
    return data, there


def test_unpack_restores_the_files(packed):
    data, there = packed
    proc = _run(there, 'unpack')
    assert proc.returncode == 0, proc.stderr
    for name in FILES:
        assert (there / 'gpu_data' / 'cifar10' / name).read_bytes() == (data / name).read_bytes()
    assert not list((there / 'gpu_data').glob('cifar10.part-*'))


def test_unpack_refuses_a_missing_or_damaged_part(packed):
    _, there = packed
    parts = sorted((there / 'gpu_data').glob('cifar10.part-*'))
    damaged = bytearray(parts[1].read_bytes())
    damaged[100] ^= 0xFF
    parts[1].write_bytes(bytes(damaged))
    proc = _run(there, 'unpack')
    assert proc.returncode != 0 and 'sha256 mismatch' in proc.stderr
    shutil.rmtree(there / 'gpu_data' / 'cifar10')
    parts[-2].unlink()  # a part that was not carried
    assert _run(there, 'unpack').returncode != 0


def test_pack_names_a_missing_source_and_usage_errors(tmp_path):
    here = _checkout(tmp_path / 'here')
    proc = _run(here, 'pack', str(tmp_path / 'nowhere'))
    assert proc.returncode == 1 and 'train.tar not found' in proc.stderr
    assert _run(here).returncode == 2 and _run(here, 'unpack').returncode == 1


def test_gpu_checks_reports_failures_in_its_exit_status(tmp_path):
    """Without a GPU, the `tests` step must fail (MNZOO_REQUIRE_CUDA=1), not skip: exit 1, with
    pytest's log under $OUT; an unknown step is exit 2."""
    if torch.cuda.is_available():
        pytest.skip("a GPU is present: the script's own run is the check")
    out = tmp_path / "out"
    env = dict(os.environ, OUT=str(out), PYTHON=sys.executable)
    proc = subprocess.run(["bash", "scripts/gpu_checks.sh", "tests"], cwd=REPO_ROOT, capture_output=True, text=True,
                          env=env, timeout=600)
    assert proc.returncode == 1, proc.stdout[-2000:]
    assert "MNZOO_REQUIRE_CUDA=1 but torch sees no CUDA device" in (out / "test_cuda.txt").read_text()
    assert (out / "nvidia-smi.txt").exists()
    proc = subprocess.run(["bash", "scripts/gpu_checks.sh", "bogus"], cwd=REPO_ROOT, capture_output=True, text=True,
                          env=env, timeout=60)
    assert proc.returncode == 2 and "unknown step bogus" in proc.stderr
