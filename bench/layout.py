#!/usr/bin/env python3
"""Optimises and lays out the release binary's code from what start-up and the request path run.

    python3 bench/layout.py      # by hand, after the request path or the dependencies change (~12 min)

Writes the two files the release build reads on x86-64 Linux:

- link/mintproxy.profdata, for profile-guided optimisation (PGO). The branch and call counts
  of an instrumented build running the workloads below; link/rustc-wrapper.sh hands it to rustc
  for every optimised crate. LLVM then keeps each function's taken paths together and moves
  the rest out of the way, inlines along the calls that happen, and treats what never ran as
  cold: 22 % fewer instructions and less than half the first-level instruction-cache misses per
  proxied request, and a smaller binary (docs/performance.md).
- link/hot-text.ld, the code layout (build.rs). The kernel maps a binary's code 64 KiB at a
  time around each page fault (fault-around), so the few hundred functions that start-up and
  one request run, scattered over 7 MiB of code, kept most of it resident in an idle proxy.
  Placed side by side they fill a few dozen pages, and the request path's functions share
  cache lines and TLB entries too (bench/results-footprint.md).

1. Builds the instrumented binary: `cargo build --release --locked` with
   RUSTFLAGS=-Cprofile-generate (CARGO_TARGET_DIR=target/pgo-generate; link/rustc-wrapper.sh
   leaves instrumented builds alone).
   Runs it natively in each workload, then merges the raw profiles with llvm-profdata, from
   rustup's llvm-tools (the LLVM of the rustc that builds), into link/mintproxy.profdata.
   Not sparse: the functions that never ran are in it with no counts, and are built as cold.
2. Builds the release binary, which reads the new profile, with its symbols
   (`MINTPROXY_KEEP_SYMBOLS=1`, CARGO_TARGET_DIR=target/hot-text): the same symbol names as the
   binary users build (build.rs strips at link time for this reason). Runs it under callgrind
   (valgrind) in each workload and writes link/hot-text.ld: one output section ahead of `.text`
   holding, in this order, (1) the functions core's requests ran, most instructions first (the
   hot loop); (2) those core's start-up ran; (3) those `threads` ran; (4) those the other
   workloads ran. An idle proxy with one thread touches the first two only.

The workloads, against Python backends on 127.0.0.1 for HTTP/1.1 (plain, and TLS with a
certificate from bench/tls_certs.sh) and nginx for HTTP/2 (TLS with ALPN, and h2c), with h2load
and curl; natively each makes ten times the requests:
- core: `serve --threads 1 --token-file` with the default log level (access log on), a plain
  upstream; start-up, then 2,000 HTTP/1.1 requests (h2load --h1 -c4);
- quiet: the same with RUST_LOG=warn, as the benchmark runs it;
- threads: the same on the multi-thread runtime (`--threads 2`), the default on several CPUs;
- h2c and uploads; an HTTPS upstream (`--upstream-ca`), HTTP/1.1 and h2c; an HTTPS upstream
  that speaks HTTP/2 (ALPN, as ZITADEL's APIs do), and an h2c upstream (`--upstream-http2`, a
  plaintext gRPC server), each with HTTP/1.1 and h2c clients; a TLS listener (`--tls-cert`),
  HTTP/1.1 and HTTP/2 by ALPN; `demo`, whose proxy mints tokens (RS256 assertions, the token
  endpoint over HTTP).

A profile older than the code costs only the functions that changed since: their counts no
longer match and LLVM optimises them without. In the layout, a name that a later build no longer
has (a renamed function, a new dependency version, a new toolchain for the standard library's
names) matches nothing and costs nothing: that function goes back among the rest. Adding or
removing a dependency of mintproxy changes the crate's metadata and so every one of its own
symbol names: rerun this then (CI fails when less than half of link/hot-text.ld matches,
link/coverage.sh). Needs cargo, rustup's llvm-tools, valgrind (callgrind_control), h2load, curl,
openssl, nm, nginx. Knobs (environment): BASE_PORT=18520 (uses BASE_PORT..BASE_PORT+5 on 127.0.0.1),
NICE_BUILD=10.
"""

