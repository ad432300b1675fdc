#!/usr/bin/python3
"""A test OTLP/HTTP collector.

It decodes what ferryd sends with python3-protobuf, using classes that
protoc generates from ferry's own proto/ files at start-up (an independent
implementation from the protoc-c code ferryd is built with). It records
every request, and can be told to answer 503 with Retry-After, or to be
down, or to misbehave: answer every request with an error, or with a
body far larger than OTLP's (counting the bytes it got to write).

    c = Collector().start()
    ... OTEL_EXPORTER_OTLP_ENDPOINT=c.endpoint ...
    c.spans()            # every span received, flattened
    c.fail_next(1, 503, retry_after=2)
    c.fail_always(429, retry_after=0)
    c.flood = (100 << 20, "length")  # a 100 MiB body; or "chunked", or "headers"
    c.down(); c.up()
"""

import gzip
import http.server
import importlib
import os
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse

from harness import free_port

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))
_GEN = None


def generated():
    """Compiles proto/ with protoc into a temp dir once; returns modules."""
    global _GEN
    if _GEN:
        return _GEN
    out = tempfile.mkdtemp(prefix="ferry-otlp-py-")
    protos = []
    for d, _, files in os.walk(os.path.join(ROOT, "proto")):
        protos += [os.path.relpath(os.path.join(d, f), os.path.join(ROOT, "proto"))
                   for f in files if f.endswith(".proto")]
    subprocess.run(["protoc", "--proto_path=" + os.path.join(ROOT, "proto"), "--python_out=" + out]
                   + protos, check=True)
    sys.path.insert(0, out)
    trace = importlib.import_module("opentelemetry.proto.collector.trace.v1.trace_service_pb2")
    metrics = importlib.import_module("opentelemetry.proto.collector.metrics.v1.metrics_service_pb2")
    _GEN = (trace, metrics)
    return _GEN


def any_value(v):
    kind = v.WhichOneof("value")
    if kind is None:
        return None
    if kind == "array_value":
        return [any_value(x) for x in v.array_value.values]
    if kind == "kvlist_value":
        return {kv.key: any_value(kv.value) for kv in v.kvlist_value.values}
    return getattr(v, kind)


def attrs(kvs):
    return {kv.key: any_value(kv.value) for kv in kvs}


