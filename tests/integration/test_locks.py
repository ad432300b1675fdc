"""Distributed locks (lock.acquire, lock.release, lock.extend) against a
real redis-server: mutual exclusion under a 20-client race, fencing,
dead holders released at once, and the ferry lock CLI."""

import os
import signal
import subprocess
import threading
import time

import pytest

import ferry
from conftest import FERRY_CLI, cli, wait_until


def test_acquire_release_extend(ferryd, redis):
    with ferryd.client() as c:
        got = c.locks.acquire("job", 10000)
        assert got["acquired"] is True and got["ttl_ms"] == 10000
        assert len(got["token"]) == 32 and int(got["token"], 16) >= 0
        assert isinstance(got["fence"], int) and got["fence"] >= 1
        # The keys, in one hash slot: the lock holds the token.
        assert redis.cli("GET", "lock:{job}") == got["token"]
        assert int(redis.cli("GET", "lock:{job}:fence")) == got["fence"]
        # Held: another attempt without a wait says so (a result, not an error).
        assert c.locks.acquire("job", 10000) == {"acquired": False}
        assert c.locks.extend("job", got["token"], 90000) == {"ttl_ms": 90000}
        assert int(redis.cli("PTTL", "lock:{job}")) > 10000
        assert c.locks.release("job", got["token"]) == {"released": True}
        assert redis.cli("EXISTS", "lock:{job}") == "0"
        # Released: the token no longer holds it.
        for call in (lambda: c.locks.release("job", got["token"]),
                     lambda: c.locks.extend("job", got["token"], 1000)):
            with pytest.raises(ferry.FerryError) as e:
                call()
            assert e.value.code == "not_held"
        st = c.stats()["backends"]["redis"]["locks"]
        assert st["acquired"] == 1 and st["released"] == 1 and st["extended"] == 1
        assert st["not_acquired"] == 1 and st["not_held"] == 2 and st["held"] == 0


def test_wrong_token_is_not_held(ferryd):
    with ferryd.client() as c:
        got = c.locks.acquire("w", 10000)
        other = "0" * 32 if got["token"] != "0" * 32 else "1" * 32
        for token in (other, "not a token", ""):
            with pytest.raises(ferry.FerryError) as e:
                c.locks.release("w", token)
            assert e.value.code == "not_held", token
        # Still held by the right token.
        assert c.locks.release("w", got["token"]) == {"released": True}


def test_bad_arguments(ferryd):
    with ferryd.client() as c:
        bad = [
            ("lock.acquire", {"name": "a", "ttl_ms": 0}),
            ("lock.acquire", {"name": "", "ttl_ms": 10}),
            ("lock.acquire", {"name": "a}b", "ttl_ms": 10}),
            ("lock.acquire", {"name": "a"}),
            ("lock.acquire", {"name": "a", "ttl_ms": 10, "wait": 5}),
            ("lock.acquire", {"name": "a", "ttl_ms": -1}),
            ("lock.acquire", {"name": "a", "ttl_ms": 2**31}),
            ("lock.release", {"name": "a"}),
            ("lock.extend", {"name": "a", "token": "0" * 32}),
            ("lock.acquire", None),
        ]
        for op, args in bad:
            with pytest.raises(ferry.FerryError) as e:
                c.call(op, args)
            assert e.value.code == "bad_request", (op, args)
        assert c.ping() == "PONG"


def test_names_are_bytes(ferryd):
    with ferryd.client() as c:
        got = c.locks.acquire(b"bin\x00name", 10000)
        assert got["acquired"]
        assert c.redis("GET", b"lock:{bin\x00name}") == got["token"].encode()
        assert c.redis("GET", b"lock:{bin\x00name}:fence") == str(got["fence"]).encode()
        assert c.locks.release(b"bin\x00name", got["token"]) == {"released": True}


