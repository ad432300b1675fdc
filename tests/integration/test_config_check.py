"""ferryd's configuration errors: --check-config refuses what the start
refuses, with the same message; every bad value names where it came from
(the file and line, the variable or the flag), URLs included; and what
conf/ferryd.conf marks reloadable is what SIGHUP really changes."""

import os
import re
import signal
import subprocess

import pytest

from conftest import FERRYD, ROOT, wait_until


def run_ferryd(*args, env=None):
    e = dict(os.environ)
    e.pop("FERRY_CONFIG", None)
    e.setdefault("OTEL_TRACES_EXPORTER", "none")
    e.setdefault("OTEL_METRICS_EXPORTER", "none")
    if env:
        e.update(env)
    return subprocess.run([FERRYD] + list(args), capture_output=True, text=True, env=e, timeout=60)


BAD_VALUES = [
    (["--set", "duration_buckets=a,b"], "key 'duration_buckets'"),
    (["--set", "duration_buckets=1,0.5"], "key 'duration_buckets'"),
    (["--set", "socket_owner=nosuchuser"], "no user named 'nosuchuser'"),
    (["--set", "socket_owner=root:nosuchgroup"], "no group named 'nosuchgroup'"),
    (["--socket", "/tmp/" + "s" * 120 + ".sock"], "key 'socket': path longer than"),
    (["--set", "redis_query_text=verbose"], "key 'redis_query_text'"),
    (["--amqp", "ftp://broker"], "key 'amqp_url'"),
    (["--redis", "redis://host:99999"], "key 'redis_url'"),
]


@pytest.mark.parametrize("args,fragment", BAD_VALUES)
def test_check_config_refuses_what_the_start_refuses(tmp, args, fragment):
    base = ["--socket", tmp + "/c.sock"] if "--socket" not in args else []
    check = run_ferryd("--check-config", *(base + args))
    assert check.returncode == 2, check.stdout + check.stderr
    assert "configuration ok" not in check.stdout
    assert fragment in check.stderr
    start = run_ferryd(*(base + args))
    assert start.returncode == 2
    assert start.stderr == check.stderr      # one code path, one message
    assert not os.path.exists(tmp + "/c.sock")


def test_check_config_accepts_good_values(tmp):
    r = run_ferryd("--check-config", "--socket", tmp + "/ok.sock",
                   "--set", "socket_owner=root:root", "--set", "duration_buckets=0.001, 0.1,1",
                   "--amqp", "amqp://guest:guest@127.0.0.1:5672/,amqp://b:5673/v")
    assert r.returncode == 0 and r.stdout == "configuration ok\n", r.stderr


def test_url_errors_name_file_line_and_variable(tmp):
    conf = os.path.join(tmp, "u.conf")
    with open(conf, "w") as f:
        f.write("# urls\nsocket = %s/u.sock\nredis_url = http://cache:6379\n" % tmp)
    r = run_ferryd("--check-config", "--config", conf)
    assert r.returncode == 2
    assert "%s line 3: key 'redis_url': " % conf in r.stderr

    with open(conf, "w") as f:
        f.write("amqp_url = amqp://ok/, amqp://h:notaport/\n")
    r = run_ferryd("--check-config", "--config", conf)
    assert r.returncode == 2
    assert "%s line 1: key 'amqp_url': " % conf in r.stderr

    r = run_ferryd("--check-config", "--socket", tmp + "/u.sock", env={"FERRY_REDIS_URL": "unix://relative"})
    assert r.returncode == 2
    assert "environment FERRY_REDIS_URL: key 'redis_url': " in r.stderr

    r = run_ferryd("--check-config", "--socket", tmp + "/u.sock", env={"FERRY_AMQP_URL": "amqpx://h/"})
    assert r.returncode == 2
    assert "environment FERRY_AMQP_URL: key 'amqp_url': " in r.stderr

    r = run_ferryd("--check-config", "--socket", tmp + "/u.sock", "--redis", "redis://[::1")
    assert r.returncode == 2
    assert "flag redis_url: key 'redis_url': " in r.stderr


def reloadable_keys():
    """Keys that conf/ferryd.conf marks '(reloadable)', and all its keys."""
    text = open(ROOT + "/conf/ferryd.conf").read()
    marked, keys = set(), set()
    for help_line, key in re.findall(r"^# (.*)\n(\w+) = ", text, re.M):
        keys.add(key)
        if help_line.endswith("(reloadable)"):
            marked.add(key)
    return marked, keys


def test_reload_does_what_the_example_file_says(tmp, make_ferryd):
    marked, keys = reloadable_keys()
    assert "redis_backoff_min_ms" in marked and "amqp_backoff_min_ms" not in marked
    conf = os.path.join(tmp, "h.conf")
    with open(conf, "w") as f:
        f.write("redis_backoff_min_ms = 100\namqp_backoff_min_ms = 100\namqp_backoff_max_ms = 5000\n")
    d = make_ferryd(["--config", conf])
    with open(conf, "w") as f:
        f.write("redis_backoff_min_ms = 200\namqp_backoff_min_ms = 200\namqp_backoff_max_ms = 6000\n")
    d.signal(signal.SIGHUP)
    wait_until(lambda: "reloaded configuration" in d.read_log(), what="reload")
    log = d.read_log()
    for key in ("redis_backoff_min_ms", "amqp_backoff_min_ms", "amqp_backoff_max_ms"):
        applied = "reload: key '%s' changed\n" % key in log
        refused = "reload: key '%s' changed but needs a restart" % key in log
        assert applied != refused, key
        assert applied == (key in marked), key
