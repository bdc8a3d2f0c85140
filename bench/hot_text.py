#!/usr/bin/env python3
"""Lays out the release binary's code: writes link/hot-text.ld, which build.rs hands to the linker.

    python3 bench/hot_text.py        # by hand, after the request path or the dependencies change

Why: the kernel maps a binary's code 64 KiB at a time around each page fault (fault-around), so
the few hundred functions that start-up and one request run, scattered over 7 MiB of code, kept
most of it resident in an idle proxy. Placed side by side they fill a few dozen pages, and the
request path's functions share cache lines and TLB entries too (bench/results-footprint.md).

1. Builds the working tree with `cargo build --release --locked` and MINTPROXY_KEEP_SYMBOLS=1
   (CARGO_TARGET_DIR=target/hot-text): the release build with its symbols, so the same symbol
   names as the binary users build (build.rs strips at link time for this reason).
2. Runs it under callgrind (valgrind) in each workload below, against Python backends on
   127.0.0.1 (plain, and TLS with a certificate from bench/tls_certs.sh), with h2load and curl:
   - core: `serve --threads 1 --token-file` with the default log level (access log on), a plain
     upstream; start-up, then 2,000 HTTP/1.1 requests (h2load --h1 -c4);
   - threads: the same on the multi-thread runtime (`--threads 2`), the default on several CPUs;
   - others: h2c and uploads; an HTTPS upstream (`--upstream-ca`), HTTP/1.1 and h2c; `demo`,
     whose proxy mints tokens (RS256 assertions, the token endpoint over HTTP).
3. Writes link/hot-text.ld: one output section ahead of `.text` holding, in this order,
   (1) the functions core's requests ran, most instructions first (the hot loop); (2) those
   core's start-up ran; (3) those `threads` ran; (4) those the other workloads ran. An idle
   proxy with one thread touches the first two only.

A name that a later build no longer has (a renamed function, a new dependency version, a new
toolchain for the standard library's names) matches nothing and costs nothing: that function
goes back among the rest. Adding or removing a dependency of mintproxy changes the crate's
metadata and so every one of its own symbol names: rewrite the script then (CI fails when
less than half of it matches, link/coverage.sh). Needs cargo, valgrind (callgrind_control), h2load, curl, openssl, nm.
Knobs (environment): BASE_PORT=18520 (uses BASE_PORT..BASE_PORT+3 on 127.0.0.1), NICE_BUILD=10.
"""

import collections
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT = os.path.join(ROOT, "link", "hot-text.ld")
TARGET_DIR = os.path.join(ROOT, "target", "hot-text")
BASE_PORT = int(os.environ.get("BASE_PORT", "18520"))
PLAIN, TLS, PROXY, DEMO = (BASE_PORT + i for i in range(4))
NICE_BUILD = os.environ.get("NICE_BUILD", "10")

BACKEND = r"""
import http.server, ssl, sys
class Answer(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def do_GET(self):
        length = int(self.headers.get("Content-Length") or 0)
        while length > 0:
            length -= len(self.rfile.read(min(length, 65536)))
        self.send_response(200)
        self.send_header("Content-Length", "3")
        self.end_headers()
        self.wfile.write(b"ok\n")
    do_POST = do_GET
    def log_message(self, *args):
        pass
server = http.server.ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), Answer)
if len(sys.argv) > 2:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(sys.argv[2], sys.argv[3])
    server.socket = context.wrap_socket(server.socket, server_side=True)
server.serve_forever()
"""


def log(message):
    print(f"[hot_text] {message}", file=sys.stderr, flush=True)


def wait_port(port, seconds=60):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        with socket.socket() as probe:
            if probe.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.1)
    sys.exit(f"hot_text: nothing listens on 127.0.0.1:{port} after {seconds} s")


