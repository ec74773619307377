"""Fixtures for the durable-storage tests: a broker restart that is either clean (SIGTERM)
or a crash (kill -9), a small filesystem that fills up, and an end-of-run summary of what
the crash tests counted (confirmed messages, kills, duplicates)."""
import subprocess

import pytest

from . import helpers


@pytest.fixture(params=["sigterm", "kill9"])
def restart(request, ferryd_factory):
    """restart(d, *args) -> a new ferryd on d's data directory, after stopping d cleanly
    (SIGTERM, exit 0 checked) or killing it with SIGKILL, per the parameter."""

    def do(d, *args, env=None):
        if request.param == "sigterm":
            rc = d.stop()
            assert rc == 0, f"ferryd exited {rc} on SIGTERM:\n{helpers.log_since_start(d)[-2000:]}"
        else:
            d.kill9()
        return helpers.start(ferryd_factory, d.data_dir, *(args or d.args), env=env)

    do.how = request.param
    return do


@pytest.fixture
def small_disk(tmp_path):
    """A 4 MiB tmpfs mounted for this test (unmounted at teardown, even on failure).

    Skipped, with the reason, only where mounting is impossible (not root, no CAP_SYS_ADMIN)."""
    mnt = tmp_path / "disk"
    mnt.mkdir()
    p = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(mnt)],
                       capture_output=True, text=True, timeout=10)
    if p.returncode != 0:
        pytest.skip(f"cannot mount a 4 MiB tmpfs for the disk-full test: {p.stderr.strip() or p.returncode}")
    try:
        yield mnt
    finally:
        if subprocess.run(["umount", str(mnt)], capture_output=True, timeout=10).returncode != 0:
            subprocess.run(["umount", "-l", str(mnt)], capture_output=True, timeout=10)


def pytest_terminal_summary(terminalreporter):
    lines = helpers.report_lines()
    if lines:
        terminalreporter.section("durable storage: crash and power-cut counts")
        for line in lines:
            terminalreporter.write_line(line)
