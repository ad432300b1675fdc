#!/usr/bin/python3
"""make bench: ferryd against its peers, side by side, in one run.

Rows: GET and SET of 100-byte values at 1 and 50 connections, with 1 and 16
requests in flight each, for
  (a) redis-benchmark straight to redis-server on a Unix socket,
  (b) redis-benchmark through twemproxy (nutcracker), the peer proxy,
  (c) ferry-bench through ferryd.
Columns: throughput, p50, p99, and the proxy's own CPU seconds per 100,000
requests (utime + stime from /proc). Then idle RSS of both proxies.

Then TLS and the access policy (security_rows), each against the same
ferryd without it.

Then the Redis patterns (patterns_rows): a lock's acquire + release
through ferryd against SET NX PX + EVALSHA straight to Redis.
Then Redis pub/sub fan-out (pubsub_rows): 1 publisher, 20 subscribers
through ferryd against 20 subscribed to Redis directly.

Then RabbitMQ: persistent publishes with confirms through ferryd against a
direct rabbitmq-c publisher (tests/bench/amqp_bench.c) at 1 and 256 in
flight, and deliveries per second to one consumer, through ferryd and
direct.

This is a benchmark, not a test: it asserts nothing about speed. It prints
the targets next to the figures so a reader can compare.
"""

import argparse
import datetime
import os
import platform
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from harness import RabbitMQ, free_port  # noqa: E402

LINE = re.compile(r"^(\w+): ([\d.]+) requests per second(?:, p50=([\d.]+) msec)?(?:, p99=([\d.]+) msec)?")
TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid):
    with open("/proc/%d/stat" % pid) as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS


def rss_kib(pid, field="VmRSS:"):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith(field):
                return int(line.split()[1])
    return 0


def wait_socket(path, proc, what):
    for _ in range(500):
        if os.path.exists(path):
            return
        if proc.poll() is not None:
            sys.exit("%s exited early" % what)
        time.sleep(0.01)
    sys.exit("%s did not create %s" % (what, path))


def parse(out):
    rows = {}
    for raw in out.replace("\r", "\n").splitlines():
        m = LINE.match(raw.strip())
        if m:
            rows[m.group(1)] = (float(m.group(2)), m.group(3) and float(m.group(3)),
                                m.group(4) and float(m.group(4)))
    return rows


