"""A three-node RabbitMQ cluster (tests/rabbit_cluster.py) with every node
in amqp_url: the node ferryd is connected to dies (kill -9) and ferryd
carries on with another. On a quorum queue no message a client saw
confirmed is lost; a consumer resumes on the new node; a classic queue
lives on one node and is out of reach while that node is down.

The cluster starts once for the module; a test that kills a node starts it
again (heal) before the next one runs. The figures printed (pytest -s) are
those quoted in docs/scale-out.md."""

import threading
import time
import uuid

import pytest

import ferry
from conftest import amqp_state, wait_until
from rabbit_cluster import Cluster

QUORUM = {"x-queue-type": "quorum"}


def uid(prefix):
    return "%s.%s" % (prefix, uuid.uuid4().hex[:8])


@pytest.fixture(scope="module")
def cluster():
    c = Cluster().start()
    yield c
    c.stop()


@pytest.fixture
def healthy(cluster):
    """The cluster with all three nodes running, before and after the test."""
    cluster.heal()
    yield cluster
    cluster.heal()


def node_of(f, cluster):
    """The node ferryd is connected to, from stats' url."""
    return node_of_url(f.stats()["backends"]["amqp"]["url"], cluster)


def node_of_url(url, cluster):
    for n in cluster.nodes:
        if url.endswith(":%d/" % n.port):
            return n
    raise AssertionError("no node has the url " + url)


def start_ferryd(make_ferryd, urls, name="ferry.sock"):
    f = make_ferryd(["--amqp", urls], name=name)
    wait_until(lambda: amqp_state(f) == "up", timeout=30, what="amqp up")
    return f


def moved(f, cluster, dead):
    """Whether ferryd is up again, on another node than dead."""
    st = f.stats()["backends"]["amqp"]
    return st["state"] == "up" and st["connects"] >= 2 and node_of_url(st["url"], cluster) is not dead


def drain(f, q, arguments=None):
    """Every message of q, read with basic.get through ferryd f."""
    seen = []
    with f.client() as c:
        n = c.amqp.declare_queue(q, durable=True, arguments=arguments)["message_count"]
        for _ in range(n):
            seen.append(c.amqp.get(q)["body"])
    # Not deleted: deleting a quorum queue waits for every member, and one
    # is down (the cluster goes at the end of the module anyway).
    return seen


def test_first_url_first_and_then_the_next(healthy, make_ferryd):
    a, b, c = healthy.nodes
    f = start_ferryd(make_ferryd, healthy.urls())
    assert node_of(f, healthy) is a
    a.kill()
    wait_until(lambda: moved(f, healthy, a), timeout=30, what="ferryd on another node")
    # The URL after the dead one, not the dead one first and not a random one.
    assert node_of(f, healthy) is b
    st = f.stats()["backends"]["amqp"]
    assert st["drops"] == 1 and st["connects"] == 2


def test_quorum_queue_keeps_every_confirmed_message(healthy, make_ferryd):
    f = start_ferryd(make_ferryd, healthy.urls())
    first = node_of(f, healthy)
    q = uid("quorum")
    with f.client() as c:
        # Declared through the first node, which therefore leads the queue:
        # the kill below takes the leader down, the worst case.
        c.amqp.declare_queue(q, durable=True, arguments=QUORUM)

    acked, outcomes, stop = [], {}, threading.Event()
    slowest = [0.0]
    lock = threading.Lock()

    def publisher(n):
        with f.client() as c:
            i = 0
            while not stop.is_set():
                body = b"p%d-%06d" % (n, i)
                t = time.monotonic()
                try:
                    c.amqp.publish("", q, body, persistent=True, deadline=15000)
                    acked.append(body)
                    code = "ok"
                except ferry.FerryError as e:
                    code = e.code
                with lock:
                    slowest[0] = max(slowest[0], time.monotonic() - t)
                    outcomes[code] = outcomes.get(code, 0) + 1
                i += 1

    # Three clients publishing at once: messages from several are in
    # flight when the node dies.
    threads = [threading.Thread(target=publisher, args=(n,)) for n in range(3)]
    for t in threads:
        t.start()
    try:
        wait_until(lambda: len(acked) >= 150, timeout=30, what="publishes to flow")
        first.kill()
        killed_at = time.monotonic()
        wait_until(lambda: moved(f, healthy, first), timeout=60, what="ferryd on another node")
        moved_after = time.monotonic() - killed_at
        before = len(acked)
        wait_until(lambda: len(acked) >= before + 150, timeout=60, what="publishes to flow again")
        flowing_after = time.monotonic() - killed_at
    finally:
        stop.set()
        for t in threads:
            t.join(60)

    assert set(outcomes) <= {"ok", "unavailable", "unconfirmed"}, outcomes
    st = f.stats()["backends"]["amqp"]
    assert st["drops"] >= 1 and st["connects"] >= 2

    # Read back through a node that did not die, with a ferryd of its own.
    other = next(n for n in healthy.nodes if n is not first and n.alive)
    reader = start_ferryd(make_ferryd, other.url, name="reader.sock")
    seen = drain(reader, q, QUORUM)
    missing = set(acked) - set(seen)
    assert not missing, "lost %d confirmed messages, e.g. %r" % (len(missing), sorted(missing)[:3])
    dups = len(seen) - len(set(seen))
    print("\nquorum: %d confirmed, %d in the queue, %d duplicates, %d republished, outcomes %s, "
          "on the next node %.2f s after the kill, slowest publish %.2f s, flowing again %.2f s after it" %
          (len(acked), len(seen), dups, st["republished"], outcomes, moved_after, slowest[0], flowing_after))


