"""Single flight (redis_single_flight): identical GETs of the redis op in
flight at once in one ferryd share one round trip to Redis.

Redis is stopped (SIGSTOP) while the GETs arrive, so that they are all in
flight at once whatever the machine's speed; ferryd's stats show them
gathered before Redis runs again."""

import os
import signal
import socket

import ferry
from conftest import SLOW, wait_until


def get_calls(redis):
    for line in redis.cli("INFO", "commandstats").splitlines():
        if line.startswith("cmdstat_get:"):
            return int(line.split("calls=")[1].split(",")[0])
    return 0


def flight_stats(f):
    return f.stats()["backends"]["redis"]["single_flight"]


def send_gets(clients, key, per_client):
    ids = []
    for c in clients:
        ids.append([c.send("redis", [b"GET", key], deadline=30000 * SLOW) for _ in range(per_client)])
    return ids


def test_concurrent_gets_share_one_round_trip(redis, make_ferryd):
    f = make_ferryd(["--set", "redis_single_flight=yes"])
    redis.cli("SET", "sf:k", "the value")
    redis.cli("SET", "sf:other", "another")
    redis.cli("CONFIG", "RESETSTAT")
    clients = [f.client() for _ in range(5)]
    try:
        redis.freeze()
        try:
            ids = send_gets(clients, b"sf:k", 10)
            other = clients[0].send("redis", [b"GET", b"sf:other"], deadline=30000 * SLOW)
            wait_until(lambda: flight_stats(f)["followers"] >= 49, timeout=10 * SLOW, what="followers")
            s = flight_stats(f)
            assert s["enabled"] is True
            assert s["leaders"] == 2 and s["in_flight"] == 2
        finally:
            redis.thaw()
        for c, cids in zip(clients, ids):
            for i in cids:
                assert c.wait(i) == b"the value"
        assert clients[0].wait(other) == b"another"
        # 50 GETs of one key and one of another: two GETs reached Redis.
        assert get_calls(redis) == 2
        assert flight_stats(f)["in_flight"] == 0
        # Later GETs start a new flight: they see later writes.
        clients[1].redis("SET", "sf:k", "new")
        assert clients[2].redis("GET", "sf:k") == b"new"
    finally:
        for c in clients:
            c.close()


def test_off_changes_nothing(redis, ferryd):
    redis.cli("SET", "sf:k", "v")
    redis.cli("CONFIG", "RESETSTAT")
    with ferryd.client() as c:
        redis.freeze()
        try:
            ids = [c.send("redis", [b"GET", b"sf:k"], deadline=30000 * SLOW) for _ in range(20)]
            wait_until(lambda: ferryd.stats()["backends"]["redis"]["connections"][0]["pending"] >= 20,
                       timeout=10 * SLOW, what="the GETs sent")
        finally:
            redis.thaw()
        assert [c.wait(i) for i in ids] == [b"v"] * 20
    assert get_calls(redis) == 20
    s = flight_stats(ferryd)
    assert s["enabled"] is False and s["leaders"] == 0 and s["followers"] == 0


def test_members_that_leave_do_not_break_the_others(redis, make_ferryd):
    f = make_ferryd(["--set", "redis_single_flight=yes"])
    redis.cli("SET", "sf:k", "v")
    leader, follower, stayer, timed = f.client(), f.client(), f.client(), f.client()
    try:
        redis.freeze()
        try:
            lid = leader.send("redis", [b"GET", b"sf:k"], deadline=30000 * SLOW)
            wait_until(lambda: flight_stats(f)["leaders"] == 1, timeout=10 * SLOW, what="leader")
            follower.send("redis", [b"GET", b"sf:k"], deadline=30000 * SLOW)
            sid = stayer.send("redis", [b"GET", b"sf:k"], deadline=30000 * SLOW)
            tid = timed.send("redis", [b"GET", b"sf:k"], deadline=200)
            wait_until(lambda: flight_stats(f)["followers"] == 3, timeout=10 * SLOW, what="followers")
            # The leader's and a follower's clients go away; a deadline passes.
            leader.sock.shutdown(socket.SHUT_RDWR)
            leader.close()
            follower.sock.shutdown(socket.SHUT_RDWR)
            follower.close()
            try:
                timed.wait(tid)
                raise AssertionError("the GET with a 200 ms deadline was answered while Redis was stopped")
            except ferry.FerryError as e:
                assert e.code == "timeout"
            wait_until(lambda: flight_stats(f)["abandoned"] == 3, timeout=10 * SLOW, what="members gone")
        finally:
            redis.thaw()
        assert stayer.wait(sid) == b"v"
        assert lid is not None
        # The flight landed and left: the next GET starts a new one.
        assert timed.redis("GET", "sf:k") == b"v"
        assert flight_stats(f)["in_flight"] == 0
    finally:
        for c in (stayer, timed):
            c.close()


def test_error_replies_reach_every_member(redis, make_ferryd):
    f = make_ferryd(["--set", "redis_single_flight=yes"])
    redis.cli("RPUSH", "sf:list", "x")
    a, b = f.client(), f.client()
    try:
        redis.freeze()
        try:
            ia = a.send("redis", [b"GET", b"sf:list"], deadline=30000 * SLOW)
            ib = b.send("redis", [b"get", b"sf:list"], deadline=30000 * SLOW)
            wait_until(lambda: flight_stats(f)["followers"] == 1, timeout=10 * SLOW, what="follower")
        finally:
            redis.thaw()
        for c, i in ((a, ia), (b, ib)):
            try:
                c.wait(i)
                raise AssertionError("GET of a list succeeded")
            except ferry.FerryError as e:
                assert e.code == "backend_error" and e.message.startswith("WRONGTYPE")
        # A missing key is nil for every member.
        assert a.redis("GET", "sf:none") is None
    finally:
        a.close()
        b.close()


def test_reload_turns_it_on(tmp, redis, make_ferryd):
    conf = os.path.join(tmp, "sf.conf")
    with open(conf, "w") as fh:
        fh.write("redis_single_flight = no\n")
    f = make_ferryd(["--config", conf])
    assert flight_stats(f)["enabled"] is False
    with open(conf, "w") as fh:
        fh.write("redis_single_flight = yes\n")
    f.signal(signal.SIGHUP)
    wait_until(lambda: "reloaded configuration" in f.read_log(), timeout=10 * SLOW, what="reload")
    assert flight_stats(f)["enabled"] is True
    redis.cli("SET", "sf:k", "v")
    with f.client() as c:
        assert c.redis("GET", "sf:k") == b"v"
    assert flight_stats(f)["leaders"] == 1
