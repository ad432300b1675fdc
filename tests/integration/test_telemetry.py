"""OpenTelemetry: spans and metrics over OTLP/HTTP, checked by a test
collector that decodes them with python3-protobuf (tests/otlp_collector.py)."""

import collections
import os
import signal
import socket
import subprocess
import threading
import time
import uuid

import pytest

import ferry
from conftest import SLOW, cli, free_port, wait_until
from otlp_collector import Collector

CLIENT, SERVER, PRODUCER, CONSUMER = 3, 2, 4, 5
TP = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"


@pytest.fixture
def collector():
    c = Collector().start()
    yield c
    c.stop()


def otel_env(collector, **extra):
    env = {"OTEL_EXPORTER_OTLP_ENDPOINT": collector.endpoint, "OTEL_TRACES_EXPORTER": "otlp",
           "OTEL_METRICS_EXPORTER": "otlp", "OTEL_BSP_SCHEDULE_DELAY": "100",
           "OTEL_METRIC_EXPORT_INTERVAL": "200"}
    env.update(extra)
    return env


@pytest.fixture
def traced(make_ferryd, collector):
    def make(args=(), **extra):
        return make_ferryd(list(args), env=otel_env(collector, **extra), name="t%s.sock" % uuid.uuid4().hex[:6])
    return make


def spans_named(collector, name, n=1, timeout=15):
    wait_until(lambda: len([s for s in collector.spans() if s["name"] == name]) >= n, timeout=timeout * SLOW,
               what="span %s" % name)
    return [s for s in collector.spans() if s["name"] == name]


def test_redis_spans(traced, collector):
    f = traced()
    with f.client() as c:
        c.redis("SET", "k", "secret-value")
        c.redis("GET", "k")
        with pytest.raises(ferry.FerryError):
            c.redis("LPUSH", "k", "x")
    s = spans_named(collector, "SET")[0]
    assert s["kind"] == CLIENT and s["status_code"] == 0
    a = s["attributes"]
    assert a["db.system.name"] == "redis" and a["db.system"] == "redis"
    assert a["db.operation.name"] == "SET" and a["db.namespace"] == "0"
    assert a["db.query.text"] == "SET ? ?"            # sanitized: no values
    assert a["server.address"].endswith("redis.sock")
    assert s["end"] >= s["start"] > 0
    assert s["parent_span_id"] == ""                   # a root
    err = spans_named(collector, "LPUSH")[0]
    assert err["status_code"] == 2 and "WRONGTYPE" in err["status_message"]
    assert err["attributes"]["error.type"] == "backend_error"
    assert err["attributes"]["db.response.status_code"] == "WRONGTYPE"
    assert s["resource"]["service.name"] == "ferryd"
    assert collector.errors == []


def test_repeated_commands_keep_every_attribute(traced, collector):
    """Spans of a command seen before come from a shared shape (telemetry.h):
    each still carries the whole attribute set, its own ids and times, and an
    error on a command whose shape exists adds its error attributes."""
    f = traced()
    with f.client() as c:
        c.redis("LPUSH", "list", "a")
        for i in range(5):
            c.redis("SET", "k%d" % i, "v")
        c.redis("SET", "k", "v", "EX", "100")         # more arguments: another shape
        with pytest.raises(ferry.FerryError):
            c.redis("SET", "list", "v", "XX", "GET")  # WRONGTYPE, after SET has shapes
        with pytest.raises(ferry.FerryError):
            c.redis("LPUSH", "k0", "x")               # WRONGTYPE on a command with a shape
    sets = spans_named(collector, "SET", n=7)
    want = {"db.system.name": "redis", "db.system": "redis", "db.operation.name": "SET",
            "db.namespace": "0"}
    for s in sets:
        for k, v in want.items():
            assert s["attributes"][k] == v
        assert s["attributes"]["server.address"].endswith("redis.sock")
        assert s["attributes"]["network.peer.address"].endswith("redis.sock")
        assert s["kind"] == CLIENT and s["end"] >= s["start"] > 0
    texts = sorted(s["attributes"]["db.query.text"] for s in sets)
    assert texts == ["SET ? ?"] * 5 + ["SET ? ? ? ?"] * 2   # the failing SET shares the EX one's shape
    assert len({s["span_id"] for s in sets}) == 7 and len({s["trace_id"] for s in sets}) == 7
    ok = [s for s in sets if s["status_code"] == 0]
    bad = [s for s in sets if s["status_code"] == 2]
    assert len(ok) == 6 and len(bad) == 1
    assert bad[0]["attributes"]["db.response.status_code"] == "WRONGTYPE"
    assert bad[0]["attributes"]["error.type"] == "backend_error"
    lp = spans_named(collector, "LPUSH", n=2)
    assert sorted(s["status_code"] for s in lp) == [0, 2]
    for s in lp:
        assert s["attributes"]["db.query.text"] == "LPUSH ? ?"
        assert s["attributes"]["network.peer.address"].endswith("redis.sock")
    assert [s for s in lp if s["status_code"] == 2][0]["attributes"]["error.type"] == "backend_error"
    assert "error.type" not in [s for s in lp if s["status_code"] == 0][0]["attributes"]
    assert collector.errors == []


