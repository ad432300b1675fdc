"""redis.blocking: blocking commands on the pool of dedicated connections,
their timeouts capped at the request's deadline, and unblocked when their
client leaves."""

import threading

import pytest

from conftest import SLOW, wait_until
import ferry


def dedicated(f):
    return f.stats()["backends"]["redis"]["dedicated"]


def blocked_clients(redis):
    """The commands Redis's clients are blocked in (CLIENT LIST's cmd of
    clients with the b flag)."""
    out = []
    for line in redis.cli("CLIENT", "LIST").splitlines():
        fields = dict(kv.split("=", 1) for kv in line.split() if "=" in kv)
        if "b" in fields.get("flags", ""):
            out.append(fields.get("cmd"))
    return out


class Background:
    """Runs fn(client) in a thread on a client of its own."""

    def __init__(self, f, fn):
        self.c = f.client()
        self.result = self.error = None
        self.t = threading.Thread(target=self.run, args=(fn,))
        self.t.start()

    def run(self, fn):
        try:
            self.result = fn(self.c)
        except Exception as e:  # noqa: BLE001 - reported by join()
            self.error = e

    def join(self, timeout=30 * SLOW):
        self.t.join(timeout)
        assert not self.t.is_alive(), "the blocking call did not return"
        self.c.close()
        if self.error:
            raise self.error
        return self.result


def test_blpop_woken_by_push(ferryd, redis):
    b = Background(ferryd, lambda c: c.blocking("BLPOP", "q", "0", deadline=20000 * SLOW))
    wait_until(lambda: blocked_clients(redis) == ["blpop"], what="BLPOP blocked in redis")
    assert dedicated(ferryd)["in_use"] == 1
    with ferryd.client() as c:
        assert c.redis("RPUSH", "q", "v1") == 1
    assert b.join() == [b"q", b"v1"]
    wait_until(lambda: dedicated(ferryd)["in_use"] == 0, what="the connection given back")


def test_forever_capped_by_deadline(ferryd):
    with ferryd.client() as c:
        # 0 is "forever" to Redis: ferryd makes it the deadline's remainder,
        # so the answer is Redis's own nil, not ferryd's timeout.
        assert c.blocking("BLPOP", "empty", "0", deadline=500) is None
        assert c.blocking("BRPOPLPUSH", "empty", "dst", "30", deadline=500) is None
        assert c.blocking("BZPOPMIN", "zempty", "0", deadline=500) is None
        assert c.blocking("XREAD", "BLOCK", "0", "STREAMS", "nostream", "$", deadline=500) is None
    assert dedicated_ok(ferryd)


def dedicated_ok(f):
    d = dedicated(f)
    return d["in_use"] == 0 and d["refused"] == 0


def test_wait(ferryd):
    with ferryd.client() as c:
        c.redis("SET", "k", "v")
        # No replica: WAIT 0 answers at once, WAIT 1 at its (capped) timeout.
        assert c.blocking("WAIT", "0", "0", deadline=5000) == 0
        assert c.blocking("WAIT", "1", "0", deadline=600) == 0


def test_xread_block(ferryd, redis):
    with ferryd.client() as c:
        c.redis("XADD", "s", "1-1", "a", "1")
    b = Background(ferryd, lambda c: c.blocking("XREAD", "COUNT", "5", "BLOCK", "0", "STREAMS", "s", "$",
                                                deadline=20000 * SLOW))
    wait_until(lambda: blocked_clients(redis) == ["xread"], what="XREAD blocked in redis")
    with ferryd.client() as c:
        c.redis("XADD", "s", "2-1", "b", "2")
    assert b.join() == [[b"s", [[b"2-1", [b"b", b"2"]]]]]


def test_pool_exhaustion(make_ferryd, redis):
    f = make_ferryd(["--set", "redis_blocking_pool=2"])
    bs = [Background(f, lambda c, i=i: c.blocking("BLPOP", "p%d" % i, "0", deadline=20000 * SLOW))
          for i in range(2)]
    wait_until(lambda: len(blocked_clients(redis)) == 2, what="two BLPOPs blocked")
    with f.client() as c:
        with pytest.raises(ferry.FerryError) as e:
            c.blocking("BLPOP", "p9", "0", deadline=5000)
        assert e.value.code == "overloaded"
        assert dedicated(f)["refused"] == 1
        c.redis("RPUSH", "p0", "x")
        assert bs[0].join() == [b"p0", b"x"]
        # One connection is free again.
        wait_until(lambda: dedicated(f)["in_use"] == 1, what="one connection given back")
        c.redis("RPUSH", "p9", "y")
        assert c.blocking("BLPOP", "p9", "0", deadline=5000) == [b"p9", b"y"]
        c.redis("RPUSH", "p1", "z")
    assert bs[1].join() == [b"p1", b"z"]


