"""RabbitMQ through ferryd, against a real rabbitmq-server."""

import re
import signal
import threading
import time
import uuid

import pytest

import ferry
from conftest import SLOW, RpcResponder, amqp_state, cli, wait_until


def uid(prefix):
    return "%s.%s" % (prefix, uuid.uuid4().hex[:8])


@pytest.fixture
def c(amqp_ferryd):
    with amqp_ferryd.client() as client:
        yield client


def drain_pushes(client, n, timeout=10):
    out = []
    for _ in range(n):
        out.append(client.next_push(timeout))
    return out


def test_topology_ops(c):
    a = c.amqp
    ex, q = uid("ex"), uid("q")
    for t in ("direct", "fanout", "topic", "headers"):
        assert a.declare_exchange(ex + "." + t, t, durable=False, auto_delete=False) == {}
        assert a.delete_exchange(ex + "." + t) == {}
    assert a.declare_exchange(ex, "direct") == {}
    r = a.declare_queue(q, arguments={"x-message-ttl": 60000, "x-max-length": 100})
    assert r == {"queue": q, "message_count": 0, "consumer_count": 0}
    assert a.bind(q, ex, "k") == {}
    a.publish(ex, "k", b"1")
    a.publish(ex, "k", b"2")
    assert a.declare_queue(q, arguments={"x-message-ttl": 60000, "x-max-length": 100})["message_count"] == 2
    assert a.purge(q) == {"message_count": 2}
    assert a.unbind(q, ex, "k") == {}
    with pytest.raises(ferry.FerryError) as e:
        a.publish(ex, "k", b"3", mandatory=True)
    assert e.value.code == "unroutable"
    a.publish(ex, "k", b"x")  # no binding: dropped, but confirmed
    assert a.delete_queue(q) == {"message_count": 0}
    assert a.delete_exchange(ex) == {}
    # A server-named queue.
    r = a.declare_queue("", exclusive=True)
    assert r["queue"].startswith("amq.gen-")


def test_routing_by_exchange_type(c):
    a = c.amqp
    t = uid("t")
    qs = {k: a.declare_queue("%s.%s" % (t, k), auto_delete=False)["queue"] for k in "abcd"}
    a.declare_exchange(t + ".direct", "direct")
    a.bind(qs["a"], t + ".direct", "red")
    a.bind(qs["b"], t + ".direct", "blue")
    a.publish(t + ".direct", "red", b"to-a")
    assert a.get(qs["a"])["body"] == b"to-a"
    assert a.get(qs["b"]) is None

    a.declare_exchange(t + ".fanout", "fanout")
    a.bind(qs["a"], t + ".fanout")
    a.bind(qs["b"], t + ".fanout")
    a.publish(t + ".fanout", "ignored", b"all")
    assert a.get(qs["a"])["body"] == b"all" and a.get(qs["b"])["body"] == b"all"

    a.declare_exchange(t + ".topic", "topic")
    a.bind(qs["c"], t + ".topic", "log.*.error")
    a.bind(qs["d"], t + ".topic", "log.#")
    a.publish(t + ".topic", "log.db.error", b"e1")
    a.publish(t + ".topic", "log.db.info", b"i1")
    assert a.get(qs["c"])["body"] == b"e1" and a.get(qs["c"]) is None
    assert [a.get(qs["d"])["body"], a.get(qs["d"])["body"]] == [b"e1", b"i1"]

    a.declare_exchange(t + ".headers", "headers")
    a.bind(qs["a"], t + ".headers", arguments={"x-match": "all", "kind": "order", "region": "eu"})
    a.bind(qs["b"], t + ".headers", arguments={"x-match": "any", "kind": "refund", "vip": True})
    a.publish(t + ".headers", "", b"h1", headers={"kind": "order", "region": "eu"})
    a.publish(t + ".headers", "", b"h2", headers={"kind": "order", "region": "us"})
    a.publish(t + ".headers", "", b"h3", headers={"vip": True})
    assert a.get(qs["a"])["body"] == b"h1" and a.get(qs["a"]) is None
    assert a.get(qs["b"])["body"] == b"h3" and a.get(qs["b"]) is None
    for q in qs.values():
        a.delete_queue(q)


