"""`make install` and `make uninstall` into a DESTDIR, as a packager or a
user would run them: the files and links that land, a C program built with
`pkg-config --cflags --libs ferry` alone and run against a live ferryd, the
Python stub where the system python finds it, man pages that lint clean,
and an uninstall that leaves nothing but an edited configuration."""

import os
import re
import subprocess
import sys


import conftest
from conftest import BUILD, ROOT, SANITIZED

PROGRAM = r"""
/* install_check.c: SET then GET through ferryd, with only what pkg-config gives. */
#include <stdio.h>
#include <string.h>

#include <ferry.h>

int main(int argc, char **argv)
{
    ferry_t *f = ferry_connect(argc > 1 ? argv[1] : NULL, NULL);
    if (!f)
        return 2;
    const char *set[] = {"SET", "installed:key", "through the installed libferry"};
    const char *get[] = {"GET", "installed:key"};
    ferry_msg_t *m;
    if (ferry_call_redis(f, 3, set, NULL, 2000, &m, 5000) != 0 || m->err_code)
        return 3;
    ferry_msg_free(m);
    if (ferry_call_redis(f, 2, get, NULL, 2000, &m, 5000) != 0 || m->err_code)
        return 4;
    /* A libcbor call of the program's own: Requires: libcbor must link it. */
    printf("%.*s\n", (int)cbor_bytestring_length(m->result),
           (const char *)cbor_bytestring_handle(m->result));
    ferry_msg_free(m);
    ferry_close(f);
    return 0;
}
"""

# Relative to DESTDIR, for PREFIX=/usr/local and the other directories at
# their defaults.
PYVER = "%d.%d" % sys.version_info[:2]
EXPECTED = {
    "usr/local/sbin/ferryd", "usr/local/bin/ferry",
    "usr/local/lib/libferry.so.1", "usr/local/lib/libferry.so", "usr/local/lib/libferry.a",
    "usr/local/include/ferry.h", "usr/local/lib/pkgconfig/ferry.pc",
    "usr/local/lib/python%s/dist-packages/ferry.py" % PYVER,
    "usr/local/share/man/man8/ferryd.8", "usr/local/share/man/man1/ferry.1",
    "usr/local/share/man/man5/ferryd.conf.5", "usr/local/share/man/man7/ferry-protocol.7",
    "etc/ferry/ferryd.conf", "etc/ferry/ferryd.conf.default",
    # make install-systemd's, which install runs too.
    "lib/systemd/system/ferryd.service", "lib/systemd/system/ferryd.socket", "usr/lib/sysusers.d/ferry.conf",
}


