"""A tiny AMQP 0-9-1 encoder/decoder over a raw socket, for malformed-input tests.

No client library on purpose: these tests send bytes no well-behaved client would send
(bad frame ends, oversized frames, truncated arguments, broken field tables) and read the
broker's exact answer. Only the handful of methods the tests need are encoded; the decoder
understands any frame and fully decodes connection.close / channel.close and the few
replies the "broker still serves" check needs.

Wire format (AMQP 0-9-1 section 4.2.3, 2.3.5):
    frame   = type:octet channel:short size:long payload:size frame-end:octet(0xCE)
    method  = class-id:short method-id:short arguments...
    header  = class-id:short weight:short(0) body-size:longlong flags:short properties...
"""
import socket
import struct
import time

PROTOCOL_HEADER = b"AMQP\x00\x00\x09\x01"

FRAME_METHOD = 1
FRAME_HEADER = 2
FRAME_BODY = 3
FRAME_HEARTBEAT = 8
FRAME_END = 0xCE
FRAME_MIN_SIZE = 4096

# Reply codes (AMQP 0-9-1 spec, "constants").
REPLY_SUCCESS = 200
CONTENT_TOO_LARGE = 311
NO_ROUTE = 312
NO_CONSUMERS = 313
CONNECTION_FORCED = 320
INVALID_PATH = 402
ACCESS_REFUSED = 403
NOT_FOUND = 404
RESOURCE_LOCKED = 405
PRECONDITION_FAILED = 406
FRAME_ERROR = 501
SYNTAX_ERROR = 502
COMMAND_INVALID = 503
CHANNEL_ERROR = 504
UNEXPECTED_FRAME = 505
RESOURCE_ERROR = 506
NOT_ALLOWED = 530
NOT_IMPLEMENTED = 540
INTERNAL_ERROR = 541

# (class-id, method-id) of the methods used here.
CONNECTION_START = (10, 10)
CONNECTION_START_OK = (10, 11)
CONNECTION_SECURE = (10, 20)
CONNECTION_TUNE = (10, 30)
CONNECTION_TUNE_OK = (10, 31)
CONNECTION_OPEN = (10, 40)
CONNECTION_OPEN_OK = (10, 41)
CONNECTION_CLOSE = (10, 50)
CONNECTION_CLOSE_OK = (10, 51)
CHANNEL_OPEN = (20, 10)
CHANNEL_OPEN_OK = (20, 11)
CHANNEL_CLOSE = (20, 40)
CHANNEL_CLOSE_OK = (20, 41)
EXCHANGE_DECLARE = (40, 10)
QUEUE_DECLARE = (50, 10)
QUEUE_DECLARE_OK = (50, 11)
QUEUE_DELETE = (50, 40)
QUEUE_DELETE_OK = (50, 41)
BASIC_QOS = (60, 10)
BASIC_PUBLISH = (60, 40)
BASIC_GET = (60, 70)
BASIC_GET_OK = (60, 71)
BASIC_GET_EMPTY = (60, 72)
BASIC_ACK = (60, 80)
BASIC_CLASS = 60


# ---------------------------------------------------------------- encoding primitives

def octet(v):
    return struct.pack(">B", v)


def short(v):
    return struct.pack(">H", v)


def long_(v):
    return struct.pack(">I", v)


def longlong(v):
    return struct.pack(">Q", v)


def shortstr(s):
    b = s.encode() if isinstance(s, str) else s
    assert len(b) < 256, "shortstr too long"
    return octet(len(b)) + b


def longstr(s):
    b = s.encode() if isinstance(s, str) else s
    return long_(len(b)) + b


def bits(*flags):
    """Consecutive bit arguments packed into one octet, first flag in the low bit."""
    v = 0
    for i, f in enumerate(flags):
        if f:
            v |= 1 << i
    return octet(v)


