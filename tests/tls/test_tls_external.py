"""Mutual TLS and the EXTERNAL mechanism (RabbitMQ's rabbitmq_auth_mechanism_ssl): with
--tls-verify peer/require, a client that shows a certificate signed by --tls-ca is offered
EXTERNAL in connection.start and logs in as the user its certificate names — the subject's
full distinguished name in RabbitMQ's format ("CN=client,O=Test") by default, or its CN with
ssl-cert-login-from = common_name — with no password. The user must exist in ferryd's user
store (a definitions file, or the default user guest) and is then held to its permissions."""
import json
import ssl
import time

import pika
import pytest

from tls_helpers import pika_tls_params, read_connection_start, round_trip, tls_args, tls_socket
from ferryd import free_port, wait_port

pytestmark = pytest.mark.ferry_only


def start(ferryd_factory, certs, verify, *extra):
    port = free_port()
    d = ferryd_factory(*tls_args(certs, port, verify, *extra))
    wait_port(d.host, port, 10, d.proc)
    d.tls_port = port
    return d


def mechanisms(certs, port, cert):
    s = tls_socket(certs, port, cert)
    try:
        start = read_connection_start(s)
    finally:
        s.close()
    for m in (b"PLAIN AMQPLAIN EXTERNAL", b"PLAIN AMQPLAIN"):
        if m in start:
            return m.decode()
    raise AssertionError(f"no mechanisms in {start!r}")


def test_external_is_offered_only_to_a_client_with_a_verified_certificate(ferryd_factory, certs):
    d = start(ferryd_factory, certs, "peer")
    assert mechanisms(certs, d.tls_port, certs.guest_cert) == "PLAIN AMQPLAIN EXTERNAL"
    assert mechanisms(certs, d.tls_port, None) == "PLAIN AMQPLAIN"


def test_external_logs_in_by_common_name(ferryd_factory, certs):
    d = start(ferryd_factory, certs, "require", "--ssl-cert-login-from", "common_name")
    params = pika_tls_params(certs, d.tls_port, cert=certs.guest_cert, credentials=pika.credentials.ExternalCredentials())
    assert round_trip(params, b"mutual") == b"mutual"  # logged in as guest, no password sent


def test_external_by_distinguished_name_is_the_default_and_names_the_whole_subject(ferryd_factory, certs):
    """The certificate /O=Test/CN=guest names user "CN=guest,O=Test", which does not exist: 403."""
    d = start(ferryd_factory, certs, "peer")
    params = pika_tls_params(certs, d.tls_port, cert=certs.guest_cert, credentials=pika.credentials.ExternalCredentials())
    with pytest.raises(pika.exceptions.ProbableAuthenticationError) as e:
        pika.BlockingConnection(params)
    assert "403" in str(e.value) and "EXTERNAL" in str(e.value)
    assert "login refused for user 'CN=guest,O=Test'" in d.log_text()
    # the password mechanisms still work on the same connection kind
    assert round_trip(pika_tls_params(certs, d.tls_port, cert=certs.guest_cert)) == b"ping"


def test_distinguished_name_format_is_rabbitmqs(ferryd_factory, certs):
    """RFC 4514 order (last RDN first), multi-valued RDNs joined by '+', RabbitMQ's escapes."""
    cert = certs._sign("oddname", "/C=NO/O=Test, Inc./OU=a+OU=b/CN=#client \"one\"", 2003,
                       ["basicConstraints=CA:FALSE", "extendedKeyUsage=clientAuth"])
    d = start(ferryd_factory, certs, "peer")
    params = pika_tls_params(certs, d.tls_port, cert=cert, credentials=pika.credentials.ExternalCredentials())
    with pytest.raises(pika.exceptions.ProbableAuthenticationError):
        pika.BlockingConnection(params)
    expected = 'CN=\\#client \\"one\\",OU=a+OU=b,O=Test\\, Inc.,C=NO'
    assert f"login refused for user '{expected}'" in d.log_text(), d.log_text()[-2000:]


