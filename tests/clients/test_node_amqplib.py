"""amqplib (Node.js), unchanged, against the broker: runs the node:test suites in tests/node/.

Each tests/node/*.test.js file is one pytest case; it passes only if node reports every test
in the file as passed (and as many as the file declares, so a file that silently runs nothing
fails). The broker URL reaches node as AMQP_URL.
"""
import glob
import os
import re
import shutil
import subprocess

import pytest

NODE_DIR = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "node"))
NODE = "/usr/bin/node" if os.path.exists("/usr/bin/node") else shutil.which("node")
TEST_FILES = sorted(os.path.basename(p) for p in glob.glob(os.path.join(NODE_DIR, "*.test.js")))


@pytest.fixture(scope="module")
def node_modules():
    """amqplib installed from package-lock.json (npm ci) if it is not there yet."""
    assert NODE, "node is not installed"
    if not os.path.exists(os.path.join(NODE_DIR, "node_modules", "amqplib", "package.json")):
        npm = shutil.which("npm")
        assert npm, "npm is needed once to install amqplib into tests/node/node_modules"
        r = subprocess.run([npm, "ci", "--no-audit", "--no-fund"], cwd=NODE_DIR,
                           capture_output=True, text=True, timeout=110)
        assert r.returncode == 0, f"npm ci failed:\n{r.stdout}\n{r.stderr}"


def test_node_suites_exist():
    assert len(TEST_FILES) >= 3, f"expected the amqplib test files in {NODE_DIR}, found {TEST_FILES}"


@pytest.mark.parametrize("test_file", TEST_FILES)
def test_amqplib(test_file, broker, node_modules):
    path = os.path.join(NODE_DIR, test_file)
    with open(path) as f:
        declared = len(re.findall(r"^test\(", f.read(), re.M))
    env = dict(os.environ, AMQP_URL=broker.url)
    try:
        r = subprocess.run([NODE, "--test", "--test-reporter=tap", path], cwd=NODE_DIR, env=env,
                           capture_output=True, text=True, timeout=100)
    except subprocess.TimeoutExpired as e:
        pytest.fail(f"node --test {test_file} did not finish within 100 s:\n{e.stdout}\n{e.stderr}")
    output = f"{r.stdout}\n{r.stderr}"
    counts = dict(re.findall(r"^# (tests|pass|fail|cancelled|skipped|todo) (\d+)$", r.stdout, re.M))
    assert r.returncode == 0, f"node --test {test_file} exited {r.returncode}:\n{output}"
    assert counts.get("fail") == "0" and counts.get("cancelled") == "0", output
    assert counts.get("pass") == str(declared), \
        f"{test_file} declares {declared} tests but node passed {counts.get('pass')}:\n{output}"