def redis_benchmark_p99(sock, test, n, c, p, d):
    """redis-benchmark -q prints p50 only; its full report has the latency
    percentiles, from which we read p99."""
    out = subprocess.run(["redis-benchmark", "-s", sock, "-t", test, "-n", str(n), "-c", str(c),
                          "-P", str(p), "-d", str(d), "--precision", "3"],
                         capture_output=True, text=True).stdout
    rps = p50 = p99 = None
    for raw in out.splitlines():
        s = raw.strip()
        m = re.match(r"throughput summary: ([\d.]+) requests per second", s)
        if m:
            rps = float(m.group(1))
        m = re.match(r"([\d.]+)% <= ([\d.]+) milliseconds", s)
        if m:
            pct, ms = float(m.group(1)), float(m.group(2))
            if p50 is None and pct >= 50:
                p50 = ms
            if p99 is None and pct >= 99:
                p99 = ms
    return rps, p50, p99


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--build", default=os.path.join(os.path.dirname(__file__), "..", "..", "build"))
    ap.add_argument("-n", type=int, default=200000, help="requests per row")
    ap.add_argument("--markdown", action="store_true", help="print a markdown table")
    ap.add_argument("--no-amqp", action="store_true", help="skip the RabbitMQ rows")
    ap.add_argument("--amqp-only", action="store_true", help="only the RabbitMQ rows")
    ap.add_argument("--no-tracing", action="store_true", help="skip the tracing rows")
    ap.add_argument("--tracing-only", action="store_true", help="only the tracing rows")
    ap.add_argument("--amqp-n", type=int, default=20000, help="messages per AMQP row")
    ap.add_argument("--consume-pairs", type=int, default=7, help="alternating pairs for the consume row")
    ap.add_argument("--no-security", action="store_true", help="skip the TLS and policy rows")
    ap.add_argument("--security-only", action="store_true", help="only the TLS and policy rows")
    ap.add_argument("--no-patterns", action="store_true", help="skip the Redis patterns' rows (locks)")
    ap.add_argument("--patterns-only", action="store_true", help="only the Redis patterns' rows (locks)")
    ap.add_argument("--cache-only", action="store_true", help="only the cache rows")
    ap.add_argument("--no-cache", action="store_true", help="skip the cache rows")
    ap.add_argument("--no-pubsub", action="store_true", help="skip the pub/sub fan-out row")
    ap.add_argument("--pubsub-only", action="store_true", help="only the pub/sub fan-out row")
    ap.add_argument("--pubsub-n", type=int, default=100000, help="messages published per pub/sub run")
    ap.add_argument("--pubsub-pairs", type=int, default=7, help="alternating pairs for the pub/sub row")
    ap.add_argument("--no-cluster", action="store_true", help="skip the Redis Cluster rows")
    ap.add_argument("--cluster-only", action="store_true", help="only the Redis Cluster rows")
    args = ap.parse_args()
    build = os.path.abspath(args.build)
    tmp = tempfile.mkdtemp(prefix="ferry-bench-")
    procs = []
    try:
        rsock = os.path.join(tmp, "redis.sock")
        redis = subprocess.Popen(["redis-server", "--port", "0", "--unixsocket", rsock, "--save", "",
                                  "--appendonly", "no", "--dir", tmp, "--logfile",
                                  os.path.join(tmp, "redis.log")])
        procs.append(redis)
        wait_socket(rsock, redis, "redis-server")

        nsock = os.path.join(tmp, "nc.sock")
        with open(os.path.join(tmp, "nc.yml"), "w") as f:
            f.write("pool:\n  listen: %s 0600\n  redis: true\n  hash: fnv1a_64\n"
                    "  distribution: ketama\n  auto_eject_hosts: false\n  timeout: 5000\n"
                    "  servers:\n   - %s:1\n" % (nsock, rsock))
        nc = subprocess.Popen(["nutcracker", "-c", os.path.join(tmp, "nc.yml"), "-o",
                               os.path.join(tmp, "nc.log"), "-s", str(free_port()),
                               "-a", "127.0.0.1"])
        procs.append(nc)
        wait_socket(nsock, nc, "nutcracker")

        fsock = os.path.join(tmp, "ferry.sock")
        # The side-by-side rows run with tracing off; the tracing rows
        # below measure what turning it on costs.
        off = dict(os.environ, OTEL_TRACES_EXPORTER="none", OTEL_METRICS_EXPORTER="none")
        fd = subprocess.Popen([os.path.join(build, "ferryd"), "--socket", fsock, "--redis",
                               "unix://" + rsock, "--log-level", "warn"], env=off)
        procs.append(fd)
        wait_socket(fsock, fd, "ferryd")
        time.sleep(0.5)
        idle = {"ferryd": rss_kib(fd.pid), "nutcracker": rss_kib(nc.pid),
                "ferryd_anon": rss_kib(fd.pid, "RssAnon:"), "nutcracker_anon": rss_kib(nc.pid, "RssAnon:")}

        results = []
        if args.amqp_only:
            amqp_rows(build, tmp, rsock, args)
            return
        if args.tracing_only:
            tracing_rows(build, tmp, rsock, fsock, fd.pid, args)
            return
        if args.security_only:
            security_rows(build, tmp, args)
            return
        if args.patterns_only:
            patterns_rows(build, rsock, fsock, args)
            return
        if args.cache_only:
            cache_rows(build, fsock, fd.pid, args)
            return
        if args.pubsub_only:
            pubsub_rows(build, tmp, rsock, args)
            return
        if args.cluster_only:
            cluster_rows(build, tmp, args)
            return
        for c, p in ((1, 1), (1, 16), (50, 1), (50, 16)):
            for test in ("get", "set"):
                n = args.n
                row = {"test": test.upper(), "c": c, "p": p}
                row["redis"] = redis_benchmark_p99(rsock, test, n, c, p, 100)
                t0 = cpu_seconds(nc.pid)
                row["nutcracker"] = redis_benchmark_p99(nsock, test, n, c, p, 100)
                row["nc_cpu"] = (cpu_seconds(nc.pid) - t0) * 100000 / n
                t0 = cpu_seconds(fd.pid)
                out = subprocess.run([os.path.join(build, "ferry-bench"), "--socket", fsock, "-t", test,
                                      "-n", str(n), "-c", str(c), "-P", str(p), "-d", "100", "-q"],
                                     capture_output=True, text=True)
                if out.returncode != 0:
                    sys.exit("ferry-bench failed: " + out.stderr)
                row["ferry_cpu"] = (cpu_seconds(fd.pid) - t0) * 100000 / n
                row["ferryd"] = parse(out.stdout)[test.upper()]
                results.append(row)
                print_row(row, args.markdown, header=len(results) == 1)
                sys.stdout.flush()
        loaded = {"ferryd": rss_kib(fd.pid), "nutcracker": rss_kib(nc.pid)}
        summary(results, idle, loaded, args.markdown)
        if not args.no_tracing:
            tracing_rows(build, tmp, rsock, fsock, fd.pid, args)
        if not args.no_security:
            security_rows(build, tmp, args)
        if not args.no_patterns:
            patterns_rows(build, rsock, fsock, args)
        if not args.no_cache:
            cache_rows(build, fsock, fd.pid, args)
        if not args.no_pubsub:
            pubsub_rows(build, tmp, rsock, args)
        if not args.no_cluster:
            cluster_rows(build, tmp, args)
        if not args.no_amqp:
            amqp_rows(build, tmp, rsock, args)
    finally:
        for pr in reversed(procs):
            if pr.poll() is None:
                pr.send_signal(signal.SIGTERM)
                try:
                    pr.wait(10)
                except subprocess.TimeoutExpired:
                    pr.kill()
        shutil.rmtree(tmp, ignore_errors=True)


def spans_dropped(build, sock):
    out = subprocess.run([os.path.join(build, "ferry"), "--socket", sock, "stats"], capture_output=True, text=True)
    m = re.search(r"telemetry.spans_dropped: (\d+)", out.stdout)
    return int(m.group(1)) if m else 0


def bench_rps(build, sock, test, n, c, p):
    out = subprocess.run([os.path.join(build, "ferry-bench"), "--socket", sock, "-t", test, "-n", str(n),
                          "-c", str(c), "-P", str(p), "-d", "100", "-q"], capture_output=True, text=True)
    if out.returncode != 0:
        sys.exit("ferry-bench failed: " + out.stderr)
    return parse(out.stdout)[test.upper()][0]


# Pairs per tracing row. With 7, the control row (two identical ferryds)
# still read 0.89-1.04 from run to run, as much as tracing costs; the
# median of 15 moves less, and the rows take about two minutes more.
PAIRS = 15


def alternate(build, a_sock, b_sock, test, n, p, runs=PAIRS):
    """Runs the load against a and b in turn, runs times, b first in
    every other pair (so that neither is always the one that runs after
    the other); returns both lists of rates, pair by pair."""
    u, t = [], []
    for k in range(runs):
        if k % 2:
            t.append(bench_rps(build, b_sock, test, n, 50, p))
            u.append(bench_rps(build, a_sock, test, n, 50, p))
        else:
            u.append(bench_rps(build, a_sock, test, n, 50, p))
            t.append(bench_rps(build, b_sock, test, n, 50, p))
    return u, t


