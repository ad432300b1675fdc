"""ferryd and systemd, on the host (fast): the unit files as systemd reads
them, socket activation through systemd-socket-activate, and the
notification protocol received on a real AF_UNIX datagram socket standing
in for systemd's. A real systemd runs the units in
tests/deploy/test_systemd_container.py."""

import os
import re
import signal
import socket
import stat
import subprocess
import time

import pytest

from conftest import FERRYD, FERRY_CLI, ROOT, SANITIZED, SANITIZER_MARKS, SLOW, Redis, wait_until

UNITS = os.path.join(ROOT, "systemd")


def unit_copies(tmp):
    """The units with ExecStart= at the built ferryd, which verify wants to
    exist (the installed path, /usr/local/sbin/ferryd, may not)."""
    d = os.path.join(tmp, "units")
    os.makedirs(d)
    for name in ("ferryd.service", "ferryd.socket"):
        with open(os.path.join(UNITS, name)) as f:
            text = f.read()
        with open(os.path.join(d, name), "w") as f:
            f.write(text.replace("/usr/local/sbin/ferryd", FERRYD))
    return d


def test_the_service_runs_the_installed_binary():
    with open(os.path.join(UNITS, "ferryd.service")) as f:
        text = f.read()
    assert re.search(r"^ExecStart=/usr/local/sbin/ferryd ", text, re.M)
    assert re.search(r"^Type=notify$", text, re.M)


