"""The `ferry` CLI's global options (--socket, --timeout, --traceparent,
--verbose) before or after the command, with the real binary: an option
after the command is used or refused, never silently ignored."""

import os
import subprocess

from conftest import FERRY_CLI


def ferry(*args, cwd=None):
    env = {k: v for k, v in os.environ.items() if k != "FERRY_SOCKET"}
    return subprocess.run([FERRY_CLI] + list(args), capture_output=True, env=env, cwd=cwd, timeout=60)


def test_options_after_the_command_are_used(ferryd):
    r = ferry("hello", "-s", ferryd.sock)
    assert r.returncode == 0 and r.stdout.startswith(b"protocol\n1\n"), r.stderr
    r = ferry("ping", "--socket=" + ferryd.sock, "--timeout", "2000")
    assert r.returncode == 0 and r.stdout == b"PONG\n", r.stderr
    r = ferry("stats", "--timeout=2000", "-s" + ferryd.sock)
    assert r.returncode == 0 and b"backends.redis.state: up\n" in r.stdout, r.stderr
    # Relative to the working directory, as in the README.
    d, name = os.path.split(ferryd.sock)
    r = ferry("hello", "-s", name, cwd=d)
    assert r.returncode == 0, r.stderr


def test_the_socket_named_last_wins(ferryd):
    r = ferry("-s", "/nonexistent/x.sock", "ping", "-s", ferryd.sock)
    assert r.returncode == 0 and r.stdout == b"PONG\n"
    r = ferry("-s", ferryd.sock, "ping", "-s", "/nonexistent/x.sock")
    assert r.returncode == 2 and b"/nonexistent/x.sock" in r.stderr


def test_redis_words_are_never_options(ferryd):
    # After `redis` every word is the Redis command's, even one like -s.
    r = ferry("-s", ferryd.sock, "redis", "SET", "opt", "-s")
    assert r.returncode == 0 and r.stdout == b"OK\n", r.stderr
    r = ferry("--socket", ferryd.sock, "redis", "GET", "opt")
    assert r.stdout == b"-s\n"


def test_bad_options_are_refused(ferryd):
    r = ferry("ping", "-s")
    assert r.returncode == 64 and b"needs a value" in r.stderr
    r = ferry("ping", "--timeout", "soon", "-s", ferryd.sock)
    assert r.returncode == 64 and b"--timeout" in r.stderr
    r = ferry("-s", ferryd.sock, "ping", "extra")
    assert r.returncode == 64 and b"takes no arguments" in r.stderr
    r = ferry("--frobnicate", "ping")
    assert r.returncode == 64 and b"unknown option '--frobnicate'" in r.stderr
    r = ferry("hello", "--help")
    assert r.returncode == 0 and r.stdout.startswith(b"usage: ferry")