def test_disconnect_unblocks(ferryd, redis):
    c = ferryd.client()
    c.send("redis.blocking", [b"BLPOP", b"gone", b"0"], 30000 * SLOW)
    wait_until(lambda: blocked_clients(redis) == ["blpop"], what="BLPOP blocked in redis")
    assert dedicated(ferryd)["in_use"] == 1
    c.close()
    # ferryd unblocks the abandoned BLPOP (CLIENT UNBLOCK) and takes its
    # connection back, long before the 30 s timeout.
    wait_until(lambda: dedicated(ferryd)["in_use"] == 0, timeout=10 * SLOW, what="connection given back")
    assert blocked_clients(redis) == []
    assert dedicated(ferryd)["unblocks"] >= 1
    with ferryd.client() as c2:
        c2.redis("RPUSH", "gone", "next")
        # The abandoned BLPOP did not take it.
        assert c2.redis("LLEN", "gone") == 1
        assert c2.blocking("BLPOP", "gone", "0", deadline=5000) == [b"gone", b"next"]


def test_disconnect_at_once(ferryd, redis):
    """A client that leaves right after sending: the UNBLOCK may reach Redis
    before the BLPOP does; ferryd tries again until it is unblocked."""
    for i in range(5):
        c = ferryd.client()
        c.send("redis.blocking", [b"BLPOP", b"soon", b"0"], 30000 * SLOW)
        c.close()
    wait_until(lambda: dedicated(ferryd)["in_use"] == 0, timeout=10 * SLOW, what="connections given back")
    assert blocked_clients(redis) == []
    with ferryd.client() as c2:
        c2.redis("RPUSH", "soon", "v")
        assert c2.redis("LLEN", "soon") == 1


def test_bad_input(ferryd):
    with ferryd.client() as c:
        for argv in (["GET", "k"], ["XREAD", "STREAMS", "s", "$"], ["BLPOP", "k"],
                     ["BLPOP", "k", "-1"], ["BLPOP", "k", "soon"], ["WAIT", "1", "1.5"]):
            with pytest.raises(ferry.FerryError) as e:
                c.blocking(*argv)
            assert e.value.code == "bad_request", argv
        for args in ({"args": ["BLPOP"]}, "BLPOP", []):
            with pytest.raises(ferry.FerryError) as e:
                c.call("redis.blocking", args)
            assert e.value.code == "bad_request"
        assert c.ping() == "PONG"
    assert dedicated_ok(ferryd)


def test_deadline_passes_while_redis_is_frozen(ferryd, redis):
    """The deadline passes before Redis even runs the command: the request
    gets timeout, and once Redis is back the connection is unblocked and
    given back, and the BLPOP took nothing."""
    with ferryd.client() as c:
        c.redis("PING")
        redis.freeze()
        try:
            with pytest.raises(ferry.FerryError) as e:
                c.blocking("BLPOP", "frozen", "0", deadline=300)
            assert e.value.code == "timeout"
        finally:
            redis.thaw()
        wait_until(lambda: dedicated(ferryd)["in_use"] == 0, timeout=10 * SLOW, what="connection given back")
        c.redis("RPUSH", "frozen", "kept")
        assert c.redis("LRANGE", "frozen", "0", "-1") == [b"kept"]
    assert blocked_clients(redis) == []


POLICY = """
[me]
peers = uid:%d
ops = ping hello stats redis redis.blocking redis.pipeline redis.multi
redis_commands = +@all
redis_keys = app:*
"""


def test_policy_applies(make_ferryd, tmp):
    import os
    path = os.path.join(tmp, "policy.conf")
    with open(path, "w") as f:
        f.write(POLICY % os.getuid())
    fd = make_ferryd(["--set", "policy_file=" + path])
    with fd.client() as c:
        c.redis("RPUSH", "app:q", "1")
        assert c.blocking("BLPOP", "app:q", "0", deadline=2000) == [b"app:q", b"1"]
        with pytest.raises(ferry.FerryError) as e:
            c.blocking("BLPOP", "app:q", "other:q", "0", deadline=2000)
        assert e.value.code == "denied" and "other:q" in e.value.message
        with pytest.raises(ferry.FerryError) as e:
            c.pipeline([["SET", "app:a", "1"], ["SET", "other:a", "1"]])
        assert e.value.code == "denied" and "command 2" in e.value.message
        with pytest.raises(ferry.FerryError) as e:
            c.multi([["SET", "app:a", "1"]], watch=["other:w"])
        assert e.value.code == "denied"
        with pytest.raises(ferry.FerryError) as e:
            c.multi([["SET", "app:a", "1"]], expect={"other:e": None})
        assert e.value.code == "denied"
        assert c.multi([["SET", "app:a", "2"]], watch=["app:a"], expect={"app:b": None}) == ["OK"]
        # Nothing of the refused requests ran.
        assert c.redis("GET", "app:a") == b"2"
    assert dedicated_ok(fd)


def test_redis_down_is_unavailable(make_ferryd, redis):
    f = make_ferryd(["--set", "redis_blocking_pool=2"])
    redis.kill()
    with f.client() as c:
        for _ in range(4):
            with pytest.raises(ferry.FerryError) as e:
                c.blocking("BLPOP", "q", "0", deadline=2000)
            # Not overloaded: no connection is taken, Redis is just gone.
            assert e.value.code == "unavailable"
        with pytest.raises(ferry.FerryError) as e:
            c.multi([["SET", "k", "1"]], watch=["k"], deadline=2000)
        assert e.value.code == "unavailable"
    assert dedicated(f)["refused"] == 0
