"""Redis pub/sub through ferryd (pubsub.* ops): one subscriber connection
for every client, reference-counted channels, bounded buffers for slow
subscribers, and subscriptions restored after a Redis restart. Real
redis-server, real ferryd."""

import os
import subprocess
import threading
import time

import pytest

import ferry
from conftest import SANITIZED, FERRY_CLI, SLOW, cli, wait_until


def numsub(redis, ch):
    out = redis.cli("PUBSUB", "NUMSUB", ch).split("\n")
    return int(out[1])


def numpat(redis):
    return int(redis.cli("PUBSUB", "NUMPAT"))


def pubsub_stats(f):
    return f.stats()["backends"]["redis"]["pubsub"]


def vm_rss_kb(pid):
    with open("/proc/%d/status" % pid) as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise AssertionError("no VmRSS")


def test_fan_out_to_several_clients(ferryd, redis):
    clients = [ferryd.client() for _ in range(3)]
    try:
        subs = [c.pubsub.subscribe("news", "sport") for c in clients]
        # One ferryd connection reaches all three.
        assert numsub(redis, "news") == 1
        with ferryd.client() as p:
            assert p.pubsub.publish("news", b"\x00binary\xff") == 1
            assert p.pubsub.publish("sport", "goal") == 1
            assert p.pubsub.publish("weather", "rain") == 0
        for c, sub in zip(clients, subs):
            m1, m2 = c.next_push(timeout=5), c.next_push(timeout=5)
            assert m1 == {"sub": sub, "kind": "message",
                          "data": {"channel": "news", "pattern": None, "payload": b"\x00binary\xff"}}
            assert m2["data"]["channel"] == "sport" and m2["data"]["payload"] == b"goal"
            # Publishing through the redis op reaches them too.
        assert clients[0].redis("PUBLISH", "news", "via redis op") == 1
        for c in clients:
            assert c.next_push(timeout=5)["data"]["payload"] == b"via redis op"
        st = pubsub_stats(ferryd)
        assert st["channels"] == 2 and st["subscriptions"] == 3
        assert st["delivered"] == 9
    finally:
        for c in clients:
            c.close()


def test_patterns(ferryd, redis):
    with ferryd.client() as a, ferryd.client() as b:
        sp = a.pubsub.subscribe("orders.*", pattern=True)
        sc = b.pubsub.subscribe("orders.eu")
        assert numpat(redis) == 1
        assert a.pubsub.publish("orders.eu", "x") == 2  # the channel and the pattern
        m = a.next_push(timeout=5)
        assert m["sub"] == sp and m["data"] == {"channel": "orders.eu", "pattern": "orders.*", "payload": b"x"}
        m = b.next_push(timeout=5)
        assert m["sub"] == sc and m["data"]["pattern"] is None
        a.pubsub.publish("orders.us", "y")
        assert a.next_push(timeout=5)["data"]["channel"] == "orders.us"
        b.pubsub.publish("other", "z")
        b.ping()
        assert b.pushes == []


def test_fifty_clients_one_subscribe(ferryd, redis):
    clients = [ferryd.client() for _ in range(50)]
    try:
        subs = [c.pubsub.subscribe("hot") for c in clients]
        assert numsub(redis, "hot") == 1
        assert pubsub_stats(ferryd)["subscriptions"] == 50
        with ferryd.client() as p:
            assert p.pubsub.publish("hot", "m") == 1
        for c, sub in zip(clients, subs):
            assert c.next_push(timeout=5) == {"sub": sub, "kind": "message",
                                              "data": {"channel": "hot", "pattern": None, "payload": b"m"}}
        # Half of them leave: still one subscription on Redis.
        for c in clients[:25]:
            c.close()
        wait_until(lambda: pubsub_stats(ferryd)["subscriptions"] == 25, what="25 subscriptions")
        assert numsub(redis, "hot") == 1
    finally:
        for c in clients:
            c.close()
    wait_until(lambda: numsub(redis, "hot") == 0, what="hot unsubscribed")
    assert pubsub_stats(ferryd)["channels"] == 0


