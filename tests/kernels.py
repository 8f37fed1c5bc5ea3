"""Test helper: the fused CPU kernels must be there when CI says so (MNZOO_REQUIRE_CPU_KERNELS=1),
so their tests cannot silently skip."""
import os

import pytest

from mnzoo.layers._cpu import build_cpu_kernels


def require_cpu_kernels() -> None:
    if build_cpu_kernels():
        return
    if os.environ.get("MNZOO_REQUIRE_CPU_KERNELS") == "1":
        pytest.fail("the mnzoo CPU kernels did not build, and MNZOO_REQUIRE_CPU_KERNELS=1")
    pytest.skip("the mnzoo CPU kernels are not available (no C++ compiler?)")
