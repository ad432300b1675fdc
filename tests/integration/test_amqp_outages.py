"""RabbitMQ outages: a restart under a stream of persistent publishes, a
frozen broker, a broker that blocks publishers. No confirmed message may be
lost, and Redis must not notice."""

import threading
import time
import uuid

import pytest

import ferry
from conftest import SLOW, amqp_state, wait_until

SLACK = 2.0 * SLOW


def uid(prefix):
    return "%s.%s" % (prefix, uuid.uuid4().hex[:8])


def test_restart_loses_no_confirmed_message(amqp_ferryd, rabbit):
    f = amqp_ferryd
    q, ex, tq = uid("durable"), uid("transient-ex"), uid("transient-q")
    with f.client() as setup:
        setup.amqp.declare_queue(q, durable=True)
        # Non-durable topology vanishes with the broker; ferryd declares it again.
        setup.amqp.declare_exchange(ex, "fanout", durable=False)
        setup.amqp.declare_queue(tq, durable=False)
        setup.amqp.bind(tq, ex)

    # A consumer subscribed before the restart resumes by itself.
    watcher = f.client()
    wq = uid("watch")
    watcher.amqp.declare_queue(wq, durable=True)
    wsub = watcher.amqp.consume(wq, prefetch=100)

    acked, outcomes, stop = [], {}, threading.Event()

    def publisher():
        with f.client() as c:
            i = 0
            while not stop.is_set():
                body = b"msg-%06d" % i
                try:
                    c.amqp.publish("", q, body, persistent=True, deadline=3000 * SLOW)
                    acked.append(body)
                    code = "ok"
                except ferry.FerryError as e:
                    code = e.code
                outcomes[code] = outcomes.get(code, 0) + 1
                i += 1

    t = threading.Thread(target=publisher)
    t.start()
    time.sleep(1.0)
    rabbit.restart_app()
    wait_until(lambda: amqp_state(f) == "up", timeout=60, what="ferryd to reconnect")
    time.sleep(1.0)
    stop.set()
    t.join(60)

    assert set(outcomes) <= {"ok", "unavailable", "unconfirmed", "timeout"}, outcomes
    assert len(acked) > 10
    st = f.stats()["backends"]["amqp"]
    assert st["drops"] >= 1 and st["connects"] >= 2

    # Every acknowledged message is in the queue (duplicates allowed).
    with f.client() as c:
        n = c.amqp.declare_queue(q, durable=True)["message_count"]
        seen = []
        for _ in range(n):
            m = c.amqp.get(q)
            seen.append(m["body"])
        missing = set(acked) - set(seen)
        assert not missing, "lost %d confirmed messages, e.g. %r" % (len(missing), sorted(missing)[:3])
        dups = len(seen) - len(set(seen))
        print("published %d acked, %d in queue, %d duplicates, outcomes %s" %
              (len(acked), len(seen), dups, outcomes))
        # The transient exchange and queue were declared again.
        assert c.amqp.publish(ex, "", b"routed", mandatory=True) == {"confirmed": True}
        assert c.amqp.get(tq)["body"] == b"routed"
        # The old consumer gets new messages without resubscribing.
        c.amqp.publish("", wq, b"after restart")
    p = watcher.next_push(timeout=20)
    assert p["sub"] == wsub and p["data"]["body"] == b"after restart"
    watcher.amqp.ack(wsub, p["data"]["delivery_tag"])
    watcher.close()


def test_stale_delivery_tag_after_reconnect(amqp_ferryd, rabbit):
    f = amqp_ferryd
    q = uid("stale")
    with f.client() as c:
        c.amqp.declare_queue(q, durable=True)
        sub = c.amqp.consume(q)
        c.amqp.publish("", q, b"one", persistent=True)
        first = c.next_push(10)["data"]
        rabbit.restart_app()
        wait_until(lambda: amqp_state(f) == "up", timeout=60, what="reconnect")
        again = c.next_push(20)["data"]           # redelivered on the new channel
        assert again["body"] == b"one" and again["redelivered"]
        with pytest.raises(ferry.FerryError) as e:
            c.amqp.ack(sub, first["delivery_tag"])  # a tag from the old channel
        assert e.value.code == "backend_error" and "stale" in e.value.message
        c.amqp.ack(sub, again["delivery_tag"])
        c.amqp.cancel(sub)
        c.amqp.delete_queue(q)


def test_frozen_broker_costs_redis_nothing(amqp_ferryd, rabbit):
    f = amqp_ferryd
    with f.client() as c:
        c.amqp.declare_queue(uid("frozen"))
        rabbit.freeze()
        try:
            # AMQP requests fail at their deadline with 'timeout'.
            t = time.monotonic()
            with pytest.raises(ferry.FerryError) as e:
                c.amqp.declare_queue(uid("never"), deadline=500)
            took = time.monotonic() - t
            assert e.value.code == "timeout"
            assert 0.45 <= took < 0.5 + SLACK
            with pytest.raises(ferry.FerryError) as e:
                c.amqp.publish("", "x", b"x", deadline=500)
            assert e.value.code in ("timeout", "unconfirmed")
            # Redis answers as usual meanwhile: 500 requests, all answered.
            t = time.monotonic()
            for i in range(500):
                assert c.redis("SET", "k%d" % i, "v") == "OK"
            redis_time = time.monotonic() - t
            assert redis_time < 0.5 + SLACK   # far below the AMQP deadlines above
        finally:
            rabbit.thaw()
        wait_until(lambda: amqp_state(f) == "up", timeout=60, what="recovery")
        def publish_works():
            try:
                return c.amqp.publish("", "", b"x", deadline=3000) == {"confirmed": True}
            except ferry.FerryError:
                return False
        wait_until(publish_works, timeout=60, what="publishing to work again")


def test_blocked_broker(amqp_ferryd, rabbit):
    f = amqp_ferryd
    q = uid("blocked")
    with f.client() as c:
        c.amqp.declare_queue(q)
        assert rabbit.ctl("set_vm_memory_high_watermark", "0.00001").returncode == 0
        try:
            # The broker blocks a connection when it next publishes, and says so.
            with pytest.raises(ferry.FerryError) as e:
                c.amqp.publish("", q, b"first", deadline=1000)
            assert e.value.code in ("blocked", "timeout")
            wait_until(lambda: f.stats()["backends"]["amqp"]["blocked"], timeout=30,
                       what="connection.blocked")
            with pytest.raises(ferry.FerryError) as e:
                c.amqp.publish("", q, b"held", deadline=500)
            assert e.value.code == "blocked"
            assert c.redis("PING") == "PONG"
        finally:
            assert rabbit.ctl("set_vm_memory_high_watermark", "0.4").returncode == 0
        wait_until(lambda: not f.stats()["backends"]["amqp"]["blocked"], timeout=30, what="unblocked")
        assert c.amqp.publish("", q, b"flows", deadline=5000) == {"confirmed": True}
        c.amqp.delete_queue(q)
