"""The access policy by peer credentials (policy_file, docs/security.md),
with real identities: the test runs as root, and a second client runs as
nobody (uid 65534) or as an unknown uid through setpriv. Every check is
made by a real ferryd against a real redis-server (whose own COMMAND INFO
gives the categories and key positions) and a real RabbitMQ."""

import json
import os
import signal
import subprocess
import sys

import pytest

from conftest import SLOW, wait_until

NOBODY = 65534

# Runs as another uid: performs each call of a JSON list on one
# connection, printing one JSON line per call: ["ok", result] or
# ["error", code]. A line on stdin runs the next batch (for reloads).
AS_OTHER = r"""
import json, sys
sys.path.insert(0, sys.argv[2])
import ferry
def run(c, calls):
    out = []
    for op, args in calls:
        try:
            r = c.call(op, args)
            out.append(["ok", r])
        except ferry.FerryError as e:
            out.append(["error", e.code, e.message])
    return out
try:
    c = ferry.Client(sys.argv[1], timeout=10)
except Exception as e:
    print(json.dumps([["connect", repr(e)]]), flush=True); sys.exit(0)
for line in sys.stdin:
    try:
        print(json.dumps(run(c, json.loads(line)), default=lambda o: o.decode(errors="replace")
                         if isinstance(o, bytes) else repr(o)), flush=True)
    except (ferry.ConnectionClosed, OSError):
        print(json.dumps([["closed"]]), flush=True)
"""

POLICY = """
# root: everything
[admin]
peers = uid:0
ops = *
redis_commands = +@all
redis_keys = *
amqp_configure = *
amqp_write = *
amqp_read = *

[app]
peers = uid:%(nobody)d
ops = ping hello redis publish get
redis_commands = +@read +@write +@scripting -@dangerous +client|id
redis_keys = app:*
amqp_write = app.*
amqp_read = app.*
"""


class Other:
    """A client process running as another uid."""

    def __init__(self, sock, uid):
        stub = os.path.dirname(sys.modules["ferry"].__file__)
        self.p = subprocess.Popen(
            ["setpriv", "--reuid=%d" % uid, "--regid=%d" % uid, "--clear-groups", "/usr/bin/python3", "-c",
             AS_OTHER, sock, stub], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)

    def run(self, *calls):
        self.p.stdin.write(json.dumps(calls) + "\n")
        self.p.stdin.flush()
        return json.loads(self.p.stdout.readline())

    def close(self):
        self.p.stdin.close()
        self.p.wait(10 * SLOW)


def codes(results):
    return [r[0] if r[0] != "error" else r[1] for r in results]


@pytest.fixture
def policed(make_ferryd, rabbit, tmp):
    os.chmod(tmp, 0o755)
    path = os.path.join(tmp, "policy.conf")
    with open(path, "w") as f:
        f.write(POLICY % {"nobody": NOBODY})
    f = make_ferryd(["--amqp", rabbit.url, "--set", "policy_file=" + path, "--set", "socket_mode=0666"])
    wait_until(lambda: f.stats()["backends"]["amqp"]["state"] == "up", timeout=30 * SLOW, what="amqp up")
    wait_until(lambda: "commands in" in f.read_log(), timeout=15 * SLOW, what="the command table")
    f.policy_path = path
    others = []

    def other(uid=NOBODY):
        o = Other(f.sock, uid)
        others.append(o)
        return o

    f.other = other
    yield f
    for o in others:
        o.close()


def test_two_identities_with_different_rights(policed):
    app = policed.other()
    r = app.run(["redis", ["SET", "app:1", "v"]], ["redis", ["GET", "app:1"]], ["redis", ["GET", "other:1"]],
                ["redis", ["KEYS", "*"]], ["redis", ["CLIENT", "ID"]], ["redis", ["CLIENT", "LIST"]],
                ["stats", None], ["ping", None])
    assert codes(r) == ["ok", "ok", "denied", "denied", "ok", "denied", "denied", "ok"], r
    assert r[1][1] == "v"
    assert "policy 'app' does not allow key 'other:1' (redis_keys)" in r[2][2]
    assert "'keys'" in r[3][2] and "redis_commands" in r[3][2]      # KEYS is @dangerous
    assert "does not allow op 'stats'" in r[6][2]
    # root, under 'admin', may do all of it.
    with policed.client() as c:
        assert c.redis("GET", "other:1") is None
        c.redis("KEYS", "*")
        st = c.stats()["policies"]
        assert st["file"] == policed.policy_path
        assert st["by_name"]["app"]["clients"] == 1 and st["by_name"]["admin"]["clients"] == 1
        assert st["by_name"]["app"]["denied"] == 4 and st["by_name"]["admin"]["denied"] == 0


