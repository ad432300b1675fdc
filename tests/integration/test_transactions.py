"""redis.pipeline and redis.multi: many commands in one request, MULTI/EXEC
atomicity on the shared connection, and WATCH with expected values on a
dedicated one."""

import threading

import pytest

from conftest import SLOW, wait_until
import ferry


def dedicated(f):
    return f.stats()["backends"]["redis"]["dedicated"]


def test_pipeline_mixed_replies(ferryd):
    with ferryd.client() as c:
        c.redis("SET", "str", "x")
        out = c.pipeline([["SET", "a", "1"], ["INCR", "a"], ["LPUSH", "str", "v"], ["GET", "a"],
                          ["GET", "missing"], ["NOSUCHCOMMAND"], ["RPUSH", "l", "1", "2"],
                          ["LRANGE", "l", "0", "-1"]])
        assert out[0] == "OK"
        assert out[1] == 2
        assert out[2]["error"].startswith("WRONGTYPE")
        assert out[3] == b"2"
        assert out[4] is None
        assert out[5]["error"].startswith("ERR unknown command")
        # One failed command does not stop the others.
        assert out[6] == 2
        assert out[7] == [b"1", b"2"]


def test_pipeline_refusals(ferryd):
    with ferryd.client() as c:
        for cmds in ([["BLPOP", "k", "0"]], [["MULTI"]], [["WATCH", "k"]], [["FLUSHALL"]],
                     [["XREAD", "BLOCK", "0", "STREAMS", "s", "$"]]):
            with pytest.raises(ferry.FerryError) as e:
                c.pipeline(cmds)
            assert e.value.code in ("bad_request", "denied"), cmds
        with pytest.raises(ferry.FerryError) as e:
            c.pipeline([["FLUSHALL"]])
        assert e.value.code == "denied"
        for args in ({"commands": []}, {"commands": [[]]}, {"commands": [["GET", 1]]},
                     {"commands": "GET"}, {}, {"commands": [["GET", "k"]], "extra": 1}, ["GET"]):
            with pytest.raises(ferry.FerryError) as e:
                c.call("redis.pipeline", args)
            assert e.value.code == "bad_request", args
        # Nothing ran, and the shared connection is intact.
        assert c.redis("PING") == "PONG"
        assert c.pipeline([["XREAD", "COUNT", "1", "STREAMS", "nostream", "0"]]) == [None]


def test_multi_replies_and_errors(ferryd):
    with ferryd.client() as c:
        c.redis("SET", "s", "x")
        out = c.multi([["SET", "m", "1"], ["INCR", "m"], ["LPUSH", "s", "v"], ["GET", "m"]])
        # A runtime error stays in its place; the rest ran.
        assert out[:2] == ["OK", 2]
        assert out[2]["error"].startswith("WRONGTYPE")
        assert out[3] == b"2"
        # A command Redis refuses while queueing aborts the whole transaction.
        with pytest.raises(ferry.FerryError) as e:
            c.multi([["SET", "m", "9"], ["NOSUCHCOMMAND", "x"]])
        assert e.value.code == "backend_error"
        assert "EXECABORT" in e.value.message and "unknown command" in e.value.message
        assert c.redis("GET", "m") == b"2"
        # The shared connection is out of MULTI: a plain command runs at once.
        assert c.redis("SET", "after", "1") == "OK"
        for cmds in ([["EXEC"]], [["BRPOP", "k", "1"]], [["DISCARD"]], [["UNWATCH"]]):
            with pytest.raises(ferry.FerryError) as e:
                c.multi(cmds)
            assert e.value.code == "bad_request", cmds
        for args in ({"commands": [["GET", "k"]], "watch": "k"},
                     {"commands": [["GET", "k"]], "expect": ["k"]},
                     {"commands": [["GET", "k"]], "expect": {"k": 1}}):
            with pytest.raises(ferry.FerryError) as e:
                c.call("redis.multi", args)
            assert e.value.code == "bad_request", args


