#!/usr/bin/env bash
# Set up a fresh machine for mnzoo: Debian data package, the project venv (.venv) with the pinned
# torch/torchvision, mnzoo itself (editable, with test extras) and olah in its own venv.
# Idempotent: a second run only checks what is there. Needs no network beyond PyPI and apt.
set -euo pipefail
cd "$(dirname "$0")/.."

PY=${PYTHON:-python3}
OLAH_VENV=${MNZOO_OLAH_VENV:-/opt/olah-venv}

# the Fashion-MNIST data, and a C++ toolchain for the ModeNorm CPU kernels (torch's JIT builder)
need=()
[ -d /usr/share/datasets/fashion-mnist ] || need+=(dataset-fashion-mnist)
command -v g++ >/dev/null || need+=(g++)
command -v ninja >/dev/null || need+=(ninja-build)
if [ ${#need[@]} -gt 0 ]; then
  echo "== apt: ${need[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq "${need[@]}" >/dev/null
fi

if [ ! -x .venv/bin/python ]; then
  echo "== venv: .venv"
  "$PY" -m venv .venv
fi
if ! .venv/bin/python -c "import torch, torchvision; assert torch.__version__.startswith('2.14.1') and torchvision.__version__.startswith('0.29.1')" 2>/dev/null; then
  echo "== pip: torch 2.14.1, torchvision 0.29.1 (local wheels)"
  .venv/bin/pip install -q torch==2.14.1 torchvision==0.29.1 2>&1 | grep -v "is ignored" || true
fi
echo "== pip: mnzoo[test,train]"
.venv/bin/pip install -q -e ".[test,train]" torch==2.14.1 torchvision==0.29.1 2>&1 | grep -v "is ignored" || true
.venv/bin/python -c "import mnzoo, timm, torch; print('mnzoo', mnzoo.__version__, '| timm', timm.__version__, '| torch', torch.__version__)"

echo "== ModeNorm CPU kernels (compiled once, ~1 min; cached in ~/.cache/torch_extensions)"
.venv/bin/mnzoo build-kernels || echo "   (not built: the layers will use the slower torch-op path)"

if [ ! -x "$OLAH_VENV/bin/olah-cli" ]; then
  echo "== olah in its own venv: $OLAH_VENV"
  "$PY" -m venv "$OLAH_VENV"
  "$OLAH_VENV/bin/pip" install -q olah==0.5.4 2>&1 | grep -v "is ignored" || true
fi
"$OLAH_VENV/bin/olah-cli" --help >/dev/null
echo "== setup done"
