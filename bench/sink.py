#!/usr/bin/env python3
"""Upload sink for bench/run.sh: reads every request body to the end and throws it away.

Usage: sink.py PORT EXPECTED_AUTHORIZATION

Handles Content-Length and chunked bodies, reading in 1 MiB pieces so the sink itself never
holds the body. Answers 200 with JSON: bytes read, whether the body was chunked, and
whether the Authorization header was the expected one. Listens on 127.0.0.1 only.
Python standard library only.
"""

import json
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

PIECE = 1 << 20


class Sink(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    expected_auth = ""

    def _drain_exact(self, n):
        got = 0
        while got < n:
            piece = self.rfile.read(min(PIECE, n - got))
            if not piece:
                break
            got += len(piece)
        return got

    def _drain_chunked(self):
        total = 0
        while True:
            line = self.rfile.readline(1024)
            if not line:
                return total
            size = int(line.split(b";", 1)[0].strip(), 16)
            if size == 0:
                # trailers, up to the empty line
                while self.rfile.readline(1024) not in (b"\r\n", b"\n", b""):
                    pass
                return total
            total += self._drain_exact(size)
            self.rfile.readline(8)  # CRLF after the chunk data

    def _handle(self):
        chunked = "chunked" in self.headers.get("Transfer-Encoding", "").lower()
        if chunked:
            count = self._drain_chunked()
        else:
            count = self._drain_exact(int(self.headers.get("Content-Length", "0")))
        body = json.dumps(
            {
                "bytes": count,
                "chunked": chunked,
                "authorization_ok": self.headers.get("Authorization", "") == self.expected_auth,
            }
        ).encode() + b"\n"
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_POST = do_PUT = _handle

    def log_message(self, fmt, *args):
        sys.stderr.write("sink: " + (fmt % args) + "\n")


def main():
    port = int(sys.argv[1])
    Sink.expected_auth = sys.argv[2]
    server = ThreadingHTTPServer(("127.0.0.1", port), Sink)
    server.daemon_threads = True
    print(f"sink listening on http://127.0.0.1:{port}", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
