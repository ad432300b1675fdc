"""Bad input gets a documented error, or the connection is closed when
framing is lost; the daemon never crashes, and keeps serving others."""

import os
import signal
import socket
import struct
import time

import cbor2
import pytest

import ferry
from conftest import wait_until


def raw(ferryd):
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(20)
    s.connect(ferryd.sock)
    return s


def frame(body):
    return struct.pack(">I", len(body)) + body


def read_frame(s):
    hdr = b""
    while len(hdr) < 4:
        chunk = s.recv(4 - len(hdr))
        if not chunk:
            return None
        hdr += chunk
    (n,) = struct.unpack(">I", hdr)
    body = b""
    while len(body) < n:
        chunk = s.recv(n - len(body))
        assert chunk, "closed inside a frame"
        body += chunk
    return cbor2.loads(body)


def assert_closed(s):
    s.settimeout(20)
    assert s.recv(1) == b""


def still_serving(ferryd):
    with ferryd.client() as c:
        assert c.ping() == "PONG"
        assert c.redis("SET", "alive", "1") == "OK"


def ask(ferryd, body):
    """Sends one frame body on a fresh connection, returns the response and
    checks that the same connection still works afterwards."""
    s = raw(ferryd)
    s.sendall(frame(body))
    resp = read_frame(s)
    s.sendall(frame(cbor2.dumps({"id": 99, "op": "ping"})))
    assert read_frame(s) == {"id": 99, "result": "PONG"}
    s.close()
    return resp


def test_truncated_cbor_inside_a_frame(ferryd):
    body = cbor2.dumps({"id": 1, "op": "ping"})[:-2]
    resp = ask(ferryd, body)
    assert resp["error"]["code"] == "bad_request"
    assert resp["id"] == 1   # the id was read before the fault, so it is echoed


def test_truncated_frame_then_disconnect(ferryd):
    s = raw(ferryd)
    s.sendall(struct.pack(">I", 100) + b"\xa1\x62id")   # 5 of 100 bytes
    s.close()
    s = raw(ferryd)
    s.sendall(b"\x00\x00")                               # half a header
    s.shutdown(socket.SHUT_WR)
    assert_closed(s)
    still_serving(ferryd)


def test_frame_over_maximum_closes(make_ferryd):
    # Large enough for the stats reply read at the end.
    m = 8192
    f = make_ferryd(["--set", "max_frame=%d" % m, "--set", "client_max_output=65536"])
    s = raw(f)
    s.sendall(struct.pack(">I", m + 1) + b"\xa0" * 64)
    resp = read_frame(s)
    assert resp["error"]["code"] == "too_large"
    assert "id" not in resp
    assert_closed(s)
    # Exactly max_frame is fine.
    body = cbor2.dumps({"id": 1, "op": "redis", "args": [b"SET", b"k", b"x" * (m - 44)]})
    body = cbor2.dumps({"id": 1, "op": "redis", "args": [b"SET", b"k", b"x" * (m - 44 + m - len(body))]})
    assert len(body) == m
    assert ask(f, body) == {"id": 1, "result": "OK"}
    assert f.stats()["counters"]["clients_dropped_framing"] == 1


def test_response_over_max_frame(make_ferryd):
    f = make_ferryd(["--set", "max_frame=4096", "--set", "client_max_output=65536"])
    with f.client() as c:
        c.redis("APPEND", "big", "x" * 3000)
        c.redis("APPEND", "big", "x" * 3000)
        with pytest.raises(ferry.FerryError) as e:
            c.redis("GET", "big")
        assert e.value.code == "too_large"
        assert c.redis("STRLEN", "big") == 6000


@pytest.mark.parametrize("value", [[1, 2, 3], "text", 5, None, b"\xa0"])
def test_not_a_map(ferryd, value):
    resp = ask(ferryd, cbor2.dumps(value))
    assert resp["error"]["code"] == "bad_request"
    assert "map" in resp["error"]["message"]


