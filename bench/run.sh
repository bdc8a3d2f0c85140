#!/usr/bin/env bash
# mintproxy vs nginx, HAProxy and Caddy as an authenticating reverse proxy, each on one core.
#
# Run by hand from anywhere (not part of CI):   bash bench/run.sh
#
# Layout (needs at least 2 cores):
#   core 0: the proxy under test, one worker/thread each: nginx (worker_processes 1), HAProxy
#           (nbthread 1), Caddy (GOMAXPROCS=1) or mintproxy (one tokio worker)
#   core 1: the backend (nginx, `return 200 "ok\n"`) and the load generator (wrk -t1, h2load -t1)
# Every proxy injects the same static `Authorization: Bearer <token>`; mintproxy reads it from a
# token file, so only forwarding is measured. Everything listens on 127.0.0.1 only. Every load
# run is bounded in time.
#
# Sections: HTTP/1.1 keep-alive at saturation (wrk), HTTP/1.1 at a fixed rate (h2load --h1
# --rps: CPU per request, user and system, at the same offered load below every proxy's
# saturation), HTTP/2 over h2c with prior knowledge at saturation (h2load; each proxy speaks
# HTTP/1.1 to the backend), memory (idle RSS, RSS with IDLE_CONNS idle keep-alive connections,
# peak RSS while UPLOAD_BYTES stream through mintproxy), and with HTTPS=1 (the default) the
# HTTPS upstream: the same backend also listens with TLS, a certificate for `localhost` signed by a
# CA made at the start of the run (bench/tls_certs.sh), and nginx, HAProxy and mintproxy proxy to
# it, each verifying that certificate against the CA and keeping its upstream connections alive;
# HTTP/1.1 at saturation (wrk) and at the fixed rate (no Caddy). Before the rounds, each of the
# three is shown to refuse a certificate for `localhost` signed by another CA.
#
# Knobs (environment): DURATION=10s WARMUP=5s CONNS=64 ROUNDS=2 H2=1 (0 skips HTTP/2)
#   H2_STREAMS=10 (h2load -m) RATE=30000 (requests/s in total, spread over the CONNS
#   connections, for the fixed-rate section; 0 skips it) IDLE_CONNS=1000
#   UPLOAD_BYTES=268435456 BASE_PORT=18090 (uses BASE_PORT..BASE_PORT+4)
#   HTTPS=1 (0 skips the HTTPS upstream section; it uses BASE_PORT+5 and BASE_PORT+6)
#   RESULTS=bench/results.md KEEP=1 (keep the work dir)
#   REV=HEAD (build that commit from a git archive export instead of the working tree)
#   QUIET_WAIT=15 (wait up to this long for both cores to be idle before each measurement;
#     default 0 with SCHED=fifo)
#   CLEAN_MAX=15 (a run is clean when other load stayed at or under this % on each core)
#   NICE=-10 (as root; the nice level of every benchmark process, proxies and load generators alike)
#   SCHED=fifo (run every benchmark process SCHED_FIFO instead of niced; for a machine that
#     other work keeps busy; distorts p99, see bench/README.md)
#
# Writes the results tables to stdout and to $RESULTS (default bench/results.md).
set -euo pipefail

# the command as given, with the knobs that were set, for the results file
CMDLINE=""
for knob in DURATION WARMUP CONNS ROUNDS H2 H2_STREAMS RATE HTTPS IDLE_CONNS UPLOAD_BYTES BASE_PORT RESULTS KEEP REV QUIET_WAIT CLEAN_MAX NICE SCHED; do
    if [ -n "${!knob+x}" ]; then CMDLINE+="$knob=${!knob} "; fi
done
CMDLINE+="bash bench/run.sh"

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/.." && pwd)
DURATION=${DURATION:-10s}
WARMUP=${WARMUP:-5s}
CONNS=${CONNS:-64}
ROUNDS=${ROUNDS:-2}
H2=${H2:-1}
H2_STREAMS=${H2_STREAMS:-10}
RATE=${RATE:-30000} # fixed-rate section: requests/s offered in total; 0 skips the section
HTTPS=${HTTPS:-1} # 1: also measure with an HTTPS upstream (HTTP/1.1, saturation and fixed rate)
IDLE_CONNS=${IDLE_CONNS:-1000}
UPLOAD_BYTES=${UPLOAD_BYTES:-268435456}
BASE_PORT=${BASE_PORT:-18090}
RESULTS=${RESULTS:-$HERE/results.md}
KEEP=${KEEP:-0}
REV=${REV:-} # empty: build the working tree; a git revision (e.g. HEAD): build that commit
CLEAN_MAX=${CLEAN_MAX:-15} # a run is "clean" when CPU not ours stayed at or under this % per core
if [ "$(id -u)" -eq 0 ]; then NICE=${NICE:--10}; else NICE=${NICE:-0}; fi
SCHED=${SCHED:-nice} # nice, or fifo (root: chrt -f 10; see bench/README.md for its artefacts)
case "$SCHED" in
    nice) PRIO=(nice -n "$NICE") PRIO_DESC="nice $NICE" ;;
    fifo) PRIO=(chrt -f 10) PRIO_DESC="SCHED_FIFO priority 10 (chrt -f 10)" ;;
    *) echo "SCHED must be nice or fifo" >&2; exit 2 ;;
esac
# seconds to wait, before each measurement, for other load to settle (fifo preempts it anyway)
if [ "$SCHED" = fifo ]; then QUIET_WAIT=${QUIET_WAIT:-0}; else QUIET_WAIT=${QUIET_WAIT:-15}; fi

BACKEND_PORT=$BASE_PORT            # backend, HTTP/1.1
PROXY_PORT=$((BASE_PORT + 1))      # the proxy under test: HTTP/1.1 (and h2c for Caddy and mintproxy)
SINK_PORT=$((BASE_PORT + 2))       # upload sink
BACKEND_H2_PORT=$((BASE_PORT + 3)) # backend, h2c (for the direct HTTP/2 baseline)
PROXY_H2_PORT=$((BASE_PORT + 4))   # h2c listener of nginx and HAProxy (their h2c ports take only h2c)
BACKEND_TLS_PORT=$((BASE_PORT + 5))  # backend, HTTPS (HTTP/1.1 over TLS, the CA-signed certificate for localhost)
BACKEND_ROGUE_PORT=$((BASE_PORT + 6)) # backend, HTTPS with a certificate no proxy trusts (the verification check)
# A fake token: the backend only checks that the proxy sent exactly this.
TOKEN="bench-fake-token-0123456789abcdef0123456789abcdef"
AUTH="Bearer $TOKEN"

uptime_s() { awk '{print int($1)}' /proc/uptime; } # monotonic, unlike date
START_TIME=$(uptime_s)
log() { printf '[bench %3ss] %s\n' "$(($(uptime_s) - START_TIME))" "$*" >&2; }
die() { log "FAILED: $*"; exit 1; }
secs_of() { # a wrk/h2load duration (10s, 500ms, 2m, 1h, 10) -> whole seconds, rounded up
    awk -v v="$1" 'BEGIN {
        m = 1
        if (v ~ /ms$/) { sub(/ms$/, "", v); m = 0.001 }
        else if (v ~ /s$/) { sub(/s$/, "", v) }
        else if (v ~ /m$/) { sub(/m$/, "", v); m = 60 }
        else if (v ~ /h$/) { sub(/h$/, "", v); m = 3600 }
        s = v * m; printf "%d", (s == int(s)) ? s : int(s) + 1 }'
}
case "$H2" in 0 | 1) ;; *) die "H2 must be 0 or 1" ;; esac
case "$HTTPS" in 0 | 1) ;; *) die "HTTPS must be 0 or 1" ;; esac
case "$RATE" in '' | *[!0-9]*) die "RATE must be a whole number of requests per second (0 skips the section)" ;; esac
case "$CONNS" in '' | *[!0-9]* | 0) die "CONNS must be a positive whole number" ;; esac
# h2load's --rps is per connection: RATE/CONNS rounded (at least 1); the offered total is that
# times CONNS (30016 for RATE=30000 over 64 connections)
RATE_PER_CONN=$(((RATE + CONNS / 2) / CONNS))
[ "$RATE_PER_CONN" -ge 1 ] || RATE_PER_CONN=1
RATE_OFFERED=$((RATE_PER_CONN * CONNS))
[ "$RATE" -gt 0 ] || RATE_OFFERED=0
# wrk and h2load get killed if they run this long past their -d/-D (they stop on their own)
LOAD_LIMIT=$(($(secs_of "$WARMUP") + $(secs_of "$DURATION") + 30))

# ---------------------------------------------------------------- prerequisites
if [ "$(nproc --all)" -lt 2 ]; then die "needs at least 2 cores (proxy on core 0, backend and load generator on core 1)"; fi