def test_shapes_of_long_and_similar_command_names(traced, collector):
    """A shape is found by the command name's first 16 bytes as words
    (redis_backend.c): a 15-byte name is shaped, a 16-byte one never is,
    and names that share a prefix or differ only in case keep their own
    attributes."""
    f = traced()
    with f.client() as c:
        for _ in range(3):
            c.redis("ZREMRANGEBYRANK", "z", "0", "-1")       # 15 bytes
            c.redis("ZREMRANGEBYLEX", "z", "-", "+")          # the same first 8 bytes and argc
            with pytest.raises(ferry.FerryError):
                c.redis("ZREMRANGEBYRANX", "z", "0", "-1")   # unknown: differs in the 15th byte only
            c.redis("ZREVRANGEBYSCORE", "z", "+inf", "-inf")  # 16 bytes
            c.redis("GET", "k")
            c.redis("getdel", "k")                           # GET's prefix, lower case
            c.redis("GETDEL", "k")
    want = {"ZREMRANGEBYRANK": "ZREMRANGEBYRANK ? ? ?", "ZREMRANGEBYLEX": "ZREMRANGEBYLEX ? ? ?",
            "ZREVRANGEBYSCORE": "ZREVRANGEBYSCORE ? ? ?",
            "GET": "GET ?", "GETDEL": "GETDEL ?"}
    for name, text in want.items():
        spans = spans_named(collector, name, n=3 if name != "GETDEL" else 6)
        assert len(spans) == (6 if name == "GETDEL" else 3)
        for s in spans:
            a = s["attributes"]
            assert a["db.operation.name"] == name and a["db.query.text"] == text
            assert a["server.address"].endswith("redis.sock") and a["db.system.name"] == "redis"
            assert s["status_code"] == 0 and s["kind"] == CLIENT
        assert len({s["span_id"] for s in spans}) == len(spans)
    unknown = spans_named(collector, "ZREMRANGEBYRANX", n=3)
    assert [s["attributes"]["db.operation.name"] for s in unknown] == ["ZREMRANGEBYRANX"] * 3
    assert all(s["status_code"] == 2 for s in unknown)
    assert collector.errors == []


def test_spans_of_requests_that_fail_late(traced, collector, redis):
    """A root Redis span whose command has a shape is recorded only if it
    is needed (the request fails): a timeout at the deadline, a request
    abandoned by its client, and a denied command (which never reaches
    Redis) each export a complete span with its error; a successful one
    after them still carries every attribute."""
    f = traced()
    with f.client() as c:
        for _ in range(3):
            c.redis("GET", "late")                       # GET has a shape from here on
        redis.freeze()
        try:
            with pytest.raises(ferry.FerryError) as e:
                c.redis("GET", "late", deadline=200)
            assert e.value.code == "timeout"
            gone = f.client()
            gone.send("redis", [b"GET", b"late"], deadline=60000)
            time.sleep(0.2)
            gone.close()                                 # vanishes with its GET in flight
            time.sleep(0.3)
        finally:
            redis.thaw()
        with pytest.raises(ferry.FerryError):
            c.redis("FLUSHALL")
        assert c.redis("GET", "late") is None
    gets = spans_named(collector, "GET", n=6)
    bad = {s["attributes"].get("error.type") for s in gets if s["status_code"] == 2}
    assert bad == {"timeout", "abandoned"}
    for s in gets:
        a = s["attributes"]
        assert s["kind"] == CLIENT and s["parent_span_id"] == "" and s["end"] >= s["start"] > 0
        assert a["db.operation.name"] == "GET" and a["db.query.text"] == "GET ?"
        assert a["server.address"].endswith("redis.sock") and a["db.system.name"] == "redis"
    assert len([s for s in gets if s["status_code"] == 0]) == 4
    denied = [s for s in collector.spans() if s["attributes"].get("error.type") == "denied"]
    assert len(denied) == 1 and denied[0]["name"] == "redis" and denied[0]["kind"] == SERVER
    assert "FLUSHALL" in denied[0]["status_message"]
    assert len({s["span_id"] for s in gets}) == 6 and collector.errors == []


def test_span_shapes_are_bounded(traced, collector):
    """Past 1,024 interned shapes (command names come from clients), spans
    carry their own attributes: the ones after the bound are as complete."""
    f = traced()
    n = 1100
    with f.client() as c:
        ids = [c.send("redis", [b"NOSHAPE%d" % i, b"x"]) for i in range(n)]
        for i in ids:
            with pytest.raises(ferry.FerryError):
                c.wait(i)
        c.redis("SET", "after-the-bound", "1")
    wait_until(lambda: collector.span_count() >= n + 1, timeout=30 * SLOW, what="every span")
    spans = {s["name"]: s for s in collector.spans()}
    for i in (0, 1023, 1024, n - 1):
        s = spans["NOSHAPE%d" % i]
        a = s["attributes"]
        assert a["db.operation.name"] == "NOSHAPE%d" % i and a["db.query.text"] == "NOSHAPE%d ?" % i
        assert a["db.system.name"] == "redis" and a["network.peer.address"].endswith("redis.sock")
        assert a["error.type"] == "backend_error" and s["status_code"] == 2
    a = spans["SET"]["attributes"]
    assert a["db.query.text"] == "SET ? ?" and spans["SET"]["status_code"] == 0
    assert f.ping()


def test_full_query_text_when_configured(traced, collector):
    f = traced(["--set", "redis_query_text=full"])
    with f.client() as c:
        c.redis("SET", "visible", "value")
    assert spans_named(collector, "SET")[0]["attributes"]["db.query.text"] == "SET visible value"


