"""The NCHW16c exchange prototype (benchmarks/nchwc_prototype, docs/decisions/nchwc-exchange.md) equals its numpy
reference on every variant this CPU runs, so the numbers the decision record quotes come from a correct kernel."""
import shutil
import sys
from pathlib import Path

import pytest

PROTOTYPE = Path(__file__).resolve().parents[2] / "benchmarks" / "nchwc_prototype"


@pytest.mark.skipif(shutil.which("g++") is None, reason="the prototype is compiled with g++")
def test_prototype_equals_numpy_reference():
    sys.path.insert(0, str(PROTOTYPE))
    try:
        import check
    finally:
        sys.path.remove(str(PROTOTYPE))
    assert check.check_all() >= len(check.SHAPES) * 4
