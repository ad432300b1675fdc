"""RabbitMQ over TLS (amqps://) through ferryd, against a real rabbitmq-server
with an SSL listener that asks for client certificates (mutual TLS).
Certificates are made with the openssl CLI: a CA, the broker's certificate
for localhost and 127.0.0.1, ferryd's client certificate, and an unrelated
second CA."""

import os
import shutil
import signal
import subprocess
import tempfile
import time
import uuid

import pytest

import ferry
from conftest import FERRYD, SLOW, RpcResponder, amqp_state, wait_until
from harness import RabbitMQ


def uid(prefix):
    return "%s.%s" % (prefix, uuid.uuid4().hex[:8])


def openssl(*args, cwd):
    subprocess.run(["openssl"] + list(args), cwd=cwd, check=True, capture_output=True, timeout=60)


def make_ca(d, name):
    openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
            "-keyout", name + ".key", "-out", name + ".pem", "-days", "2", "-subj", "/CN=" + name,
            "-addext", "basicConstraints=critical,CA:TRUE",
            "-addext", "keyUsage=critical,keyCertSign,cRLSign", cwd=d)


def make_leaf(d, name, ca, ext):
    openssl("req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
            "-keyout", name + ".key", "-out", name + ".csr", "-subj", "/CN=" + name, cwd=d)
    with open(os.path.join(d, name + ".ext"), "w") as f:
        f.write(ext)
    openssl("x509", "-req", "-in", name + ".csr", "-CA", ca + ".pem", "-CAkey", ca + ".key",
            "-CAcreateserial", "-days", "2", "-extfile", name + ".ext", "-out", name + ".pem", cwd=d)


@pytest.fixture(scope="module")
def certs():
    d = tempfile.mkdtemp(prefix="ferry-pki-")
    make_ca(d, "ca")
    make_ca(d, "other-ca")
    make_leaf(d, "server", "ca", "subjectAltName=DNS:localhost,IP:127.0.0.1\n"
              "extendedKeyUsage=serverAuth\nbasicConstraints=CA:FALSE\n")
    make_leaf(d, "client", "ca", "extendedKeyUsage=clientAuth\nbasicConstraints=CA:FALSE\n")
    # rabbitmq-server runs as this user and reads the key from its own dir.
    yield {k: os.path.join(d, k) for k in ("ca.pem", "other-ca.pem", "server.pem", "server.key",
                                          "client.pem", "client.key")}
    shutil.rmtree(d, ignore_errors=True)


@pytest.fixture(scope="module")
def tls_rabbit(certs):
    r = RabbitMQ(tls={"cacertfile": certs["ca.pem"], "certfile": certs["server.pem"],
                      "keyfile": certs["server.key"]}, name="tls").start()
    yield r
    r.stop()


def tls_env(certs, ca="ca.pem", client=True, verify="yes"):
    env = {"FERRY_AMQP_TLS_CA_FILE": certs[ca], "FERRY_AMQP_TLS_VERIFY": verify}
    if client:
        env["FERRY_AMQP_TLS_CERT"] = certs["client.pem"]
        env["FERRY_AMQP_TLS_KEY"] = certs["client.key"]
    return env


@pytest.fixture
def tls_ferryd(make_ferryd, tls_rabbit, certs):
    f = make_ferryd(["--amqp", tls_rabbit.tls_url], env=tls_env(certs))
    wait_until(lambda: amqp_state(f) == "up", timeout=30 * SLOW, what="amqp up over TLS")
    return f