def test_client_traceparent_is_the_parent(traced, collector):
    f = traced()
    with f.client() as c:
        c.call("redis", [b"INCR", b"n"], traceparent=TP, tracestate="vendor=1")
        c.call("ping", traceparent="00-0AF7651916CD43DD8448EB211C80319C-B7AD6B7169203331-01")  # invalid: upper
    s = spans_named(collector, "INCR")[0]
    assert s["trace_id"] == "0af7651916cd43dd8448eb211c80319c"
    assert s["parent_span_id"] == "b7ad6b7169203331"
    assert s["trace_state"] == "vendor=1"
    p = spans_named(collector, "ping")[0]
    assert p["kind"] == SERVER
    assert p["trace_id"] != "0af7651916cd43dd8448eb211c80319c" and p["parent_span_id"] == ""


def test_unsampled_parent_exports_nothing(traced, collector):
    f = traced()
    unsampled = TP[:-2] + "00"
    with f.client() as c:
        c.call("redis", [b"SET", b"a", b"1"], traceparent=unsampled)
        c.call("redis", [b"GET", b"a"])             # sampled root, as a marker
    spans_named(collector, "GET")
    time.sleep(0.3)
    assert not [s for s in collector.spans() if s["trace_id"] == TP[3:35]]
    assert not [s for s in collector.spans() if s["name"] == "SET"]


def test_samplers(traced, collector):
    off = traced(OTEL_TRACES_SAMPLER="always_off")
    with off.client() as c:
        c.redis("SET", "x", "1")
        c.call("redis", [b"GET", b"x"], traceparent=TP)   # parent sampled, sampler says no
    ratio = traced(OTEL_TRACES_SAMPLER="traceidratio", OTEL_TRACES_SAMPLER_ARG="0.5")
    with ratio.client() as c:
        for _ in range(200):
            c.redis("DBSIZE")
    wait_until(lambda: len([s for s in collector.spans() if s["name"] == "DBSIZE"]) > 0, what="some DBSIZE")
    time.sleep(0.5)
    kept = [s for s in collector.spans() if s["name"] == "DBSIZE"]
    assert 40 < len(kept) < 160              # about half, by trace id
    # TraceIdRatioBased: the low 8 bytes of each exported trace id, below
    # ratio * 2^64; the ids decided on are the ids exported.
    assert all(int(s["trace_id"][16:], 16) < 2 ** 63 for s in kept)
    assert not [s for s in collector.spans() if s["name"] in ("SET", "GET")]


def test_amqp_propagation(make_ferryd, collector, rabbit):
    f = make_ferryd(["--amqp", rabbit.url], env=otel_env(collector), name="tamqp.sock")
    wait_until(lambda: f.stats()["backends"]["amqp"]["state"] == "up", timeout=30, what="amqp")
    q = "trace." + uuid.uuid4().hex[:8]
    with f.client() as producer, f.client() as consumer:
        producer.amqp.declare_queue(q)
        sub = consumer.amqp.consume(q)
        producer.call("publish", {"exchange": "", "routing_key": q, "body": b"traced", "message_id": "m-1"},
                      traceparent=TP)
        push = consumer.next_push(timeout=10)
        tp = push["traceparent"]
        assert tp.split("-")[1] == "0af7651916cd43dd8448eb211c80319c"   # the same trace, end to end
        # The application continues the trace with the push's traceparent.
        consumer.call("ack", {"sub": sub, "delivery_tag": push["data"]["delivery_tag"]}, traceparent=tp)
        headers = push["data"]["properties"]["headers"]
        assert headers["traceparent"].split("-")[1] == "0af7651916cd43dd8448eb211c80319c"
    pub = spans_named(collector, "publish amq.default")[0]
    assert pub["kind"] == PRODUCER and pub["parent_span_id"] == "b7ad6b7169203331"
    a = pub["attributes"]
    assert a["messaging.system"] == "rabbitmq" and a["messaging.operation.type"] == "send"
    assert a["messaging.operation.name"] == "publish" and a["messaging.destination.name"] == "amq.default"
    assert a["messaging.rabbitmq.destination.routing_key"] == q and a["messaging.message.id"] == "m-1"
    assert a["messaging.message.body.size"] == 6 and a["server.port"] == rabbit.port
    proc = spans_named(collector, "process " + q)[0]
    assert proc["kind"] == CONSUMER
    assert proc["trace_id"] == pub["trace_id"] and proc["parent_span_id"] == pub["span_id"]
    assert tp.split("-")[2] == proc["span_id"]
    assert proc["attributes"]["messaging.operation.type"] == "process"
    ack = spans_named(collector, "ack " + q)[0]
    assert ack["kind"] == CLIENT and ack["parent_span_id"] == proc["span_id"]
    assert ack["attributes"]["messaging.operation.type"] == "settle"


