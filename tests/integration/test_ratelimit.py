"""The ratelimit op (GCRA in one script, on Redis's clock) against a real
redis-server: a burst, then refusal with a sensible retry_after, then a
refill. No strict timing: only bounds that hold on a slow machine."""

import time

import pytest

import ferry
from conftest import cli


def test_burst_then_refusal_then_refill(ferryd, redis):
    with ferryd.client() as c:
        # 10 per second, bursts of 5: five at once, then refused.
        results = [c.ratelimit("api:1", 10, 5) for _ in range(5)]
        assert all(r["allowed"] for r in results)
        assert [r["remaining"] for r in results][0] == 4
        assert results[-1]["remaining"] <= 1
        denied = c.ratelimit("api:1", 10, 5)
        assert denied["allowed"] is False and denied["remaining"] == 0
        # One request per 100 ms: the next one is allowed at most 100 ms on.
        assert 0 < denied["retry_after_ms"] <= 100
        assert 0 < denied["reset_after_ms"] <= 500
        # The state is one key that expires once the limit is full again.
        assert 0 < int(redis.cli("PTTL", "ratelimit:api:1")) <= 500
        # Refills: after retry_after, allowed again.
        time.sleep(denied["retry_after_ms"] / 1000.0 + 0.05)
        assert c.ratelimit("api:1", 10, 5)["allowed"] is True
        # Other keys are separate.
        assert c.ratelimit("api:2", 10, 5)["remaining"] == 4
        st = c.stats()["backends"]["redis"]["ratelimit"]
        assert st["allowed"] == 7 and st["denied"] == 1


def test_period_and_cost(ferryd):
    with ferryd.client() as c:
        # 2 per minute, bursts of 3: the retry is about 30 s away.
        for _ in range(3):
            assert c.ratelimit("slow", 2, 3, period_ms=60000)["allowed"]
        d = c.ratelimit("slow", 2, 3, period_ms=60000)
        assert not d["allowed"] and 25000 < d["retry_after_ms"] <= 30000
        # A cost takes that many at once.
        r = c.ratelimit("costly", 100, 10, cost=7)
        assert r["allowed"] and r["remaining"] == 3
        r = c.ratelimit("costly", 100, 10, cost=4)
        assert not r["allowed"] and r["remaining"] == 3 and r["retry_after_ms"] > 0


def test_many_clients_share_one_limit(ferryd):
    with ferryd.client() as a, ferryd.client() as b:
        # 1 per 10 s with a burst of 4: across two clients, 4 are allowed.
        allowed = sum(x.ratelimit("shared", 0.1, 4)["allowed"] for x in (a, b) * 5)
        assert allowed == 4


def test_bad_arguments(ferryd):
    with ferryd.client() as c:
        bad = [
            {"key": "k", "rate": 0, "burst": 1},
            {"key": "k", "rate": -1, "burst": 1},
            {"key": "k", "rate": 1, "burst": 0},
            {"key": "", "rate": 1, "burst": 1},
            {"key": "k", "rate": 1},
            {"key": "k", "rate": "1", "burst": 1},
            {"key": "k", "rate": 1, "burst": 2, "cost": 3},
            {"key": "k", "rate": 1, "burst": 2, "period_ms": 0},
            {"key": "k", "rate": 1, "burst": 2, "per": 1},
        ]
        for args in bad:
            with pytest.raises(ferry.FerryError) as e:
                c.call("ratelimit", args)
            assert e.value.code == "bad_request", args


def test_cli(ferryd):
    first = cli(ferryd, "ratelimit", "clikey", "--rate", "1/s", "--burst", "1")
    assert first.returncode == 0, first.stderr
    assert b"allowed: true" in first.stdout
    second = cli(ferryd, "ratelimit", "clikey", "--rate", "1/s", "--burst", "1")
    assert second.returncode == 1, second.stderr
    assert b"allowed: false" in second.stdout and b"retry_after_ms: " in second.stdout
    bad = cli(ferryd, "ratelimit", "clikey", "--rate", "fast", "--burst", "1")
    assert bad.returncode == 64
