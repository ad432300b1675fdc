"""One client must not break, stall or bloat Redis for the others.

Each test has a hostile client do what outside testers did to a shared
ferryd, while a second client's requests run beside it: none of the second
client's requests may fail because of the first."""

import os
import socket
import struct
import time

import cbor2
import pytest

from conftest import SLOW, ferry, wait_until

DEEP9 = "return {{{{{{{{{1}}}}}}}}}"   # 9 levels: hiredis 0.14 cannot read it
DEEP8 = "return {{{{{{{{1}}}}}}}}"     # 8 levels: the deepest it reads


# RSS is measured in these tests. Under AddressSanitizer, freed memory sits
# in its quarantine and its allocator keeps pages, so the sanitized ferryd
# is asked to hand memory back as glibc does.
MEM_ENV = {"ASAN_OPTIONS": "detect_leaks=1:quarantine_size_mb=0:allocator_release_to_os_interval_ms=0"} \
    if os.environ.get("FERRY_SANITIZED") else None


def conn_stats(f):
    return f.stats()["backends"]["redis"]


def proc_status_kib(pid, field):
    with open("/proc/%d/status" % pid) as fh:
        for line in fh:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise AssertionError("no " + field)


def peak_rss_kib(pid):
    return proc_status_kib(pid, "VmHWM")


def rss_kib(pid):
    return proc_status_kib(pid, "VmRSS")


def interleave(hostile, victim, hostile_argv, rounds, victim_key=b"k"):
    """Pipelines rounds of (hostile command, victim GET) on two clients, so
    that both go out on the shared connection in turn; returns the victim's
    results and the hostile client's responses."""
    hid, vid = [], []
    for _ in range(rounds):
        hid.append(hostile.send("redis", [ferry.to_bytes(a) for a in hostile_argv]))
        vid.append(victim.send("redis", [b"GET", victim_key]))
    vres = [victim.wait(i) for i in vid]
    hres = []
    for i in hid:
        try:
            hres.append(("ok", hostile.wait(i)))
        except ferry.FerryError as e:
            hres.append((e.code, e.message))
    return vres, hres


def test_deep_reply_costs_only_its_own_request(ferryd):
    with ferryd.client() as a, ferryd.client() as b:
        b.redis("SET", "k", "v")
        vres, hres = interleave(a, b, ["EVAL", DEEP9, "0"], 200)
        assert vres == [b"v"] * 200
        assert all(code == "backend_error" and "nested deeper" in msg for code, msg in hres), hres[:3]
        # The deepest reply the reader takes still comes back whole.
        r = a.redis("EVAL", DEEP8, "0")
        for _ in range(7):
            assert isinstance(r, list) and len(r) == 1
            r = r[0]
        assert r == [1]
    st = conn_stats(ferryd)
    assert st["connections"][0]["drops"] == 0
    assert st["replies_refused"] == 200


def test_oversized_reply_is_refused_unread_and_memory_stays_bounded(make_ferryd, redis):
    f = make_ferryd(["--set", "max_frame=1048576", "--set", "client_max_output=4194304"], env=MEM_ENV)
    # A 64 MiB value from a tiny request, and a 2M-element reply.
    redis.cli("SETRANGE", "big", str(64 * 1024 * 1024 - 1), "x")
    redis.cli("SADD", "s", "a")
    with f.client() as a, f.client() as b:
        b.redis("SET", "k", "v")
        before = rss_kib(f.proc.pid)
        vres, hres = interleave(a, b, ["GET", "big"], 4)
        assert vres == [b"v"] * 4
        assert [c for c, _ in hres] == ["too_large"] * 4, hres
        vres, hres = interleave(a, b, ["SRANDMEMBER", "s", "-2000000"], 2)
        assert vres == [b"v"] * 2
        assert [c for c, _ in hres] == ["too_large"] * 2, hres
        # A reply just under the limit still comes through.
        b.redis("SET", "fits", b"y" * 1000000)
        assert a.redis("GET", "fits") == b"y" * 1000000
        peak = peak_rss_kib(f.proc.pid)
    # Holding one 64 MiB reply, or hiredis's objects for 2M elements, would
    # add far more than this.
    assert peak - before < 40 * 1024, (before, peak)
    st = conn_stats(f)
    assert st["connections"][0]["drops"] == 0
    assert st["replies_refused"] == 6


