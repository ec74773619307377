"""Per-aggregate sequence gap detection and the envelope without a broker
(tests/app/c/seqtest.c under ASan + UBSan): next / duplicate / gap with the missing range,
aggregates independent, 20,000 aggregates, bad input refused, the structured CloudEvents JSON
of an event exactly."""
import subprocess

from apptools import prog


def test_sequence_gaps_and_envelope():
    r = subprocess.run([prog("seqtest")], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and r.stdout.rstrip().endswith("PASSED"), r.stdout + r.stderr
    assert "runtime error" not in r.stderr and "Sanitizer" not in r.stderr, r.stderr