def test_multi_atomic_under_concurrency(ferryd):
    """20 clients each move 1 from a to b in MULTI, 25 times; a checker
    reading both keys in one MULTI never sees a + b differ from the total,
    which a non-atomic pair of commands would show."""
    with ferryd.client() as c:
        c.redis("SET", "a", "1000")
        c.redis("SET", "b", "0")
    stop = threading.Event()
    seen, errors = [], []

    def mover():
        try:
            with ferryd.client() as c:
                for _ in range(25):
                    c.multi([["DECR", "a"], ["INCR", "b"]])
        except Exception as e:  # noqa: BLE001
            errors.append(e)

    def checker():
        try:
            with ferryd.client() as c:
                while not stop.is_set():
                    # Two plain commands in one pipeline are not atomic,
                    # but in one MULTI they are.
                    a, b = c.multi([["GET", "a"], ["GET", "b"]])
                    seen.append(int(a) + int(b))
        except Exception as e:  # noqa: BLE001
            errors.append(e)

    chk = threading.Thread(target=checker)
    chk.start()
    movers = [threading.Thread(target=mover) for _ in range(20)]
    for t in movers:
        t.start()
    for t in movers:
        t.join(60 * SLOW)
    stop.set()
    chk.join(60 * SLOW)
    assert not errors, errors
    assert seen and set(seen) == {1000}
    with ferryd.client() as c:
        assert c.redis("GET", "a") == b"500"
        assert c.redis("GET", "b") == b"500"


def test_watch_expect_succeeds(ferryd):
    with ferryd.client() as c:
        c.redis("SET", "bal", "10")
        bal = int(c.redis("GET", "bal"))
        out = c.multi([["SET", "bal", str(bal - 3)], ["GET", "bal"]], watch=["bal"], expect={"bal": "10"})
        assert out == ["OK", b"7"]
        # null expects the key to be absent.
        assert c.multi([["SET", "new", "1"]], expect={"new": None}) == ["OK"]
    d = dedicated(ferryd)
    assert d["taken"] == 2 and d["in_use"] == 0


def test_expect_differs_aborts(ferryd):
    with ferryd.client() as c:
        c.redis("SET", "bal", "10")
        out = c.multi([["SET", "bal", "0"]], watch=["bal"], expect={"bal": "9"})
        assert out == {"aborted": True, "reason": "expect", "key": b"bal"}
        out = c.multi([["SET", "x", "1"]], expect={"x": "1"})
        assert out == {"aborted": True, "reason": "expect", "key": b"x"}
        assert c.redis("GET", "bal") == b"10"
        assert c.redis("EXISTS", "x") == 0
    assert dedicated(ferryd)["in_use"] == 0


def test_expect_catches_a_change_in_between(ferryd):
    with ferryd.client() as c, ferryd.client() as other:
        c.redis("SET", "v", "1")
        seen = c.redis("GET", "v")
        other.redis("SET", "v", "2")
        out = c.multi([["SET", "v", "10"]], watch=["v"], expect={"v": seen})
        assert out == {"aborted": True, "reason": "expect", "key": b"v"}
        assert c.redis("GET", "v") == b"2"


def test_optimistic_increments_lose_nothing(ferryd):
    """10 clients each add 1 to a counter 15 times by read, compute, and
    multi with watch+expect, retrying when aborted. Without the watch and
    the check, concurrent read-modify-writes would lose increments."""
    with ferryd.client() as c:
        c.redis("SET", "ctr", "0")
    aborts, errors = [], []

    def worker():
        try:
            with ferryd.client() as c:
                for _ in range(15):
                    while True:
                        v = c.redis("GET", "ctr")
                        out = c.multi([["SET", "ctr", str(int(v) + 1)]], watch=["ctr"], expect={"ctr": v})
                        if out == ["OK"]:
                            break
                        assert out["aborted"] is True and out["reason"] in ("expect", "watch")
                        aborts.append(out["reason"])
        except Exception as e:  # noqa: BLE001
            errors.append(e)

    ts = [threading.Thread(target=worker) for _ in range(10)]
    for t in ts:
        t.start()
    for t in ts:
        t.join(120 * SLOW)
    assert not errors, errors
    with ferryd.client() as c:
        assert c.redis("GET", "ctr") == b"150"
    d = dedicated(ferryd)
    assert d["in_use"] == 0 and d["taken"] == 150 + len(aborts)


def test_watch_pool_exhausted(make_ferryd, redis):
    f = make_ferryd(["--set", "redis_blocking_pool=1"])
    c = f.client()
    c.send("redis.blocking", [b"BLPOP", b"hold", b"0"], 20000 * SLOW)
    wait_until(lambda: dedicated(f)["in_use"] == 1, what="the only dedicated connection taken")
    with f.client() as c2:
        with pytest.raises(ferry.FerryError) as e:
            c2.multi([["SET", "k", "1"]], watch=["k"])
        assert e.value.code == "overloaded"
        # Without watch it runs on the shared connection.
        assert c2.multi([["SET", "k", "1"]]) == ["OK"]
        c2.redis("RPUSH", "hold", "x")
    assert c.recv()["result"] == [b"hold", b"x"]
    c.close()