def test_error_inside_an_array_is_a_map(ferryd):
    with ferryd.client() as c:
        r = c.redis("EVAL", "return {1, redis.error_reply('MY boom'), redis.status_reply('FINE'), 'x'}", "0")
        assert r == [1, {"error": "MY boom"}, "FINE", b"x"]
        # A top-level error stays the request's backend_error.
        with pytest.raises(ferry.FerryError) as e:
            c.redis("EVAL", "return redis.error_reply('MY top')", "0")
        assert e.value.code == "backend_error" and "MY top" in e.value.message


@pytest.mark.parametrize("kind", ["script", "function"])
def test_busy_script_is_killed_at_its_deadline(ferryd, redis, kind):
    # Redis acts on SCRIPT KILL only after the script has run this long.
    assert redis.cli("CONFIG", "SET", "busy-reply-threshold", "100") == "OK"
    if kind == "function":
        lib = "#!lua name=busy\nredis.register_function('spin', function() while true do end end)"
        assert redis.cli("FUNCTION", "LOAD", "REPLACE", lib) == "busy"
        argv = [b"FCALL", b"spin", b"0"]
    else:
        argv = [b"EVAL", b"while true do end", b"0"]
    with ferryd.client() as a, ferryd.client() as b:
        b.redis("SET", "k", "v")
        hid = a.send("redis", argv, deadline=300 * SLOW)
        time.sleep(0.05)
        vid = b.send("redis", [b"GET", b"k"], deadline=20000 * SLOW)
        with pytest.raises(ferry.FerryError) as e:
            a.wait(hid)
        assert e.value.code == "timeout"
        # The other client's GET, queued behind the script on the shared
        # connection, is answered once the script is killed.
        assert b.wait(vid) == b"v"
        assert a.redis("PING") == "PONG"
    log = ferryd.read_log()
    what = "FUNCTION" if kind == "function" else "SCRIPT"
    assert "sending %s KILL" % what in log
    wait_until(lambda: "the busy script was killed" in ferryd.read_log(), what="kill logged")
    st = conn_stats(ferryd)
    assert st["scripts_killed"] == 1
    assert st["connections"][0]["drops"] == 0


@pytest.mark.parametrize("argv", [
    ["MIGRATE", "127.0.0.1", "1", "k", "0", "5000"],
    ["XREAD", "COUNT", "1", "BLOCK", "0", "STREAMS", "s", "$"],
    ["XREADGROUP", "GROUP", "g", "c", "BLOCK", "10", "STREAMS", "s", ">"],
])
def test_deny_rules(ferryd, argv):
    with ferryd.client() as c:
        with pytest.raises(ferry.FerryError) as e:
            c.redis(*argv)
        assert e.value.code == "denied"


def test_deny_rules_match_in_place_only(ferryd):
    # Words that denied commands use, where they are not the subcommand or
    # option: a client name KILL, a stream, group and consumer named block.
    with ferryd.client() as c:
        assert c.redis("CLIENT", "SETNAME", "KILL") == "OK"
        assert c.redis("XADD", "block", "*", "f", "v")
        r = c.redis("XREAD", "STREAMS", "block", "0")
        assert r[0][0] == b"block"
        assert c.redis("XGROUP", "CREATE", "block", "block", "0") == "OK"
        r = c.redis("XREADGROUP", "GROUP", "block", "block", "STREAMS", "block", ">")
        assert r[0][0] == b"block"


def test_acl_user_is_the_policy_that_holds_inside_scripts(make_ferryd, redis):
    # The deny-list guards the shared connection against mistakes; scripts
    # get past it. A Redis ACL user without @dangerous is refused inside
    # scripts too (docs/protocol.md).
    assert redis.cli("ACL", "SETUSER", "ferry", "on", ">s3cret", "~*", "&*", "+@all", "-@dangerous") == "OK"
    redis.cli("SET", "keep", "1")
    f = make_ferryd(redis_url="redis://ferry:s3cret@127.0.0.1:%d/0" % redis.port)
    with f.client() as c:
        for argv in (["EVAL", "return redis.call('FLUSHALL')", "0"],
                     ["EVAL", "return redis.call('KEYS', '*')", "0"]):
            with pytest.raises(ferry.FerryError) as e:
                c.redis(*argv)
            assert e.value.code == "backend_error" and "can't run this command" in e.value.message, e.value.message
        lib = "#!lua name=evil\nredis.register_function('wipe', function() return redis.call('FLUSHALL') end)"
        assert c.redis("FUNCTION", "LOAD", "REPLACE", lib) == b"evil"
        with pytest.raises(ferry.FerryError) as e:
            c.redis("FCALL", "wipe", "0")
        assert "can't run this command" in e.value.message
        sha = c.redis("SCRIPT", "LOAD", "return redis.call('FLUSHALL')")
        with pytest.raises(ferry.FerryError) as e:
            c.redis("EVALSHA", sha, "0")
        assert "can't run this command" in e.value.message
        assert c.redis("GET", "keep") == b"1"
    assert redis.cli("GET", "keep") == "1"


