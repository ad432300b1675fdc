"""The health op and `ferry health [--live]`, the probes of systemd units,
scripts and Kubernetes: the real CLI against a live ferryd, with Redis up,
Redis stopped, and an AMQP broker configured on a port where nothing
listens."""

import re
import signal
import subprocess

import pytest

import ferry
from conftest import FERRY_CLI, SLOW, Redis, free_port, wait_until


def health(f, *extra, timeout=None):
    cmd = [FERRY_CLI, "health"] + list(extra) + ["-s", f.sock]   # options after the command
    if timeout:
        cmd += ["--timeout", str(timeout)]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=60 * SLOW)
    return r.returncode, r.stdout, r.stderr


def test_ready_with_redis_up(ferryd):
    with ferryd.client() as c:
        h = c.health()
    # AMQP is not configured, so it is neither listed nor waited for.
    assert h == {"ready": True, "backends": {"redis": "up"}, "errors": {}}
    assert health(ferryd) == (0, "ready\nredis: up\n", "")
    assert health(ferryd, "--live") == (0, "live\n", "")


def test_not_ready_while_redis_is_down_and_ready_again_after(ferryd, redis, tmp):
    redis.stop()
    wait_until(lambda: ferryd.redis_state() == "down", timeout=15 * SLOW, what="redis down")
    code, out, err = health(ferryd)
    assert code == 1, (out, err)
    lines = out.splitlines()
    assert lines[0] == "not ready"
    assert re.fullmatch(r"redis: down \(.+\)", lines[1]), out
    with ferryd.client() as c:
        h = c.health()
    assert h["ready"] is False and h["backends"] == {"redis": "down"}
    assert h["errors"]["redis"] and h["errors"]["redis"] in lines[1]
    # Liveness does not depend on the backends: the daemon answers.
    assert health(ferryd, "--live")[0] == 0

    again = Redis(tmp)
    again.sock, again.port = redis.sock, redis.port
    again.start()
    try:
        wait_until(lambda: health(ferryd)[0] == 0, timeout=30 * SLOW, what="ready again")
        assert health(ferryd)[1] == "ready\nredis: up\n"
    finally:
        again.stop()


def test_amqp_configured_but_down(make_ferryd):
    f = make_ferryd(["--amqp", "amqp://guest:guest@127.0.0.1:%d/" % free_port()])
    wait_until(lambda: f.stats()["backends"]["amqp"]["state"] == "down", timeout=30 * SLOW, what="amqp down")
    code, out, err = health(f)
    assert code == 1, (out, err)
    assert out.splitlines()[0] == "not ready"
    assert "redis: up" in out.splitlines()
    assert re.search(r"^amqp: down \(.+\)$", out, re.M), out
    with f.client() as c:
        h = c.health()
    assert h["ready"] is False and h["backends"] == {"redis": "up", "amqp": "down"}
    assert set(h["errors"]) == {"amqp"}
    assert health(f, "--live")[0] == 0


def test_no_daemon_is_neither_live_nor_ready(ferryd):
    ferryd.stop()
    for extra in ((), ("--live",)):
        code, out, err = health(ferryd, *extra)
        assert code == 1 and out == "" and "cannot connect" in err, (extra, code, out, err)


def test_a_frozen_daemon_fails_the_probe_within_the_timeout(ferryd):
    ferryd.signal(signal.SIGSTOP)
    try:
        for extra in ((), ("--live",)):
            code, out, err = health(ferryd, *extra, timeout=300)
            assert code == 1 and "no answer" in err, (extra, code, out, err)
    finally:
        ferryd.signal(signal.SIGCONT)
    assert health(ferryd)[0] == 0


def test_health_takes_no_args(ferryd):
    with ferryd.client() as c:
        with pytest.raises(ferry.FerryError) as e:
            c.call("health", {})
        assert e.value.code == "bad_request"
    r = subprocess.run([FERRY_CLI, "-s", ferryd.sock, "health", "extra"], capture_output=True, text=True)
    assert r.returncode == 64 and "takes no arguments" in r.stderr