import collections
import glob
import hashlib
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
PROFILE = os.path.join(ROOT, "link", "mintproxy.profdata")
CARGO_CONFIG = os.path.join(ROOT, ".cargo", "config.toml")
SCRIPT = os.path.join(ROOT, "link", "hot-text.ld")
GENERATE_DIR = os.path.join(ROOT, "target", "pgo-generate")
SYMBOLS_DIR = os.path.join(ROOT, "target", "hot-text")
BASE_PORT = int(os.environ.get("BASE_PORT", "18520"))
PLAIN, TLS, PROXY, DEMO, H2_TLS, H2C = (BASE_PORT + i for i in range(6))
NICE_BUILD = os.environ.get("NICE_BUILD", "10")
NATIVE_SCALE = 10  # natively, each workload makes this many times the requests it makes under callgrind

BACKEND = r"""
import http.server, ssl, sys
class Answer(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    wbufsize = 1 << 16  # the head and the body in one write, flushed after each request
    disable_nagle_algorithm = True
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

# The HTTP/2 backend: nginx, one process, in the work dir.
NGINX = """
master_process off;
daemon off;
pid {work}/nginx.pid;
error_log {work}/nginx.err warn;
events {{ worker_connections 1024; }}
http {{
    access_log off;
    client_body_temp_path {work}/nginx-body;
    server {{
        listen 127.0.0.1:{h2_tls} ssl http2;
        listen 127.0.0.1:{h2c} http2;
        ssl_certificate {work}/tls/server.pem;
        ssl_certificate_key {work}/tls/server.key;
        location / {{ return 200 "ok\\n"; }}
    }}
}}
"""


def log(message):
    print(f"[layout] {message}", file=sys.stderr, flush=True)


def wait_port(port, seconds=60):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        with socket.socket() as probe:
            if probe.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.1)
    sys.exit(f"layout: nothing listens on 127.0.0.1:{port} after {seconds} s")


def wait_answer(url, seconds=120):
    """Until the proxy forwards a request (start-up under callgrind takes seconds)."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        # -k: the TLS listener's certificate names localhost, not the address
        code = subprocess.run(["curl", "-sk", "-o", "/dev/null", "-w", "%{http_code}", "--max-time", "5", url],
                              capture_output=True, text=True).stdout
        if code == "200":
            return
        time.sleep(0.2)
    sys.exit(f"layout: {url} did not answer 200 within {seconds} s")


def load(*command):
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL)


def build(target_dir, env):
    log(f"cargo build --release --locked (target dir {os.path.relpath(target_dir, ROOT)}, "
        f"{' '.join(f'{k}={v}' for k, v in env.items())})")
    subprocess.run(["nice", "-n", NICE_BUILD, "cargo", "build", "--release", "--locked", "--quiet"], cwd=ROOT,
                   check=True, env={**os.environ, **env, "CARGO_TARGET_DIR": target_dir})
    return os.path.join(target_dir, "release", "mintproxy")


def workloads(work, scale):
    """(name, mintproxy's arguments, its URL, the requests made once it answers, environment)."""
    token = os.path.join(work, "token")
    with open(token, "w") as file:
        file.write("layout-token-0123456789abcdef\n")
    os.chmod(token, 0o600)
    upload = os.path.join(work, "upload")
    with open(upload, "wb") as file:
        file.write(os.urandom(1 << 20))
    serve = ["serve", "--listen", f"127.0.0.1:{PROXY}", "--token-file", token]
    tls_listener = ["--tls-cert", f"{work}/tls/server.pem", "--tls-key", f"{work}/tls/server.key"]
    proxy, tls_proxy, demo = f"http://127.0.0.1:{PROXY}/", f"https://127.0.0.1:{PROXY}/", f"http://127.0.0.1:{DEMO}/"
    plain = ["--upstream", f"http://127.0.0.1:{PLAIN}"]
    https = ["--upstream", f"https://localhost:{TLS}", "--upstream-ca", f"{work}/tls/ca.pem"]
    default_log, quiet_log = {"RUST_LOG": "info"}, {"RUST_LOG": "warn"}

    def http1(requests):
        return lambda url: load("h2load", "--h1", "-n", str(requests * scale), "-c", "4", url)

    def h2c(url):
        load("h2load", "-n", str(1000 * scale), "-c", "4", "-m", "4", url)

    def h2c_and_upload(url):
        h2c(url)
        load("curl", "-sf", "-o", "/dev/null", "--data-binary", f"@{upload}", url)
        load("curl", "-sf", "-o", "/dev/null", "--http2-prior-knowledge", "--data-binary", f"@{upload}", url)

    def both(url):
        http1(500)(url)
        h2c_and_upload(url)

    def http1_and_h2c(url):
        http1(500)(url)
        h2c(url)

    return [
        ("core", [*serve, "--threads", "1", *plain], proxy, http1(2000), default_log),
        ("quiet", [*serve, "--threads", "1", *plain], proxy, http1(2000), quiet_log),
        ("threads", [*serve, "--threads", "2", *plain], proxy, http1(2000), default_log),
        ("h2c", [*serve, "--threads", "1", *plain], proxy, h2c_and_upload, default_log),
        ("https", [*serve, "--threads", "1", *https], proxy, both, quiet_log),
        ("h2-upstream", [*serve, "--threads", "1", "--upstream", f"https://localhost:{H2_TLS}", "--upstream-ca",
                         f"{work}/tls/ca.pem"], proxy, http1_and_h2c, quiet_log),
        ("h2c-upstream", [*serve, "--threads", "1", "--upstream", f"http://127.0.0.1:{H2C}", "--upstream-http2"],
         proxy, http1_and_h2c, quiet_log),
        ("tls-listener", [*serve, "--threads", "1", *plain, *tls_listener], tls_proxy, http1_and_h2c, quiet_log),
        ("demo", ["demo", "--listen", f"127.0.0.1:{DEMO}"], demo, http1(200), default_log),
    ]