need_pkgs=()
[ -x /usr/sbin/nginx ] || command -v nginx >/dev/null || need_pkgs+=(nginx)
[ -x /usr/sbin/haproxy ] || command -v haproxy >/dev/null || need_pkgs+=(haproxy)
command -v caddy >/dev/null || need_pkgs+=(caddy)
command -v wrk >/dev/null || need_pkgs+=(wrk)
command -v h2load >/dev/null || need_pkgs+=(nghttp2-client)
command -v taskset >/dev/null || need_pkgs+=(util-linux)
command -v timeout >/dev/null || need_pkgs+=(coreutils)
command -v curl >/dev/null || need_pkgs+=(curl)
command -v ss >/dev/null || need_pkgs+=(iproute2)
command -v python3 >/dev/null || need_pkgs+=(python3)
command -v pgrep >/dev/null || need_pkgs+=(procps)
[ "$HTTPS" = 0 ] || command -v openssl >/dev/null || need_pkgs+=(openssl)
if [ ${#need_pkgs[@]} -gt 0 ]; then
    SUDO=""
    [ "$(id -u)" -eq 0 ] || SUDO=sudo
    log "installing ${need_pkgs[*]} with apt-get"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${need_pkgs[@]}" >/dev/null
fi
NGINX=$(command -v nginx || echo /usr/sbin/nginx)
HAPROXY=$(command -v haproxy || echo /usr/sbin/haproxy)
CADDY=$(command -v caddy)

# IDLE_CONNS client connections, plus the proxy's upstream connections and its own files
NOFILE_WANT=$((2 * IDLE_CONNS + 1024))
if [ "$(ulimit -n)" != unlimited ] && [ "$(ulimit -n)" -lt "$NOFILE_WANT" ]; then
    ulimit -n "$NOFILE_WANT" 2>/dev/null || ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
fi
if [ "$(ulimit -n)" != unlimited ] && [ "$(ulimit -n)" -lt $((IDLE_CONNS + 256)) ]; then
    die "open files limit $(ulimit -n) (hard $(ulimit -Hn)) is too low for IDLE_CONNS=$IDLE_CONNS; raise it or lower IDLE_CONNS"
fi
PROXY_MAXCONN=$((IDLE_CONNS + 4096)) # nginx worker_connections, HAProxy maxconn

WORK=$(mktemp -d /tmp/mintproxy-bench.XXXXXX)
chmod 755 "$WORK" # nginx workers run as www-data and need to reach their temp dirs
printf '%s\n' "$TOKEN" >"$WORK/token"
chmod 600 "$WORK/token"
if [ "$HTTPS" = 1 ]; then
    # the CA, the backend's certificate for localhost signed by it, and a rogue one
    bash "$HERE/tls_certs.sh" "$WORK/tls" || die "could not make the certificates (bench/tls_certs.sh)"
fi

alive() { # pid: running (not gone, not a zombie waiting to be reaped)
    [ -r "/proc/$1/stat" ] && [ "$(sed 's/^.*) //' "/proc/$1/stat" 2>/dev/null | cut -d' ' -f1)" != Z ]
}
stop() { # stop one process we started, by pid: TERM, up to 10 s, then KILL
    local pid=$1 _
    kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 100); do
        alive "$pid" || break
        sleep 0.1
    done
    if alive "$pid"; then
        log "pid $pid did not stop within 10 s of SIGTERM; sending SIGKILL"
        kill -KILL "$pid" 2>/dev/null || true
    fi
    wait "$pid" 2>/dev/null || true
}

PIDS=()
cleanup() {
    local pid
    for pid in "${PIDS[@]}"; do
        if kill -0 "$pid" 2>/dev/null; then stop "$pid"; fi
    done
    if [ "$KEEP" = 1 ]; then log "work dir kept: $WORK"; else rm -rf "$WORK"; fi
}
trap cleanup EXIT

BUILD_START=$(uptime_s)
if [ -z "$REV" ]; then
    log "cargo build --release (the working tree at $ROOT)"
    (cd "$ROOT" && cargo build --release --quiet)
    BIN=$ROOT/target/release/mintproxy
else
    # A committed revision, exported with git archive and built in its own target dir
    # (target/bench-rev), so neither the working tree nor target/release is touched.
    REV_SHA=$(cd "$ROOT" && git rev-parse --verify "$REV^{commit}")
    SRC=$WORK/src # removed with the work dir, also when the build fails
    mkdir -p "$SRC"
    # tar -m: the files get the time of extraction, not the commit's. Cargo judges a crate fresh
    # when its sources are older than its last build in this target dir, so with the commit's
    # times a commit made before the last build would silently reuse that build's binary.
    (cd "$ROOT" && git archive "$REV_SHA" | tar -x -m -C "$SRC")
    log "cargo build --release (commit ${REV_SHA:0:12}, exported with git archive)"
    (cd "$SRC" && CARGO_TARGET_DIR=$ROOT/target/bench-rev cargo build --release --quiet)
    BIN=$ROOT/target/bench-rev/release/mintproxy
    rm -rf "$SRC"
fi
[ -x "$BIN" ] || die "no binary at $BIN"
BUILD_SECS=$(($(uptime_s) - BUILD_START))
# One tokio worker thread. Its affinity mask (taskset -c 0) already gives one; --threads says
# so explicitly where the binary has the flag.
MP_THREADS=()
MP_HELP=$("$BIN" serve --help 2>&1 || true)
if grep -q -- '--threads' <<<"$MP_HELP"; then MP_THREADS=(--threads 1); fi
# mintproxy's own default limit is 1024 connections; the idle-connection test may need more
MP_MAXCONN=()
if [ "$IDLE_CONNS" -gt 1000 ]; then MP_MAXCONN=(--max-connections "$((IDLE_CONNS + 64))"); fi

TLS_PORTS=()
[ "$HTTPS" = 0 ] || TLS_PORTS=("$BACKEND_TLS_PORT" "$BACKEND_ROGUE_PORT")
for port in "$BACKEND_PORT" "$PROXY_PORT" "$SINK_PORT" "$BACKEND_H2_PORT" "$PROXY_H2_PORT" ${TLS_PORTS[@]+"${TLS_PORTS[@]}"}; do
    if ss -Hltn "sport = :$port" | grep -q .; then die "port $port is taken; set BASE_PORT"; fi
done

wait_http() { # url [curl args...]: wait up to 10 s for a 200
    local url=$1 _
    shift
    for _ in $(seq 100); do
        if [ "$(curl -s -o /dev/null -w '%{http_code}' --max-time 2 "$@" "$url" || true)" = 200 ]; then return 0; fi
        sleep 0.1
    done
    die "$url did not answer 200 within 10 s"
}

# ---------------------------------------------------------------- nginx configs
nginx_common() { # dir
    cat <<EOC
worker_processes 1;
worker_rlimit_nofile $((2 * PROXY_MAXCONN));
daemon off;
user www-data;
pid $1/nginx.pid;
error_log $1/error.log warn;
events { worker_connections $PROXY_MAXCONN; }
EOC
}
nginx_temp_paths() { # dir
    cat <<EOC
    client_body_temp_path $1/tmp/body;
    proxy_temp_path $1/tmp/proxy;
    fastcgi_temp_path $1/tmp/fastcgi;
    uwsgi_temp_path $1/tmp/uwsgi;
    scgi_temp_path $1/tmp/scgi;
EOC
}

backend_tls_servers() { # with HTTPS=1: the backend's TLS listeners (nothing otherwise)
    [ "$HTTPS" = 1 ] || return 0
    cat <<EOC
    # HTTPS upstream: HTTP/1.1 over TLS (no http2 here, so ALPN can only pick http/1.1), the
    # certificate for localhost signed by the run's CA
    server {
        listen 127.0.0.1:$BACKEND_TLS_PORT ssl;
        ssl_certificate $WORK/tls/server.pem;
        ssl_certificate_key $WORK/tls/server.key;
        ssl_protocols TLSv1.2 TLSv1.3;
        default_type text/plain;
        # what a proxy negotiated, asked once per proxy through the proxy (bench/run.sh tls_info)
        location = /bench-tls-info { return 200 "\$ssl_protocol \$ssl_cipher\n"; }
        location / {
            if (\$http_authorization != "$AUTH") { return 401 "no bearer\n"; }
            return 200 "ok\n";
        }
    }
    # a certificate for localhost signed by a CA no proxy trusts: every proxy must refuse it
    server {
        listen 127.0.0.1:$BACKEND_ROGUE_PORT ssl;
        ssl_certificate $WORK/tls/rogue.pem;
        ssl_certificate_key $WORK/tls/rogue.key;
        default_type text/plain;
        location / { return 200 "ok\n"; }
    }
EOC
}

mkdir -p "$WORK/backend/tmp" "$WORK/nginx-proxy/tmp"
{
    nginx_common "$WORK/backend"
    cat <<EOC
http {
    access_log off;
$(nginx_temp_paths "$WORK/backend")
    # (also the limit of requests per HTTP/2 connection since nginx 1.19.7)
    keepalive_requests 1000000;
    keepalive_timeout 75s;
    server {
        listen 127.0.0.1:$BACKEND_PORT;
        # h2c with prior knowledge, for the direct HTTP/2 baseline only
        listen 127.0.0.1:$BACKEND_H2_PORT http2;
        default_type text/plain;
        # connection counters, read by the script (directly, never through a proxy) to count
        # the connections opened to the backend during each measurement
        location = /bench-backend-status { stub_status; }
        location / {
            # Proves the proxy added the header: anything else is a 401, which wrk counts.
            if (\$http_authorization != "$AUTH") { return 401 "no bearer\n"; }
            return 200 "ok\n";
        }
    }
$(backend_tls_servers)
}
EOC
} >"$WORK/backend/nginx.conf"

{
    nginx_common "$WORK/nginx-proxy"
    cat <<EOC
http {
    access_log off;
$(nginx_temp_paths "$WORK/nginx-proxy")
    keepalive_requests 1000000;
    keepalive_timeout 75s;
    upstream backend {
        server 127.0.0.1:$BACKEND_PORT;
        # idle upstream connections kept: enough for every stream h2load keeps in flight
        # (CONNS x H2_STREAMS), so that under steady load nginx does not close and reopen
        # them; HAProxy, Caddy and mintproxy are configured or default to keep that many too
        keepalive $((CONNS * H2_STREAMS + 64));
        keepalive_requests 1000000;
    }
    server {
        listen 127.0.0.1:$PROXY_PORT;
        # nginx's h2c port speaks only HTTP/2 (prior knowledge); to the backend it is HTTP/1.1
        listen 127.0.0.1:$PROXY_H2_PORT http2;
        location / {
            proxy_pass http://backend;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            # the same upstream request mintproxy builds: Host = upstream authority,
            # the bearer, X-Forwarded-*
            proxy_set_header Host 127.0.0.1:$BACKEND_PORT;
            proxy_set_header Authorization "$AUTH";
            proxy_set_header X-Forwarded-For \$proxy_add_x_forwarded_for;
            proxy_set_header X-Forwarded-Proto \$scheme;
            proxy_set_header X-Forwarded-Host \$http_host;
        }
    }
}
EOC
} >"$WORK/nginx-proxy/nginx.conf"

nginx_proxy_tls_conf() { # dir upstream-port: nginx proxying to the backend over verified TLS
    nginx_common "$1"
    cat <<EOC
http {
    access_log off;
$(nginx_temp_paths "$1")
    keepalive_requests 1000000;
    keepalive_timeout 75s;
    upstream backend_tls {
        server 127.0.0.1:$2;
        keepalive $((CONNS * H2_STREAMS + 64));
        keepalive_requests 1000000;
    }
    server {
        listen 127.0.0.1:$PROXY_PORT;
        location / {
            proxy_pass https://backend_tls;
            # verify the backend's certificate against the run's CA, for the name localhost
            proxy_ssl_verify on;
            proxy_ssl_trusted_certificate $WORK/tls/ca.pem;
            proxy_ssl_name localhost;
            proxy_ssl_server_name on;
            # nginx 1.22 offers only TLS 1.0 to 1.2 by default; the other proxies speak 1.3
            proxy_ssl_protocols TLSv1.2 TLSv1.3;
            proxy_ssl_session_reuse on;
            # keep the upstream connections alive, as for the plain upstream
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            # the same upstream request mintproxy builds for https://localhost:$2
            proxy_set_header Host localhost:$2;
            proxy_set_header Authorization "$AUTH";
            proxy_set_header X-Forwarded-For \$proxy_add_x_forwarded_for;
            proxy_set_header X-Forwarded-Proto \$scheme;
            proxy_set_header X-Forwarded-Host \$http_host;
        }
    }
}
EOC
}
if [ "$HTTPS" = 1 ]; then
    mkdir -p "$WORK/nginx-proxy-tls/tmp" "$WORK/nginx-proxy-rogue/tmp"
    nginx_proxy_tls_conf "$WORK/nginx-proxy-tls" "$BACKEND_TLS_PORT" >"$WORK/nginx-proxy-tls/nginx.conf"
    nginx_proxy_tls_conf "$WORK/nginx-proxy-rogue" "$BACKEND_ROGUE_PORT" >"$WORK/nginx-proxy-rogue/nginx.conf"
fi

"$NGINX" -t -q -p "$WORK/backend/" -e "$WORK/backend/error.log" -c "$WORK/backend/nginx.conf"
"$NGINX" -t -q -p "$WORK/nginx-proxy/" -e "$WORK/nginx-proxy/error.log" -c "$WORK/nginx-proxy/nginx.conf"
if [ "$HTTPS" = 1 ]; then
    for d in nginx-proxy-tls nginx-proxy-rogue; do
        "$NGINX" -t -q -p "$WORK/$d/" -e "$WORK/$d/error.log" -c "$WORK/$d/nginx.conf"
    done
fi

# ---------------------------------------------------------------- HAProxy config
mkdir -p "$WORK/haproxy"
cat >"$WORK/haproxy/haproxy.cfg" <<EOC
global
    nbthread 1
    maxconn $PROXY_MAXCONN
    # no log lines: no "log" directive anywhere

defaults
    mode http
    maxconn $PROXY_MAXCONN
    option http-keep-alive
    http-reuse always
    timeout connect 5s
    timeout client 75s
    timeout server 30s
    timeout http-request 10s
    timeout http-keep-alive 75s

frontend bench
    bind 127.0.0.1:$PROXY_PORT
    # h2c with prior knowledge; to the backend it is HTTP/1.1, as for the other proxies
    bind 127.0.0.1:$PROXY_H2_PORT proto h2
    # the same upstream request mintproxy builds: X-Forwarded-*, Host = upstream authority, the bearer
    option forwardfor
    http-request set-header X-Forwarded-Proto http
    http-request set-header X-Forwarded-Host %[req.hdr(host)]
    http-request set-header Host 127.0.0.1:$BACKEND_PORT
    http-request set-header Authorization "$AUTH"
    default_backend backend

backend backend
    server backend 127.0.0.1:$BACKEND_PORT
EOC
"$HAPROXY" -c -q -f "$WORK/haproxy/haproxy.cfg"
haproxy_tls_cfg() { # upstream-port: HAProxy proxying to the backend over verified TLS
    cat <<EOC
global
    nbthread 1
    maxconn $PROXY_MAXCONN

defaults
    mode http
    maxconn $PROXY_MAXCONN
    option http-keep-alive
    http-reuse always
    timeout connect 5s
    timeout client 75s
    timeout server 30s
    timeout http-request 10s
    timeout http-keep-alive 75s

frontend bench
    bind 127.0.0.1:$PROXY_PORT
    # the same upstream request mintproxy builds for https://localhost:$1
    option forwardfor
    http-request set-header X-Forwarded-Proto http
    http-request set-header X-Forwarded-Host %[req.hdr(host)]
    http-request set-header Host localhost:$1
    http-request set-header Authorization "$AUTH"
    default_backend backend

backend backend
    # TLS to the backend, its certificate verified against the run's CA and, with sni set and
    # no verifyhost, for the name sent as SNI (localhost); http-reuse always keeps the
    # connections alive and shared
    server backend 127.0.0.1:$1 ssl verify required ca-file $WORK/tls/ca.pem sni str(localhost)
EOC
}
if [ "$HTTPS" = 1 ]; then
    haproxy_tls_cfg "$BACKEND_TLS_PORT" >"$WORK/haproxy/haproxy-tls.cfg"
    haproxy_tls_cfg "$BACKEND_ROGUE_PORT" >"$WORK/haproxy/haproxy-rogue.cfg"
    "$HAPROXY" -c -q -f "$WORK/haproxy/haproxy-tls.cfg"
    "$HAPROXY" -c -q -f "$WORK/haproxy/haproxy-rogue.cfg"
fi

# ---------------------------------------------------------------- Caddy config
mkdir -p "$WORK/caddy/home" "$WORK/caddy/config" "$WORK/caddy/data"
# Caddy writes under HOME and the XDG dirs: all of them point into the work dir.
CADDY_ENV=(HOME="$WORK/caddy/home" XDG_CONFIG_HOME="$WORK/caddy/config" XDG_DATA_HOME="$WORK/caddy/data" GOMAXPROCS=1)
cat >"$WORK/caddy/Caddyfile" <<EOC
{
	admin off
	auto_https off
	storage file_system $WORK/caddy/data
	servers {
		# h2c with prior knowledge on the same port; to the backend it is HTTP/1.1
		protocols h1 h2c
	}
}

http://127.0.0.1:$PROXY_PORT {
	bind 127.0.0.1
	# no "log" directive: no access log
	# X-Forwarded-For, -Proto and -Host are Caddy's defaults
	reverse_proxy 127.0.0.1:$BACKEND_PORT {
		header_up Host 127.0.0.1:$BACKEND_PORT
		header_up Authorization "$AUTH"
		transport http {
			keepalive 75s
			keepalive_idle_conns $((CONNS * H2_STREAMS + 64))
			keepalive_idle_conns_per_host $((CONNS * H2_STREAMS + 64))
		}
	}
}
EOC
env "${CADDY_ENV[@]}" "$CADDY" validate --config "$WORK/caddy/Caddyfile" --adapter caddyfile >"$WORK/caddy/validate.log" 2>&1 \
    || { cat "$WORK/caddy/validate.log" >&2; die "caddy validate failed"; }

