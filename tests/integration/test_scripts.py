"""script.load and script.call against a real redis-server: scripts run by
name, and keep working after Redis lost them (SCRIPT FLUSH, restart)."""

import pytest

import ferry
from conftest import wait_until

INCRBY = "return redis.call('INCRBY', KEYS[1], ARGV[1])"


def test_load_and_call(ferryd, redis):
    with ferryd.client() as c:
        got = c.scripts.load("incrby", INCRBY)
        assert got["name"] == "incrby" and len(got["sha"]) == 40
        assert redis.cli("SCRIPT", "EXISTS", got["sha"]) == "1"
        assert c.scripts.call("incrby", ["n"], [5]) == 5
        assert c.scripts.call("incrby", ["n"], [2]) == 7
        # Replies come as the redis op gives them.
        c.scripts.load("multi", "return {ARGV[1], 3, {'x'}}")
        assert c.scripts.call("multi", [], ["a"]) == [b"a", 3, [b"x"]]
        # A load under a used name replaces the script.
        c.scripts.load("incrby", "return redis.call('INCRBY', KEYS[1], ARGV[1] * 10)")
        assert c.scripts.call("incrby", ["n"], [1]) == 17
        st = c.stats()["backends"]["redis"]["scripts"]
        assert st["registered"] == 2 and st["loads"] == 3 and st["calls"] == 4


def test_call_survives_script_flush_and_restart(ferryd, redis):
    with ferryd.client() as c:
        c.scripts.load("incrby", INCRBY)
        assert c.scripts.call("incrby", ["n"], [1]) == 1
        assert redis.cli("SCRIPT", "FLUSH") == "OK"
        assert c.scripts.call("incrby", ["n"], [1]) == 2
        reloads = c.stats()["backends"]["redis"]["scripts"]["reloads"]
        assert reloads >= 1
    redis.stop()
    redis.start()
    wait_until(lambda: ferryd.redis_state() == "up", timeout=30, what="redis back")
    with ferryd.client() as c:
        wait_until(lambda: _call_ok(c), timeout=30, what="script.call after restart")
        assert c.scripts.call("incrby", ["fresh"], [3]) == 3
        assert c.stats()["backends"]["redis"]["scripts"]["reloads"] > reloads


def _call_ok(c):
    try:
        c.scripts.call("incrby", ["probe"], [1])
        return True
    except ferry.FerryError as e:
        assert e.code == "unavailable", e
        return False


def test_errors(ferryd):
    with ferryd.client() as c:
        with pytest.raises(ferry.FerryError) as e:
            c.scripts.call("nope")
        assert e.value.code == "bad_request" and "nope" in e.value.message
        with pytest.raises(ferry.FerryError) as e:
            c.scripts.load("broken", "return (")
        assert e.value.code == "backend_error"
        with pytest.raises(ferry.FerryError) as e:
            c.scripts.call("broken")
        assert e.value.code == "bad_request"   # a failed load registers nothing
        c.scripts.load("fails", "return redis.error_reply('MYERR boom')")
        with pytest.raises(ferry.FerryError) as e:
            c.scripts.call("fails")
        assert e.value.code == "backend_error" and "boom" in e.value.message
        for op, args in [("script.load", {"name": "x"}), ("script.load", {"name": "", "body": "return 1"}),
                         ("script.call", {"name": "fails", "keys": [1]}),
                         ("script.call", {"name": "fails", "keys": "k"}),
                         ("script.call", {"name": "fails", "extra": 1})]:
            with pytest.raises(ferry.FerryError) as e:
                c.call(op, args)
            assert e.value.code == "bad_request", (op, args)
        assert c.ping() == "PONG"
