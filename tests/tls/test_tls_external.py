"""Mutual TLS and the EXTERNAL mechanism (RabbitMQ's rabbitmq_auth_mechanism_ssl): with
--tls-verify peer/require, a client that shows a certificate signed by --tls-ca is offered
EXTERNAL in connection.start and logs in as the user its certificate names — the subject's
full distinguished name in RabbitMQ's format ("CN=client,O=Test") by default, or its CN with
ssl-cert-login-from = common_name — with no password. The user must exist; until ferryd has
a user store (issue 10, branch access) the one user is the default user, guest."""
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