def run(work, command, name, args, url, requests, env, dump_start_up=False):
    """Starts `command args`, makes the requests once it answers, stops it with SIGTERM."""
    log(f"{name}: {' '.join(args)}")
    with open(os.path.join(work, f"{name}.err"), "w") as err:
        proc = subprocess.Popen([*command, *args], stdout=subprocess.DEVNULL, stderr=err,
                                env={**os.environ, **env})
    wait_answer(url)
    if dump_start_up:
        subprocess.run(["callgrind_control", "-d", "start-up", str(proc.pid)], check=True, stdout=subprocess.DEVNULL)
    requests(url)
    proc.send_signal(signal.SIGTERM)
    if proc.wait(timeout=120) != 0:
        sys.exit(f"layout: {name} exited with {proc.returncode}; see {work}/{name}.err")


def llvm_profdata():
    """rustup's llvm-profdata for the rustc that builds: the profile's format is its LLVM's."""
    sysroot = subprocess.run(["rustc", "--print", "sysroot"], check=True, capture_output=True, text=True).stdout
    host = re.search(r"^host: (\S+)$", subprocess.run(["rustc", "-vV"], check=True, capture_output=True,
                                                      text=True).stdout, re.M).group(1)
    tool = os.path.join(sysroot.strip(), "lib", "rustlib", host, "bin", "llvm-profdata")
    if not os.access(tool, os.X_OK):
        sys.exit(f"layout: needs {tool}: `rustup component add llvm-tools`")
    return tool


def write_profile(work):
    """Step 1: link/mintproxy.profdata from the instrumented build's runs."""
    merge = llvm_profdata()
    raw = os.path.join(work, "profraw")
    # the build scripts' own counts go to the target dir; a fixed path keeps rebuilds incremental
    binary = build(GENERATE_DIR, {"RUSTFLAGS": f"-Cprofile-generate={GENERATE_DIR}/build-profraw"})
    for name, args, url, requests, env in workloads(work, NATIVE_SCALE):
        run(work, [binary], name, args, url, requests,
            {**env, "LLVM_PROFILE_FILE": os.path.join(raw, f"{name}-%p-%m.profraw")})
    subprocess.run([merge, "merge", "-o", PROFILE, *sorted(glob.glob(os.path.join(raw, "*.profraw")))], check=True)
    with open(PROFILE, "rb") as file:
        digest = hashlib.sha256(file.read()).hexdigest()[:16]
    # the profile's digest among cargo's flags, so that every crate is rebuilt with the new profile
    with open(CARGO_CONFIG) as file:
        config, found = re.subn(r'mintproxy_profile=\\"[0-9a-f]*\\"', f'mintproxy_profile=\\\\"{digest}\\\\"',
                                file.read())
    if found != 1:
        sys.exit(f"layout: {CARGO_CONFIG} has no mintproxy_profile flag to update")
    with open(CARGO_CONFIG, "w") as file:
        file.write(config)
    log(f"wrote {os.path.relpath(PROFILE, ROOT)}, {os.path.getsize(PROFILE)} bytes, SHA-256 {digest}...")


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


