"""TLS (amqps) with real clients: pika (ssl_options), node amqplib (amqps://) and amqp-tools
(--ssl --cacert), each verifying ferryd's certificate against the test CA made by openssl at
test time (tests/lib/certs.py), and checking that the session really is TLS with that
certificate. Then a plain client on the plain port still works beside them."""
import json
import os
import shutil
import ssl
import subprocess

import pika
import pytest

from certs import fingerprint
from tls_helpers import pika_tls_params, round_trip, tls_socket

pytestmark = pytest.mark.ferry_only

NODE_DIR = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "node"))
NODE = "/usr/bin/node" if os.path.exists("/usr/bin/node") else shutil.which("node")


def server_der(certs):
    with open(certs.server_cert) as f:
        return ssl.PEM_cert_to_DER_cert(f.read())


def test_the_tls_port_serves_the_configured_certificate(tls_broker, certs):
    s = tls_socket(certs, tls_broker.tls_port)
    try:
        assert fingerprint(s.getpeercert(binary_form=True)) == fingerprint(server_der(certs))
        assert s.version() in ("TLSv1.2", "TLSv1.3")
        assert set(s.getpeercert()["subjectAltName"]) == {("DNS", "localhost"), ("IP Address", "127.0.0.1")}
    finally:
        s.close()


def test_pika_over_tls_round_trips_small_and_large_messages(tls_broker, certs):
    conn = pika.BlockingConnection(pika_tls_params(certs, tls_broker.tls_port))
    try:
        sock = conn._impl._transport._sock  # pika's socket: it is an SSLSocket
        assert isinstance(sock, ssl.SSLSocket)
        assert fingerprint(sock.getpeercert(binary_form=True)) == fingerprint(server_der(certs))
        ch = conn.channel()
        ch.confirm_delivery()
        q = ch.queue_declare("", exclusive=True).method.queue
        # many small messages (batched into few TLS records) and large ones (many records,
        # partial writes): every byte must come back in order
        bodies = [os.urandom(i % 50) for i in range(2000)] + [os.urandom(n) for n in (16384, 16385, 1 << 20, 3 << 20)]
        for b in bodies:
            ch.basic_publish("", q, b)
        got = []
        for m, _, body in ch.consume(q, auto_ack=True, inactivity_timeout=10):
            assert m is not None, f"only {len(got)} of {len(bodies)} messages came back"
            got.append(body)
            if len(got) == len(bodies):
                break
        assert got == bodies
    finally:
        conn.close()


def test_plain_port_still_serves_plain_clients(tls_broker, certs):
    assert round_trip(pika.URLParameters(tls_broker.url + "?heartbeat=0&socket_timeout=5")) == b"ping"
    assert round_trip(pika_tls_params(certs, tls_broker.tls_port)) == b"ping"


def test_a_client_that_does_not_trust_the_ca_refuses_the_server(tls_broker, certs):
    ctx = ssl.create_default_context()  # system CAs only: our test CA is unknown
    with pytest.raises((pika.exceptions.AMQPConnectionError, ssl.SSLError)):
        pika.BlockingConnection(pika.ConnectionParameters(
            "127.0.0.1", tls_broker.tls_port, ssl_options=pika.SSLOptions(ctx, "localhost"),
            connection_attempts=1, socket_timeout=5))
    assert round_trip(pika_tls_params(certs, tls_broker.tls_port)) == b"ping"


@pytest.fixture(scope="module")
def node_modules():
    assert NODE, "node is not installed"
    if not os.path.exists(os.path.join(NODE_DIR, "node_modules", "amqplib", "package.json")):
        npm = shutil.which("npm")
        assert npm, "npm is needed once to install amqplib into tests/node/node_modules"
        r = subprocess.run([npm, "ci", "--no-audit", "--no-fund"], cwd=NODE_DIR, capture_output=True, text=True,
                           timeout=110)
        assert r.returncode == 0, f"npm ci failed:\n{r.stdout}\n{r.stderr}"


def test_node_amqplib_over_amqps(tls_broker, certs, node_modules):
    env = dict(os.environ, AMQPS_URL=f"amqps://guest:guest@localhost:{tls_broker.tls_port}/?heartbeat=0",
               CA_FILE=certs.ca, NODE_PATH=os.path.join(NODE_DIR, "node_modules"))
    r = subprocess.run([NODE, os.path.join(os.path.dirname(__file__), "amqps_client.js")], env=env,
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, f"node exited {r.returncode}:\n{r.stdout}\n{r.stderr}"
    seen = json.loads(r.stdout.strip().splitlines()[-1])
    assert seen["encrypted"] and seen["authorized"], seen
    assert seen["protocol"] in ("TLSv1.2", "TLSv1.3"), seen
    assert int(seen["serial"], 16) == 1000, seen  # the server certificate certs.py made
    assert seen["fingerprint256"].replace(":", "").lower() == fingerprint(server_der(certs)), seen
    assert seen["length"] == 200000 and seen["same"], seen


def amqp_tool(certs, port, name, *args, input=None, extra=()):
    # rabbitmq-c's tools take --ssl with an amqps:// URL (with --server/--port they refuse
    # --ssl: "the --url option does not [specify SSL]")
    cmd = [f"/usr/bin/{name}", "--url", f"amqps://guest:guest@localhost:{port}", "--ssl", "--cacert", certs.ca,
           *extra, *args]
    return subprocess.run(cmd, input=input, capture_output=True, timeout=20)


def test_amqp_tools_over_tls(tls_broker, certs):
    q = f"tls-tools-{os.getpid()}"
    r = amqp_tool(certs, tls_broker.tls_port, "amqp-declare-queue", "-q", q)
    assert r.returncode == 0, r.stderr
    assert r.stdout.decode().strip() == q
    body = b"over tls " + os.urandom(40000).hex().encode()
    r = amqp_tool(certs, tls_broker.tls_port, "amqp-publish", "-r", q, input=body)
    assert r.returncode == 0, r.stderr
    r = amqp_tool(certs, tls_broker.tls_port, "amqp-get", "-q", q)
    assert r.returncode == 0, r.stderr
    assert r.stdout == body
    r = amqp_tool(certs, tls_broker.tls_port, "amqp-delete-queue", "-q", q)
    assert r.returncode == 0, r.stderr


def test_amqp_tools_with_a_client_certificate(tls_broker, certs):
    """--cert/--key: ferryd asks for a certificate (--tls-verify peer) and accepts a valid one."""
    cert, key = certs.guest_cert
    q = f"tls-tools-cert-{os.getpid()}"
    r = amqp_tool(certs, tls_broker.tls_port, "amqp-declare-queue", "-q", q, extra=("--cert", cert, "--key", key))
    assert r.returncode == 0, r.stderr
    r = amqp_tool(certs, tls_broker.tls_port, "amqp-delete-queue", "-q", q, extra=("--cert", cert, "--key", key))
    assert r.returncode == 0, r.stderr


def test_amqp_tools_refuse_a_server_whose_ca_they_do_not_have(tls_broker, certs, tmp_path):
    other = tmp_path / "other-ca.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(tmp_path / "k"),
                    "-out", str(other), "-days", "1", "-subj", "/CN=Other CA"], check=True, capture_output=True)
    r = subprocess.run(["/usr/bin/amqp-declare-queue", "--url", f"amqps://localhost:{tls_broker.tls_port}",
                        "--ssl", "--cacert", str(other), "-q", "never"], capture_output=True, timeout=20)
    assert r.returncode != 0
    assert round_trip(pika_tls_params(certs, tls_broker.tls_port)) == b"ping"