def test_unsubscribe_and_close_drop_refcounts(ferryd, redis):
    a, b = ferryd.client(), ferryd.client()
    sa = a.pubsub.subscribe("c1", "c2")
    sb = b.pubsub.subscribe("c2")
    a2 = a.pubsub.subscribe("c1")  # the same client twice on c1: two subscriptions
    assert numsub(redis, "c1") == 1 and numsub(redis, "c2") == 1
    a.pubsub.publish("c1", "one")
    got = sorted(a.next_push(timeout=5)["sub"] for _ in range(2))
    assert got == sorted([sa, a2])
    assert a.pubsub.unsubscribe(sa) == {}
    assert numsub(redis, "c1") == 1  # a2 holds it
    assert numsub(redis, "c2") == 1  # b holds it
    a.pubsub.unsubscribe(a2)
    wait_until(lambda: numsub(redis, "c1") == 0, what="c1 unsubscribed when its last subscription ended")
    # No push after the unsubscribe's result.
    a.pubsub.publish("c1", "after")
    a.ping()
    assert a.pushes == []
    with pytest.raises(ferry.FerryError) as e:
        a.pubsub.unsubscribe(sa)
    assert e.value.code == "bad_request"
    # b's subscription is b's: a cannot end it.
    with pytest.raises(ferry.FerryError) as e:
        a.pubsub.unsubscribe(sb)
    assert e.value.code == "bad_request"
    b.close()
    wait_until(lambda: numsub(redis, "c2") == 0, what="c2 unsubscribed when its last client closed")
    st = pubsub_stats(ferryd)
    assert st["channels"] == 0 and st["subscriptions"] == 0
    a.close()


