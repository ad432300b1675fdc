#!/usr/bin/python3
"""The benchmark's local collector: accepts OTLP/HTTP exports and discards them.

The tracing rows of `make bench` measure what tracing costs ferryd, and on
a 2-core machine the collector shares the cores with ferryd, Redis and the
load generator. tests/otlp_collector.py decodes every export with
python3-protobuf (that is its job, for the tests) and goes through
http.server, about 200 us of CPU per request; this sink reads each
request's headers and answers 200, and moves the body from the socket to
/dev/null with splice(2), so the body is never copied into this process
(reading it with recv_into cost about 300 us of CPU per 1 MiB export,
measured: most of the sink's share). It speaks just enough HTTP/1.1 for
libcurl: keep-alive, Content-Length bodies (ferryd never sends chunked
ones).

    otlp_sink.py PORT    prints "requests N bytes M" on SIGTERM
"""

import fcntl
import os
import signal
import socket
import sys
import threading

OK = b"HTTP/1.1 200 OK\r\nContent-Type: application/x-protobuf\r\nContent-Length: 0\r\n\r\n"
totals = {"requests": 0, "bytes": 0}
lock = threading.Lock()
F_SETPIPE_SZ = getattr(fcntl, "F_SETPIPE_SZ", 1031)


def serve(conn):
    # Headers are read into one preallocated buffer (recv(n) would
    # allocate n bytes per call); the body goes socket -> pipe -> /dev/null.
    buf = bytearray(1 << 16)
    view = memoryview(buf)
    have = 0      # bytes in buf not yet consumed
    pipe_r, pipe_w = os.pipe()
    try:
        fcntl.fcntl(pipe_w, F_SETPIPE_SZ, 1 << 20)
    except OSError:
        pass  # the default 64 KiB pipe works too, in more calls
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        while True:
            end = buf.find(b"\r\n\r\n", 0, have)
            while end < 0:
                if have == len(buf):
                    return  # a header this large is not ferryd's
                # MSG_PEEK, then take only the headers: the body must stay
                # in the socket for splice.
                n = conn.recv_into(view[have:], 0, socket.MSG_PEEK)
                if not n:
                    return
                at = buf.find(b"\r\n\r\n", max(0, have - 3), have + n)
                take = n if at < 0 else at + 4 - have
                conn.recv_into(view[have:have + take], take)
                have += take
                end = buf.find(b"\r\n\r\n", 0, have)
            length = 0
            for line in bytes(buf[:end]).split(b"\r\n")[1:]:
                name, _, value = line.partition(b":")
                if name.strip().lower() == b"content-length":
                    length = int(value)
            have = 0
            skip = length
            while skip:
                n = os.splice(conn.fileno(), pipe_w, skip)
                if not n:
                    return
                skip -= n
                while n:
                    n -= os.splice(pipe_r, devnull, n)
            with lock:
                totals["requests"] += 1
                totals["bytes"] += length
            conn.sendall(OK)
    finally:
        conn.close()
        for fd in (pipe_r, pipe_w, devnull):
            os.close(fd)


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
