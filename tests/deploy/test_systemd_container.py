"""ferryd's systemd units under a real systemd, in a podman container
(slow: builds or reuses a Debian image with systemd and redis-server).

The image: Debian bookworm from debootstrap (docker.io/library/debian:bookworm,
shared with the other deploy tests and kept), then systemd, redis-server and
ferryd's runtime libraries (localhost/ferry-test-systemd:bookworm, kept as a
cache, rebuilt only when missing), then this tree's ferryd, ferry, config and
`make install-systemd` output (an image of this run, removed after it).
See /work/shared/containers.md for why runc, lowered ulimits and --privileged.

One container, one scenario in order: socket activation on the first
connection, the hardened unit running as its user, group access to the
socket, reload, a drain with a request in flight while a new client
connects (served by the next ferryd, from the socket systemd kept), a
clean stop, and activation again."""

import os
import shutil
import subprocess
import sys
import tempfile

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.abspath(os.path.join(HERE, "..", ".."))
sys.path.insert(0, os.path.join(ROOT, "tests"))
from harness import wait_until  # noqa: E402

BUILD = os.environ.get("FERRY_BUILD", os.path.join(ROOT, "build"))
BASE = "docker.io/library/debian:bookworm"
SYSTEMD_IMAGE = "localhost/ferry-test-systemd:bookworm"
RUNTIME_PKGS = ("systemd systemd-sysv redis-server procps libuv1 libhiredis0.14 libcbor0.8 librabbitmq4 "
                "libprotobuf-c1 libcurl4 libssl3 zlib1g")

CONTAINERS_CONF = """[containers]
default_ulimits = ["nofile=1024:1024","nproc=1024:1024"]
[engine]
runtime = "runc"
"""


class Podman:
    def __init__(self, workdir):
        conf = os.path.join(workdir, "containers.conf")
        with open(conf, "w") as f:
            f.write(CONTAINERS_CONF)
        self.env = dict(os.environ, CONTAINERS_CONF=conf)

    def run(self, *args, check=True, timeout=600, **kw):
        r = subprocess.run(["podman"] + list(args), env=self.env, capture_output=True, text=True,
                           timeout=timeout, **kw)
        if check and r.returncode != 0:
            raise AssertionError("podman %s: exit %d\n%s%s" % (" ".join(args), r.returncode, r.stdout, r.stderr))
        return r

    def image_exists(self, name):
        return self.run("image", "exists", name, check=False).returncode == 0


def ensure_images(p, workdir):
    if not p.image_exists(BASE):
        rootfs = os.path.join(workdir, "rootfs")
        subprocess.run(["debootstrap", "--variant=minbase", "bookworm", rootfs], check=True,
                       capture_output=True, timeout=1200)
        tar = subprocess.Popen(["tar", "-C", rootfs, "-c", "."], stdout=subprocess.PIPE)
        p.run("import", "--change", "ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
              "-", BASE, stdin=tar.stdout)
        assert tar.wait() == 0
        shutil.rmtree(rootfs, ignore_errors=True)
    if not p.image_exists(SYSTEMD_IMAGE):
        ctx = os.path.join(workdir, "systemd-image")
        os.makedirs(ctx)
        with open(os.path.join(ctx, "Containerfile"), "w") as f:
            f.write("FROM %s\n"
                    "RUN apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "
                    "--no-install-recommends %s && apt-get clean\n"
                    'CMD ["/sbin/init"]\n' % (BASE, RUNTIME_PKGS))
        p.run("build", "--pull=never", "--network", "host", "-t", SYSTEMD_IMAGE, ctx, timeout=1800)


