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

    def _fill(self, n):
        # Bytes stay in the buffer until a whole frame is there, so a socket
        # timeout never loses part of one.
        while len(self._buf) < n:
            chunk = self.sock.recv(max(65536, n - len(self._buf)))
            if not chunk:
                raise ConnectionClosed("ferryd closed the connection")
            self._buf += chunk

    def recv_frame(self):
        """Returns the next frame from the server, decoded."""
        self._fill(4)
        (n,) = struct.unpack(">I", self._buf[:4])
        self._fill(4 + n)
        body, self._buf = self._buf[4:4 + n], self._buf[4 + n:]
        return cbor2.loads(body)

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
            if not self._route_push(frame):
                return frame

    def wait(self, id):
        """Returns the result of request id, raising FerryError for an error."""
        while id not in self._parked:
            frame = self.recv_frame()
            if self._route_push(frame):
                continue
            if "id" not in frame:
                err = frame.get("error", {})
                raise FerryError(err.get("code"), err.get("message"))
            self._parked[frame["id"]] = frame
        return result_of(self._parked.pop(id))

    def _route_push(self, frame):
        """Hands a push frame to on_push (or keeps it); False for others."""
        if not (isinstance(frame, dict) and "sub" in frame and "id" not in frame):
            return False
        if self.on_push:
            self.on_push(frame)
        else:
            self.pushes.append(frame)
        return True

    def call(self, op, args=None, deadline=None, **kw):
        return self.wait(self.send(op, args, deadline, **kw))

    # -- ops ----------------------------------------------------------------

    def ping(self, deadline=None):
        return self.call("ping", deadline=deadline)

    def hello(self, protocol=PROTOCOL):
        return self.call("hello", {"protocol": protocol})

    def stats(self):
        return self.call("stats")

    def health(self, deadline=None):
        """{"ready": bool, "backends": {name: "up" | "connecting" | "down"},
        "errors": {name: last error}}: ready when every configured backend
        is up (docs/protocol.md#health)."""
        return self.call("health", None, deadline)

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


class AMQP:
    """The AMQP ops, as methods: Client(...).amqp.publish(...)."""

    def __init__(self, client):
        self.c = client

    def declare_exchange(self, name, type="direct", durable=False, auto_delete=False,
                         internal=False, arguments=None, **kw):
        args = {"name": name, "type": type, "durable": durable, "auto_delete": auto_delete,
                "internal": internal}
        if arguments:
            args["arguments"] = arguments
        return self.c.call("exchange.declare", args, **kw)

    def delete_exchange(self, name, if_unused=False, **kw):
        return self.c.call("exchange.delete", {"name": name, "if_unused": if_unused}, **kw)

    def declare_queue(self, name="", durable=False, exclusive=False, auto_delete=False,
                      arguments=None, **kw):
        args = {"name": name, "durable": durable, "exclusive": exclusive,
                "auto_delete": auto_delete}
        if arguments:
            args["arguments"] = arguments
        return self.c.call("queue.declare", args, **kw)

    def bind(self, queue, exchange, routing_key="", arguments=None, **kw):
        args = {"queue": queue, "exchange": exchange, "routing_key": routing_key}
        if arguments:
            args["arguments"] = arguments
        return self.c.call("queue.bind", args, **kw)

    def unbind(self, queue, exchange, routing_key="", **kw):
        return self.c.call("queue.unbind", {"queue": queue, "exchange": exchange,
                                            "routing_key": routing_key}, **kw)

    def purge(self, queue, **kw):
        return self.c.call("queue.purge", {"queue": queue}, **kw)

    def delete_queue(self, queue, if_unused=False, if_empty=False, **kw):
        return self.c.call("queue.delete", {"queue": queue, "if_unused": if_unused,
                                            "if_empty": if_empty}, **kw)

    @staticmethod
    def message(exchange, routing_key, body, **props):
        m = {"exchange": exchange, "routing_key": routing_key, "body": to_bytes(body)}
        m.update(props)
        return m

    def publish(self, exchange, routing_key, body, deadline=None, **props):
        """Returns after the broker's confirm; raises FerryError with code
        nacked, unroutable, unconfirmed, blocked ... otherwise."""
        return self.c.call("publish", self.message(exchange, routing_key, body, **props), deadline)

    def send_publish(self, exchange, routing_key, body, deadline=None, **props):
        return self.c.send("publish", self.message(exchange, routing_key, body, **props), deadline)

    def publish_batch(self, messages, transactional=False, deadline=None):
        return self.c.call("publish.batch", {"messages": messages, "transactional": transactional},
                           deadline)

    def publish_delayed(self, exchange, routing_key, body, delay_ms, deadline=None, **props):
        m = self.message(exchange, routing_key, body, **props)
        m["delay_ms"] = delay_ms
        return self.c.call("publish.delayed", m, deadline)

    def consume(self, queue, prefetch=None, no_ack=False, exclusive=False, deadline=None):
        """Returns the subscription id; deliveries arrive as push frames
        with that "sub" (see Client.next_push)."""
        args = {"queue": queue, "no_ack": no_ack, "exclusive": exclusive}
        if prefetch is not None:
            args["prefetch"] = prefetch
        id = self.c.send("consume", args, deadline)
        self.c.wait(id)
        return id

    def ack(self, sub, delivery_tag, multiple=False, **kw):
        return self.c.call("ack", {"sub": sub, "delivery_tag": delivery_tag, "multiple": multiple}, **kw)

    def nack(self, sub, delivery_tag, multiple=False, requeue=True, **kw):
        return self.c.call("nack", {"sub": sub, "delivery_tag": delivery_tag, "multiple": multiple,
                                    "requeue": requeue}, **kw)

    def reject(self, sub, delivery_tag, requeue=False, **kw):
        return self.c.call("reject", {"sub": sub, "delivery_tag": delivery_tag, "requeue": requeue},
                           **kw)

    def cancel(self, sub, **kw):
        return self.c.call("cancel", {"sub": sub}, **kw)

    def get(self, queue, **kw):
        return self.c.call("get", {"queue": queue}, **kw)

    def rpc(self, exchange, routing_key, body, deadline=None, **props):
        return self.c.call("rpc", self.message(exchange, routing_key, body, **props), deadline)