def field_value(v):
    """One typed field value, using RabbitMQ's type octets (the 0-9-1 errata set)."""
    if isinstance(v, bool):
        return b"t" + octet(1 if v else 0)
    if isinstance(v, int):
        if -2 ** 31 <= v < 2 ** 31:
            return b"I" + struct.pack(">i", v)
        return b"l" + struct.pack(">q", v)
    if isinstance(v, float):
        return b"d" + struct.pack(">d", v)
    if isinstance(v, (str, bytes)):
        return b"S" + longstr(v)
    if isinstance(v, dict):
        return b"F" + table(v)
    if isinstance(v, (list, tuple)):
        body = b"".join(field_value(x) for x in v)
        return b"A" + long_(len(body)) + body
    if v is None:
        return b"V"
    raise TypeError(f"cannot encode {v!r}")


def table_body(d):
    """A field table's contents without the 4-byte length (AMQPLAIN's response format)."""
    return b"".join(shortstr(k) + field_value(v) for k, v in d.items())


def table(d):
    body = table_body(d or {})
    return long_(len(body)) + body


# ---------------------------------------------------------------- frames

def frame(ftype, channel, payload, end=FRAME_END):
    return octet(ftype) + short(channel) + long_(len(payload)) + payload + octet(end)


def method_frame(channel, method, args=b"", end=FRAME_END):
    class_id, method_id = method
    return frame(FRAME_METHOD, channel, short(class_id) + short(method_id) + args, end)


def header_frame(channel, body_size, class_id=BASIC_CLASS, flags=0, props=b""):
    return frame(FRAME_HEADER, channel,
                 short(class_id) + short(0) + longlong(body_size) + short(flags) + props)


def body_frame(channel, data):
    return frame(FRAME_BODY, channel, data)


def heartbeat_frame(channel=0):
    return frame(FRAME_HEARTBEAT, channel, b"")


# ---------------------------------------------------------------- method arguments

def start_ok_args(mechanism="PLAIN", response=b"\x00guest\x00guest", locale="en_US",
                  client_properties=None):
    props = client_properties if client_properties is not None else {
        "product": "ferry-malformed-tests",
        "capabilities": {"authentication_failure_close": True},
    }
    return table(props) + shortstr(mechanism) + longstr(response) + shortstr(locale)


def plain_response(user, password):
    return b"\x00" + user.encode() + b"\x00" + password.encode()


def amqplain_response(user, password):
    return table_body({"LOGIN": user, "PASSWORD": password})


def tune_ok_args(channel_max=0, frame_max=131072, heartbeat=0):
    return short(channel_max) + long_(frame_max) + short(heartbeat)


def open_args(vhost="/"):
    return shortstr(vhost) + shortstr("") + bits(False)


def connection_close_args(code=200, text="bye", class_id=0, method_id=0):
    return short(code) + shortstr(text) + short(class_id) + short(method_id)


def channel_open_args():
    return shortstr("")


def queue_declare_args(name, passive=False, durable=False, exclusive=False,
                       auto_delete=False, nowait=False, arguments=None, raw_arguments=None):
    args = raw_arguments if raw_arguments is not None else table(arguments or {})
    return short(0) + shortstr(name) + bits(passive, durable, exclusive, auto_delete, nowait) + args


def queue_delete_args(name, if_unused=False, if_empty=False, nowait=False):
    return short(0) + shortstr(name) + bits(if_unused, if_empty, nowait)


def basic_publish_args(exchange="", routing_key="", mandatory=False, immediate=False):
    return short(0) + shortstr(exchange) + shortstr(routing_key) + bits(mandatory, immediate)


def basic_get_args(queue, no_ack=True):
    return short(0) + shortstr(queue) + bits(no_ack)


# ---------------------------------------------------------------- decoding

