#!/usr/bin/env bash
# User-space instructions per proxied request, counted by callgrind, for mintproxy at a given
# commit and for nginx, each in front of the same backend over a plain and over an HTTPS
# upstream. The method of bench/README.md's "How it was profiled", as a script:
#
#   bash bench/instructions.sh [REV]        # REV: a commit (default HEAD)
#
# - mintproxy at REV: exported with `git archive REV` to /tmp/mp-<sha>, built there with
#   `nice -n 10 cargo build --release --locked` and MINTPROXY_KEEP_SYMBOLS=1 (build.rs then does
#   not strip; callgrind needs the symbols): the release build's code and code layout
#   (link/hot-text.ld). A commit from before build.rs stripped gets CARGO_PROFILE_RELEASE_STRIP=false
#   instead. CARGO_TARGET_DIR=target/bench-rev-callgrind (its own dir: the setting would otherwise
#   rebuild target/bench-rev, which run.sh and h2_soak.sh use, back and forth). The working tree is
#   not touched. Run as `serve --threads 1 --token-file <file>` with RUST_LOG=warn (MP_RUST_LOG).
# - nginx: the proxy configuration of bench/run.sh with `master_process off` (so that callgrind
#   sees the one process that serves), `worker_processes 1`.
# - the backend: nginx, natively (not under valgrind), `return 200 "ok\n"` if the bearer is there
#   (else 401), listening plain and with TLS (a certificate for localhost signed by a CA made for
#   the run by bench/tls_certs.sh).
# - the HTTPS upstream: each proxy verifies the backend's certificate against that CA for the name
#   localhost and keeps its upstream connections alive (nginx: proxy_pass https:// to an upstream
#   block with keepalive, proxy_ssl_verify on, proxy_ssl_trusted_certificate, proxy_ssl_name
#   localhost, proxy_ssl_server_name on; mintproxy: --upstream https://localhost:PORT
#   --upstream-ca ca.pem).
# - the HTTP/2 upstream (UPSTREAMS=h2, mintproxy only: nginx proxies over HTTP/1.x): the same
#   backend on a third port with `ssl http2`, so that ALPN picks HTTP/2, as with ZITADEL's APIs;
#   mintproxy: --upstream https://localhost:PORT --upstream-ca ca.pem.
#
# For each proxy and upstream: the proxy starts under `valgrind --tool=callgrind
# --instr-atstart=no` on core 0 (taskset); WARMUP_REQUESTS requests with `h2load --h1 -n
# WARMUP_REQUESTS -c CLIENTS` fill its upstream connection pool (so that TLS handshakes, which
# keep-alive makes rare, are not counted); then `callgrind_control -i on`, `h2load --h1 -t1 -n
# REQUESTS -c CLIENTS` (core 1), `callgrind_control -i off`, a dump, and the proxy is stopped.
# Instructions per request = the instructions callgrind counted (Ir, every thread of the proxy,
# user space only: no kernel) / REQUESTS. The table also gives the upstream connections the
# backend accepted while counting (0 when the proxy kept its pool).
#
# Knobs (environment): REQUESTS=20000 CLIENTS=16 WARMUP_REQUESTS=2000 BASE_PORT=18290 (uses
#   BASE_PORT..BASE_PORT+3 on 127.0.0.1) TARGETS="mintproxy nginx" UPSTREAMS="plain https" (or h2)
#   OUT=<file> (also write the table there) KEEP=1 (keep the work dir, with the callgrind files
#   for callgrind_annotate) CG_TARGET_DIR=target/bench-rev-callgrind NICE_BUILD=10
#   MP_RUST_LOG=warn (mintproxy's RUST_LOG: `info` counts the access log too, its lines going to
#   a file) MP_ARGS="" (more `serve` flags, split at spaces, e.g. "--admin-listen 127.0.0.1:18299"
#   to count the metrics); bench/footprint.sh compares these
#   CACHE_SIM=1 (valgrind --cache-sim=yes: the table adds, per request, data writes (Dw),
#   first-level instruction-cache misses (I1mr) and data-cache misses (D1mr + D1mw), as
#   callgrind simulates them; slower, and the instruction count is the same)
#
# Instruction counts do not depend on what else the machine runs (within a few hundred per
# request), so this needs no quiet machine. Prints the table on stdout, progress on stderr.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/.." && pwd)
REV=${1:-HEAD}
REQUESTS=${REQUESTS:-20000}
CLIENTS=${CLIENTS:-16}
WARMUP_REQUESTS=${WARMUP_REQUESTS:-2000}
BASE_PORT=${BASE_PORT:-18290}
TARGETS=${TARGETS:-mintproxy nginx}
UPSTREAMS=${UPSTREAMS:-plain https}
OUT=${OUT:-}
KEEP=${KEEP:-0}
CG_TARGET_DIR=${CG_TARGET_DIR:-$ROOT/target/bench-rev-callgrind}
NICE_BUILD=${NICE_BUILD:-10}
MP_RUST_LOG=${MP_RUST_LOG:-warn}
CACHE_SIM=${CACHE_SIM:-0}
read -r -a MP_ARGS <<<"${MP_ARGS:-}"