def test_metrics_match_requests(traced, collector):
    f = traced()
    with f.client() as c:
        for i in range(7):
            c.redis("SET", "m%d" % i, "v")
        for i in range(3):
            c.redis("GET", "m%d" % i)
        with pytest.raises(ferry.FerryError):
            c.redis("FLUSHALL")

        def settled():
            m = collector.metrics()
            pts = {(a["op"], a["outcome"]): v for a, v in m["ferry.requests"]["points"]}
            return pts.get(("redis", "ok")) == 10 and pts.get(("redis", "denied")) == 1
        wait_until(settled, timeout=15, what="ferry.requests to match")
    m = collector.metrics()
    assert m["ferry.requests"]["kind"] == "sum" and m["ferry.requests"]["monotonic"]
    assert m["ferry.requests"]["temporality"] == 2                  # cumulative
    dur = {a["op"]: h for a, h in m["ferry.request.duration"]["points"]}
    assert dur["redis"]["count"] == 11 and m["ferry.request.duration"]["unit"] == "s"
    assert len(dur["redis"]["buckets"]) == len(dur["redis"]["bounds"]) + 1
    assert sum(dur["redis"]["buckets"]) == 11 and dur["redis"]["sum"] > 0
    db = {a["db.operation.name"]: h for a, h in m["db.client.operation.duration"]["points"]}
    assert db["SET"]["count"] == 7 and db["GET"]["count"] == 3
    assert all(a["db.system.name"] == "redis" for a, _ in m["db.client.operation.duration"]["points"])
    assert m["ferry.clients"]["points"][0][1] >= 1
    conns = {(a["backend"], a["state"]): v for a, v in m["ferry.backend.connections"]["points"]}
    assert conns[("redis", "ready")] == 1
    nodes = [(a["backend"], a["role"], v) for a, v in m["ferry.backend.node.up"]["points"]]
    assert nodes == [("redis", "primary", 1)]
    assert {a["backend"]: v for a, v in m["ferry.backend.reconnects"]["points"]}["redis"] == 0
    assert "ferry.telemetry.spans.dropped" in m and "ferry.telemetry.export.failures" in m


def test_amqp_metrics_match_publishes(make_ferryd, collector, rabbit):
    """ferry.amqp.confirms, .nacks and .returns count the broker's answers:
    four publishes confirmed, one nacked by a full queue, one returned as
    unroutable (its ack then counts as neither)."""
    f = make_ferryd(["--amqp", rabbit.url], env=otel_env(collector), name="tmetrics.sock")
    wait_until(lambda: f.stats()["backends"]["amqp"]["state"] == "up", timeout=30, what="amqp")
    tag = uuid.uuid4().hex[:8]
    with f.client() as c:
        a = c.amqp
        q = a.declare_queue("m.ok." + tag)["queue"]
        for i in range(3):
            assert a.publish("", q, b"%d" % i) == {"confirmed": True}
        full = a.declare_queue("m.full." + tag, arguments={"x-max-length": 1, "x-overflow": "reject-publish"})["queue"]
        a.publish("", full, b"fits")
        with pytest.raises(ferry.FerryError) as e:
            a.publish("", full, b"rejected")
        assert e.value.code == "nacked"
        ex = "m.ex." + tag
        a.declare_exchange(ex, "direct")
        with pytest.raises(ferry.FerryError) as e:
            a.publish(ex, "nowhere", b"x", mandatory=True)
        assert e.value.code == "unroutable"

    def counts():
        m = collector.metrics()
        return tuple({x["backend"]: v for x, v in m.get(name, {"points": []})["points"]}.get("amqp")
                     for name in ("ferry.amqp.confirms", "ferry.amqp.nacks", "ferry.amqp.returns"))
    wait_until(lambda: counts() == (4, 1, 1), timeout=15, what="the AMQP counters to match")
    m = collector.metrics()
    assert all(m[n]["kind"] == "sum" and m[n]["monotonic"] and m[n]["temporality"] == 2
               for n in ("ferry.amqp.confirms", "ferry.amqp.nacks", "ferry.amqp.returns"))


def test_retry_after_is_honoured(traced, collector):
    collector.fail_next(1, 503, retry_after=2)
    f = traced()
    with f.client() as c:
        c.redis("SET", "retry", "1")
    spans_named(collector, "SET", timeout=20)
    posts = [t for path, _, t, _ in collector.requests if path == "/v1/traces"]
    assert len(posts) >= 2
    assert posts[1] - posts[0] >= 1.9        # waited as told, not sooner
    assert f.stats()["telemetry"]["export_failures"] == 0


def test_root_span_ids_are_unique_and_sent_again_unchanged(traced, collector):
    """A shaped root span's ids are drawn as its batch is written out
    (otlp_encode.c, "ids"): each is unique and not zero, and a batch sent
    again after a 503 carries the same bytes, ids included."""
    f = traced(OTEL_METRICS_EXPORTER="none", OTEL_BSP_MAX_EXPORT_BATCH_SIZE="64")
    with f.client() as c:
        c.redis("GET", "warm")                     # GET has a shape and a template from here on
        spans_named(collector, "GET")
        n0 = len(collector.requests)
        collector.fail_next(1, 503, retry_after=1)
        for i in range(300):
            c.redis("GET", "k%d" % i)
    gets = spans_named(collector, "GET", n=301, timeout=30)
    assert len(gets) == 301
    assert len({s["span_id"] for s in gets}) == 301 and len({s["trace_id"] for s in gets}) == 301
    assert "0" * 16 not in {s["span_id"] for s in gets} and "0" * 32 not in {s["trace_id"] for s in gets}
    bodies = [b for path, _, _, b in collector.requests[n0:] if path == "/v1/traces"]
    assert bodies[0] in bodies[1:]                 # the refused batch, again byte for byte
    assert f.stats()["telemetry"]["export_failures"] == 0 and collector.errors == []


def posts_per_body(collector):
    """How many times each distinct trace body was POSTed: a retry sends
    the same bytes again (see the test above)."""
    return collections.Counter(b for _, b in collector.trace_posts())


def export_log_lines(f, what):
    return [l for l in f.read_log().splitlines() if "otlp: export to" in l and what in l]


