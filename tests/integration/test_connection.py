"""Connection setup: authentication, virtual hosts, tune negotiation and heartbeats."""
import time

import pika
import pytest
from pika import exceptions

from .helpers import pump, temp_queue, unique


def test_wrong_password_is_refused_with_403_access_refused(connect):
    with pytest.raises(exceptions.ProbableAuthenticationError) as ei:
        connect(credentials=pika.PlainCredentials("guest", "not-the-password"))
    assert "(403) 'ACCESS_REFUSED - Login was refused using authentication mechanism PLAIN. " \
           "For details see the broker logfile.'" in str(ei.value)


def test_unknown_user_is_refused_with_403_access_refused(connect):
    with pytest.raises(exceptions.ProbableAuthenticationError) as ei:
        connect(credentials=pika.PlainCredentials(unique("nobody"), "guest"))
    assert "(403) 'ACCESS_REFUSED - Login was refused using authentication mechanism PLAIN. " \
           "For details see the broker logfile.'" in str(ei.value)


def test_missing_vhost_is_refused_on_open_with_530_not_allowed(connect):
    vhost = unique("vhost")
    with pytest.raises(exceptions.ProbableAccessDeniedError) as ei:
        connect(virtual_host=vhost)
    assert f"(530) 'NOT_ALLOWED - vhost {vhost} not found'" in str(ei.value)


def test_server_proposes_heartbeat_60_and_channel_max_2047_frame_max_131072(connect):
    proposed = []

    def accept(_conn, server_value):
        proposed.append(server_value)
        return server_value

    conn = connect(heartbeat=accept)
    assert proposed == [60]
    params = conn._impl.params
    assert (params.heartbeat, params.channel_max, params.frame_max) == (60, 2047, 131072)


def test_client_chosen_heartbeat_is_used(connect):
    conn = connect(heartbeat=7)
    assert conn._impl.params.heartbeat == 7


def test_server_sends_heartbeats_at_the_negotiated_interval(connect):
    conn = connect(heartbeat=1)
    before = conn._impl.frames_received
    pump(conn, 2.6)
    # Nothing else happens on this connection: every frame received is a heartbeat.
    assert conn._impl.frames_received - before >= 2
    assert conn.is_open


def test_connection_with_client_heartbeats_outlives_several_intervals(connect):
    conn = connect(heartbeat=1)
    pump(conn, 3.2)  # pika sends heartbeats while it processes events
    q = temp_queue(conn.channel())
    assert q


def test_server_closes_connection_after_missed_client_heartbeats(connect):
    conn = connect(heartbeat=1)
    # Silence pika's heartbeats (it then neither sends nor checks them), keep reading:
    # only the broker can end this connection now.
    conn._impl._heartbeat_checker.stop()
    conn._impl._heartbeat_checker = None
    started = time.monotonic()
    with pytest.raises(exceptions.AMQPConnectionError):
        pump(conn, 6)
    assert conn.is_closed
    assert time.monotonic() - started >= 1.5  # not before two intervals were missed


def test_client_can_turn_heartbeats_off_with_zero(connect):
    proposed = []
    conn = connect(heartbeat=lambda _c, v: proposed.append(v) or 0)
    assert (proposed, conn._impl.params.heartbeat) == ([60], 0)
    temp_queue(conn.channel())


def test_many_channels_on_one_connection(conn):
    chans = [conn.channel() for _ in range(50)]
    qs = [temp_queue(c) for c in chans]
    for c, q in zip(chans, qs):
        c.basic_publish("", q, q.encode())
    for c, q in zip(chans, qs):
        assert c.basic_get(q, auto_ack=True)[2] == q.encode()
    assert len({c.channel_number for c in chans}) == 50