BACKEND_PORT=$BASE_PORT
BACKEND_TLS_PORT=$((BASE_PORT + 1))
PROXY_PORT=$((BASE_PORT + 2))
BACKEND_H2_PORT=$((BASE_PORT + 3))
TOKEN="bench-fake-token-0123456789abcdef0123456789abcdef"
AUTH="Bearer $TOKEN"

uptime_s() { awk '{print int($1)}' /proc/uptime; }
START_TIME=$(uptime_s)
log() { printf '[instructions %3ss] %s\n' "$(($(uptime_s) - START_TIME))" "$*" >&2; }
die() { log "FAILED: $*"; exit 1; }
for n in "$REQUESTS" "$CLIENTS" "$WARMUP_REQUESTS"; do
    case "$n" in '' | *[!0-9]* | 0) die "REQUESTS, CLIENTS and WARMUP_REQUESTS must be positive whole numbers" ;; esac
done

# ---------------------------------------------------------------- prerequisites
need_pkgs=()
command -v valgrind >/dev/null || need_pkgs+=(valgrind)
command -v callgrind_control >/dev/null || need_pkgs+=(valgrind)
command -v h2load >/dev/null || need_pkgs+=(nghttp2-client)
[ -x /usr/sbin/nginx ] || command -v nginx >/dev/null || need_pkgs+=(nginx)
command -v openssl >/dev/null || need_pkgs+=(openssl)
command -v curl >/dev/null || need_pkgs+=(curl)
command -v taskset >/dev/null || need_pkgs+=(util-linux)
command -v ss >/dev/null || need_pkgs+=(iproute2)
if [ ${#need_pkgs[@]} -gt 0 ]; then
    SUDO=""
    [ "$(id -u)" -eq 0 ] || SUDO=sudo
    log "installing ${need_pkgs[*]} with apt-get"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${need_pkgs[@]}" >/dev/null
fi
NGINX=$(command -v nginx || echo /usr/sbin/nginx)
CORES=$(nproc --all)
PROXY_CORE=0
LOAD_CORE=$((CORES > 1 ? 1 : 0))

for port in "$BACKEND_PORT" "$BACKEND_TLS_PORT" "$PROXY_PORT" "$BACKEND_H2_PORT"; do
    if ss -Hltn "sport = :$port" | grep -q .; then die "port $port is taken; set BASE_PORT"; fi
done

WORK=$(mktemp -d /tmp/mintproxy-instructions.XXXXXX)
chmod 755 "$WORK" # the backend's nginx workers run as www-data
PIDS=()
alive() { [ -r "/proc/$1/stat" ] && [ "$(sed 's/^.*) //' "/proc/$1/stat" 2>/dev/null | cut -d' ' -f1)" != Z ]; }
stop() { # pid [seconds]: TERM, wait, then KILL (valgrind takes a while to write its output)
    local pid=$1 limit=${2:-10} _
    kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq $((limit * 10))); do
        alive "$pid" || break
        sleep 0.1
    done
    if alive "$pid"; then
        log "pid $pid did not stop within $limit s of SIGTERM; sending SIGKILL"
        kill -KILL "$pid" 2>/dev/null || true
    fi
    wait "$pid" 2>/dev/null || true
}
SRC=""
cleanup() {
    local pid
    for pid in ${PIDS[@]+"${PIDS[@]}"}; do
        if kill -0 "$pid" 2>/dev/null; then stop "$pid" 60; fi
    done
    [ -z "$SRC" ] || rm -rf "$SRC"
    if [ "$KEEP" = 1 ]; then log "work dir kept: $WORK"; else rm -rf "$WORK"; fi
}
trap cleanup EXIT

# ---------------------------------------------------------------- mintproxy at REV
case " $TARGETS " in
    *" mintproxy "*)
        REV_SHA=$(cd "$ROOT" && git rev-parse --verify "$REV^{commit}")
        SRC=/tmp/mp-$REV_SHA
        rm -rf "$SRC"
        mkdir -p "$SRC"
        # tar -m: the files get the time of extraction, not the commit's. Cargo judges a crate fresh
        # when its sources are older than its last build in this target dir, so with the commit's
        # times a commit made before the last build would silently reuse that build's binary.
        (cd "$ROOT" && git archive "$REV_SHA" | tar -x -m -C "$SRC")
        keep_symbols=(MINTPROXY_KEEP_SYMBOLS=1)
        grep -q '^strip = true' "$SRC/Cargo.toml" && keep_symbols=(CARGO_PROFILE_RELEASE_STRIP=false)
        log "nice -n $NICE_BUILD cargo build --release --locked (commit ${REV_SHA:0:12}, ${keep_symbols[*]}) in $SRC, target dir $CG_TARGET_DIR"
        (cd "$SRC" && env "${keep_symbols[@]}" CARGO_TARGET_DIR="$CG_TARGET_DIR" \
            nice -n "$NICE_BUILD" cargo build --release --locked --quiet)
        rm -rf "$SRC"
        SRC=""
        # a copy, so that another build into the same target dir cannot swap it during the run
        cp "$CG_TARGET_DIR/release/mintproxy" "$WORK/mintproxy"
        BIN=$WORK/mintproxy
        MP_THREADS=()
        if "$BIN" serve --help 2>&1 | grep -q -- '--threads'; then MP_THREADS=(--threads 1); fi
        ;;