def test_publish_consume_and_rpc_over_mutual_tls(tls_ferryd):
    f = tls_ferryd
    assert f.stats()["backends"]["amqp"]["url"].startswith("amqps://guest:***@127.0.0.1:")
    assert "amqp: connected to amqps://" in f.read_log()
    q = uid("tls")
    with f.client() as c:
        a = c.amqp
        a.declare_queue(q)
        assert a.publish("", q, b"over tls", persistent=True) == {"confirmed": True}
        sub = a.consume(q, prefetch=10)
        p = c.next_push(10 * SLOW)
        assert p["sub"] == sub and p["data"]["body"] == b"over tls"
        a.ack(sub, p["data"]["delivery_tag"])
        a.cancel(sub)
        # A burst of deliveries, some larger than a TLS record (16 KiB), sent
        # by the broker at once: none may wait for a timeout while its bytes
        # sit in a buffer that poll() does not see.
        bodies = [bytes([i % 256]) * (i * 397 % 40000) for i in range(200)]
        for body in bodies:
            a.publish("", q, body)
        sub = a.consume(q, prefetch=1000)
        start = time.monotonic()
        got = [c.next_push(10 * SLOW)["data"] for _ in bodies]
        took = time.monotonic() - start
        assert [d["body"] for d in got] == bodies
        # (about 20 ms; one stall would cost the worker's 1 s poll)
        assert took < 1.0 * SLOW, "200 deliveries took %.2f s" % took
        a.ack(sub, got[-1]["delivery_tag"], multiple=True)
        a.cancel(sub)
        a.delete_queue(q)

    # RPC over direct reply-to, with a responder on a second client.
    rq = uid("tls.rpc")
    with RpcResponder(f, rq), f.client() as c:
        assert c.amqp.rpc("", rq, b"ping", deadline=5000 * SLOW)["body"] == b"re: ping"


def test_a_broker_signed_by_another_ca_is_refused(make_ferryd, tls_rabbit, certs):
    f = make_ferryd(["--amqp", tls_rabbit.tls_url], env=tls_env(certs, ca="other-ca.pem"))
    wait_until(lambda: "cannot connect" in f.read_log(), timeout=30 * SLOW, what="the refusal")
    log = f.read_log()
    line = [ln for ln in log.splitlines() if "amqp: cannot connect" in ln][0]
    assert "TLS: the broker's certificate was refused" in line
    assert "local issuer certificate" in line or "self-signed certificate" in line, line
    st = f.stats()["backends"]["amqp"]
    assert st["state"] != "up" and "certificate" in st["last_error"]
    assert "guest" not in st["last_error"].replace("guest:***", "")
    with f.client() as c:
        with pytest.raises(ferry.FerryError) as e:
            c.amqp.publish("", "nowhere", b"x", deadline=2000 * SLOW)
        assert e.value.code == "unavailable"


def test_without_a_client_certificate_the_broker_refuses(make_ferryd, tls_rabbit, certs):
    f = make_ferryd(["--amqp", tls_rabbit.tls_url], env=tls_env(certs, client=False))
    wait_until(lambda: "cannot connect" in f.read_log(), timeout=30 * SLOW, what="the refusal")
    line = [ln for ln in f.read_log().splitlines() if "amqp: cannot connect" in ln][0]
    assert "TLS: " in line and "certificate" in line, line
    with f.client() as c:
        with pytest.raises(ferry.FerryError) as e:
            c.amqp.declare_queue(uid("q"), deadline=2000 * SLOW)
        assert e.value.code == "unavailable"


def test_verify_no_connects_with_a_warning(make_ferryd, tls_rabbit, certs):
    f = make_ferryd(["--amqp", tls_rabbit.tls_url], env=tls_env(certs, ca="other-ca.pem", verify="no"))
    wait_until(lambda: amqp_state(f) == "up", timeout=30 * SLOW, what="amqp up unverified")
    assert "amqp_tls_verify is no" in f.read_log()
    with f.client() as c:
        q = c.amqp.declare_queue(uid("noverify"), exclusive=True)["queue"]
        assert c.amqp.publish("", q, b"x") == {"confirmed": True}