# ---------------------------------------------------------------- process helpers
CLK_TCK=$(getconf CLK_TCK)
cpu_ticks_split() { # pid...: "utime stime" summed over each pid and its children (nginx workers)
    local user=0 sys=0 pid p u s
    for pid in "$@"; do
        for p in "$pid" $(pgrep -P "$pid" || true); do
            # fields after the ")" of comm: state is $1, utime $12, stime $13
            read -r u s < <(sed 's/^.*) //' "/proc/$p/stat" | awk '{print $12, $13}')
            user=$((user + u)) sys=$((sys + s))
        done
    done
    echo "$user $sys"
}
cpu_ticks() { # pid...: utime+stime of each pid and of its children
    local user sys
    read -r user sys < <(cpu_ticks_split "$@")
    echo $((user + sys))
}
status_kb() { # pid field: e.g. VmRSS, VmHWM in kB, summed over the pid and its children
    local total=0 pid=$1 field=$2 p
    for p in "$pid" $(pgrep -P "$pid" || true); do
        total=$((total + $(awk -v f="$field:" '$1==f{print $2}' "/proc/$p/status")))
    done
    echo "$total"
}
threads_of() { awk '$1=="Threads:"{print $2}' "/proc/$1/status"; }
core_ticks() { # "busy total" ticks of cpu0 and cpu1 from /proc/stat
    awk '$1=="cpu0" || $1=="cpu1" {t=0; for (i=2; i<=9; i++) t+=$i; printf "%d %d ", t-$5-$6, t}' /proc/stat
}
busy_pct() { # before after core(0|1) -> percent busy between two core_ticks snapshots
    awk -v a="$1" -v b="$2" -v c="$3" 'BEGIN {
        split(a, x, " "); split(b, y, " "); i = 2 * c + 1
        printf "%.0f", 100 * (y[i] - x[i]) / (y[i+1] - x[i+1]) }'
}
wait_quiet() { # up to QUIET_WAIT s for both cores to be under 10 % busy over 2 s
    local waited=0 a b c0 c1
    while :; do
        a=$(core_ticks); sleep 2; b=$(core_ticks)
        c0=$(busy_pct "$a" "$b" 0); c1=$(busy_pct "$a" "$b" 1)
        if [ "$c0" -lt 10 ] && [ "$c1" -lt 10 ]; then return 0; fi
        if [ "$waited" -ge "$QUIET_WAIT" ]; then
            log "WARNING: the machine is busy (core 0 ${c0}%, core 1 ${c1}%) before measuring; numbers will be noisy"
            BUSY_WARNINGS=$((BUSY_WARNINGS + 1))
            return 0
        fi
        [ "$waited" -eq 0 ] && log "other load on the machine (core 0 ${c0}%, core 1 ${c1}%); waiting up to ${QUIET_WAIT}s"
        waited=$((waited + 2))
    done
}
BUSY_WARNINGS=0

