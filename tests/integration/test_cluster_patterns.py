"""The Redis patterns on a Redis Cluster (3 primaries, 3 replicas), through
one ferryd: locks, cache, rate limits, scripts, streams, blocking commands,
redis.multi, redis.pipeline and pub/sub, with keys spread over the
primaries; what a cluster cannot do (keys in several slots) is refused."""

import os
import socket
import sys
import threading

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, ".."))

import ferry  # noqa: E402
from harness import wait_until  # noqa: E402
from redis_cluster import Cluster  # noqa: E402


@pytest.fixture(scope="session")
def cluster():
    c = Cluster().start()
    yield c
    c.stop()


@pytest.fixture
def f(make_ferryd, cluster):
    seed = cluster.nodes[0].port
    return make_ferryd(["--set", "redis_cluster=" + cluster.seeds, "--set", "redis_blocking_pool=6"],
                       redis_url="redis://127.0.0.1:%d/0" % seed)


def spread(cluster, fmt, n=3, start=0):
    """n names fmt % i, each of whose key lands on a different primary."""
    out, owners = [], set()
    i = start
    while len(out) < n:
        name = fmt % i
        port = cluster.owner_of(name)
        if port not in owners:
            owners.add(port)
            out.append(name)
        i += 1
    return out


def test_locks_on_every_primary(f, cluster):
    names = []
    owners = set()
    i = 0
    while len(names) < 3:
        name = "job%d" % i
        port = cluster.owner_of("lock:{%s}" % name)
        if port not in owners:
            owners.add(port)
            names.append(name)
        i += 1
    with f.client() as c:
        for name in names:
            got = c.locks.acquire(name, 10000)
            assert got["acquired"] is True
            node = cluster.node(cluster.owner_of("lock:{%s}" % name))
            assert node.cli("GET", "lock:{%s}" % name) == got["token"]
            assert c.locks.acquire(name, 10000) == {"acquired": False}
            assert c.locks.extend(name, got["token"], 90000) == {"ttl_ms": 90000}
            assert int(node.cli("PTTL", "lock:{%s}" % name)) > 10000
            assert c.locks.release(name, got["token"]) == {"released": True}
            assert node.cli("EXISTS", "lock:{%s}" % name) == "0"
            with pytest.raises(ferry.FerryError) as e:
                c.locks.release(name, got["token"])
            assert e.value.code == "not_held"
        # A waiting acquire gets the lock once its holder releases it.
        got = c.locks.acquire(names[0], 10000)
        result = {}

        def waiter():
            with f.client() as w:
                result["got"] = w.locks.acquire(names[0], 10000, wait_ms=15000, deadline=20000)
        t = threading.Thread(target=waiter)
        t.start()
        wait_until(lambda: f.stats()["backends"]["redis"]["locks"]["waiting"] == 1, timeout=10,
                   what="the acquire to wait")
        assert c.locks.release(names[0], got["token"]) == {"released": True}
        t.join(30)
        assert result["got"]["acquired"] is True and result["got"]["fence"] > got["fence"]


def test_cache_and_ratelimit(f, cluster):
    keys = spread(cluster, "ck:%d")
    with f.client() as c:
        for k in keys:
            miss = c.cache.get(k, lease_ms=5000)
            assert miss.get("hit") is not True and "lease" in miss, miss
            c.cache.fill(k, b"value of " + k.encode(), 60000, lease=miss["lease"])
            hit = c.cache.get(k)
            assert hit.get("hit") is True and hit["value"] == b"value of " + k.encode(), hit
        names = spread(cluster, "api:%d")
        for name in names:
            got = [c.ratelimit(name, 0.5, 3)["allowed"] for _ in range(4)]
            assert got == [True, True, True, False]


def test_scripts_with_keys_in_one_slot(f, cluster):
    with f.client() as c:
        c.scripts.load("swap", "local a = redis.call('GET', KEYS[1]); redis.call('SET', KEYS[1], ARGV[1]);"
                               "redis.call('SET', KEYS[2], a or ''); return a")
        for tag in spread(cluster, "t%d"):
            k1, k2 = "{%s}:a" % tag, "{%s}:b" % tag
            assert c.scripts.call("swap", [k1, k2], ["one"]) is None
            assert c.scripts.call("swap", [k1, k2], ["two"]) == b"one"
            node = cluster.node(cluster.owner_of(tag))
            assert node.cli("GET", k1) == "two" and node.cli("GET", k2) == "one"
        # Keys in two slots: the cluster refuses the script.
        a, b = spread(cluster, "s%d", n=2)
        with pytest.raises(ferry.FerryError) as e:
            c.scripts.call("swap", [a, b], ["x"])
        assert e.value.code == "backend_error" and "CROSSSLOT" in e.value.message, e.value


