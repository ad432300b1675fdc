"""Redis Cluster: routing by slot, multi-key splits, CROSSSLOT, MOVED and
ASK during a live reshard under pipelined load, and a primary's failover.
One cluster (3 primaries, 3 replicas) for the whole session."""

import os
import sys
import threading
import time

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
def cf(make_ferryd, cluster):
    """A ferryd on the cluster (redis_url's host is not used; it must still be redis://)."""
    seed = cluster.nodes[0].port
    return make_ferryd(["--set", "redis_cluster=" + cluster.seeds],
                       redis_url="redis://127.0.0.1:%d/0" % seed)


def cstats(f):
    return f.stats()["backends"]["redis"]["cluster"]


def test_keys_go_to_their_slots_primary(cf, cluster):
    owners = set()
    with cf.client() as c:
        for i in range(60):
            key = "route:%d" % i
            assert c.redis("SET", key, "v%d" % i) == "OK"
            port = cluster.owner_of(key)
            owners.add(port)
            # The primary that owns the slot holds it (no MOVED would say otherwise).
            assert cluster.node(port).cli("GET", key) == "v%d" % i
            assert c.redis("GET", key) == b"v%d" % i
    assert len(owners) == 3, owners
    st = cstats(cf)
    assert st["moved"] == 0


def test_hash_tags_keep_keys_together(cf, cluster):
    with cf.client() as c:
        assert c.redis("SADD", "{user:7}:a", "x", "y") == 2
        assert c.redis("SADD", "{user:7}:b", "y", "z") == 2
        # A multi-key command within one slot runs as one command.
        assert sorted(c.redis("SUNION", "{user:7}:a", "{user:7}:b")) == [b"x", b"y", b"z"]
        assert c.redis("SINTERSTORE", "{user:7}:c", "{user:7}:a", "{user:7}:b") == 1
    assert cluster.owner_of("{user:7}:a") == cluster.owner_of("{user:7}:c") == cluster.owner_of("user:7")
    assert cluster.node(cluster.owner_of("user:7")).cli("SMEMBERS", "{user:7}:c") == "y"


def test_multi_key_commands_split_and_merge(cf, cluster):
    keys = ["split:%d" % i for i in range(40)]
    assert len({cluster.owner_of(k) for k in keys}) == 3
    args = []
    for i, k in enumerate(keys):
        args += [k, "val%d" % i]
    with cf.client() as c:
        assert c.redis("MSET", *args) == "OK"
        got = c.redis("MGET", *(keys[:20] + ["split:missing"] + keys[20:]))
        assert got == [b"val%d" % i for i in range(20)] + [None] + [b"val%d" % i for i in range(20, 40)]
        assert c.redis("EXISTS", *keys, "split:missing", keys[0]) == 41  # a repeated key counts twice
        assert c.redis("TOUCH", *keys[:10]) == 10
        assert c.redis("DEL", *keys[:15], "split:missing") == 15
        assert c.redis("UNLINK", *keys) == 25
        assert c.redis("EXISTS", *keys) == 0
        # Keys of one slot are not split.
        assert c.redis("MSET", "{t}1", "a", "{t}2", "b") == "OK"
        assert c.redis("MGET", "{t}2", "{t}1") == [b"b", b"a"]
    for k in keys:
        assert cluster.node(cluster.owner_of(k)).cli("EXISTS", k) == "0"
    assert cstats(cf)["split"] >= 6


def test_other_multi_slot_commands_are_refused(cf):
    with cf.client() as c:
        for argv in (["SUNION", "a", "b"], ["RENAME", "a", "b"], ["BLMOVE", "a", "b", "LEFT", "RIGHT", "0"],
                     ["EVAL", "return 1", "2", "a", "b"]):
            with pytest.raises(ferry.FerryError) as e:
                c.redis(*argv)
            assert e.value.code in ("bad_request", "denied"), argv
            if e.value.code == "bad_request":
                assert "CROSSSLOT" in e.value.message
        # A malformed multi-key command is the server's to judge.
        with pytest.raises(ferry.FerryError) as e:
            c.redis("MSET", "a", "1", "b")
        assert e.value.code == "backend_error"
    assert cstats(cf)["crossslot"] >= 3