def stage_ferry(workdir):
    """This tree's ferryd as `make install` and `make install-systemd` lay
    it out. The units go to /usr/lib/systemd/system: /lib is a symlink to
    /usr/lib in the image, and a staged lib/ directory would replace it."""
    ctx = os.path.join(workdir, "ferry-image")
    root = os.path.join(ctx, "root")
    for src, dst, mode in ((os.path.join(BUILD, "ferryd"), "usr/local/sbin/ferryd", 0o755),
                           (os.path.join(BUILD, "ferry"), "usr/local/bin/ferry", 0o755),
                           (os.path.join(ROOT, "conf", "ferryd.conf"), "etc/ferry/ferryd.conf", 0o644)):
        os.makedirs(os.path.dirname(os.path.join(root, dst)), exist_ok=True)
        shutil.copy(src, os.path.join(root, dst))
        os.chmod(os.path.join(root, dst), mode)
    subprocess.run(["make", "-s", "-C", ROOT, "install-systemd", "DESTDIR=" + root,
                    "SYSTEMDUNITDIR=/usr/lib/systemd/system"], check=True, capture_output=True, timeout=120)
    # A short drain, through the unit's EnvironmentFile=. Telemetry stays on
    # (to a collector that is not there), so the exporter's libcurl, loaded
    # at run time, runs under the unit's system call filter and W^X too.
    os.makedirs(os.path.join(root, "etc", "default"), exist_ok=True)
    with open(os.path.join(root, "etc", "default", "ferryd"), "w") as f:
        f.write("FERRY_DRAIN_TIMEOUT_MS=3000\nOTEL_BSP_SCHEDULE_DELAY=200\n")
    with open(os.path.join(ctx, "Containerfile"), "w") as f:
        f.write("FROM %s\nCOPY root/ /\n" % SYSTEMD_IMAGE)
    return ctx


@pytest.fixture(scope="module")
def box():
    if os.geteuid() != 0 or not shutil.which("podman"):
        pytest.fail("needs root and podman, runc, debootstrap (apt-get install podman runc debootstrap)")
    workdir = tempfile.mkdtemp(prefix="ferry-sd-")
    p = Podman(workdir)
    ensure_images(p, workdir)
    tag = "localhost/ferry-test-systemd-run:%d" % os.getpid()
    name = "ferry-sd-%d" % os.getpid()
    p.run("build", "--pull=never", "-q", "-t", tag, stage_ferry(workdir))
    try:
        p.run("run", "-d", "--privileged", "--systemd=always", "--name", name, tag)
        box = Box(p, name)
        wait_until(lambda: box.sh("systemctl is-system-running").stdout.strip() in ("running", "degraded"),
                   timeout=120, interval=0.5, what="systemd in the container")
        yield box
    finally:
        p.run("rm", "-f", "-t", "0", name, check=False)
        p.run("rmi", "-f", tag, check=False)
        shutil.rmtree(workdir, ignore_errors=True)


