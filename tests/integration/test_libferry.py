"""libferry (the C client) against a live ferryd."""

import os
import subprocess

from conftest import BUILD


def test_libferry_pipelining_and_parking(ferryd):
    exe = os.path.join(BUILD, "libferry_check")
    r = subprocess.run([exe, ferryd.sock], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "all checks passed" in r.stdout
    assert r.stdout.count("ok: ") >= 9


def test_libferry_patterns(ferryd):
    """The Redis patterns' ops from C: ferry_call with a map of args, an
    error code (not_held), and a pub/sub message read as a push."""
    exe = os.path.join(BUILD, "libferry_check")
    r = subprocess.run([exe, ferryd.sock, "patterns"], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "all checks passed" in r.stdout
    assert r.stdout.count("ok: ") == 8


def test_libferry_views_over_amqp(amqp_ferryd):
    """Publish and consume through libferry's in-place views: bodies, properties,
    acks sent as CBOR bytes, a call among the deliveries, an error response."""
    exe = os.path.join(BUILD, "libferry_check")
    queue = "libferry.views.%d" % os.getpid()
    r = subprocess.run([exe, amqp_ferryd.sock, "amqp", queue], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "all checks passed" in r.stdout
    assert r.stdout.count("ok: ") >= 14