def test_keyless_commands_go_to_any_node(cf):
    with cf.client() as c:
        assert c.redis("PING") == "PONG"
        assert c.redis("ECHO", "hi") == b"hi"
        assert c.redis("EVAL", "return 7", "0") == 7
        info = c.redis("CLUSTER", "INFO")
        assert b"cluster_state:ok" in info
        # A script's keys route it.
        assert c.redis("EVAL", "return redis.call('SET', KEYS[1], ARGV[1])", "1", "script:k", "sv") == "OK"
        assert c.redis("GET", "script:k") == b"sv"


def test_stats_show_the_nodes(cf, cluster):
    # Ready means one node answers; when this test runs first, on a cluster
    # just made, the other connections may still be coming up, and the
    # replicas join CLUSTER SLOTS once they are attached (the map is read
    # again every 10 s).
    def settled():
        nodes = cstats(cf)["nodes"]
        prim = [n for n in nodes if n["role"] == "primary"]
        return (len(prim) == 3 and all(n["state"] == "ready" for n in prim)
                and len([n for n in nodes if n["role"] == "replica"]) == 3)
    wait_until(settled, timeout=30, what="three ready primaries and three replicas")
    st = cstats(cf)
    primaries = [n for n in st["nodes"] if n["role"] == "primary"]
    assert len(primaries) == 3
    assert sum(n["slots"] for n in primaries) == 16384
    assert all(n["state"] == "ready" for n in primaries)
    assert len([n for n in st["nodes"] if n["role"] == "replica"]) == 3
    assert st["map_version"] >= 1
    assert {int(n["address"].rsplit(":", 1)[1]) for n in primaries} == set(cluster.primaries_now())
    assert cf.stats()["backends"]["redis"]["state"] == "up"


def test_cluster_stats_keys_are_documented(cf):
    from test_docs import PROTOCOL_MD, key_paths, read, row_matches, stats_doc_rows
    with cf.client() as c:
        c.redis("MGET", "a", "b")
        st = c.stats()
    paths = {p for p in key_paths(st) if p[:3] == ("backends", "redis", "cluster")}
    assert ("backends", "redis", "cluster", "nodes[]", "address") in paths
    rows = [r for r in stats_doc_rows(read(PROTOCOL_MD)) if r.startswith("backends.redis.cluster")]
    assert sorted(".".join(p) for p in paths if not any(row_matches(r, p) for r in rows)) == []
    assert [r for r in rows if not any(row_matches(r, p) for p in paths)] == []


def test_replica_reads(make_ferryd, cluster):
    seed = cluster.nodes[0].port
    f = make_ferryd(["--set", "redis_cluster=" + cluster.seeds, "--set", "redis_replica_reads=yes"],
                    redis_url="redis://127.0.0.1:%d/0" % seed, name="replicas.sock")
    keys = ["rr:%d" % i for i in range(30)]
    with f.client() as c:
        for k in keys:
            assert c.redis("SET", k, k) == "OK"
        for p in cluster.primaries_now():
            cluster.node(p).cli("WAIT", 1, 2000)
        wait_until(lambda: all(n["state"] == "ready" for n in cstats(f)["nodes"]), timeout=10,
                   what="replica connections")
        for _ in range(3):
            for k in keys:
                got = c.redis("GET", k)
                assert got == k.encode() or got is None  # a replica may lag; never another key's value
        # Writes still go to primaries.
        assert c.redis("SET", keys[0], "new") == "OK"
    st = cstats(f)
    assert st["replica_reads"] > 0
    assert len([n for n in st["nodes"] if n["role"] == "replica" and n["state"] == "ready"]) == 3


