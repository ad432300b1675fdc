"""A three-node RabbitMQ cluster on loopback, for the cluster tests: each
node is a harness.RabbitMQ (its own ports, data, logs and HOME with the
same Erlang cookie), and b and c join a. Nodes can be killed (SIGKILL, as
a crash) and started again on their data, which rejoins the cluster."""

import json
import os
import signal
import subprocess
import time

from harness import RABBIT_BIN, RabbitMQ


class Node(RabbitMQ):
    def kill(self):
        """kill -9 of the node's whole process group (the Erlang VM and its
        helpers), as when a machine dies; its data stays for restart()."""
        if self.proc and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()

    def launch(self):
        self.log = open(os.path.join(self.dir, "server.out"), "ab")
        self.proc = subprocess.Popen([RABBIT_BIN + "/rabbitmq-server"], env=self.env,
                                     stdout=self.log, stderr=self.log, start_new_session=True)

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
        # Started together: boots overlap, which saves most of the wait.
        for n in self.nodes:
            n.launch()
        for n in self.nodes:
            n.await_up()
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
            n.stop()