def test_message_properties_roundtrip(c):
    a = c.amqp
    q = a.declare_queue(uid("props"))["queue"]
    headers = {"int": 42, "neg": -7, "text": "caf\u00e9", "bytes": b"\x00\xff", "flag": True,
               "nested": {"list": [1, "two", {"three": 3}]}, "none": None, "float": 1.5}
    a.publish("", q, b"payload", content_type="application/json", content_encoding="gzip",
              headers=headers, persistent=True, priority=7, correlation_id="corr-1", reply_to="back",
              expiration=60000, message_id="m-1", timestamp=1700000000, type="order.created",
              app_id="tests")
    m = a.get(q)
    p = m["properties"]
    assert m["body"] == b"payload" and m["exchange"] == "" and m["routing_key"] == q
    assert p["content_type"] == "application/json" and p["content_encoding"] == "gzip"
    assert p["headers"] == headers
    assert p["delivery_mode"] == 2 and p["priority"] == 7
    assert p["correlation_id"] == "corr-1" and p["reply_to"] == "back"
    assert p["expiration"] == "60000" and p["message_id"] == "m-1"
    assert p["timestamp"] == 1700000000 and p["type"] == "order.created" and p["app_id"] == "tests"
    a.delete_queue(q)


def test_nack_from_a_full_queue(c):
    a = c.amqp
    q = a.declare_queue(uid("full"), arguments={"x-max-length": 1, "x-overflow": "reject-publish"})["queue"]
    a.publish("", q, b"fits")
    with pytest.raises(ferry.FerryError) as e:
        a.publish("", q, b"rejected")
    assert e.value.code == "nacked"
    assert c.stats()["backends"]["amqp"]["nacks"] >= 1
    a.delete_queue(q)


def test_unroutable_mandatory(c):
    a = c.amqp
    ex = uid("ex")
    a.declare_exchange(ex, "direct")
    with pytest.raises(ferry.FerryError) as e:
        a.publish(ex, "nowhere", b"x", mandatory=True)
    assert e.value.code == "unroutable"
    assert "NO_ROUTE" in e.value.message
    assert a.publish(ex, "nowhere", b"x") == {"confirmed": True}   # not mandatory: fine
    a.delete_exchange(ex)


def test_batch_and_transactions(c):
    a = c.amqp
    q = a.declare_queue(uid("batch"))["queue"]
    ex = uid("ex")
    a.declare_exchange(ex, "direct")
    a.bind(q, ex, "k")
    r = a.publish_batch([a.message(ex, "k", b"1"), a.message(ex, "none", b"2", mandatory=True),
                         a.message(ex, "k", b"3")])
    assert r["results"][0] == {"confirmed": True} and r["results"][2] == {"confirmed": True}
    assert r["results"][1]["error"]["code"] == "unroutable"
    assert [a.get(q)["body"], a.get(q)["body"], a.get(q)] == [b"1", b"3", None]

    r = a.publish_batch([a.message(ex, "k", b"t1"), a.message(ex, "k", b"t2")], transactional=True)
    assert r == {"committed": True, "count": 2}
    assert [a.get(q)["body"], a.get(q)["body"]] == [b"t1", b"t2"]

    # One invalid message (a missing exchange): nothing is published.
    with pytest.raises(ferry.FerryError) as e:
        a.publish_batch([a.message(ex, "k", b"r1"), a.message(uid("missing"), "k", b"r2")],
                        transactional=True)
    assert e.value.code == "backend_error" and "rolled back" in e.value.message
    # One malformed message: refused before anything is sent.
    with pytest.raises(ferry.FerryError) as e:
        a.publish_batch([a.message(ex, "k", b"r3"), {"exchange": ex, "routing_key": "k"}],
                        transactional=True)
    assert e.value.code == "bad_request"
    assert a.get(q) is None
    a.delete_queue(q)
    a.delete_exchange(ex)


def test_delayed_publish(c):
    a = c.amqp
    ex, q = uid("ex"), uid("delayed")
    a.declare_exchange(ex, "direct")
    a.declare_queue(q)
    a.bind(q, ex, "later")
    sub = a.consume(q, prefetch=10)
    t = time.monotonic()
    a.publish_delayed(ex, "later", b"after 700 ms", 700, persistent=True)
    with pytest.raises(Exception):
        c.next_push(timeout=0.4)          # not before the delay
    p = c.next_push(timeout=10)
    assert p["data"]["body"] == b"after 700 ms"
    assert time.monotonic() - t >= 0.7
    assert p["data"]["routing_key"] == "later"
    a.ack(sub, p["data"]["delivery_tag"])
    a.cancel(sub)
    a.delete_queue(q)