start_backend() {
    "${PRIO[@]}" taskset -c 1 "$NGINX" -p "$WORK/backend/" -e "$WORK/backend/error.log" -c "$WORK/backend/nginx.conf" &
    BACKEND_PID=$!
    PIDS+=("$BACKEND_PID")
    wait_http "http://127.0.0.1:$BACKEND_PORT/" -H "Authorization: $AUTH"
}
start_nginx_proxy() { # [config dir (default: the plain upstream's) [no-wait]]
    local dir=${1:-$WORK/nginx-proxy}
    "${PRIO[@]}" taskset -c 0 "$NGINX" -p "$dir/" -e "$dir/error.log" -c "$dir/nginx.conf" &
    PROXY_PID=$!
    PIDS+=("$PROXY_PID")
    [ -n "${2:-}" ] || wait_http "http://127.0.0.1:$PROXY_PORT/"
}
start_haproxy() { # [config file (default: the plain upstream's) [no-wait]]
    local cfg=${1:-$WORK/haproxy/haproxy.cfg}
    # -db: stay in the foreground, one process (no master-worker)
    "${PRIO[@]}" taskset -c 0 "$HAPROXY" -db -f "$cfg" \
        >"$WORK/haproxy/out.log" 2>"$WORK/haproxy/err.log" &
    PROXY_PID=$!
    PIDS+=("$PROXY_PID")
    [ -n "${2:-}" ] || wait_http "http://127.0.0.1:$PROXY_PORT/"
}
start_caddy() {
    env "${CADDY_ENV[@]}" "${PRIO[@]}" taskset -c 0 "$CADDY" run --config "$WORK/caddy/Caddyfile" --adapter caddyfile \
        >"$WORK/caddy/out.log" 2>"$WORK/caddy/err.log" &
    PROXY_PID=$!
    PIDS+=("$PROXY_PID")
    wait_http "http://127.0.0.1:$PROXY_PORT/"
}
start_mintproxy() { # log-mode (warn|info) upstream-port-or-URL stderr-file [more serve args...]
    local mode=$1 upstream=$2 errfile=$3 logenv
    shift 3
    # a bare port is the plain backend on 127.0.0.1
    case "$upstream" in *://*) ;; *) upstream="http://127.0.0.1:$upstream" ;; esac
    # warn: RUST_LOG=warn. info: RUST_LOG unset, the default `info`, one access line per request
    if [ "$mode" = warn ]; then logenv=(RUST_LOG=warn); else logenv=(-u RUST_LOG); fi
    env "${logenv[@]}" "${PRIO[@]}" taskset -c 0 "$BIN" serve --listen "127.0.0.1:$PROXY_PORT" \
        --upstream "$upstream" --token-file "$WORK/token" ${MP_THREADS[@]+"${MP_THREADS[@]}"} "$@" \
        >"$WORK/mintproxy.out" 2>"$errfile" &
    PROXY_PID=$!
    PIDS+=("$PROXY_PID")
    [ -n "${MP_NO_WAIT:-}" ] || wait_http "http://127.0.0.1:$PROXY_PORT/"
}

to_ms() { # wrk duration (850.00us, 1.23ms, 1.02s, 2.00m) -> milliseconds
    awk -v v="$1" 'BEGIN {
        if (v ~ /us$/) { sub(/us$/, "", v); printf "%.3f", v / 1000 }
        else if (v ~ /ms$/) { sub(/ms$/, "", v); printf "%.3f", v }
        else if (v ~ /m$/) { sub(/m$/, "", v); printf "%.1f", v * 60000 }
        else if (v ~ /s$/) { sub(/s$/, "", v); printf "%.3f", v * 1000 }
        else printf "%s", v }'
}
h2_percentiles() { # h2load --log-file -> "p50 p99" in ms (nearest rank over every logged request)
    cut -f3 "$1" | sort -n | awk '
        { v[NR] = $1 }
        function rank(p,  i) { i = int(p * NR); if (i < p * NR) i++; if (i < 1) i = 1; return v[i] / 1000 }
        END { if (NR == 0) print "- -"; else printf "%.3f %.3f\n", rank(0.50), rank(0.99) }'
}

RUNS="$WORK/runs.tsv" # one line per HTTP/1.1 measurement, for the tables
RUNS_H2="$WORK/runs-h2.tsv" # the same for HTTP/2
RUNS_RATE="$WORK/runs-rate.tsv" # the same for HTTP/1.1 at a fixed rate
RUNS_TLS="$WORK/runs-tls.tsv" # HTTPS upstream: HTTP/1.1 at saturation
RUNS_TLS_RATE="$WORK/runs-tls-rate.tsv" # HTTPS upstream: HTTP/1.1 at a fixed rate
: >"$RUNS"
: >"$RUNS_H2"
: >"$RUNS_RATE"
: >"$RUNS_TLS"
: >"$RUNS_TLS_RATE"
UPSTREAM_TLS=0 # 1 while the HTTPS upstream section runs: bench_one records into the RUNS_TLS* files
RAW="$WORK/raw.txt"
: >"$RAW"

children_cpu() { # CPU seconds of this shell's reaped children so far (bash `times`, 2nd line)
    # `times` must run in this shell, not in a $(...) subshell: children's rusage is per process
    times >"$WORK/times.txt"
    awk 'NR==2 {
        n = split($0, f, " "); t = 0
        for (i = 1; i <= n; i++) { split(f[i], m, "m"); sub(/s$/, "", m[2]); t += m[1] * 60 + m[2] }
        printf "%.3f", t }' "$WORK/times.txt"
}
pct() { awk -v c="$1" -v d="$2" 'BEGIN{printf "%.0f", 100 * c / d}'; }
backend_accepts() { # connections the backend has accepted so far (this query's own included)
    curl -s --max-time 5 "http://127.0.0.1:$BACKEND_PORT/bench-backend-status" | awk 'NR==3 {print $1}'
}

load() { # tool(wrk|h2load|h1rate) duration outfile [args...] url: one bounded load run on core 1
    local tool=$1 dur=$2 outfile=$3
    shift 3
    local cmd=("${PRIO[@]}" taskset -c 1 timeout -k 5 "$LOAD_LIMIT")
    case "$tool" in
        wrk) cmd+=(wrk -t1 -c"$CONNS" -d"$dur" --latency "$@") ;;
        h2load) cmd+=(h2load -t1 -c"$CONNS" -m"$H2_STREAMS" -D "$dur" "$@") ;;
        # HTTP/1.1 (one request in flight per connection), RATE_PER_CONN requests/s on each
        h1rate) cmd+=(h2load --h1 -t1 -c"$CONNS" --rps="$RATE_PER_CONN" -D "$dur" "$@") ;;
        *) die "load: unknown tool $tool" ;;
    esac
    "${cmd[@]}" >"$outfile" 2>&1 || die "$tool failed (exit $?): $(tail -5 "$outfile")"
}

