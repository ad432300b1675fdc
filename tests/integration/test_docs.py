"""docs/protocol.md and proto/ferry.cddl against a live ferryd: the ops that
hello lists, the keys of stats, and the request rules the protocol states
(deadline range, ids, traceparent, a stray 0xff). A doc that drifts from
the daemon fails here."""

import os
import re
import struct

import cbor2
import pytest

import ferry
from conftest import ROOT, wait_until

PROTOCOL_MD = ROOT + "/docs/protocol.md"
CDDL = ROOT + "/proto/ferry.cddl"


def read(path):
    with open(path, encoding="utf-8") as f:
        return f.read()


def section(text, heading):
    """The lines under a markdown heading, up to the next heading of the
    same or a higher level."""
    level = len(heading) - len(heading.lstrip("#"))
    lines = text.splitlines()
    start = lines.index(heading) + 1
    end = len(lines)
    for i in range(start, len(lines)):
        m = re.match(r"(#+) ", lines[i])
        if m and len(m.group(1)) <= level:
            end = i
            break
    return lines[start:end]


def documented_ops(lines):
    """Ops documented in a block of protocol.md: a heading naming them in
    backticks (### `ping`), a paragraph that starts with them in bold
    (**`publish`**.), or the first cell of a table whose first column is
    headed "op"."""
    ops = set()
    in_op_table = False
    for line in lines:
        if line.startswith("|"):
            cells = [c.strip() for c in line.strip().strip("|").split("|")]
            if cells[0] == "op":
                in_op_table = True
            elif in_op_table:
                ops.update(re.findall(r"`([^`]+)`", cells[0]))
            continue
        in_op_table = False
        if re.match(r"#{3,4} ", line):
            ops.update(re.findall(r"`([^`]+)`", line))
        m = re.match(r"\*\*`([^`]+)`\*\*", line)
        if m:
            ops.add(m.group(1))
    return ops


def hello_example_ops(text):
    """The "ops" of the hello example under Versioning."""
    block = "\n".join(section(text, "## Versioning"))
    m = re.search(r'"ops":\s*\[([^\]]*)\]', block)
    return set(re.findall(r'"([^"]+)"', m.group(1)))


def cddl_ops(text):
    m = re.search(r"^op-name = (.*?)\n\n", text, re.S | re.M)
    return set(re.findall(r'"([^"]+)"', m.group(1)))


def test_hello_lists_exactly_the_documented_ops(make_ferryd, amqp_ferryd):
    doc = read(PROTOCOL_MD)
    with amqp_ferryd.client() as c:
        served = c.hello()["ops"]
    assert len(served) == len(set(served))
    served = set(served)
    ops_section = section(doc, "## Ops")
    documented = documented_ops(ops_section)
    assert served - documented == set(), "ops served but not documented under ## Ops in protocol.md"
    assert documented - served == set(), "ops documented in protocol.md that ferryd does not serve"
    assert hello_example_ops(doc) == served, "the hello example in protocol.md lists other ops"
    assert cddl_ops(read(CDDL)) == served, "op-name in proto/ferry.cddl lists other ops"

    # Without amqp_url the RabbitMQ ops are neither listed nor served.
    amqp_doc = documented_ops(section(doc, "### RabbitMQ (AMQP 0.9.1)"))
    assert amqp_doc and amqp_doc < served
    plain = make_ferryd(name="plain.sock")
    with plain.client() as c:
        assert set(c.hello()["ops"]) == served - amqp_doc
        for op in sorted(amqp_doc):
            with pytest.raises(ferry.FerryError) as e:
                c.call(op, {})
            assert e.value.code == "unknown_op", op


def key_paths(value, prefix=()):
    """Every path in a stats reply, maps and arrays included: map keys
    joined by '.', an array's elements as '[]'."""
    if isinstance(value, dict):
        for k, v in value.items():
            path = prefix + (k,)
            yield path
            yield from key_paths(v, path)
    elif isinstance(value, list):
        for v in value:
            yield from key_paths(v, prefix[:-1] + (prefix[-1] + "[]",))


def stats_doc_rows(doc):
    """The key column of the table under ### `stats`: `a.b[].c`, where
    <name> stands for any key."""
    rows = []
    for line in section(doc, "### `stats`"):
        m = re.match(r"\|\s*`([^`]+)`\s*\|", line)
        if m:
            rows.append(m.group(1))
    return rows


