"""The installable package: a wheel built from this checkout carries every file the package needs
at run time besides its Python modules (the CPU kernels' sources and headers, the weights manifest).
Editable installs (CI) would not notice a file missing from ``package-data``. And the code passes
the lint rules and the type check in pyproject.toml (``[tool.ruff]``, ``[tool.mypy]``)."""
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent


def test_wheel_carries_kernel_sources_and_manifest(tmp_path):
    # from a clean copy: setuptools reuses a checkout's build/ folder, stale files included
    src = tmp_path / "src"
    src.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO_ROOT / name, src / name)
    shutil.copytree(REPO_ROOT / "mnzoo", src / "mnzoo", ignore=shutil.ignore_patterns("__pycache__"))
    subprocess.run([sys.executable, "-m", "pip", "wheel", str(src), "--no-deps", "--no-build-isolation",
                    "-q", "-w", str(tmp_path / "dist")], check=True, capture_output=True, text=True)
    (wheel,) = (tmp_path / "dist").glob("mnzoo-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    needed = {"mnzoo/weights_manifest.json"} | {
        str(p.relative_to(REPO_ROOT)) for p in (REPO_ROOT / "mnzoo" / "layers" / "csrc").iterdir()}
    assert {"mnzoo/layers/csrc/mode_norm_cpu.cpp", "mnzoo/layers/csrc/passes.h"} <= needed
    assert needed - names == set()
    # the modules that load them are there too
    assert {"mnzoo/layers/_cpu.py", "mnzoo/weights.py", "mnzoo/__init__.py"} <= names
    assert "mnzoo/py.typed" in names  # PEP 561: type checkers use mnzoo's annotations


def test_ruff_lint_is_clean():
    # ruff is in the test extras; pyflakes and bugbear catch e.g. unused names and zip() calls
    # without strict=True, which would let a test compare two sequences of different lengths
    proc = subprocess.run([sys.executable, "-m", "ruff", "check", "--no-cache", str(REPO_ROOT)],
                          capture_output=True, text=True, cwd=REPO_ROOT)
    assert "No module named ruff" not in proc.stderr, "ruff is missing: pip install -e '.[test]'"
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_mypy_type_check_is_clean(tmp_path):
    # the files and settings are in pyproject.toml ([tool.mypy]); mnzoo ships py.typed, so its
    # annotations are what users' type checkers see
    proc = subprocess.run([sys.executable, "-m", "mypy", "--cache-dir", str(tmp_path / "cache")],
                          capture_output=True, text=True, cwd=REPO_ROOT)
    assert "No module named mypy" not in proc.stderr, "mypy is missing: pip install -e '.[test]'"
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "Success: no issues found" in proc.stdout