def test_external_with_common_name_of_an_unknown_user_is_refused(ferryd_factory, certs):
    d = start(ferryd_factory, certs, "peer", "--ssl-cert-login-from", "common_name")
    params = pika_tls_params(certs, d.tls_port, cert=certs.dn_cert, credentials=pika.credentials.ExternalCredentials())
    with pytest.raises(pika.exceptions.ProbableAuthenticationError):
        pika.BlockingConnection(params)
    assert "login refused for user 'client'" in d.log_text()


def test_external_without_a_certificate_is_not_offered(ferryd_factory, certs):
    d = start(ferryd_factory, certs, "peer", "--ssl-cert-login-from", "common_name")
    params = pika_tls_params(certs, d.tls_port, credentials=pika.credentials.ExternalCredentials())
    with pytest.raises(pika.exceptions.AMQPConnectionError):
        pika.BlockingConnection(params)  # pika: the server does not offer EXTERNAL
    assert round_trip(pika_tls_params(certs, d.tls_port)) == b"ping"


def test_require_refuses_a_client_without_a_certificate(ferryd_factory, certs):
    d = start(ferryd_factory, certs, "require")
    with pytest.raises((pika.exceptions.AMQPConnectionError, ssl.SSLError, ConnectionError)):
        c = pika.BlockingConnection(pika_tls_params(certs, d.tls_port))
        c.channel()  # TLS 1.3: the refusal may only show at the first read
    time.sleep(0.2)
    assert "TLS handshake" in d.log_text()
    assert round_trip(pika_tls_params(certs, d.tls_port, cert=certs.guest_cert)) == b"ping"


def test_a_certificate_from_another_ca_is_refused(ferryd_factory, certs, tmp_path):
    from certs import Certs
    other = Certs(str(tmp_path / "other"))
    bad = other.client("guest", "/O=Test/CN=guest")
    d = start(ferryd_factory, certs, "peer", "--ssl-cert-login-from", "common_name")
    with pytest.raises((pika.exceptions.AMQPConnectionError, ssl.SSLError, ConnectionError)):
        c = pika.BlockingConnection(pika_tls_params(certs, d.tls_port, cert=bad,
                                                    credentials=pika.credentials.ExternalCredentials()))
        c.channel()
    assert round_trip(pika_tls_params(certs, d.tls_port, cert=certs.guest_cert,
                                      credentials=pika.credentials.ExternalCredentials())) == b"ping"


def test_external_by_distinguished_name_logs_in_a_user_from_the_definitions(ferryd_factory, certs, tmp_path):
    """A user named by the whole DN, with no password at all, declared in a definitions file:
    the certificate logs in; its permissions apply; the same name cannot log in by password."""
    dn = "CN=client,O=Test"
    defs = {"users": [{"name": dn, "password_hash": "", "hashing_algorithm": "rabbit_password_hashing_sha256",
                       "tags": []}],
            "vhosts": [{"name": "/"}],
            "permissions": [{"user": dn, "vhost": "/", "configure": "^tls-", "write": "^(tls-|amq\\.default$)",
                             "read": "^tls-"}]}
    f = tmp_path / "defs.json"
    f.write_text(json.dumps(defs))
    d = start(ferryd_factory, certs, "require", "--definitions", str(f))
    params = pika_tls_params(certs, d.tls_port, cert=certs.dn_cert, credentials=pika.credentials.ExternalCredentials())
    conn = pika.BlockingConnection(params)
    try:
        ch = conn.channel()
        ch.queue_declare("tls-ext")
        ch.basic_publish("", "tls-ext", b"by certificate")
        assert ch.basic_get("tls-ext", auto_ack=True)[2] == b"by certificate"
        with pytest.raises(pika.exceptions.ChannelClosedByBroker) as e:
            ch.queue_declare("other")  # no configure permission outside ^tls-
        assert e.value.reply_code == 403
    finally:
        if conn.is_open:
            conn.close()
    # no password makes it in as that user; guest is not created with a definitions file
    for creds in (pika.PlainCredentials(dn, ""), pika.PlainCredentials("guest", "guest")):
        with pytest.raises(pika.exceptions.ProbableAuthenticationError):
            pika.BlockingConnection(pika_tls_params(certs, d.tls_port, cert=certs.dn_cert, credentials=creds))