def paired(u, t):
    """The median of the ratios of each pair of neighbouring runs, and
    their lowest and highest. On this shared machine the speed of every
    process drifts by a third within seconds; a pair's two runs see
    nearly the same drift, so the ratio of each pair cancels most of it,
    where the ratio of the two medians does not (two identical ferryds
    measured 0.89 that way; the median of pairs said 0.97)."""
    pairs = sorted(b / a for a, b in zip(u, t))
    return pairs[len(pairs) // 2], pairs[0], pairs[-1]


def tracing_rows(build, tmp, rsock, untraced_sock, untraced_pid, args):
    """ferryd with every request traced (always_on) and exported to a local
    collector, against the untraced ferryd: each row alternates the two
    PAIRS times, in turn first (see alternate()); its ratio is the median of the pairs' ratios (see
    paired()), and the spread column gives their lowest and highest, to
    show the noise. Pipelined rows run four times as many requests, so
    that a run lasts about a second (0.2 s runs swung by a third). A
    control row first measures a second untraced ferryd against the
    first in the same way: how far from 1.00 this machine puts two
    identical daemons today. Two batch settings: the specification's
    defaults, and larger batches for high span rates. The collector is
    build/otlp-sink (tests/bench/otlp_sink.c), which discards what it
    receives (see there why not the decoding test collector). Dropped spans are printed: a
    row that drops spans did not export everything it traced. The cpu
    column is ferryd's CPU time per request traced over untraced, summed
    over all the runs: what tracing costs ferryd itself."""
    port = free_port()
    sink = subprocess.Popen([os.path.join(build, "otlp-sink"), str(port)], stdout=subprocess.PIPE, text=True)
    settings = [("spec defaults (batch 512, queue 2048)", {}),
                ("batch 4096, queue 16384", {"OTEL_BSP_MAX_EXPORT_BATCH_SIZE": "4096",
                                            "OTEL_BSP_MAX_QUEUE_SIZE": "16384"})]
    daemons = []
    verdicts = []
    try:
        csock = os.path.join(tmp, "ferry-control.sock")
        ctl = subprocess.Popen([os.path.join(build, "ferryd"), "--socket", csock, "--redis", "unix://" + rsock,
                                "--log-level", "error"],
                               env=dict(os.environ, OTEL_TRACES_EXPORTER="none", OTEL_METRICS_EXPORTER="none"))
        daemons.append(ctl)
        wait_socket(csock, ctl, "ferryd (control)")
        time.sleep(0.5)
        u, t = alternate(build, untraced_sock, csock, "get", args.n * 4, 16)
        ratio, lo, hi = paired(u, t)
        print()
        print("control: a second untraced ferryd against the first, GET 50x16: %.2fx (spread %.2f-%.2f)"
              % (ratio, lo, hi))
        instruction_rows(build, tmp, rsock, port, args)
        for k, (label, extra) in enumerate(settings):
            fsock = os.path.join(tmp, "ferry-traced-%d.sock" % k)
            env = dict(os.environ, OTEL_TRACES_SAMPLER="always_on",
                       OTEL_EXPORTER_OTLP_ENDPOINT="http://127.0.0.1:%d" % port,
                       OTEL_TRACES_EXPORTER="otlp", OTEL_METRICS_EXPORTER="otlp", OTEL_BSP_SCHEDULE_DELAY="1000",
                       **extra)
            fd = subprocess.Popen([os.path.join(build, "ferryd"), "--socket", fsock, "--redis", "unix://" + rsock,
                                   "--log-level", "error"], env=env)
            daemons.append(fd)
            wait_socket(fsock, fd, "ferryd (traced)")
            time.sleep(0.5)
            print()
            cols = ("tracing always_on, %s" % label, "conns", "in flight", "untraced rps", "traced rps",
                    "traced/untraced", "spread", "cpu/request traced/untraced", "spans dropped")
            if args.markdown:
                print("| " + " | ".join(cols) + " |")
                print("|---|---|---|---|---|---|---|---|---|")
            else:
                print("%-10s %6s %9s %12s %12s %8s %11s %6s %8s  (%s)" % ("traced", "conns", "in flight", "untraced",
                                                                           "traced", "ratio", "spread", "cpu", "dropped",
                                                                           label))
            for test in ("get", "set"):
                for p in (1, 16):
                    row = "%s 50x%d (%s)" % (test.upper(), p, label)
                    before = spans_dropped(build, fsock)
                    ucpu, tcpu = cpu_seconds(untraced_pid), cpu_seconds(fd.pid)
                    u, t = alternate(build, untraced_sock, fsock, test, args.n * (4 if p > 1 else 1), p)
                    time.sleep(1.2)  # the last batch goes at the schedule delay: its cost counts
                    ucpu, tcpu = cpu_seconds(untraced_pid) - ucpu, cpu_seconds(fd.pid) - tcpu
                    cpu = "%.2fx" % (tcpu / ucpu) if ucpu > 0 else "-"
                    ratio, lo, hi = paired(u, t)
                    spread = "%.2f-%.2f" % (lo, hi)
                    u, t = sorted(u)[len(u) // 2], sorted(t)[len(t) // 2]
                    dropped = spans_dropped(build, fsock) - before
                    verdicts.append("  %s: %.2fx (target 0.9x) %s" % (row, ratio, "met" if ratio >= 0.9 else "MISSED"))
                    if args.markdown:
                        print("| %s | 50 | %d | %.0f | %.0f | %.2fx | %s | %s | %d |" % (test.upper(), p, u, t, ratio,
                                                                                      spread, cpu, dropped))
                    else:
                        print("%-10s %6d %9d %12.0f %12.0f %7.2fx %11s %6s %8d" % (test.upper(), 50, p, u, t, ratio,
                                                                                  spread, cpu, dropped))
                    sys.stdout.flush()
        print("target: traced >= 0.9x untraced (median of the ratios of %d alternating pairs; rps columns: medians)"
              % PAIRS)
        print("\n".join(verdicts))
    finally:
        for fd in daemons:
            fd.send_signal(signal.SIGTERM)
            fd.wait(30)
        sink.terminate()
        sink.wait(10)


PATTERN_PAIRS = 9


def patterns_rows(build, rsock, fsock, args):
    """The Redis patterns against what a careful client does directly.
    Locks: lock.acquire + lock.release through ferryd (one connection, one
    at a time) against SET NX PX + EVALSHA compare-and-delete straight to
    redis-server with hiredis (build/lock-bench, tests/bench/lock_bench.c),
    alternated PATTERN_PAIRS times, in turn first; the ratio is the median
    of the pairs' p50 ratios. Also the Redis commands ferryd sent per
    acquire + release (INFO commandstats): the target is at most 2 round
    trips."""
    n = max(args.n // 10, PATTERN_PAIRS * 100)
    out = subprocess.run([os.path.join(build, "lock-bench"), "--socket", fsock, "--redis", rsock, "-n", str(n),
                          "--pairs", str(PATTERN_PAIRS)], capture_output=True, text=True)
    if out.returncode != 0:
        sys.exit("lock-bench failed: " + out.stderr)
    got = dict(line.split(": ", 1) for line in out.stdout.strip().splitlines())
    trips = float(got["redis commands per acquire+release"].split()[0])
    print()
    if args.markdown:
        print("| lock acquire+release, 1 conn | p50 / p99 |")
        print("|---|---|")
        print("| ferryd (lock.acquire, lock.release) | %s |" % got["ferryd"])
        print("| direct (SET NX PX, EVALSHA) | %s |" % got["direct"])
        print("| ferryd/direct p50 | %s |" % got["ratio"])
        print("| Redis round trips per acquire+release | %.2f (target <= 2: %s) |"
              % (trips, "met" if trips <= 2.001 else "MISSED"))
    else:
        print("lock acquire+release, 1 connection, %d each:" % n)
        print("  ferryd (lock.acquire, lock.release): %s" % got["ferryd"])
        print("  direct (SET NX PX, EVALSHA):         %s" % got["direct"])
        print("  ferryd/direct p50:                   %s" % got["ratio"])
        print("  Redis round trips per acquire+release: %.2f (target <= 2: %s)"
              % (trips, "met" if trips <= 2.001 else "MISSED"))
    sys.stdout.flush()


SECURITY_PAIRS = 9

# Ten rules, the shape of a real policy: the checks a request pays for are
# the op, the command's categories against each rule, and its key.
BENCH_POLICY = """
[ops]
peers = uid:4242
ops = ping

[bench]
peers = uid:%d
ops = ping hello stats health redis
redis_commands = +@read +@write -@dangerous -@admin +client|id -flushall -keys
redis_keys = bench:* memtier-* __rand_int__ key:*

[*]
ops = ping
"""


def cache_rows(build, fsock, pid, args):
    """A cache hit: cache.get (one EVALSHA of the lease script, answered
    {hit, value}) against the redis op's GET of the same 100-byte value,
    through the same ferryd, 50 connections. Each row alternates the two
    PAIRS times, in turn first, as the tracing rows do; the ratio is the
    median of the pairs' (paired()), with their lowest and highest. The
    cpu column is ferryd's CPU time per cache.get over per GET, summed
    over all the runs. Target: a ratio of 0.90 or more."""
    out = subprocess.run([os.path.join(build, "ferry-bench"), "--socket", fsock, "-t", "set", "-n", "1000",
                          "-c", "1", "-d", "100", "-q"], capture_output=True, text=True)
    if out.returncode != 0:
        sys.exit("ferry-bench failed: " + out.stderr)
    print()
    print("Cache hit, cache.get against redis GET through one ferryd (50 conns; target ratio >= 0.90):")
    print("%-28s %12s %12s %7s %13s %6s" % ("row", "GET rps", "cache rps", "ratio", "spread", "cpu"))
    for p in (1, 16):
        n = args.n if p == 1 else args.n * 4
        u, t = [], []
        cpu_u = cpu_t = 0.0
        for k in range(PAIRS):
            order = ("get", "cacheget") if k % 2 == 0 else ("cacheget", "get")
            for test in order:
                t0 = cpu_seconds(pid)
                rps = bench_rps(build, fsock, test, n, 50, p)
                dt = cpu_seconds(pid) - t0
                if test == "get":
                    u.append(rps)
                    cpu_u += dt
                else:
                    t.append(rps)
                    cpu_t += dt
        ratio, lo, hi = paired(u, t)
        med = lambda xs: sorted(xs)[len(xs) // 2]  # noqa: E731
        print("%-28s %12.0f %12.0f %7.2f %6.2f-%-6.2f %6.2f" % (
            "cache hit, %d in flight" % p, med(u), med(t), ratio, lo, hi, cpu_t / cpu_u if cpu_u else 0))
        sys.stdout.flush()


def make_certs(tmp):
    """A CA and a certificate for 127.0.0.1, with the openssl CLI."""
    d = os.path.join(tmp, "tls")
    os.makedirs(d, exist_ok=True)

    def run(*a):
        subprocess.run(["openssl"] + list(a), check=True, capture_output=True, cwd=d)
    run("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out", "ca.crt", "-days", "2",
        "-subj", "/CN=ferry bench CA")
    run("req", "-newkey", "rsa:2048", "-nodes", "-keyout", "server.key", "-out", "server.csr", "-subj", "/CN=127.0.0.1")
    with open(os.path.join(d, "ext.cnf"), "w") as f:
        f.write("subjectAltName = IP:127.0.0.1, DNS:localhost\n")
    run("x509", "-req", "-in", "server.csr", "-CA", "ca.crt", "-CAkey", "ca.key", "-CAcreateserial", "-out",
        "server.crt", "-days", "2", "-extfile", "ext.cnf")
    return d


def security_rows(build, tmp, args):
    """TLS and the access policy, each against the same ferryd without it,
    alternated SECURITY_PAIRS times (see alternate() and paired()):
    ferryd to a redis-server over TLS against ferryd to the same server
    over plain TCP, with redis-benchmark over TLS and over TCP against the
    same server as the anchor; and ferryd with a policy of ten rules
    against ferryd with none."""
    certs = make_certs(tmp)
    port, tport = free_port(), free_port()
    rs = subprocess.Popen(["redis-server", "--port", str(port), "--tls-port", str(tport), "--bind", "127.0.0.1",
                           "--tls-cert-file", os.path.join(certs, "server.crt"),
                           "--tls-key-file", os.path.join(certs, "server.key"),
                           "--tls-ca-cert-file", os.path.join(certs, "ca.crt"), "--tls-auth-clients", "no",
                           "--save", "", "--appendonly", "no", "--dir", tmp,
                           "--logfile", os.path.join(tmp, "redis-tls.log")])
    policy = os.path.join(tmp, "policy.conf")
    with open(policy, "w") as f:
        f.write(BENCH_POLICY % os.getuid())
    off = dict(os.environ, OTEL_TRACES_EXPORTER="none", OTEL_METRICS_EXPORTER="none")
    daemons = []
    try:
        for _ in range(100):
            if subprocess.run(["redis-cli", "-p", str(port), "ping"], capture_output=True).returncode == 0:
                break
            time.sleep(0.1)

        def ferryd(name, url, *extra):
            sock = os.path.join(tmp, name + ".sock")
            p = subprocess.Popen([os.path.join(build, "ferryd"), "--socket", sock, "--redis", url,
                                  "--log-level", "error"] + list(extra), env=off)
            daemons.append(p)
            wait_socket(sock, p, "ferryd (%s)" % name)
            return sock
        plain = ferryd("plain", "redis://127.0.0.1:%d" % port)
        tls = ferryd("tls", "rediss://127.0.0.1:%d" % tport, "--set",
                     "redis_tls_ca_file=" + os.path.join(certs, "ca.crt"))
        pol = ferryd("policy", "redis://127.0.0.1:%d" % port, "--set", "policy_file=" + policy)
        time.sleep(1.0)   # the policed ferryd learns the server's commands
        rows = []
        for test in ("get", "set"):
            u, t = alternate(build, plain, tls, test, args.n * 4, 16, runs=SECURITY_PAIRS)
            r, lo, hi = paired(u, t)
            rows.append(("%s 50x16 over TLS / over TCP" % test.upper(), sorted(u)[len(u) // 2],
                         sorted(t)[len(t) // 2], r, lo, hi))
        for test in ("get", "set"):
            u, t = alternate(build, plain, pol, test, args.n * 4, 16, runs=SECURITY_PAIRS)
            r, lo, hi = paired(u, t)
            rows.append(("%s 50x16 with a 10-rule policy / without" % test.upper(), sorted(u)[len(u) // 2],
                         sorted(t)[len(t) // 2], r, lo, hi))
        anchor = {}
        for name, extra in (("tcp", []), ("tls", ["--tls", "--cacert", os.path.join(certs, "ca.crt")])):
            p_ = tport if name == "tls" else port
            out = subprocess.run(["redis-benchmark", "-h", "127.0.0.1", "-p", str(p_), "-t", "get,set", "-c", "50",
                                  "-P", "16", "-n", str(args.n * 4), "-d", "100", "-q"] + extra,
                                 capture_output=True, text=True)
            anchor[name] = parse(out.stdout)
        print()
        if args.markdown:
            print("| 50 clients x 16 in flight, 100-byte values | without (rps) | with (rps) | with/without | spread |")
            print("|---|---|---|---|---|")
            for name, a, b, r, lo, hi in rows:
                print("| %s | %.0f | %.0f | %.2fx | %.2f-%.2f |" % (name, a, b, r, lo, hi))
        else:
            print("%-44s %12s %12s %8s %11s" % ("security (median of %d pairs)" % SECURITY_PAIRS, "without", "with",
                                                 "ratio", "spread"))
            for name, a, b, r, lo, hi in rows:
                print("%-44s %12.0f %12.0f %7.2fx %5.2f-%.2f" % (name, a, b, r, lo, hi))
        for test in ("GET", "SET"):
            tcp, tls_ = anchor["tcp"].get(test, (0,))[0], anchor["tls"].get(test, (0,))[0]
            print("anchor: redis-benchmark %s 50x16 direct, TCP %.0f rps, TLS %.0f rps (%.2fx)"
                  % (test, tcp, tls_, tls_ / tcp if tcp else 0))
        print("targets: ferryd over TLS >= 0.8x over TCP; the policy costs <= 5% (>= 0.95x)")
    finally:
        for p in daemons + [rs]:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
                try:
                    p.wait(10)
                except subprocess.TimeoutExpired:
                    p.kill()


CLUSTER_PAIRS = 7


def cluster_rows(build, tmp, args):
    """ferryd on a 3-primary Redis Cluster against ferryd on
    one redis-server over TCP on the same machine, alternated
    CLUSTER_PAIRS times (see alternate() and paired()); with
    redis-benchmark --cluster against the same cluster and redis-benchmark
    against the same single server as the anchor. ferry-bench's key is
    fixed, so its load goes to one primary: the row measures what the
    routing costs, not how the cluster scales. No replicas: on a small
    machine, a replica copying every SET takes CPU from the primary and
    from ferryd, which would be counted against the routing."""
    from redis_cluster import Cluster  # noqa: E402
    cl = Cluster(primaries=3, replicas=0).start()
    port = free_port()
    rs = subprocess.Popen(["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                           "--appendonly", "no", "--dir", tmp, "--logfile", os.path.join(tmp, "redis-single.log")])
    off = dict(os.environ, OTEL_TRACES_EXPORTER="none", OTEL_METRICS_EXPORTER="none")
    daemons = []
    try:
        for _ in range(100):
            if subprocess.run(["redis-cli", "-p", str(port), "ping"], capture_output=True).returncode == 0:
                break
            time.sleep(0.1)

        def ferryd(name, url, *extra):
            sock = os.path.join(tmp, name + ".sock")
            p = subprocess.Popen([os.path.join(build, "ferryd"), "--socket", sock, "--redis", url,
                                  "--log-level", "error"] + list(extra), env=off)
            daemons.append(p)
            wait_socket(sock, p, "ferryd (%s)" % name)
            return sock
        single = ferryd("single", "redis://127.0.0.1:%d" % port)
        clus = ferryd("cluster", "redis://127.0.0.1:%d" % cl.nodes[0].port, "--set", "redis_cluster=" + cl.seeds)
        time.sleep(1.0)   # the cluster's ferryd learns the map and the commands
        rows = []
        for test in ("get", "set"):
            u, t = alternate(build, single, clus, test, args.n * 4, 16, runs=CLUSTER_PAIRS)
            r, lo, hi = paired(u, t)
            rows.append(("%s 50x16 on a 3-primary cluster / one redis" % test.upper(), sorted(u)[len(u) // 2],
                         sorted(t)[len(t) // 2], r, lo, hi))
        anchor = {}
        for name, extra in (("single", ["-p", str(port)]), ("cluster", ["-p", str(cl.nodes[0].port), "--cluster"])):
            out = subprocess.run(["redis-benchmark", "-h", "127.0.0.1", "-t", "get,set", "-c", "50", "-P", "16",
                                  "-n", str(args.n * 4), "-d", "100", "-q"] + extra, capture_output=True, text=True)
            anchor[name] = parse(out.stdout)
        print()
        if args.markdown:
            print("| 50 clients x 16 in flight, 100-byte values | one redis (rps) | cluster (rps) | cluster/one | spread |")
            print("|---|---|---|---|---|")
            for name, a, b, r, lo, hi in rows:
                print("| %s | %.0f | %.0f | %.2fx | %.2f-%.2f |" % (name, a, b, r, lo, hi))
        else:
            print("%-44s %12s %12s %8s %11s" % ("cluster (median of %d pairs)" % CLUSTER_PAIRS, "one redis",
                                                 "cluster", "ratio", "spread"))
            for name, a, b, r, lo, hi in rows:
                print("%-44s %12.0f %12.0f %7.2fx %5.2f-%.2f" % (name, a, b, r, lo, hi))
        for test in ("GET", "SET"):
            one, many = anchor["single"].get(test, (0,))[0], anchor["cluster"].get(test, (0,))[0]
            print("anchor: redis-benchmark %s 50x16 direct, one redis %.0f rps, --cluster %.0f rps (%.2fx)"
                  % (test, one, many, many / one if one else 0))
        print("targets: ferryd on a cluster >= 0.8x ferryd on one redis")
    finally:
        for p in daemons + [rs]:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
                try:
                    p.wait(10)
                except subprocess.TimeoutExpired:
                    p.kill()
        cl.stop()


def telemetry_stats(build, sock):
    out = subprocess.run([os.path.join(build, "ferry"), "--socket", sock, "stats"], capture_output=True, text=True)
    return {k: int(v) for k, v in re.findall(r"telemetry\.(\w+): (\d+)", out.stdout)}


def instruction_rows(build, tmp, rsock, port, args):
    """ferryd's own instructions per request, counted by callgrind: the one
    figure here that this machine's noise does not move, so it shows what
    a change to the traced path costs or saves. User space only: the
    kernel's share of the export (the TCP sends) is not in it. Each
    setting runs ferryd under callgrind; 20,000 GET 50x16 warm it up, the
    counters are zeroed, 100,000 more are counted, up to the moment every
    span they made has been exported."""
    n = 100000
    settings = [("untraced", {"OTEL_TRACES_EXPORTER": "none", "OTEL_METRICS_EXPORTER": "none"}),
                ("traced, spec defaults (batch 512)", {}),
                ("traced, batch 4096", {"OTEL_BSP_MAX_EXPORT_BATCH_SIZE": "4096", "OTEL_BSP_MAX_QUEUE_SIZE": "16384"})]
    base = None
    print()
    print("ferryd instructions per request (callgrind, user space; GET 50x16, %d requests):" % n)
    for k, (label, extra) in enumerate(settings):
        sock = os.path.join(tmp, "ferry-cg-%d.sock" % k)
        out = os.path.join(tmp, "callgrind.%d" % k)
        env = dict(os.environ, OTEL_TRACES_SAMPLER="always_on", OTEL_EXPORTER_OTLP_ENDPOINT="http://127.0.0.1:%d" % port,
                   OTEL_TRACES_EXPORTER="otlp", OTEL_METRICS_EXPORTER="otlp", OTEL_BSP_SCHEDULE_DELAY="200")
        env.update(extra)
        p = subprocess.Popen(["valgrind", "--tool=callgrind", "--callgrind-out-file=" + out,
                              os.path.join(build, "ferryd"), "--socket", sock, "--redis", "unix://" + rsock,
                              "--log-level", "error"], env=env, stderr=subprocess.DEVNULL)
        try:
            for _ in range(600):  # valgrind takes seconds to start
                if os.path.exists(sock) or p.poll() is not None:
                    break
                time.sleep(0.05)
            wait_socket(sock, p, "ferryd (callgrind)")
            bench_rps(build, sock, "get", 20000, 50, 16)
            subprocess.run(["callgrind_control", "-z", str(p.pid)], capture_output=True, check=True)
            bench_rps(build, sock, "get", n, 50, 16)
            if env["OTEL_TRACES_EXPORTER"] == "otlp":
                for _ in range(300):  # each stats request adds a span of its own
                    if telemetry_stats(build, sock).get("spans_queued", 0) <= 1:
                        break
                    time.sleep(0.1)
            subprocess.run(["callgrind_control", "-d", str(p.pid)], capture_output=True, check=True)
            with open(out + ".1") as f:
                total = int(re.search(r"^summary: (\d+)", f.read(), re.M).group(1))
        finally:
            p.send_signal(signal.SIGTERM)
            p.wait(60)
        per = total / n
        base = base or per
        print("  %-36s %6.0f  (%.2fx untraced)" % (label, per, per / base))
        sys.stdout.flush()


def rate(res, name):
    out = res.stdout + res.stderr
    for line in out.splitlines():
        m = re.match(r"%s: ([\d.]+)" % name, line)
        if m:
            return float(m.group(1))
    sys.exit("no %s figure in: %r" % (name, out))


def amqp_rows(build, tmp, rsock, args):
    """Publishing and consumption, ferryd against rabbitmq-c direct. ferryd
    runs untraced, as in the Redis rows: what tracing costs is measured
    on its own, and with no collector listening the default exporter
    would spend the run retrying."""
    rabbit = RabbitMQ().start()
    fd = None
    try:
        fsock = os.path.join(tmp, "ferry-amqp.sock")
        off = dict(os.environ, OTEL_TRACES_EXPORTER="none", OTEL_METRICS_EXPORTER="none")
        fd = subprocess.Popen([os.path.join(build, "ferryd"), "--socket", fsock, "--redis", "unix://" + rsock,
                               "--amqp", rabbit.url, "--log-level", "warn"], env=off)
        wait_socket(fsock, fd, "ferryd")
        time.sleep(1.0)
        n = args.amqp_n
        direct = os.path.join(build, "amqp-bench")
        fbench = os.path.join(build, "ferry-bench")
        rows = []
        for p in (1, 256):
            d = subprocess.run([direct, "-p", str(rabbit.port), "-t", "publish", "-q", "bench.direct.%d" % p,
                                "-n", str(n), "-P", str(p), "-d", "100"], capture_output=True, text=True)
            f = subprocess.run([fbench, "--socket", fsock, "--queue", "bench.ferry.%d" % p, "-t", "publish",
                                "-n", str(n), "-c", "1", "-P", str(p), "-d", "100", "-q"],
                               capture_output=True, text=True)
            rows.append(("publish, persistent, confirmed, %d in flight" % p, rate(d, "PUBLISH"),
                         rate(f, "PUBLISH")))
        # Consumption, in alternating pairs (the machine's noise moves a
        # single pair by 2x): each pair publishes n messages to a queue of
        # each side's, then consumes them, direct first, then through
        # ferryd; the row is the pair with the median ratio.
        pairs = []
        for k in range(args.consume_pairs):
            for q in ("bench.cdirect", "bench.cferry"):
                subprocess.run([direct, "-p", str(rabbit.port), "-t", "publish", "-q", q, "-n", str(n),
                                "-P", "256", "-d", "100"], capture_output=True, text=True)
            d = subprocess.run([direct, "-p", str(rabbit.port), "-t", "consume", "-q", "bench.cdirect",
                                "-n", str(n), "-P", "256"], capture_output=True, text=True)
            f = subprocess.run([fbench, "--socket", fsock, "--queue", "bench.cferry", "-t", "consume",
                                "-n", str(n), "-P", "256", "-q"], capture_output=True, text=True)
            pairs.append((rate(d, "CONSUME"), rate(f, "CONSUME")))
        pairs.sort(key=lambda p: p[1] / p[0])
        ratios = ", ".join("%.2f" % (fv / dv) for dv, fv in pairs)
        dmed, fmed = pairs[len(pairs) // 2]
        rows.append(("consume, prefetch 256, ack every 50 (median of %d pairs)" % len(pairs), dmed, fmed))
        print()
        if args.markdown:
            print("| RabbitMQ (%d messages, 100 bytes) | rabbitmq-c direct msg/s | through ferryd msg/s | ferryd/direct |"
                  % n)
            print("|---|---|---|---|")
            for name, dv, fv in rows:
                print("| %s | %.0f | %.0f | %.2fx |" % (name, dv, fv, fv / dv))
        else:
            print("%-45s %12s %12s %8s" % ("RabbitMQ (%d messages)" % n, "direct", "ferryd", "ratio"))
            for name, dv, fv in rows:
                print("%-45s %12.0f %12.0f %7.2fx" % (name, dv, fv, fv / dv))
        print("consume pairs, ferryd/direct, sorted: %s" % ratios)
        print("target: publishing and consuming through ferryd >= 0.8x direct")
    finally:
        if fd and fd.poll() is None:
            fd.send_signal(signal.SIGTERM)
            fd.wait(30)
        rabbit.stop()


# What marks one message in each side's byte stream: RESP's
# "*3 $7 message ..." from Redis, the push's "kind": "message" (CBOR) from
# ferryd. Counting marks in raw reads keeps Python's work per message
# small (bytes.count runs in C), so the reader is not the bottleneck.
RESP_MARK = b"$7\r\nmessage\r\n"
PUSH_MARK = b"\x64kind\x67message"


def fanout_run(socks, mark, publish, total):
    """Reads socks (subscribed already) while publish (a Popen) runs;
    returns messages received per second, all subscribers together, from
    the start to the last message."""
    import selectors
    sel = selectors.DefaultSelector()
    tails = {}
    for s in socks:
        s.setblocking(False)
        sel.register(s, selectors.EVENT_READ)
        tails[s] = b""
    got, t0, last = 0, time.monotonic(), None
    idle_since = None
    while got < total:
        events = sel.select(0.5)
        if not events:
            if publish.poll() is not None:
                idle_since = idle_since or time.monotonic()
                if time.monotonic() - idle_since > 2:
                    break
            continue
        idle_since = None
        for key, _ in events:
            try:
                data = key.fileobj.recv(1 << 20)
            except BlockingIOError:
                continue
            if not data:
                sel.unregister(key.fileobj)
                continue
            buf = tails[key.fileobj] + data
            n = buf.count(mark)
            if n:
                got += n
                last = time.monotonic()
                # Keep the bytes after the last mark, or a mark's length
                # of the end: a mark split across two reads counts once.
                cut = buf.rfind(mark) + len(mark)
                buf = buf[cut:]
            tails[key.fileobj] = buf[-(len(mark) - 1):]
    publish.wait()
    sel.close()
    if got < total:
        print("  (received %d of %d)" % (got, total))
    return got / ((last or time.monotonic()) - t0)


def pubsub_rows(build, tmp, rsock, args):
    """Pub/sub fan-out: one publisher (redis-benchmark, PUBLISH of 100
    bytes, 64 in flight, straight to Redis) and 20 subscribers, either
    subscribed to Redis directly or to ferryd (one subscriber connection
    for all 20). Messages received per second, all subscribers together;
    the median of alternating pairs' ratios, as the tracing rows. Each
    ferryd client may leave 12 MiB unread (20 of them stay under
    max_buffered); a run that lost messages says how many it received."""
    import socket
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "client-stub",
                                    "python"))
    import ferry
    subprocess.run(["redis-cli", "-s", rsock, "CONFIG", "SET", "client-output-buffer-limit", "pubsub 0 0 0"],
                   capture_output=True)
    fsock = os.path.join(tmp, "ferry-pubsub.sock")
    off = dict(os.environ, OTEL_TRACES_EXPORTER="none", OTEL_METRICS_EXPORTER="none")
    fd = subprocess.Popen([os.path.join(build, "ferryd"), "--socket", fsock, "--redis", "unix://" + rsock,
                           "--log-level", "warn", "--set", "redis_pubsub_buffer=12582912"], env=off)
    n, subs = args.pubsub_n, 20
    payload = "x" * 100
    try:
        wait_socket(fsock, fd, "ferryd")
        time.sleep(0.5)

        def publisher(ch):
            return subprocess.Popen(["redis-benchmark", "-s", rsock, "-n", str(n), "-c", "1", "-P", "64", "-q",
                                     "PUBLISH", ch, payload], stdout=subprocess.DEVNULL)

        def direct(k):
            ch = "bench.direct.%d" % k
            socks = []
            for _ in range(subs):
                s = socket.socket(socket.AF_UNIX)
                s.connect(rsock)
                s.sendall(b"SUBSCRIBE %s\r\n" % ch.encode())
                s.recv(4096)  # the confirmation
                socks.append(s)
            r = fanout_run(socks, RESP_MARK, publisher(ch), n * subs)
            for s in socks:
                s.close()
            return r

        def through(k):
            ch = "bench.ferry.%d" % k
            clients = [ferry.Client(fsock, timeout=30) for _ in range(subs)]
            for c in clients:
                c.pubsub.subscribe(ch)
            r = fanout_run([c.sock for c in clients], PUSH_MARK, publisher(ch), n * subs)
            for c in clients:
                c.sock.close()
            return r

        u, t = [], []
        for k in range(args.pubsub_pairs):
            if k % 2:
                t.append(through(k))
                u.append(direct(k))
            else:
                u.append(direct(k))
                t.append(through(k))
        med, lo, hi = paired(u, t)
        print()
        label = "pub/sub fan-out, 1 publisher, %d subscribers, 100 B (%d pairs)" % (subs, len(u))
        if args.markdown:
            print("| Redis pub/sub (%d messages) | direct msg/s received | through ferryd msg/s | ferryd/direct |" % n)
            print("|---|---|---|---|")
            print("| %s | %.0f | %.0f | %.2fx (%.2f-%.2f) |" % (label, sorted(u)[len(u) // 2], sorted(t)[len(t) // 2],
                                                            med, lo, hi))
        else:
            print("%-62s %12s %12s %8s" % ("Redis pub/sub (%d messages)" % n, "direct", "ferryd", "ratio"))
            print("%-62s %12.0f %12.0f %7.2fx (pairs %.2f-%.2f)" % (label, sorted(u)[len(u) // 2],
                                                                   sorted(t)[len(t) // 2], med, lo, hi))
        print("target: fan-out through ferryd >= 0.8x direct")
    finally:
        if fd.poll() is None:
            fd.send_signal(signal.SIGTERM)
            fd.wait(30)


def fmt(v, spec):
    return "-" if v is None else spec % v


def print_row(r, md, header):
    if header:
        print("ferry bench, %s, %s, %d cores" % (datetime.date.today().isoformat(), platform.node(),
                                                os.cpu_count()))
        cols = ["test", "conns", "in flight", "redis rps", "p50", "p99", "nutcracker rps", "p50", "p99",
                "nc cpu s/100k", "ferryd rps", "p50", "p99", "ferryd cpu s/100k", "ferryd/nc"]
        if md:
            print("| " + " | ".join(cols) + " |")
            print("|" + "---|" * len(cols))
        else:
            print(" ".join("%-10s" % x for x in cols))
    ratio = r["ferryd"][0] / r["nutcracker"][0] if r["nutcracker"][0] else None
    vals = [r["test"], str(r["c"]), str(r["p"]),
            fmt(r["redis"][0], "%.0f"), fmt(r["redis"][1], "%.3f"), fmt(r["redis"][2], "%.3f"),
            fmt(r["nutcracker"][0], "%.0f"), fmt(r["nutcracker"][1], "%.3f"), fmt(r["nutcracker"][2], "%.3f"),
            "%.3f" % r["nc_cpu"],
            fmt(r["ferryd"][0], "%.0f"), fmt(r["ferryd"][1], "%.3f"), fmt(r["ferryd"][2], "%.3f"),
            "%.3f" % r["ferry_cpu"], fmt(ratio, "%.2fx")]
    if md:
        print("| " + " | ".join(vals) + " |")
    else:
        print(" ".join("%-10s" % x for x in vals))


def summary(results, idle, loaded, md):
    print()
    print("idle RSS: ferryd %d KiB, nutcracker %d KiB (after the run: ferryd %d KiB, nutcracker %d KiB)"
          % (idle["ferryd"], idle["nutcracker"], loaded["ferryd"], loaded["nutcracker"]))
    print("idle anonymous memory (RssAnon, the process's own): ferryd %d KiB, nutcracker %d KiB; the rest of RSS is"
          " shared-library pages" % (idle["ferryd_anon"], idle["nutcracker_anon"]))
    print("targets: ferryd >= 1.0x nutcracker at 50x1, >= 1.5x at 50x16; "
          "ferryd CPU/request <= nutcracker's; idle RSS <= 8 MiB")
    for r in results:
        if r["c"] == 50:
            ratio = r["ferryd"][0] / r["nutcracker"][0]
            want = 1.0 if r["p"] == 1 else 1.5
            print("  %s 50x%d: %.2fx nutcracker (target %.1fx) %s; cpu %.3f vs %.3f s/100k %s"
                  % (r["test"], r["p"], ratio, want, "met" if ratio >= want else "MISSED",
                     r["ferry_cpu"], r["nc_cpu"], "met" if r["ferry_cpu"] <= r["nc_cpu"] else "MISSED"))
    print("  idle RSS %.1f MiB (target 8 MiB) %s" % (idle["ferryd"] / 1024.0,
                                                      "met" if idle["ferryd"] <= 8192 else "MISSED"))


if __name__ == "__main__":
    main()
