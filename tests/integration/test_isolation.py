"""One client must not break, stall or bloat Redis for the others.

Each test has a hostile client do what outside testers did to a shared
ferryd, while a second client's requests run beside it: none of the second
client's requests may fail because of the first."""

import os
import socket
import struct
import time

import cbor2
import pytest

from conftest import SLOW, ferry, wait_until

DEEP9 = "return {{{{{{{{{1}}}}}}}}}"   # 9 levels: hiredis 0.14 cannot read it
DEEP8 = "return {{{{{{{{1}}}}}}}}"     # 8 levels: the deepest it reads


def conn_stats(f):
    return f.stats()["backends"]["redis"]


def peak_rss_kib(pid):
    with open("/proc/%d/status" % pid) as fh:
        for line in fh:
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    raise AssertionError("no VmHWM")


def rss_kib(pid):
    with open("/proc/%d/status" % pid) as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise AssertionError("no VmRSS")


def interleave(hostile, victim, hostile_argv, rounds, victim_key=b"k"):
    """Pipelines rounds of (hostile command, victim GET) on two clients, so
    that both go out on the shared connection in turn; returns the victim's
    results and the hostile client's responses."""
    hid, vid = [], []
    for _ in range(rounds):
        hid.append(hostile.send("redis", [ferry.to_bytes(a) for a in hostile_argv]))
        vid.append(victim.send("redis", [b"GET", victim_key]))
    vres = [victim.wait(i) for i in vid]
    hres = []
    for i in hid:
        try:
            hres.append(("ok", hostile.wait(i)))
        except ferry.FerryError as e:
            hres.append((e.code, e.message))
    return vres, hres


def test_deep_reply_costs_only_its_own_request(ferryd):
    with ferryd.client() as a, ferryd.client() as b:
        b.redis("SET", "k", "v")
        vres, hres = interleave(a, b, ["EVAL", DEEP9, "0"], 200)
        assert vres == [b"v"] * 200
        assert all(code == "backend_error" and "nested deeper" in msg for code, msg in hres), hres[:3]
        # The deepest reply the reader takes still comes back whole.
        r = a.redis("EVAL", DEEP8, "0")
        for _ in range(7):
            assert isinstance(r, list) and len(r) == 1
            r = r[0]
        assert r == [1]
    st = conn_stats(ferryd)
    assert st["connections"][0]["drops"] == 0
    assert st["replies_refused"] == 200


def test_oversized_reply_is_refused_unread_and_memory_stays_bounded(make_ferryd, redis):
    f = make_ferryd(["--set", "max_frame=1048576", "--set", "client_max_output=4194304"])
    # A 64 MiB value from a tiny request, and a 2M-element reply.
    redis.cli("SETRANGE", "big", str(64 * 1024 * 1024 - 1), "x")
    redis.cli("SADD", "s", "a")
    with f.client() as a, f.client() as b:
        b.redis("SET", "k", "v")
        before = rss_kib(f.proc.pid)
        vres, hres = interleave(a, b, ["GET", "big"], 4)
        assert vres == [b"v"] * 4
        assert [c for c, _ in hres] == ["too_large"] * 4, hres
        vres, hres = interleave(a, b, ["SRANDMEMBER", "s", "-2000000"], 2)
        assert vres == [b"v"] * 2
        assert [c for c, _ in hres] == ["too_large"] * 2, hres
        # A reply just under the limit still comes through.
        b.redis("SET", "fits", b"y" * 1000000)
        assert a.redis("GET", "fits") == b"y" * 1000000
        peak = peak_rss_kib(f.proc.pid)
    # Holding one 64 MiB reply, or hiredis's objects for 2M elements, would
    # add far more than this.
    assert peak - before < 40 * 1024, (before, peak)
    st = conn_stats(f)
    assert st["connections"][0]["drops"] == 0
    assert st["replies_refused"] == 6


def test_error_inside_an_array_is_a_map(ferryd):
    with ferryd.client() as c:
        r = c.redis("EVAL", "return {1, redis.error_reply('MY boom'), redis.status_reply('FINE'), 'x'}", "0")
        assert r == [1, {"error": "MY boom"}, "FINE", b"x"]
        # A top-level error stays the request's backend_error.
        with pytest.raises(ferry.FerryError) as e:
            c.redis("EVAL", "return redis.error_reply('MY top')", "0")
        assert e.value.code == "backend_error" and "MY top" in e.value.message