def test_keys_inside_multi_key_commands(policed):
    app = policed.other()
    r = app.run(["redis", ["MSET", "app:a", "1", "app:b", "2"]],
                ["redis", ["MSET", "app:a", "1", "other:b", "2"]],
                ["redis", ["MGET", "app:a", "app:b"]],
                ["redis", ["SUNIONSTORE", "app:d", "app:a", "other:c"]],
                ["redis", ["EVAL", "return 1", "2", "app:a", "app:b"]],
                ["redis", ["EVAL", "return 1", "2", "app:a", "other:b"]],
                ["redis", ["EVAL", "return 1", "1", "app:a", "other:b"]],     # other:b is an ARGV, not a key
                ["redis", ["XREAD", "COUNT", "1", "STREAMS", "app:s", "other:s", "0", "0"]],
                ["redis", ["ZUNIONSTORE", "app:z", "2", "app:x", "other:y"]],
                ["redis", ["EVAL", "return 1", "-1"]])
    assert codes(r) == ["ok", "denied", "ok", "denied", "ok", "denied", "ok", "denied", "denied", "denied"], r
    assert "other:b" in r[1][2] and "other:c" in r[3][2] and "other:s" in r[7][2] and "other:y" in r[8][2]
    assert "malformed key count" in r[9][2]


def test_amqp_names(policed):
    with policed.client() as c:   # as root: the topology
        c.amqp.declare_exchange("app.ex", "fanout")
        c.amqp.declare_exchange("other.ex", "fanout")
        c.amqp.declare_queue("app.q")
        c.amqp.bind("app.q", "app.ex")
        c.amqp.declare_queue("other.q")
    app = policed.other()
    r = app.run(["publish", {"exchange": "app.ex", "routing_key": "", "body": "hi"}],
                ["publish", {"exchange": "other.ex", "routing_key": "", "body": "hi"}],
                ["get", {"queue": "app.q"}],
                ["get", {"queue": "other.q"}],
                ["queue.declare", {"queue": "app.q2"}])
    assert codes(r) == ["ok", "denied", "ok", "denied", "denied"], r
    assert "exchange 'other.ex' (amqp_write)" in r[1][2]
    assert "queue 'other.q' (amqp_read)" in r[3][2]
    assert "does not allow op 'queue.declare'" in r[4][2]


def test_reload_takes_effect_on_the_next_request(policed):
    app = policed.other()
    assert codes(app.run(["redis", ["GET", "app:1"]])) == ["ok"]
    with open(policed.policy_path) as f:
        text = f.read()
    with open(policed.policy_path, "w") as f:
        f.write(text.replace("ops = ping hello redis publish get", "ops = ping"))
    policed.signal(signal.SIGHUP)
    wait_until(lambda: "reload: policy from" in policed.read_log(), timeout=10 * SLOW, what="the reload")
    r = app.run(["redis", ["GET", "app:1"]], ["ping", None])        # the same connection
    assert codes(r) == ["denied", "ok"], r
    assert "does not allow op 'redis'" in r[0][2]
    # A broken file changes nothing, and says why.
    with open(policed.policy_path, "w") as f:
        f.write("[app]\npeers = uid:%d\nops = ping nosuchop\n" % NOBODY)
    policed.signal(signal.SIGHUP)
    wait_until(lambda: "no op named 'nosuchop'" in policed.read_log(), timeout=10 * SLOW, what="the refusal")
    assert codes(app.run(["redis", ["GET", "app:1"]], ["ping", None])) == ["denied", "ok"]
    with policed.client() as c:
        assert c.stats()["policies"]["by_name"]["app"]["denied"] >= 2     # counts survive the reload


def test_unknown_peer_is_refused_and_a_default_admits_it(policed):
    stranger = policed.other(uid=4242)
    r = stranger.run(["ping", None])
    assert r[0][0] in ("closed", "error", "connect"), r
    wait_until(lambda: "no policy in %s covers this peer (uid 4242 gid 4242)" % policed.policy_path
               in policed.read_log(), timeout=10 * SLOW, what="the refusal logged")
    with policed.client() as c:
        assert c.stats()["policies"]["refused_peers"] == 1
    with open(policed.policy_path, "a") as f:
        f.write("\n[*]\nops = ping\n")
    policed.signal(signal.SIGHUP)
    wait_until(lambda: "(3 policies)" in policed.read_log(), timeout=10 * SLOW, what="the reload")
    later = policed.other(uid=4242)
    assert codes(later.run(["ping", None], ["redis", ["GET", "app:1"]])) == ["ok", "denied"]