def test_dead_letter_after_reject(c):
    a = c.amqp
    dlx, dlq, q = uid("dlx"), uid("dlq"), uid("work")
    a.declare_exchange(dlx, "fanout")
    a.declare_queue(dlq)
    a.bind(dlq, dlx)
    a.declare_queue(q, arguments={"x-dead-letter-exchange": dlx})
    a.publish("", q, b"poison")
    sub = a.consume(q)
    p = c.next_push(10)
    assert p["data"]["body"] == b"poison"
    a.reject(sub, p["data"]["delivery_tag"], requeue=False)
    wait_until(lambda: a.declare_queue(dlq)["message_count"] == 1, what="dead letter")
    m = a.get(dlq)
    assert m["body"] == b"poison"
    assert m["properties"]["headers"]["x-death"][0]["reason"] == "rejected"
    a.cancel(sub)


def test_consume_ack_nack_cancel(c):
    a = c.amqp
    q = a.declare_queue(uid("cons"))["queue"]
    sub = a.consume(q, prefetch=10)
    for i in range(3):
        a.publish("", q, b"m%d" % i)
    ps = drain_pushes(c, 3)
    assert [p["data"]["body"] for p in ps] == [b"m0", b"m1", b"m2"]
    assert all(p["sub"] == sub and p["kind"] == "delivery" for p in ps)
    a.nack(sub, ps[1]["data"]["delivery_tag"], requeue=True)
    again = c.next_push(10)
    assert again["data"]["body"] == b"m1" and again["data"]["redelivered"] is True
    a.ack(sub, again["data"]["delivery_tag"])
    a.ack(sub, ps[2]["data"]["delivery_tag"], multiple=True)   # m0 and m2
    assert a.cancel(sub) == {}
    assert a.declare_queue(q)["message_count"] == 0
    with pytest.raises(ferry.FerryError) as e:
        a.ack(sub, 1)
    assert e.value.code == "bad_request"     # the subscription is gone


def test_prefetch_bounds_an_idle_consumer(c, amqp_ferryd):
    a = c.amqp
    q = a.declare_queue(uid("prefetch"))["queue"]
    sub = a.consume(q, prefetch=3)
    with amqp_ferryd.client() as p:
        for i in range(10):
            p.amqp.publish("", q, b"%d" % i)
    got = drain_pushes(c, 3)
    with pytest.raises(Exception):
        c.next_push(timeout=0.5)              # the fourth waits for an ack
    a.ack(sub, got[2]["data"]["delivery_tag"], multiple=True)
    assert len(drain_pushes(c, 3)) == 3
    a.cancel(sub)


def test_no_ack_consumer(c):
    a = c.amqp
    q = a.declare_queue(uid("noack"))["queue"]
    sub = a.consume(q, no_ack=True)
    a.publish("", q, b"auto")
    assert c.next_push(10)["data"]["body"] == b"auto"
    with pytest.raises(ferry.FerryError):
        a.ack(sub, 1)
    a.cancel(sub)
    assert a.declare_queue(q)["message_count"] == 0


def test_rpc_round_trip(amqp_ferryd):
    q = uid("rpc")
    with RpcResponder(amqp_ferryd, q), amqp_ferryd.client() as c:
        for i in range(3):
            reply = c.amqp.rpc("", q, b"ping %d" % i, deadline=5000 * SLOW)
            assert reply["body"] == b"re: ping %d" % i
        # No queue: the request is returned at once (it is published
        # mandatory), long before the deadline.
        with pytest.raises(ferry.FerryError) as e:
            c.amqp.rpc("", uid("nobody"), b"hello?", deadline=600000)
        assert e.value.code == "unroutable" and "NO_ROUTE" in e.value.message
        # A queue with nobody consuming it: the deadline answers.
        idle = c.amqp.declare_queue(uid("idle"))["queue"]
        with pytest.raises(ferry.FerryError) as e:
            c.amqp.rpc("", idle, b"hello?", deadline=300)
        assert e.value.code == "timeout"
        c.amqp.delete_queue(idle)


def test_priority_ordering(c):
    a = c.amqp
    q = a.declare_queue(uid("prio"), arguments={"x-max-priority": 10})["queue"]
    for p in (1, 9, 5, 0, 7):
        a.publish("", q, b"p%d" % p, priority=p)
    assert [a.get(q)["body"] for _ in range(5)] == [b"p9", b"p7", b"p5", b"p1", b"p0"]
    a.delete_queue(q)


