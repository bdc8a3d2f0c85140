#!/usr/bin/env python3
"""Idle keep-alive connections for bench/run.sh: opens N connections, sends one GET on each,
reads the whole response, then keeps every connection open and idle.

Usage: idle_conns.py PORT N READY_FILE STOP_FILE [MAX_SECONDS]

Connects to 127.0.0.1:PORT only. When all N connections have had their response, it writes
one line to READY_FILE (opened, answered 2xx, the status codes seen, and the first error if
any), then waits, without sending anything, until STOP_FILE exists or MAX_SECONDS (default 60)
have passed since the start, closes every connection and exits. Python standard library only.
"""

import collections
import os
import socket
import sys
import time

PIECE = 65536


def read_response(sock):
    """Reads one HTTP/1.1 response with a Content-Length (or chunked) body; returns the status."""
    buf = b""
    while b"\r\n\r\n" not in buf:
        piece = sock.recv(PIECE)
        if not piece:
            raise ConnectionError("closed before the response headers")
        buf += piece
    head, rest = buf.split(b"\r\n\r\n", 1)
    lines = head.split(b"\r\n")
    status = int(lines[0].split()[1])
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(b":")
        headers[name.strip().lower()] = value.strip()
    if b"chunked" in headers.get(b"transfer-encoding", b"").lower():
        while not rest.endswith(b"0\r\n\r\n"):
            piece = sock.recv(PIECE)
            if not piece:
                raise ConnectionError("closed inside a chunked body")
            rest += piece
    else:
        length = int(headers.get(b"content-length", b"0"))
        while len(rest) < length:
            piece = sock.recv(PIECE)
            if not piece:
                raise ConnectionError("closed inside the body")
            rest += piece
    if b"close" in headers.get(b"connection", b"").lower():
        raise ConnectionError("the server closed the keep-alive connection (Connection: close)")
    return status


def main():
    port, count = int(sys.argv[1]), int(sys.argv[2])
    ready_file, stop_file = sys.argv[3], sys.argv[4]
    max_seconds = float(sys.argv[5]) if len(sys.argv) > 5 else 60.0
    start = time.monotonic()
    request = (
        f"GET / HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUser-Agent: idle_conns.py\r\n\r\n"
    ).encode()
    socks, statuses, first_error = [], collections.Counter(), ""
    for _ in range(count):
        if time.monotonic() - start > max_seconds / 2:
            first_error = first_error or "ran out of time opening connections"
            break
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.settimeout(10)
        try:
            sock.connect(("127.0.0.1", port))
            sock.sendall(request)
            statuses[read_response(sock)] += 1
            socks.append(sock)
        except (OSError, ValueError, IndexError) as err:
            first_error = first_error or f"{type(err).__name__}: {err}"
            sock.close()
    ok = sum(n for status, n in statuses.items() if 200 <= status < 300)
    codes = ",".join(f"{status}x{n}" for status, n in sorted(statuses.items())) or "none"
    tmp = ready_file + ".tmp"
    with open(tmp, "w") as out:
        out.write(f"{len(socks)} {ok} {codes} {first_error or '-'}\n")
    os.rename(tmp, ready_file)
    while not os.path.exists(stop_file) and time.monotonic() - start < max_seconds:
        time.sleep(0.05)
    for sock in socks:
        sock.close()


if __name__ == "__main__":
    main()
