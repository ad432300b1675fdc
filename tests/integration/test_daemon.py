"""ferryd as a process: configuration, the socket file, signals, and the
`ferry` CLI."""

import os
import signal
import socket
import stat
import subprocess
import time

import pytest

import ferry
from conftest import FERRY_CLI, FERRYD, SLOW, cli, wait_until


def run_ferryd(*args, env=None):
    e = dict(os.environ)
    e.pop("FERRY_CONFIG", None)
    if env:
        e.update(env)
    return subprocess.run([FERRYD] + list(args), capture_output=True, text=True, env=e, timeout=30)


def test_help_and_version():
    r = run_ferryd("--help")
    assert r.returncode == 0
    assert "--socket" in r.stdout and "redis_url" in r.stdout
    r = run_ferryd("--version")
    assert r.returncode == 0 and r.stdout.startswith("ferryd ")
    r = run_ferryd("--bogus")
    assert r.returncode == 2


def test_bad_config_file_names_key_and_line(tmp):
    conf = os.path.join(tmp, "bad.conf")
    with open(conf, "w") as f:
        f.write("# ok\nsocket = %s/x.sock\nmax_clients = many\n" % tmp)
    r = run_ferryd("--config", conf)
    assert r.returncode == 2
    assert "line 3" in r.stderr and "max_clients" in r.stderr
    with open(conf, "w") as f:
        f.write("colour = blue\n")
    r = run_ferryd("--config", conf)
    assert r.returncode == 2 and "unknown key 'colour'" in r.stderr
    r = run_ferryd("--config", os.path.join(tmp, "missing.conf"))
    assert r.returncode == 2


def test_bad_environment_and_flags(tmp):
    r = run_ferryd("--check-config", env={"FERRY_REDIS_POOL": "0"})
    assert r.returncode == 2 and "FERRY_REDIS_POOL" in r.stderr
    r = run_ferryd("--redis", "http://nope")
    assert r.returncode == 2 and "redis_url" in r.stderr
    r = run_ferryd("--set", "redis_deny=A [B] [C]")
    assert r.returncode == 2 and "redis_deny" in r.stderr
    r = run_ferryd("--log-level", "chatty")
    assert r.returncode == 2 and "log_level" in r.stderr
    r = run_ferryd("--check-config", "--set", "max_frame=100000", "--set", "client_max_output=5000")
    assert r.returncode == 2 and "client_max_output" in r.stderr
    r = run_ferryd("--check-config", "--socket", tmp + "/ok.sock")
    assert r.returncode == 0


def test_precedence_file_env_flag(tmp, redis, make_ferryd):
    conf = os.path.join(tmp, "p.conf")
    with open(conf, "w") as f:
        f.write("max_clients = 11\ndefault_deadline_ms = 1111\nredis_pool = 2\n")
    f = make_ferryd(["--config", conf, "--set", "redis_pool=3"],
                    env={"FERRY_MAX_CLIENTS": "22", "FERRY_REDIS_POOL": "4"})
    st = f.stats()
    assert st["clients"]["max"] == 22                          # env over file
    assert len(st["backends"]["redis"]["connections"]) == 3    # flag over env


def test_socket_mode_and_owner(make_ferryd):
    f = make_ferryd(["--set", "socket_mode=0600", "--set", "socket_owner=root:root"])
    st = os.stat(f.sock)
    assert stat.S_ISSOCK(st.st_mode)
    assert stat.S_IMODE(st.st_mode) == 0o600
    assert st.st_uid == 0


def test_bad_socket_owner(tmp, redis):
    r = run_ferryd("--socket", tmp + "/o.sock", "--redis", redis.url,
                   "--set", "socket_owner=no-such-user-xyz")
    assert r.returncode == 2 and "no-such-user-xyz" in r.stderr   # refused as configuration
    assert not os.path.exists(tmp + "/o.sock")


def test_live_socket_refuses_second_daemon(ferryd, redis):
    r = run_ferryd("--socket", ferryd.sock, "--redis", redis.url)
    assert r.returncode == 1
    assert "another ferryd is live" in r.stderr
    assert ferryd.ping()


def test_stale_socket_is_replaced(tmp, redis, make_ferryd):
    f = make_ferryd()
    f.signal(signal.SIGKILL)
    f.proc.wait()
    assert os.path.exists(f.sock)       # the dead daemon left its socket file
    g = make_ferryd()
    assert g.ping()
    assert "stale socket" in g.read_log()


def test_path_that_is_not_a_socket(tmp, redis):
    path = os.path.join(tmp, "file.sock")
    with open(path, "w") as f:
        f.write("precious")
    r = run_ferryd("--socket", path, "--redis", redis.url)
    assert r.returncode == 1 and "not a socket" in r.stderr
    with open(path) as f:
        assert f.read() == "precious"


def test_sigterm_drains_in_flight_requests(ferryd, redis):
    c = ferryd.client()
    redis.freeze()
    ids = [c.send("redis", [b"INCR", b"drain"], deadline=8000 * SLOW) for _ in range(20)]
    wait_until(lambda: ferryd.stats()["backends"]["redis"]["connections"][0]["pending"] >= 20,
               what="requests pending")
    ferryd.signal(signal.SIGTERM)
    # Stops accepting at once: the socket file goes away.
    wait_until(lambda: not os.path.exists(ferryd.sock), what="socket removed")
    # New requests on an open connection are refused politely.
    with pytest.raises(ferry.FerryError) as e:
        c.ping()
    assert e.value.code == "shutting_down"
    time.sleep(0.3)
    assert ferryd.proc.poll() is None     # still draining
    redis.thaw()
    results = sorted(c.wait(i) for i in ids)
    assert results == list(range(1, 21))  # every in-flight request finished
    c.close()
    assert ferryd.wait() == 0
    log = ferryd.read_log()
    assert "draining" in log and "exited" in log