def test_killed_consumer_deliveries_go_to_another(amqp_ferryd):
    q = uid("handoff")
    a = amqp_ferryd.client()
    a.amqp.declare_queue(q)
    sub = a.amqp.consume(q, prefetch=10)
    with amqp_ferryd.client() as p:
        for i in range(5):
            p.amqp.publish("", q, b"job%d" % i)
    got = drain_pushes(a, 5)
    assert len(got) == 5
    a.close()  # vanishes with 5 unacked deliveries
    with amqp_ferryd.client() as b:
        sub_b = b.amqp.consume(q, prefetch=10)
        again = drain_pushes(b, 5)
        assert sorted(x["data"]["body"] for x in again) == [b"job%d" % i for i in range(5)]
        assert all(x["data"]["redelivered"] for x in again)
        b.amqp.ack(sub_b, again[-1]["data"]["delivery_tag"], multiple=True)
        b.amqp.cancel(sub_b)
    assert sub  # the first subscription existed


@pytest.mark.parametrize("op,args,code,fragment", [
    ("exchange.declare", {"name": "x", "type": "bogus"}, "bad_request", "exchange type"),
    ("exchange.declare", {"name": 5}, "bad_request", "text"),
    ("queue.declare", {"name": "q", "arguments": {"x-max-priority": "high"}}, "bad_request", "integers"),
    ("queue.declare", {"name": "q", "arguments": {"x-queue-type": "fast"}}, "bad_request", "x-queue-type"),
    ("queue.declare", {"name": "q", "durable": "yes"}, "bad_request", "booleans"),
    # A float where a flag belongs (libcbor asserts if asked whether it is a bool).
    ("queue.declare", {"name": "q", "durable": 1.5}, "bad_request", "booleans"),
    ("publish", {"exchange": "", "routing_key": "q", "body": b"x", "mandatory": 2.5}, "bad_request", "boolean"),
    ("publish", {"exchange": "", "routing_key": "q"}, "bad_request", "body"),
    ("publish", {"exchange": "", "routing_key": "q", "body": b"x", "priority": 300}, "bad_request", "priority"),
    ("publish", {"exchange": "", "routing_key": "q", "body": b"x", "colour": "red"}, "bad_request", "unknown key"),
    ("publish", {"exchange": "", "routing_key": "q", "body": b"x", "headers": [1]}, "bad_request", "map"),
    ("publish", {"exchange": "", "routing_key": "q", "body": b"x" * (9 * 1024 * 1024)}, "too_large", "limit"),
    ("publish", [1, 2], "bad_request", "map"),
    ("ack", {"sub": 999, "delivery_tag": 1}, "bad_request", "subscription"),
    ("consume", {"prefetch": 5}, "bad_request", "missing"),
    # prefetch 0 would mean "no limit" to the broker.
    ("consume", {"queue": "q", "prefetch": 0}, "bad_request", "prefetch must be 1..65535"),
    ("consume", {"queue": "q", "prefetch": 65536}, "bad_request", "prefetch must be 1..65535"),
    # All or nothing cannot hold: the broker commits an unroutable message.
    ("publish.batch", {"messages": [{"exchange": "", "routing_key": "q", "body": b"x", "mandatory": True}],
                       "transactional": True}, "bad_request", "transaction"),
    ("publish.delayed", {"exchange": "", "routing_key": "q", "body": b"x"}, "bad_request", "delay_ms"),
])
def test_bad_input(amqp_ferryd, op, args, code, fragment):
    with amqp_ferryd.client() as c:
        with pytest.raises(ferry.FerryError) as e:
            c.call(op, args)
        assert e.value.code == code, e.value.message
        assert fragment in e.value.message
        # The connection and the daemon carry on.
        assert c.amqp.publish("", "", b"x") == {"confirmed": True}


def test_channel_errors_stay_isolated(amqp_ferryd):
    q = uid("iso")
    with amqp_ferryd.client() as consumer, amqp_ferryd.client() as bad, amqp_ferryd.client() as good:
        consumer.amqp.declare_queue(q, durable=False)
        sub = consumer.amqp.consume(q, prefetch=100)
        good.amqp.publish("", q, b"before")
        assert consumer.next_push(10)["data"]["body"] == b"before"
        # Missing exchange.
        with pytest.raises(ferry.FerryError) as e:
            bad.amqp.publish(uid("missing"), "k", b"x")
        assert e.value.code == "backend_error" and "404" in e.value.message
        # Redeclaring with other arguments.
        with pytest.raises(ferry.FerryError) as e:
            bad.amqp.declare_queue(q, durable=True)
        assert e.value.code == "backend_error" and "406" in e.value.message
        # Others are undisturbed: publishes confirm, the consumer keeps receiving.
        ids = [good.amqp.send_publish("", q, b"after%d" % i) for i in range(20)]
        assert all(good.wait(i) == {"confirmed": True} for i in ids)
        bodies = [consumer.next_push(10)["data"]["body"] for _ in range(20)]
        assert bodies == [b"after%d" % i for i in range(20)]
        consumer.amqp.cancel(sub)


