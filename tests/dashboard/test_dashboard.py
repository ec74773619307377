"""The dashboard in a real browser: Debian's headless Chromium, driven by playwright-core
(pinned in tests/dashboard/package-lock.json), against a ferryd serving its API and the
dashboard on a free port. The checks themselves are in dashboard_check.js (one "ok - ..." line
each: login, no console errors, a queue's depth rising on screen while messages are published,
the queue page's forms, a dead letter redriven by a click, an alert turning red); this test
fails if the script reports any failed check, fewer checks than it declares, or breaks.
Screenshots are kept in build/test/screenshots/."""
import os
import re
import shutil
import subprocess

import pytest

from ferryd import ROOT, free_port, wait_port

HERE = os.path.dirname(os.path.abspath(__file__))
SCRIPT = os.path.join(HERE, "dashboard_check.js")
NODE = "/usr/bin/node" if os.path.exists("/usr/bin/node") else shutil.which("node")
CHROMIUM = "/usr/bin/chromium"
SHOTS = os.path.join(ROOT, "build", "test", "screenshots")


@pytest.fixture(scope="module")
def playwright_core():
    """playwright-core from package-lock.json (npm ci) if it is not installed yet."""
    assert NODE, "node is not installed"
    assert os.path.exists(CHROMIUM), "Debian's chromium is not installed (scripts/install-deps.sh test)"
    if not os.path.exists(os.path.join(HERE, "node_modules", "playwright-core", "package.json")):
        npm = shutil.which("npm")
        assert npm, "npm is needed once to install playwright-core into tests/dashboard/node_modules"
        r = subprocess.run([npm, "ci", "--no-audit", "--no-fund"], cwd=HERE, capture_output=True, text=True,
                           timeout=110)
        assert r.returncode == 0, f"npm ci failed:\n{r.stdout}\n{r.stderr}"


def test_dashboard_in_headless_chromium(ferryd_factory, playwright_core):
    http_port = free_port()
    d = ferryd_factory("--http-port", str(http_port))
    wait_port("127.0.0.1", http_port, 10, d.proc)
    with open(SCRIPT) as f:
        declared = len(re.findall(r"^\s*check\('", f.read(), re.M))
    env = dict(os.environ, BASE_URL=f"http://127.0.0.1:{http_port}/", SHOT_DIR=SHOTS, CHROMIUM=CHROMIUM)
    try:
        r = subprocess.run([NODE, SCRIPT], cwd=HERE, env=env, capture_output=True, text=True, timeout=110)
    except subprocess.TimeoutExpired as e:
        pytest.fail(f"dashboard_check.js did not finish in 110 s:\n{e.stdout}\n{e.stderr}")
    out = r.stdout + r.stderr
    failed = re.findall(r"^not ok - .*$", r.stdout, re.M)
    passed = re.findall(r"^ok - .*$", r.stdout, re.M)
    assert not failed, "dashboard checks failed:\n" + "\n".join(failed) + "\n\n" + out
    assert r.returncode == 0, out
    assert len(passed) == declared, f"{declared} checks declared, {len(passed)} passed:\n{out}"
    for shot in ("overview", "queues", "queue", "dead-letters", "alerts"):
        p = os.path.join(SHOTS, shot + ".png")
        assert os.path.exists(p) and os.path.getsize(p) > 10000, f"screenshot {p} missing or empty"
