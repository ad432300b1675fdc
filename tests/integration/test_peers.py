"""Who is at the other end: ferryd reads each client's uid, gid and pid
from the kernel (SO_PEERCRED) at accept, and shows them in its log lines
about that client and in stats' clients.peers. A second identity is a real
one: a client run as nobody with setpriv."""

import os
import subprocess
import sys

from conftest import SLOW, wait_until

CLIENT = r"""
import sys, time
sys.path.insert(0, sys.argv[2])
import ferry
with ferry.Client(sys.argv[1], timeout=10) as c:
    c.ping()
    print("connected", flush=True)
    sys.stdin.readline()
"""


def test_peers_in_stats_and_log(make_ferryd, tmp):
    f = make_ferryd(args=["--set", "socket_mode=0666"])
    os.chmod(tmp, 0o755)
    stub = os.path.dirname(sys.modules["ferry"].__file__)
    # The other identity: nobody, with its own group and no others.
    other = subprocess.Popen(
        ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "/usr/bin/python3", "-c", CLIENT,
         f.sock, stub], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert other.stdout.readline().strip() == "connected"
        with f.client() as c:
            peers = c.stats()["clients"]["peers"]
        mine = [p for p in peers if p.get("pid") == os.getpid()]
        theirs = [p for p in peers if p.get("pid") == other.pid]
        assert len(mine) == 1 and mine[0]["uid"] == os.getuid() and mine[0]["gid"] == os.getgid()
        assert len(theirs) == 1 and theirs[0]["uid"] == 65534 and theirs[0]["gid"] == 65534
        assert theirs[0]["inflight"] == 0 and theirs[0]["id"] != mine[0]["id"]
    finally:
        other.stdin.close()
        other.wait(10 * SLOW)
    line = "client %d (uid 65534 gid 65534 pid %d) closed" % (theirs[0]["id"], other.pid)
    wait_until(lambda: line in f.read_log(), timeout=10 * SLOW, what="the close logged with the peer")
