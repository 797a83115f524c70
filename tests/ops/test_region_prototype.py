"""The region prototype (benchmarks/region_prototype, docs/decisions/region-op.md): one ORT node running a chain of
convs through ORT's invoked NCHWc Conv computes what dense ORT's chain of Conv + Relu nodes computes, so the
per-conv costs the decision record quotes come from a correct chain."""
import sys
from pathlib import Path

from edge_build import ort_include_dir, require_tool

PROTOTYPE = Path(__file__).resolve().parents[2] / "benchmarks" / "region_prototype"


def test_prototype_chain_equals_dense_ort():
    require_tool("g++", "apt-get install g++")
    sys.path.insert(0, str(PROTOTYPE))
    try:
        import region_prototype
    finally:
        sys.path.remove(str(PROTOTYPE))
    library = region_prototype.build(Path(ort_include_dir()))
    assert region_prototype.check(library) == 8