def test_consumer_resumes_on_another_node(healthy, make_ferryd):
    f = start_ferryd(make_ferryd, healthy.urls())
    first = node_of(f, healthy)
    q = uid("qconsume")
    with f.client() as c:
        c.amqp.declare_queue(q, durable=True, arguments=QUORUM)
    consumer = f.client()
    sub = consumer.amqp.consume(q, prefetch=10)
    with f.client() as c:
        c.amqp.publish("", q, b"before", persistent=True)
    p = consumer.next_push(timeout=20)
    assert p["sub"] == sub and p["data"]["body"] == b"before"
    consumer.amqp.ack(sub, p["data"]["delivery_tag"])

    first.kill()
    wait_until(lambda: moved(f, healthy, first), timeout=60, what="ferryd on another node")
    want = {b"after-%d" % i for i in range(5)}
    with f.client() as c:
        for body in sorted(want):
            assert c.amqp.publish("", q, body, persistent=True, deadline=15000) == {"confirmed": True}
    got = set()
    while got != want:
        p = consumer.next_push(timeout=30)
        assert p["sub"] == sub and p["kind"] == "delivery", p
        body = p["data"]["body"]
        consumer.amqp.ack(sub, p["data"]["delivery_tag"])
        if body == b"before":
            # Acked just before the kill: the ack may have died with the
            # leader, and then the message comes again, marked so.
            assert p["data"]["redelivered"]
            continue
        assert body in want, body
        got.add(body)
    consumer.amqp.cancel(sub)
    consumer.close()


def test_classic_queue_is_out_of_reach_while_its_node_is_down(healthy, make_ferryd):
    f = start_ferryd(make_ferryd, healthy.urls())
    home = node_of(f, healthy)
    q = uid("classic")
    kept = [b"kept-%d" % i for i in range(5)]
    with f.client() as c:
        c.amqp.declare_queue(q, durable=True)  # a classic queue: it lives on home only
        for body in kept:
            assert c.amqp.publish("", q, body, persistent=True) == {"confirmed": True}
    watcher = f.client()
    wsub = watcher.amqp.consume(q, prefetch=1)
    first = watcher.next_push(timeout=20)["data"]
    assert first["body"] == kept[0]   # left unacked: it goes back to the queue
    home.kill()
    wait_until(lambda: moved(f, healthy, home), timeout=60, what="ferryd on another node")
    # ferryd cannot resubscribe on the new node: the subscription ends.
    p = watcher.next_push(timeout=30)
    assert p["sub"] == wsub and p["kind"] == "cancelled", p
    assert "down or inaccessible" in p["data"]["reason"]
    watcher.close()
    with f.client() as c:
        # Confirmed, and dropped: the broker routes to a queue that is down.
        assert c.amqp.publish("", q, b"lost", persistent=True, deadline=10000) == {"confirmed": True}
        # With mandatory the client learns it.
        with pytest.raises(ferry.FerryError) as e:
            c.amqp.publish("", q, b"lost", persistent=True, mandatory=True, deadline=10000)
        assert e.value.code == "unroutable" and "NO_ROUTE" in e.value.message
        for call in (lambda: c.amqp.declare_queue(q, durable=True, deadline=10000),
                     lambda: c.amqp.get(q, deadline=10000)):
            with pytest.raises(ferry.FerryError) as e:
                call()
            assert e.value.code == "backend_error"
            assert "404" in e.value.message and "is down or inaccessible" in e.value.message

    home.restart()
    healthy.await_members(3)
    # Back with its node: the persistent messages from before, not the one
    # published meanwhile.
    with f.client() as c:
        assert c.amqp.declare_queue(q, durable=True, deadline=10000)["message_count"] == len(kept)
        assert sorted(c.amqp.get(q)["body"] for _ in kept) == kept
        c.amqp.delete_queue(q)


def test_a_queue_that_keeps_nacking_is_still_answered_nacked(healthy, make_ferryd):
    # The retry on a fresh channel (for quorum queues mid-election) must not
    # hide a real refusal, nor lose or repeat what else was in flight.
    f = start_ferryd(make_ferryd, healthy.urls())
    full, other = uid("full"), uid("other")
    with f.client() as c:
        # Classic: a quorum queue applies the limit a little late.
        c.amqp.declare_queue(full, durable=True, arguments={"x-max-length": 1, "x-overflow": "reject-publish"})
        c.amqp.declare_queue(other, durable=True, arguments=QUORUM)
        assert c.amqp.publish("", full, b"fits", persistent=True) == {"confirmed": True}
        refused = c.amqp.send_publish("", full, b"refused", persistent=True, deadline=10000)
        fine = [c.amqp.send_publish("", other, b"fine-%d" % i, persistent=True, deadline=10000)
                for i in range(20)]
        with pytest.raises(ferry.FerryError) as e:
            c.wait(refused)
        assert e.value.code == "nacked"
        for id in fine:
            assert c.wait(id) == {"confirmed": True}
    st = f.stats()["backends"]["amqp"]
    assert st["nacks"] == 1 and st["republished"] >= 2    # the refused one, twice
    # Those in flight on the channel given up kept it open until their
    # confirms came: none was sent twice.
    seen = drain(f, other, QUORUM)
    assert sorted(seen) == sorted(b"fine-%d" % i for i in range(20))