def test_units_verify(tmp):
    d = unit_copies(tmp)
    r = subprocess.run(["systemd-analyze", "verify", "ferryd.service", "ferryd.socket"], cwd=d,
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and r.stderr == "", r.stderr


def test_security_exposure_is_ok(tmp):
    d = unit_copies(tmp)
    r = subprocess.run(["systemd-analyze", "security", "--offline=true", "--no-pager", "./ferryd.service"],
                       cwd=d, capture_output=True, text=True, timeout=60)
    m = re.search(r"Overall exposure level for ferryd\.service: (\d+\.\d+) (\w+)", r.stdout)
    assert m, r.stdout + r.stderr
    assert float(m.group(1)) <= 1.5 and m.group(2) == "OK", m.group(0)


def test_stop_timeout_outlasts_the_drain():
    with open(os.path.join(UNITS, "ferryd.service")) as f:
        text = f.read()
    with open(os.path.join(ROOT, "conf", "ferryd.conf")) as f:
        drain_ms = int(re.search(r"^drain_timeout_ms = (\d+)$", f.read(), re.M).group(1))
    stop_s = int(re.search(r"^TimeoutStopSec=(\d+)s$", text, re.M).group(1))
    # The drain, the final flush (1 s) and the last export (at most 3 s).
    assert stop_s * 1000 > drain_ms + 1000 + 3000


# ---- socket activation ----

def activate(tmp, sock, redis_url, *extra):
    env = {"OTEL_TRACES_EXPORTER": "none", "OTEL_METRICS_EXPORTER": "none"}
    for k in ("ASAN_OPTIONS", "UBSAN_OPTIONS"):
        if k in os.environ:
            env[k] = os.environ[k]
    cmd = ["systemd-socket-activate", "-l", sock] + list(extra)
    for k, v in env.items():
        cmd += ["-E", "%s=%s" % (k, v)]
    # --socket names another path: the passed socket wins over the key.
    cmd += [FERRYD, "--socket", os.path.join(tmp, "unused.sock"), "--redis", redis_url,
            "--log-level", "debug"]
    log = open(os.path.join(tmp, "activated.log"), "wb")
    return subprocess.Popen(cmd, stdout=log, stderr=log), log


def read_log(tmp):
    with open(os.path.join(tmp, "activated.log"), "rb") as f:
        return f.read().decode(errors="replace")


def test_socket_activation_serves_the_passed_socket_and_leaves_it(tmp, redis):
    sock = os.path.join(tmp, "activated.sock")
    proc, log = activate(tmp, sock, redis.url)
    try:
        wait_until(lambda: os.path.exists(sock), what="the activation socket")
        # The first connection starts ferryd, which serves it.
        r = subprocess.run([FERRY_CLI, "-s", sock, "--timeout", str(15000 * SLOW), "ping"],
                           capture_output=True, text=True, timeout=60)
        assert (r.returncode, r.stdout) == (0, "PONG\n"), r.stderr + read_log(tmp)
        r = subprocess.run([FERRY_CLI, "-s", sock, "redis", "SET", "k", "activated"], capture_output=True,
                           text=True, timeout=60)
        assert r.stdout == "OK\n", r.stderr
        assert redis.cli("GET", "k") == "activated"
        assert "passed by the service manager" in read_log(tmp)
        assert not os.path.exists(os.path.join(tmp, "unused.sock"))
    finally:
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(30 * SLOW)
        log.close()
    text = read_log(tmp)
    assert code == 0, text
    for mark in SANITIZER_MARKS:
        assert mark not in text, text
    # Not ferryd's to remove: the manager made it and keeps it.
    assert stat.S_ISSOCK(os.lstat(sock).st_mode)


def test_a_passed_socket_that_is_not_a_listening_stream_is_refused(tmp, redis):
    sock = os.path.join(tmp, "dgram.sock")
    proc, log = activate(tmp, sock, redis.url, "--datagram")
    try:
        wait_until(lambda: os.path.exists(sock), what="the activation socket")
        c = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        c.sendto(b"wake up", sock)   # starts ferryd
        c.close()
        code = proc.wait(30 * SLOW)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        log.close()
    assert code == 1
    assert "not a listening Unix stream socket" in read_log(tmp)


# ---- the notification protocol ----

class Manager:
    """The service manager's end: a datagram socket at a path, or at an
    abstract name, as systemd's NOTIFY_SOCKET may be either."""

    def __init__(self, tmp, abstract=False):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        if abstract:
            name = "ferry-test-notify-%d-%d" % (os.getpid(), time.monotonic_ns())
            self.sock.bind("\0" + name)
            self.address = "@" + name
        else:
            self.address = os.path.join(tmp, "notify.sock")
            self.sock.bind(self.address)
        self.messages = []

    def drain(self):
        """Every message received so far, without waiting."""
        self.sock.setblocking(False)
        try:
            while True:
                self.messages.append(self.sock.recv(4096).decode())
        except BlockingIOError:
            pass
        return self.messages

    def wait_for(self, pred, what, timeout=30):
        wait_until(lambda: any(pred(m) for m in self.drain()), timeout=timeout * SLOW, what=what)
        return next(m for m in self.messages if pred(m))

    def close(self):
        self.sock.close()


@pytest.fixture
def manager(tmp):
    m = Manager(tmp)
    yield m
    m.close()


def fields(msg):
    return dict(line.split("=", 1) for line in msg.split("\n") if line)


def is_ready(m):
    return fields(m).get("READY") == "1"


def test_ready_waits_for_redis(tmp, make_ferryd, manager):
    late = Redis(tmp)
    late.sock = os.path.join(tmp, "late-redis.sock")
    f = make_ferryd(redis_url=late.url, wait_redis=False, env={"NOTIFY_SOCKET": manager.address},
                    args=["--set", "ready_timeout_ms=3600000"])
    # ferryd answers, and has failed to reach Redis at least once.
    wait_until(lambda: f.stats()["backends"]["redis"]["connections"][0]["last_error"], what="a failed attempt")
    with f.client() as c:
        assert c.health()["ready"] is False
    got = manager.drain()
    assert any(fields(m).get("STATUS", "").startswith("waiting") for m in got), got
    assert not any(is_ready(m) for m in got), got

    late.start()
    try:
        msg = manager.wait_for(is_ready, "READY=1 after Redis came up")
        assert fields(msg).get("STATUS") == "ready"
        with f.client() as c:
            assert c.health()["ready"] is True
        f.stop()
    finally:
        late.stop()


def test_status_follows_the_backends_after_ready(tmp, make_ferryd, manager, redis):
    f = make_ferryd(env={"NOTIFY_SOCKET": manager.address})
    manager.wait_for(is_ready, "READY=1")
    n = len(manager.messages)
    redis.stop()
    msg = manager.wait_for(lambda m: m.startswith("STATUS=ready; not connected: redis (") and
                           manager.messages.index(m) >= n, "STATUS naming redis")
    assert "READY" not in fields(msg)
    # Each failed reconnect is not a datagram of its own: only changes are.
    wait_until(lambda: f.stats()["backends"]["redis"]["connections"][0]["drops"] >= 1, what="the drop")
    again = Redis(tmp)
    again.sock, again.port = redis.sock, redis.port
    again.start()
    try:
        manager.wait_for(lambda m: m == "STATUS=ready", "STATUS=ready once Redis is back")
        statuses = [m for m in manager.messages[n:] if m.startswith("STATUS=")]
        assert statuses[-1] == "STATUS=ready" and len(statuses) == 2, statuses
        f.stop()
    finally:
        again.stop()


def test_ready_anyway_after_ready_timeout(tmp, make_ferryd, manager):
    f = make_ferryd(redis_url="unix://" + os.path.join(tmp, "no-redis.sock"), wait_redis=False,
                    env={"NOTIFY_SOCKET": manager.address}, args=["--set", "ready_timeout_ms=200"])
    msg = manager.wait_for(is_ready, "READY=1 after ready_timeout_ms")
    assert fields(msg)["STATUS"].startswith("ready; not connected: redis ("), msg
    assert "ready_timeout_ms" in f.read_log()


def test_reload_and_stop_are_announced(tmp, make_ferryd, manager):
    f = make_ferryd(env={"NOTIFY_SOCKET": manager.address})
    manager.wait_for(is_ready, "READY=1")
    n = len(manager.messages)
    before = time.monotonic_ns() // 1000
    f.signal(signal.SIGHUP)
    manager.wait_for(lambda m: is_ready(m) and manager.messages.index(m) > n, "READY=1 after the reload")
    after = time.monotonic_ns() // 1000
    reloading = [m for m in manager.messages[n:] if fields(m).get("RELOADING") == "1"]
    assert len(reloading) == 1, manager.messages[n:]
    # MONOTONIC_USEC is CLOCK_MONOTONIC when the reload began, as systemd asks.
    assert before <= int(fields(reloading[0])["MONOTONIC_USEC"]) <= after
    assert manager.messages.index(reloading[0]) < len(manager.messages) - 1

    f.signal(signal.SIGTERM)
    assert f.wait() == 0
    msgs = manager.drain()
    stopping = [m for m in msgs if fields(m).get("STOPPING") == "1"]
    assert len(stopping) == 1 and "draining (SIGTERM)" in fields(stopping[0])["STATUS"], msgs
    f.stop()


def test_watchdog_pings(tmp, make_ferryd, manager):
    f = make_ferryd(env={"NOTIFY_SOCKET": manager.address, "WATCHDOG_USEC": "200000",
                         "WATCHDOG_PID": str(os.getpid())}, start=False)
    # WATCHDOG_PID names the process meant; the harness's pid is not ferryd's.
    f.start()
    assert "is not ours" in f.read_log()
    f.stop()
    assert not any("WATCHDOG=1" in m for m in manager.drain())

    g = make_ferryd(env={"NOTIFY_SOCKET": manager.address, "WATCHDOG_USEC": "200000"}, name="g.sock")
    wait_until(lambda: sum(m == "WATCHDOG=1" for m in manager.drain()) >= 2, timeout=30 * SLOW,
               what="two watchdog pings")
    g.stop()


def test_abstract_notify_socket(tmp, make_ferryd):
    m = Manager(tmp, abstract=True)
    try:
        make_ferryd(env={"NOTIFY_SOCKET": m.address})
        m.wait_for(is_ready, "READY=1 on an abstract socket")
    finally:
        m.close()


def test_a_vanished_manager_does_not_stop_ferryd(tmp, make_ferryd, manager):
    f = make_ferryd(env={"NOTIFY_SOCKET": manager.address, "WATCHDOG_USEC": "100000"})
    manager.close()
    os.unlink(manager.address)
    # Every ping now fails; ferryd keeps serving, and says so once a second at most.
    wait_until(lambda: "notify:" in f.read_log(), what="a lost datagram logged")
    r = subprocess.run([FERRY_CLI, "-s", f.sock, "ping"], capture_output=True, text=True, timeout=60)
    assert r.stdout == "PONG\n"
    manager.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)   # for the fixture's close