def test_fencing_numbers_strictly_increase(ferryd):
    with ferryd.client() as c:
        fences = []
        for _ in range(5):
            got = c.locks.acquire("fenced", 5000)
            fences.append(got["fence"])
            c.locks.release("fenced", got["token"])
        # Even after the lock expired by itself.
        got = c.locks.acquire("fenced", 1)
        fences.append(got["fence"])
        got = c.locks.acquire("fenced", 5000, wait_ms=5000)
        fences.append(got["fence"])
        assert fences == sorted(set(fences)) and len(fences) == 7


@pytest.mark.parametrize("daemons", [1, 2])
def test_twenty_clients_one_holder_at_a_time(make_ferryd, daemons):
    """20 clients race for one lock, through one ferryd or split across
    two sharing the Redis (where only Redis arbitrates)."""
    fds = [make_ferryd(name="f%d.sock" % k) for k in range(daemons)]
    rounds = 8
    entered = []          # fences, in the order the holders entered
    errors = []

    def worker(i):
        try:
            with fds[i % daemons].client() as c:
                for _ in range(rounds):
                    got = c.locks.acquire("race", 30000, wait_ms=60000, deadline=90000)
                    assert got["acquired"], got
                    # The invariant: nobody else inside.
                    inside = c.redis("INCR", "race:inside")
                    assert inside == 1, "two holders at once: %r" % inside
                    entered.append(got["fence"])
                    time.sleep(0.002)
                    assert c.redis("DECR", "race:inside") == 0
                    c.locks.release("race", got["token"])
        except Exception as e:  # noqa: BLE001 - reported below
            errors.append(repr(e))

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(20)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert errors == []
    assert len(entered) == 20 * rounds
    # Holders came one after another: their fences in that order increase.
    assert entered == sorted(entered) and len(set(entered)) == len(entered)
    sts = [f.stats()["backends"]["redis"]["locks"] for f in fds]
    assert sum(st["acquired"] for st in sts) == 20 * rounds
    assert all(st["held"] == 0 and st["waiting"] == 0 for st in sts)


def test_wait_until_released(ferryd):
    with ferryd.client() as a, ferryd.client() as b:
        held = a.locks.acquire("q", 60000)
        # Still held when the wait runs out: not acquired, in time.
        assert b.locks.acquire("q", 1000, wait_ms=200) == {"acquired": False}
        # Released while waiting: taken long before the holder's TTL.
        rid = b.send("lock.acquire", {"name": "q", "ttl_ms": 1000, "wait_ms": 50000})
        time.sleep(0.2)
        a.locks.release("q", held["token"])
        got = b.wait(rid)
        assert got["acquired"] and got["fence"] > held["fence"]


def test_dead_holder_is_released_at_once(ferryd, redis):
    holder = ferryd.client()
    got = holder.locks.acquire("dead", 600000)   # ten minutes
    assert got["acquired"]
    holder.close()
    with ferryd.client() as c:
        # Far inside the TTL: ferryd released it when the connection dropped.
        wait_until(lambda: redis.cli("EXISTS", "lock:{dead}") == "0", timeout=10, what="release")
        again = c.locks.acquire("dead", 1000)
        assert again["acquired"] and again["fence"] == got["fence"] + 1
        st = c.stats()["backends"]["redis"]["locks"]
        assert st["dead_released"] == 1
        # A lock released by its holder is not released again when it goes.
        c.locks.release("dead", again["token"])
    with ferryd.client() as c:
        assert c.stats()["backends"]["redis"]["locks"]["dead_released"] == 1


def test_dead_holder_does_not_release_anothers_lock(ferryd, redis):
    with ferryd.client() as a, ferryd.client() as b:
        old = a.locks.acquire("expiring", 1)      # expires at once
        wait_until(lambda: redis.cli("EXISTS", "lock:{expiring}") == "0", what="expiry")
        new = b.locks.acquire("expiring", 60000)
        assert new["acquired"] and old["token"] != new["token"]
        a.close()
        time.sleep(0.3)
        # The token check kept b's lock.
        assert redis.cli("GET", "lock:{expiring}") == new["token"]
        assert b.locks.release("expiring", new["token"]) == {"released": True}