class Reader:
    """Sequential decoder over one frame payload."""

    def __init__(self, data):
        self.data, self.pos = data, 0

    def take(self, n):
        if self.pos + n > len(self.data):
            raise ValueError("argument runs past the end of the frame")
        b = self.data[self.pos:self.pos + n]
        self.pos += n
        return b

    def octet(self):
        return self.take(1)[0]

    def short(self):
        return struct.unpack(">H", self.take(2))[0]

    def long(self):
        return struct.unpack(">I", self.take(4))[0]

    def longlong(self):
        return struct.unpack(">Q", self.take(8))[0]

    def shortstr(self):
        return self.take(self.octet()).decode(errors="replace")

    def longstr(self):
        return self.take(self.long())

    def table(self):
        end_reader = Reader(self.longstr())
        out = {}
        while end_reader.pos < len(end_reader.data):
            key = end_reader.shortstr()
            out[key] = end_reader.value()
        return out

    def value(self):
        t = chr(self.octet())
        fixed = {"b": ">b", "B": ">B", "s": ">h", "u": ">H", "I": ">i", "i": ">I",
                 "l": ">q", "L": ">Q", "f": ">f", "d": ">d", "T": ">Q"}
        if t == "t":
            return bool(self.octet())
        if t in fixed:
            fmt = fixed[t]
            return struct.unpack(fmt, self.take(struct.calcsize(fmt)))[0]
        if t == "D":
            scale = self.octet()
            return struct.unpack(">i", self.take(4))[0] / (10 ** scale)
        if t == "S":
            return self.longstr().decode(errors="replace")
        if t == "x":
            return self.longstr()
        if t == "F":
            return self.table()
        if t == "A":
            sub = Reader(self.longstr())
            items = []
            while sub.pos < len(sub.data):
                items.append(sub.value())
            return items
        if t == "V":
            return None
        raise ValueError(f"unknown field type {t!r}")


class Frame:
    def __init__(self, ftype, channel, payload):
        self.type, self.channel, self.payload = ftype, channel, payload
        self.method = None
        self.args = {}
        if ftype == FRAME_METHOD and len(payload) >= 4:
            self.method = struct.unpack(">HH", payload[:4])
            self.args = decode_method(self.method, Reader(payload[4:]))

    def __repr__(self):
        if self.method:
            return f"<method {self.method} ch={self.channel} {self.args}>"
        return f"<frame type={self.type} ch={self.channel} {self.payload[:40]!r}>"


def decode_method(method, r):
    """Arguments of the server methods these tests look at; {} for the rest."""
    if method == CONNECTION_START:
        return {"version_major": r.octet(), "version_minor": r.octet(),
                "server_properties": r.table(), "mechanisms": r.longstr().decode(),
                "locales": r.longstr().decode()}
    if method == CONNECTION_TUNE:
        return {"channel_max": r.short(), "frame_max": r.long(), "heartbeat": r.short()}
    if method in (CONNECTION_CLOSE, CHANNEL_CLOSE):
        return {"reply_code": r.short(), "reply_text": r.shortstr(),
                "class_id": r.short(), "method_id": r.short()}
    if method == QUEUE_DECLARE_OK:
        return {"queue": r.shortstr(), "message_count": r.long(), "consumer_count": r.long()}
    if method == BASIC_GET_OK:
        return {"delivery_tag": r.longlong(), "redelivered": bool(r.octet() & 1),
                "exchange": r.shortstr(), "routing_key": r.shortstr(),
                "message_count": r.long()}
    return {}


class Closed(Exception):
    """The server closed the TCP connection."""


class Close:
    """What the server said when it closed something: level is 'connection' or 'channel'."""

    def __init__(self, level, channel, args):
        self.level = level
        self.channel = channel
        self.code = args["reply_code"]
        self.text = args["reply_text"]
        self.class_id = args["class_id"]
        self.method_id = args["method_id"]

    def __repr__(self):
        return (f"<{self.level}.close ch={self.channel} {self.code} {self.text!r} "
                f"class={self.class_id} method={self.method_id}>")