def _amqp(self):
    return AMQP(self)


def _next_push(self, timeout=None):
    """Returns the next push frame, reading from the socket if needed."""
    if self.pushes:
        return self.pushes.pop(0)
    old = self.sock.gettimeout()
    self.sock.settimeout(timeout)
    try:
        while True:
            frame = self.recv_frame()
            if isinstance(frame, dict) and "sub" in frame and "id" not in frame:
                return frame
            self._parked[frame.get("id")] = frame
    finally:
        self.sock.settimeout(old)


Client.amqp = property(_amqp)
Client.next_push = _next_push


# ---- Redis patterns: one class each, reached as a property of Client ----

# -- pub/sub (client.pubsub) --

class PubSub:
    """Redis pub/sub through ferryd (docs/patterns.md#pubsub): messages
    arrive as push frames {"sub", "kind": "message", "data": {"channel",
    "pattern", "payload"}}, and "dropped" / "gap" pushes say what was lost."""

    def __init__(self, client):
        self.c = client

    def subscribe(self, *channels, pattern=False, deadline=None):
        """Subscribes to channels (patterns with pattern=True); returns the
        subscription id, the "sub" of its pushes (see Client.next_push)."""
        names = [to_bytes(ch) for ch in channels]
        if pattern:
            id = self.c.send("pubsub.psubscribe", {"patterns": names}, deadline)
        else:
            id = self.c.send("pubsub.subscribe", {"channels": names}, deadline)
        return self.c.wait(id)["sub"]

    def unsubscribe(self, sub, **kw):
        return self.c.call("pubsub.unsubscribe", {"sub": sub}, **kw)

    def publish(self, channel, message, deadline=None):
        """Returns the number of subscribers Redis reached (every ferryd
        subscriber connection counts once)."""
        return self.c.call("pubsub.publish", {"channel": to_bytes(channel), "message": to_bytes(message)},
                           deadline)["receivers"]


Client.pubsub = property(PubSub)


# -- blocking commands, transactions, pipelines (client.blocking, client.multi, client.pipeline) --

def _blocking(self, *argv, deadline=None):
    """Runs one blocking command (BLPOP, XREAD ... BLOCK, WAIT ...) on a
    dedicated connection; its timeout is capped at the deadline (ms)."""
    return self.call("redis.blocking", [to_bytes(a) for a in argv], deadline)


def _pipeline(self, commands, deadline=None):
    """Runs commands (lists of arguments) in one request; returns their
    replies in order, an error reply as {"error": text}."""
    return self.call("redis.pipeline", {"commands": [[to_bytes(a) for a in c] for c in commands]},
                     deadline)