bench_one() { # tool(wrk|h2load|h1rate) name url proxy-pid-or-empty [load generator args...]
    local tool=$1 name=$2 url=$3 ppid=$4
    shift 4
    local out="$WORK/load.txt" h2log="$WORK/h2load.log" runs secs u0 u1 t0=0 t1=0 b0 b1 w0 w1 k0 k1 a0 a1 opened
    local tu0=0 tu1=0 ts0=0 ts1=0 user_us=- sys_us=- desc=$tool
    local rps reqs p50 p99 non2xx errs busy0 busy1 proxy_pct=0 cpu_us=- rss=- hwm=- thr=- lg_pct be_pct other0 other1 clean
    local extra=()
    case "$tool" in
        wrk) runs=$RUNS ;;
        h2load) runs=$RUNS_H2 extra=(--log-file="$h2log") ;;
        h1rate) runs=$RUNS_RATE extra=(--log-file="$h2log") desc="h2load --h1, $RATE_OFFERED req/s" ;;
    esac
    if [ "$UPSTREAM_TLS" = 1 ]; then
        case "$tool" in
            wrk) runs=$RUNS_TLS ;;
            h1rate) runs=$RUNS_TLS_RATE ;;
            *) die "bench_one: no $tool with the HTTPS upstream" ;;
        esac
    fi
    wait_quiet
    log "$name: warm-up $WARMUP ($desc)"
    load "$tool" "$WARMUP" "$WORK/warmup.txt" "$@" "$url"
    log "$name: measuring $DURATION ($desc)"
    u0=$(awk '{print $1}' /proc/uptime)
    [ -n "$ppid" ] && read -r tu0 ts0 < <(cpu_ticks_split "$ppid")
    b0=$(cpu_ticks "$BACKEND_PID")
    a0=$(backend_accepts)
    k0=$(core_ticks)
    children_cpu >"$WORK/w0"
    load "$tool" "$DURATION" "$out" ${extra[@]+"${extra[@]}"} "$@" "$url"
    children_cpu >"$WORK/w1"
    k1=$(core_ticks)
    a1=$(backend_accepts)
    b1=$(cpu_ticks "$BACKEND_PID")
    [ -n "$ppid" ] && read -r tu1 ts1 < <(cpu_ticks_split "$ppid")
    u1=$(awk '{print $1}' /proc/uptime)
    t0=$((tu0 + ts0)) t1=$((tu1 + ts1))
    secs=$(awk -v a="$u0" -v b="$u1" 'BEGIN{print b - a}') # the window the CPU times cover
    { echo "### $name, $desc"; cat "$out"; echo; } >>"$RAW"

    if [ "$tool" = wrk ]; then
        rps=$(awk '$1=="Requests/sec:"{printf "%.0f", $2}' "$out")
        reqs=$(awk '$2=="requests" && $3=="in"{print $1}' "$out")
        p50=$(to_ms "$(awk '$1=="50%"{print $2}' "$out")")
        p99=$(to_ms "$(awk '$1=="99%"{print $2}' "$out")")
        non2xx=$(awk -F: '/Non-2xx or 3xx responses/{gsub(/ /, "", $2); print $2}' "$out")
        errs=$(awk '/Socket errors/{sub(/.*Socket errors: /, ""); print}' "$out")
    else
        # h2load, also with --h1 --rps (there req/s is the rate achieved):
        # finished in 10.00s, 51234.50 req/s, 2.05MB/s
        # requests: 512345 total, 512985 started, 512345 done, 512345 succeeded, 0 failed, 0 errored, 0 timeout
        # status codes: 512345 2xx, 0 3xx, 0 4xx, 0 5xx
        rps=$(awk '$1=="finished" && $2=="in" {printf "%.0f", $4}' "$out")
        reqs=$(awk '$1=="requests:" {print $6}' "$out")
        read -r p50 p99 < <(h2_percentiles "$h2log")
        non2xx=$(awk '$1=="status" && $2=="codes:" {print $5 + $7 + $9}' "$out")
        errs=$(awk '$1=="requests:" && ($10 + $12 + $14) > 0 {print $10 " failed, " $12 " errored, " $14 " timeout"}' "$out")
        rm -f "$h2log"
    fi
    if [ -z "$rps" ] || [ -z "$reqs" ] || [ "$reqs" -eq 0 ]; then die "$name: no requests completed: $(tail -5 "$out")"; fi
    non2xx=${non2xx:-0}
    errs=${errs:-none}
    opened=$((a1 - a0 - 1)) # less the status query that read a1
    busy0=$(busy_pct "$k0" "$k1" 0)
    busy1=$(busy_pct "$k0" "$k1" 1)
    w0=$(cat "$WORK/w0") w1=$(cat "$WORK/w1")
    lg_pct=$(pct "$(awk -v a="$w0" -v b="$w1" 'BEGIN{print b - a}')" "$secs")
    be_pct=$(pct "$(awk -v a="$b0" -v b="$b1" -v hz="$CLK_TCK" 'BEGIN{print (b - a) / hz}')" "$secs")
    if [ -n "$ppid" ]; then
        local cpu
        cpu=$(awk -v a="$t0" -v b="$t1" -v hz="$CLK_TCK" 'BEGIN{printf "%.3f", (b - a) / hz}')
        cpu_us=$(awk -v c="$cpu" -v n="$reqs" 'BEGIN{printf "%.1f", c * 1e6 / n}')
        # the same split into user and system time (the kernel apportions a process's runtime
        # between the two by tick sampling: exact in sum, statistical in the split)
        user_us=$(awk -v a="$tu0" -v b="$tu1" -v hz="$CLK_TCK" -v n="$reqs" 'BEGIN{printf "%.1f", (b - a) / hz * 1e6 / n}')
        sys_us=$(awk -v a="$ts0" -v b="$ts1" -v hz="$CLK_TCK" -v n="$reqs" 'BEGIN{printf "%.1f", (b - a) / hz * 1e6 / n}')
        proxy_pct=$(pct "$cpu" "$secs")
        rss=$(awk -v k="$(status_kb "$ppid" VmRSS)" 'BEGIN{printf "%.1f", k / 1024}')
        hwm=$(awk -v k="$(status_kb "$ppid" VmHWM)" 'BEGIN{printf "%.1f", k / 1024}')
        thr=$(threads_of "$ppid")
    fi
    # CPU on each core that none of our processes accounts for: other work on the machine
    # (and interrupt time the kernel charges to no process)
    other0=$((busy0 - proxy_pct))
    other1=$((busy1 - lg_pct - be_pct))
    [ "$other0" -ge 0 ] || other0=0
    [ "$other1" -ge 0 ] || other1=0
    local other0_txt="$other0%"
    [ -n "$ppid" ] || other0=- other0_txt=- # backend direct: nothing of ours on core 0, its load is irrelevant
    if { [ "$other0" = - ] || [ "$other0" -le "$CLEAN_MAX" ]; } && [ "$other1" -le "$CLEAN_MAX" ]; then
        clean=yes
    else
        clean=no
    fi
    # columns: 1 name, 2 req/s, 3 p50, 4 p99, 5 non-2xx, 6 errors, 7 proxy CPU %, 8 proxy µs/req,
    # 9 load generator / backend CPU, 10 cores busy, 11 other load, 12 clean, 13 RSS / peak,
    # 14 threads, 15 target (name less the round), 16 backend connections opened,
    # 17 proxy user µs/req, 18 proxy system µs/req
    printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' \
        "$name" "$rps" "$p50" "$p99" "$non2xx" "$errs" "$([ -n "$ppid" ] && echo "$proxy_pct%" || echo -)" "$cpu_us" \
        "$lg_pct% / $be_pct%" "$busy0% / $busy1%" "$other0_txt / $other1%" "$clean" "$rss / $hwm" "$thr" "${name% (r*)}" "$opened" \
        "$user_us" "$sys_us" >>"$runs"
    log "$name: $rps req/s, p50 ${p50} ms, p99 ${p99} ms, non-2xx $non2xx, errors $errs, backend connections opened $opened, proxy CPU $proxy_pct%, µs/req $cpu_us (user $user_us, system $sys_us), cores busy $busy0% / $busy1%, other load $other0_txt / $other1% (clean: $clean)"
    [ "$non2xx" = 0 ] || log "WARNING: $name had $non2xx non-2xx responses"
    if [ "$tool" = h1rate ] && [ $((rps * 100)) -lt $((RATE_OFFERED * 98)) ]; then
        log "WARNING: $name achieved $rps req/s, more than 2 % short of the $RATE_OFFERED offered: its figures are not comparable"
    fi
}

# ---------------------------------------------------------------- throughput
start_backend
log "backend nginx on 127.0.0.1:$BACKEND_PORT (HTTP/1.1) and :$BACKEND_H2_PORT (h2c) (core 1), pid $BACKEND_PID"