def test_retry_after_zero_still_waits_the_backoff(traced, collector):
    """A collector answering every POST with 503 and "Retry-After: 0" made
    ferryd POST again at once, about a thousand times a second, each retry
    logged. A Retry-After is a minimum: the retry still waits the backoff
    (0.5 to 1 s, then doubling), and retries are logged at most once in
    10 s."""
    collector.fail_always(503, retry_after=0)
    f = traced(OTEL_METRICS_EXPORTER="none")
    with f.client() as c:
        c.redis("SET", "again", "1")
    wait_until(lambda: collector.trace_posts(), what="a first POST")
    time.sleep(3)                      # a window to count POSTs in
    per_body = posts_per_body(collector)
    # Retries 0.5-1, 1-2 and 2-4 s apart: three or four POSTs of a batch
    # in the window; a batch sent without a wait would be POSTed thousands
    # of times.
    assert 2 <= max(per_body.values()) <= 6, sorted(per_body.values())
    assert 1 <= len(export_log_lines(f, "retrying")) <= 2
    assert f.ping()


def test_huge_retry_after_is_clamped(traced, collector):
    """A Retry-After of 2^61 seconds wrapped to 0 ms when multiplied, and
    ferryd POSTed in a tight loop. It is taken as 5 minutes, longer than an
    export's budget (OTEL_BSP_EXPORT_TIMEOUT), so each batch is POSTed once
    and given up, and the failures are logged at most once in 10 s."""
    collector.fail_always(429, retry_after=2305843009213693952)
    f = traced(OTEL_METRICS_EXPORTER="none")
    with f.client() as c:
        for i in range(40):
            c.redis("SET", "k%d" % i, "v")
            time.sleep(0.05)           # spread over many batches (schedule delay 100 ms)
    wait_until(lambda: f.stats()["telemetry"]["export_failures"] >= 10, timeout=15 * SLOW,
               what="ten batches given up")
    per_body = posts_per_body(collector)
    assert len(per_body) >= 10 and max(per_body.values()) <= 2, sorted(per_body.values())
    failures = f.stats()["telemetry"]["export_failures"]
    assert 1 <= len(export_log_lines(f, "failed")) <= 2 < failures
    assert not export_log_lines(f, "retrying")


@pytest.mark.parametrize("how, mib", [("length", 100), ("chunked", 256), ("headers", 64)],
                         ids=["100MiB", "chunked-endless", "endless-headers"])
def test_oversized_response_is_cut_off(traced, collector, how, mib):
    """A collector answering with a 100 MiB body, or a chunked one that
    goes on (256 MiB here), was read to its end or to the export timeout,
    at the cost of the requests ferryd serves. ferryd stops reading past
    64 KiB of body or of headers and hangs up, so the collector gets to
    write only that and what the sockets' buffers hold; the export counts
    as failed, and ferryd goes on serving."""
    collector.flood = (mib << 20, how)
    f = traced(OTEL_METRICS_EXPORTER="none")
    with f.client() as c:
        c.redis("SET", "flood", "1")
        wait_until(lambda: collector.floods, timeout=30 * SLOW, what="a flooded answer to end")
        assert c.redis("GET", "flood") == b"1" and c.ping() == "PONG"
    for sent, gone in list(collector.floods):
        assert gone and sent < 16 << 20, (sent, gone)
    wait_until(lambda: f.stats()["telemetry"]["export_failures"] >= 1, what="a failed export")
    assert export_log_lines(f, "passed 64 KiB; cut off")
    # Final: not POSTed again (curl's own limit on headers, a receive
    # error, was retried, drawing megabytes each time).
    assert max(posts_per_body(collector).values()) == 1
    assert f.stats()["telemetry"]["spans_exported"] == 0


def test_final_errors_are_not_retried(traced, collector):
    collector.fail_next(1, 400)
    f = traced(OTEL_METRICS_EXPORTER="none")
    with f.client() as c:
        c.redis("SET", "bad", "1")
    wait_until(lambda: f.stats()["telemetry"]["export_failures"] == 1, what="a counted failure")
    time.sleep(1.5)
    # The batch with SET was refused with 400 and never sent again (later
    # batches carry the stats requests above).
    assert not [s for s in collector.spans() if s["name"] == "SET"]
    assert f.stats()["telemetry"]["export_failures"] == 1