def test_stats_and_disabled(make_ferryd, amqp_ferryd):
    st = amqp_ferryd.stats()["backends"]["amqp"]
    assert st["state"] == "up" and st["connects"] >= 1 and "guest:***" in st["url"]
    plain = make_ferryd(name="plain.sock")
    assert plain.stats()["backends"]["amqp"]["state"] == "disabled"
    with plain.client() as c:
        # Without amqp_url the AMQP ops are not served, nor listed by hello.
        assert "publish" not in c.hello()["ops"]
        with pytest.raises(ferry.FerryError) as e:
            c.amqp.publish("", "q", b"x")
        assert e.value.code == "unknown_op"


def test_fallback_urls(make_ferryd, rabbit):
    from conftest import free_port
    dead = "amqp://guest:guest@127.0.0.1:%d/" % free_port()
    f = make_ferryd(["--amqp", dead + "," + rabbit.url], name="fallback.sock")
    wait_until(lambda: amqp_state(f) == "up", timeout=30, what="fallback to the second URL")
    with f.client() as c:
        assert c.amqp.publish("", "", b"x") == {"confirmed": True}


def test_cli_amqp(amqp_ferryd):
    f = amqp_ferryd
    ex, q = uid("cli"), uid("cliq")
    assert cli(f, "declare-exchange", ex, "topic", "--durable").stdout == b"OK\n"
    assert cli(f, "declare-queue", q, "--arg", "x-max-length=100").stdout == q.encode() + b"\n"
    assert cli(f, "bind", q, ex, "a.*").stdout == b"OK\n"
    r = cli(f, "publish", ex, "a.b", "hello", "--persistent", "--header", "n=1")
    assert r.returncode == 0, r.stderr
    r = cli(f, "publish", ex, "z.z", "lost", "--mandatory")
    assert r.returncode == 1 and r.stderr.startswith(b"(error) unroutable: ")
    r = cli(f, "publish", uid("nope"), "k", "x")
    assert r.returncode == 1 and b"404" in r.stderr
    cli(f, "publish", ex, "a.c", "second")
    cli(f, "publish", ex, "a.d", "third")
    r = cli(f, "get", q, "-v")
    assert r.stdout.endswith(b"hello\n") and b"properties.headers.n: 1" in r.stdout
    r = cli(f, "consume", q, "--count", "2")
    assert r.returncode == 0 and r.stdout == b"second\nthird\n"
    with f.client() as c:
        assert c.amqp.declare_queue(q, arguments={"x-max-length": 100})["message_count"] == 0  # acked
    assert cli(f, "get", q).stdout == b"\n"
    r = cli(f, "declare-exchange", "x", "bogus")
    assert r.returncode == 1 and b"bad_request" in r.stderr


def test_cli_rpc(amqp_ferryd):
    q = uid("clirpc")
    with amqp_ferryd.client() as r:
        r.amqp.declare_queue(q)
        sub = r.amqp.consume(q)

        def respond():
            p = r.next_push(timeout=20)
            d = p["data"]
            r.amqp.publish("", d["properties"]["reply_to"], d["body"].upper(),
                           correlation_id=d["properties"]["correlation_id"])
            r.amqp.ack(sub, d["delivery_tag"])

        t = threading.Thread(target=respond)
        t.start()
        out = cli(amqp_ferryd, "rpc", "", q, "shout", timeout=10000)
        t.join(30)
    assert out.returncode == 0, out.stderr
    assert out.stdout == b"SHOUT\n"