def push_all(socks, datas, limit_s):
    """Sends each socket its data without blocking on any: a client the
    daemon cut off stops taking bytes, and that is expected."""
    import select
    left = {s: memoryview(d) for s, d in zip(socks, datas)}
    for s in socks:
        s.setblocking(False)
    end = time.time() + limit_s
    while left and time.time() < end:
        _, w, _ = select.select([], list(left), [], 0.2)
        for s in w:
            try:
                n = s.send(left[s][:262144])
            except (BrokenPipeError, ConnectionResetError, BlockingIOError):
                del left[s]
                continue
            left[s] = left[s][n:]
            if not len(left[s]):
                del left[s]
    return left


def read_error_frame(sock, timeout=10):
    """The next frame on sock, or None when the daemon closed it first."""
    sock.setblocking(True)
    sock.settimeout(timeout * SLOW)
    buf = b""
    try:
        while True:
            if len(buf) >= 4:
                (n,) = struct.unpack(">I", buf[:4])
                if len(buf) >= 4 + n:
                    return cbor2.loads(buf[4:4 + n])
            chunk = sock.recv(65536)
            if not chunk:
                return None
            buf += chunk
    except (ConnectionResetError, socket.timeout):
        return None


def test_half_sent_frames_are_bounded_across_clients(make_ferryd):
    mib = 1024 * 1024
    f = make_ferryd(["--set", "max_frame=%d" % (4 * mib), "--set", "max_buffered=%d" % (32 * mib),
                     "--set", "frame_timeout_ms=600000"], env=MEM_ENV)
    before = rss_kib(f.proc.pid)
    socks = []
    for _ in range(40):
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.connect(f.sock)
        socks.append(s)
    # Each: a 4 MiB frame's header and all but its last byte, then a wait.
    data = struct.pack(">I", 4 * mib) + b"\x00" * (4 * mib - 1)
    with f.client() as victim:
        victim.redis("SET", "k", "v")
        push_all(socks, [data] * len(socks), 30 * SLOW)
        for _ in range(20):
            assert victim.redis("GET", "k") == b"v"
        st = f.stats()
    assert st["counters"]["clients_dropped_memory"] >= 20
    assert st["clients"]["buffered_in"] <= 32 * mib
    peak = peak_rss_kib(f.proc.pid)
    # Unbounded, the 40 clients held 160 MiB.
    assert peak - before < 72 * 1024, (before, peak)
    codes = []
    for s in socks:
        fr = read_error_frame(s, timeout=2)
        if fr:
            codes.append(fr["error"]["code"])
        s.close()
    assert codes.count("overloaded") >= 20, codes


def test_unread_responses_are_bounded_across_clients(make_ferryd, redis):
    mib = 1024 * 1024
    f = make_ferryd(["--set", "max_frame=%d" % (4 * mib), "--set", "max_buffered=%d" % (32 * mib)], env=MEM_ENV)
    redis.cli("SETRANGE", "v3", str(3 * mib - 1), "x")
    before = rss_kib(f.proc.pid)
    hostile = []
    for _ in range(40):
        c = f.client()
        for _ in range(4):
            c.send("redis", [b"GET", b"v3"])
        hostile.append(c)
    with f.client() as victim:
        victim.redis("SET", "k", "v")
        wait_until(lambda: f.stats()["counters"]["clients_dropped_memory"] >= 20, timeout=30 * SLOW,
                   what="the budget to cut clients")
        for _ in range(20):
            assert victim.redis("GET", "k") == b"v"
        st = f.stats()
    assert st["clients"]["buffered_out"] <= 32 * mib
    peak = peak_rss_kib(f.proc.pid)
    # Unbounded, 40 x 4 x 3 MiB of responses were held.
    assert peak - before < 100 * 1024, (before, peak)
    for c in hostile:
        c.close()


