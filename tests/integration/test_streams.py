"""Redis streams with consumer groups: xadd, group.create, stream.consume
(prefetch, reclaim of a dead consumer's entries, dead letters, a Redis
restart), stream.ack, stream.cancel, and the `ferry stream` command."""

import socket

import pytest

import ferry
from conftest import cli, wait_until


def entry(st, sub, timeout=10):
    """The next entry push of sub (gap pushes skipped)."""
    while True:
        kind, data = st.next_entry(sub, timeout)
        if kind == "entry":
            return data


def no_push(c, timeout=0.3):
    """True when no push comes within timeout."""
    try:
        c.next_push(timeout)
    except socket.timeout:
        return True
    return False


def streams_stats(f):
    return f.stats()["backends"]["redis"]["streams"]


def test_add_consume_ack(ferryd, redis):
    with ferryd.client() as c:
        st = c.streams
        assert st.create_group("orders", "g", mkstream=True) is True
        ids = [st.add("orders", {"n": str(i), "who": "me"}) for i in range(3)]
        assert all(isinstance(i, str) and "-" in i for i in ids)
        sub = st.consume("orders", "g", "c1")
        got = [entry(st, sub) for _ in range(3)]
        assert [e["id"] for e in got] == ids
        assert got[0] == {"stream": "orders", "id": ids[0], "fields": {"n": b"0", "who": b"me"},
                          "deliveries": 1}
        assert redis.cli("XPENDING", "orders", "g").splitlines()[0] == "3"
        assert st.ack(ids[0], sub=sub) == 1
        assert st.ack(ids[1:], sub=sub) == 2
        assert redis.cli("XPENDING", "orders", "g").splitlines()[0] == "0"
        s = streams_stats(ferryd)
        assert s["subscriptions"] == 1 and s["pushed"] >= 3 and s["acked"] >= 3 and s["unacked"] == 0
        # Pairs in, duplicate names out as pairs; trimming.
        st.add("orders", [("a", "1"), ("a", "2")])
        e = entry(st, sub)
        assert e["fields"] == [["a", b"1"], ["a", b"2"]]
        st.ack(e["id"], sub=sub)
        for i in range(20):
            st.add("trim", {"i": str(i)}, maxlen=5)
        assert redis.cli("XLEN", "trim") == "5"
        st.add("trim", {"i": "x"}, maxlen=5, approx=True)
        assert int(redis.cli("XLEN", "trim")) >= 5
        # An explicit id.
        assert st.add("explicit", {"a": "b"}, id="5-1") == "5-1"
        assert st.cancel(sub) == {}
    wait_until(lambda: streams_stats(ferryd)["subscriptions"] == 0)
    wait_until(lambda: ferryd.stats()["backends"]["redis"]["dedicated"]["in_use"] == 0)


def test_prefetch_limit(ferryd, redis):
    with ferryd.client() as c:
        st = c.streams
        st.create_group("jobs", "g", mkstream=True)
        for i in range(7):
            st.add("jobs", {"i": str(i)})
        sub = st.consume("jobs", "g", "w", prefetch=2)
        first = [entry(st, sub), entry(st, sub)]
        assert no_push(c)
        # Only what was pushed was read from the group.
        assert redis.cli("XPENDING", "jobs", "g").splitlines()[0] == "2"
        assert streams_stats(ferryd)["unacked"] == 2
        outstanding = {e["id"] for e in first}
        seen = [e["fields"]["i"] for e in first]
        while len(seen) < 7:
            st.ack(sorted(outstanding)[0], sub=sub)
            outstanding.remove(sorted(outstanding)[0])
            e = entry(st, sub)
            outstanding.add(e["id"])
            seen.append(e["fields"]["i"])
            assert len(outstanding) <= 2
            assert int(redis.cli("XPENDING", "jobs", "g").splitlines()[0]) <= 2
        assert seen == [str(i).encode() for i in range(7)]