def wait_answer(url, seconds=120):
    """Until the proxy forwards a request (start-up under callgrind takes seconds)."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        code = subprocess.run(["curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", "--max-time", "5", url],
                              capture_output=True, text=True).stdout
        if code == "200":
            return
        time.sleep(0.2)
    sys.exit(f"hot_text: {url} did not answer 200 within {seconds} s")


def load(*command):
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL)


def profile(work, binary, name, args, port, requests, env=None):
    """Runs `binary args` under callgrind: a dump after start-up (<name>.1), one at exit (<name>)."""
    out = os.path.join(work, f"cg.{name}")
    log(f"{name}: {' '.join(args)}")
    with open(os.path.join(work, f"{name}.err"), "w") as err:
        proc = subprocess.Popen(
            ["valgrind", "--tool=callgrind", "--demangle=no", "--compress-strings=no", "--compress-pos=no",
             "--dump-line=no", f"--callgrind-out-file={out}", binary, *args],
            stdout=subprocess.DEVNULL, stderr=err, env={**os.environ, **(env or {})})
    url = f"http://127.0.0.1:{port}/"
    wait_answer(url)
    subprocess.run(["callgrind_control", "-d", "start-up", str(proc.pid)], check=True, stdout=subprocess.DEVNULL)
    requests(url)
    proc.send_signal(signal.SIGTERM)
    if proc.wait(timeout=120) != 0:
        sys.exit(f"hot_text: {name} exited with {proc.returncode}; see {work}/{name}.err")
    return out + ".1", out


def self_costs(path):
    """Instructions per function, its callees' excluded, from a callgrind file (uncompressed names)."""
    costs = collections.Counter()
    function, after_call = None, False
    with open(path, errors="replace") as lines:
        for line in lines:
            if line.startswith("fn="):
                function, after_call = line[3:].strip(), False
            elif line.startswith("calls="):
                after_call = True  # the next cost line is the call's inclusive cost
            elif line[:1].isdigit() or line[:1] in "+-*":
                if after_call:
                    after_call = False
                    continue
                fields = line.split()
                if function and len(fields) >= 2:
                    costs[function] += int(fields[1])
    return costs


def text_symbols(binary):
    """Code symbols -> size, without the `.1234` that link-time optimisation adds to local names."""
    listing = subprocess.run(["nm", "-S", "--defined-only", binary], check=True, capture_output=True, text=True)
    sizes = {}
    for line in listing.stdout.splitlines():
        fields = line.split()
        if len(fields) == 4 and fields[2] in "tTwW":
            sizes[re.sub(r"\.\d+$", "", fields[3])] = int(fields[1], 16)
    return sizes


