#!/usr/bin/env python3
"""The architecture of daemon/, checked (docs/design.md, "Layers").

- No include circle between modules (a module is x.c with x.h): a file
  never includes a file that includes it back, directly or through others.
- Folders are layers: a file includes headers only from its own folder
  or from a folder below it in LAYERS.
- No .c file passes MAX_LINES.
- ferry's own functions and types stay out of its libraries' namespaces.

Prints one line per finding and a summary line; exits 1 on any finding.
"""
import os
import re
import sys

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..")
DAEMON = os.path.join(ROOT, "daemon")
# Lowest first. A folder may include from itself and from the folders
# before it; main.c (at the top of daemon/) may include anything.
LAYERS = ["base", "wire", "telemetry", "core", "redis", "patterns", "mq"]
MAX_LINES = 800
LIBRARY_PREFIXES = ("uv_", "redis", "amqp_", "cbor_", "curl_", "protobuf_c_", "__")

INCLUDE = re.compile(r'\s*#\s*include\s+"([^"]+)\.h"')
# A type defined, or a function declared or defined, at the start of a line.
DEFINED = re.compile(r'^(?:typedef\s+)?(?:struct|enum|union)\s+(\w+)\s*\{'
                     r'|^(?:static\s+|inline\s+|const\s+|unsigned\s+|struct\s+|enum\s+)*\w+[\s\*]+(\w+)\s*\(')


def sources():
    for d, _, files in os.walk(DAEMON):
        for f in files:
            if f.endswith((".c", ".h")):
                yield os.path.join(d, f)


def main():
    findings = []
    where = {}  # stem -> folder ("" for daemon/ itself)
    files = sorted(sources())
    for p in files:
        stem = os.path.basename(p).rsplit(".", 1)[0]
        folder = os.path.relpath(os.path.dirname(p), DAEMON)
        folder = "" if folder == "." else folder
        if stem in where and where[stem] != folder:
            findings.append("%s: two modules named %s (%s and %s)" % (p, stem, where[stem], folder))
        where[stem] = folder
    edges = {}
    for p in files:
        stem = os.path.basename(p).rsplit(".", 1)[0]
        folder = where[stem]
        with open(p) as f:
            text = f.read()
        for line in text.splitlines():
            m = INCLUDE.match(line)
            if not m or m.group(1) not in where or m.group(1) == stem:
                continue
            dep = m.group(1)
            edges.setdefault(stem, set()).add(dep)
            to = where[dep]
            if folder and to and folder != to:
                if folder not in LAYERS or to not in LAYERS:
                    findings.append("%s: folder %s or %s is not in LAYERS" % (p, folder, to))
                elif LAYERS.index(to) > LAYERS.index(folder):
                    findings.append("%s: includes %s.h from %s/, a layer above %s/" % (
                        os.path.relpath(p, ROOT), dep, to, folder))
            if not folder and to == "" and dep != stem:
                pass
        if p.endswith(".c"):
            n = text.count("\n")
            if n > MAX_LINES:
                findings.append("%s: %d lines (at most %d)" % (os.path.relpath(p, ROOT), n, MAX_LINES))
        for line in text.splitlines():
            m = DEFINED.match(line)
            name = m and (m.group(1) or m.group(2))
            if name and name.startswith(LIBRARY_PREFIXES) and name != "__attribute__":
                findings.append("%s: '%s' is in a library's namespace" % (os.path.relpath(p, ROOT), name))
    # Circles: strongly connected components of the module graph.
    index, low, stack, on, comps = {}, {}, [], set(), []
    counter = [0]
    sys.setrecursionlimit(10000)

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in edges.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                comps.append(sorted(comp))

    for v in sorted(edges):
        if v not in index:
            visit(v)
    for comp in comps:
        findings.append("include circle: %s" % " <-> ".join(comp))
    for f in findings:
        print(f)
    print("layout: %d modules, %d passed, %d failed" % (len(where), 0 if findings else 1, len(findings)))
    return 1 if findings else 0


if __name__ == "__main__":
    sys.exit(main())