MP_TLS_UPSTREAM="https://localhost:$BACKEND_TLS_PORT"
join_by() { # separator words...: the words joined by the separator
    local sep=$1 out="" w
    shift
    for w in "$@"; do out+="${out:+$sep}$w"; done
    printf '%s' "$out"
}
TLS_CHECKS=()
TLS_INFO=()
tls_info() { # label: once per label, the TLS version and cipher the proxy just started uses to the backend
    local label=$1 seen info
    for seen in ${TLS_INFO[@]+"${TLS_INFO[@]}"}; do [ "${seen%%:*}" != "$label" ] || return 0; done
    info=$(curl -s --max-time 5 "http://127.0.0.1:$PROXY_PORT/bench-tls-info" || true)
    TLS_INFO+=("$label: ${info:-?}")
}
refuses_rogue() { # label: the proxy just started (PROXY_PID) must answer 5xx, not 200, through the rogue upstream
    local label=$1 code=000 _
    for _ in $(seq 100); do # wait up to 10 s for it to listen
        code=$(curl -s -o /dev/null -w '%{http_code}' --max-time 5 "http://127.0.0.1:$PROXY_PORT/" || true)
        [ "$code" = 000 ] || break
        sleep 0.1
    done
    stop "$PROXY_PID"
    case "$code" in
        5??) TLS_CHECKS+=("$label HTTP $code") ;;
        *) die "$label answered HTTP $code through an upstream whose certificate is signed by an untrusted CA: it does not verify" ;;
    esac
}
if [ "$HTTPS" = 1 ]; then
    log "backend nginx also on 127.0.0.1:$BACKEND_TLS_PORT (HTTPS, CA-signed certificate for localhost) and :$BACKEND_ROGUE_PORT (HTTPS, untrusted CA)"
    # the certificate itself: curl checks the chain and the name
    [ "$(curl -s -o /dev/null -w '%{http_code}' --max-time 5 --cacert "$WORK/tls/ca.pem" -H "Authorization: $AUTH" \
        "https://localhost:$BACKEND_TLS_PORT/" || true)" = 200 ] || die "the HTTPS backend does not answer 200 to curl --cacert ca.pem"
    # every proxy must refuse the rogue certificate: proof that each one verifies the upstream
    start_nginx_proxy "$WORK/nginx-proxy-rogue" no-wait
    refuses_rogue "nginx"
    start_haproxy "$WORK/haproxy/haproxy-rogue.cfg" no-wait
    refuses_rogue "HAProxy"
    MP_NO_WAIT=1 start_mintproxy warn "https://localhost:$BACKEND_ROGUE_PORT" "$WORK/mintproxy-rogue.log" --upstream-ca "$WORK/tls/ca.pem"
    refuses_rogue "mintproxy"
    log "verification check, answers through an upstream with an untrusted certificate: $(join_by ', ' "${TLS_CHECKS[@]}")"
fi

H1_URL="http://127.0.0.1:$PROXY_PORT/"
for round in $(seq "$ROUNDS"); do
    # HTTP/1.1 keep-alive, wrk
    bench_one wrk "backend direct (r$round)" "http://127.0.0.1:$BACKEND_PORT/" "" -H "Authorization: $AUTH"

    start_nginx_proxy
    bench_one wrk "nginx proxy (r$round)" "$H1_URL" "$PROXY_PID"
    stop "$PROXY_PID"

    start_haproxy
    bench_one wrk "HAProxy proxy (r$round)" "$H1_URL" "$PROXY_PID"
    stop "$PROXY_PID"

    start_caddy
    bench_one wrk "Caddy proxy (r$round)" "$H1_URL" "$PROXY_PID"
    stop "$PROXY_PID"

    start_mintproxy warn "$BACKEND_PORT" "$WORK/mintproxy-warn.log"
    bench_one wrk "mintproxy RUST_LOG=warn (r$round)" "$H1_URL" "$PROXY_PID"
    stop "$PROXY_PID"

    start_mintproxy info "$BACKEND_PORT" "$WORK/mintproxy-info.log"
    bench_one wrk "mintproxy default log (r$round)" "$H1_URL" "$PROXY_PID"
    stop "$PROXY_PID"
    INFO_LINES=$(wc -l <"$WORK/mintproxy-info.log")
    INFO_BYTES=$(wc -c <"$WORK/mintproxy-info.log")
    INFO_SAMPLE=$(grep -m1 'mintproxy::access' "$WORK/mintproxy-info.log" | tail -c 300 || true)

    if [ "$RATE" -gt 0 ]; then
        # HTTP/1.1 at a fixed rate, h2load --h1 --rps: CPU per request at the same offered load.
        # No Caddy: at ~88 µs/req it saturates near 11k req/s, below any useful RATE.
        bench_one h1rate "backend direct (r$round)" "http://127.0.0.1:$BACKEND_PORT/" "" -H "Authorization: $AUTH"

        start_nginx_proxy
        bench_one h1rate "nginx proxy (r$round)" "$H1_URL" "$PROXY_PID"
        stop "$PROXY_PID"

        start_haproxy
        bench_one h1rate "HAProxy proxy (r$round)" "$H1_URL" "$PROXY_PID"
        stop "$PROXY_PID"

        start_mintproxy warn "$BACKEND_PORT" "$WORK/mintproxy-warn.log"
        bench_one h1rate "mintproxy RUST_LOG=warn (r$round)" "$H1_URL" "$PROXY_PID"
        stop "$PROXY_PID"
    fi

    if [ "$H2" = 1 ]; then
        # HTTP/2 over h2c with prior knowledge, h2load; every proxy speaks HTTP/1.1 to the backend
        bench_one h2load "backend direct (r$round)" "http://127.0.0.1:$BACKEND_H2_PORT/" "" -H "Authorization: $AUTH"

        start_nginx_proxy
        bench_one h2load "nginx proxy (r$round)" "http://127.0.0.1:$PROXY_H2_PORT/" "$PROXY_PID"
        stop "$PROXY_PID"

        start_haproxy
        bench_one h2load "HAProxy proxy (r$round)" "http://127.0.0.1:$PROXY_H2_PORT/" "$PROXY_PID"
        stop "$PROXY_PID"

        start_caddy
        bench_one h2load "Caddy proxy (r$round)" "$H1_URL" "$PROXY_PID"
        stop "$PROXY_PID"

        start_mintproxy warn "$BACKEND_PORT" "$WORK/mintproxy-warn.log"
        bench_one h2load "mintproxy RUST_LOG=warn (r$round)" "$H1_URL" "$PROXY_PID"
        stop "$PROXY_PID"
    fi

    if [ "$HTTPS" = 1 ]; then
        # HTTPS upstream: HTTP/1.1 from the client, HTTP/1.1 over verified TLS to the backend,
        # upstream connections kept alive. No Caddy, no backend direct (the client side is the
        # same plain HTTP/1.1 as above).
        UPSTREAM_TLS=1
        for tool in wrk h1rate; do
            [ "$tool" = wrk ] || [ "$RATE" -gt 0 ] || continue
            start_nginx_proxy "$WORK/nginx-proxy-tls"
            tls_info nginx
            bench_one "$tool" "nginx proxy, HTTPS upstream (r$round)" "$H1_URL" "$PROXY_PID"
            stop "$PROXY_PID"

            start_haproxy "$WORK/haproxy/haproxy-tls.cfg"
            tls_info HAProxy
            bench_one "$tool" "HAProxy proxy, HTTPS upstream (r$round)" "$H1_URL" "$PROXY_PID"
            stop "$PROXY_PID"

            start_mintproxy warn "$MP_TLS_UPSTREAM" "$WORK/mintproxy-warn.log" --upstream-ca "$WORK/tls/ca.pem"
            tls_info mintproxy
            bench_one "$tool" "mintproxy RUST_LOG=warn, HTTPS upstream (r$round)" "$H1_URL" "$PROXY_PID"
            stop "$PROXY_PID"
        done
        UPSTREAM_TLS=0
    fi
done

# ---------------------------------------------------------------- memory with idle keep-alive connections
mib() { awk -v k="$1" 'BEGIN{printf "%.1f", k / 1024}'; }
IDLE_ROWS=()
idle_mem() { # label pid port: RSS idle, with IDLE_CONNS idle keep-alive connections, after closing them
    local label=$1 pid=$2 port=$3 idle loaded after est opened ok codes err holder _
    local ready="$WORK/idle.ready" stopf="$WORK/idle.stop"
    sleep 1
    idle=$(status_kb "$pid" VmRSS)
    rm -f "$ready" "$stopf"
    log "memory: $label, opening $IDLE_CONNS keep-alive connections (one GET each, then idle)"
    # the holder gives up by itself after 120 s
    "${PRIO[@]}" taskset -c 1 python3 "$HERE/idle_conns.py" "$port" "$IDLE_CONNS" "$ready" "$stopf" 120 \
        >"$WORK/idle.out" 2>&1 &
    holder=$!
    PIDS+=("$holder")
    for _ in $(seq 900); do
        [ -e "$ready" ] || ! alive "$holder" || { sleep 0.1; continue; }
        break
    done
    [ -e "$ready" ] || { stop "$holder"; die "memory: $label: the connection holder did not get ready: $(tail -3 "$WORK/idle.out")"; }
    read -r opened ok codes err <"$ready"
    sleep 1 # let the proxy settle with every connection idle
    loaded=$(status_kb "$pid" VmRSS)
    est=$(ss -Htn state established "( sport = :$port )" | wc -l)
    touch "$stopf"
    for _ in $(seq 50); do alive "$holder" || break; sleep 0.1; done
    stop "$holder"
    sleep 1
    after=$(status_kb "$pid" VmRSS)
    [ "$ok" = "$IDLE_CONNS" ] || die "memory: $label: $ok of $IDLE_CONNS connections got a 2xx (status x count: $codes; $opened kept open; first error: $err)"
    IDLE_ROWS+=("| $label | $(mib "$idle") | $(mib "$loaded") | $(awk -v a="$idle" -v b="$loaded" -v n="$IDLE_CONNS" 'BEGIN{printf "%.1f", (b - a) / n}') | $est | $(mib "$after") |")
    log "memory: $label: idle $(mib "$idle") MiB, with $IDLE_CONNS idle connections $(mib "$loaded") MiB ($est established at the proxy), after closing them $(mib "$after") MiB"
}

wait_quiet
start_nginx_proxy
idle_mem "nginx (master + worker)" "$PROXY_PID" "$PROXY_PORT"
stop "$PROXY_PID"
start_haproxy
idle_mem "HAProxy" "$PROXY_PID" "$PROXY_PORT"
stop "$PROXY_PID"
start_caddy
idle_mem "Caddy" "$PROXY_PID" "$PROXY_PORT"
stop "$PROXY_PID"
start_mintproxy warn "$BACKEND_PORT" "$WORK/mintproxy-idle.log" ${MP_MAXCONN[@]+"${MP_MAXCONN[@]}"}
idle_mem "mintproxy (RUST_LOG=warn)" "$PROXY_PID" "$PROXY_PORT"
stop "$PROXY_PID"
stop "$BACKEND_PID"

# ---------------------------------------------------------------- memory during a large upload
wait_quiet
log "upload: sink (python3, reads and discards) on 127.0.0.1:$SINK_PORT (core 1)"
"${PRIO[@]}" taskset -c 1 python3 "$HERE/sink.py" "$SINK_PORT" "$AUTH" >"$WORK/sink.out" 2>"$WORK/sink.log" &
SINK_PID=$!
PIDS+=("$SINK_PID")
wait_http "http://127.0.0.1:$SINK_PORT/" -H "Authorization: $AUTH"

start_mintproxy warn "$SINK_PORT" "$WORK/mintproxy-upload.log"
MP=$PROXY_PID
curl -s -o /dev/null --max-time 10 -X POST --data-binary 'warm' "http://127.0.0.1:$PROXY_PORT/"
RSS_BEFORE=$(mib "$(status_kb "$MP" VmRSS)")
HWM_BEFORE=$(mib "$(status_kb "$MP" VmHWM)")
UPLOADS=()
upload() { # label curl-args...
    local label=$1 sampler result code sent secs body bytes chunked authok max_rss hwm
    shift
    (while kill -0 "$MP" 2>/dev/null; do awk '$1=="VmRSS:"{print $2}' "/proc/$MP/status"; sleep 0.02; done) \
        >"$WORK/rss-samples.txt" 2>/dev/null &
    sampler=$!
    PIDS+=("$sampler")
    log "upload: $label, $UPLOAD_BYTES bytes through mintproxy"
    result=$("$@" -sS -o "$WORK/upload-response.json" -w '%{http_code} %{size_upload} %{time_total}' \
        -X POST -H 'Expect:' -H 'Content-Type: application/octet-stream' --max-time 120 \
        "http://127.0.0.1:$PROXY_PORT/upload")
    stop "$sampler"
    read -r code sent secs <<<"$result"
    body=$(cat "$WORK/upload-response.json")
    bytes=$(python3 -c 'import json,sys; print(json.load(sys.stdin)["bytes"])' <<<"$body")
    chunked=$(python3 -c 'import json,sys; print(json.load(sys.stdin)["chunked"])' <<<"$body")
    authok=$(python3 -c 'import json,sys; print(json.load(sys.stdin)["authorization_ok"])' <<<"$body")
    max_rss=$(mib "$(sort -n "$WORK/rss-samples.txt" | tail -1)")
    hwm=$(mib "$(status_kb "$MP" VmHWM)")
    [ "$code" = 200 ] || die "upload ($label) got HTTP $code: $body"
    [ "$bytes" = "$UPLOAD_BYTES" ] || die "upload ($label): sink counted $bytes bytes, sent $UPLOAD_BYTES"
    [ "$authok" = True ] || die "upload ($label): sink did not see the bearer"
    local mibs
    mibs=$(awk -v b="$UPLOAD_BYTES" -v s="$secs" 'BEGIN{printf "%.0f", b / 1048576 / s}')
    # (curl counts chunk framing too, so a chunked upload sends a little more than the body)
    [ "$sent" -ge "$UPLOAD_BYTES" ] || die "upload ($label): curl sent only $sent bytes of $UPLOAD_BYTES"
    UPLOADS+=("| $label | $code | $bytes | $chunked | $(printf '%.2f' "$secs") s ($mibs MiB/s) | $max_rss | $hwm |")
    log "upload $label: HTTP $code, sink counted $bytes bytes (chunked=$chunked), ${secs}s, max sampled RSS $max_rss MiB, VmHWM $hwm MiB"
}

truncate -s "$UPLOAD_BYTES" "$WORK/upload.bin" # sparse: reads as zeros, takes no disk
upload "Content-Length (curl -T file)" curl -T "$WORK/upload.bin"
# shellcheck disable=SC2016 # $0 and $@ belong to the inner bash
upload "chunked (head -c N /dev/zero, piped to curl -T -)" \
    bash -c 'head -c "$0" /dev/zero | curl -T - "$@"' "$UPLOAD_BYTES"
rm -f "$WORK/upload.bin"
stop "$MP"
stop "$SINK_PID"


# ---------------------------------------------------------------- report
ELAPSED=$(($(uptime_s) - START_TIME))
CPU_MODEL=$(awk -F': ' '/^model name/{print $2; exit}' /proc/cpuinfo)
if [ -n "$REV" ]; then
    GIT_REV="commit ${REV_SHA:0:12}"
    GIT_DIRTY=""
else
    GIT_REV="working tree of $(cd "$ROOT" && git rev-parse --short HEAD 2>/dev/null || echo unknown)"
    GIT_DIRTY=""
    if (cd "$ROOT" && git status --porcelain --untracked-files=no 2>/dev/null | grep -q .); then
        GIT_DIRTY=" (with uncommitted changes)"
    fi
fi
MP_FLAGS="--token-file <file>${MP_THREADS[*]+ ${MP_THREADS[*]}}"

# awk: median of the numbers in a space-separated string ("-" when there are none)
AWK_MEDIAN='
function median(s,  v, n, i, j, x) {
    n = split(s, v, " ")
    if (n == 0) return "-"
    for (i = 2; i <= n; i++) {
        x = v[i] + 0
        for (j = i - 1; j >= 1 && v[j] + 0 > x; j--) v[j + 1] = v[j]
        v[j + 1] = x
    }
    return (n % 2) ? v[(n + 1) / 2] + 0 : (v[n / 2] + v[n / 2 + 1]) / 2
}
function ratio(a, b) { return (a != "-" && b != "-" && b > 0) ? sprintf("%.2f", a / b) : "-" }
'
best_table() { # runs.tsv: the best run and the median of each target, with req/s ratios to nginx and to direct
    echo "| target | req/s (best) | median req/s | vs nginx | median vs nginx | vs direct | p50 ms | p99 ms | proxy CPU | proxy CPU µs/req | clean | clean runs |"
    echo "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- | ---: |"
    awk -F'\t' "$AWK_MEDIAN"'
        { t = $15; if (!(t in seen)) { seen[t] = 1; order[++n] = t }; runs[t]++; allrps[t] = allrps[t] " " $2 }
        $12 == "yes" { nclean[t]++; cleanrps[t] = cleanrps[t] " " $2 }
        ($12 == "yes") && (!(t in best) || $2 > bestrps[t]) { best[t] = $0; bestrps[t] = $2 }
        !(t in any) || $2 > anyrps[t] { any[t] = $0; anyrps[t] = $2 }
        END {
            nginx = direct = nginx_med = "-"
            for (i = 1; i <= n; i++) {
                t = order[i]; line[t] = (t in best) ? best[t] : any[t]; split(line[t], f, "\t"); rps[t] = f[2]
                med[t] = (t in nclean) ? median(cleanrps[t]) : median(allrps[t])
                if (t ~ /^nginx proxy/) { nginx = rps[t]; nginx_med = med[t] }
                if (t ~ /^backend direct/) direct = rps[t]
            }
            for (i = 1; i <= n; i++) {
                t = order[i]; split(line[t], f, "\t")
                printf "| %s | %s | %.0f | %s | %s | %s | %s | %s | %s | %s | %s | %d of %d |\n", t, f[2], med[t], ratio(f[2], nginx),
                    ratio(med[t], nginx_med), ratio(f[2], direct), f[3], f[4], f[7], f[8], f[12], nclean[t], runs[t]
            }
        }' "$1"
}
rate_every_table() { # runs-rate.tsv: every fixed-rate run, with the achieved share of the offered rate
    echo "| run | achieved req/s | of offered | p50 ms | p99 ms | non-2xx | socket errors | backend connections opened | proxy CPU | proxy CPU µs/req | user µs/req | system µs/req | load generator / backend CPU | core 0 / 1 busy | other load core 0 / 1 | clean |"
    echo "| --- | ---: | ---: | ---: | ---: | ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |"
    awk -F'\t' -v offered="$RATE_OFFERED" '{
        share = sprintf("%.1f %%", 100 * $2 / offered); if ($2 * 100 < offered * 98) share = share " **short**"
        printf "| %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s |\n",
            $1, $2, share, $3, $4, $5, $6, $16, $7, $8, $17, $18, $9, $10, $11, $12 }' "$1"
}
rate_summary_table() { # runs-rate.tsv: medians per target over the clean runs that kept up with the rate
    echo "| target | runs used | achieved req/s | proxy CPU µs/req | user µs/req | system µs/req | µs/req vs nginx | p50 ms | p99 ms |"
    echo "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"
    awk -F'\t' -v offered="$RATE_OFFERED" "$AWK_MEDIAN"'
        function add(k) { rps[k] = rps[k] " " $2; p50[k] = p50[k] " " $3; p99[k] = p99[k] " " $4
            if ($8 != "-") { us[k] = us[k] " " $8; user[k] = user[k] " " $17; sys[k] = sys[k] " " $18 } }
        function med(s,  m) { m = median(s); return (m == "-") ? m : sprintf("%.1f", m) }
        { t = $15; if (!(t in seen)) { seen[t] = 1; order[++n] = t }; runs[t]++; add("all" SUBSEP t) }
        $12 == "yes" && $2 * 100 >= offered * 98 { used[t]++; add("ok" SUBSEP t) }
        END {
            nginx = "-"
            for (i = 1; i <= n; i++) {
                t = order[i]; k[t] = ((t in used) ? "ok" : "all") SUBSEP t
                if (t ~ /^nginx proxy/) nginx = median(us[k[t]])
            }
            for (i = 1; i <= n; i++) {
                t = order[i]; kk = k[t]
                u = (t in used) ? sprintf("%d of %d", used[t], runs[t]) : sprintf("all %d (none clean and at rate)", runs[t])
                printf "| %s | %s | %.0f | %s | %s | %s | %s | %s | %s |\n", t, u, median(rps[kk]), med(us[kk]), med(user[kk]),
                    med(sys[kk]), ratio(median(us[kk]), nginx), sprintf("%.3f", median(p50[kk])), sprintf("%.3f", median(p99[kk]))
            }
        }' "$1"
}
every_table() { # runs.tsv: every run
    echo "| run | req/s | p50 ms | p99 ms | non-2xx | socket errors | backend connections opened | proxy CPU | proxy CPU µs/req | load generator / backend CPU | core 0 / 1 busy | other load core 0 / 1 | clean | proxy RSS / peak MiB | threads |"
    echo "| --- | ---: | ---: | ---: | ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | --- | ---: | ---: |"
    awk -F'\t' '{ printf "|"; for (i = 1; i <= 6; i++) printf " %s |", $i; printf " %s |", $16
        for (i = 7; i <= 14; i++) printf " %s |", $i; printf "\n" }' "$1"
}
BEST_INTRO="Best run of each target (highest req/s among the clean runs, or among all when none is clean;
a run is clean when CPU time that none of the benchmark's processes accounts for stayed at or
under $CLEAN_MAX % on each core), and the median req/s over the same runs (with two runs, their
mean). Round-to-round noise on a shared VM is about ±10 %, so the median is the honest figure
and the best shows what the target can reach; p50, p99 and CPU are the best run's. \"vs nginx\"
and \"vs direct\" divide the best req/s by the best req/s of the nginx proxy and of the backend
reached directly; \"median vs nginx\" divides the medians:"