@pytest.mark.parametrize("op,args", [
    ("queue.declare", {"name": "{q}", "durabel": True}),
    ("exchange.declare", {"name": "{q}", "type": "fanout", "auto_delte": True}),
    ("exchange.delete", {"name": "{q}", "if_unsued": True}),
    ("queue.bind", {"queue": "{q}", "exchange": "amq.direct", "routingkey": "k"}),
    ("queue.unbind", {"queue": "{q}", "exchange": "amq.direct", "key": "k"}),
    ("queue.purge", {"queue": "{q}", "all": True}),
    ("queue.delete", {"queue": "{q}", "if_emtpy": True}),
    ("consume", {"queue": "{q}", "prefech": 5}),
    ("get", {"queue": "{q}", "no_ack": True}),
    ("ack", {"sub": 1, "delivery_tag": 1, "mutliple": True}),
    ("nack", {"sub": 1, "delivery_tag": 1, "requeu": False}),
    ("reject", {"sub": 1, "delivery_tag": 1, "multiple": True}),   # reject settles one tag only
    ("cancel", {"sub": 1, "now": True}),
    ("publish.batch", {"messages": [{"exchange": "", "routing_key": "{q}", "body": b"x"}],
                       "transactonal": True}),
    ("publish", {"exchange": "", "routing_key": "{q}", "body": b"x", "presistent": True}),
    ("publish.delayed", {"exchange": "", "routing_key": "{q}", "body": b"x", "delay_ms": 10, "priorty": 1}),
    ("rpc", {"exchange": "", "routing_key": "{q}", "body": b"x", "replyto": "me"}),
    ("hello", {"protocol": 1, "protocl": 1}),
    # In a message of a batch, too.
    ("publish.batch", {"messages": [{"exchange": "", "routing_key": "{q}", "body": b"x", "colour": "red"}]}),
])
def test_unknown_keys_are_refused(amqp_ferryd, op, args):
    """Every op with a map of args refuses a key it does not know, naming it
    and the op, and does nothing: a typo must not silently change what
    happens."""
    q = uid("typo")
    args = {k: (v.replace("{q}", q) if isinstance(v, str) else v) for k, v in args.items()}
    for m in args.get("messages", []):
        m["routing_key"] = q
    known = {"queue", "name", "type", "exchange", "routing_key", "body", "sub", "delivery_tag",
             "messages", "delay_ms", "protocol"}
    typo = next((k for k in args if k not in known), "colour")
    with amqp_ferryd.client() as c:
        with pytest.raises(ferry.FerryError) as e:
            c.call(op, args)
        assert e.value.code == "bad_request", e.value.message
        assert "unknown key '%s' in %s" % (typo, op) in e.value.message
        # Nothing was declared or published under that name.
        with pytest.raises(ferry.FerryError) as e:
            c.call("queue.declare", {"name": q, "passive": True})
        assert e.value.code == "backend_error" and "404" in e.value.message
        with pytest.raises(ferry.FerryError) as e:
            c.call("exchange.declare", {"name": q, "passive": True})
        assert e.value.code == "backend_error" and "404" in e.value.message


def test_settled_or_unknown_delivery_tags_are_refused(c):
    """A second ack of a tag never reaches the broker (which would close the
    consumer's channel and redeliver every other unacked message)."""
    a = c.amqp
    q = a.declare_queue(uid("twice"))["queue"]
    sub = a.consume(q, prefetch=10)
    a.publish("", q, b"one")
    a.publish("", q, b"two")
    one, two = drain_pushes(c, 2)
    t1, t2 = one["data"]["delivery_tag"], two["data"]["delivery_tag"]
    assert a.ack(sub, t1) == {}
    for settle in (lambda: a.ack(sub, t1), lambda: a.nack(sub, t1), lambda: a.reject(sub, t1)):
        with pytest.raises(ferry.FerryError) as e:
            settle()
        assert e.value.code == "bad_request"
        assert "delivery tag %d was already acked, nacked or rejected" % t1 in e.value.message
    # Tags that were never issued on this subscription get their own message.
    for never in (t2 + 1000, 1, t2 + (1 << 40)):
        with pytest.raises(ferry.FerryError) as e:
            a.ack(sub, never)
        assert e.value.code == "bad_request"
        assert "delivery tag %d was never delivered on this subscription" % never in e.value.message
    # The consumer's channel was not closed: the second delivery is still
    # outstanding under its tag, and is not delivered again.
    assert a.ack(sub, t2) == {}
    a.publish("", q, b"three")
    three = c.next_push(10)
    assert three["data"]["body"] == b"three" and three["data"]["redelivered"] is False
    # multiple up to a settled tag, with nothing open at or below it: refused.
    with pytest.raises(ferry.FerryError) as e:
        a.ack(sub, t2, multiple=True)
    assert e.value.code == "bad_request"
    assert "every delivery up to tag %d was already acked, nacked or rejected" % t2 in e.value.message
    a.publish("", q, b"four")
    four = c.next_push(10)
    assert a.ack(sub, four["data"]["delivery_tag"]) == {}
    # multiple up to a settled tag above every open one ("three"): the
    # broker would not know where to stop; refused.
    with pytest.raises(ferry.FerryError) as e:
        a.ack(sub, four["data"]["delivery_tag"], multiple=True)
    assert e.value.code == "bad_request" and "name the last of them" in e.value.message
    assert a.ack(sub, three["data"]["delivery_tag"], multiple=True) == {}
    assert c.pushes == []
    assert a.declare_queue(q) == {"queue": q, "message_count": 0, "consumer_count": 1}
    a.cancel(sub)
    a.delete_queue(q)