def row_matches(row, path):
    parts = row.split(".")
    if len(parts) != len(path):
        return False
    for want, got in zip(parts, path):
        pattern = re.escape(want)
        pattern = re.sub(r"<[a-z_]+>", ".+", pattern.replace(r"\<", "<").replace(r"\>", ">"))
        if not re.fullmatch(pattern, got):
            return False
    return True


ALLOW_ALL_POLICY = """
[everything]
peers = uid:%d
ops = *
redis_commands = +@all
redis_keys = *
amqp_configure = *
amqp_write = *
amqp_read = *
"""


def test_every_stats_key_is_documented(make_ferryd, rabbit, tmp):
    # With a policy in force, so that its per-policy keys are there too.
    path = os.path.join(tmp, "policy.conf")
    with open(path, "w") as f:
        f.write(ALLOW_ALL_POLICY % os.getuid())
    amqp_ferryd = make_ferryd(["--amqp", rabbit.url, "--set", "policy_file=" + path])
    wait_until(lambda: amqp_ferryd.stats()["backends"]["amqp"]["state"] == "up", timeout=30, what="amqp up")
    wait_until(lambda: "commands in" in amqp_ferryd.read_log(), timeout=15, what="the command table")
    with amqp_ferryd.client() as c:
        c.ping()
        c.redis("SET", "k", "v")
        with pytest.raises(ferry.FerryError):
            c.redis("FLUSHALL")
        st = c.stats()
    paths = set(key_paths(st))
    assert ("backends", "redis", "connections[]", "state") in paths   # arrays are walked
    rows = stats_doc_rows(read(PROTOCOL_MD))
    assert len(rows) == len(set(rows)), "a stats key is documented twice"
    missing = sorted(".".join(p) for p in paths if not any(row_matches(r, p) for r in rows))
    assert missing == [], "stats keys with no row in protocol.md's stats table"
    # Cluster and Sentinel keys appear only in those modes: test_redis_cluster.py
    # and test_redis_sentinel.py check their rows against live replies.
    stale = [r for r in rows if not any(row_matches(r, p) for p in paths)
             and not r.startswith(("backends.redis.cluster", "backends.redis.sentinel"))]
    assert stale == [], "rows in protocol.md's stats table that a live stats reply lacks"


def ask(client, request):
    body = cbor2.dumps(request)
    client.send_raw(struct.pack(">I", len(body)) + body)
    return client.recv_frame()


def test_deadline_range(ferryd):
    with ferryd.client() as c:
        assert ask(c, {"id": 1, "op": "ping", "deadline": 2**32 - 1}) == {"id": 1, "result": "PONG"}
        for bad in (2**32, 2**64 - 1, 0):
            r = ask(c, {"id": 2, "op": "ping", "deadline": bad})
            assert r["id"] == 2 and r["error"]["code"] == "bad_request", bad
            assert "4294967295" in r["error"]["message"]
        assert c.ping() == "PONG"   # the connection stays usable


def test_traceparent_must_be_text_and_bad_text_is_ignored(ferryd):
    with ferryd.client() as c:
        r = ask(c, {"id": 1, "op": "ping", "traceparent": b"00-ab"})
        assert r["error"]["code"] == "bad_request" and "traceparent" in r["error"]["message"]
        assert ask(c, {"id": 2, "op": "ping", "traceparent": "not a traceparent"}) == \
            {"id": 2, "result": "PONG"}


def test_float_ids_are_refused_without_an_id(ferryd):
    with ferryd.client() as c:
        for bad in (1.0, float(2**53 + 2), -1):
            r = ask(c, {"id": bad, "op": "ping"})
            assert "id" not in r and r["error"]["code"] == "bad_request", bad
            assert "unsigned integer" in r["error"]["message"]
        r = ask(c, {"id": 7.0, "op": "ping"})
        assert "not a float" in r["error"]["message"]
        # The largest id a double holds exactly, sent as an integer, is fine.
        assert ask(c, {"id": 2**53, "op": "ping"}) == {"id": 2**53, "result": "PONG"}


def test_break_byte_gets_a_message_that_names_it(ferryd):
    with ferryd.client() as c:
        c.send_raw(struct.pack(">I", 1) + b"\xff")
        r = c.recv_frame()
        assert r["error"]["code"] == "bad_request" and "0xff" in r["error"]["message"]
        c.send_raw(struct.pack(">I", 2) + b"\x9f\xff")      # an indefinite array
        r = c.recv_frame()
        assert "indefinite-length" in r["error"]["message"]
        assert c.ping() == "PONG"
