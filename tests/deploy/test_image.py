"""ferryd's container image, built from deploy/Containerfile: what runs in
it, as whom, and what it leaves out."""

import json

from conftest import podman


def run(image, *cmd, entrypoint="/bin/sh"):
    return podman("run", "--rm", "--entrypoint", entrypoint, image, *cmd, check=False)


def test_runs_ferryd_and_ferry_as_a_numeric_non_root_user(images):
    cfg = json.loads(podman("image", "inspect", images["ferryd"]).stdout)[0]["Config"]
    # Numeric, so that runAsNonRoot can be checked without the image's passwd.
    assert cfg["User"] == "10001:10001"
    assert cfg["Entrypoint"] == ["/usr/sbin/ferryd"]
    r = podman("run", "--rm", images["ferryd"], "--version")
    assert r.stdout.startswith("ferryd "), r.stdout
    r = run(images["ferryd"], "-c", "id -u; ferry --help")
    assert r.stdout.startswith("10001\n") and "health [--live]" in r.stdout, r.stdout + r.stderr


def test_has_the_runtime_libraries_and_no_build_tools(images):
    # Every library the two programs link resolves, and libcurl, which
    # ferryd opens with dlopen for telemetry, is there too.
    r = run(images["ferryd"], "-c", "ldd /usr/sbin/ferryd /usr/bin/ferry; ldconfig -p")
    assert r.returncode == 0 and "not found" not in r.stdout, r.stdout
    assert "libcurl.so.4 " in r.stdout
    # No compiler, linker or -dev package (gcc-12-base, in every Debian, is
    # libgcc's, not a compiler).
    r = run(images["ferryd"], "-c", "for t in cc gcc clang make ld as protoc-c; do command -v $t; done; "
                                    "dpkg-query -W -f '${Package}\\n' | grep -x -e '.*-dev' -e 'gcc.*' -e 'cpp.*' -e 'binutils.*' -e make | grep -v -x 'gcc-[0-9]*-base'; true")
    assert r.stdout == "", "build tools in the runtime image:\n" + r.stdout


def test_socket_directory_belongs_to_the_daemon_user(images):
    # Without a volume over it (plain `podman run`), ferryd can still bind
    # its default socket.
    r = run(images["ferryd"], "-c", "stat -c '%u:%g %a' /run/ferry")
    assert r.stdout == "10001:10001 750\n", r.stdout + r.stderr


def test_own_layers_size(images):
    """The image's size above its base (the debootstrap base is larger than
    Debian's published slim image, so only the layers of our own compare);
    printed for docs/deploy.md, and bounded so that a build tool or a -dev
    package pulled in by mistake shows."""
    size = lambda ref: json.loads(podman("image", "inspect", ref).stdout)[0]["Size"]
    base = json.loads(podman("image", "inspect", images["ferryd"]).stdout)[0]["RootFS"]["Layers"][0]
    total = size(images["ferryd"])
    base_size = size("docker.io/library/debian:bookworm-slim")
    own = total - base_size
    print("image %.1f MB, base %.1f MB, own layers %.1f MB" % (total / 1e6, base_size / 1e6, own / 1e6))
    assert base in json.loads(podman("image", "inspect", "docker.io/library/debian:bookworm-slim").stdout)[0]["RootFS"]["Layers"]
    assert 0 < own < 40e6, own