def test_subscriptions_belong_to_their_connection(amqp_ferryd):
    q = uid("owned")
    with amqp_ferryd.client() as owner, amqp_ferryd.client() as other:
        owner.amqp.declare_queue(q)
        sub = owner.amqp.consume(q)
        owner.amqp.publish("", q, b"mine")
        tag = owner.next_push(10)["data"]["delivery_tag"]
        for op, args in (("ack", {"sub": sub, "delivery_tag": tag}),
                         ("nack", {"sub": sub, "delivery_tag": tag}),
                         ("reject", {"sub": sub, "delivery_tag": tag}),
                         ("cancel", {"sub": sub})):
            with pytest.raises(ferry.FerryError) as e:
                other.call(op, args)
            assert e.value.code == "bad_request" and "no such subscription on this connection" in e.value.message
        # The other connection's own subscription with the same id is its
        # own: the owner's tag was never delivered there.
        other_q = other.amqp.declare_queue(uid("other"))["queue"]
        other.wait(other.send("consume", {"queue": other_q}, id=sub))
        with pytest.raises(ferry.FerryError) as e:
            other.amqp.ack(sub, tag)
        assert e.value.code == "bad_request" and "never delivered" in e.value.message
        # Still the owner's to settle, and only settled once.
        assert owner.amqp.ack(sub, tag) == {}
        assert owner.amqp.declare_queue(q)["message_count"] == 0
        other.amqp.cancel(sub)
        other.amqp.delete_queue(other_q)
        owner.amqp.cancel(sub)
        owner.amqp.delete_queue(q)


def test_half_close_with_a_consumer_closes_and_requeues(amqp_ferryd):
    """A subscription does not keep a half-closed connection open: ferryd
    closes it at once, and its unacked deliveries go back to the queue."""
    import socket
    q = uid("halfclose")
    a = amqp_ferryd.client()
    a.amqp.declare_queue(q)
    a.amqp.consume(q)
    a.amqp.publish("", q, b"unacked")
    assert a.next_push(10)["data"]["body"] == b"unacked"
    a.sock.shutdown(socket.SHUT_WR)
    with pytest.raises(ferry.ConnectionClosed):
        a.recv_frame()
    a.close()
    with amqp_ferryd.client() as b:
        sub = b.amqp.consume(q)
        again = b.next_push(10)["data"]
        assert again["body"] == b"unacked" and again["redelivered"] is True
        b.amqp.ack(sub, again["delivery_tag"])
        b.amqp.cancel(sub)
        b.amqp.delete_queue(q)


def test_cli_consume_stops_when_the_wait_passes(amqp_ferryd):
    """--timeout bounds the wait for the next delivery: with 2 of 10 queued,
    consume prints both, then exits 3 saying so."""
    f = amqp_ferryd
    q = uid("drain")
    with f.client() as c:
        c.amqp.declare_queue(q)
        c.amqp.publish("", q, b"first", message_id="m-1", correlation_id="c-1")
        c.amqp.publish("", q, b"second")
    r = cli(f, "consume", q, "--count", "10", timeout=1000)
    assert r.returncode == 3, r.stderr
    assert r.stdout == b"first\nsecond\n"
    assert r.stderr == b"ferry: no delivery within 1000 ms (--timeout); 2 of 10 received\n"
    with f.client() as c:
        assert c.amqp.declare_queue(q)["message_count"] == 0      # both acked
        c.amqp.publish("", q, b"third", message_id="m-3", headers={"k": "v"})
    # -v: one "name: value" line per field, then the body.
    r = cli(f, "consume", q, "--count", "1", "-v", timeout=1000)
    assert r.returncode == 0, r.stderr
    # (No traceparent line: this ferryd traces nothing.)
    assert re.fullmatch(r"exchange: \nrouting_key: %s\nproperties\.message_id: m-3\nproperties\.headers\.k: v\n"
                        r"delivery_tag: \d+\nredelivered: false\nconsumer_tag: ferry-\d+\nthird\n" % re.escape(q),
                        r.stdout.decode()), r.stdout


