"""No confirmed stream event is lost: injected write and fdatasync failures on the stream's
files (FERRY_IO_FAULTS, src/storeio.h) and a simulated power cut (FERRY_IO_VOLATILE). Every
publish the broker confirmed must be in the stream after a restart, in publish order; a
nacked one may or may not be."""
import os
import signal
import time

import pika
import pytest

from streamlib import Reader, connect, declare, drain

pytestmark = pytest.mark.ferry_only  # ferryd's behaviour (FERRY_TEST_AMQP_URL: skipped)


def publish_each(url, n, tag):
    """Publishes n events one at a time with confirms; returns the bodies confirmed."""
    c = connect(url)
    ch = c.channel()
    ch.confirm_delivery()
    ok = []
    for i in range(n):
        b = b"%s-%05d" % (tag, i)
        try:
            ch.basic_publish("", "faulty", b)
            ok.append(b)
        except pika.exceptions.NackError:
            pass
        except (pika.exceptions.ChannelClosedByBroker, pika.exceptions.ChannelWrongStateError):
            ch = c.channel()
            ch.confirm_delivery()
    c.close()
    return ok


def read_all(url):
    c = connect(url)
    r = Reader(c, "faulty", {"x-stream-offset": "first"}, want=None)
    drain(c, [], settle=1.5)
    c.close()
    return r


def check(confirmed, r):
    offs = r.offsets()
    assert offs == sorted(set(offs)), "offsets only increase"
    bodies = r.bodies()
    pos = {b: i for i, b in enumerate(bodies)}
    missing = [b for b in confirmed if b not in pos]
    assert not missing, f"{len(missing)} confirmed events lost, e.g. {missing[:3]}"
    order = [pos[b] for b in confirmed]
    assert order == sorted(order), "confirmed events keep their publish order"


# make test: two seeds; FERRY_SOAK=1 (make soak): twenty.
SEEDS = list(range(1, 21)) if os.environ.get("FERRY_SOAK") else [1, 2]


@pytest.mark.parametrize("seed", SEEDS)
def test_injected_write_and_sync_failures_lose_no_confirmed_event(ferryd_factory, tmp_path, seed):
    data = str(tmp_path / "data")
    d = ferryd_factory(data_dir=data)
    c = connect(d.url)
    declare(c.channel(), "faulty", **{"x-stream-max-segment-size-bytes": 4000})
    c.close()
    d.stop_and_check()
    faults = "op=fdatasync,p=0.1,err=EIO;op=write,p=0.05,err=EIO,short"
    f = ferryd_factory(data_dir=data, env={"FERRY_IO_FAULTS": faults, "FERRY_IO_SEED": str(seed)})
    confirmed = publish_each(f.url, 300, b"a")
    log = f.log_text()
    assert "injected fault" in log and len(confirmed) < 300, "faults were injected and some publishes nacked"
    assert len(confirmed) > 100
    check(confirmed, read_all(f.url))  # while the faults go on
    f.stop()
    g = ferryd_factory(data_dir=data)
    check(confirmed, read_all(g.url))
    more = publish_each(g.url, 20, b"b")
    assert len(more) == 20
    r = read_all(g.url)
    check(confirmed + more, r)


def test_power_cut_loses_no_confirmed_event(ferryd_factory, tmp_path):
    data = str(tmp_path / "data")
    d = ferryd_factory(data_dir=data, env={"FERRY_IO_VOLATILE": "1", "FERRY_IO_SEED": "7"})
    c = connect(d.url)
    declare(c.channel(), "faulty", **{"x-stream-max-segment-size-bytes": 4000})
    c.close()
    confirmed = publish_each(d.url, 200, b"p")
    assert len(confirmed) == 200
    d.proc.send_signal(signal.SIGUSR2)  # the power cut: unsynced writes lose what they like
    assert d.proc.wait(20) == 99
    d.log.close()
    g = ferryd_factory(data_dir=data)
    check(confirmed, read_all(g.url))