def test_dead_consumer_entries_are_reclaimed(ferryd, redis):
    with ferryd.client() as a:
        a.streams.create_group("q", "g", mkstream=True)
        ids = [a.streams.add("q", {"k": str(i)}) for i in range(3)]
        sub = a.streams.consume("q", "g", "dies", claim_idle_ms=200)
        assert [entry(a.streams, sub)["id"] for _ in range(3)] == ids
    # a is gone without acking: its entries stay pending on consumer "dies".
    assert "dies" in redis.cli("XPENDING", "q", "g", "-", "+", "10")
    with ferryd.client() as b:
        sub = b.streams.consume("q", "g", "lives", claim_idle_ms=200)
        got = [entry(b.streams, sub) for _ in range(3)]
        assert sorted(e["id"] for e in got) == ids
        assert all(e["deliveries"] == 2 for e in got)
        assert b.streams.ack([e["id"] for e in got], sub=sub) == 3
    assert redis.cli("XPENDING", "q", "g").splitlines()[0] == "0"
    assert streams_stats(ferryd)["reclaimed"] >= 3


def test_reclaim_honours_prefetch(ferryd, redis):
    with ferryd.client() as a:
        a.streams.create_group("rp", "g", mkstream=True)
        ids = [a.streams.add("rp", {"k": str(i)}) for i in range(3)]
        sub = a.streams.consume("rp", "g", "dies", claim_idle_ms=100)
        for _ in range(3):
            entry(a.streams, sub)
    with ferryd.client() as b:
        sub = b.streams.consume("rp", "g", "lives", prefetch=1, claim_idle_ms=100)
        got = []
        for _ in range(3):
            e = entry(b.streams, sub)
            got.append(e["id"])
            # One outstanding at most: nothing more comes until the ack.
            assert no_push(b)
            assert streams_stats(ferryd)["unacked"] == 1
            assert b.streams.ack(e["id"], sub=sub) == 1
        assert sorted(got) == ids


def test_poison_entries_go_to_the_dead_letter_stream(ferryd, redis):
    with ferryd.client() as c:
        st = c.streams
        st.create_group("{p}in", "g", mkstream=True)
        good = st.add("{p}in", {"ok": "1"})
        bad = st.add("{p}in", {"body": "poison"})
        sub = st.consume("{p}in", "g", "w", claim_idle_ms=100, max_deliveries=3)
        counts = []
        while len(counts) < 3:
            e = entry(st, sub)
            if e["id"] == good:
                st.ack(good, sub=sub)
            else:
                assert e["id"] == bad
                counts.append(e["deliveries"])
        assert counts == [1, 2, 3]
        wait_until(lambda: redis.cli("XLEN", "{p}in:dead") == "1", what="a dead letter")
        fields = redis.cli("XRANGE", "{p}in:dead", "-", "+").splitlines()[1:]
        d = dict(zip(fields[::2], fields[1::2]))
        assert d == {"body": "poison", "delivery_count": "3", "origin_stream": "{p}in", "origin_id": bad,
                     "group": "g"}
        # Acked in the group, and no more deliveries.
        wait_until(lambda: redis.cli("XPENDING", "{p}in", "g").splitlines()[0] == "0")
        assert no_push(c, 0.5)
        with pytest.raises(ferry.FerryError) as e:
            st.ack(bad, sub=sub)
        assert e.value.code == "bad_request"
        assert streams_stats(ferryd)["dead_lettered"] == 1
        # A dead_letter stream of one's own.
        st.create_group("p2", "g", mkstream=True)
        x = st.add("p2", {"a": "b"})
        sub2 = st.consume("p2", "g", "w", claim_idle_ms=100, max_deliveries=1, dead_letter="p2-dlq")
        assert entry(st, sub2)["id"] == x
        wait_until(lambda: redis.cli("XLEN", "p2-dlq") == "1", what="a dead letter in p2-dlq")