esac

# ---------------------------------------------------------------- certificates and configs
bash "$HERE/tls_certs.sh" "$WORK/tls"
printf '%s\n' "$TOKEN" >"$WORK/token"
chmod 600 "$WORK/token"

nginx_head() { # dir single(0|1): the main context; single: one process, no master (for callgrind)
    if [ "$2" = 1 ]; then
        printf 'master_process off;\n'
    else
        printf 'user www-data;\n'
    fi
    cat <<EOC
worker_processes 1;
daemon off;
pid $1/nginx.pid;
error_log $1/error.log warn;
events { worker_connections 4096; }
http {
    access_log off;
    client_body_temp_path $1/tmp/body;
    proxy_temp_path $1/tmp/proxy;
    fastcgi_temp_path $1/tmp/fastcgi;
    uwsgi_temp_path $1/tmp/uwsgi;
    scgi_temp_path $1/tmp/scgi;
    keepalive_requests 1000000;
    keepalive_timeout 75s;
EOC
}
mkdir -p "$WORK/backend/tmp" "$WORK/nginx-plain/tmp" "$WORK/nginx-https/tmp"
{
    nginx_head "$WORK/backend" 0
    cat <<EOC
    server {
        listen 127.0.0.1:$BACKEND_PORT;
        listen 127.0.0.1:$BACKEND_TLS_PORT ssl;
        listen 127.0.0.1:$BACKEND_H2_PORT ssl http2;
        ssl_certificate $WORK/tls/server.pem;
        ssl_certificate_key $WORK/tls/server.key;
        ssl_protocols TLSv1.2 TLSv1.3;
        default_type text/plain;
        location = /bench-backend-status { stub_status; }
        location = /bench-tls-info { return 200 "\$server_protocol \$ssl_protocol \$ssl_cipher\n"; }
        location / {
            if (\$http_authorization != "$AUTH") { return 401 "no bearer\n"; }
            return 200 "ok\n";
        }
    }
}
EOC
} >"$WORK/backend/nginx.conf"
nginx_proxy_conf() { # dir plain|https
    local dir=$1 kind=$2 port=$BACKEND_PORT host=127.0.0.1:$BACKEND_PORT scheme=http tls=""
    if [ "$kind" = https ]; then
        port=$BACKEND_TLS_PORT host=localhost:$BACKEND_TLS_PORT scheme=https
        tls="
            proxy_ssl_verify on;
            proxy_ssl_trusted_certificate $WORK/tls/ca.pem;
            proxy_ssl_name localhost;
            proxy_ssl_server_name on;
            proxy_ssl_protocols TLSv1.2 TLSv1.3;
            proxy_ssl_session_reuse on;"
    fi
    nginx_head "$dir" 1
    cat <<EOC
    upstream backend {
        server 127.0.0.1:$port;
        keepalive 704;
        keepalive_requests 1000000;
    }
    server {
        listen 127.0.0.1:$PROXY_PORT;
        location / {
            proxy_pass $scheme://backend;$tls
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header Host $host;
            proxy_set_header Authorization "$AUTH";
            proxy_set_header X-Forwarded-For \$proxy_add_x_forwarded_for;
            proxy_set_header X-Forwarded-Proto \$scheme;
            proxy_set_header X-Forwarded-Host \$http_host;
        }
    }
}
EOC
}
nginx_proxy_conf "$WORK/nginx-plain" plain >"$WORK/nginx-plain/nginx.conf"
nginx_proxy_conf "$WORK/nginx-https" https >"$WORK/nginx-https/nginx.conf"
for d in backend nginx-plain nginx-https; do
    "$NGINX" -t -q -p "$WORK/$d/" -e "$WORK/$d/error.log" -c "$WORK/$d/nginx.conf"