def entry(st, sub, timeout=20):
    while True:
        kind, data = st.next_entry(sub, timeout)
        if kind == "entry":
            return data


def test_streams_on_two_primaries(f, cluster):
    streams = spread(cluster, "orders%d", n=2)
    with f.client() as c:
        st = c.streams
        subs = {}
        for s in streams:
            assert st.create_group(s, "g", mkstream=True) is True
            subs[s] = st.consume(s, "g", "c1")
        ids = {s: [st.add(s, {"n": str(i)}) for i in range(3)] for s in streams}
        got = {s: [] for s in streams}
        for _ in range(6):
            frame = c.next_push(20)
            assert frame["kind"] == "entry", frame
            got[frame["data"]["stream"]].append(frame["data"]["id"])
            assert frame["sub"] == subs[frame["data"]["stream"]]
        for s in streams:
            assert got[s] == ids[s]
            assert st.ack(ids[s], sub=subs[s]) == 3
            node = cluster.node(cluster.owner_of(s))
            assert node.cli("XPENDING", s, "g").splitlines()[0] == "0"
        for s in streams:
            st.cancel(subs[s])


def test_blocking_on_keys_of_different_primaries(f, cluster):
    keys = spread(cluster, "q%d")
    results = {}

    def waiter(k):
        with f.client() as w:
            results[k] = w.blocking("BLPOP", k, "0", deadline=30000)

    threads = [threading.Thread(target=waiter, args=(k,)) for k in keys]
    for t in threads:
        t.start()
    with f.client() as c:
        # Each BLPOP waits on its key's node: a push there wakes it.
        wait_until(lambda: f.stats()["backends"]["redis"]["dedicated"]["in_use"] == 3, timeout=20,
                   what="3 BLPOPs blocked")
        for k in keys:
            assert c.redis("RPUSH", k, "item-" + k) == 1
        for t in threads:
            t.join(30)
        assert results == {k: [k.encode(), ("item-" + k).encode()] for k in keys}
        # A timeout on an empty key: nil, not MOVED.
        assert c.blocking("BLPOP", keys[0], "0.1") is None
        # Keys in two slots cannot be waited on together.
        with pytest.raises(ferry.FerryError) as e:
            c.blocking("BLPOP", keys[0], keys[1], "1")
        assert e.value.code == "bad_request" and "CROSSSLOT" in e.value.message


def test_multi_with_and_without_watch(f, cluster):
    tags = spread(cluster, "m%d")
    with f.client() as c:
        for tag in tags:
            k1, k2 = "{%s}:x" % tag, "{%s}:y" % tag
            assert c.multi([["SET", k1, "1"], ["INCR", k1], ["SET", k2, "b"]]) == ["OK", 2, "OK"]
            assert c.multi([["GET", k1]], watch=[k1, k2]) == [b"2"]
            assert c.multi([["INCR", k1]], expect={k1: "2"}) == [3]
            assert c.multi([["INCR", k1]], expect={k1: "2"}) == {"aborted": True, "reason": "expect",
                                                                   "key": k1.encode()}
            node = cluster.node(cluster.owner_of(tag))
            assert node.cli("GET", k1) == "3"
        a, b = spread(cluster, "n%d", n=2)
        for call in (lambda: c.multi([["SET", a, "1"], ["SET", b, "1"]]),
                     lambda: c.multi([["SET", a, "1"]], watch=[b])):
            with pytest.raises(ferry.FerryError) as e:
                call()
            assert e.value.code == "bad_request" and "CROSSSLOT" in e.value.message