def test_garbage_bytes(ferryd):
    resp = ask(ferryd, b"\xff\xff\xff\xff")
    assert resp["error"]["code"] == "bad_request"
    assert ask(ferryd, b"")["error"]["code"] == "bad_request"


@pytest.mark.parametrize("req,has_id,fragment", [
    ({"id": "seven", "op": "ping"}, False, "id must be"),
    ({"id": -1, "op": "ping"}, False, "id must be"),
    ({"id": 1, "op": 5}, True, "op must be"),
    ({"id": 1, "op": "ping", "deadline": "soon"}, True, "deadline"),
    ({"id": 1, "op": "ping", "deadline": 0}, True, "deadline"),
    ({"id": 1, "op": "ping", "deadline": -5}, True, "deadline"),
    ({"id": 1, "op": "ping", "traceparent": 5}, True, "traceparent"),
    ({"id": 1, "op": "redis", "args": "GET k"}, True, "array"),
    ({"id": 1, "op": "redis", "args": [b"GET", 5]}, True, "byte strings"),
    ({"id": 1, "op": "redis", "args": [[b"GET"]]}, True, "byte strings"),
    ({"id": 1, "op": "redis"}, True, "args"),
    ({"id": 1, "op": "hello", "args": [1]}, True, "map"),
    ({"id": 1, 2: "x", "op": "ping"}, True, "keys must be text"),
])
def test_wrong_types(ferryd, req, has_id, fragment):
    resp = ask(ferryd, cbor2.dumps(req))
    assert resp["error"]["code"] == "bad_request", resp
    assert fragment in resp["error"]["message"]
    assert ("id" in resp) == has_id
    if has_id:
        assert resp["id"] == 1


def test_missing_id(ferryd):
    resp = ask(ferryd, cbor2.dumps({"op": "ping"}))
    assert resp["error"] == {"code": "bad_request", "message": "missing id"}
    assert "id" not in resp


def test_unknown_op(ferryd):
    resp = ask(ferryd, cbor2.dumps({"id": 5, "op": "teleport"}))
    assert resp == {"id": 5, "error": {"code": "unknown_op", "message": "no op named 'teleport'"}}


def test_unknown_keys_are_ignored(ferryd):
    resp = ask(ferryd, cbor2.dumps({"id": 5, "op": "ping", "future_field": {"a": [1]}}))
    assert resp == {"id": 5, "result": "PONG"}


def test_empty_args(ferryd):
    resp = ask(ferryd, cbor2.dumps({"id": 1, "op": "redis", "args": []}))
    assert resp["error"]["code"] == "bad_request"
    assert "empty" in resp["error"]["message"]


def test_huge_args(make_ferryd):
    f = make_ferryd(["--set", "max_items=150000"])
    args = [b"RPUSH", b"huge"] + [b"%d" % i for i in range(100000)]
    assert ask(f, cbor2.dumps({"id": 1, "op": "redis", "args": args})) == {"id": 1, "result": 100000}
    args = [b"RPUSH", b"huge"] + [b"x"] * 200000
    resp = ask(f, cbor2.dumps({"id": 2, "op": "redis", "args": args}))
    assert resp["error"]["code"] == "too_large"
    with f.client() as c:
        assert c.redis("LLEN", "huge") == 100000


def test_array_header_claims_more_than_sent(ferryd):
    # {"id":1,"op":"redis","args": array(1e9)} with no elements behind it.
    body = bytes.fromhex("a362696401626f7065726564697364617267739a3b9aca00")
    resp = ask(ferryd, body)
    assert resp["error"]["code"] == "bad_request"


