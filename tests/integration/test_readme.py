"""README.md's examples, run as a reader would run them.

The README's examples follow one format, so that this test can find them
all, whoever adds one:

- A ```console block is a terminal session: each line starting with "$ "
  is a command (a trailing backslash continues it on the next line), and
  the lines after it, up to the next "$ ", are exactly what it prints,
  stdout and stderr together. A line "..." stands for any number of lines.
- A ```c, ```python or ```sh block whose first line is a comment naming a
  file ("/* hello.c: ...", "# jobs.py: ...") is saved under that name
  before the sessions run, so a session can build or run it.
- A line "<!-- readme-test: skip (why) -->" just before a block leaves the
  block out (say why: it needs something the test cannot provide).
  Other blocks (```sh, ```c without a file name, diagrams) are not run.

Every session runs, in README order, in one bash process, in a directory
laid out like the top of the tree (the sources, build/ as the build under
test) with ferryd listening on run/ferry.sock, backed by the harness's
redis-server and rabbitmq-server, as after `make run` with FERRY_AMQP_URL
set. Nothing else is set up: FERRY_SOCKET and PATH are what the README
itself exports."""

import os
import re
import select
import signal
import subprocess
import sys
import time

import pytest

from conftest import BUILD, ROOT, SANITIZED, SLOW, wait_until

README = os.path.join(ROOT, "README.md")
FILE_COMMENT = re.compile(r"^(?:/\*|#|//)\s*([\w][\w.-]*\.\w+):")
SKIP = re.compile(r"^<!--\s*readme-test:\s*skip\b")


def fenced_blocks(text):
    """(language, lines, README line number of the first line, skipped)."""
    lines = text.splitlines()
    i = 0
    while i < len(lines):
        m = re.match(r"^```(\w*)\s*$", lines[i])
        if not m:
            i += 1
            continue
        j = i + 1
        while j < len(lines) and not lines[j].startswith("```"):
            j += 1
        k = i - 1
        while k >= 0 and not lines[k].strip():
            k -= 1
        skipped = k >= 0 and bool(SKIP.match(lines[k].strip()))
        yield m.group(1), lines[i + 1:j], i + 2, skipped
        i = j + 1


def examples(text):
    """The files to save and the commands to run, with their expected
    output and where they are in the README."""
    files, steps = {}, []
    for lang, lines, lineno, skipped in fenced_blocks(text):
        if skipped:
            continue
        if lang in ("c", "python", "sh") and lines:
            m = FILE_COMMENT.match(lines[0])
            if m:
                files[m.group(1)] = "\n".join(lines) + "\n"
            continue
        if lang != "console":
            continue
        i = 0
        while i < len(lines):
            if not lines[i].startswith("$ "):
                raise AssertionError("README.md line %d: output before any '$ ' command" % (lineno + i))
            at = lineno + i
            cmd = lines[i][2:]
            while cmd.endswith("\\") and i + 1 < len(lines):
                i += 1
                cmd = cmd[:-1] + "\n" + lines[i]
            i += 1
            out = []
            while i < len(lines) and not lines[i].startswith("$ "):
                out.append(lines[i])
                i += 1
            steps.append((at, cmd, out))
    return files, steps


def lines_match(expected, actual):
    """expected, with "..." matching any run of lines, against actual."""
    def m(i, j):
        if i == len(expected):
            return j == len(actual)
        if expected[i] == "...":
            return any(m(i + 1, k) for k in range(j, len(actual) + 1))
        return j < len(actual) and expected[i] == actual[j] and m(i + 1, j + 1)
    return m(0, 0)


def tree_copy(work):
    """Lays work out like the top of the tree: links to the sources, and
    build/ as the build under test."""
    for name in os.listdir(ROOT):
        if name.startswith(".") or name in ("build", "build-asan", "run"):
            continue
        os.symlink(os.path.join(ROOT, name), os.path.join(work, name))
    os.symlink(BUILD, os.path.join(work, "build"))


def reader_env(work):
    """The environment of a fresh shell on Debian 12: no FERRY_* variables,
    build/ not on PATH, and python3 the system's (the one with
    python3-cbor2, running this test). In a sanitized build, libferry needs
    the sanitizer runtime, so `cc` is the same compiler with the same flags."""
    # Nor the variables of a make that may be running these tests (`make
    # B=build-asan check-integration` exports B): `make install` in a
    # session must see the reader's command line only.
    makevars = ("MAKEFLAGS", "MFLAGS", "MAKELEVEL", "MAKEOVERRIDES", "B", "CC", "OPT", "SAN", "CFLAGS",
                "LDFLAGS", "CPPFLAGS", "DESTDIR", "PREFIX")
    env = {k: v for k, v in os.environ.items() if not k.startswith("FERRY_") and k not in makevars}
    env["HOME"] = work
    tools = os.path.join(work, ".tools")
    if not os.path.isdir(tools):
        os.mkdir(tools)
        os.symlink(sys.executable, os.path.join(tools, "python3"))
        if SANITIZED:
            with open(os.path.join(tools, "cc"), "w") as f:
                f.write('#!/bin/sh\nexec clang -fsanitize=address,undefined -fno-omit-frame-pointer "$@"\n')
            os.chmod(os.path.join(tools, "cc"), 0o755)
    env["PATH"] = tools + ":" + env["PATH"]
    return env


