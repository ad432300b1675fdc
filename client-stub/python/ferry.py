"""ferry.py: a one-file Python client for ferryd.

Standard library plus cbor2 (Debian: python3-cbor2). Frames are a 4-byte
big-endian length and one CBOR item; see docs/protocol.md.

    from ferry import Client
    with Client("/run/ferry/ferry.sock") as f:
        f.ping()                       # "PONG"
        f.redis("SET", "k", "v")       # "OK"
        f.redis("GET", "k")            # b"v"

Pipelining: send() returns the request id at once; recv() returns the next
response, in whatever order the server answers.
"""

import os
import socket
import struct

import cbor2

DEFAULT_SOCKET = "/run/ferry/ferry.sock"
PROTOCOL = 1


class FerryError(Exception):
    """An error response: code is one of the documented codes."""

    def __init__(self, code, message, id=None):
        super().__init__("%s: %s" % (code, message))
        self.code = code
        self.message = message
        self.id = id


class ConnectionClosed(Exception):
    """The daemon closed the connection."""


def encode_frame(obj):
    body = cbor2.dumps(obj)
    return struct.pack(">I", len(body)) + body


class Client:
    def __init__(self, path=None, timeout=None):
        self.path = path or os.environ.get("FERRY_SOCKET", DEFAULT_SOCKET)
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(timeout)
        self.sock.connect(self.path)
        self._buf = b""
        self._next_id = 1
        self._parked = {}  # responses read while waiting for another id
        self.pushes = []   # push frames received, in order
        self.on_push = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def close(self):
        if self.sock:
            self.sock.close()
            self.sock = None

    # -- framing ------------------------------------------------------------

    def send_raw(self, data):
        self.sock.sendall(data)

    def _read_exact(self, n):
        while len(self._buf) < n:
            chunk = self.sock.recv(max(65536, n - len(self._buf)))
            if not chunk:
                raise ConnectionClosed("ferryd closed the connection")
            self._buf += chunk
        out, self._buf = self._buf[:n], self._buf[n:]
        return out

    def recv_frame(self):
        """Returns the next frame from the server, decoded."""
        (n,) = struct.unpack(">I", self._read_exact(4))
        return cbor2.loads(self._read_exact(n))

    # -- requests -----------------------------------------------------------

    def send(self, op, args=None, deadline=None, id=None, traceparent=None, tracestate=None):
        """Sends one request without waiting; returns its id."""
        if id is None:
            id = self._next_id
            self._next_id += 1
        req = {"id": id, "op": op}
        if args is not None:
            req["args"] = args
        if deadline is not None:
            req["deadline"] = deadline
        if traceparent is not None:
            req["traceparent"] = traceparent
        if tracestate is not None:
            req["tracestate"] = tracestate
        self.sock.sendall(encode_frame(req))
        return id

    def recv(self):
        """Returns the next response frame (a dict with "id" and "result"
        or "error"). Push frames go to on_push, or to self.pushes."""
        if self._parked:
            key = next(iter(self._parked))
            return self._parked.pop(key)
        while True:
            frame = self.recv_frame()
            if isinstance(frame, dict) and "sub" in frame and "id" not in frame:
                if self.on_push:
                    self.on_push(frame)
                else:
                    self.pushes.append(frame)
                continue
            return frame

    def wait(self, id):
        """Returns the result of request id, raising FerryError for an error."""
        while id not in self._parked:
            frame = self.recv_frame()
            if isinstance(frame, dict) and "sub" in frame and "id" not in frame:
                if self.on_push:
                    self.on_push(frame)
                else:
                    self.pushes.append(frame)
                continue
            if "id" not in frame:
                err = frame.get("error", {})
                raise FerryError(err.get("code"), err.get("message"))
            self._parked[frame["id"]] = frame
        return result_of(self._parked.pop(id))

    def call(self, op, args=None, deadline=None, **kw):
        return self.wait(self.send(op, args, deadline, **kw))

    # -- ops ----------------------------------------------------------------

    def ping(self, deadline=None):
        return self.call("ping", deadline=deadline)

    def hello(self, protocol=PROTOCOL):
        return self.call("hello", {"protocol": protocol})

    def stats(self):
        return self.call("stats")

    def redis(self, *argv, deadline=None):
        return self.call("redis", [to_bytes(a) for a in argv], deadline)


def to_bytes(a):
    if isinstance(a, bytes):
        return a
    if isinstance(a, str):
        return a.encode()
    return str(a).encode()


def result_of(frame):
    if "error" in frame:
        err = frame["error"]
        raise FerryError(err.get("code"), err.get("message"), frame.get("id"))
    return frame["result"]