def test_frame_not_finished_in_time_ends_its_client(make_ferryd):
    f = make_ferryd(["--set", "frame_timeout_ms=300"])
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.connect(f.sock)
    s.sendall(struct.pack(">I", 100) + b"\xa1" * 10)
    fr = read_error_frame(s)
    assert fr and fr["error"]["code"] == "timeout" and "frame_timeout_ms" in fr["error"]["message"]
    assert s.recv(10) == b""
    s.close()
    # A frame sent in pieces within the time is served.
    with f.client() as c:
        frame = ferry.encode_frame({"id": 7, "op": "ping"})
        for i in range(len(frame)):
            c.send_raw(frame[i:i + 1])
            time.sleep(0.01)
        assert c.wait(7) == "PONG"
    assert f.stats()["counters"]["clients_dropped_frame_timeout"] == 1


def test_out_of_descriptors_is_overloaded_and_counted(make_ferryd):
    import resource

    def low_nofile():
        resource.setrlimit(resource.RLIMIT_NOFILE, (64, 64))

    # A small pool of dedicated connections, so that some clients fit.
    f = make_ferryd(["--set", "redis_blocking_pool=2"], start=False)
    f.preexec = low_nofile
    f.start()
    assert "cannot fit in the open files limit" in f.read_log()
    socks, frames = [], []
    for _ in range(60):
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.connect(f.sock)
        socks.append(s)
    for s in socks:
        try:
            s.sendall(ferry.encode_frame({"id": 1, "op": "ping"}))
        except (BrokenPipeError, ConnectionResetError):
            pass  # refused: its error frame is already waiting
        frames.append(read_error_frame(s))
    ok = [fr for fr in frames if fr and fr.get("result") == "PONG"]
    refused = [fr for fr in frames if fr and "error" in fr]
    assert ok and refused and len(ok) + len(refused) == 60, frames
    assert all(fr["error"]["code"] == "overloaded" and "descriptors" in fr["error"]["message"]
               for fr in refused)
    for s in socks:
        s.close()
    st = f.stats()
    assert st["counters"]["clients_rejected"] == len(refused)
    assert st["clients"]["fd_limit"] == 64
    # Descriptors came back: clients are served again, and Redis too.
    with f.client() as c:
        assert c.redis("PING") == "PONG"


def test_paused_client_resumes_from_an_emptied_buffer(make_ferryd):
    # client_max_inflight 1 pauses the client after every frame; each frame
    # comes in two writes, so the input buffer grows past its kept size and
    # is freed when used up exactly, then resumed from (UBSan caught a null
    # pointer's arithmetic there).
    f = make_ferryd(["--set", "client_max_inflight=1"])
    with f.client() as c:
        c.redis("SET", "k", "v")
        ids = []
        for i in range(40):
            fr = ferry.encode_frame({"id": 100 + i, "op": "redis", "args": [b"GET", b"k"]})
            c.send_raw(fr[:5])
            time.sleep(0.005)
            c.send_raw(fr[5:])
            ids.append(100 + i)
        assert [c.wait(i) for i in ids] == [b"v"] * 40


def test_memory_is_returned_after_large_replies(make_ferryd, redis):
    ferryd = make_ferryd(env=MEM_ENV)
    mib = 1024 * 1024
    redis.cli("SETRANGE", "v12", str(12 * mib - 1), "x")
    with ferryd.client() as c:
        c.redis("PING")
        before = rss_kib(ferryd.proc.pid)
        for _ in range(3):
            assert len(c.redis("GET", "v12")) == 12 * mib
        big = c.redis("SET", "w12", b"y" * (12 * mib))
        assert big == "OK"
        assert c.redis("STRLEN", "w12") == 12 * mib
        # Each went through a reply of 12 MiB or more, in several buffers.
        assert peak_rss_kib(ferryd.proc.pid) - before > 12 * 1024
        wait_until(lambda: rss_kib(ferryd.proc.pid) - before < 8 * 1024, timeout=10 * SLOW,
                   what="ferryd to give the memory back (rss %d KiB, was %d)" % (rss_kib(ferryd.proc.pid), before))