def test_redis_restart_consumer_resumes(ferryd, redis):
    with ferryd.client() as c:
        st = c.streams
        st.create_group("r", "g", mkstream=True)
        sub = st.consume("r", "g", "w", claim_idle_ms=200)
        x = st.add("r", {"n": "1"})
        assert entry(st, sub)["id"] == x
        st.ack(x, sub=sub)
        redis.stop()
        redis.start()  # empty: no stream, no group
        wait_until(lambda: ferryd.redis_state() == "up", what="redis up again")

        def add():
            try:
                return st.add("r", {"n": "2"})
            except ferry.FerryError as e:
                assert e.code == "unavailable"
                return None
        y = None
        wait_until(lambda: add() is not None, what="xadd after the restart")
        # The consumer re-created its group (from the stream's start) by itself.
        kinds = []
        while True:
            kind, data = st.next_entry(sub, 10)
            kinds.append(kind)
            if kind == "entry":
                y = data
                break
        assert y["fields"] == {"n": b"2"}
        assert "gap" in kinds
        assert st.ack(y["id"], sub=sub) == 1
    assert streams_stats(ferryd)["groups_recreated"] >= 1


def test_mkstream_and_busygroup(ferryd, redis):
    with ferryd.client() as c:
        st = c.streams
        with pytest.raises(ferry.FerryError) as e:
            st.create_group("nostream", "g")
        assert e.value.code == "backend_error"
        assert st.create_group("nostream", "g", mkstream=True) is True
        assert redis.cli("TYPE", "nostream") == "stream"
        assert st.create_group("nostream", "g", mkstream=True) is False
        assert st.create_group("nostream", "g") is False
        # id "0": a new group sees the entries already there.
        st.add("old", {"a": "1"})
        assert st.create_group("old", "from0", id="0") is True
        sub = st.consume("old", "from0", "c")
        assert entry(st, sub)["fields"] == {"a": b"1"}


def test_direct_ack(ferryd, redis):
    with ferryd.client() as c:
        st = c.streams
        st.create_group("d", "g", mkstream=True)
        x = st.add("d", {"a": "1"})
        redis.cli("XREADGROUP", "GROUP", "g", "other", "COUNT", "1", "STREAMS", "d", ">")
        assert st.ack(x, stream="d", group="g") == 1
        assert st.ack([x], stream="d", group="g") == 0


@pytest.mark.parametrize("op,args,words", [
    ("xadd", {"stream": "s"}, "'fields' is required"),
    ("xadd", {"stream": "s", "fields": {}}, "at least one"),
    ("xadd", {"stream": "s", "fields": {"a": 1}}, "'fields' must be"),
    ("xadd", {"stream": "s", "fields": [["a"]]}, "'fields' must be"),
    ("xadd", {"stream": "", "fields": {"a": "b"}}, "'stream' must be 1 to"),
    ("xadd", {"stream": "s", "fields": {"a": "b"}, "approx": True}, "'approx' needs 'maxlen'"),
    ("xadd", {"stream": "s", "fields": {"a": "b"}, "bogus": 1}, "unknown argument 'bogus'"),
    ("group.create", {"stream": "s"}, "'group' is required"),
    ("stream.consume", {"stream": "s", "group": "g", "consumer": "c", "prefetch": 0}, "'prefetch' must be"),
    ("stream.consume", {"stream": "s", "group": "g", "consumer": "c", "claim_idle_ms": 1},
     "'claim_idle_ms' must be"),
    ("stream.consume", {"stream": "s", "group": "g", "consumer": "c", "dead_letter": "s"}, "another stream"),
    ("stream.consume", {"stream": "s", "group": "g"}, "'consumer' is required"),
    ("stream.ack", {"sub": 99, "id": "1-1"}, "no stream.consume subscription 99"),
    ("stream.ack", {"sub": 99, "stream": "s", "group": "g", "id": "1-1"}, "either 'sub'"),
    ("stream.ack", {"stream": "s", "id": "1-1"}, "either 'sub'"),
    ("stream.ack", {"stream": "s", "group": "g"}, "either 'id' or 'ids'"),
    ("stream.ack", {"stream": "s", "group": "g", "ids": []}, "must not be empty"),
    ("stream.cancel", {"sub": 5}, "no stream.consume subscription 5"),
])
def test_bad_input(ferryd, op, args, words):
    with ferryd.client() as c:
        with pytest.raises(ferry.FerryError) as e:
            c.call(op, args)
        assert e.value.code == "bad_request"
        assert words in e.value.message
        assert c.ping() == "PONG"


