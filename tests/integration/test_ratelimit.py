"""The ratelimit op (GCRA in one script, on Redis's clock) against a real
redis-server: a burst, then refusal with a sensible retry_after, then a
refill. No strict timing: only bounds that hold on a slow machine."""

import time

import pytest

import ferry
from conftest import cli


def test_burst_then_refusal_then_refill(ferryd, redis):
    with ferryd.client() as c:
        # One per 2 s, bursts of 3: three at once, then refused. (A slow
        # interval, so that the machine's speed does not refill it mid-test.)
        results = [c.ratelimit("api:1", 0.5, 3) for _ in range(3)]
        assert all(r["allowed"] and r["retry_after_ms"] == 0 for r in results)
        assert results[0]["remaining"] == 2 and results[-1]["remaining"] <= 1
        denied = c.ratelimit("api:1", 0.5, 3)
        assert denied["allowed"] is False and denied["remaining"] == 0
        # The next one passes within one interval, and the full burst within three.
        assert 0 < denied["retry_after_ms"] <= 2000
        assert denied["retry_after_ms"] < denied["reset_after_ms"] <= 6000
        # The state is one key that expires once the limit is full again.
        assert 0 < int(redis.cli("PTTL", "ratelimit:api:1")) <= 6000
        # A refused request took nothing: after retry_after, allowed again.
        time.sleep(denied["retry_after_ms"] / 1000.0 + 0.05)
        assert c.ratelimit("api:1", 0.5, 3)["allowed"] is True
        # Other keys are separate.
        assert c.ratelimit("api:2", 0.5, 3)["remaining"] == 2
        st = c.stats()["backends"]["redis"]["ratelimit"]
        assert st["allowed"] == 5 and st["denied"] == 1


def test_period_and_cost(ferryd):
    with ferryd.client() as c:
        # 2 per minute, bursts of 3: the retry is up to 30 s away.
        for _ in range(3):
            assert c.ratelimit("slow", 2, 3, period_ms=60000)["allowed"]
        d = c.ratelimit("slow", 2, 3, period_ms=60000)
        assert not d["allowed"] and 10000 < d["retry_after_ms"] <= 30000
        # A cost takes that many at once (one per 6 s: no refill meanwhile).
        r = c.ratelimit("costly", 10, 10, period_ms=60000, cost=7)
        assert r["allowed"] and r["remaining"] == 3
        r = c.ratelimit("costly", 10, 10, period_ms=60000, cost=4)
        assert not r["allowed"] and r["remaining"] == 3 and r["retry_after_ms"] > 0
        # Cost 0 asks without taking.
        r = c.ratelimit("costly", 10, 10, period_ms=60000, cost=0)
        assert r["allowed"] and r["remaining"] == 3


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
    first = cli(ferryd, "ratelimit", "clikey", "--rate", "1/m", "--burst", "1")
    assert first.returncode == 0, first.stderr
    assert b"allowed: true" in first.stdout
    second = cli(ferryd, "ratelimit", "clikey", "--rate", "1/m", "--burst", "1")
    assert second.returncode == 1, second.stderr
    assert b"allowed: false" in second.stdout and b"retry_after_ms: " in second.stdout
    bad = cli(ferryd, "ratelimit", "clikey", "--rate", "fast", "--burst", "1")
    assert bad.returncode == 64
