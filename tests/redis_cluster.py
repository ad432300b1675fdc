"""A private Redis Cluster (primaries with a replica each) and a private
Sentinel setup, on loopback ports in temp dirs, for the integration tests
and the benchmark. No system services."""

import os
import random
import shutil
import socket
import subprocess
import tempfile
import time

from harness import free_port, wait_until


def cluster_port():
    """A free port whose cluster bus port (+10000) is free too."""
    for _ in range(200):
        port = random.randint(20000, 29999)
        try:
            for p in (port, port + 10000):
                s = socket.socket()
                s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                s.bind(("127.0.0.1", p))
                s.close()
            return port
        except OSError:
            continue
    raise AssertionError("no free port pair")


def cli(port, *args, timeout=10):
    out = subprocess.run(["redis-cli", "-p", str(port)] + [str(a) for a in args],
                         capture_output=True, text=True, timeout=timeout)
    return out.stdout.strip()


class Node:
    def __init__(self, base, port, extra=()):
        self.port = port
        self.dir = os.path.join(base, str(port))
        os.makedirs(self.dir, exist_ok=True)
        self.extra = list(extra)
        self.proc = None

    def start(self):
        args = ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
                "--appendonly", "no", "--dir", self.dir,
                "--logfile", os.path.join(self.dir, "redis.log")] + self.extra
        self.proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_until(lambda: self.cli("PING") == "PONG", what="redis on %d" % self.port)
        return self

    def cli(self, *args, timeout=10):
        return cli(self.port, *args, timeout=timeout)

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    def kill(self):
        if self.alive():
            self.proc.kill()
            self.proc.wait()

    def stop(self):
        if self.alive():
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


class Cluster:
    """primaries primaries with replicas replicas each, created with
    redis-cli --cluster create. node_timeout_ms is short so that a dead
    primary's replica takes over within a few seconds."""

    def __init__(self, primaries=3, replicas=1, node_timeout_ms=1500):
        self.base = tempfile.mkdtemp(prefix="ferry-cluster-")
        self.nodes = []
        for _ in range(primaries * (1 + replicas)):
            port = cluster_port()
            conf = os.path.join(self.base, "nodes-%d.conf" % port)
            self.nodes.append(Node(self.base, port, [
                "--cluster-enabled", "yes", "--cluster-config-file", conf,
                "--cluster-node-timeout", str(node_timeout_ms)]))
        self.primaries = primaries
        self.replicas = replicas

    def start(self):
        for n in self.nodes:
            n.start()
        addrs = ["127.0.0.1:%d" % n.port for n in self.nodes]
        out = subprocess.run(["redis-cli", "--cluster", "create"] + addrs +
                             ["--cluster-replicas", str(self.replicas), "--cluster-yes"],
                             capture_output=True, text=True, timeout=60)
        assert "[OK] All 16384 slots covered" in out.stdout, out.stdout + out.stderr
        self.wait_ok()
        return self

    def wait_ok(self, timeout=30):
        def ok():
            for n in self.nodes:
                if n.alive() and "cluster_state:ok" not in n.cli("CLUSTER", "INFO"):
                    return False
            return True
        wait_until(ok, timeout=timeout, interval=0.1, what="cluster_state:ok on every node")

        def synced():
            for n in self.nodes:
                if n.alive() and n.cli("ROLE").split("\n")[0] == "slave" and \
                        "master_link_status:up" not in n.cli("INFO", "replication"):
                    return False
            return True
        wait_until(synced, timeout=timeout, interval=0.1, what="every replica in sync")

        def known():
            # Every node's map names every replica (gossip spreads it).
            for n in self.nodes:
                if n.alive():
                    lines = n.cli("CLUSTER", "NODES").splitlines()
                    if sum(1 for ln in lines if "slave" in ln.split()[2]) < self.primaries * self.replicas - \
                            sum(1 for m in self.nodes if not m.alive()):
                        return False
            return True
        wait_until(known, timeout=timeout, interval=0.1, what="every node to know every replica")

    @property
    def seeds(self):
        return ",".join("127.0.0.1:%d" % n.port for n in self.nodes[:self.primaries])

    def node(self, port):
        return next(n for n in self.nodes if n.port == port)

    def primaries_now(self):
        """Ports of the nodes that are primaries now, per their ROLE."""
        return [n.port for n in self.nodes if n.alive() and n.cli("ROLE").split("\n")[0] == "master"]

    def keyslot(self, key):
        return int(next(n for n in self.nodes if n.alive()).cli("CLUSTER", "KEYSLOT", key))

    def slot_ranges(self, via=None):
        """[(first, last, port)] of the primaries, per via's (or a live
        node's) CLUSTER NODES."""
        n = via or next(n for n in self.nodes if n.alive())
        out = []
        for line in n.cli("CLUSTER", "NODES").splitlines():
            f = line.split()
            if "master" not in f[2] or "fail" in f[2]:
                continue
            port = int(f[1].split("@")[0].rsplit(":", 1)[1])
            for rng in f[8:]:
                if rng.startswith("["):
                    continue
                a, _, b = rng.partition("-")
                out.append((int(a), int(b or a), port))
        return out

    def owner_of(self, key, via=None):
        slot = self.keyslot(key)
        for a, b, port in self.slot_ranges(via):
            if a <= slot <= b:
                return port
        return None

    def stop(self):
        for n in self.nodes:
            n.stop()
        shutil.rmtree(self.base, ignore_errors=True)