done

wait_http() { # url seconds [curl args...]
    local url=$1 limit=$2 _
    shift 2
    for _ in $(seq $((limit * 10))); do
        if [ "$(curl -s -o /dev/null -w '%{http_code}' --max-time 5 "$@" "$url" || true)" = 200 ]; then return 0; fi
        sleep 0.1
    done
    die "$url did not answer 200 within $limit s"
}
backend_accepts() {
    curl -s --max-time 5 "http://127.0.0.1:$BACKEND_PORT/bench-backend-status" | awk 'NR==3 {print $1}'
}

taskset -c "$LOAD_CORE" "$NGINX" -p "$WORK/backend/" -e "$WORK/backend/error.log" -c "$WORK/backend/nginx.conf" &
BACKEND_PID=$!
PIDS+=("$BACKEND_PID")
wait_http "http://127.0.0.1:$BACKEND_PORT/" 10 -H "Authorization: $AUTH"
wait_http "https://localhost:$BACKEND_TLS_PORT/" 10 -H "Authorization: $AUTH" --cacert "$WORK/tls/ca.pem"
log "backend nginx on 127.0.0.1:$BACKEND_PORT (plain) and :$BACKEND_TLS_PORT (TLS, CA-signed certificate for localhost), core $LOAD_CORE"

