"""TLS settings: flags and the same keys in a config file; bad values, missing partners and
unreadable or mismatched files refuse to start with a message naming them (exit != 0)."""
import os
import subprocess

import pytest

from tls_helpers import pika_tls_params, round_trip
from ferryd import ROOT, free_port, wait_port

pytestmark = pytest.mark.ferry_only

FERRYD = os.environ.get("FERRYD") or os.path.join(ROOT, "build", "ferryd")


def refused(tmp_path, *args):
    r = subprocess.run([FERRYD, "--port", str(free_port()), "--data-dir", str(tmp_path / "d"), "--http-port", "0",
                        *args], capture_output=True, text=True, timeout=30)
    assert r.returncode != 0, f"ferryd started with {args}:\n{r.stderr}"
    return r.stderr


def test_config_file_keys(ferryd_factory, certs, tmp_path):
    port = free_port()
    conf = tmp_path / "ferryd.conf"
    conf.write_text(f"tls_port = {port}\ntls-cert = {certs.server_cert}\ntls-key = {certs.server_key}\n"
                    f"tls-ca = {certs.ca}\ntls-verify = require\nssl_cert_login_from = common_name\n")
    d = ferryd_factory("--config", str(conf))
    wait_port(d.host, port, 10, d.proc)
    import pika
    assert round_trip(pika_tls_params(certs, port, cert=certs.guest_cert,
                                      credentials=pika.credentials.ExternalCredentials())) == b"ping"


def test_tls_port_defaults_to_5671_with_a_certificate(ferryd_factory, certs):
    try:
        d = ferryd_factory("--tls-cert", certs.server_cert, "--tls-key", certs.server_key)
    except RuntimeError:  # 5671 busy on this machine: then the refusal must name it
        return
    assert "over TLS (amqps) on 127.0.0.1:5671" in d.log_text()


@pytest.mark.parametrize("args,words", [
    (["--tls-verify", "sometimes"], ["tls-verify", "sometimes"]),
    (["--tls-port", "70000"], ["tls-port", "70000"]),
    (["--ssl-cert-login-from", "email"], ["ssl-cert-login-from", "email"]),
    (["--tls-cert", "{cert}"], ["tls-key"]),
    (["--tls-key", "{key}"], ["tls-cert"]),
    (["--tls-port", "5999"], ["tls-port", "tls-cert"]),
    (["--tls-cert", "{cert}", "--tls-key", "{key}", "--tls-verify", "require"], ["tls-verify", "tls-ca"]),
    (["--tls-cert", "/nonexistent/cert.pem", "--tls-key", "{key}", "--tls-port", "{port}"],
     ["tls-cert", "/nonexistent/cert.pem"]),
    (["--tls-cert", "{cert}", "--tls-key", "/nonexistent/key.pem", "--tls-port", "{port}"],
     ["tls-key", "/nonexistent/key.pem"]),
    (["--tls-cert", "{cert}", "--tls-key", "{cakey}", "--tls-port", "{port}"], ["tls-key", "mismatch"]),
    (["--tls-cert", "{cert}", "--tls-key", "{key}", "--tls-ca", "/nonexistent/ca.pem", "--tls-port", "{port}"],
     ["tls-ca", "/nonexistent/ca.pem"]),
])
def test_bad_settings_refuse_to_start(tmp_path, certs, args, words):
    subst = {"cert": certs.server_cert, "key": certs.server_key, "cakey": certs.ca_key, "port": str(free_port())}
    err = refused(tmp_path, *[a.format(**subst) for a in args])
    for w in words:
        assert w in err, err


def test_an_unreadable_key_refuses_to_start(tmp_path, certs):
    if os.geteuid() == 0:
        key = tmp_path / "dir.key"
        key.mkdir()  # root reads any file: a directory is unreadable as a key for everyone
    else:
        key = tmp_path / "secret.key"
        key.write_bytes(open(certs.server_key, "rb").read())
        key.chmod(0)
    err = refused(tmp_path, "--tls-cert", certs.server_cert, "--tls-key", str(key), "--tls-port", str(free_port()))
    assert "tls-key" in err and str(key) in err, err