def main():
    for tool in ("cargo", "valgrind", "callgrind_control", "h2load", "curl", "openssl", "nm"):
        if shutil.which(tool) is None:
            sys.exit(f"hot_text: needs {tool}")
    commit = subprocess.run(["git", "-C", ROOT, "rev-parse", "--short=12", "HEAD"], capture_output=True,
                            text=True).stdout.strip()
    log(f"cargo build --release --locked (MINTPROXY_KEEP_SYMBOLS=1, target dir {TARGET_DIR})")
    subprocess.run(["nice", "-n", NICE_BUILD, "cargo", "build", "--release", "--locked", "--quiet"], cwd=ROOT,
                   check=True, env={**os.environ, "MINTPROXY_KEEP_SYMBOLS": "1", "CARGO_TARGET_DIR": TARGET_DIR})
    binary = os.path.join(TARGET_DIR, "release", "mintproxy")
    sizes = text_symbols(binary)

    work = tempfile.mkdtemp(prefix="mintproxy-hot-text.")
    backends = []
    try:
        subprocess.run(["bash", os.path.join(ROOT, "bench", "tls_certs.sh"), f"{work}/tls"], check=True,
                       stdout=subprocess.DEVNULL)
        token = os.path.join(work, "token")
        with open(token, "w") as file:
            file.write("hot-text-token-0123456789abcdef\n")
        os.chmod(token, 0o600)
        upload = os.path.join(work, "upload")
        with open(upload, "wb") as file:
            file.write(os.urandom(1 << 20))
        backends.append(subprocess.Popen([sys.executable, "-c", BACKEND, str(PLAIN)]))
        backends.append(subprocess.Popen([sys.executable, "-c", BACKEND, str(TLS), f"{work}/tls/server.pem",
                                          f"{work}/tls/server.key"]))
        wait_port(PLAIN)
        wait_port(TLS)

        serve = ["serve", "--listen", f"127.0.0.1:{PROXY}", "--token-file", token]
        plain = ["--upstream", f"http://127.0.0.1:{PLAIN}"]
        https = ["--upstream", f"https://localhost:{TLS}", "--upstream-ca", f"{work}/tls/ca.pem"]
        default_log = {"RUST_LOG": "info"}

        def http1(url, n="2000"):
            load("h2load", "--h1", "-n", n, "-c", "4", url)

        def h2c_and_upload(url):
            load("h2load", "-n", "1000", "-c", "4", "-m", "4", url)
            load("curl", "-sf", "-o", "/dev/null", "--data-binary", f"@{upload}", url)
            load("curl", "-sf", "-o", "/dev/null", "--http2-prior-knowledge", "--data-binary", f"@{upload}", url)

        def both(url):
            http1(url, "500")
            h2c_and_upload(url)

        core_startup, core_requests = profile(work, binary, "core", [*serve, "--threads", "1", *plain], PROXY,
                                              http1, default_log)
        threads = profile(work, binary, "threads", [*serve, "--threads", "2", *plain], PROXY, http1, default_log)
        others = []
        for name, args, port, requests in (
            ("h2c", [*serve, "--threads", "1", *plain], PROXY, h2c_and_upload),
            ("https", [*serve, "--threads", "1", *https], PROXY, both),
            ("demo", ["demo", "--listen", f"127.0.0.1:{DEMO}"], DEMO, lambda url: http1(url, "200")),
        ):
            others.extend(profile(work, binary, name, args, port, requests, default_log))
        phases = [self_costs(core_requests), self_costs(core_startup), collections.Counter(), collections.Counter()]
        for path in threads:
            phases[2].update(self_costs(path))
        for path in others:
            phases[3].update(self_costs(path))
    finally:
        for backend in backends:
            backend.kill()
        shutil.rmtree(work, ignore_errors=True)

    def code(costs):
        return [(re.sub(r"\.\d+$", "", name), ir) for name, ir in costs.most_common()]

    placed, groups = set(), []
    for costs in phases:
        group = []
        for name, ir in code(costs):
            if ir > 0 and name in sizes and name not in placed:
                placed.add(name)
                group.append(name)
        groups.append(group)

    titles = ("the requests of `core` (HTTP/1.1, plain upstream, token file), most instructions first",
              "the start-up of `core`",
              "`threads`: the same on the multi-thread runtime (`--threads 2`), the default on several CPUs",
              "the other workloads (h2c, uploads, HTTPS upstream, demo's minting)")
    with open(OUT, "w") as script:
        script.write(f"/* Generated by bench/hot_text.py at {commit}: do not edit. The functions that start-up\n"
                     "   and the request path run, side by side ahead of the rest of the code (build.rs). */\n"
                     "SECTIONS\n{\n  .text.hot : {\n")
        for title, group in zip(titles, groups):
            script.write(f"    /* {len(group)} functions, {sum(sizes[n] for n in group)} bytes: {title} */\n")
            for name in group:
                script.write(f"    *(.text.{name}* .text.unlikely.{name}*)\n")
        script.write("  }\n}\nINSERT BEFORE .text;\n")
    for title, group in zip(titles, groups):
        log(f"{len(group)} functions, {sum(sizes[n] for n in group)} bytes: {title}")
    log(f"wrote {os.path.relpath(OUT, ROOT)}")


if __name__ == "__main__":
    main()