def _multi(self, commands, watch=None, expect=None, deadline=None):
    """Runs commands in MULTI/EXEC. Returns the list of replies, or
    {"aborted": True, "reason": "watch" | "expect", ...} when a watched key
    changed or an expected value differed."""
    args = {"commands": [[to_bytes(a) for a in c] for c in commands]}
    if watch is not None:
        args["watch"] = [to_bytes(k) for k in watch]
    if expect is not None:
        args["expect"] = {k: None if v is None else to_bytes(v) for k, v in expect.items()}
    return self.call("redis.multi", args, deadline)


Client.blocking = _blocking
Client.pipeline = _pipeline
Client.multi = _multi


# -- streams (client.streams) --

class Streams:
    """Redis streams with consumer groups (docs/patterns.md, "Streams with
    consumer groups"): at-least-once, with reclaim and dead letters."""

    def __init__(self, client):
        self.c = client

    def add(self, stream, fields, id=None, maxlen=None, approx=False, deadline=None):
        """XADD: fields is a dict (or a list of (name, value) pairs);
        returns the entry's id. maxlen trims (approx: MAXLEN ~ N)."""
        if not isinstance(fields, dict):
            fields = [list(p) for p in fields]
        args = {"stream": stream, "fields": fields}
        if id is not None:
            args["id"] = id
        if maxlen is not None:
            args["maxlen"] = maxlen
            if approx:
                args["approx"] = True
        return self.c.call("xadd", args, deadline)

    def create_group(self, stream, group, id="$", mkstream=False, deadline=None):
        """XGROUP CREATE; returns True when created, False when it existed."""
        args = {"stream": stream, "group": group, "id": id, "mkstream": mkstream}
        return self.c.call("group.create", args, deadline)["created"]

    def consume(self, stream, group, consumer, prefetch=None, claim_idle_ms=None, max_deliveries=None,
                dead_letter=None, deadline=None):
        """Returns the subscription id; entries arrive as push frames of
        kind "entry" with that "sub" (see next_entry)."""
        args = {"stream": stream, "group": group, "consumer": consumer}
        for k, v in (("prefetch", prefetch), ("claim_idle_ms", claim_idle_ms),
                     ("max_deliveries", max_deliveries), ("dead_letter", dead_letter)):
            if v is not None:
                args[k] = v
        return self.c.call("stream.consume", args, deadline)["sub"]

    def next_entry(self, sub, timeout=None):
        """The next push of subscription sub: (kind, data), kind "entry"
        ({stream, id, fields, deliveries}) or "gap"."""
        while True:
            frame = self.c.next_push(timeout)
            if frame.get("sub") == sub:
                return frame["kind"], frame["data"]

    def ack(self, ids, sub=None, stream=None, group=None, deadline=None):
        """XACK one id or a list of them: those of subscription sub, or
        (without sub) any of stream's group. Returns how many were acked."""
        if isinstance(ids, (list, tuple)):
            args = {"ids": list(ids)}
        else:
            args = {"id": ids}
        if sub is not None:
            args["sub"] = sub
        else:
            args["stream"] = stream
            args["group"] = group
        return self.c.call("stream.ack", args, deadline)["acked"]

    def cancel(self, sub, deadline=None):
        return self.c.call("stream.cancel", {"sub": sub}, deadline)


Client.streams = property(lambda self: Streams(self))



# -- locks, rate limits, scripts (client.locks, client.ratelimit, client.scripts) --

class LockNotAcquired(Exception):
    """Locks.hold could not take the lock within its wait."""


class Locks:
    """Distributed locks (docs/patterns.md#distributed-locks). A lock is
    held by this client's connection: if it closes, ferryd releases it."""

    def __init__(self, client):
        self.c = client

    def acquire(self, name, ttl_ms, wait_ms=None, **kw):
        """{"acquired": True, "token", "fence", "ttl_ms"}, or
        {"acquired": False} when still held by another after wait_ms."""
        args = {"name": name, "ttl_ms": ttl_ms}
        if wait_ms is not None:
            args["wait_ms"] = wait_ms
        return self.c.call("lock.acquire", args, **kw)

    def release(self, name, token, **kw):
        """Raises FerryError "not_held" unless held with token."""
        return self.c.call("lock.release", {"name": name, "token": token}, **kw)

    def extend(self, name, token, ttl_ms, **kw):
        """Sets the TTL to ttl_ms from now; "not_held" unless held with token."""
        return self.c.call("lock.extend", {"name": name, "token": token, "ttl_ms": ttl_ms}, **kw)

    def hold(self, name, ttl_ms, wait_ms=None, **kw):
        """A context manager: with client.locks.hold("n", 5000, wait_ms=1000) as lk:
        lk["fence"] ... Raises LockNotAcquired when not taken within wait_ms.
        The release on exit tolerates a lock that expired meanwhile."""
        return _Held(self, name, ttl_ms, wait_ms, kw)


