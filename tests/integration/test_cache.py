"""Cache-aside without stampedes: cache.get / cache.fill / cache.invalidate,
the Python stub's get_or_load and `ferry cache`."""

import os
import socket
import threading

import pytest

import ferry
from conftest import SLOW, cli, wait_until

LONG = 60000 * SLOW  # deadline of requests that wait for a fill


def cache_stats(f):
    return f.stats()["backends"]["redis"]["cache"]


def test_hundred_concurrent_misses_one_fill(ferryd):
    loads = []
    lock = threading.Lock()
    release = threading.Event()
    results = [None] * 100
    errors = []
    barrier = threading.Barrier(100)

    def loader():
        with lock:
            loads.append(1)
        # Holds the lease until the others have gathered as waiters.
        release.wait(60)
        return b"expensive value"

    def caller(i):
        try:
            with ferryd.client() as c:
                barrier.wait(60)
                results[i] = c.cache.get_or_load("c:hot", loader, ttl=60, lease_ms=LONG, deadline=LONG)
        except Exception as e:  # noqa: BLE001
            errors.append(repr(e))

    threads = [threading.Thread(target=caller, args=(i,)) for i in range(100)]
    for t in threads:
        t.start()
    try:
        wait_until(lambda: cache_stats(ferryd)["waiting"] == 99, timeout=60 * SLOW, what="99 waiters")
    finally:
        release.set()
        for t in threads:
            t.join(120)
    assert errors == []
    assert len(loads) == 1
    assert results == [b"expensive value"] * 100
    s = cache_stats(ferryd)
    assert s["leases"] == 1 and s["fills"] == 1
    assert s["woken_by_fill"] == 99 and s["waiting"] == 0 and s["keys_waited_on"] == 0


def test_hit_miss_and_peek(ferryd, redis):
    with ferryd.client() as c:
        assert c.cache.get("c:k", peek=True) == {"hit": False}
        g = c.cache.get("c:k", lease_ms=30000)
        assert g["hit"] is False and isinstance(g["lease"], str)
        # The lease key shares the key's cluster slot: {key} as hash tag.
        assert redis.cli("GET", "{c:k}:ferry-lease") == g["lease"]
        # Another caller that does not wait gets no lease.
        assert c.cache.get("c:k", wait=False) == {"hit": False}
        r = c.cache.fill("c:k", b"v\x00\xff", 10000, lease=g["lease"], jitter_ms=0)
        assert r == {"ttl_ms": 10000}
        assert redis.cli("EXISTS", "{c:k}:ferry-lease") == "0"
        assert 0 < int(redis.cli("PTTL", "c:k")) <= 10000
        assert c.cache.get("c:k") == {"hit": True, "value": b"v\x00\xff"}
        assert c.cache.get("c:k", peek=True) == {"hit": True, "value": b"v\x00\xff"}
        # The value is a plain string: the redis op reads it too.
        assert c.redis("GET", "c:k") == b"v\x00\xff"
        # A key with a hash tag keeps it: the lease key is key + suffix.
        g = c.cache.get("{user:1}:profile", lease_ms=30000)
        assert redis.cli("GET", "{user:1}:profile:ferry-lease") == g["lease"]


def test_jitter_and_fill_without_lease(ferryd, redis):
    with ferryd.client() as c:
        ttls = set()
        for i in range(20):
            r = c.cache.fill("c:j%d" % i, "x", 1000, jitter_ms=500)
            assert 1000 <= r["ttl_ms"] <= 1500
            ttls.add(r["ttl_ms"])
        assert len(ttls) > 1
        # Default jitter: up to a tenth of the TTL.
        assert 10000 <= c.cache.fill("c:j", "x", 10000)["ttl_ms"] <= 11000


def test_fill_with_a_lost_lease_is_not_stored(ferryd, redis):
    with ferryd.client() as c:
        g = c.cache.get("c:lost", lease_ms=30000)
        c.cache.invalidate("c:lost")
        with pytest.raises(ferry.FerryError) as e:
            c.cache.fill("c:lost", "stale", 10000, lease=g["lease"])
        assert e.value.code == "not_held"
        assert redis.cli("EXISTS", "c:lost") == "0"
        with pytest.raises(ferry.FerryError) as e:
            c.cache.fill("c:lost", "x", 10000, lease="not-a-token")
        assert e.value.code == "not_held"
        assert cache_stats(ferryd)["fills_not_held"] == 2


