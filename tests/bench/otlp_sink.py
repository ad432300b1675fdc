#!/usr/bin/python3
"""The benchmark's local collector: accepts OTLP/HTTP exports and discards them.

The tracing rows of `make bench` measure what tracing costs ferryd, and on
a 2-core machine the collector shares the cores with ferryd, Redis and the
load generator. tests/otlp_collector.py decodes every export with
python3-protobuf (that is its job, for the tests) and goes through
http.server, about 200 us of CPU per request; this sink reads each request
with a few system calls and answers 200, so the collector's own cost
stays small in the figures. It speaks just enough HTTP/1.1 for libcurl:
keep-alive, Content-Length bodies (ferryd never sends chunked ones).

    otlp_sink.py PORT    prints "requests N bytes M" on SIGTERM
"""

import signal
import socket
import sys
import threading

OK = b"HTTP/1.1 200 OK\r\nContent-Type: application/x-protobuf\r\nContent-Length: 0\r\n\r\n"
totals = {"requests": 0, "bytes": 0}
lock = threading.Lock()


def serve(conn):
    # recv_into one preallocated buffer: recv(n) allocates n bytes per call,
    # which for large n costs more than the rest of the request.
    buf = bytearray(1 << 20)
    view = memoryview(buf)
    have = 0      # bytes in buf not yet consumed
    try:
        while True:
            end = buf.find(b"\r\n\r\n", 0, have)
            while end < 0:
                if have == len(buf):
                    return  # a header this large is not ferryd's
                n = conn.recv_into(view[have:])
                if not n:
                    return
                have += n
                end = buf.find(b"\r\n\r\n", 0, have)
            length = 0
            for line in bytes(buf[:end]).split(b"\r\n")[1:]:
                name, _, value = line.partition(b":")
                if name.strip().lower() == b"content-length":
                    length = int(value)
            body_seen = min(have - end - 4, length)
            rest = have - end - 4 - body_seen    # bytes of the next request
            view[:rest] = view[end + 4 + body_seen:have]
            have = rest
            skip = length - body_seen
            while skip:
                n = conn.recv_into(view[have:have + min(skip, len(buf) - have)])
                if not n:
                    return
                skip -= n
            with lock:
                totals["requests"] += 1
                totals["bytes"] += length
            conn.sendall(OK)
    finally:
        conn.close()


def main():
    port = int(sys.argv[1])
    srv = socket.socket()
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    srv.bind(("127.0.0.1", port))
    srv.listen(16)

    def stop(*_):
        print("requests %d bytes %d" % (totals["requests"], totals["bytes"]), flush=True)
        sys.exit(0)

    signal.signal(signal.SIGTERM, stop)
    while True:
        conn, _ = srv.accept()
        threading.Thread(target=serve, args=(conn,), daemon=True).start()


if __name__ == "__main__":
    main()
