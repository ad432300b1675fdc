"""Outages: Redis killed, restarted, frozen, or absent. Every request is
answered with a result, 'unavailable' or 'timeout', no later than its
deadline (plus scheduling slack: these machines are shared), and service
resumes by itself."""

import os
import threading
import time

import pytest

import ferry
from conftest import SLOW, Redis, wait_until

# Slack for a loaded machine: correctness bounds, not performance targets.
SLACK = 2.0 * SLOW


def timed(c, *argv, deadline):
    t = time.monotonic()
    try:
        r = ("ok", c.redis(*argv, deadline=deadline))
    except ferry.FerryError as e:
        r = (e.code, e.message)
    return r, time.monotonic() - t


def test_redis_frozen_requests_time_out_at_deadline(ferryd, redis):
    with ferryd.client() as c:
        assert c.redis("SET", "k", "v") == "OK"
        redis.freeze()
        try:
            for deadline in (200, 500):
                (code, msg), took = timed(c, "GET", "k", deadline=deadline)
                assert code == "timeout", msg
                assert took >= deadline / 1000.0 * 0.95
                assert took < deadline / 1000.0 + SLACK
            # Many at once: each answered at its own deadline.
            ids = {c.send("redis", [b"GET", b"k"], deadline=300 + 10 * i): i for i in range(20)}
            t = time.monotonic()
            for _ in ids:
                f = c.recv()
                assert f["error"]["code"] == "timeout"
            assert time.monotonic() - t < 0.5 + SLACK
            # The daemon itself stays responsive.
            assert c.ping() == "PONG"
            assert c.stats()["backends"]["redis"]["connections"][0]["pending"] >= 20
        finally:
            redis.thaw()
        assert c.redis("GET", "k") == b"v"


def test_redis_down_fails_fast_then_recovers(ferryd, redis):
    with ferryd.client() as c:
        assert c.redis("SET", "a", "1") == "OK"
        redis.kill()
        wait_until(lambda: ferryd.redis_state() == "down", what="redis down")
        (code, msg), took = timed(c, "GET", "a", deadline=5000)
        assert code == "unavailable", msg
        assert took < 2.5  # failing fast, not waiting for the 5 s deadline
        redis.start()
        wait_until(lambda: ferryd.redis_state() == "up", timeout=20, what="reconnect")
        assert c.redis("SET", "a", "2") == "OK"
    conn = ferryd.stats()["backends"]["redis"]["connections"][0]
    assert conn["connects"] == 2
    assert conn["drops"] == 1
    assert "lost" in ferryd.read_log()


def test_redis_absent_at_start(tmp, make_ferryd):
    d = os.path.join(tmp, "later")
    os.mkdir(d)
    r = Redis(d)
    f = make_ferryd(redis_url=r.url, wait_redis=False)
    wait_until(lambda: f.redis_state() == "down", what="down")
    with f.client() as c:
        with pytest.raises(ferry.FerryError) as e:
            c.redis("PING")
        assert e.value.code == "unavailable"
    r.start()
    try:
        wait_until(lambda: f.redis_state() == "up", timeout=20, what="connect after start")
        with f.client() as c:
            assert c.redis("PING") == "PONG"
    finally:
        r.stop()


def test_redis_killed_and_restarted_under_load(ferryd, redis):
    stop = threading.Event()
    outcomes = {"ok": 0, "unavailable": 0, "timeout": 0}
    problems = []
    lock = threading.Lock()
    deadline_ms = 1000

    def worker(k):
        try:
            with ferryd.client() as c:
                i = 0
                while not stop.is_set():
                    ids = {}
                    for j in range(10):
                        key = b"load:%d:%d" % (k, j)
                        ids[c.send("redis", [b"SET", key, b"%d" % i], deadline=deadline_ms)] = \
                            time.monotonic()
                    for _ in ids:
                        f = c.recv()
                        took = time.monotonic() - ids[f["id"]]
                        code = "ok" if "result" in f else f["error"]["code"]
                        with lock:
                            if code not in outcomes:
                                problems.append(f)
                            else:
                                outcomes[code] += 1
                            if took > deadline_ms / 1000.0 + SLACK:
                                problems.append(("late", code, took))
                    i += 1
        except Exception as e:
            problems.append(repr(e))

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(8)]
    for t in threads:
        t.start()
    time.sleep(0.5)
    redis.kill()
    time.sleep(1.0)
    redis.start()
    wait_until(lambda: ferryd.redis_state() == "up", timeout=20, what="reconnect")
    time.sleep(0.5)
    before = outcomes["ok"]
    time.sleep(0.5)
    stop.set()
    for t in threads:
        t.join(60)
    assert problems == []
    assert outcomes["unavailable"] + outcomes["timeout"] > 0   # the outage was seen
    assert outcomes["ok"] > before                             # and service resumed
    with ferryd.client() as c:
        assert c.redis("PING") == "PONG"


def test_frozen_redis_does_not_stall_other_clients(ferryd, redis):
    with ferryd.client() as a, ferryd.client() as b:
        redis.freeze()
        try:
            ids = [a.send("redis", [b"GET", b"x"], deadline=3000) for _ in range(100)]
            t = time.monotonic()
            for _ in range(50):
                assert b.ping() == "PONG"
                b.stats()
            assert time.monotonic() - t < 3.0
        finally:
            redis.thaw()
        for i in ids:
            assert a.wait(i) is None
