"""rediss://: ferryd to a redis-server that speaks TLS only, with
certificates made here by the openssl CLI. Verification (CA, host name,
expiry), mutual TLS, reconnects, a frozen server and reloads."""

import os
import shutil
import signal
import subprocess
import time

import pytest

import ferry
from conftest import SANITIZER_MARKS, SLOW, Ferryd, Redis, free_port, wait_until


def openssl(*args, cwd):
    subprocess.run(["openssl"] + list(args), cwd=cwd, check=True, capture_output=True, timeout=60)


def make_key_csr(d, name, cn):
    openssl("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
            "-keyout", name + ".key", "-out", name + ".csr", "-subj", "/CN=" + cn, cwd=d)


def make_ca(d, name):
    openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
            "-keyout", name + ".key", "-out", name + ".crt", "-days", "30", "-subj", "/CN=" + name, cwd=d)


def sign(d, name, ca, days, serial, ext):
    with open(os.path.join(d, name + ".ext"), "w") as f:
        f.write(ext)
    openssl("x509", "-req", "-in", name + ".csr", "-CA", ca + ".crt", "-CAkey", ca + ".key",
            "-set_serial", str(serial), "-days", str(days), "-extfile", name + ".ext",
            "-out", name + ".crt", cwd=d)


SERVER_EXT = "subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\n"


@pytest.fixture(scope="module")
def certs():
    """A CA, a server certificate for 127.0.0.1 and localhost, a client
    certificate, an expired server certificate, and a second CA that
    signed none of them."""
    d = os.path.realpath(__import__("tempfile").mkdtemp(prefix="ferry-tls-"))
    make_ca(d, "ca")
    make_ca(d, "other-ca")
    make_key_csr(d, "server", "localhost")
    sign(d, "server", "ca", 30, 2, SERVER_EXT)
    make_key_csr(d, "client", "ferryd")
    sign(d, "client", "ca", 30, 3, "extendedKeyUsage=clientAuth\n")
    make_key_csr(d, "expired", "localhost")
    # -days -1: valid from now until a day ago, so expired at once.
    sign(d, "expired", "ca", -1, 4, SERVER_EXT)
    yield lambda name: os.path.join(d, name)
    shutil.rmtree(d, ignore_errors=True)


class TlsRedis(Redis):
    """A redis-server whose TCP port speaks TLS only; its Unix socket
    stays plain, for redis-cli."""

    def __init__(self, tmpdir, certs, cert="server", auth_clients="no", extra=()):
        super().__init__(tmpdir)
        self.certs = certs
        self.cert = cert
        self.auth_clients = auth_clients
        self.extra = list(extra)

    @property
    def url(self):
        return "rediss://127.0.0.1:%d/0" % self.port

    def start(self):
        c = self.certs
        args = ["redis-server", "--port", "0", "--tls-port", str(self.port), "--bind", "127.0.0.1",
                "--tls-cert-file", c(self.cert + ".crt"), "--tls-key-file", c(self.cert + ".key"),
                "--tls-ca-cert-file", c("ca.crt"), "--tls-auth-clients", self.auth_clients,
                "--unixsocket", self.sock, "--unixsocketperm", "700", "--save", "",
                "--appendonly", "no", "--dir", self.dir, "--logfile", os.path.join(self.dir, "redis.log")]
        args += self.extra
        self.proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_until(lambda: os.path.exists(self.sock) and self.cli("PING") == "PONG", what="redis")
        return self