class Connection:
    """One raw TCP connection to the broker, with helpers to do a correct handshake."""

    def __init__(self, host, port, timeout=5.0):
        self.sock = socket.create_connection((host, port), timeout=timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buf = b""
        self.start = None
        self.tune = None

    # -- raw I/O

    def send(self, data):
        self.sock.sendall(data)

    def _fill(self, deadline):
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError("no data from the server in time")
        self.sock.settimeout(remaining)
        try:
            chunk = self.sock.recv(65536)
        except socket.timeout:
            raise TimeoutError("no data from the server in time") from None
        except ConnectionResetError:
            chunk = b""
        if not chunk:
            raise Closed()
        self.buf += chunk

    def recv_exact(self, n, timeout=5.0):
        deadline = time.monotonic() + timeout
        while len(self.buf) < n:
            self._fill(deadline)
        out, self.buf = self.buf[:n], self.buf[n:]
        return out

    def recv_frame(self, timeout=5.0, skip_heartbeats=True):
        deadline = time.monotonic() + timeout
        while True:
            while len(self.buf) < 7:
                self._fill(deadline)
            ftype, channel, size = struct.unpack(">BHI", self.buf[:7])
            while len(self.buf) < 7 + size + 1:
                self._fill(deadline)
            payload = self.buf[7:7 + size]
            end = self.buf[7 + size]
            self.buf = self.buf[7 + size + 1:]
            if end != FRAME_END:
                raise ValueError(f"server sent a bad frame end {end:#x}")
            if ftype == FRAME_HEARTBEAT and skip_heartbeats:
                continue
            return Frame(ftype, channel, payload)

    def expect(self, method, timeout=5.0):
        f = self.recv_frame(timeout)
        if f.method != method:
            raise AssertionError(f"expected {method}, got {f!r}")
        return f

    def wait_eof(self, timeout=5.0):
        """Read and discard until the server closes the socket; True if it did in time."""
        deadline = time.monotonic() + timeout
        try:
            while True:
                self._fill(deadline)
                self.buf = b""
        except Closed:
            return True
        except TimeoutError:
            return False

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    # -- handshake steps

    def send_header(self, header=PROTOCOL_HEADER):
        self.send(header)

    def read_start(self):
        self.start = self.expect(CONNECTION_START)
        return self.start

    def send_start_ok(self, mechanism="PLAIN", response=None, **kw):
        if response is None:
            response = plain_response("guest", "guest")
        self.send(method_frame(0, CONNECTION_START_OK, start_ok_args(mechanism, response, **kw)))

    def read_tune(self):
        self.tune = self.expect(CONNECTION_TUNE)
        return self.tune

    def send_tune_ok(self, channel_max=None, frame_max=None, heartbeat=0):
        t = self.tune.args
        self.send(method_frame(0, CONNECTION_TUNE_OK, tune_ok_args(
            t["channel_max"] if channel_max is None else channel_max,
            t["frame_max"] if frame_max is None else frame_max,
            heartbeat)))

    def send_open(self, vhost="/"):
        self.send(method_frame(0, CONNECTION_OPEN, open_args(vhost)))

    def handshake(self, heartbeat=0, frame_max=None, channel_max=None):
        """Header, start/start-ok (PLAIN guest), tune/tune-ok, open/open-ok."""
        self.send_header()
        self.read_start()
        self.send_start_ok()
        self.read_tune()
        self.send_tune_ok(channel_max=channel_max, frame_max=frame_max, heartbeat=heartbeat)
        self.send_open()
        self.expect(CONNECTION_OPEN_OK)
        return self

    def open_channel(self, channel=1):
        self.send(method_frame(channel, CHANNEL_OPEN, channel_open_args()))
        self.expect(CHANNEL_OPEN_OK)

    # -- the outcome of a bad input

    def read_close(self, timeout=5.0):
        """Read frames until a connection.close or channel.close arrives and return it as a
        Close; answers a connection.close with close-ok, as a client must. Raises Closed if
        the socket closes first."""
        deadline = time.monotonic() + timeout
        while True:
            f = self.recv_frame(max(0.0, deadline - time.monotonic()))
            if f.method == CONNECTION_CLOSE:
                try:
                    self.send(method_frame(0, CONNECTION_CLOSE_OK))
                except OSError:
                    pass
                return Close("connection", f.channel, f.args)
            if f.method == CHANNEL_CLOSE:
                return Close("channel", f.channel, f.args)
