"""Test harness: real redis-server and ferryd processes on private sockets
in a temporary directory. No system services, no mocks."""

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.abspath(os.path.join(HERE, "..", ".."))
sys.path.insert(0, os.path.join(ROOT, "client-stub", "python"))
sys.path.insert(0, os.path.join(ROOT, "tests"))

import ferry  # noqa: E402
from harness import RabbitMQ, free_port, wait_until  # noqa: E402,F401

BUILD = os.environ.get("FERRY_BUILD", os.path.join(ROOT, "build"))
FERRYD = os.path.join(BUILD, "ferryd")
FERRY_CLI = os.path.join(BUILD, "ferry")
SANITIZED = bool(os.environ.get("FERRY_SANITIZED"))
# Sanitized builds are several times slower; deadlines in tests scale by this.
SLOW = 3 if SANITIZED else 1

SANITIZER_MARKS = ("ERROR: AddressSanitizer", "ERROR: LeakSanitizer", "runtime error:",
                   "SUMMARY: UndefinedBehaviorSanitizer")


class Redis:
    """A redis-server on a Unix socket (and a TCP port) in tmpdir."""

    def __init__(self, tmpdir, password=None):
        self.dir = tmpdir
        self.sock = os.path.join(tmpdir, "redis.sock")
        self.port = free_port()
        self.password = password
        self.proc = None

    @property
    def url(self):
        return "unix://" + self.sock

    def start(self):
        args = ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1",
                "--unixsocket", self.sock, "--unixsocketperm", "700", "--save", "",
                "--appendonly", "no", "--dir", self.dir, "--logfile",
                os.path.join(self.dir, "redis.log")]
        if self.password:
            args += ["--requirepass", self.password]
        self.proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_until(lambda: self.cli("PING") == "PONG" or self.password, what="redis")
        wait_until(lambda: os.path.exists(self.sock), what="redis socket")
        return self

    def cli(self, *args, db=0):
        cmd = ["redis-cli", "-s", self.sock, "-n", str(db)]
        if self.password:
            cmd += ["--no-auth-warning", "-a", self.password]
        out = subprocess.run(cmd + list(args), capture_output=True, text=True, timeout=10)
        return out.stdout.strip()

    def freeze(self):
        self.proc.send_signal(signal.SIGSTOP)

    def thaw(self):
        self.proc.send_signal(signal.SIGCONT)

    def kill(self):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGCONT)
            self.proc.kill()
            self.proc.wait()
        if os.path.exists(self.sock):
            os.unlink(self.sock)

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGCONT)
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


class Ferryd:
    """A ferryd process. stop() checks that it exits cleanly and that the
    sanitizers (in check-asan) reported nothing."""

    def __init__(self, tmpdir, redis_url, args=(), env=None, name="ferry.sock"):
        self.dir = tmpdir
        self.sock = os.path.join(tmpdir, name)
        self.log = os.path.join(tmpdir, name + ".log")
        self.redis_url = redis_url
        self.args = list(args)
        self.env = env
        self.proc = None
        self.preexec = None  # runs in the child before exec (rlimits)

    def start(self, wait_redis=True):
        env = dict(os.environ)
        env.pop("FERRY_CONFIG", None)
        env.setdefault("ASAN_OPTIONS", "detect_leaks=1")
        # No collector unless a test brings one (tests/otlp_collector.py).
        env.setdefault("OTEL_TRACES_EXPORTER", "none")
        env.setdefault("OTEL_METRICS_EXPORTER", "none")
        if self.env:
            env.update(self.env)
        self.logf = open(self.log, "ab")
        self.proc = subprocess.Popen(
            [FERRYD, "--socket", self.sock, "--redis", self.redis_url, "--log-level", "debug"]
            + self.args, stdout=self.logf, stderr=self.logf, env=env, preexec_fn=self.preexec)
        wait_until(lambda: self.ping(), timeout=15 * SLOW, what="ferryd to answer ping")
        if wait_redis:
            wait_until(lambda: self.redis_state() == "up", timeout=15 * SLOW, what="redis up")
        return self

    def client(self, timeout=30 * SLOW):
        return ferry.Client(self.sock, timeout=timeout)

    def ping(self):
        if self.proc.poll() is not None:
            raise AssertionError("ferryd exited early:\n" + self.read_log())
        with self.client(timeout=5) as c:
            return c.ping() == "PONG"

    def stats(self):
        with self.client() as c:
            return c.stats()

    def redis_state(self):
        # health first: its answer stays small enough for any max_frame a
        # test sets; stats where a policy allows only that.
        with self.client() as c:
            try:
                return c.call("health")["backends"]["redis"]
            except ferry.FerryError as e:
                if e.code != "denied":
                    raise
        return self.stats()["backends"]["redis"]["state"]

    def read_log(self):
        with open(self.log, "rb") as f:
            return f.read().decode(errors="replace")

    def signal(self, sig):
        self.proc.send_signal(sig)

    def wait(self, timeout=30):
        return self.proc.wait(timeout * SLOW)

    def stop(self, expect_code=0):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        code = self.proc.wait(30 * SLOW)
        self.logf.close()
        log = self.read_log()
        for mark in SANITIZER_MARKS:
            assert mark not in log, "sanitizer report in ferryd's log:\n" + log[-6000:]
        assert "handle is still open" not in log, log[-3000:]
        if expect_code is not None:
            assert code == expect_code, "ferryd exit code %s\n%s" % (code, log[-3000:])
        return code