def test_deep_nesting(ferryd):
    deep = 1
    for _ in range(100):
        deep = [deep]
    resp = ask(ferryd, cbor2.dumps({"id": 3, "op": "ping", "args": deep}))
    assert resp["error"]["code"] == "bad_request"
    assert "deep" in resp["error"]["message"]
    # A million levels of nesting in one frame: no recursion, no crash.
    prefix = bytes.fromhex("a362696401626f706470696e676461726773")
    resp = ask(ferryd, prefix + b"\x81" * 1000000 + b"\x01")
    assert resp["error"]["code"] == "bad_request"


def test_invalid_utf8(ferryd):
    # {"id":1,"op": text(2) C3 28}
    resp = ask(ferryd, bytes.fromhex("a262696401626f7062c328"))
    assert resp["error"]["code"] == "bad_request"
    assert "UTF-8" in resp["error"]["message"]
    # Invalid UTF-8 inside args text strings too.
    resp = ask(ferryd, bytes.fromhex("a362696401626f706572656469736461726773 8162c0af".replace(" ", "")))
    assert resp["error"]["code"] == "bad_request"
    # Bytes are bytes: any value is fine in a byte string.
    with ferryd.client() as c:
        assert c.redis(b"SET", b"k", b"\xc3\x28") == "OK"


def test_client_vanishes_with_requests_in_flight(ferryd, redis):
    redis.freeze()
    try:
        s = raw(ferryd)
        for i in range(200):
            s.sendall(frame(cbor2.dumps({"id": i, "op": "redis", "args": [b"INCR", b"gone"]})))
        wait_until(lambda: ferryd.stats()["backends"]["redis"]["connections"][0]["pending"] >= 200,
                   what="requests to reach redis")
        s.close()
        wait_until(lambda: ferryd.stats()["requests"]["redis"].get("abandoned", 0) == 200,
                   what="requests abandoned")
    finally:
        redis.thaw()
    # The replies that arrive for abandoned requests are read and dropped.
    wait_until(lambda: ferryd.stats()["backends"]["redis"]["connections"][0]["pending"] == 0,
               what="replies drained")
    with ferryd.client() as c:
        assert c.redis("GET", "gone") == b"200"
    still_serving(ferryd)


def test_client_that_never_reads(make_ferryd):
    f = make_ferryd(["--set", "max_frame=262144", "--set", "client_max_output=1048576"])
    with f.client() as c:
        c.redis("SET", "v", "x" * 200000)
    s = raw(f)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    req = frame(cbor2.dumps({"id": 1, "op": "redis", "args": [b"GET", b"v"]}))
    try:
        for _ in range(400):
            s.sendall(req)
    except (BrokenPipeError, ConnectionResetError):
        pass
    wait_until(lambda: f.stats()["counters"]["clients_dropped_slow"] == 1, what="slow client dropped")
    assert "not reading its responses" in f.read_log()
    s.close()
    still_serving(f)


def test_more_clients_than_maximum(make_ferryd):
    f = make_ferryd(["--set", "max_clients=3"])
    held = [raw(f) for _ in range(3)]
    for s in held:   # make sure all three are accepted and counted
        s.sendall(frame(cbor2.dumps({"id": 1, "op": "ping"})))
        assert read_frame(s)["result"] == "PONG"
    extra = raw(f)
    resp = read_frame(extra)
    assert resp["error"]["code"] == "overloaded"
    assert "max_clients" in resp["error"]["message"]
    assert_closed(extra)
    held[0].close()
    wait_until(lambda: f.ping(), what="a slot to free up")
    st = f.stats()
    assert st["counters"]["clients_rejected"] >= 1
    for s in held[1:]:
        s.close()


def test_half_close_still_gets_answers(ferryd):
    s = raw(ferryd)
    for i in range(50):
        s.sendall(frame(cbor2.dumps({"id": i, "op": "redis", "args": [b"INCR", b"half"]})))
    s.shutdown(socket.SHUT_WR)
    got = [read_frame(s) for _ in range(50)]
    assert sorted(r["id"] for r in got) == list(range(50))
    assert all("result" in r for r in got)
    assert_closed(s)