def test_acquire_cancelled_before_its_reply_is_released(ferryd, redis):
    with ferryd.client() as c:
        redis.freeze()
        try:
            with pytest.raises(ferry.FerryError) as e:
                c.call("lock.acquire", {"name": "orphan", "ttl_ms": 600000}, deadline=300)
            assert e.value.code == "timeout"
        finally:
            redis.thaw()
        # The SET ran once Redis woke, for a request nobody waits for:
        # ferryd gave the lock back.
        wait_until(lambda: c.stats()["backends"]["redis"]["locks"]["orphan_released"] == 1,
                   timeout=10, what="orphan release")
        wait_until(lambda: redis.cli("EXISTS", "lock:{orphan}") == "0", timeout=10, what="lock gone")
        assert c.locks.acquire("orphan", 1000)["acquired"]


def test_context_manager(ferryd, redis):
    with ferryd.client() as c:
        with c.locks.hold("cm", 10000) as lk:
            assert redis.cli("GET", "lock:{cm}") == lk["token"]
            with pytest.raises(ferry.LockNotAcquired):
                with ferryd.client() as other:
                    with other.locks.hold("cm", 10000, wait_ms=50):
                        pass
        assert redis.cli("EXISTS", "lock:{cm}") == "0"


def test_cli_acquire_extend_release(ferryd, redis):
    out = cli(ferryd, "lock", "acquire", "clilock", "--ttl", "60000")
    assert out.returncode == 0, out.stderr
    text = out.stdout.decode()
    fields = dict(line.split(": ", 1) for line in text.strip().splitlines())
    token = fields["token"]
    assert int(fields["fence"]) >= 1 and len(token) == 32
    # The CLI's connection held it and is gone: ferryd released it at once.
    wait_until(lambda: redis.cli("EXISTS", "lock:{clilock}") == "0", timeout=10, what="release")
    # A lock held by another connection can be extended and released by token.
    with ferryd.client() as c:
        got = c.locks.acquire("clilock", 60000)
        out = cli(ferryd, "lock", "extend", "clilock", got["token"], "--ttl", "90000")
        assert out.returncode == 0, out.stderr
        assert int(redis.cli("PTTL", "lock:{clilock}")) > 60000
        out = cli(ferryd, "lock", "release", "clilock", "0" * 32)
        assert out.returncode != 0 and b"not_held" in out.stderr
        out = cli(ferryd, "lock", "release", "clilock", got["token"])
        assert out.returncode == 0, out.stderr
        assert redis.cli("EXISTS", "lock:{clilock}") == "0"


def test_cli_detached_lock_outlives_the_command(ferryd, redis):
    out = cli(ferryd, "lock", "acquire", "kept", "--ttl", "60000", "--detach")
    assert out.returncode == 0, out.stderr
    token = dict(line.split(": ", 1) for line in out.stdout.decode().strip().splitlines())["token"]
    assert redis.cli("GET", "lock:{kept}") == token
    busy = cli(ferryd, "lock", "acquire", "kept", "--ttl", "1000", "--wait", "100")
    assert busy.returncode == 1 and b"not acquired" in busy.stderr
    out = cli(ferryd, "lock", "release", "kept", token)
    assert out.returncode == 0 and b"released: true" in out.stdout


def test_cli_lock_run(ferryd, redis, tmp):
    probe = os.path.join(tmp, "probe")
    # The command runs while the lock is held, and its status is the CLI's.
    out = cli(ferryd, "lock", "run", "runlock", "--ttl", "1500", "--", "sh", "-c",
              "redis-cli -s %s GET 'lock:{runlock}' > %s; sleep 2; exit 7" % (redis.sock, probe))
    assert out.returncode == 7, out.stderr
    with open(probe) as f:
        token = f.read().strip()
    assert len(token) == 32
    # It ran past the first TTL (1.5 s) because the CLI extended it, and
    # then released it.
    assert redis.cli("EXISTS", "lock:{runlock}") == "0"
    with ferryd.client() as c:
        st = c.stats()["backends"]["redis"]["locks"]
        assert st["extended"] >= 1 and st["released"] >= 1
    out = cli(ferryd, "lock", "run", "runlock", "--ttl", "1000", "--", "true")
    assert out.returncode == 0, out.stderr


