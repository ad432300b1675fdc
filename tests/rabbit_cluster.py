"""A three-node RabbitMQ cluster on loopback, for the cluster tests: each
node is a harness.RabbitMQ (its own ports, data, logs and HOME with the
same Erlang cookie), and b and c join a. Nodes can be killed (SIGKILL, as
a crash) and started again on their data, which rejoins the cluster."""

import json
import os
import signal
import subprocess
import time

from harness import RABBIT_BIN, RabbitMQ, free_port


class Node(RabbitMQ):
    def kill(self):
        """kill -9 of the node's whole process group (the Erlang VM and its
        helpers), as when a machine dies; its data stays for restart()."""
        if self.proc and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()

    def launch(self):
        path = os.path.join(self.dir, "server.out")
        self.out_from = os.path.getsize(path) if os.path.exists(path) else 0
        self.log = open(path, "ab")
        self.proc = subprocess.Popen([RABBIT_BIN + "/rabbitmq-server"], env=self.env,
                                     stdout=self.log, stderr=self.log, start_new_session=True)

    def boot(self, tries=3):
        """Launches a fresh node and waits for it. free_port() races with
        other programs on the machine: a node that finds its port taken
        tries again on new ports."""
        for attempt in range(tries):
            if attempt:
                self.launch()
            try:
                self.await_up()
                return
            except AssertionError:
                self.kill()
                self.log.close()
                with open(os.path.join(self.dir, "server.out"), "rb") as f:
                    f.seek(self.out_from)
                    taken = b"eaddrinuse" in f.read()
                if not taken or attempt == tries - 1:
                    raise
                self.port = free_port()
                self.env["RABBITMQ_NODE_PORT"] = str(self.port)
                self.env["RABBITMQ_DIST_PORT"] = str(free_port())

    def restart(self):
        """Starts a killed node again on its data: it rejoins the cluster."""
        self.log.close()
        self.launch()
        self.await_up()

    @property
    def alive(self):
        return self.proc is not None and self.proc.poll() is None


class Cluster:
    def __init__(self, size=3):
        self.nodes = [Node(name=chr(ord("a") + i)) for i in range(size)]

    def start(self):
        try:
            return self._start()
        except BaseException:
            self.stop()
            raise

    def _start(self):
        # Started together: boots overlap, which saves most of the wait.
        for n in self.nodes:
            n.launch()
        for n in self.nodes:
            n.boot()
        first = self.nodes[0].node
        for n in self.nodes[1:]:
            for args in (("stop_app",), ("join_cluster", first), ("start_app",)):
                r = n.ctl(*args, timeout=120)
                if r.returncode != 0:
                    raise AssertionError("%s %s: %s%s" % (n.node, args, r.stdout, r.stderr))
            n.await_up()
        self.await_members(len(self.nodes))
        return self

    def running(self):
        """The running members, as node a (or any live node) sees them."""
        for n in self.nodes:
            if n.alive:
                r = n.ctl("cluster_status", "--formatter", "json", timeout=60)
                if r.returncode == 0:
                    return set(json.loads(r.stdout).get("running_nodes", []))
        return set()

    def await_members(self, count, timeout=120):
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if len(self.running()) == count:
                return
            time.sleep(0.5)
        raise AssertionError("the cluster did not reach %d running nodes" % count)

    def urls(self):
        return ",".join(n.url for n in self.nodes)

    def heal(self):
        """Restarts every killed node and waits until all run together."""
        for n in self.nodes:
            if not n.alive:
                n.restart()
        self.await_members(len(self.nodes))

    def stop(self):
        for n in reversed(self.nodes):
            if n.proc is None:
                continue
            if n.log.closed:
                n.log = open(os.devnull, "ab")
            n.stop()