@pytest.fixture
def start(tmp, certs):
    """start(redis options, ferryd keys): a TLS redis-server and a ferryd
    pointed at it; both stopped at the end (ferryd checked for a clean exit
    and no sanitizer report)."""
    procs = []

    def run(keys=None, wait_redis=True, config=None, **redis_opts):
        r = TlsRedis(tmp, certs, **redis_opts).start()
        procs.append(r)
        args = []
        for k, v in (keys if keys is not None else {"redis_tls_ca_file": certs("ca.crt")}).items():
            args += ["--set", "%s=%s" % (k, v)]
        if config:
            args += ["--config", config]
        f = Ferryd(tmp, r.url, args)
        procs.append(f)
        f.start(wait_redis=wait_redis)
        return r, f

    yield run
    for p in reversed(procs):
        if isinstance(p, Ferryd):
            if p.proc and p.proc.poll() is None:
                p.stop()
        else:
            p.stop()


def redis_error(c, *argv, deadline=None):
    try:
        c.redis(*argv, deadline=deadline)
    except ferry.FerryError as e:
        return e.code, e.message
    raise AssertionError("no error")


def test_get_set_over_tls(start):
    redis, f = start()
    with f.client() as c:
        assert c.redis("SET", "k", "v") == "OK"
        assert c.redis("GET", "k") == b"v"
        # A value of many records, and a pipeline of many commands in one flush.
        big = os.urandom(300 * 1024)
        assert c.redis("SET", "big", big) == "OK"
        assert c.redis("GET", "big") == big
        ids = [c.send("redis", [b"INCR", b"n"]) for _ in range(500)]
        assert sorted(c.wait(i) for i in ids) == list(range(1, 501))
    assert redis.cli("GET", "k") == "v"
    log = f.read_log()
    assert "TLS up (TLSv1.3" in log
    assert "redis_tls_verify is no" not in log


def test_host_name_checked_as_dns_name(start, certs):
    _, f = start({"redis_tls_ca_file": certs("ca.crt"), "redis_tls_server_name": "localhost",
                  "redis_tls_min_version": "TLS1.3"})
    with f.client() as c:
        assert c.redis("PING") == "PONG"


def test_tls12_with_a_cipher_list_and_resumption(start, certs):
    redis, f = start({"redis_tls_ca_file": certs("ca.crt"), "redis_tls_ciphers": "ECDHE-ECDSA-AES128-GCM-SHA256"},
                     extra=["--tls-protocols", "TLSv1.2"])
    with f.client() as c:
        assert c.redis("SET", "k", "12") == "OK"
    assert "TLS up (TLSv1.2 ECDHE-ECDSA-AES128-GCM-SHA256" in f.read_log()
    redis.cli("CLIENT", "KILL", "TYPE", "normal")
    wait_until(lambda: "session resumed" in f.read_log(), timeout=15 * SLOW, what="a resumed session")
    wait_until(lambda: f.redis_state() == "up", what="redis up")
    with f.client() as c:
        assert c.redis("GET", "k") == b"12"


def test_min_version_above_the_server_is_refused(start, certs):
    _, f = start({"redis_tls_ca_file": certs("ca.crt"), "redis_tls_min_version": "TLS1.3"},
                 extra=["--tls-protocols", "TLSv1.2"], wait_redis=False)
    wait_until(lambda: "failed: TLS handshake: " in f.read_log(), timeout=15 * SLOW, what="the refusal")
    assert "TLS up" not in f.read_log()


def test_a_silent_server_fails_the_handshake_at_the_connect_timeout(tmp, certs):
    redis = TlsRedis(tmp, certs).start()
    redis.freeze()  # the kernel still accepts the connection; nothing answers the ClientHello
    f = Ferryd(tmp, redis.url, ["--set", "redis_tls_ca_file=" + certs("ca.crt"),
                                "--set", "redis_connect_timeout_ms=300"])
    try:
        f.start(wait_redis=False)
        wait_until(lambda: "no answer to the TLS handshake in time" in f.read_log(), timeout=15 * SLOW,
                   what="the handshake timed out")
        with f.client() as c:
            code, msg = redis_error(c, "GET", "k", deadline=5000)
            assert code == "unavailable" and "TLS handshake" in msg
        redis.thaw()
        wait_until(lambda: f.redis_state() == "up", timeout=20 * SLOW, what="redis up")
    finally:
        redis.thaw()
        f.stop()
        redis.stop()