class _Held:
    def __init__(self, locks, name, ttl_ms, wait_ms, kw):
        self.locks, self.name, self.ttl_ms, self.wait_ms, self.kw = locks, name, ttl_ms, wait_ms, kw
        self.lock = None

    def __enter__(self):
        got = self.locks.acquire(self.name, self.ttl_ms, self.wait_ms, **self.kw)
        if not got.get("acquired"):
            raise LockNotAcquired(self.name)
        self.lock = got
        return got

    def __exit__(self, *exc):
        try:
            self.locks.release(self.name, self.lock["token"])
        except FerryError as e:
            if e.code != "not_held":
                raise
        return False


def _ratelimit(self, key, rate, burst, period_ms=None, cost=None, **kw):
    """GCRA: {"allowed", "remaining", "retry_after_ms", "reset_after_ms"};
    rate requests per period_ms (default 1000), bursts of up to burst."""
    args = {"key": key, "rate": rate, "burst": burst}
    if period_ms is not None:
        args["period_ms"] = period_ms
    if cost is not None:
        args["cost"] = cost
    return self.call("ratelimit", args, **kw)


class Scripts:
    """Lua scripts registered by name in ferryd, run by digest."""

    def __init__(self, client):
        self.c = client

    def load(self, name, body, **kw):
        """{"name", "sha"}; a load of an existing name replaces it."""
        return self.c.call("script.load", {"name": name, "body": body}, **kw)

    def call(self, name, keys=(), args=(), **kw):
        """The script's reply, as the redis op gives replies."""
        return self.c.call("script.call", {"name": name, "keys": [to_bytes(k) for k in keys],
                                           "args": [to_bytes(a) for a in args]}, **kw)


Client.locks = property(lambda self: Locks(self))
Client.ratelimit = _ratelimit
Client.scripts = property(lambda self: Scripts(self))


# -- cache (client.cache) --
class Cache:
    """Cache-aside without stampedes (docs/patterns.md): client.cache.get(...)."""

    def __init__(self, client):
        self.c = client

    def get(self, key, lease_ms=None, wait=None, peek=None, deadline=None):
        """{"hit": True, "value": bytes}, or on a miss {"hit": False,
        "lease": token} (this caller must load and fill), or {"hit": False}
        (wait=False and another caller holds the lease; or peek=True)."""
        args = {"key": to_bytes(key)}
        if lease_ms is not None:
            args["lease_ms"] = lease_ms
        if wait is not None:
            args["wait"] = wait
        if peek is not None:
            args["peek"] = peek
        return self.c.call("cache.get", args, deadline)

    def fill(self, key, value, ttl_ms, lease=None, jitter_ms=None, deadline=None):
        """Stores value for ttl_ms (plus jitter); with lease, only while the
        lease is still this token (else FerryError "not_held")."""
        args = {"key": to_bytes(key), "value": to_bytes(value), "ttl_ms": int(ttl_ms)}
        if lease is not None:
            args["lease"] = lease
        if jitter_ms is not None:
            args["jitter_ms"] = jitter_ms
        return self.c.call("cache.fill", args, deadline)

    def invalidate(self, key, deadline=None):
        return self.c.call("cache.invalidate", {"key": to_bytes(key)}, deadline)

    def get_or_load(self, key, fn, ttl, lease_ms=None, deadline=None):
        """The value of key; on a miss, this caller alone among all runs
        fn() (which returns bytes or str), stores it for ttl seconds and
        returns it. Concurrent callers wait for that fill (up to their
        deadline). A lease lost while fn ran (it outlived lease_ms, or
        the key was invalidated) returns fn's value without storing it."""
        r = self.get(key, lease_ms=lease_ms, deadline=deadline)
        if r["hit"]:
            return r["value"]
        value = to_bytes(fn())
        if "lease" not in r:
            return value
        try:
            self.fill(key, value, int(ttl * 1000), lease=r["lease"], deadline=deadline)
        except FerryError as e:
            if e.code != "not_held":
                raise
        return value


Client.cache = property(lambda self: Cache(self))