# ---------------------------------------------------------------- measurements
ROWS=()
CACHE_ARGS=(--cache-sim=no)
CACHE_HEAD="" CACHE_RULE=""
if [ "$CACHE_SIM" = 1 ]; then
    CACHE_ARGS=(--cache-sim=yes)
    CACHE_HEAD=" data writes per request | I1 misses per request | D1 misses per request |"
    CACHE_RULE=" ---: | ---: | ---: |"
fi
measure() { # target(mintproxy|nginx) upstream(plain|https)
    local target=$1 kind=$2 pid out="$WORK/cg-$1-$2" url="http://127.0.0.1:$PROXY_PORT/" a0 a1 ok codes ir tls=-
    local cmd=()
    case "$target" in
        mintproxy)
            local up="http://127.0.0.1:$BACKEND_PORT" extra=()
            case "$kind" in
                https) up="https://localhost:$BACKEND_TLS_PORT" extra=(--upstream-ca "$WORK/tls/ca.pem") ;;
                h2) up="https://localhost:$BACKEND_H2_PORT" extra=(--upstream-ca "$WORK/tls/ca.pem") ;;
            esac
            cmd=("$BIN" serve --listen "127.0.0.1:$PROXY_PORT" --upstream "$up" --token-file "$WORK/token"
                ${MP_THREADS[@]+"${MP_THREADS[@]}"} ${extra[@]+"${extra[@]}"} ${MP_ARGS[@]+"${MP_ARGS[@]}"})
            ;;
        nginx)
            cmd=("$NGINX" -p "$WORK/nginx-$kind/" -e "$WORK/nginx-$kind/error.log" -c "$WORK/nginx-$kind/nginx.conf")
            ;;
        *) die "unknown target $target" ;;
    esac
    mkdir -p "$out"
    log "$target, $kind upstream: starting under callgrind (core $PROXY_CORE)"
    # (env before valgrind: valgrind follows no exec, so `valgrind env ...` would count nothing)
    env RUST_LOG="$MP_RUST_LOG" taskset -c "$PROXY_CORE" valgrind --tool=callgrind --instr-atstart=no "${CACHE_ARGS[@]}" \
        --callgrind-out-file="$out/callgrind.out.%p" "${cmd[@]}" >"$out/proxy.out" 2>"$out/proxy.err" &
    pid=$!
    PIDS+=("$pid")
    wait_http "$url" 120
    [ "$kind" = plain ] || tls=$(curl -s --max-time 10 "$url/bench-tls-info" || true)
    log "$target, $kind upstream: warm-up, h2load --h1 -n $WARMUP_REQUESTS -c $CLIENTS${tls:+ (to the backend: $tls)}"
    taskset -c "$LOAD_CORE" timeout -k 5 600 h2load --h1 -t1 -n "$WARMUP_REQUESTS" -c "$CLIENTS" "$url" >"$out/warmup.txt" 2>&1 \
        || die "$target $kind: warm-up h2load failed: $(tail -3 "$out/warmup.txt")"
    a0=$(backend_accepts)
    control() { # callgrind_control args...: it exits 0 even when it found no such process
        if ! callgrind_control "$@" "$pid" >"$out/control.txt" 2>&1 || grep -q '^Error' "$out/control.txt"; then
            die "$target $kind: callgrind_control $* $pid failed: $(cat "$out/control.txt")"
        fi
    }
    control -i on
    log "$target, $kind upstream: counting, h2load --h1 -t1 -n $REQUESTS -c $CLIENTS"
    taskset -c "$LOAD_CORE" timeout -k 5 1200 h2load --h1 -t1 -n "$REQUESTS" -c "$CLIENTS" "$url" >"$out/h2load.txt" 2>&1 \
        || die "$target $kind: h2load failed: $(tail -3 "$out/h2load.txt")"
    control -i off
    control -d
    a1=$(backend_accepts)
    stop "$pid" 60
    # requests: 20000 total, 20000 started, 20000 done, 20000 succeeded, 0 failed, 0 errored, 0 timeout
    # status codes: 20000 2xx, 0 3xx, 0 4xx, 0 5xx
    ok=$(awk '$1=="requests:" {print $8}' "$out/h2load.txt")
    codes=$(awk '$1=="status" && $2=="codes:" {print $3}' "$out/h2load.txt")
    if [ "$ok" != "$REQUESTS" ] || [ "$codes" != "$REQUESTS" ]; then
        die "$target $kind: $ok of $REQUESTS requests succeeded, $codes with a 2xx: $(grep -E '^(requests|status)' "$out/h2load.txt")"
    fi
    # the instructions counted while instrumentation was on, summed over the dumps (the explicit
    # one and the one at exit, which holds what ran after it: nothing, instrumentation being off)
    ir=$(cat "$out"/callgrind.out.* | awk '$1=="totals:" {s += $2} END {printf "%.0f", s}')
    [ "${ir:-0}" -gt 0 ] || die "$target $kind: callgrind counted no instructions (files: $(ls "$out"))"
    local cache=""
    if [ "$CACHE_SIM" = 1 ]; then
        # events: Ir Dr Dw I1mr D1mr D1mw ILmr DLmr DLmw, summed over the dumps
        cache=$(cat "$out"/callgrind.out.* | awk -v n="$REQUESTS" '$1=="events:" {for (i = 2; i <= NF; i++) col[$i] = i}
            $1=="totals:" {dw += $col["Dw"]; i1 += $col["I1mr"]; d1 += $col["D1mr"] + $col["D1mw"]}
            END {printf " %.0f | %.0f | %.0f |", dw / n, i1 / n, d1 / n}')
        log "$target, $kind upstream: per request, data writes | I1 misses | D1 misses:$cache"
    fi
    ROWS+=("| $target | $kind | $(awk -v i="$ir" -v n="$REQUESTS" 'BEGIN{printf "%.0f", i / n}') | $ir | $((a1 - a0 - 1)) | ${tls:--} |$cache")
    log "$target, $kind upstream: $ir instructions for $REQUESTS requests: $((ir / REQUESTS)) per request; upstream connections opened while counting: $((a1 - a0 - 1))"
}