def test_mutual_tls(start, certs):
    _, f = start({"redis_tls_ca_file": certs("ca.crt"), "redis_tls_cert": certs("client.crt"),
                  "redis_tls_key": certs("client.key")}, auth_clients="yes")
    with f.client() as c:
        assert c.redis("SET", "m", "1") == "OK"


def test_mutual_tls_without_a_client_certificate_is_refused(start, certs):
    _, f = start({"redis_tls_ca_file": certs("ca.crt")}, auth_clients="yes", wait_redis=False)
    wait_until(lambda: "certificate required" in f.read_log(), timeout=15 * SLOW, what="refusal")
    with f.client() as c:
        wait_until(lambda: f.redis_state() == "down", what="redis down")
        code, msg = redis_error(c, "GET", "k")
        assert code == "unavailable"
        assert "certificate required" in msg


# Redis sends its CA along with its certificate (OpenSSL builds the chain
# from its store), so a stranger's chain ends in a self-signed certificate.
@pytest.mark.parametrize("keys,reason", [
    ({"redis_tls_ca_file": "other-ca.crt"},
     "certificate verify failed: self-signed certificate in certificate chain"),
    ({"redis_tls_ca_file": "ca.crt", "redis_tls_server_name": "other.example"},
     "certificate verify failed: hostname mismatch"),
], ids=["wrong-ca", "wrong-name"])
def test_verification_failures_are_refused_with_the_reason(start, certs, keys, reason):
    keys = {k: certs(v) if k == "redis_tls_ca_file" else v for k, v in keys.items()}
    _, f = start(keys, wait_redis=False)
    wait_until(lambda: reason in f.read_log(), timeout=15 * SLOW, what="the refusal logged")
    assert "TLS up" not in f.read_log()
    with f.client() as c:
        code, msg = redis_error(c, "GET", "k")
        assert code == "unavailable"
        assert reason in msg


def test_expired_certificate_is_refused(start, certs):
    _, f = start(cert="expired", wait_redis=False)
    reason = "certificate verify failed: certificate has expired"
    wait_until(lambda: reason in f.read_log(), timeout=15 * SLOW, what="the refusal logged")
    with f.client() as c:
        code, msg = redis_error(c, "GET", "k")
        assert code == "unavailable" and reason in msg


def test_verify_no_connects_anyway_and_warns(start, certs):
    _, f = start({"redis_tls_ca_file": certs("other-ca.crt"), "redis_tls_verify": "no"})
    with f.client() as c:
        assert c.redis("PING") == "PONG"
    assert "redis_tls_verify is no" in f.read_log()


def test_reconnect_after_restart_and_session_resumption(start):
    redis, f = start()
    with f.client() as c:
        assert c.redis("SET", "a", "1") == "OK"
        # A dropped connection comes back with the session of the last one.
        redis.cli("CLIENT", "KILL", "TYPE", "normal")
        wait_until(lambda: f.read_log().count("TLS up") >= 3, timeout=15 * SLOW, what="reconnect")
        wait_until(lambda: f.redis_state() == "up", what="redis up")
        wait_until(lambda: "session resumed" in f.read_log(), timeout=10 * SLOW, what="a resumed session")
        assert c.redis("GET", "a") == b"1"
        # A restarted server knows no session: a full handshake.
        redis.stop()
        wait_until(lambda: f.redis_state() == "down", what="redis down")
        redis.start()
        wait_until(lambda: f.redis_state() == "up", timeout=20 * SLOW, what="reconnect")
        assert c.redis("SET", "a", "2") == "OK"
    # The pool's connection and the control connection, three times each;
    # the control connection may come back a moment after the pool's.
    wait_until(lambda: f.stats()["backends"]["redis"]["tls_handshakes"] >= 6, timeout=20 * SLOW,
               what="both connections back")
    st = f.stats()["backends"]["redis"]
    assert st["connections"][0]["connects"] >= 3
    assert st["tls_resumed"] >= 1