def test_lease_holder_dies_and_a_waiter_takes_over(ferryd):
    holder = ferryd.client()
    g = holder.cache.get("c:die", lease_ms=1000)
    assert "lease" in g
    # The holder goes away without filling.
    holder.sock.shutdown(socket.SHUT_RDWR)
    holder.close()
    a, b = ferryd.client(), ferryd.client()
    try:
        ia = a.send("cache.get", {"key": b"c:die", "lease_ms": LONG}, deadline=LONG)
        wait_until(lambda: cache_stats(ferryd)["waiting"] == 1, timeout=10 * SLOW, what="a waits")
        ib = b.send("cache.get", {"key": b"c:die", "lease_ms": LONG}, deadline=LONG)
        wait_until(lambda: cache_stats(ferryd)["waiting"] == 2, timeout=10 * SLOW, what="b waits")
        # When the lease expires, the one waiting longest takes it over.
        ra = a.wait(ia)
        assert ra["hit"] is False and ra["lease"] != g["lease"]
        assert cache_stats(ferryd)["taken_over"] == 1
        # The other still waits, and gets a's value.
        assert cache_stats(ferryd)["waiting"] == 1
        a.cache.fill("c:die", "from a", 60000, lease=ra["lease"])
        assert b.wait(ib) == {"hit": True, "value": b"from a"}
    finally:
        a.close()
        b.close()


def test_invalidate_wakes_waiters(ferryd):
    holder, waiter, other = ferryd.client(), ferryd.client(), ferryd.client()
    try:
        g = holder.cache.get("c:inv", lease_ms=LONG)
        iw = waiter.send("cache.get", {"key": b"c:inv", "lease_ms": LONG}, deadline=LONG)
        wait_until(lambda: cache_stats(ferryd)["waiting"] == 1, timeout=10 * SLOW, what="waiter")
        assert other.cache.invalidate("c:inv") == {"deleted": False}
        # Woken, it ran the script again: the lease (deleted) is its now,
        # long before the holder's lease would have expired.
        rw = waiter.wait(iw)
        assert rw["hit"] is False and rw["lease"] != g["lease"]
        with pytest.raises(ferry.FerryError) as e:
            holder.cache.fill("c:inv", "stale", 60000, lease=g["lease"])
        assert e.value.code == "not_held"
        waiter.cache.fill("c:inv", "fresh", 60000, lease=rw["lease"])
        assert other.cache.get("c:inv") == {"hit": True, "value": b"fresh"}
        assert other.cache.invalidate("c:inv") == {"deleted": True}
    finally:
        for c in (holder, waiter, other):
            c.close()


def test_waiter_deadline_and_disconnect(ferryd):
    holder, w1, w2 = ferryd.client(), ferryd.client(), ferryd.client()
    try:
        g = holder.cache.get("c:dl", lease_ms=LONG)
        with pytest.raises(ferry.FerryError) as e:
            w1.cache.get("c:dl", deadline=200)
        assert e.value.code == "timeout"
        w2.send("cache.get", {"key": b"c:dl"}, deadline=LONG)
        wait_until(lambda: cache_stats(ferryd)["waiting"] == 1, timeout=10 * SLOW, what="w2 waits")
        w2.sock.shutdown(socket.SHUT_RDWR)
        w2.close()
        wait_until(lambda: cache_stats(ferryd)["waiting"] == 0, timeout=10 * SLOW, what="w2 gone")
        assert cache_stats(ferryd)["keys_waited_on"] == 0
        holder.cache.fill("c:dl", "v", 60000, lease=g["lease"])
        assert w1.cache.get("c:dl") == {"hit": True, "value": b"v"}
    finally:
        holder.close()
        w1.close()


def test_two_ferryds_share_one_lease(redis, make_ferryd):
    f1 = make_ferryd()
    f2 = make_ferryd(name="ferry2.sock")
    c1, c2, c3 = f1.client(), f2.client(), f2.client()
    try:
        g = c1.cache.get("c:two", lease_ms=LONG)
        assert "lease" in g
        # Only one lease between the two instances.
        assert c3.cache.get("c:two", wait=False) == {"hit": False}
        i2 = c2.send("cache.get", {"key": b"c:two", "lease_ms": LONG}, deadline=LONG)
        wait_until(lambda: cache_stats(f2)["waiting"] == 1, timeout=10 * SLOW, what="waiter on f2")
        c1.cache.fill("c:two", "shared", 60000, lease=g["lease"])
        # f2 hears of the fill by polling.
        assert c2.wait(i2) == {"hit": True, "value": b"shared"}
        assert cache_stats(f2)["retries"] >= 1
        assert cache_stats(f2)["woken_by_fill"] == 0
    finally:
        for c in (c1, c2, c3):
            c.close()