def test_readme_examples_run_as_written(tmp, make_ferryd, rabbit):
    files, steps = examples(open(README, encoding="utf-8").read())
    assert len(steps) >= 10, "README.md should hold its examples as ```console blocks"
    assert {"hello.c", "hello.py"} <= set(files)

    tree_copy(tmp)
    os.mkdir(os.path.join(tmp, "run"))
    f = make_ferryd(["--amqp", rabbit.url], name="run/ferry.sock")
    wait_until(lambda: f.stats()["backends"]["amqp"]["state"] == "up", timeout=30, what="amqp up")
    for name, body in files.items():
        with open(os.path.join(tmp, name), "w") as fh:
            fh.write(body)

    script = ["exec 2>&1", "cd " + tmp]
    for n, (_, cmd, _) in enumerate(steps):
        script.append("printf '\\n@@step %d@@\\n'" % n)
        script.append(cmd)
    script.append("printf '\\n@@end@@\\n'")
    r = subprocess.run(["bash", "-c", "\n".join(script)], env=reader_env(tmp), cwd=tmp,
                       stdout=subprocess.PIPE, stdin=subprocess.DEVNULL, timeout=600 * SLOW)
    out = r.stdout.decode(errors="replace")
    chunks = re.split(r"\n@@(?:step \d+|end)@@\n", out)[1:-1]
    assert len(chunks) == len(steps), "the session stopped early:\n" + out[-3000:]
    wrong = []
    for (at, cmd, expected), got in zip(steps, chunks):
        if not lines_match(expected, got.splitlines()):
            wrong.append("README.md line %d: $ %s\n  expected:\n    %s\n  got:\n    %s" % (
                at, cmd, "\n    ".join(expected), "\n    ".join(got.splitlines())))
    assert not wrong, "\n".join(wrong)


def test_make_run_prints_the_line_that_makes_the_examples_work(tmp, redis):
    tree_copy(tmp)
    env = reader_env(tmp)
    env["FERRY_REDIS_URL"] = redis.url
    env["OTEL_TRACES_EXPORTER"] = "none"
    log = open(os.path.join(tmp, "make-run.log"), "wb")
    # -o deps: the test must not install packages; what make run does after
    # that is as a reader sees it.
    p = subprocess.Popen(["make", "-o", "deps", "run"], cwd=tmp, env=env, stdout=subprocess.PIPE,
                         stderr=log, start_new_session=True)
    try:
        seen, line = b"", None
        end = time.monotonic() + 120 * SLOW
        while line is None and time.monotonic() < end and p.poll() is None:
            ready, _, _ = select.select([p.stdout], [], [], 1)
            if ready:
                seen += os.read(p.stdout.fileno(), 4096)
                m = re.search(rb"^ *(export PATH=.*)$", seen, re.M)
                line = m.group(1).decode() if m else None
        assert line == "export PATH=%s/build:$PATH FERRY_SOCKET=%s/run/ferry.sock" % (tmp, tmp), seen
        wait_until(lambda: os.path.exists(os.path.join(tmp, "run", "ferry.sock")), timeout=30 * SLOW,
                   what="make run's ferryd")
        r = subprocess.run(["bash", "-c", line + "\nferry ping\nferry hello -s run/ferry.sock"],
                           cwd=tmp, env=reader_env_without_ferry(env), capture_output=True, timeout=60)
        assert r.stdout.startswith(b"PONG\nprotocol\n1\nserver\nferryd\n"), r.stdout + r.stderr
    finally:
        if p.poll() is None:
            os.killpg(p.pid, signal.SIGINT)
        p.wait(60 * SLOW)
        p.stdout.close()
        log.close()
    assert not os.path.exists(os.path.join(tmp, "run", "ferry.sock"))   # drained and gone


def reader_env_without_ferry(env):
    return {k: v for k, v in env.items() if not k.startswith("FERRY_")}


@pytest.mark.parametrize("text,files,steps", [
    ("```console\n$ a \\\n  b\nx\n...\n$ c\n```\n", {}, [(2, "a \n  b", ["x", "..."]), (6, "c", [])]),
    ("<!-- readme-test: skip (needs a cluster) -->\n```console\n$ a\n```\n", {}, []),
    ("```c\n/* x.c: demo */\nint main;\n```\n```sh\nmake run\n```\n",
     {"x.c": "/* x.c: demo */\nint main;\n"}, []),
])
def test_example_extraction(text, files, steps):
    assert examples(text) == (files, steps)


def test_wildcard_lines():
    assert lines_match(["...", "b: 1", "..."], ["a", "b: 1", "c"])
    assert not lines_match(["...", "b: 2", "..."], ["a", "b: 1", "c"])
    assert not lines_match(["OK"], ["OK", "extra"])