def test_drain_timeout_answers_shutting_down(make_ferryd, redis):
    f = make_ferryd(["--set", "drain_timeout_ms=300"])
    c = f.client()
    redis.freeze()
    try:
        ids = [c.send("redis", [b"GET", b"x"], deadline=20000) for _ in range(5)]
        wait_until(lambda: f.stats()["backends"]["redis"]["connections"][0]["pending"] >= 5,
                   what="pending")
        f.signal(signal.SIGINT)
        for i in ids:
            with pytest.raises(ferry.FerryError) as e:
                c.wait(i)
            assert e.value.code == "shutting_down"
        assert f.wait() == 0
    finally:
        redis.thaw()
        c.close()


def test_sighup_reloads(tmp, make_ferryd):
    conf = os.path.join(tmp, "r.conf")
    with open(conf, "w") as fh:
        fh.write("redis_deny = FLUSHALL\nlog_level = info\n")
    f = make_ferryd(["--config", conf])
    with f.client() as c:
        assert c.redis("SET", "k", "v") == "OK"
    with open(conf, "w") as fh:
        fh.write("redis_deny = FLUSHALL, SET\nlog_level = debug\nredis_pool = 5\n"
                 "max_frame = 100000\nsocket = /tmp/elsewhere.sock\n")
    f.signal(signal.SIGHUP)
    wait_until(lambda: "reloaded configuration" in f.read_log(), what="reload")
    with f.client() as c:
        with pytest.raises(ferry.FerryError) as e:
            c.redis("SET", "k", "v")
        assert e.value.code == "denied"
        assert c.redis("GET", "k") == b"v"
    log = f.read_log()
    assert "key 'redis_pool' changed but needs a restart" in log
    assert "key 'max_frame' changed but needs a restart" in log
    assert "key 'socket'" not in log   # the --socket flag still wins over the file
    assert f.ping()
    # A broken file changes nothing.
    with open(conf, "w") as fh:
        fh.write("redis_deny = \nmax_clients = lots\n")
    f.signal(signal.SIGHUP)
    wait_until(lambda: "reload failed" in f.read_log(), what="failed reload")
    with f.client() as c:
        with pytest.raises(ferry.FerryError):
            c.redis("SET", "k", "v")


def test_cli(ferryd):
    r = cli(ferryd, "ping")
    assert r.returncode == 0 and r.stdout == b"PONG\n"
    r = cli(ferryd, "redis", "SET", "k", "v", "EX", "10")
    assert r.returncode == 0 and r.stdout == b"OK\n"
    r = cli(ferryd, "redis", "GET", "k")
    assert r.stdout == b"v\n"
    r = cli(ferryd, "redis", "GET", "nothing")
    assert r.returncode == 0 and r.stdout == b"\n"
    assert cli(ferryd, "redis", "INCRBY", "n", "-5").stdout == b"-5\n"
    cli(ferryd, "redis", "ZADD", "lb", "1", "a", "2", "b")
    r = cli(ferryd, "redis", "ZREVRANGE", "lb", "0", "-1", "WITHSCORES")
    assert r.stdout == b"b\n2\na\n1\n"
    r = cli(ferryd, "redis", "FLUSHALL")
    assert r.returncode == 1
    assert r.stderr.startswith(b"(error) denied: ")
    r = cli(ferryd, "redis", "LPUSH", "k", "x")
    assert r.returncode == 1 and r.stderr.startswith(b"(error) backend_error: WRONGTYPE")
    r = cli(ferryd, "stats")
    assert r.returncode == 0
    lines = r.stdout.decode().splitlines()
    assert any(line.startswith("clients.connected: ") for line in lines)
    assert "requests.redis.ok: 6" in lines
    assert "backends.redis.state: up" in lines
    r = cli(ferryd, "hello")
    assert b"redis" in r.stdout


def test_cli_timeout_and_errors(ferryd, redis):
    redis.freeze()
    try:
        t = time.monotonic()
        r = cli(ferryd, "redis", "GET", "k", timeout=300)
        assert r.returncode == 1
        assert r.stderr.startswith(b"(error) timeout: ")
        assert time.monotonic() - t < 5
    finally:
        redis.thaw()
    r = subprocess.run([FERRY_CLI, "--socket", "/nonexistent/x.sock", "ping"], capture_output=True)
    assert r.returncode == 2 and b"cannot connect" in r.stderr
    r = subprocess.run([FERRY_CLI, "frobnicate"], capture_output=True)
    assert r.returncode == 64


def test_cli_default_socket_matches_conf():
    from conftest import ROOT
    default = None
    with open(ROOT + "/conf/ferryd.conf") as f:
        for line in f:
            if line.startswith("socket ="):
                default = line.split("=", 1)[1].strip()
    env = dict(os.environ)
    env.pop("FERRY_SOCKET", None)
    r = subprocess.run([FERRY_CLI, "--help"], capture_output=True, text=True, env=env)
    assert default and default in r.stdout
    r = subprocess.run([FERRY_CLI, "ping"], capture_output=True, text=True, env=env)
    if not os.path.exists(default):
        assert default in r.stderr


def test_unix_socket_to_many_clients_is_bounded_by_fd(ferryd):
    # Accepting and closing connections quickly leaks nothing.
    for _ in range(300):
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.connect(ferryd.sock)
        s.close()
    wait_until(lambda: ferryd.stats()["clients"]["connected"] == 1, what="clients closed")
    fds = len(os.listdir("/proc/%d/fd" % ferryd.proc.pid))
    assert fds < 40