def make(target, destdir, *extra):
    """make TARGET from the top of the tree, with the build under test (B),
    and nothing of an outer make (check-asan's B, CC ...) leaking in."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("MAKEFLAGS", "MFLAGS", "MAKELEVEL", "MAKEOVERRIDES", "DESTDIR", "PREFIX")}
    r = subprocess.run(["make", "-C", ROOT, "-o", "all", "B=" + BUILD, "DESTDIR=" + destdir]
                       + list(extra) + [target], capture_output=True, text=True, env=env, timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    return r.stdout


def files_under(d):
    out = set()
    for top, dirs, files in os.walk(d):
        for name in files + [x for x in dirs if os.path.islink(os.path.join(top, x))]:
            out.add(os.path.relpath(os.path.join(top, name), d))
    return out


def compiler():
    # A sanitized libferry needs the sanitizer runtime in the program too.
    if SANITIZED:
        return ["clang", "-fsanitize=address,undefined", "-fno-omit-frame-pointer"]
    return ["cc"]


def test_install_builds_with_pkg_config_runs_and_uninstalls(tmp, monkeypatch, redis, make_ferryd):
    dest = os.path.join(tmp, "stage")
    make("install", dest, "PREFIX=/usr/local")
    assert files_under(dest) == EXPECTED

    lib = os.path.join(dest, "usr/local/lib")
    assert os.readlink(os.path.join(lib, "libferry.so")) == "libferry.so.1"
    dyn = subprocess.run(["readelf", "-d", os.path.join(lib, "libferry.so.1")],
                         capture_output=True, text=True).stdout
    assert "Library soname: [libferry.so.1]" in dyn
    assert os.stat(os.path.join(dest, "usr/local/sbin/ferryd")).st_mode & 0o777 == 0o755
    assert open(os.path.join(dest, "etc/ferry/ferryd.conf")).read() == \
        open(os.path.join(ROOT, "conf/ferryd.conf")).read()

    pc = open(os.path.join(lib, "pkgconfig/ferry.pc")).read()
    assert "prefix=/usr/local\n" in pc and "libdir=/usr/local/lib\n" in pc
    assert re.search(r"^Libs: -L\$\{libdir\} -lferry$", pc, re.M)

    # The program is built with pkg-config's flags and nothing else; the
    # sysroot maps the .pc's /usr/local paths into the staging tree.
    env = dict(os.environ, PKG_CONFIG_SYSROOT_DIR=dest, PKG_CONFIG_PATH=os.path.join(lib, "pkgconfig"),
               PKG_CONFIG_LIBDIR="/usr/lib/x86_64-linux-gnu/pkgconfig:/usr/share/pkgconfig")
    flags = subprocess.run(["pkg-config", "--cflags", "--libs", "ferry"], env=env,
                           capture_output=True, text=True, check=True).stdout.split()
    assert "-I%s/usr/local/include" % dest in flags and "-lferry" in flags and "-lcbor" in flags
    src = os.path.join(tmp, "install_check.c")
    with open(src, "w") as f:
        f.write(PROGRAM)
    prog = os.path.join(tmp, "install_check")
    r = subprocess.run(compiler() + ["-o", prog, src] + flags, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr

    # The installed ferryd, against the harness's redis; the program finds
    # the installed libferry.so.1 (its soname) through LD_LIBRARY_PATH.
    monkeypatch.setattr(conftest, "FERRYD", os.path.join(dest, "usr/local/sbin/ferryd"))
    d = make_ferryd()
    assert d.proc.args[0] == os.path.join(dest, "usr/local/sbin/ferryd")
    r = subprocess.run([prog, d.sock], env=dict(os.environ, LD_LIBRARY_PATH=lib),
                       capture_output=True, text=True, timeout=60)
    assert (r.returncode, r.stdout) == (0, "through the installed libferry\n"), r.stderr
    ldd = subprocess.run(["ldd", prog], env=dict(os.environ, LD_LIBRARY_PATH=lib),
                         capture_output=True, text=True).stdout
    assert "libferry.so.1 => %s/libferry.so.1" % lib in ldd

    # The stub lands where Debian's python3 looks (dist-packages of the
    # prefix), and works from there against the same daemon.
    pydir = "/usr/local/lib/python%s/dist-packages" % PYVER
    syspath = subprocess.run(["/usr/bin/python3", "-c", "import sys; print('\\n'.join(sys.path))"],
                             capture_output=True, text=True).stdout.split("\n")
    assert pydir in syspath
    r = subprocess.run(["/usr/bin/python3", "-c",
                        "import ferry, sys; print(ferry.__file__); "
                        "print(ferry.Client(sys.argv[1]).redis('GET', 'installed:key'))", d.sock],
                       env=dict(os.environ, PYTHONPATH=dest + pydir), capture_output=True, text=True)
    assert r.stdout == "%s/ferry.py\nb'through the installed libferry'\n" % (dest + pydir), r.stderr
    d.stop()

    for page in ("man8/ferryd.8", "man1/ferry.1", "man5/ferryd.conf.5", "man7/ferry-protocol.7"):
        path = os.path.join(dest, "usr/local/share/man", page)
        r = subprocess.run(["groff", "-man", "-ww", "-z", path], capture_output=True, text=True)
        assert (r.returncode, r.stderr) == (0, ""), page
        r = subprocess.run(["mandoc", "-Tlint", path], capture_output=True, text=True)
        assert (r.returncode, r.stdout + r.stderr) == (0, ""), page

    make("uninstall", dest, "PREFIX=/usr/local")
    assert files_under(dest) == set()


def test_uninstall_keeps_an_edited_config_and_honours_every_directory(tmp):
    dest = os.path.join(tmp, "stage")
    dirs = ["PREFIX=/opt/ferry", "BINDIR=/opt/bin", "SBINDIR=/opt/sbin", "LIBDIR=/opt/ferry/lib64",
            "INCLUDEDIR=/opt/inc", "SYSCONFDIR=/opt/etc", "MANDIR=/opt/man",
            "PKGCONFIGDIR=/opt/pc", "PYTHONDIR=/opt/py"]
    make("install", dest, *dirs)
    assert files_under(dest) == {
        "opt/sbin/ferryd", "opt/bin/ferry", "opt/ferry/lib64/libferry.so.1",
        "opt/ferry/lib64/libferry.so", "opt/ferry/lib64/libferry.a", "opt/inc/ferry.h",
        "opt/pc/ferry.pc", "opt/py/ferry.py", "opt/man/man8/ferryd.8", "opt/man/man1/ferry.1",
        "opt/man/man5/ferryd.conf.5", "opt/man/man7/ferry-protocol.7",
        "opt/etc/ferry/ferryd.conf", "opt/etc/ferry/ferryd.conf.default",
        "lib/systemd/system/ferryd.service", "lib/systemd/system/ferryd.socket", "usr/lib/sysusers.d/ferry.conf"}
    # The unit starts the ferryd of this install.
    unit = open(os.path.join(dest, "lib/systemd/system/ferryd.service")).read()
    assert re.search(r"^ExecStart=/opt/sbin/ferryd\b", unit, re.M), unit
    pc = open(os.path.join(dest, "opt/pc/ferry.pc")).read()
    assert "libdir=/opt/ferry/lib64\n" in pc and "includedir=/opt/inc\n" in pc

    conf = os.path.join(dest, "opt/etc/ferry/ferryd.conf")
    with open(conf, "a") as f:
        f.write("\n# edited by the admin\nlog_level = debug\n")
    edited = open(conf).read()
    # A second install (an upgrade) must not overwrite it.
    out = make("install", dest, *dirs)
    assert "keeping" in out and open(conf).read() == edited

    out = make("uninstall", dest, *dirs)
    assert "it was edited" in out
    assert files_under(dest) == {"opt/etc/ferry/ferryd.conf"}
    assert open(conf).read() == edited


def test_config_page_lists_every_key_of_the_daemon(tmp):
    """ferryd.conf(5) is generated from --print-config: every key the daemon
    knows has its paragraph, with its default."""
    keys = re.findall(r"^([a-z_]+) = (.*)$",
                      subprocess.run([os.path.join(BUILD, "ferryd"), "--print-config"],
                                     capture_output=True, text=True, check=True).stdout, re.M)
    assert len(keys) > 20
    page = open(os.path.join(BUILD, "man", "ferryd.conf.5")).read()
    text = subprocess.run(["groff", "-man", "-Tutf8", "-rHY=0", "-P-cbou", "-rLL=200n", os.path.join(BUILD, "man", "ferryd.conf.5")],
                          capture_output=True, text=True).stdout
    flat = " ".join(text.split())
    for key, default in keys:
        assert "\n.B %s\n" % key in page, key
        default = default.strip('"')
        if default:
            assert "Default: %s." % " ".join(default.split()) in flat, key


def test_protocol_page_names_every_op(amqp_ferryd):
    """ferry-protocol(7) names each op a ferryd with RabbitMQ serves (hello's
    list), so a new op cannot be left out of the page."""
    with amqp_ferryd.client() as c:
        ops = c.hello()["ops"]
    # -rHY=0: no hyphenation, which would split a name across lines.
    text = subprocess.run(["groff", "-man", "-Tutf8", "-rHY=0", "-P-cbou", os.path.join(ROOT, "man", "ferry-protocol.7")],
                          capture_output=True, text=True, check=True).stdout
    words = set(re.findall(r"[\w.]+", text))
    assert len(ops) > 10
    assert [op for op in ops if op not in words] == []


def test_cli_page_names_every_command():
    """ferry(1) has a paragraph for each command of `ferry --help`."""
    r = subprocess.run([os.path.join(BUILD, "ferry"), "--help"], capture_output=True, text=True)
    commands = re.findall(r"^  ([a-z][a-z-]*)\b", r.stdout + r.stderr, re.M)
    assert "health" in commands and "serve" in commands
    page = open(os.path.join(ROOT, "man", "ferry.1")).read()
    # Each is the first word of a .B or .BI line (a - escaped as \-).
    named = set(re.findall(r"^\.BI? ([a-z\\-]+)", page, re.M))
    assert [c for c in commands if c.replace("-", "\\-") not in named] == []