def test_collector_down_under_load(traced, collector):
    # Under ASan, freed memory waits in a quarantine (256 MiB by default)
    # before it is reused, so RSS climbs until that fills, at a pace set by
    # how fast ferryd frees memory: a small quarantine lets the bound below
    # measure ferryd's memory rather than ASan's.
    asan = os.environ.get("ASAN_OPTIONS", "")
    f = traced(OTEL_BSP_MAX_QUEUE_SIZE="2048", ASAN_OPTIONS=(asan + ":" if asan else "") + "quarantine_size_mb=16")
    collector.down()
    stop = threading.Event()
    errors = []

    def load():
        try:
            with f.client() as c:
                while not stop.is_set():
                    ids = [c.send("redis", [b"SET", b"load", b"x"]) for _ in range(50)]
                    for i in ids:
                        c.wait(i)
        except Exception as e:
            errors.append(repr(e))

    threads = [threading.Thread(target=load) for _ in range(2)]
    for t in threads:
        t.start()
    rss = []
    end = time.monotonic() + float(os.environ.get("FERRY_OUTAGE_S", "30"))
    while time.monotonic() < end:
        with open("/proc/%d/status" % f.proc.pid) as st:
            rss += [int(l.split()[1]) for l in st if l.startswith("VmRSS:")]
        time.sleep(1)
    tel = f.stats()["telemetry"]
    dropped = tel["spans_dropped"]
    collector.up()
    time.sleep(1.0)
    before = collector.span_count()
    time.sleep(1.5)
    stop.set()
    for t in threads:
        t.join(30)
    assert errors == []
    assert dropped > 0                                   # the queue filled and spans were dropped
    assert tel["spans_queued"] > 0                       # and spans wait for the collector
    assert max(rss) - rss[len(rss) // 3] < 32 * 1024, rss  # bounded: no growth after the queue filled
    wait_until(lambda: collector.span_count() > before, timeout=20, what="export to resume")
    assert f.ping()


def test_queue_bound_holds_for_requests_in_flight(traced, collector):
    """The queue bound counts spans that have ended; a burst of requests
    started while it had room ends after it filled. Every span is either
    exported or counted as dropped, and the daemon stays whole."""
    f = traced(OTEL_BSP_MAX_QUEUE_SIZE="4", OTEL_BSP_MAX_EXPORT_BATCH_SIZE="2",
               OTEL_TRACES_SAMPLER="always_on")
    n = 300
    with f.client() as c:
        # One write: ferryd reads the whole burst, and starts every span,
        # before the first reply comes back.
        c.send_raw(b"".join(ferry.encode_frame({"id": i, "op": "redis", "args": [b"SET", b"burst", b"%d" % i]})
                            for i in range(n)))
        for i in range(n):
            assert c.wait(i) == "OK"
    def accounted():
        return len([s for s in collector.spans() if s["name"] == "SET"]) + f.stats()["telemetry"]["spans_dropped"]
    wait_until(lambda: accounted() >= n, timeout=15 * SLOW, what="every span exported or dropped")
    assert accounted() == n
    assert f.stats()["telemetry"]["spans_dropped"] > 0

    def settled():  # each stats request adds a span of its own
        t = f.stats()["telemetry"]
        return t["spans_exported"] == collector.span_count() and t["spans_queued"] <= 1
    wait_until(settled, timeout=15 * SLOW, what="stats to count every exported span")
    assert f.ping()


def test_exports_over_new_connections(traced, collector):
    """A collector that closes each connection after answering: every
    export goes on a new socket, often under the last one's descriptor
    number, where ferryd reuses the stopped poll handle it kept
    (otlp_http.c). Every span arrives, and nothing fails.
    Each batch is awaited before the next is made: 20 batches at once
    would overflow the export queue (MAX_JOBS), which drops by design."""
    collector.close_connections = True
    f = traced(OTEL_BSP_MAX_EXPORT_BATCH_SIZE="2", OTEL_BSP_SCHEDULE_DELAY="5000")
    with f.client() as c:
        for i in range(0, 40, 2):
            c.redis("SET", "conn%d" % i, "v")
            c.redis("SET", "conn%d" % (i + 1), "v")
            spans_named(collector, "SET", n=i + 2)
    assert len(spans_named(collector, "SET", n=40)) == 40
    assert f.stats()["telemetry"]["spans_dropped"] == 0
    assert len(collector.peers) >= 20                  # a connection per export, or nearly
    assert f.stats()["telemetry"]["export_failures"] == 0
    assert collector.errors == []
    assert f.ping()


def test_kept_poll_handles_never_touch_a_reused_descriptor(traced, collector):
    """ferryd keeps stopped poll handles of export sockets for their
    descriptor's next use (otlp_http.c). When the collector closes each
    connection, the descriptor number is free, and the next client that
    connects to ferryd gets it. Dropping the kept handle then must not
    take that client's descriptor out of the event loop: each client
    below takes a number an export just freed, and every one of them
    must still be answered afterwards."""
    collector.close_connections = True
    f = traced(OTEL_BSP_MAX_EXPORT_BATCH_SIZE="1", OTEL_BSP_SCHEDULE_DELAY="5000", OTEL_METRICS_EXPORTER="none")
    held = []
    try:
        with f.client() as c:
            for i in range(12):
                c.redis("SET", "fd%d" % i, "v")
                spans_named(collector, "SET", n=i + 1)
                time.sleep(0.05)  # sequencing only: ferryd reads the answer and curl closes the socket
                held.append(f.client(timeout=5 * SLOW))
        for k, h in enumerate(held):
            assert h.redis("GET", "fd%d" % k) == b"v", k
    finally:
        for h in held:
            h.close()
    assert len(collector.peers) >= 12
    assert f.ping()


def test_gzip(traced, collector):
    f = traced(OTEL_EXPORTER_OTLP_COMPRESSION="gzip")
    with f.client() as c:
        c.redis("SET", "z", "1")
    spans_named(collector, "SET")
    wait_until(lambda: any(p == "/v1/metrics" for p, *_ in collector.requests), what="metrics")
    for path, headers, _, body in collector.requests:
        assert headers.get("content-encoding") == "gzip"
        assert headers.get("content-type") == "application/x-protobuf"
        assert body[:2] == b"\x1f\x8b"
    assert collector.errors == []


def test_resource_and_headers_from_environment(traced, collector):
    f = traced(OTEL_SERVICE_NAME="checkout",
               OTEL_RESOURCE_ATTRIBUTES="k8s.pod.name=web-7f9c,deployment.environment=prod%20eu",
               OTEL_EXPORTER_OTLP_HEADERS="x-api-key=s3cret%21,x-tenant=acme")
    with f.client() as c:
        c.ping()
    s = spans_named(collector, "ping")[0]
    r = s["resource"]
    assert r["service.name"] == "checkout" and r["k8s.pod.name"] == "web-7f9c"
    assert r["deployment.environment"] == "prod eu"
    assert r["process.pid"] == f.proc.pid and r["service.version"] and r["host.name"]
    assert len(r["service.instance.id"]) == 36
    headers = collector.requests[0][1]
    assert headers["x-api-key"] == "s3cret!" and headers["x-tenant"] == "acme"
    assert headers["user-agent"].startswith("ferryd/")   # as the OTLP exporter spec asks
    assert collector.proxied == []                        # no proxy variable: straight there


def test_proxy_from_environment(traced, collector):
    """libcurl's proxy variables are honoured (otlp_http.c tells curl not
    to look only when none is set): with http_proxy pointing at the test
    collector, an export to an unresolvable host arrives there as a proxy
    request for that host."""
    f = traced(OTEL_EXPORTER_OTLP_ENDPOINT="http://otlp.invalid:4318",
               http_proxy="http://127.0.0.1:%d" % collector.port, OTEL_METRICS_EXPORTER="none")
    with f.client() as c:
        c.redis("SET", "via", "proxy")
    spans_named(collector, "SET")
    assert collector.proxied and all(u == "http://otlp.invalid:4318/v1/traces" for u in collector.proxied)
    assert f.stats()["telemetry"]["export_failures"] == 0 and collector.errors == []


def test_console_exporter(make_ferryd, collector):
    f = make_ferryd(env={"OTEL_TRACES_EXPORTER": "console", "OTEL_BSP_SCHEDULE_DELAY": "100"}, name="con.sock")
    with f.client() as c:
        c.redis("SET", "k", "v")
    wait_until(lambda: "span SET kind=CLIENT" in f.read_log(), what="console span line")
    line = [l for l in f.read_log().splitlines() if l.startswith("span SET")][0]
    assert 'db.system.name="redis"' in line and "trace=" in line
    assert collector.requests == []


def test_console_exporter_counts_spans(make_ferryd, collector):
    """stats counted no span under the console exporter (make run) while it
    printed them: it counts them as the OTLP exporter does."""
    f = make_ferryd(env={"OTEL_TRACES_EXPORTER": "console", "OTEL_BSP_SCHEDULE_DELAY": "100"}, name="conc.sock")
    with f.client() as c:
        for i in range(5):
            c.redis("SET", "c%d" % i, "v")
        tel = c.stats()["telemetry"]
    printed = [l for l in f.read_log().splitlines() if l.startswith("span ")]
    assert len([l for l in printed if l.startswith("span SET ")]) == 5
    assert 5 <= tel["spans_exported"] <= len(printed)
    assert tel["spans_dropped"] == 0 and tel["export_failures"] == 0 and tel["spans_queued"] == 0
    assert collector.requests == []


def test_sdk_disabled(traced, collector):
    f = traced(OTEL_SDK_DISABLED="true")
    with f.client() as c:
        c.redis("SET", "k", "v")
    time.sleep(1.0)
    assert collector.requests == []


def test_sigterm_flushes_queued_spans(traced, collector):
    f = traced(OTEL_BSP_SCHEDULE_DELAY="60000", OTEL_METRIC_EXPORT_INTERVAL="60000")
    with f.client() as c:
        c.redis("SET", "last", "words")
    time.sleep(0.3)
    assert collector.spans() == []                     # not yet: the schedule delay is a minute
    f.signal(signal.SIGTERM)
    assert f.wait() == 0
    assert [s for s in collector.spans() if s["name"] == "SET"]
    assert any(p == "/v1/metrics" for p, *_ in collector.requests)


def test_sigterm_without_a_collector_exits_at_once(make_ferryd):
    """Nothing listens at the endpoint: the last exports at SIGTERM (the
    start-up requests' spans, the final metrics) are refused and, at
    shutdown, not retried. ferryd used to wait out the export timeout
    (10 s) retrying them."""
    endpoint = "http://127.0.0.1:%d" % free_port()     # nothing listens there
    f = make_ferryd(env={"OTEL_EXPORTER_OTLP_ENDPOINT": endpoint, "OTEL_TRACES_EXPORTER": "otlp",
                         "OTEL_METRICS_EXPORTER": "otlp"}, name="noc.sock")
    t0 = time.monotonic()
    f.signal(signal.SIGTERM)
    assert f.wait() == 0
    took = time.monotonic() - t0
    assert took < 5, took              # at once; the margin is for a loaded machine
    assert "gave up waiting" not in f.read_log()


def test_sigterm_with_a_collector_that_never_answers(make_ferryd):
    """A collector that takes the POSTs and never answers: at SIGTERM
    ferryd waits for its last exports at most 3 s (README.md, "Signals"),
    not the export timeout (10 s)."""
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(64)
    silent.settimeout(0.2)
    held, done = [], threading.Event()

    def accept():
        while not done.is_set():
            try:
                held.append(silent.accept()[0])   # kept open, never answered
            except OSError:
                pass
    t = threading.Thread(target=accept, daemon=True)
    t.start()
    try:
        endpoint = "http://127.0.0.1:%d" % silent.getsockname()[1]
        f = make_ferryd(env={"OTEL_EXPORTER_OTLP_ENDPOINT": endpoint, "OTEL_TRACES_EXPORTER": "otlp",
                             "OTEL_METRICS_EXPORTER": "otlp", "OTEL_BSP_SCHEDULE_DELAY": "100"},
                        name="sil.sock")
        wait_until(lambda: held, what="a POST to the silent collector")
        t0 = time.monotonic()
        f.signal(signal.SIGTERM)
        assert f.wait() == 0
        took = time.monotonic() - t0
        assert took < 3 + 4, took      # the bound, and a margin for a loaded machine
        assert "telemetry: gave up waiting for" in f.read_log()
    finally:
        done.set()
        t.join()
        silent.close()
        for c in held:
            c.close()


def test_cli_traceparent(traced, collector):
    f = traced()
    r = subprocess.run([os.path.join(os.environ.get("FERRY_BUILD", ""), "ferry") if os.environ.get("FERRY_BUILD")
                        else cli.__globals__["FERRY_CLI"], "--socket", f.sock, "--traceparent", TP, "redis", "PING"],
                       capture_output=True)
    assert r.returncode == 0 and r.stdout == b"PONG\n"
    s = spans_named(collector, "PING")[0]
    assert s["trace_id"] == TP[3:35] and s["parent_span_id"] == TP[36:52]


def test_cli_consume_prints_traceparent(make_ferryd, collector, rabbit):
    f = make_ferryd(["--amqp", rabbit.url], env=otel_env(collector), name="tcli.sock")
    wait_until(lambda: f.stats()["backends"]["amqp"]["state"] == "up", timeout=30, what="amqp")
    q = "clitrace." + uuid.uuid4().hex[:8]
    with f.client() as c:
        c.amqp.declare_queue(q)
        c.call("publish", {"exchange": "", "routing_key": q, "body": b"hi"}, traceparent=TP)
    r = cli(f, "consume", q, "--count", "1", "-v")
    assert r.returncode == 0, r.stderr
    lines = r.stdout.decode().splitlines()
    tp = [l for l in lines if l.startswith("traceparent: ")][0].split(": ")[1]
    assert tp.split("-")[1] == TP[3:35]     # the publisher's trace, carried through the broker
    assert lines[-1] == "hi"


def test_per_signal_settings(make_ferryd, collector):
    env = otel_env(collector, OTEL_EXPORTER_OTLP_TRACES_HEADERS="x-signal=traces",
                   OTEL_EXPORTER_OTLP_METRICS_HEADERS="x-signal=metrics",
                   OTEL_EXPORTER_OTLP_METRICS_COMPRESSION="gzip",
                   OTEL_EXPORTER_OTLP_TRACES_ENDPOINT=collector.endpoint + "/v1/traces")
    f = make_ferryd(env=env, name="sig.sock")
    with f.client() as c:
        c.redis("SET", "s", "1")
    spans_named(collector, "SET")
    wait_until(lambda: any(p == "/v1/metrics" for p, *_ in collector.requests), what="metrics")
    for path, headers, _, _ in collector.requests:
        want = "traces" if path == "/v1/traces" else "metrics"
        assert headers["x-signal"] == want
        assert (headers.get("content-encoding") == "gzip") == (want == "metrics")
    assert collector.errors == []


def test_redis_script_and_peer_attributes(traced, collector):
    f = traced()
    with f.client() as c:
        sha = c.redis("SCRIPT", "LOAD", "return 1").decode()
        assert c.redis("EVALSHA", sha, "0") == 1
    s = spans_named(collector, "EVALSHA")[0]
    assert s["attributes"]["db.stored_procedure.name"] == sha
    assert s["attributes"]["network.peer.address"].endswith("redis.sock")


def test_partial_success_is_logged(traced, collector):
    collector.partial = (3, "three spans were too old")
    f = traced()
    with f.client() as c:
        c.redis("SET", "p", "1")
    spans_named(collector, "SET")
    wait_until(lambda: "rejected 3 spans: three spans were too old" in f.read_log(), what="the log line")
    assert f.stats()["telemetry"]["export_failures"] == 0   # logged, not retried or counted


@pytest.fixture
def tls_collector(tmp):
    key, cert = os.path.join(tmp, "key.pem"), os.path.join(tmp, "cert.pem")
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", key, "-out", cert,
                    "-days", "1", "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1"],
                   check=True, capture_output=True)
    c = Collector(tls=(cert, key)).start()
    yield c, cert
    c.stop()