for target in $TARGETS; do
    for kind in $UPSTREAMS; do
        if [ "$target:$kind" = nginx:h2 ]; then
            log "nginx, h2 upstream: skipped (nginx proxies to its upstreams over HTTP/1.x only)"
            continue
        fi
        measure "$target" "$kind"
    done
done

# ---------------------------------------------------------------- report
{
    echo "Instructions per proxied request (callgrind, user space), $(date -u '+%Y-%m-%d %H:%M UTC'):"
    case " $TARGETS " in *" mintproxy "*) echo "mintproxy at commit ${REV_SHA:0:12} ($("$BIN" --version)), RUST_LOG=$MP_RUST_LOG, --token-file${MP_THREADS[*]+ ${MP_THREADS[*]}}${MP_ARGS[*]+ ${MP_ARGS[*]}};" ;; esac
    echo "$("$NGINX" -v 2>&1), master_process off; $(valgrind --version); $(h2load --version 2>&1 | head -1);"
    echo "h2load --h1 -t1 -n $REQUESTS -c $CLIENTS counted, after $WARMUP_REQUESTS requests of warm-up; $(rustc --version 2>/dev/null || echo rustc ?)."
    echo
    echo "| target | upstream | instructions per request | instructions counted | upstream connections opened while counting | protocol and TLS to the backend |$CACHE_HEAD"
    echo "| --- | --- | ---: | ---: | ---: | --- |$CACHE_RULE"
    printf '%s\n' "${ROWS[@]}"
} >"$WORK/table.md"
cat "$WORK/table.md"
[ -z "$OUT" ] || cp "$WORK/table.md" "$OUT"
log "done in $(($(uptime_s) - START_TIME)) s"
