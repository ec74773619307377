"""`ferry bench` over TLS (amqps://, its OpenSSL client): every message published, confirmed
and consumed through ferryd's TLS port with the certificate verified (--cacert), or without
verification; a CA that did not sign the certificate, or a plain port, fails with a reason."""
import json
import os
import subprocess

import pytest

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
FERRY = os.environ.get("FERRY_CLI") or os.path.join(ROOT, "build", "ferry")

pytestmark = pytest.mark.ferry_only


def run_bench(*args):
    return subprocess.run([FERRY, "bench", "--queue-prefix", f"bench-tls-{os.getpid()}-", *args],
                          capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize("verify", [True, False])
def test_bench_over_tls_counts_every_message(tls_broker, certs, verify):
    extra = ["--cacert", certs.ca] if verify else []
    p = run_bench("--uri", f"amqps://guest:guest@localhost:{tls_broker.tls_port}/", *extra, "--json", "--quiet",
                  "--count", "20000", "--size", "3000", "--confirm", "500", "--persistent", "--ack-every", "50",
                  "--prefetch", "500")
    assert p.returncode == 0, f"{p.stdout}\n{p.stderr}"
    r = json.loads(p.stdout)
    assert r["ok"], r
    assert r["published"] == r["confirmed"] == r["consumed"] == 20000, r


def test_bench_refuses_a_certificate_its_ca_did_not_sign(tls_broker, certs):
    p = run_bench("--uri", f"amqps://guest:guest@localhost:{tls_broker.tls_port}/", "--cacert",
                  certs.guest_cert[0], "--count", "10")
    assert p.returncode != 0
    assert "certificate not verified" in p.stderr, p.stderr


def test_bench_with_amqps_against_a_plain_port_fails_with_a_reason(tls_broker):
    p = run_bench("--uri", f"amqps://guest:guest@127.0.0.1:{tls_broker.port}/", "--count", "10")
    assert p.returncode != 0
    assert "TLS handshake failed" in p.stderr, p.stderr