{
    echo "# mintproxy vs nginx, HAProxy and Caddy: results"
    echo
    echo "Produced by \`$CMDLINE\` on $(date -u '+%Y-%m-%d %H:%M UTC'), in ${ELAPSED} s (of which cargo build ${BUILD_SECS} s)."
    echo
    echo "- machine: $(nproc --all) cores, $CPU_MODEL, $(uname -sr), $(awk '/MemTotal/{printf "%.0f GiB", $2/1048576}' /proc/meminfo)"
    echo "- $("$NGINX" -v 2>&1), $("$HAPROXY" -v 2>&1 | head -1 | awk '{print "HAProxy " $3}'), Caddy $("$CADDY" version 2>&1 | awk '{print $1; exit}'), $(wrk -v 2>&1 | head -1 | awk '{print "wrk " $2}'), $(h2load --version 2>&1 | head -1), $("$BIN" --version) at $GIT_REV$GIT_DIRTY, $(rustc --version)"
    echo "- proxies on core 0, one worker/thread each: nginx \`worker_processes 1\`, HAProxy \`nbthread 1\`,"
    echo "  Caddy \`GOMAXPROCS=1\`, mintproxy \`$MP_FLAGS\` (one tokio worker); each sets the same"
    echo "  \`Authorization: Bearer <token>\`, \`Host\` (the backend's) and \`X-Forwarded-For/-Proto/-Host\`, keeps"
    echo "  connections alive on both sides and logs no requests (except mintproxy's \"default log\" row);"
    printf '%s\n' "  backend nginx (\`return 200 \"ok\\n\"\` if the bearer is there, else 401) and the load generator on core 1;"
    echo "  every benchmark process at $PRIO_DESC; measurements that began while other work was running: $BUSY_WARNINGS"
    if [ "$HTTPS" = 1 ]; then
        echo "- HTTPS upstream: the backend's TLS listener with a CA-signed certificate for localhost, every proxy verifying it; $(openssl version | awk '{print "OpenSSL " $2}') (nginx, HAProxy), rustls with aws-lc-rs (mintproxy)"
    fi
    echo
    echo "## HTTP/1.1 keep-alive"
    echo
    echo "Load: \`taskset -c 1 wrk -t1 -c$CONNS -d$DURATION --latency\` after a $WARMUP warm-up, $ROUNDS rounds."
    echo
    echo "$BEST_INTRO"
    echo
    best_table "$RUNS"
    echo
    echo "Every run (backend connections opened: during the measurement, from the backend's"
    echo "\`stub_status\`; $CONNS or so for direct; far below the request count when a proxy reuses its"
    echo "upstream connections):"
    echo
    every_table "$RUNS"
    echo
    echo "Default logging (RUST_LOG unset = info, stderr to a file): the last run wrote $INFO_LINES lines,"
    echo "$((INFO_BYTES / 1048576)) MiB. A line: \`$INFO_SAMPLE\`"
    echo
    if [ "$RATE" -gt 0 ]; then
        echo "## HTTP/1.1 at a fixed rate ($RATE_OFFERED req/s)"
        echo
        echo "Load: \`taskset -c 1 h2load --h1 -t1 -c$CONNS --rps=$RATE_PER_CONN -D $DURATION --log-file=<file>\` after a"
        echo "$WARMUP warm-up at the same rate, $ROUNDS rounds: $CONNS keep-alive connections, one request in flight on"
        echo "each, $RATE_PER_CONN requests/s on each, $RATE_OFFERED req/s offered in total (RATE=$RATE). p50 and p99 as for HTTP/2."
        echo
        echo "This measures the CPU each proxy spends per request when every proxy serves the same offered"
        echo "load, below every proxy's saturation, so that batching effects are equal: at saturation a busier"
        echo "proxy handles more requests per wakeup and its CPU per request drops with it, which makes the"
        echo "saturation figures move with noise. CPU µs/req is the proxy's utime + stime from \`/proc\` (nginx"
        echo "master and worker summed) over the measurement, divided by the requests done, split into user"
        echo "and system time; lower is better. Caddy is left out: it saturates near 11k req/s here, below"
        echo "this rate. A run whose achieved rate fell more than 2 % short of the offered rate (**short**"
        echo "below) did not keep up: its figures are not comparable, and it is left out of the medians."
        echo
        echo "Median of each target over its clean runs that kept up with the rate (with two runs, their"
        echo "mean); \"µs/req vs nginx\" divides the median CPU µs/req by nginx's:"
        echo
        rate_summary_table "$RUNS_RATE"
        echo
        SHORT_RUNS=$(awk -F'\t' -v o="$RATE_OFFERED" '$2 * 100 < o * 98 { printf "%s%s (%s req/s)", sep, $1, $2; sep = ", " }' "$RUNS_RATE")
        echo "Runs more than 2 % short of the offered rate: ${SHORT_RUNS:-none}."
        echo
        echo "Every run (backend connections opened as for HTTP/2: those of the requests in flight when the"
        echo "warm-up's h2load stopped are reopened by proxies that close them):"
        echo
        rate_every_table "$RUNS_RATE"
        echo
    fi
    if [ "$H2" = 1 ]; then
        echo "## HTTP/2 (h2c with prior knowledge)"
        echo
        echo "Load: \`taskset -c 1 h2load -t1 -c$CONNS -m$H2_STREAMS -D $DURATION --log-file=<file>\` after a $WARMUP"
        echo "warm-up, $ROUNDS rounds: $CONNS connections with up to $H2_STREAMS streams in flight on each. p50 and p99"
        echo "are nearest-rank percentiles of the per-request times in h2load's log file. Clients speak h2c to"
        echo "every target, but **every proxy speaks HTTP/1.1 to the backend**: nginx cannot proxy to an"
        echo "HTTP/2 upstream, and the others are kept the same so that the backend's work is the same."
        echo "\"backend direct\" is h2c all the way (nginx's \`listen ... http2\`). nginx and HAProxy take"
        echo "h2c on a port of its own (\`listen ... http2\`, \`bind ... proto h2\`); Caddy (\`protocols h1 h2c\`)"
        echo "and mintproxy take it on their HTTP/1.1 port."
        echo
        echo "$BEST_INTRO"
        echo
        best_table "$RUNS_H2"
        echo
        echo "Every run (socket errors: h2load's failed, errored and timed-out requests; backend"
        echo "connections opened as above: up to $((CONNS * H2_STREAMS)) are reopened at the start when a proxy closed the"
        echo "upstream connections of the requests still in flight when the warm-up's h2load stopped):"
        echo
        every_table "$RUNS_H2"
        echo
    fi
    if [ "$HTTPS" = 1 ]; then
        echo "## HTTPS upstream"
        echo
        echo "The same backend nginx also listens with TLS (HTTP/1.1 only, TLS 1.2 and 1.3) with a certificate"
        echo "for \`localhost\` (ECDSA P-256, subjectAltName DNS:localhost) signed by a CA made at the start of"
        echo "the run (\`bench/tls_certs.sh\`). Clients still speak plain HTTP/1.1 to the proxy; each proxy"
        echo "speaks HTTP/1.1 over TLS to the backend, verifies its certificate against that CA for the"
        echo "name localhost and keeps its upstream connections alive: nginx \`proxy_pass https://\` to an"
        echo "upstream block with \`keepalive\`, \`proxy_ssl_verify on\`, \`proxy_ssl_trusted_certificate ca.pem\`,"
        echo "\`proxy_ssl_name localhost\`, \`proxy_ssl_server_name on\`, \`proxy_ssl_protocols TLSv1.2 TLSv1.3\`,"
        echo "\`proxy_http_version 1.1\`; HAProxy \`server ... ssl verify required ca-file ca.pem sni str(localhost)\`"
        echo "with \`http-reuse always\`; mintproxy \`--upstream $MP_TLS_UPSTREAM --upstream-ca ca.pem\`. Each sends"
        echo "\`Host: localhost:$BACKEND_TLS_PORT\`. No Caddy, no \"backend direct\" row. What each negotiated with the backend"
        echo "(\`\$ssl_protocol \$ssl_cipher\` of a request through it): $(join_by '; ' ${TLS_INFO[@]+"${TLS_INFO[@]}"})."
        echo
        echo "Verification check before the rounds: each proxy, pointed at a backend port whose certificate"
        echo "for localhost is signed by another CA, answered: $(join_by ', ' "${TLS_CHECKS[@]}") (a 200 would have stopped the run)."
        echo
        echo "### HTTPS upstream: HTTP/1.1 keep-alive"
        echo
        echo "Load as for the plain upstream: \`taskset -c 1 wrk -t1 -c$CONNS -d$DURATION --latency\` after a $WARMUP warm-up."
        echo "Best run and median as above:"
        echo
        best_table "$RUNS_TLS"
        echo
        echo "Every run (backend connections opened: TLS connections the proxy opened to the backend during"
        echo "the measurement; near zero when it keeps them alive):"
        echo
        every_table "$RUNS_TLS"
        echo
        if [ "$RATE" -gt 0 ]; then
            echo "### HTTPS upstream: HTTP/1.1 at a fixed rate ($RATE_OFFERED req/s)"
            echo
            echo "Load and figures as for the plain upstream's fixed-rate section (\`h2load --h1 -t1 -c$CONNS --rps=$RATE_PER_CONN\`)."
            echo "Median of each target over its clean runs that kept up with the rate; \"µs/req vs nginx\" divides"
            echo "the median CPU µs/req by nginx's (with the HTTPS upstream):"
            echo
            rate_summary_table "$RUNS_TLS_RATE"
            echo
            SHORT_RUNS=$(awk -F'\t' -v o="$RATE_OFFERED" '$2 * 100 < o * 98 { printf "%s%s (%s req/s)", sep, $1, $2; sep = ", " }' "$RUNS_TLS_RATE")
            echo "Runs more than 2 % short of the offered rate: ${SHORT_RUNS:-none}."
            echo
            echo "Every run:"
            echo
            rate_every_table "$RUNS_TLS_RATE"
            echo
        fi
    fi
    echo "## Memory: $IDLE_CONNS idle keep-alive connections"
    echo
    echo "Each proxy freshly started (mintproxy with RUST_LOG=warn), then: VmRSS after its readiness check"
    echo "(one request); $IDLE_CONNS connections opened by \`bench/idle_conns.py\`, each sending one GET and"
    echo "reading the answer, then all kept open and idle for 1 s before VmRSS is read again; VmRSS 1 s"
    echo "after they are closed. nginx is master + worker. \"established\" counts the connections \`ss\`"
    echo "saw at the proxy's port when RSS was read."
    echo
    echo "| proxy | idle VmRSS MiB | VmRSS with $IDLE_CONNS idle connections MiB | KiB per connection | established | VmRSS after closing them MiB |"
    echo "| --- | ---: | ---: | ---: | ---: | ---: |"
    printf '%s\n' "${IDLE_ROWS[@]}"
    echo
    echo "## Memory: $UPLOAD_BYTES-byte upload through mintproxy (RUST_LOG=warn) to a sink that reads and discards"
    echo
    echo "Before the uploads (after one small request): VmRSS $RSS_BEFORE MiB, VmHWM $HWM_BEFORE MiB."
    echo
    echo "| upload | status | bytes counted by the sink | chunked | time | max sampled VmRSS MiB | VmHWM after MiB |"
    echo "| --- | ---: | ---: | --- | ---: | ---: | ---: |"
    printf '%s\n' "${UPLOADS[@]}"
    echo
    echo "<details><summary>raw wrk and h2load output</summary>"
    echo
    echo '```'
    cat "$RAW"
    echo '```'
    echo "</details>"
} >"$RESULTS"

cat "$RESULTS"
log "done in ${ELAPSED} s; results in $RESULTS"