def test_spans_name_the_node(make_ferryd, cluster):
    from otlp_collector import Collector
    col = Collector().start()
    try:
        env = {"OTEL_EXPORTER_OTLP_ENDPOINT": col.endpoint, "OTEL_TRACES_EXPORTER": "otlp",
               "OTEL_METRICS_EXPORTER": "none", "OTEL_BSP_SCHEDULE_DELAY": "100"}
        f = make_ferryd(["--set", "redis_cluster=" + cluster.seeds], env=env,
                        redis_url="redis://127.0.0.1:%d/0" % cluster.nodes[0].port, name="spans.sock")
        keys = ["span:%d" % i for i in range(12)]
        with f.client() as c:
            for k in keys:
                c.redis("INCR", k)
        wait_until(lambda: len([s for s in col.spans() if s["name"] == "INCR"]) >= len(keys), timeout=15,
                   what="the INCR spans")
        ports = sorted(s["attributes"]["server.port"] for s in col.spans() if s["name"] == "INCR")
        assert ports == sorted(cluster.owner_of(k) for k in keys)
        assert len(set(ports)) > 1
    finally:
        col.stop()


def test_metrics_give_each_nodes_state(make_ferryd, cluster):
    """ferry.backend.node.up: a point per node, by address and role, 1 for
    the primaries ferryd is connected to."""
    from otlp_collector import Collector
    col = Collector().start()
    try:
        env = {"OTEL_EXPORTER_OTLP_ENDPOINT": col.endpoint, "OTEL_TRACES_EXPORTER": "none",
               "OTEL_METRICS_EXPORTER": "otlp", "OTEL_METRIC_EXPORT_INTERVAL": "200"}
        f = make_ferryd(["--set", "redis_cluster=" + cluster.seeds], env=env,
                        redis_url="redis://127.0.0.1:%d/0" % cluster.nodes[0].port, name="metrics.sock")
        with f.client() as c:
            for i in range(12):
                c.redis("SET", "m:%d" % i, "v")

        def primaries_up():
            m = col.metrics().get("ferry.backend.node.up")
            if not m:
                return None
            up = {a["server.address"] for a, v in m["points"] if a["role"] == "primary" and v == 1}
            return up if len(up) == 3 else None
        wait_until(primaries_up, timeout=15, what="three primaries up in the metrics")
        up = primaries_up()
        owners = {"127.0.0.1:%d" % cluster.owner_of("m:%d" % i) for i in range(12)}
        assert owners <= up
    finally:
        col.stop()


def _node_id(node):
    return node.cli("CLUSTER", "MYID")


def _migrate_slot(cluster, slot, src, dst, pause):
    """Moves slot from src to dst the way redis-cli --cluster reshard does,
    pausing between batches so that traffic meets every stage."""
    sid, did = _node_id(src), _node_id(dst)
    assert dst.cli("CLUSTER", "SETSLOT", slot, "IMPORTING", sid) == "OK"
    assert src.cli("CLUSTER", "SETSLOT", slot, "MIGRATING", did) == "OK"
    time.sleep(pause)
    while True:
        keys = src.cli("CLUSTER", "GETKEYSINSLOT", slot, 5).split()
        if not keys:
            break
        out = src.cli("MIGRATE", "127.0.0.1", dst.port, "", 0, 5000, "KEYS", *keys)
        assert out in ("OK", "NOKEY"), out
        time.sleep(pause)
    # The new owner first, then the old one, then the rest: as redis-cli does.
    for n in [dst, src] + [n for n in cluster.nodes if n not in (dst, src)]:
        if n.alive() and n.cli("ROLE").split("\n")[0] == "master":
            assert n.cli("CLUSTER", "SETSLOT", slot, "NODE", did) == "OK"