def test_pipeline_spread_over_the_nodes(f, cluster):
    keys = ["p:%d" % i for i in range(30)]
    assert len({cluster.owner_of(k) for k in keys}) == 3
    with f.client() as c:
        cmds = []
        for i, k in enumerate(keys):
            cmds += [["SET", k, str(i)], ["INCR", k], ["GET", k]]
        cmds.append(["PING"])
        got = c.pipeline(cmds)
        want = []
        for i in range(len(keys)):
            want += ["OK", i + 1, str(i + 1).encode()]
        assert got == want + ["PONG"]
        for k in keys[:5]:
            assert cluster.node(cluster.owner_of(k)).cli("GET", k) == str(keys.index(k) + 1)
        # A command whose keys span slots gets Redis's error in its place.
        got = c.pipeline([["SET", keys[0], "z"], ["MGET"] + keys[:10], ["GET", keys[0]]])
        assert got[0] == "OK" and got[2] == b"z"
        assert isinstance(got[1], dict) and "CROSSSLOT" in got[1]["error"], got[1]


def test_pubsub(f, cluster):
    with f.client() as s, f.client() as p:
        sub = s.pubsub.subscribe("news", "alerts")
        for ch in ("news", "alerts"):
            # The count is the receiving node's own subscribers: the
            # subscriber connection may sit on another node (the cluster
            # forwards the message over its bus).
            assert p.pubsub.publish(ch, "hello " + ch) in (0, 1)
            frame = s.next_push(20)
            assert frame["sub"] == sub and frame["kind"] == "message"
            assert frame["data"]["channel"] == ch.encode() or frame["data"]["channel"] == ch
            assert frame["data"]["payload"] == ("hello " + ch).encode()
        try:
            s.next_push(0.3)
            extra = True
        except socket.timeout:
            extra = False
        assert not extra


def test_stream_dead_letters_in_the_stream_slot(f, cluster):
    """The claim script touches the stream and its dead-letter stream: on a
    cluster the default dead-letter stream is "{<stream>}:dead"."""
    s = "poison"
    assert cluster.keyslot(s + ":dead") != cluster.keyslot(s)
    with f.client() as c:
        st = c.streams
        st.create_group(s, "g", mkstream=True)
        bad = st.add(s, {"body": "poison"})
        sub = st.consume(s, "g", "w", claim_idle_ms=100, max_deliveries=2)
        counts = []
        while len(counts) < 2:
            e = entry(st, sub)
            assert e["id"] == bad
            counts.append(e["deliveries"])
        dead = "{%s}:dead" % s
        node = cluster.node(cluster.owner_of(s))
        wait_until(lambda: node.cli("XLEN", dead) == "1", timeout=20, what="a dead letter")
        assert f.stats()["backends"]["redis"]["streams"]["dead_lettered"] == 1
        st.cancel(sub)
        # A dead-letter stream of one's own must share the stream's slot.
        with pytest.raises(ferry.FerryError) as e:
            st.consume(s, "g", "w2", dead_letter="elsewhere")
        assert e.value.code == "bad_request" and "CROSSSLOT" in e.value.message
        st.create_group("{t}in", "g", mkstream=True)
        sub = st.consume("{t}in", "g", "w", dead_letter="{t}dlq")
        st.cancel(sub)


def test_one_dedicated_connection_moves_between_nodes(make_ferryd, cluster):
    """redis_blocking_pool = 1: the one connection serves the node of the
    latest key; a key on another node moves it (that request is refused
    with overloaded, a retry is served)."""
    seed = cluster.nodes[0].port
    f1 = make_ferryd(["--set", "redis_cluster=" + cluster.seeds, "--set", "redis_blocking_pool=1"],
                     redis_url="redis://127.0.0.1:%d/0" % seed)
    a, b = spread(cluster, "one%d", n=2)
    with f1.client() as c:
        assert c.blocking("BLPOP", a, "0.05") is None
        with pytest.raises(ferry.FerryError) as e:
            c.blocking("BLPOP", b, "0.05")
        assert e.value.code == "overloaded" and "moving" in e.value.message
        c.redis("RPUSH", b, "x")
        wait_until(lambda: _try_blpop(c, b) == [b.encode(), b"x"], timeout=20, what="BLPOP on the moved connection")
        d = f1.stats()["backends"]["redis"]["dedicated"]
        assert d["open"] == 1 and d["moved"] == 1


def _try_blpop(c, key):
    try:
        return c.blocking("BLPOP", key, "0.05")
    except ferry.FerryError as e:
        # overloaded while another node's is moving, unavailable while it reconnects
        assert e.code in ("overloaded", "unavailable"), e
        return None