def test_https_verifies_the_collector(make_ferryd, tls_collector):
    collector, ca = tls_collector
    trusted = make_ferryd(env=otel_env(collector, OTEL_EXPORTER_OTLP_CERTIFICATE=ca), name="tls1.sock")
    with trusted.client() as c:
        c.redis("SET", "tls", "1")
    spans_named(collector, "SET")
    untrusted = make_ferryd(env=otel_env(collector, OTEL_METRICS_EXPORTER="none"), name="tls2.sock")
    with untrusted.client() as c:
        c.redis("GET", "tls")
    wait_until(lambda: untrusted.stats()["telemetry"]["export_failures"] >= 1, timeout=30,
               what="an unverified collector to be refused")
    assert not [s for s in collector.spans() if s["name"] == "GET"]


def test_db_operation_cardinality_is_bounded(traced, collector):
    f = traced()
    with f.client() as c:
        for i in range(80):          # 80 distinct (unknown) commands
            with pytest.raises(ferry.FerryError):
                c.redis("NOSUCHCMD%d" % i)
        c.redis("SET", "after", "1")

        def other():
            pts = collector.metrics()["db.client.operation.duration"]["points"]
            names = {a["db.operation.name"] for a, _ in pts}
            return "_OTHER" in names and len(names) <= 64
        wait_until(other, timeout=15, what="_OTHER to absorb the rest")
    assert f.ping()
