"""Redis Sentinel: ferryd asks the sentinels for the primary, confirms it
with ROLE, and follows a failover (the primary killed) to the promoted
replica with no restart."""

import os
import subprocess
import sys
import time

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, ".."))

import ferry  # noqa: E402
from conftest import FERRYD  # noqa: E402
from redis_cluster import Sentinels  # noqa: E402


@pytest.fixture
def sentinels():
    s = Sentinels().start()
    yield s
    s.stop()


def sf(make_ferryd, sentinels, extra=()):
    # redis_url's host is replaced by the primary's; it must not be the primary.
    return make_ferryd(["--set", "redis_sentinel=127.0.0.1:1," + sentinels.addrs,
                        "--set", "redis_sentinel_master=" + sentinels.name,
                        "--set", "redis_backoff_max_ms=500"] + list(extra),
                       redis_url="redis://127.0.0.1:1/0")


def test_config_is_checked():
    for keys, says in ((["redis_sentinel=127.0.0.1:26379"], "redis_sentinel_master"),
                       (["redis_cluster=127.0.0.1"], "host:port"),
                       (["redis_cluster=127.0.0.1:7000", "redis_sentinel=127.0.0.1:26379",
                         "redis_sentinel_master=m"], "exclude"),
                       (["redis_cluster=127.0.0.1:7000", "redis_url=redis://127.0.0.1:7000/3"], "database 0")):
        args = [FERRYD, "--check-config"]
        for k in keys:
            args += ["--set", k]
        out = subprocess.run(args, capture_output=True, text=True, timeout=30)
        assert out.returncode != 0, keys
        assert says in out.stdout + out.stderr, (keys, out.stdout + out.stderr)


def test_follows_the_primary_through_a_failover(make_ferryd, sentinels):
    f = sf(make_ferryd, sentinels)
    st = f.stats()["backends"]["redis"]["sentinel"]
    assert st["confirmed"] is True
    assert st["primary"] == "127.0.0.1:%d" % sentinels.primary.port
    old = sentinels.primary
    with f.client() as c:
        assert c.redis("SET", "s:key", "before") == "OK"
        assert old.cli("GET", "s:key") == "before"
        old.kill()
        t0 = time.monotonic()
        first_ok, failures, i = None, 0, 0
        while time.monotonic() - t0 < 60:
            i += 1
            try:
                assert c.redis("SET", "s:key", "after%d" % i, deadline=1000) == "OK"
                first_ok = time.monotonic()
                break
            except ferry.FerryError as e:
                assert e.code in ("unavailable", "timeout", "backend_error"), e
                failures += 1
                time.sleep(0.05)
        assert first_ok is not None, "writes never came back:\n" + f.read_log()[-3000:]
        new = sentinels.replica
        # The write went to the promoted replica.
        assert new.cli("GET", "s:key") == "after%d" % i
        assert new.cli("ROLE").split("\n")[0] == "master"
        assert c.redis("GET", "s:key") == b"after%d" % i
    st = f.stats()["backends"]["redis"]["sentinel"]
    assert st["primary"] == "127.0.0.1:%d" % new.port
    assert st["switches"] == 1
    assert st["confirmed"] is True
    from test_docs import PROTOCOL_MD, key_paths, read, row_matches, stats_doc_rows
    paths = {p for p in key_paths(f.stats()) if p[:3] == ("backends", "redis", "sentinel")}
    rows = [r for r in stats_doc_rows(read(PROTOCOL_MD)) if r.startswith("backends.redis.sentinel")]
    assert sorted(".".join(p) for p in paths if not any(row_matches(r, p) for r in rows)) == []
    assert [r for r in rows if not any(row_matches(r, p) for p in paths)] == []
    print("\nsentinel failover: writes failed for %.2f s (%d attempts failed), down-after %d ms"
          % (first_ok - t0, failures, sentinels.down_after_ms))
