#!/usr/bin/env bash
# mintproxy's memory under long HTTP/2 load: does RSS settle?
#
# Run by hand from anywhere (not part of CI):   bash bench/h2_soak.sh [DURATION_SECONDS]
#
# Builds the release binary (nice -n 19 cargo build --release --locked), starts the backend of
# bench/run.sh (nginx, one worker, `return 200 "ok\n"` when the bearer is right, 401 otherwise)
# and mintproxy in front of it with a static token (--token-file, RUST_LOG=warn), then runs
#   h2load -c16 -m32 -D DURATION http://127.0.0.1:PORT/      (h2c with prior knowledge)
# and samples mintproxy's VmRSS (/proc/PID/status) every 10 s into a CSV (seconds,rss_kib).
# At the end it prints RSS at 10, 60, 90, 300 and 600 s, the maximum, the slope over the
# last 5 minutes (least squares over those samples, KiB per minute), RSS 10 s after the load
# stopped, and h2load's totals. Every process runs under nice -n 19 (a shared machine),
# listens on 127.0.0.1 only, and is stopped at the end; h2load is killed if it overruns its
# duration by 60 s.
#
# DURATION_SECONDS: default 600.
# Knobs (environment):
#   CONNS=16 STREAMS=32 (h2load -c, -m)   INTERVAL=10 (seconds between samples)
#   PROTO=h2 (h2c prior knowledge) or h1 (h2load --h1: the same load over HTTP/1.1, for
#     comparison; -m is then pipelining depth, so STREAMS defaults to 1 there)
#   THREADS= (mintproxy --threads; unset: its default, one per CPU)
#   BASE_PORT=18190 (uses BASE_PORT and BASE_PORT+1)
#   CSV=<path> (also copy the samples there; they are always printed at the end)
#   REV= (a commit, e.g. REV=HEAD: build it from git archive in target/bench-rev, as bench/run.sh
#     does, instead of the working tree)   KEEP=1 (keep the work dir)
# MIMALLOC_* variables (e.g. MIMALLOC_PURGE_DELAY=0) pass through to mintproxy.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/.." && pwd)
DURATION=${1:-600}
CONNS=${CONNS:-16}
PROTO=${PROTO:-h2}
if [ "$PROTO" = h1 ]; then STREAMS=${STREAMS:-1}; else STREAMS=${STREAMS:-32}; fi
INTERVAL=${INTERVAL:-10}
THREADS=${THREADS:-}
BASE_PORT=${BASE_PORT:-18190}
CSV=${CSV:-}
REV=${REV:-}
KEEP=${KEEP:-0}
BACKEND_PORT=$BASE_PORT
PROXY_PORT=$((BASE_PORT + 1))
TOKEN="bench-fake-token-0123456789abcdef0123456789abcdef"
AUTH="Bearer $TOKEN"
NICE=(nice -n 19)

uptime_s() { awk '{print int($1)}' /proc/uptime; } # monotonic, unlike date
START_TIME=$(uptime_s)
log() { printf '[soak %4ss] %s\n' "$(($(uptime_s) - START_TIME))" "$*" >&2; }
die() { log "FAILED: $*"; exit 1; }

for v in DURATION CONNS STREAMS INTERVAL; do
    case "${!v}" in '' | *[!0-9]* | 0) die "$v must be a positive whole number" ;; esac
done
case "$PROTO" in h1 | h2) ;; *) die "PROTO must be h1 or h2" ;; esac
for tool in nginx h2load curl ss; do
    command -v "$tool" >/dev/null || [ -x "/usr/sbin/$tool" ] || die "$tool is missing (apt-get install nginx nghttp2-client curl iproute2)"
done
NGINX=$(command -v nginx || echo /usr/sbin/nginx)
for port in "$BACKEND_PORT" "$PROXY_PORT"; do
    if ss -Hltn "sport = :$port" | grep -q .; then die "port $port is taken; set BASE_PORT"; fi
done

