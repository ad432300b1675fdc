"""Process helpers shared by the integration tests and the benchmark:
free ports, waiting, and a private rabbitmq-server node."""

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def wait_until(pred, timeout=10.0, interval=0.02, what="condition"):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        try:
            if pred():
                return
        except Exception:
            pass
        time.sleep(interval)
    raise AssertionError("timed out waiting for " + what)



RABBIT_BIN = "/usr/lib/rabbitmq/bin"


class RabbitMQ:
    """A rabbitmq-server node of our own: private ports, data and logs in a
    temp dir, the Erlang cookie there too. Started directly (the /usr/sbin
    wrapper would drop these variables).

    tls, when given, is a dict of PEM paths (cacertfile, certfile, keyfile):
    the node then also listens for amqps on tls_port, and asks every client
    there for a certificate signed by cacertfile. name tells apart nodes
    that run at the same time."""

    def __init__(self, tls=None, name=""):
        self.dir = tempfile.mkdtemp(prefix="ferry-rmq-")
        self.port = free_port()
        self.node = "ferrytest%d%s@localhost" % (os.getpid(), name)
        self.env = dict(os.environ)
        self.env.update({
            "HOME": self.dir,
            "RABBITMQ_NODENAME": self.node,
            "RABBITMQ_NODE_IP_ADDRESS": "127.0.0.1",
            "RABBITMQ_NODE_PORT": str(self.port),
            "RABBITMQ_DIST_PORT": str(free_port()),
            "RABBITMQ_MNESIA_BASE": os.path.join(self.dir, "mnesia"),
            "RABBITMQ_LOG_BASE": os.path.join(self.dir, "log"),
            "RABBITMQ_ENABLED_PLUGINS_FILE": os.path.join(self.dir, "enabled_plugins"),
            "RABBITMQ_CONFIG_FILE": os.path.join(self.dir, "rabbitmq"),
            "RABBITMQ_PID_FILE": os.path.join(self.dir, "rabbit.pid"),
        })
        with open(os.path.join(self.dir, "enabled_plugins"), "w") as f:
            f.write("[].\n")
        cookie = os.path.join(self.dir, ".erlang.cookie")
        with open(cookie, "w") as f:
            f.write("ferrytestcookie")
        os.chmod(cookie, 0o400)
        self.tls_port = None
        if tls:
            self.tls_port = free_port()
            with open(os.path.join(self.dir, "rabbitmq.conf"), "w") as f:
                f.write("listeners.ssl.default = %d\n" % self.tls_port)
                for k in ("cacertfile", "certfile", "keyfile"):
                    f.write("ssl_options.%s = %s\n" % (k, tls[k]))
                f.write("ssl_options.verify = verify_peer\n"
                        "ssl_options.fail_if_no_peer_cert = true\n")
        self.proc = None

    @property
    def url(self):
        return "amqp://guest:guest@127.0.0.1:%d/" % self.port

    @property
    def tls_url(self):
        return "amqps://guest:guest@127.0.0.1:%d/" % self.tls_port

    def ctl(self, *args, timeout=60):
        return subprocess.run([RABBIT_BIN + "/rabbitmqctl", "-n", self.node] + list(args),
                              env=self.env, capture_output=True, text=True, timeout=timeout)

    def start(self):
        self.log = open(os.path.join(self.dir, "server.out"), "ab")
        self.proc = subprocess.Popen([RABBIT_BIN + "/rabbitmq-server"], env=self.env,
                                     stdout=self.log, stderr=self.log, start_new_session=True)
        self.await_up()
        return self

    def await_up(self):
        end = time.monotonic() + 120
        while time.monotonic() < end:
            if self.proc.poll() is not None:
                raise AssertionError("rabbitmq-server exited; see " + self.dir)
            if self.ctl("await_startup", "--timeout", "60").returncode == 0:
                return
            time.sleep(0.5)
        raise AssertionError("rabbitmq-server did not start")

    def restart_app(self):
        """Stops and starts the broker application (connections drop; durable
        queues and persistent messages survive, as in a restart)."""
        assert self.ctl("stop_app").returncode == 0
        assert self.ctl("start_app").returncode == 0
        self.await_up()

    def freeze(self):
        os.killpg(self.proc.pid, signal.SIGSTOP)

    def thaw(self):
        os.killpg(self.proc.pid, signal.SIGCONT)

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.thaw()
            self.ctl("stop", timeout=60)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        self.log.close()
        shutil.rmtree(self.dir, ignore_errors=True)