def test_cli_serve_answers_rpc(amqp_ferryd):
    """ferry serve: a responder made of a command, end to end through rpc."""
    import subprocess
    from conftest import FERRY_CLI
    f = amqp_ferryd
    q = uid("serve")
    p = subprocess.Popen([FERRY_CLI, "--socket", f.sock, "serve", q, "--count", "2", "--",
                          "sh", "-c", "printf 'quote for '; tr a-z A-Z"],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        assert p.stderr.readline() == b"ferry: serving requests from '%s'\n" % q.encode()
        with f.client() as c:
            r = c.amqp.rpc("", q, b"item 42", deadline=10000 * SLOW)
            assert r["body"] == b"quote for ITEM 42"
            assert r["properties"]["headers"]["exit_status"] == 0
        out = cli(f, "rpc", "", q, "widget", timeout=10000 * SLOW)
        assert out.returncode == 0, out.stderr
        assert out.stdout == b"quote for WIDGET\n"
        assert p.wait(60) == 0
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
    with f.client() as c:
        assert c.amqp.declare_queue(q)["message_count"] == 0       # both requests acked
        c.amqp.delete_queue(q)
    # With nothing serving (and no queue), the CLI's rpc fails at once.
    r = cli(f, "rpc", "", uid("pricing-service"), "quote 42", timeout=600000)
    assert r.returncode == 1 and r.stderr.startswith(b"(error) unroutable: 312 NO_ROUTE")


@pytest.mark.parametrize("op", ["queue.declare", "hello", "publish"])
def test_long_unknown_key_is_cut_at_a_character(amqp_ferryd, op):
    """The key is quoted at most 64 bytes long, cut between characters: the
    message is CBOR text, and must stay valid UTF-8 (cbor2 refuses it
    otherwise)."""
    key = "\u20ac" * 30                        # 90 bytes, 3 per character
    args = {"hello": {"protocol": 1}, "queue.declare": {"name": uid("long")},
            "publish": {"exchange": "", "routing_key": "k", "body": b"x"}}[op]
    args[key] = True
    with amqp_ferryd.client() as c:
        with pytest.raises(ferry.FerryError) as e:
            c.call(op, args)
        assert e.value.code == "bad_request"
        assert "unknown key '%s' in %s args" % ("\u20ac" * 21, op) in e.value.message


def test_single_acks_sent_together_go_as_one_multiple_ack(c, amqp_ferryd):
    """Acks the worker takes in one batch go to the broker as one multiple
    ack when every earlier delivery is settled (stats: acks_merged), and
    one by one when one is not: an unacked delivery below them is never
    acked by the merge."""
    a = c.amqp
    q = a.declare_queue(uid("acks"))["queue"]
    sub = a.consume(q, prefetch=400)
    with amqp_ferryd.client() as p:
        for i in range(300):
            p.amqp.publish("", q, b"%d" % i)
    tags = [m["data"]["delivery_tag"] for m in drain_pushes(c, 300)]
    before = amqp_ferryd.stats()["backends"]["amqp"]["acks_merged"]
    # Every delivery but the first, acked one by one and pipelined.
    ids = [c.send("ack", {"sub": sub, "delivery_tag": t}) for t in tags[1:]]
    assert all(c.wait(i) == {} for i in ids)
    # The first is still open: no merge may have covered it.
    assert a.cancel(sub) == {}
    wait_until(lambda: a.declare_queue(q)["message_count"] == 1, timeout=10 * SLOW, what="the one unacked requeued")
    # Now all of them, in order: merges happen.
    sub = a.consume(q, prefetch=400)
    with amqp_ferryd.client() as p:
        for i in range(299):
            p.amqp.publish("", q, b"%d" % i)
    tags = [m["data"]["delivery_tag"] for m in drain_pushes(c, 300)]
    ids = [c.send("ack", {"sub": sub, "delivery_tag": t}) for t in tags]
    assert all(c.wait(i) == {} for i in ids)
    merged = amqp_ferryd.stats()["backends"]["amqp"]["acks_merged"] - before
    assert merged > 0
    assert a.cancel(sub) == {}
    assert a.declare_queue(q)["message_count"] == 0   # every ack reached the broker