@pytest.fixture
def tmp():
    # Unix socket paths must stay short (108 bytes), so not pytest's tmp_path.
    d = tempfile.mkdtemp(prefix="ferry-")
    yield d
    shutil.rmtree(d, ignore_errors=True)


@pytest.fixture
def redis(tmp):
    r = Redis(tmp).start()
    yield r
    r.stop()


@pytest.fixture
def make_ferryd(tmp, redis):
    started = []

    def make(args=(), env=None, redis_url=None, wait_redis=True, name="ferry.sock", start=True):
        f = Ferryd(tmp, redis_url or redis.url, args, env, name)
        started.append(f)
        if start:
            f.start(wait_redis=wait_redis)
        return f

    yield make
    for f in started:
        if f.proc and f.proc.poll() is None:
            f.stop()
        elif f.proc:
            # Already exited: still check it reported no sanitizer errors.
            f.logf.close()
            log = f.read_log()
            for mark in SANITIZER_MARKS:
                assert mark not in log, log[-6000:]


@pytest.fixture
def ferryd(make_ferryd):
    return make_ferryd()


def cli(ferryd, *args, timeout=None):
    cmd = [FERRY_CLI, "--socket", ferryd.sock]
    if timeout:
        cmd += ["--timeout", str(timeout)]
    return subprocess.run(cmd + list(args), capture_output=True, timeout=60)


@pytest.fixture(scope="session")
def rabbit():
    r = RabbitMQ().start()
    yield r
    r.stop()


@pytest.fixture
def amqp_ferryd(make_ferryd, rabbit):
    f = make_ferryd(["--amqp", rabbit.url])
    wait_until(lambda: f.stats()["backends"]["amqp"]["state"] == "up", timeout=30, what="amqp up")
    return f


def amqp_state(f):
    return f.stats()["backends"]["amqp"]["state"]


class RpcResponder:
    """A second client of ferryd f answering RPCs on queue q with
    b"re: " + the request's body, from a thread, while the with block
    runs; the block's exit checks that it met no error."""

    def __init__(self, f, q):
        self.f, self.q = f, q
        self.ready, self.stop, self.errors = threading.Event(), threading.Event(), []
        self.t = threading.Thread(target=self.run)

    def run(self):
        try:
            with self.f.client() as r:
                r.amqp.declare_queue(self.q)
                sub = r.amqp.consume(self.q)
                self.ready.set()
                while not self.stop.is_set():
                    try:
                        p = r.next_push(timeout=0.2)
                    except Exception:
                        continue
                    d = p["data"]
                    r.amqp.publish("", d["properties"]["reply_to"], b"re: " + d["body"],
                                   correlation_id=d["properties"]["correlation_id"])
                    r.amqp.ack(sub, d["delivery_tag"])
        except Exception as e:
            self.errors.append(repr(e))
            self.ready.set()

    def __enter__(self):
        self.t.start()
        self.ready.wait(30)
        return self

    def __exit__(self, *exc):
        self.stop.set()
        self.t.join(30)
        if exc[0] is None:
            assert self.errors == []