class Sentinels:
    """A primary, a replica and three sentinels watching them as 'mymaster',
    with down-after-milliseconds and failover-timeout short."""

    def __init__(self, name="mymaster", down_after_ms=1000, failover_timeout_ms=3000):
        self.base = tempfile.mkdtemp(prefix="ferry-sentinel-")
        self.name = name
        self.primary = Node(self.base, free_port())
        self.replica = None
        self.sentinels = []
        self.down_after_ms = down_after_ms
        self.failover_timeout_ms = failover_timeout_ms

    def start(self):
        self.primary.start()
        self.replica = Node(self.base, free_port(), ["--replicaof", "127.0.0.1", str(self.primary.port)]).start()
        wait_until(lambda: "master_link_status:up" in self.replica.cli("INFO", "replication"),
                   timeout=20, what="the replica to sync")
        for i in range(3):
            port = free_port()
            d = os.path.join(self.base, "s%d" % i)
            os.makedirs(d)
            conf = os.path.join(d, "sentinel.conf")
            with open(conf, "w") as f:
                f.write("port %d\nbind 127.0.0.1\ndir %s\nlogfile %s\n" % (port, d, os.path.join(d, "sentinel.log")))
                f.write("sentinel monitor %s 127.0.0.1 %d 2\n" % (self.name, self.primary.port))
                f.write("sentinel down-after-milliseconds %s %d\n" % (self.name, self.down_after_ms))
                f.write("sentinel failover-timeout %s %d\n" % (self.name, self.failover_timeout_ms))
                f.write("sentinel parallel-syncs %s 1\n" % self.name)
            s = Node(d, port)
            s.conf = conf
            s.proc = subprocess.Popen(["redis-server", conf, "--sentinel"],
                                      stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            wait_until(lambda: s.cli("PING") == "PONG", what="sentinel on %d" % port)
            self.sentinels.append(s)
        # Every sentinel knows the replica and the other sentinels.
        wait_until(lambda: all(s.cli("SENTINEL", "master", self.name).count("\n") > 0 and
                               _field(s.cli("SENTINEL", "master", self.name), "num-other-sentinels") == "2" and
                               _field(s.cli("SENTINEL", "master", self.name), "num-slaves") == "1"
                               for s in self.sentinels), timeout=30, interval=0.2, what="sentinels to agree")
        return self

    @property
    def addrs(self):
        return ",".join("127.0.0.1:%d" % s.port for s in self.sentinels)

    def master_port(self):
        out = self.sentinels[0].cli("SENTINEL", "get-master-addr-by-name", self.name).split("\n")
        return int(out[1])

    def node(self, port):
        return self.primary if self.primary.port == port else self.replica

    def stop(self):
        for s in self.sentinels:
            s.stop()
        for n in (self.primary, self.replica):
            if n:
                n.stop()
        shutil.rmtree(self.base, ignore_errors=True)


def _field(text, name):
    lines = text.split("\n")
    for i in range(0, len(lines) - 1, 2):
        if lines[i] == name:
            return lines[i + 1]
    return None