class Box:
    def __init__(self, p, name):
        self.p = p
        self.name = name

    def sh(self, cmd, timeout=120):
        return self.p.run("exec", self.name, "sh", "-c", cmd, check=False, timeout=timeout)

    def ok(self, cmd, timeout=120):
        r = self.sh(cmd, timeout)
        assert r.returncode == 0, "%s: exit %d\n%s%s\n%s" % (cmd, r.returncode, r.stdout, r.stderr, self.journal())
        return r.stdout

    def popen(self, cmd):
        return subprocess.Popen(["podman", "exec", self.name, "sh", "-c", cmd], env=self.p.env,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

    def show(self, unit, prop):
        return self.ok("systemctl show -p %s --value %s" % (prop, unit)).strip()

    def journal(self):
        return self.sh("journalctl -u ferryd.service -u ferryd.socket --no-pager -o cat").stdout[-4000:]


def test_ferryd_under_systemd(box):
    box.ok("systemctl is-active redis-server")
    # The ferry user and group come from the sysusers.d file at boot.
    assert box.ok("id -nG ferry").split() == ["ferry"]

    box.ok("systemctl start ferryd.socket")
    assert box.sh("systemctl is-active ferryd.service").stdout.strip() == "inactive"
    assert box.ok("stat -c '%U:%G %a' /run/ferry/ferry.sock").strip() == "root:ferry 660"

    # The first connection starts the service.
    assert box.ok("ferry --timeout 30000 ping") == "PONG\n"
    assert box.show("ferryd.service", "ActiveState") == "active"
    assert box.show("ferryd.service", "StatusText") == "ready"
    assert box.ok("ferry health") == "ready\nredis: up\n"
    journal = box.journal()
    assert "passed by the service manager" in journal
    assert "226/NAMESPACE" not in journal
    pid = box.show("ferryd.service", "MainPID")
    assert box.ok("ps -o user= -p %s" % pid).strip() == "ferry"
    assert "watchdog: pinging the service manager every 15000 ms" in journal
    assert "telemetry: traces otlp http://localhost:4318" in journal
    # libcurl, loaded at run time, made its sockets under the filter and W^X:
    # what stopped the export is the missing collector.
    wait_until(lambda: "otlp: export to http://localhost:4318/v1/traces failed: Couldn't connect to server"
               in box.journal(), timeout=60, interval=0.5, what="an export attempt")

    # Apps reach the socket through the group ferry, and only so.
    box.ok("useradd -M -G ferry app && useradd -M other")
    assert box.ok("runuser -u app -- ferry ping") == "PONG\n"
    r = box.sh("runuser -u other -- ferry ping")
    assert r.returncode == 2 and "Permission denied" in r.stderr, r

    # Reload: RELOADING=1, then READY=1; the unit stays up, same process.
    box.ok("systemctl reload ferryd")
    assert "reloaded configuration" in box.journal()
    assert box.show("ferryd.service", "StatusText") == "ready (reloaded)"
    assert box.show("ferryd.service", "MainPID") == pid

    # A request in flight when the stop comes: Redis frozen, a GET waiting.
    # And a client that connects during the drain: it waits in the socket's
    # backlog, which systemd holds, and the next ferryd (started by that
    # very connection) answers it. This is the upgrade path.
    box.ok("ferry redis SET k v")
    box.ok("systemctl kill -s SIGSTOP redis-server")
    try:
        getter = box.popen("ferry --timeout 60000 redis GET k")
        wait_until(lambda: "backends.redis.connections.0.pending: 1" in box.ok("ferry stats"),
                   timeout=60, what="the GET in flight")
        stopper = box.popen("systemctl stop ferryd.service")
        wait_until(lambda: "SIGTERM: draining" in box.journal(), timeout=60, what="the drain")
        late = box.sh("ferry --timeout 60000 ping", timeout=120)
        out, err = getter.communicate(timeout=60)
        stopper.communicate(timeout=60)
    finally:
        box.sh("systemctl kill -s SIGCONT redis-server")
    # Drained: answered before the process exited, not cut off.
    assert getter.returncode == 1 and err.startswith("(error) shutting_down"), (getter.returncode, out, err)
    assert stopper.returncode == 0
    journal = box.journal()
    assert "SIGTERM: draining (1 clients, 1 requests in flight" in journal, journal
    assert "ferryd.service: Deactivated successfully" in journal, journal
    assert "Operation not permitted" not in journal and "Bad system call" not in journal, journal
    assert (late.returncode, late.stdout) == (0, "PONG\n"), (late, journal)
    assert box.show("ferryd.service", "ActiveState") == "active"
    assert box.show("ferryd.service", "MainPID") != pid

    # Stopped with nothing in flight, the unit ends cleanly, and the socket
    # stays with systemd: the next connection starts ferryd again.
    box.ok("systemctl stop ferryd.service")
    assert box.show("ferryd.service", "Result") == "success"
    assert box.show("ferryd.service", "ExecMainStatus") == "0"
    assert box.show("ferryd.service", "ActiveState") == "inactive"
    assert box.show("ferryd.socket", "ActiveState") == "active"
    box.ok("test -S /run/ferry/ferry.sock")
    assert box.ok("ferry --timeout 30000 redis GET k") == "v\n"
    assert box.show("ferryd.service", "ActiveState") == "active"

    # A restart keeps the socket too.
    box.ok("systemctl restart ferryd.service")
    assert box.ok("ferry ping") == "PONG\n"
    box.ok("systemctl stop ferryd.service ferryd.socket")
    assert box.show("ferryd.service", "Result") == "success"