def test_slow_subscriber_is_bounded_and_others_get_everything(make_ferryd, redis):
    f = make_ferryd(["--set", "redis_pubsub_buffer=4194304"])
    size, count = 64 * 1024, 3200  # 200 MiB
    slow = f.client()
    slow_sub = slow.pubsub.subscribe("firehose")
    fast_counts, errors = [0, 0], []
    ready = threading.Barrier(3)

    def reader(i):
        try:
            with f.client() as c:
                sub = c.pubsub.subscribe("firehose")
                ready.wait()
                while fast_counts[i] < count:
                    p = c.next_push(timeout=60 * SLOW)
                    assert p["sub"] == sub and p["kind"] == "message", p["kind"]
                    assert p["data"]["payload"][:8] == b"%08d" % fast_counts[i]
                    fast_counts[i] += 1
        except Exception as e:  # reported by the main thread
            errors.append(repr(e))
            try:
                ready.abort()
            except Exception:
                pass

    threads = [threading.Thread(target=reader, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    ready.wait()
    rss0 = vm_rss_kb(f.proc.pid)
    pad = b"x" * (size - 8)
    with f.client() as p:
        for i in range(count):
            # The fast readers are Python threads: the publisher waits for
            # them to be within 16 messages (1 MiB, a quarter of their
            # bound), so only the slow client can be over it.
            while min(fast_counts) < i - 16 and not errors:
                time.sleep(0.0005)
            assert p.pubsub.publish("firehose", b"%08d" % i + pad) == 1
    for t in threads:
        t.join(120 * SLOW)
    assert not errors, errors
    assert fast_counts == [count, count]
    rss1 = vm_rss_kb(f.proc.pid)
    # 200 MiB went through; the slow client holds at most its 4 MiB.
    # (Under ASan, freed memory waits in its quarantine, so RSS says
    # nothing there; the counts below still hold.)
    if not SANITIZED:
        assert rss1 - rss0 < 40 * 1024, (rss0, rss1)
    st = pubsub_stats(f)
    print("VmRSS %d kB -> %d kB; dropped %d" % (rss0, rss1, st["dropped"]))
    assert st["dropped"] > 0
    assert st["disconnected"] == 0
    # The slow client now reads: what was kept, then, before the next
    # message, how many it lost.
    got = 0
    slow.sock.settimeout(5)
    while True:
        try:
            m = slow.next_push(timeout=2)
        except OSError:  # socket.timeout: drained
            break
        assert m["kind"] == "message" and m["sub"] == slow_sub
        got += 1
    assert 0 < got < count
    with f.client() as p:
        p.pubsub.publish("firehose", b"last")
    d = slow.next_push(timeout=5)
    assert d["kind"] == "dropped" and d["sub"] == slow_sub
    assert got + d["data"]["count"] == count
    m = slow.next_push(timeout=5)
    assert m["kind"] == "message" and m["data"]["payload"] == b"last"
    assert pubsub_stats(f)["dropped"] == d["data"]["count"]
    slow.close()


def test_disconnect_mode(make_ferryd, redis):
    f = make_ferryd(["--set", "redis_pubsub_buffer=65536", "--set", "redis_pubsub_overflow=disconnect"])
    slow = f.client()
    slow.pubsub.subscribe("burst")
    with f.client() as fast, f.client() as p:
        sub = fast.pubsub.subscribe("burst")
        for i in range(200):
            p.pubsub.publish("burst", b"%04d" % i + b"y" * 16 * 1024)
            m = fast.next_push(timeout=5)
            assert m["sub"] == sub and m["data"]["payload"][:4] == b"%04d" % i
        wait_until(lambda: pubsub_stats(f)["disconnected"] == 1, what="slow subscriber disconnected")
        assert pubsub_stats(f)["subscriptions"] == 1
    # Its socket ends once what was written is read.
    with pytest.raises((ferry.ConnectionClosed, OSError)):
        while True:
            slow.next_push(timeout=5)
    slow.close()
    assert "not reading its pub/sub messages" in f.read_log()


def test_redis_restart_restores_subscriptions(ferryd, redis):
    with ferryd.client() as a, ferryd.client() as p:
        sc = a.pubsub.subscribe("r1", "r2")
        sp = a.pubsub.subscribe("rp.*", pattern=True)
        redis.stop()
        redis.start()
        wait_until(lambda: numsub(redis, "r1") == 1 and numsub(redis, "r2") == 1 and numpat(redis) == 1,
                   timeout=30 * SLOW, what="subscriptions restored on the new redis")
        gaps = {a.next_push(timeout=10)["sub"]: None for _ in range(2)}
        assert set(gaps) == {sc, sp}
        assert a.pushes == [] or all(x["kind"] == "gap" for x in a.pushes)
        wait_until(lambda: ferryd.redis_state() == "up", what="pool up")
        assert p.pubsub.publish("r2", "back") == 1
        m = a.next_push(timeout=5)
        assert m["sub"] == sc and m["kind"] == "message" and m["data"]["payload"] == b"back"
        p.pubsub.publish("rp.x", "pat")
        m = a.next_push(timeout=5)
        assert m["sub"] == sp and m["data"]["pattern"] == "rp.*"
        st = pubsub_stats(ferryd)
        assert st["gaps"] == 2 and st["resubscribes"] == 1


def test_gap_push_kind(ferryd, redis):
    with ferryd.client() as a:
        sub = a.pubsub.subscribe("g")
        redis.kill()
        redis.start()
        m = a.next_push(timeout=30 * SLOW)
        assert m["sub"] == sub and m["kind"] == "gap" and "missed" in m["data"]["reason"]


@pytest.mark.parametrize("op,args,word", [
    ("pubsub.subscribe", None, "channels"),
    ("pubsub.subscribe", {}, "channels"),
    ("pubsub.subscribe", {"channels": "a"}, "channels"),
    ("pubsub.subscribe", {"channels": []}, "channels"),
    ("pubsub.subscribe", {"channels": [1]}, "channels"),
    ("pubsub.subscribe", {"channels": ["a"], "pattern": True}, "pattern"),
    ("pubsub.psubscribe", {"channels": ["a"]}, "channels"),
    ("pubsub.subscribe", {"channels": ["c"] * 1025}, "1024"),
    ("pubsub.unsubscribe", {"sub": "1"}, "sub"),
    ("pubsub.unsubscribe", {"sub": 424242}, "no such subscription"),
    ("pubsub.publish", {"channel": "a"}, "message"),
    ("pubsub.publish", {"channel": 5, "message": "m"}, "channel"),
])
def test_bad_args(ferryd, op, args, word):
    with ferryd.client() as c:
        with pytest.raises(ferry.FerryError) as e:
            c.call(op, args)
        assert e.value.code == "bad_request"
        assert word in e.value.message
        assert c.ping() == "PONG"
    assert pubsub_stats(ferryd)["subscriptions"] == 0


def test_sub_id_in_use_and_duplicates(ferryd, redis):
    with ferryd.client() as c:
        c.call("pubsub.subscribe", {"channels": ["d", "d", "e"]}, id=77)
        with pytest.raises(ferry.FerryError) as e:
            c.call("pubsub.subscribe", {"channels": ["f"]}, id=77)
        assert e.value.code == "bad_request" and "77" in e.value.message
        assert numsub(redis, "f") == 0
        c.pubsub.publish("d", "once")
        m = c.next_push(timeout=5)
        assert m["sub"] == 77
        c.ping()
        assert c.pushes == []  # "d" named twice is still one subscription on it


def test_policy_refuses_pubsub(make_ferryd, tmp, redis):
    path = os.path.join(tmp, "policy.ini")
    with open(path, "w") as fh:
        fh.write("[root]\npeers = uid:0\nops = *\nredis_commands = +@all -subscribe -psubscribe\n"
                 "redis_keys = app:*\n")
    f = make_ferryd(["--set", "policy_file=" + path])
    wait_until(lambda: "commands in" in f.read_log(), timeout=15 * SLOW, what="the command table")
    with f.client() as c:
        for op, args in (("pubsub.subscribe", {"channels": ["app:x"]}),
                         ("pubsub.psubscribe", {"patterns": ["app:*"]})):
            with pytest.raises(ferry.FerryError) as e:
                c.call(op, args)
            assert e.value.code == "denied"
        assert c.pubsub.publish("app:x", "m") == 0
        # Channels are held to redis_keys, as keys are.
        with pytest.raises(ferry.FerryError) as e:
            c.pubsub.publish("other", "m")
        assert e.value.code == "denied" and "channel 'other'" in e.value.message
    assert numsub(redis, "app:x") == 0


def test_policy_holds_channels_to_redis_keys(make_ferryd, tmp, redis):
    path = os.path.join(tmp, "policy.ini")
    with open(path, "w") as fh:
        fh.write("[root]\npeers = uid:0\nops = *\nredis_commands = +@all\nredis_keys = app:*\n")
    f = make_ferryd(["--set", "policy_file=" + path])
    wait_until(lambda: "commands in" in f.read_log(), timeout=15 * SLOW, what="the command table")
    with f.client() as c:
        for op, args in (("pubsub.subscribe", {"channels": ["app:1", "secret"]}),
                         ("pubsub.psubscribe", {"patterns": ["*"]})):
            with pytest.raises(ferry.FerryError) as e:
                c.call(op, args)
            assert e.value.code == "denied", op
        assert numsub(redis, "app:1") == 0
        sub = c.pubsub.subscribe("app:*", pattern=True)
        c.pubsub.publish("app:2", "ok")
        assert c.next_push(timeout=5)["sub"] == sub
        # The redis op's PUBLISH is held to the same rule: Redis names no
        # key in it, ferryd checks the channel.
        with pytest.raises(ferry.FerryError) as e:
            c.redis("PUBLISH", "secret", "x")
        assert e.value.code == "denied" and "channel 'secret'" in e.value.message
        assert c.redis("PUBLISH", "app:3", "ok") == 1
        assert c.next_push(timeout=5)["data"]["channel"] == "app:3"


def test_deadline_while_redis_is_frozen(ferryd, redis):
    with ferryd.client() as c:
        c.pubsub.subscribe("warm")  # the subscriber connection is up
        redis.freeze()
        try:
            with pytest.raises(ferry.FerryError) as e:
                c.call("pubsub.subscribe", {"channels": ["frozen"]}, deadline=300)
            assert e.value.code == "timeout"
            assert pubsub_stats(ferryd)["subscriptions"] == 1
        finally:
            redis.thaw()
        wait_until(lambda: pubsub_stats(ferryd)["channels"] == 1, what="the timed-out channel forgotten")
        wait_until(lambda: numsub(redis, "frozen") == 0, what="frozen unsubscribed on redis")
        assert c.pubsub.publish("warm", "still") == 1
        assert c.next_push(timeout=5)["data"]["payload"] == b"still"


def test_cli_subscribe(ferryd, redis):
    proc = subprocess.Popen([FERRY_CLI, "--socket", ferryd.sock, "--timeout", "20000", "subscribe", "-v",
                             "cli.a", "cli.b", "--count", "2"], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        wait_until(lambda: numsub(redis, "cli.b") == 1, what="the CLI subscribed")
        with ferryd.client() as p:
            p.pubsub.publish("cli.a", "first")
            p.pubsub.publish("cli.b", "second")
            p.pubsub.publish("cli.b", "third")
        out, err = proc.communicate(timeout=20)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, err
    # -v: a "channel: ..." line before each payload, as consume -v does.
    assert out.decode().splitlines() == ["channel: cli.a", "first", "channel: cli.b", "second"]


def test_cli_subscribe_pattern_and_timeout(ferryd, redis):
    proc = subprocess.Popen([FERRY_CLI, "--socket", ferryd.sock, "--timeout", "20000", "subscribe",
                             "--pattern", "cp.*", "--count", "1"], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        wait_until(lambda: numpat(redis) == 1, what="the CLI subscribed")
        with ferryd.client() as p:
            p.pubsub.publish("cp.z", "pat")
        out, err = proc.communicate(timeout=20)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, err
    assert out == b"pat\n"
    r = cli(ferryd, "subscribe", "silent", timeout=300)
    assert r.returncode == 3, r
    r = cli(ferryd, "subscribe")
    assert r.returncode == 64, r


def test_client_leaves_while_its_subscribe_waits(ferryd, redis):
    with ferryd.client() as c:
        c.pubsub.subscribe("warm")
    redis.freeze()
    try:
        c = ferryd.client()
        c.send("pubsub.subscribe", {"channels": ["left"]})
        wait_until(lambda: pubsub_stats(ferryd)["subscriptions"] == 1, what="the subscribe held")
        c.close()
        wait_until(lambda: pubsub_stats(ferryd)["subscriptions"] == 0, what="the subscription gone with its client")
    finally:
        redis.thaw()
    wait_until(lambda: pubsub_stats(ferryd)["channels"] == 0, what="every name forgotten")
    assert numsub(redis, "left") == 0 and numsub(redis, "warm") == 0


def test_subscribe_while_redis_is_down(ferryd, redis):
    with ferryd.client() as c:
        sub = c.pubsub.subscribe("before")
        redis.kill()
        wait_until(lambda: pubsub_stats(ferryd)["state"] != "ready", what="the subscriber connection lost")
        with pytest.raises(ferry.FerryError) as e:
            c.pubsub.subscribe("during")
        assert e.value.code == "unavailable"
        redis.start()
        m = c.next_push(timeout=30 * SLOW)
        assert m["sub"] == sub and m["kind"] == "gap"
        assert numsub(redis, "before") == 1 and numsub(redis, "during") == 0


def test_many_channels_across_a_restart(ferryd, redis):
    names = ["many.%d" % i for i in range(1024)]
    with ferryd.client() as a, ferryd.client() as p:
        sub = a.pubsub.subscribe(*names)
        assert int(redis.cli("PUBSUB", "NUMSUB", *names[::97]).split("\n")[1]) == 1
        assert len(redis.cli("PUBSUB", "CHANNELS", "many.*").split("\n")) == 1024
        redis.stop()
        redis.start()
        m = a.next_push(timeout=30 * SLOW)
        assert m["sub"] == sub and m["kind"] == "gap"
        assert len(redis.cli("PUBSUB", "CHANNELS", "many.*").split("\n")) == 1024
        wait_until(lambda: ferryd.redis_state() == "up", what="pool up")
        assert p.pubsub.publish("many.1023", "end") == 1
        assert a.next_push(timeout=5)["data"]["channel"] == "many.1023"
        a.pubsub.unsubscribe(sub)
        wait_until(lambda: redis.cli("PUBSUB", "CHANNELS", "many.*") == "", what="all 1024 unsubscribed")