@pytest.mark.parametrize("kind", ["script", "function"])
def test_busy_script_is_killed_at_its_deadline(ferryd, redis, kind):
    # Redis acts on SCRIPT KILL only after the script has run this long.
    assert redis.cli("CONFIG", "SET", "busy-reply-threshold", "100") == "OK"
    if kind == "function":
        lib = "#!lua name=busy\nredis.register_function('spin', function() while true do end end)"
        assert redis.cli("FUNCTION", "LOAD", "REPLACE", lib) == "busy"
        argv = [b"FCALL", b"spin", b"0"]
    else:
        argv = [b"EVAL", b"while true do end", b"0"]
    with ferryd.client() as a, ferryd.client() as b:
        b.redis("SET", "k", "v")
        hid = a.send("redis", argv, deadline=300 * SLOW)
        time.sleep(0.05)
        vid = b.send("redis", [b"GET", b"k"], deadline=20000 * SLOW)
        with pytest.raises(ferry.FerryError) as e:
            a.wait(hid)
        assert e.value.code == "timeout"
        # The other client's GET, queued behind the script on the shared
        # connection, is answered once the script is killed.
        assert b.wait(vid) == b"v"
        assert a.redis("PING") == "PONG"
    log = ferryd.read_log()
    what = "FUNCTION" if kind == "function" else "SCRIPT"
    assert "sending %s KILL" % what in log
    wait_until(lambda: "the busy script was killed" in ferryd.read_log(), what="kill logged")
    st = conn_stats(ferryd)
    assert st["scripts_killed"] == 1
    assert st["connections"][0]["drops"] == 0


@pytest.mark.parametrize("argv", [
    ["MIGRATE", "127.0.0.1", "1", "k", "0", "5000"],
    ["XREAD", "COUNT", "1", "BLOCK", "0", "STREAMS", "s", "$"],
    ["XREADGROUP", "GROUP", "g", "c", "BLOCK", "10", "STREAMS", "s", ">"],
])
def test_deny_rules(ferryd, argv):
    with ferryd.client() as c:
        with pytest.raises(ferry.FerryError) as e:
            c.redis(*argv)
        assert e.value.code == "denied"


def test_deny_rules_match_in_place_only(ferryd):
    # Words that denied commands use, where they are not the subcommand or
    # option: a client name KILL, a stream, group and consumer named block.
    with ferryd.client() as c:
        assert c.redis("CLIENT", "SETNAME", "KILL") == "OK"
        assert c.redis("XADD", "block", "*", "f", "v")
        r = c.redis("XREAD", "STREAMS", "block", "0")
        assert r[0][0] == b"block"
        assert c.redis("XGROUP", "CREATE", "block", "block", "0") == "OK"
        r = c.redis("XREADGROUP", "GROUP", "block", "block", "STREAMS", "block", ">")
        assert r[0][0] == b"block"


def test_acl_user_is_the_policy_that_holds_inside_scripts(make_ferryd, redis):
    # The deny-list guards the shared connection against mistakes; scripts
    # get past it. A Redis ACL user without @dangerous is refused inside
    # scripts too (docs/protocol.md).
    assert redis.cli("ACL", "SETUSER", "ferry", "on", ">s3cret", "~*", "&*", "+@all", "-@dangerous") == "OK"
    redis.cli("SET", "keep", "1")
    f = make_ferryd(redis_url="redis://ferry:s3cret@127.0.0.1:%d/0" % redis.port)
    with f.client() as c:
        for argv in (["EVAL", "return redis.call('FLUSHALL')", "0"],
                     ["EVAL", "return redis.call('KEYS', '*')", "0"]):
            with pytest.raises(ferry.FerryError) as e:
                c.redis(*argv)
            assert e.value.code == "backend_error" and "can't run this command" in e.value.message, e.value.message
        lib = "#!lua name=evil\nredis.register_function('wipe', function() return redis.call('FLUSHALL') end)"
        assert c.redis("FUNCTION", "LOAD", "REPLACE", lib) == b"evil"
        with pytest.raises(ferry.FerryError) as e:
            c.redis("FCALL", "wipe", "0")
        assert "can't run this command" in e.value.message
        sha = c.redis("SCRIPT", "LOAD", "return redis.call('FLUSHALL')")
        with pytest.raises(ferry.FerryError) as e:
            c.redis("EVALSHA", sha, "0")
        assert "can't run this command" in e.value.message
        assert c.redis("GET", "keep") == b"1"
    assert redis.cli("GET", "keep") == "1"
