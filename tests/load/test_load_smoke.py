"""The load test of tests/load/loadtest.py, scaled down for make test (under a minute): 400
connections opening and closing, 4 confirm publishers, 100 consumers that never read, a
flood past a 32 MiB watermark. `make load` runs the full size."""
import os
import sys

import pytest

sys.path.insert(0, os.path.dirname(__file__))
import loadtest  # noqa: E402

pytestmark = pytest.mark.ferry_only


@pytest.mark.timeout(90)
def test_load_smoke_blocks_bounds_memory_and_loses_nothing():
    fig = loadtest.run(loadtest.SMOKE, log=lambda *a: None)
    print(fig)
    assert fig["failures"] == [], fig