def test_cli_lock_run_killed_releases(ferryd, redis):
    p = subprocess.Popen([FERRY_CLI, "--socket", ferryd.sock, "lock", "run", "killed", "--ttl",
                          "600000", "--", "sleep", "60"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         start_new_session=True)
    try:
        wait_until(lambda: redis.cli("EXISTS", "lock:{killed}") == "1", timeout=10, what="lock taken")
        os.killpg(p.pid, signal.SIGKILL)   # the CLI and its command
        p.wait(10)
        # The CLI's connection held the lock: ferryd frees it at once.
        wait_until(lambda: redis.cli("EXISTS", "lock:{killed}") == "0", timeout=10, what="release")
    finally:
        if p.poll() is None:
            os.killpg(p.pid, signal.SIGKILL)
            p.wait()
        p.stdout.close()
        p.stderr.close()


def test_cli_lock_run_busy(ferryd):
    with ferryd.client() as c:
        c.locks.acquire("busy", 60000)
        out = cli(ferryd, "lock", "run", "busy", "--ttl", "1000", "--wait", "100", "--", "true")
        assert out.returncode != 0 and b"not acquired" in out.stderr


KEYS_POLICY = """
[me]
peers = uid:%d
ops = *
redis_commands = +@all
redis_keys = lock:{mine}* ratelimit:mine
"""


def test_policy_checks_the_locks_keys(make_ferryd, tmp):
    path = os.path.join(tmp, "policy.conf")
    with open(path, "w") as f:
        f.write(KEYS_POLICY % os.getuid())
    fd = make_ferryd(["--set", "policy_file=" + path])
    wait_until(lambda: "commands in" in fd.read_log(), timeout=15, what="the command table")
    with fd.client() as c:
        got = c.locks.acquire("mine", 10000)
        assert got["acquired"]
        assert c.locks.release("mine", got["token"]) == {"released": True}
        assert c.ratelimit("mine", 10, 10)["allowed"]
        for call in (lambda: c.locks.acquire("theirs", 10000),
                     lambda: c.locks.release("theirs", "0" * 32),
                     lambda: c.ratelimit("theirs", 10, 10)):
            with pytest.raises(ferry.FerryError) as e:
                call()
            assert e.value.code == "denied"


def test_shutdown_with_waiting_and_held_locks(ferryd, redis):
    a = ferryd.client()
    b = ferryd.client()
    held = a.locks.acquire("bye", 60000)
    assert held["acquired"]
    b.send("lock.acquire", {"name": "bye", "ttl_ms": 1000, "wait_ms": 60000}, deadline=60000)
    wait_until(lambda: ferryd.stats()["backends"]["redis"]["locks"]["waiting"] == 1, what="a waiter")
    # ferryd stops cleanly (the fixture checks the exit code, that no handle
    # is left open, and the sanitizers' reports) with a waiter and a holder.
    assert ferryd.stop() == 0
    a.close()
    b.close()


def test_locks_survive_script_flush(ferryd, redis):
    with ferryd.client() as c:
        got = c.locks.acquire("flushed", 10000)
        assert redis.cli("SCRIPT", "FLUSH") == "OK"
        # The built-in scripts are loaded again on NOSCRIPT, unseen.
        assert c.locks.extend("flushed", got["token"], 20000) == {"ttl_ms": 20000}
        assert c.locks.release("flushed", got["token"]) == {"released": True}
        assert c.locks.acquire("flushed", 10000)["fence"] == got["fence"] + 1
        assert c.stats()["backends"]["redis"]["scripts"]["reloads"] >= 2