def test_broker_restart_reconnects_over_tls(tls_ferryd, tls_rabbit):
    f = tls_ferryd
    q = uid("tls.restart")
    with f.client() as c:
        c.amqp.declare_queue(q, durable=True)
        sub = c.amqp.consume(q)
        tls_rabbit.restart_app()
        wait_until(lambda: amqp_state(f) == "up", timeout=60 * SLOW, what="reconnect over TLS")
        st = f.stats()["backends"]["amqp"]
        assert st["drops"] >= 1 and st["connects"] >= 2
        assert c.amqp.publish("", q, b"after", persistent=True) == {"confirmed": True}
        p = c.next_push(20 * SLOW)
        assert p["sub"] == sub and p["data"]["body"] == b"after"
        c.amqp.ack(sub, p["data"]["delivery_tag"])
        c.amqp.cancel(sub)
        c.amqp.delete_queue(q)


def test_reload_takes_new_tls_keys_at_the_next_connect(tmp, make_ferryd, tls_rabbit, certs):
    conf = os.path.join(tmp, "tls.conf")

    def write(ca):
        with open(conf, "w") as f:
            f.write("amqp_url = %s\namqp_tls_ca_file = %s\namqp_tls_cert = %s\namqp_tls_key = %s\n"
                    % (tls_rabbit.tls_url, certs[ca], certs["client.pem"], certs["client.key"]))

    write("other-ca.pem")
    f = make_ferryd(["--config", conf])
    wait_until(lambda: "certificate was refused" in f.read_log(), timeout=30 * SLOW, what="the refusal")
    write("ca.pem")
    f.signal(signal.SIGHUP)
    wait_until(lambda: "reloaded configuration" in f.read_log(), timeout=10 * SLOW, what="reload")
    assert "reload: key 'amqp_tls_ca_file' changed\n" in f.read_log()
    wait_until(lambda: amqp_state(f) == "up", timeout=30 * SLOW, what="amqp up with the new CA")
    with f.client() as c:
        q = c.amqp.declare_queue(uid("reloaded"), exclusive=True)["queue"]
        assert c.amqp.publish("", q, b"x") == {"confirmed": True}


def check_config(env):
    e = dict(os.environ)
    e.pop("FERRY_CONFIG", None)
    e.update(env)
    return subprocess.run([FERRYD, "--check-config", "--socket", "/tmp/ferry-tls-check.sock",
                           "--amqp", "amqps://127.0.0.1/"], capture_output=True, text=True, env=e, timeout=60)


def test_tls_keys_are_checked_where_set(certs):
    r = check_config({"FERRY_AMQP_TLS_CA_FILE": "/nonexistent/ca.pem"})
    assert r.returncode == 2
    assert ("environment FERRY_AMQP_TLS_CA_FILE: key 'amqp_tls_ca_file': "
            "cannot read /nonexistent/ca.pem: No such file or directory") in r.stderr

    r = check_config({"FERRY_AMQP_TLS_CERT": certs["client.key"], "FERRY_AMQP_TLS_KEY": certs["client.key"]})
    assert r.returncode == 2 and "key 'amqp_tls_cert': " in r.stderr and "PEM certificate" in r.stderr

    r = check_config({"FERRY_AMQP_TLS_CERT": certs["client.pem"]})
    assert r.returncode == 2 and "needs both amqp_tls_cert and amqp_tls_key" in r.stderr

    r = check_config({"FERRY_AMQP_TLS_CERT": certs["client.pem"], "FERRY_AMQP_TLS_KEY": certs["server.key"]})
    assert r.returncode == 2 and "is not the private key of" in r.stderr

    r = check_config({"FERRY_AMQP_TLS_VERIFY": "maybe"})
    assert r.returncode == 2 and "'maybe' is not yes or no" in r.stderr

    r = check_config(tls_env(certs))
    assert r.returncode == 0, r.stderr


def test_tls_keys_with_a_plain_url_are_ignored_with_a_warning(make_ferryd, tls_rabbit, certs):
    f = make_ferryd(["--amqp", tls_rabbit.url], env=tls_env(certs))
    wait_until(lambda: amqp_state(f) == "up", timeout=30 * SLOW, what="amqp up without TLS")
    assert "amqp_tls_* keys are set, but no amqp_url is amqps://: they are ignored" in f.read_log()