def test_bad_requests(ferryd):
    with ferryd.client() as c:
        cases = [
            ("cache.get", None, "'key' is required"),
            ("cache.get", [1], "args must be a map"),
            ("cache.get", {}, "key"),
            ("cache.get", {"key": b""}, "empty"),
            ("cache.get", {"key": b"k", "lease_ms": 0}, "lease_ms"),
            ("cache.get", {"key": b"k", "bogus": 1}, "unknown argument 'bogus'"),
            ("cache.get", {"key": b"a}b"}, "hash tag"),
            ("cache.get", {"key": b"k", "wait": 1}, "wait"),
            ("cache.fill", {"key": b"k", "value": b"v"}, "ttl_ms"),
            ("cache.fill", {"key": b"k", "value": b"v", "ttl_ms": 0}, "ttl_ms"),
            ("cache.fill", {"key": b"k", "ttl_ms": 5}, "value"),
            ("cache.invalidate", {"key": 5}, "key"),
        ]
        for op, args, words in cases:
            with pytest.raises(ferry.FerryError) as e:
                c.call(op, args)
            assert e.value.code == "bad_request", (op, args)
            assert words in e.value.message, (op, args, e.value.message)
        with pytest.raises(ferry.FerryError) as e:
            c.call("cache.get", {"key": b"{}"})
        assert e.value.code == "bad_request"
        assert c.ping() == "PONG"


def test_wrong_type_is_a_backend_error(ferryd, redis):
    redis.cli("RPUSH", "c:list", "x")
    with ferryd.client() as c:
        with pytest.raises(ferry.FerryError) as e:
            c.cache.get("c:list")
        assert e.value.code == "backend_error" and "WRONGTYPE" in e.value.message


def test_cli_get_or_run(ferryd, tmp):
    count = os.path.join(tmp, "runs")
    script = "echo run >> %s; printf 'computed\\n'" % count
    for _ in range(3):
        p = cli(ferryd, "cache", "get-or-run", "c:cli", "--ttl", "60", "--", "sh", "-c", script)
        assert p.returncode == 0, p.stderr
        assert p.stdout == b"computed\n"
    with open(count) as fh:
        assert fh.read() == "run\n"
    p = cli(ferryd, "cache", "get", "c:cli")
    assert p.returncode == 0 and p.stdout == b"computed\n"
    # A failing command stores nothing.
    p = cli(ferryd, "cache", "get-or-run", "c:fail", "--ttl", "60", "--lease-ms", "100", "--", "sh", "-c",
            "echo partial; exit 3")
    assert p.returncode == 1 and b"nothing stored" in p.stderr
    p = cli(ferryd, "cache", "get", "c:fail", "--peek")
    assert p.returncode == 4 and p.stdout == b""


def test_cli_get_fill_invalidate(ferryd):
    p = cli(ferryd, "cache", "get", "c:c2", "--lease-ms", "60000")
    assert p.returncode == 4 and p.stdout == b""
    token = p.stderr.split(b"lease is yours: ")[1].split(b"\n")[0].decode()
    p = cli(ferryd, "cache", "fill", "c:c2", "hello", "--ttl", "60", "--lease", token)
    assert p.returncode == 0, p.stderr
    p = cli(ferryd, "cache", "fill", "c:c2", "again", "--ttl", "60", "--lease", token)
    assert p.returncode == 5 and b"not_held" in p.stderr
    p = cli(ferryd, "cache", "get", "c:c2")
    assert p.returncode == 0 and p.stdout == b"hello"
    p = cli(ferryd, "cache", "invalidate", "c:c2")
    assert p.returncode == 0 and p.stdout == b"deleted\n"
    p = cli(ferryd, "cache", "fill", "c:c2", "x")
    assert p.returncode == 64


def test_redis_restart(ferryd, redis):
    with ferryd.client() as c:
        g = c.cache.get("c:rs", lease_ms=LONG)
        redis.kill()
        wait_until(lambda: ferryd.redis_state() != "up", timeout=10 * SLOW, what="redis down")
        with pytest.raises(ferry.FerryError) as e:
            c.cache.get("c:rs")
        assert e.value.code == "unavailable"
        redis.start()
        wait_until(lambda: ferryd.redis_state() == "up", timeout=30 * SLOW, what="redis back")
        # The lease is gone with the data: its fill stores nothing, and
        # the next caller gets a new lease.
        with pytest.raises(ferry.FerryError) as e:
            c.cache.fill("c:rs", "old", 60000, lease=g["lease"])
        assert e.value.code == "not_held"
        g2 = c.cache.get("c:rs", lease_ms=LONG)
        assert g2["hit"] is False and g2["lease"] != g["lease"]
        c.cache.fill("c:rs", "new", 60000, lease=g2["lease"])
        assert c.cache.get("c:rs") == {"hit": True, "value": b"new"}