def test_blocking_after_a_reshard(f, cluster):
    """A slot moves under an idle dedicated connection: the next command
    on it gets the MOVED (or, if the map was refreshed meanwhile, none),
    and the one after goes to the new owner."""
    key = "resharded"
    src = cluster.node(cluster.owner_of(key))
    dst = next(cluster.node(p) for p in cluster.primaries_now() if p != src.port)
    slot = cluster.keyslot(key)
    with f.client() as c:
        assert c.blocking("BLPOP", key, "0.05") is None
        did = dst.cli("CLUSTER", "MYID")
        for n in [dst, src] + [cluster.node(p) for p in cluster.primaries_now() if p not in (dst.port, src.port)]:
            assert n.cli("CLUSTER", "SETSLOT", slot, "NODE", did) == "OK"
        wait_until(lambda: cluster.owner_of(key) == dst.port, timeout=20, what="the slot on its new node")
        try:
            assert c.blocking("BLPOP", key, "0.05") is None
        except ferry.FerryError as e:
            assert e.code == "backend_error" and e.message.startswith("MOVED"), e
        dst.cli("RPUSH", key, "moved")
        assert c.blocking("BLPOP", key, "1") == [key.encode(), b"moved"]


def _move_slot(cluster, slot, src, dst):
    """Moves slot (with its keys) from src to dst as redis-cli reshard does."""
    sid, did = src.cli("CLUSTER", "MYID"), dst.cli("CLUSTER", "MYID")
    assert dst.cli("CLUSTER", "SETSLOT", slot, "IMPORTING", sid) == "OK"
    assert src.cli("CLUSTER", "SETSLOT", slot, "MIGRATING", did) == "OK"
    while True:
        keys = src.cli("CLUSTER", "GETKEYSINSLOT", slot, 10).split()
        if not keys:
            break
        assert src.cli("MIGRATE", "127.0.0.1", dst.port, "", 0, 5000, "KEYS", *keys) in ("OK", "NOKEY")
    for n in [dst, src] + [cluster.node(p) for p in cluster.primaries_now() if p not in (dst.port, src.port)]:
        assert n.cli("CLUSTER", "SETSLOT", slot, "NODE", did) == "OK"


def test_stream_consume_follows_a_reshard(f, cluster):
    s = "moving-stream"
    src = cluster.node(cluster.owner_of(s))
    dst = next(cluster.node(p) for p in cluster.primaries_now() if p != src.port)
    with f.client() as c:
        st = c.streams
        st.create_group(s, "g", mkstream=True)
        sub = st.consume(s, "g", "c1")
        id1 = st.add(s, {"n": "1"})
        assert entry(st, sub)["id"] == id1
        assert st.ack(id1, sub=sub) == 1
        # The blocked read on the old node is answered MOVED when the slot goes.
        _move_slot(cluster, cluster.keyslot(s), src, dst)
        wait_until(lambda: cluster.owner_of(s) == dst.port, timeout=20, what="the stream on its new node")
        id2 = st.add(s, {"n": "2"})
        assert entry(st, sub)["id"] == id2
        assert st.ack(id2, sub=sub) == 1
        assert dst.cli("XPENDING", s, "g").splitlines()[0] == "0"
        st.cancel(sub)


def test_subscriber_moves_when_its_node_dies(f, cluster):
    """Last in the file: it kills a primary of this file's cluster."""
    with f.client() as s, f.client() as p:
        sub = s.pubsub.subscribe("failover")
        # The node ferryd's subscriber connection sits on.
        def holder():
            for n in cluster.nodes:
                if n.alive() and "cmd=subscribe" in n.cli("CLIENT", "LIST"):
                    return n
            return None
        wait_until(lambda: holder() is not None, timeout=20, what="the subscriber connection")
        node = holder()
        node.kill()
        seen, kinds = [], []

        def delivered():
            try:
                p.pubsub.publish("failover", "after", deadline=2000)
            except ferry.FerryError:
                return False
            try:
                while True:
                    frame = s.next_push(0.5)
                    kinds.append(frame["kind"])
                    if frame["sub"] == sub and frame["kind"] == "message":
                        seen.append(frame["data"]["payload"])
                        return True
            except socket.timeout:
                return False
        wait_until(delivered, timeout=45, interval=0.2, what="a message through another node")
        assert seen[-1] == b"after"
        # The subscriber heard that messages may have been missed meanwhile.
        assert "gap" in kinds, kinds
        n = holder()
        assert n is not None and n is not node