WORK=$(mktemp -d /tmp/mintproxy-h2soak.XXXXXX)
chmod 755 "$WORK" # nginx workers run as www-data (when started as root) and need their temp dirs
printf '%s\n' "$TOKEN" >"$WORK/token"
chmod 600 "$WORK/token"

alive() { # pid: running (not gone, not a zombie)
    [ -r "/proc/$1/stat" ] && [ "$(sed 's/^.*) //' "/proc/$1/stat" 2>/dev/null | cut -d' ' -f1)" != Z ]
}
stop() { # stop one process we started, by pid: TERM, up to 10 s, then KILL
    local pid=$1 _
    kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 100); do
        alive "$pid" || break
        sleep 0.1
    done
    if alive "$pid"; then kill -KILL "$pid" 2>/dev/null || true; fi
    wait "$pid" 2>/dev/null || true
}
PIDS=()
cleanup() {
    local pid
    for pid in ${PIDS[@]+"${PIDS[@]}"}; do
        if kill -0 "$pid" 2>/dev/null; then stop "$pid"; fi
    done
    if [ "$KEEP" = 1 ]; then log "work dir kept: $WORK"; else rm -rf "$WORK"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# ---------------------------------------------------------------- build
if [ -z "$REV" ]; then
    log "nice -n 19 cargo build --release --locked (the working tree at $ROOT)"
    (cd "$ROOT" && "${NICE[@]}" cargo build --release --locked --quiet)
    BIN=$ROOT/target/release/mintproxy
    GIT_REV=$(cd "$ROOT" && git rev-parse --short=7 HEAD 2>/dev/null || echo unknown)
    if [ -n "$(cd "$ROOT" && git status --porcelain --untracked-files=no -- src Cargo.toml Cargo.lock 2>/dev/null)" ]; then
        GIT_REV+=" + uncommitted changes to src"
    fi
else
    REV_SHA=$(cd "$ROOT" && git rev-parse --verify "$REV^{commit}")
    mkdir -p "$WORK/src"
    (cd "$ROOT" && git archive "$REV_SHA" | tar -x -m -C "$WORK/src")
    log "nice -n 19 cargo build --release --locked (commit ${REV_SHA:0:12}, exported with git archive)"
    (cd "$WORK/src" && CARGO_TARGET_DIR=$ROOT/target/bench-rev "${NICE[@]}" cargo build --release --locked --quiet)
    rm -rf "$WORK/src"
    BIN=$ROOT/target/bench-rev/release/mintproxy
    GIT_REV=${REV_SHA:0:7}
fi
[ -x "$BIN" ] || die "no binary at $BIN"

wait_http() { # url: wait up to 10 s for a 200
    local _
    for _ in $(seq 100); do
        if [ "$(curl -s -o /dev/null -w '%{http_code}' --max-time 2 "$1" || true)" = 200 ]; then return 0; fi
        sleep 0.1
    done
    die "$1 did not answer 200 within 10 s"
}

# ---------------------------------------------------------------- backend (as in bench/run.sh)
mkdir -p "$WORK/backend/tmp"
NGINX_USER=""
[ "$(id -u)" -ne 0 ] || NGINX_USER="user www-data;"
cat >"$WORK/backend/nginx.conf" <<EOC
worker_processes 1;
worker_rlimit_nofile 8192;
daemon off;
$NGINX_USER
pid $WORK/backend/nginx.pid;
error_log $WORK/backend/error.log warn;
events { worker_connections 4096; }
http {
    access_log off;
    client_body_temp_path $WORK/backend/tmp/body;
    proxy_temp_path $WORK/backend/tmp/proxy;
    fastcgi_temp_path $WORK/backend/tmp/fastcgi;
    uwsgi_temp_path $WORK/backend/tmp/uwsgi;
    scgi_temp_path $WORK/backend/tmp/scgi;
    # a 10-minute run at 50k req/s over a few hundred upstream connections stays far below this
    keepalive_requests 100000000;
    keepalive_timeout 75s;
    server {
        listen 127.0.0.1:$BACKEND_PORT;
        default_type text/plain;
        location / {
            # proves the proxy added the bearer: anything else is a 401, which h2load counts
            if (\$http_authorization != "$AUTH") { return 401 "no bearer\n"; }
            return 200 "ok\n";
        }
    }
}
EOC
"$NGINX" -t -q -p "$WORK/backend/" -e "$WORK/backend/error.log" -c "$WORK/backend/nginx.conf"
"${NICE[@]}" "$NGINX" -p "$WORK/backend/" -e "$WORK/backend/error.log" -c "$WORK/backend/nginx.conf" &
PIDS+=("$!")
if [ "$(curl -s -o /dev/null -w '%{http_code}' --retry 50 --retry-delay 0 --retry-all-errors --max-time 2 \
    -H "Authorization: $AUTH" "http://127.0.0.1:$BACKEND_PORT/" || true)" != 200 ]; then
    die "backend nginx did not answer 200: $(tail -3 "$WORK/backend/error.log")"
fi

# ---------------------------------------------------------------- mintproxy
MP_ARGS=(serve --listen "127.0.0.1:$PROXY_PORT" --upstream "http://127.0.0.1:$BACKEND_PORT" --token-file "$WORK/token")
[ -z "$THREADS" ] || MP_ARGS+=(--threads "$THREADS")
RUST_LOG=warn "${NICE[@]}" "$BIN" "${MP_ARGS[@]}" >"$WORK/mintproxy.out" 2>"$WORK/mintproxy.log" &
MP_PID=$!
PIDS+=("$MP_PID")
wait_http "http://127.0.0.1:$PROXY_PORT/"
if [ "$PROTO" = h2 ]; then
    [ "$(curl -s -o /dev/null -w '%{http_version} %{http_code}' --http2-prior-knowledge --max-time 2 "http://127.0.0.1:$PROXY_PORT/")" = "2 200" ] ||
        die "mintproxy did not answer h2c with prior knowledge"
fi
rss_kib() { awk '$1 == "VmRSS:" {print $2}' "/proc/$1/status" 2>/dev/null || echo 0; }
threads_of() { awk '$1 == "Threads:" {print $2}' "/proc/$1/status" 2>/dev/null || echo 0; }
log "mintproxy $GIT_REV pid $MP_PID on 127.0.0.1:$PROXY_PORT (threads: $(threads_of "$MP_PID")), backend nginx on 127.0.0.1:$BACKEND_PORT; RSS before load $(rss_kib "$MP_PID") KiB"

# ---------------------------------------------------------------- load and samples
H2LOAD=(h2load -c"$CONNS" -m"$STREAMS" -D "$DURATION")
[ "$PROTO" = h2 ] || H2LOAD+=(--h1)
H2LOAD+=("http://127.0.0.1:$PROXY_PORT/")
SAMPLES="$WORK/rss.csv"
echo "seconds,rss_kib" >"$SAMPLES"
echo "0,$(rss_kib "$MP_PID")" >>"$SAMPLES"
log "${H2LOAD[*]} for $DURATION s, RSS every $INTERVAL s"
T0=$(awk '{print $1}' /proc/uptime)
"${NICE[@]}" timeout --kill-after=5 $((DURATION + 60)) "${H2LOAD[@]}" >"$WORK/h2load.out" 2>&1 &
LOAD_PID=$!
PIDS+=("$LOAD_PID")
k=1
while alive "$LOAD_PID" && [ $((k * INTERVAL)) -le "$DURATION" ]; do
    # sleep until T0 + k*INTERVAL (no drift from the time sampling takes)
    now=$(awk '{print $1}' /proc/uptime)
    sleep "$(awk -v t0="$T0" -v n="$now" -v s=$((k * INTERVAL)) 'BEGIN { d = t0 + s - n; print (d > 0) ? d : 0 }')"
    alive "$LOAD_PID" || break
    alive "$MP_PID" || die "mintproxy exited during the load: $(tail -5 "$WORK/mintproxy.log")"
    r=$(rss_kib "$MP_PID")
    echo "$((k * INTERVAL)),$r" >>"$SAMPLES"
    if [ $((k * INTERVAL % 60)) -eq 0 ]; then log "t=$((k * INTERVAL)) s: RSS $r KiB"; fi
    k=$((k + 1))
done
wait "$LOAD_PID" || log "h2load exited with status $? (124: killed by timeout)"
sleep 10
RSS_AFTER=$(rss_kib "$MP_PID")
HWM=$(awk '$1 == "VmHWM:" {print $2}' "/proc/$MP_PID/status")
[ -z "$CSV" ] || cp "$SAMPLES" "$CSV"

# ---------------------------------------------------------------- report
at() { awk -F, -v t="$1" 'NR > 1 && $1 == t {printf "%.1f MiB (%d KiB)", $2 / 1024, $2; f = 1} END {if (!f) print "-"}' "$SAMPLES"; }
MAX=$(awk -F, 'NR > 1 && $2 > m {m = $2; t = $1} END {printf "%.1f MiB (%d KiB) at %d s", m / 1024, m, t}' "$SAMPLES")
LAST_FROM=$((DURATION > 300 + INTERVAL ? DURATION - 300 : INTERVAL)) # not the sample before the load
SLOPE=$(awk -F, -v from="$LAST_FROM" 'NR > 1 && $1 >= from {
        n++; sx += $1; sy += $2; sxx += $1 * $1; sxy += $1 * $2
        if (n == 1) {y0 = $2; x0 = $1}; y1 = $2; x1 = $1 }
    END {
        if (n < 2 || x1 == x0) { print "-"; exit }
        b = (n * sxy - sx * sy) / (n * sxx - sx * sx)
        printf "%+.1f KiB/min (least squares over %d samples from %d s to %d s; end to end %+.1f KiB/min)", b * 60, n, x0, x1, (y1 - y0) / (x1 - x0) * 60 }' "$SAMPLES")
req_line=$(grep -m1 '^requests:' "$WORK/h2load.out" || true)
fin_line=$(grep -m1 '^finished in' "$WORK/h2load.out" || true)
codes_line=$(grep -m1 '^status codes:' "$WORK/h2load.out" || true)

echo
echo "# mintproxy RSS under ${H2LOAD[*]}"
echo
echo "mintproxy $GIT_REV ($("$BIN" --version)), $( [ -n "$THREADS" ] && echo "--threads $THREADS" || echo "default threads") ($(nproc) CPUs), RUST_LOG=warn, backend nginx $("$NGINX" -v 2>&1 | sed 's/.*nginx\///'), $(h2load --version | head -1), everything nice -n 19; $(date -u '+%Y-%m-%d %H:%M UTC')"
echo
echo "| t (s) | VmRSS |"
echo "| ---: | ---: |"
echo "| 0 (before load) | $(awk -F, 'NR == 2 {printf "%.1f MiB (%d KiB)", $2 / 1024, $2}' "$SAMPLES") |"
for t in 10 60 90 300 600; do
    [ "$t" -le "$DURATION" ] || continue
    echo "| $t | $(at "$t") |"
done
echo
echo "- maximum sampled: $MAX (VmHWM $(awk -v k="$HWM" 'BEGIN {printf "%.1f", k / 1024}') MiB)"
echo "- slope over the last $((DURATION - LAST_FROM)) s: $SLOPE"
echo "- 10 s after the load stopped: $(awk -v r="$RSS_AFTER" 'BEGIN {printf "%.1f MiB (%d KiB)", r / 1024, r}')"
echo "- h2load: ${req_line:-no summary (see $WORK/h2load.out)}"
echo "- h2load: ${fin_line:-}"
echo "- h2load: ${codes_line:-}"
echo
echo "Samples (seconds,rss_kib):"
cat "$SAMPLES"
if [ -n "$CSV" ]; then echo "(copied to $CSV)"; fi
if grep -q . "$WORK/mintproxy.log"; then
    echo
    echo "mintproxy warnings ($(wc -l <"$WORK/mintproxy.log") lines), first 5:"
    head -5 "$WORK/mintproxy.log"
fi