def test_refusals_from_redis_and_state(ferryd, redis):
    with ferryd.client() as c:
        st = c.streams
        # No group: refused at once, nothing left running.
        with pytest.raises(ferry.FerryError) as e:
            st.consume("missing", "g", "c")
        assert e.value.code == "backend_error" and "NOGROUP" in e.value.message
        redis.cli("SET", "str", "x")
        with pytest.raises(ferry.FerryError) as e:
            st.add("str", {"a": "b"})
        assert e.value.code == "backend_error" and "WRONGTYPE" in e.value.message
        with pytest.raises(ferry.FerryError) as e:
            st.add("s", {"a": "b"}, id="not-an-id")
        assert e.value.code == "backend_error"
        # An id not delivered on the subscription.
        st.create_group("s2", "g", mkstream=True)
        x = st.add("s2", {"a": "b"})
        sub = st.consume("s2", "g", "c")
        assert entry(st, sub)["id"] == x
        with pytest.raises(ferry.FerryError) as e:
            st.ack("1-1", sub=sub)
        assert e.value.code == "bad_request" and "not outstanding" in e.value.message
        assert st.ack(x, sub=sub) == 1
        # Another connection cannot use this one's subscription.
        with ferryd.client() as other:
            with pytest.raises(ferry.FerryError) as e:
                other.streams.cancel(sub)
            assert e.value.code == "bad_request"
    # Its client gone, the subscription ended and gave its connection back.
    wait_until(lambda: streams_stats(ferryd)["subscriptions"] == 0)
    wait_until(lambda: ferryd.stats()["backends"]["redis"]["dedicated"]["in_use"] == 0)


def test_client_close_returns_connections(make_ferryd, redis):
    f = make_ferryd(args=["--set", "redis_blocking_pool=2"])
    with f.client() as c:
        c.streams.create_group("cc", "g", mkstream=True)
        c.streams.consume("cc", "g", "a")
        c.streams.consume("cc", "g", "b")
        with pytest.raises(ferry.FerryError) as e:
            c.streams.consume("cc", "g", "c")
        assert e.value.code == "overloaded"
        assert streams_stats(f)["subscriptions"] == 2
    wait_until(lambda: streams_stats(f)["subscriptions"] == 0)
    wait_until(lambda: f.stats()["backends"]["redis"]["dedicated"]["in_use"] == 0)
    with f.client() as c:
        sub = c.streams.consume("cc", "g", "a")
        x = c.streams.add("cc", {"k": "v"})
        assert entry(c.streams, sub)["id"] == x


def test_cli(ferryd, redis):
    r = cli(ferryd, "stream", "add", "cli", "name", "ann", "n", "1", "--maxlen", "100")
    assert r.returncode == 0, r.stderr
    first = r.stdout.decode().strip()
    assert "-" in first
    assert cli(ferryd, "stream", "add", "cli", "name", "bob").returncode == 0
    r = cli(ferryd, "stream", "consume", "cli", "g", "c1", "--count", "2", timeout=3000)
    assert r.returncode == 0, r.stderr
    out = r.stdout.decode()
    assert first in out and "ann" in out and "bob" in out
    # The group was created from the stream's start, and both were acked.
    assert redis.cli("XPENDING", "cli", "g").splitlines()[0] == "0"
    r = cli(ferryd, "stream", "consume", "cli", "g", "c1", "--count", "1", timeout=300)
    assert r.returncode == 3
    # A direct ack.
    x = cli(ferryd, "stream", "add", "cli", "a", "b").stdout.decode().strip()
    redis.cli("XREADGROUP", "GROUP", "g", "x", "COUNT", "1", "STREAMS", "cli", ">")
    r = cli(ferryd, "stream", "ack", "cli", "g", x)
    assert r.returncode == 0 and r.stdout.decode().strip() == "1"
    assert cli(ferryd, "stream", "add", "cli").returncode == 64