def test_frozen_server_requests_time_out_at_their_deadline(start):
    redis, f = start()
    with f.client() as c:
        assert c.redis("SET", "k", "v") == "OK"
        redis.freeze()
        try:
            t = time.monotonic()
            ids = [c.send("redis", [b"GET", b"k"], deadline=300 + 10 * i) for i in range(20)]
            for _ in ids:
                assert c.recv()["error"]["code"] == "timeout"
            took = time.monotonic() - t
            assert 0.28 <= took < 0.5 + 2.0 * SLOW
            assert c.ping() == "PONG"
        finally:
            redis.thaw()
        assert c.redis("GET", "k") == b"v"


def test_reload_with_a_bad_ca_file_changes_nothing(start, certs, tmp):
    ca = os.path.join(tmp, "ca.pem")
    shutil.copy(certs("ca.crt"), ca)
    conf = os.path.join(tmp, "tls.conf")
    with open(conf, "w") as fh:
        fh.write("redis_tls_ca_file = %s\n" % ca)
    redis, f = start({}, config=conf)
    with open(ca, "w") as fh:
        fh.write("not a certificate\n")
    f.signal(signal.SIGHUP)
    wait_until(lambda: "reload failed" in f.read_log(), what="the reload refused")
    assert "key 'redis_tls_ca_file': no CA certificate in %s" % ca in f.read_log()
    with f.client() as c:
        assert c.redis("SET", "r", "1") == "OK"
        # New connections still use the context in force.
        redis.cli("CLIENT", "KILL", "TYPE", "normal")
        wait_until(lambda: f.read_log().count("TLS up") >= 3, timeout=15 * SLOW, what="reconnect")
        wait_until(lambda: f.redis_state() == "up", what="redis up")
        assert c.redis("GET", "r") == b"1"
    # A good file again: the context is rebuilt.
    shutil.copy(certs("ca.crt"), ca)
    f.signal(signal.SIGHUP)
    wait_until(lambda: "TLS settings were read again" in f.read_log(), what="the reload")
    with f.client() as c:
        assert c.redis("GET", "r") == b"1"


def test_bad_tls_keys_are_refused_where_they_are_set(tmp, certs):
    from test_config_check import run_ferryd
    base = ["--check-config", "--socket", tmp + "/c.sock", "--redis", "rediss://127.0.0.1:1"]
    cases = [
        (["--set", "redis_tls_ca_file=/nonexistent/ca.pem"], "key 'redis_tls_ca_file': cannot read"),
        (["--set", "redis_tls_ca_file=" + certs("server.key")], "key 'redis_tls_ca_file': no CA certificate"),
        (["--set", "redis_tls_min_version=TLS1.1"], "key 'redis_tls_min_version'"),
        (["--set", "redis_tls_verify=maybe"], "key 'redis_tls_verify'"),
        (["--set", "redis_tls_ciphers=NOPE-NOT-A-CIPHER"], "key 'redis_tls_ciphers'"),
        (["--set", "redis_tls_cert=" + certs("client.crt")], "needs both redis_tls_cert and redis_tls_key"),
        (["--set", "redis_tls_cert=" + certs("client.crt"), "--set", "redis_tls_key=" + certs("server.key")],
         "key 'redis_tls_key', with redis_tls_cert: key values mismatch"),
    ]
    for args, fragment in cases:
        r = run_ferryd(*(base + args))
        assert r.returncode == 2, (args, r.stdout, r.stderr)
        assert fragment in r.stderr, (args, r.stderr)
    ok = run_ferryd(*(base + ["--set", "redis_tls_ca_file=" + certs("ca.crt"),
                              "--set", "redis_tls_cert=" + certs("client.crt"),
                              "--set", "redis_tls_key=" + certs("client.key")]))
    assert ok.returncode == 0, ok.stderr