class Collector:
    def __init__(self, port=None, tls=None):
        self.port = port or free_port()
        self.tls = tls           # (certfile, keyfile): serve HTTPS
        self.partial = None      # (rejected, message): answer with partial_success
        self.lock = threading.Lock()
        self.requests = []       # (path, headers dict, time, raw body)
        self.trace_requests = []
        self.metric_requests = []
        self.errors = []         # bodies that failed to decode
        self._fail = []          # [(status, retry_after)] for the next requests
        self.always = None       # (status, retry_after): the answer to every request
        self.flood = None        # (bytes, how): answer 200 with this much body (or headers)
        self.floods = []         # (bytes written, whether the client went away first), per flood
        self.close_connections = False  # answer "Connection: close" and close
        self.peers = set()       # (address, port) of each connection a request came on
        self.proxied = []        # absolute URLs of requests that came as to a proxy
        self.server = None
        self.thread = None

    @property
    def endpoint(self):
        return "%s://127.0.0.1:%d" % ("https" if self.tls else "http", self.port)

    def start(self):
        trace_pb, metrics_pb = generated()
        collector = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *a):
                pass

            def do_POST(self):
                if self.path.startswith("http://"):  # absolute form: sent to us as a proxy
                    with collector.lock:
                        collector.proxied.append(self.path)
                    self.path = urllib.parse.urlsplit(self.path).path
                n = int(self.headers.get("Content-Length", "0"))
                body = self.rfile.read(n)
                headers = {k.lower(): v for k, v in self.headers.items()}
                now = time.monotonic()
                with collector.lock:
                    collector.requests.append((self.path, headers, now, body))
                    collector.peers.add(self.client_address)
                    fail = collector._fail.pop(0) if collector._fail else collector.always
                    flood = collector.flood
                if collector.close_connections:
                    self.close_connection = True
                if fail:
                    status, retry_after = fail
                    self.send_response(status)
                    if retry_after is not None:
                        self.send_header("Retry-After", str(retry_after))
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                if flood:
                    self.send_flood(*flood)
                    return
                try:
                    raw = gzip.decompress(body) if headers.get("content-encoding") == "gzip" else body
                    if self.path == "/v1/traces":
                        msg = trace_pb.ExportTraceServiceRequest()
                        msg.ParseFromString(raw)
                        resp = trace_pb.ExportTraceServiceResponse()
                        if collector.partial:
                            resp.partial_success.rejected_spans = collector.partial[0]
                            resp.partial_success.error_message = collector.partial[1]
                        with collector.lock:
                            collector.trace_requests.append(msg)
                    elif self.path == "/v1/metrics":
                        msg = metrics_pb.ExportMetricsServiceRequest()
                        msg.ParseFromString(raw)
                        resp = metrics_pb.ExportMetricsServiceResponse()
                        with collector.lock:
                            collector.metric_requests.append(msg)
                    else:
                        self.send_response(404)
                        self.send_header("Content-Length", "0")
                        self.end_headers()
                        return
                except Exception as e:  # recorded; the test asserts there are none
                    with collector.lock:
                        collector.errors.append(repr(e))
                    self.send_response(400)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                out = resp.SerializeToString()
                self.send_response(200)
                if collector.close_connections:
                    self.send_header("Connection", "close")
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", str(len(out)))
                self.end_headers()
                self.wfile.write(out)

            def send_flood(self, total, how):
                """Answers 200 with total bytes of body, as one body of that
                Content-Length ("length") or in chunks ("chunked"), or
                with total bytes of header lines ("headers"), and records
                how much was written before the client closed the
                connection."""
                self.close_connection = True
                sent, gone = 0, False
                try:
                    self.wfile.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/x-protobuf\r\n")
                    if how == "headers":
                        line = b"X-Pad: " + b"a" * 1000 + b"\r\n"
                        while sent < total:
                            self.wfile.write(line * 64)
                            sent += len(line) * 64
                        self.wfile.write(b"Content-Length: 0\r\n\r\n")
                    else:
                        self.wfile.write(b"Transfer-Encoding: chunked\r\n\r\n" if how == "chunked"
                                         else b"Content-Length: %d\r\n\r\n" % total)
                        piece = b"\x0a" * 65536
                        while sent < total:
                            n = min(len(piece), total - sent)
                            if how == "chunked":
                                self.wfile.write(b"%x\r\n" % n + piece[:n] + b"\r\n")
                            else:
                                self.wfile.write(piece[:n])
                            sent += n
                        if how == "chunked":
                            self.wfile.write(b"0\r\n\r\n")
                except OSError:  # reset or broken pipe: the client went away
                    gone = True
                with collector.lock:
                    collector.floods.append((sent, gone))

        class Server(http.server.ThreadingHTTPServer):
            allow_reuse_address = True
            daemon_threads = True

        self.server = Server(("127.0.0.1", self.port), Handler)
        if self.tls:
            import ssl
            ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            ctx.load_cert_chain(*self.tls)
            self.server.socket = ctx.wrap_socket(self.server.socket, server_side=True)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()
        return self

    def down(self):
        self.server.shutdown()
        self.server.server_close()

    def up(self):
        self.start()

    def stop(self):
        if self.server:
            self.down()

    def fail_next(self, n, status=503, retry_after=None):
        with self.lock:
            self._fail += [(status, retry_after)] * n

    def fail_always(self, status=503, retry_after=None):
        with self.lock:
            self.always = (status, retry_after)

    def trace_posts(self):
        """(time, body) of each POST to /v1/traces, in order."""
        with self.lock:
            return [(t, b) for path, _, t, b in self.requests if path == "/v1/traces"]

    def spans(self):
        """Every span received: dicts with the resource's attributes too."""
        out = []
        with self.lock:
            reqs = list(self.trace_requests)
        for req in reqs:
            for rs in req.resource_spans:
                res = attrs(rs.resource.attributes)
                for ss in rs.scope_spans:
                    for s in ss.spans:
                        out.append({
                            "name": s.name, "kind": s.kind, "trace_id": s.trace_id.hex(),
                            "span_id": s.span_id.hex(), "parent_span_id": s.parent_span_id.hex(),
                            "trace_state": s.trace_state, "attributes": attrs(s.attributes),
                            "status_code": s.status.code, "status_message": s.status.message,
                            "start": s.start_time_unix_nano, "end": s.end_time_unix_nano,
                            "flags": s.flags, "resource": res, "scope": ss.scope.name,
                        })
        return out

    def span_count(self):
        with self.lock:
            reqs = list(self.trace_requests)
        return sum(len(ss.spans) for r in reqs for rs in r.resource_spans for ss in rs.scope_spans)

    def metrics(self):
        """The latest value of each metric: {name: [(attrs, value or hist)]}."""
        with self.lock:
            reqs = list(self.metric_requests)
        latest = {}
        for req in reqs:
            for rm in req.resource_metrics:
                for sm in rm.scope_metrics:
                    for m in sm.metrics:
                        kind = m.WhichOneof("data")
                        pts = []
                        for p in getattr(m, kind).data_points:
                            a = attrs(p.attributes)
                            if kind == "histogram":
                                pts.append((a, {"count": p.count, "sum": p.sum,
                                                "buckets": list(p.bucket_counts),
                                                "bounds": list(p.explicit_bounds)}))
                            else:
                                pts.append((a, p.as_int if p.WhichOneof("value") == "as_int" else p.as_double))
                        latest[m.name] = {"kind": kind, "points": pts, "unit": m.unit,
                                          "temporality": getattr(getattr(m, kind), "aggregation_temporality", None),
                                          "monotonic": getattr(getattr(m, kind), "is_monotonic", None)}
        return latest


if __name__ == "__main__":
    port = int(sys.argv[1]) if len(sys.argv) > 1 else 4318
    c = Collector(port).start()
    print("collector on %s" % c.endpoint, flush=True)
    try:
        while True:
            time.sleep(5)
            print("spans %d, metric requests %d, errors %d" % (len(c.spans()), len(c.metric_requests),
                                                               len(c.errors)), flush=True)
    except KeyboardInterrupt:
        pass