def write_layout(work, commit):
    """Step 2: link/hot-text.ld from callgrind runs of the release build with its symbols."""
    binary = build(SYMBOLS_DIR, {"MINTPROXY_KEEP_SYMBOLS": "1"})
    sizes = text_symbols(binary)
    # per workload: the callgrind file at exit; core's also the one dumped after start-up
    profiles = {}
    for name, args, url, requests, env in workloads(work, 1):
        out = os.path.join(work, f"cg.{name}")
        valgrind = ["valgrind", "--tool=callgrind", "--demangle=no", "--compress-strings=no", "--compress-pos=no",
                    "--dump-line=no", f"--callgrind-out-file={out}"]
        run(work, [*valgrind, binary], name, args, url, requests, env, dump_start_up=True)
        profiles[name] = (out + ".1", out)
    core_start_up, core_requests = profiles.pop("core")
    phases = [self_costs(core_requests), self_costs(core_start_up), collections.Counter(), collections.Counter()]
    for path in profiles.pop("threads"):
        phases[2].update(self_costs(path))
    for paths in profiles.values():
        for path in paths:
            phases[3].update(self_costs(path))

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
              "the other workloads (RUST_LOG=warn, h2c, uploads, HTTPS and HTTP/2 upstreams, TLS listener, demo's "
              "minting)")
    with open(SCRIPT, "w") as script:
        script.write(f"/* Generated by bench/layout.py at {commit}: do not edit. The functions that start-up\n"
                     "   and the request path run, side by side ahead of the rest of the code (build.rs). */\n"
                     "SECTIONS\n{\n  .text.hot : {\n")
        for title, group in zip(titles, groups):
            script.write(f"    /* {len(group)} functions, {sum(sizes[n] for n in group)} bytes: {title} */\n")
            for name in group:
                # with the profile, LLVM names a function's section .text.hot.<name> or .text.unlikely.<name>
                script.write(f"    *(.text.{name}* .text.hot.{name}* .text.unlikely.{name}*)\n")
        script.write("  }\n}\nINSERT BEFORE .text;\n")
    for title, group in zip(titles, groups):
        log(f"{len(group)} functions, {sum(sizes[n] for n in group)} bytes: {title}")
    log(f"wrote {os.path.relpath(SCRIPT, ROOT)}")


def main():
    nginx = shutil.which("nginx") or ("/usr/sbin/nginx" if os.access("/usr/sbin/nginx", os.X_OK) else None)
    for tool in ("cargo", "rustc", "valgrind", "callgrind_control", "h2load", "curl", "openssl", "nm"):
        if shutil.which(tool) is None:
            sys.exit(f"layout: needs {tool}")
    if nginx is None:
        sys.exit("layout: needs nginx")
    llvm_profdata()
    commit = subprocess.run(["git", "-C", ROOT, "rev-parse", "--short=12", "HEAD"], capture_output=True,
                            text=True).stdout.strip()
    work = tempfile.mkdtemp(prefix="mintproxy-layout.")
    backends = []
    try:
        subprocess.run(["bash", os.path.join(ROOT, "bench", "tls_certs.sh"), f"{work}/tls"], check=True,
                       stdout=subprocess.DEVNULL)
        backends.append(subprocess.Popen([sys.executable, "-c", BACKEND, str(PLAIN)]))
        backends.append(subprocess.Popen([sys.executable, "-c", BACKEND, str(TLS), f"{work}/tls/server.pem",
                                          f"{work}/tls/server.key"]))
        os.mkdir(f"{work}/nginx-body")
        with open(f"{work}/nginx.conf", "w") as conf:
            conf.write(NGINX.format(work=work, h2_tls=H2_TLS, h2c=H2C))
        backends.append(subprocess.Popen([nginx, "-c", f"{work}/nginx.conf"], stderr=subprocess.DEVNULL))
        for port in (PLAIN, TLS, H2_TLS, H2C):
            wait_port(port)
        write_profile(work)
        write_layout(work, commit)
    finally:
        for backend in backends:
            backend.kill()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