def test_moved_and_ask_during_live_reshard(cf, cluster):
    tag = "{reshard}"
    slot = cluster.keyslot(tag)
    keys = [tag + ":%d" % i for i in range(30)]
    errors, wrong, done = [], [], []
    stop = threading.Event()

    def load():
        rounds = 0
        with cf.client() as c:
            while not stop.is_set() or rounds < 3:
                ids = {}
                for k in keys:
                    val = "%s=%d" % (k, rounds)
                    ids[c.send("redis", [b"SET", k.encode(), val.encode()], deadline=5000)] = ("set", k, val)
                    ids[c.send("redis", [b"GET", k.encode()], deadline=5000)] = ("get", k, val)
                for _ in range(len(ids)):
                    fr = c.recv()
                    kind, k, val = ids[fr["id"]]
                    if "error" in fr:
                        errors.append((kind, k, fr["error"]))
                    elif kind == "set" and fr["result"] != "OK":
                        wrong.append((kind, k, fr["result"]))
                    elif kind == "get" and fr["result"] != val.encode():
                        wrong.append((kind, k, fr["result"], val))
                rounds += 1
        done.append(rounds)

    incr_bad, incr_done = [], []

    def incr():
        """A window of 32 INCRs always in flight on one key: the nth sent
        must read n, so a command lost, run twice or run out of order
        shows."""
        ctr = (tag + ":ctr").encode()
        with cf.client() as c:
            base = c.redis("GET", ctr)
            base = int(base) if base else 0
            sent, seen, want = 0, 0, {}
            while not stop.is_set() or seen < sent:
                while sent - seen < 32 and not stop.is_set():
                    sent += 1
                    want[c.send("redis", [b"INCR", ctr], deadline=5000)] = base + sent
                fr = c.recv()
                seen += 1
                exp = want.pop(fr["id"])
                if fr.get("result") != exp:
                    incr_bad.append((exp, fr))
            incr_done.append(sent)

    t = threading.Thread(target=load)
    t2 = threading.Thread(target=incr)
    t.start()
    t2.start()
    try:
        time.sleep(0.3)
        src = cluster.node(cluster.owner_of(tag))
        dst = cluster.node(next(p for p in cluster.primaries_now() if p != src.port))
        _migrate_slot(cluster, slot, src, dst, 0.05)
        time.sleep(0.3)
        _migrate_slot(cluster, slot, dst, src, 0.05)  # and back
        time.sleep(0.3)
    finally:
        stop.set()
        t.join(60)
        t2.join(60)
    assert not t.is_alive() and not t2.is_alive()
    assert incr_done and incr_done[0] > 0
    assert incr_bad == []
    assert done and done[0] >= 3
    assert errors == []
    assert wrong == []
    st = cstats(cf)
    assert st["moved"] + st["ask"] > 0, st
    # Every key ended where the cluster says, with its last value.
    last = done[0] - 1
    owner = cluster.node(cluster.owner_of(tag))
    for k in keys:
        assert owner.cli("GET", k) == "%s=%d" % (k, last)
    print("\nreshard: %d pipelined rounds of %d commands and %d INCRs 32 in flight; moved %d, ask %d, "
          "tryagain %d; 0 errors" % (done[0], 2 * len(keys), incr_done[0], st["moved"], st["ask"], st["tryagain"]))


def test_tryagain_is_waited_out(cf, cluster):
    """A multi-key command whose keys are half migrated gets TRYAGAIN from
    Redis: ferryd sends it again until the migration ends, within the
    deadline."""
    tag = "{try}"
    slot = cluster.keyslot(tag)
    src = cluster.node(cluster.owner_of(tag))
    dst = cluster.node(next(p for p in cluster.primaries_now() if p != src.port))
    a, b = tag + "a", tag + "b"
    with cf.client() as c:
        assert c.redis("MSET", a, "1", b, "2") == "OK"
        sid, did = _node_id(src), _node_id(dst)
        assert dst.cli("CLUSTER", "SETSLOT", slot, "IMPORTING", sid) == "OK"
        assert src.cli("CLUSTER", "SETSLOT", slot, "MIGRATING", did) == "OK"
        assert src.cli("MIGRATE", "127.0.0.1", dst.port, "", 0, 5000, "KEYS", a) == "OK"
        rid = c.send("redis", [b"MGET", a.encode(), b.encode()], deadline=10000)
        wait_until(lambda: cstats(cf)["tryagain"] > 0, timeout=5, what="TRYAGAIN")
        # Sent once the MGET waits to be retried: held behind it. (A command
        # pipelined before its TRYAGAIN came back would run first: Redis
        # ran it already.)
        wid = c.send("redis", [b"SET", b.encode(), b"3"], deadline=10000)
        time.sleep(0.3)
        assert src.cli("MIGRATE", "127.0.0.1", dst.port, "", 0, 5000, "KEYS", b) == "OK"
        for n in [dst, src] + [n for n in cluster.nodes if n not in (dst, src)]:
            if n.alive() and n.cli("ROLE").split("\n")[0] == "master":
                n.cli("CLUSTER", "SETSLOT", slot, "NODE", did)
        assert c.wait(rid) == [b"1", b"2"]   # not the SET sent after it
        assert c.wait(wid) == "OK"
        assert c.redis("GET", b) == b"3"
    assert dst.cli("GET", b) == "3"
    assert cstats(cf)["tryagain"] > 0


def test_failover_of_a_primary(cf, cluster):
    """kill -9 a primary: its replica is promoted; ferryd serves its slots
    from the new primary with no restart. The time writes failed is
    printed (no assertion on it)."""
    key = "failover:key"
    victim = cluster.node(cluster.owner_of(key))
    other = next(k for k in ("failover:%d" % i for i in range(100)) if cluster.owner_of(k) != victim.port)
    other_failed = []
    with cf.client() as c:
        assert c.redis("SET", key, "before") == "OK"
        victim.kill()
        t0 = time.monotonic()
        first_ok, failures, i = None, 0, 0
        while time.monotonic() - t0 < 40:
            i += 1
            try:
                # A slot of a live primary, meanwhile (CLUSTERDOWN while the
                # cluster is in the fail state, waited out up to the deadline).
                c.redis("SET", other, "x", deadline=1000)
            except ferry.FerryError as e:
                other_failed.append(e.code)
            try:
                assert c.redis("SET", key, "after%d" % i, deadline=1000) == "OK"
                first_ok = time.monotonic()
                break
            except ferry.FerryError as e:
                assert e.code in ("unavailable", "timeout", "backend_error"), e
                failures += 1
                time.sleep(0.05)
        assert first_ok is not None, "writes never came back"
        assert c.redis("GET", key) == b"after%d" % i
        for j in range(50):  # every slot is served again
            assert c.redis("SET", "failover:%d" % j, "x") == "OK"
    wait_until(lambda: all(n["state"] == "ready" for n in cstats(cf)["nodes"] if n["role"] == "primary"
                           and n["slots"]), timeout=10, what="the map to name the new primary")
    st = cstats(cf)
    assert victim.port not in [int(n["address"].rsplit(":", 1)[1]) for n in st["nodes"]
                               if n["role"] == "primary" and n["slots"]]
    print("\nfailover: writes to the dead primary's slots failed for %.2f s (%d attempts failed); "
          "writes to another primary's slot meanwhile: %d of %d failed %s"
          % (first_ok - t0, failures, len(other_failed), i, sorted(set(other_failed))))
    # Bring the old primary back: it rejoins as a replica.
    victim.start()
    cluster.wait_ok()


def test_a_seed_that_is_not_a_cluster(make_ferryd, redis):
    """A plain redis-server named as a seed: no map, so requests get
    unavailable, health says why, and ferryd stays up."""
    f = make_ferryd(["--set", "redis_cluster=127.0.0.1:%d" % redis.port],
                    redis_url="redis://127.0.0.1:%d/0" % redis.port, wait_redis=False, name="plain.sock")
    wait_until(lambda: "cannot give the slot map" in f.read_log(), timeout=10, what="the map refused")
    with f.client() as c:
        with pytest.raises(ferry.FerryError) as e:
            c.redis("GET", "k")
        assert e.value.code == "unavailable"
        h = c.health()
        assert h["backends"]["redis"] != "up" and "slot map" in h["errors"]["redis"]
    assert f.stats()["backends"]["redis"]["cluster"]["map_version"] == 0
