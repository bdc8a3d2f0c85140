#!/usr/bin/env bash
# mintproxy vs nginx as an authenticating reverse proxy, each on one core.
#
# Run by hand from anywhere (not part of CI):   bash bench/run.sh
#
# Layout (needs at least 2 cores):
#   core 0: the proxy under test (mintproxy, or nginx with worker_processes 1)
#   core 1: the backend (nginx, `return 200 "ok\n"`) and the load generator (wrk -t1)
# Everything listens on 127.0.0.1 only. Every load run is bounded in time.
#
# Knobs (environment): DURATION=15s WARMUP=5s CONNS=64 ROUNDS=2
#   UPLOAD_BYTES=268435456 BASE_PORT=18090 RESULTS=bench/results.md KEEP=1 (keep the work dir)
#   REV=HEAD (build that commit from a git archive export instead of the working tree)
#   QUIET_WAIT=15 (wait up to this long for both cores to be idle before each measurement;
#     default 0 with SCHED=fifo)
#   NICE=-10 (as root; the nice level of every benchmark process, proxies and wrk alike)
#   SCHED=fifo (run every benchmark process SCHED_FIFO instead of niced; for a machine that
#     other work keeps busy; distorts p99, see bench/README.md)
#
# Writes the results table to stdout and to $RESULTS (default bench/results.md).
set -euo pipefail

# the command as given, with the knobs that were set, for the results file
CMDLINE=""
for knob in DURATION WARMUP CONNS ROUNDS UPLOAD_BYTES BASE_PORT RESULTS KEEP REV QUIET_WAIT CLEAN_MAX NICE SCHED; do
    if [ -n "${!knob+x}" ]; then CMDLINE+="$knob=${!knob} "; fi
done
CMDLINE+="bash bench/run.sh"

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/.." && pwd)
DURATION=${DURATION:-15s}
WARMUP=${WARMUP:-5s}
CONNS=${CONNS:-64}
ROUNDS=${ROUNDS:-2}
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

BACKEND_PORT=$BASE_PORT
PROXY_PORT=$((BASE_PORT + 1))
SINK_PORT=$((BASE_PORT + 2))
# A fake token: the backend only checks that the proxy sent exactly this.
TOKEN="bench-fake-token-0123456789abcdef0123456789abcdef"
AUTH="Bearer $TOKEN"

uptime_s() { awk '{print int($1)}' /proc/uptime; } # monotonic, unlike date
START_TIME=$(uptime_s)
log() { printf '[bench %3ss] %s\n' "$(($(uptime_s) - START_TIME))" "$*" >&2; }
die() { log "FAILED: $*"; exit 1; }

# ---------------------------------------------------------------- prerequisites
if [ "$(nproc --all)" -lt 2 ]; then die "needs at least 2 cores (proxy on core 0, backend and wrk on core 1)"; fi

need_pkgs=()
[ -x /usr/sbin/nginx ] || command -v nginx >/dev/null || need_pkgs+=(nginx)
command -v wrk >/dev/null || need_pkgs+=(wrk)
command -v taskset >/dev/null || need_pkgs+=(util-linux)
command -v curl >/dev/null || need_pkgs+=(curl)
command -v ss >/dev/null || need_pkgs+=(iproute2)
command -v python3 >/dev/null || need_pkgs+=(python3)
command -v pgrep >/dev/null || need_pkgs+=(procps)
if [ ${#need_pkgs[@]} -gt 0 ]; then
    SUDO=""
    [ "$(id -u)" -eq 0 ] || SUDO=sudo
    log "installing ${need_pkgs[*]} with apt-get"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${need_pkgs[@]}" >/dev/null
fi
NGINX=$(command -v nginx || echo /usr/sbin/nginx)

WORK=$(mktemp -d /tmp/mintproxy-bench.XXXXXX)
chmod 755 "$WORK" # nginx workers run as www-data and need to reach their temp dirs
printf '%s\n' "$TOKEN" >"$WORK/token"
chmod 600 "$WORK/token"

PIDS=()
cleanup() {
    local pid
    for pid in "${PIDS[@]}"; do
        if kill -0 "$pid" 2>/dev/null; then
            kill -TERM "$pid" 2>/dev/null || true
            wait "$pid" 2>/dev/null || true
        fi
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
    (cd "$ROOT" && git archive "$REV_SHA" | tar -x -C "$SRC")
    log "cargo build --release (commit ${REV_SHA:0:12}, exported with git archive)"
    (cd "$SRC" && CARGO_TARGET_DIR=$ROOT/target/bench-rev cargo build --release --quiet)
    BIN=$ROOT/target/bench-rev/release/mintproxy
    rm -rf "$SRC"
fi
[ -x "$BIN" ] || die "no binary at $BIN"
BUILD_SECS=$(($(uptime_s) - BUILD_START))

for port in "$BACKEND_PORT" "$PROXY_PORT" "$SINK_PORT"; do
    if ss -Hltn "sport = :$port" | grep -q .; then die "port $port is taken; set BASE_PORT"; fi
done

stop() { # stop one process we started, by pid
    local pid=$1
    kill -TERM "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
}

wait_http() { # url [curl args...]: wait up to 10 s for a 200
    local url=$1 _
    shift
    for _ in $(seq 100); do
        if [ "$(curl -s -o /dev/null -w '%{http_code}' "$@" "$url" || true)" = 200 ]; then return 0; fi
        sleep 0.1
    done
    die "$url did not answer 200 within 10 s"
}

# ---------------------------------------------------------------- nginx configs
nginx_common() { # dir
    cat <<EOF
worker_processes 1;
daemon off;
user www-data;
pid $1/nginx.pid;
error_log $1/error.log warn;
events { worker_connections 4096; }
EOF
}
nginx_temp_paths() { # dir
    cat <<EOF
    client_body_temp_path $1/tmp/body;
    proxy_temp_path $1/tmp/proxy;
    fastcgi_temp_path $1/tmp/fastcgi;
    uwsgi_temp_path $1/tmp/uwsgi;
    scgi_temp_path $1/tmp/scgi;
EOF
}

mkdir -p "$WORK/backend/tmp" "$WORK/nginx-proxy/tmp"
{
    nginx_common "$WORK/backend"
    cat <<EOF
http {
    access_log off;
$(nginx_temp_paths "$WORK/backend")
    keepalive_requests 1000000;
    keepalive_timeout 75s;
    server {
        listen 127.0.0.1:$BACKEND_PORT;
        default_type text/plain;
        location / {
            # Proves the proxy added the header: anything else is a 401, which wrk counts.
            if (\$http_authorization != "$AUTH") { return 401 "no bearer\n"; }
            return 200 "ok\n";
        }
    }
}
EOF
} >"$WORK/backend/nginx.conf"

{
    nginx_common "$WORK/nginx-proxy"
    cat <<EOF
http {
    access_log off;
$(nginx_temp_paths "$WORK/nginx-proxy")
    keepalive_requests 1000000;
    keepalive_timeout 75s;
    upstream backend {
        server 127.0.0.1:$BACKEND_PORT;
        keepalive 64;
        keepalive_requests 1000000;
    }
    server {
        listen 127.0.0.1:$PROXY_PORT;
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
EOF
} >"$WORK/nginx-proxy/nginx.conf"

"$NGINX" -t -q -p "$WORK/backend/" -e "$WORK/backend/error.log" -c "$WORK/backend/nginx.conf"
"$NGINX" -t -q -p "$WORK/nginx-proxy/" -e "$WORK/nginx-proxy/error.log" -c "$WORK/nginx-proxy/nginx.conf"

# ---------------------------------------------------------------- process helpers
CLK_TCK=$(getconf CLK_TCK)
cpu_ticks() { # pid...: utime+stime of each pid and of its children (nginx workers)
    local total=0 pid p
    for pid in "$@"; do
        for p in "$pid" $(pgrep -P "$pid" || true); do
            # fields after the ")" of comm: state is $1, utime $12, stime $13
            total=$((total + $(sed 's/^.*) //' "/proc/$p/stat" | awk '{print $12 + $13}')))
        done
    done
    echo "$total"
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
start_nginx_proxy() {
    "${PRIO[@]}" taskset -c 0 "$NGINX" -p "$WORK/nginx-proxy/" -e "$WORK/nginx-proxy/error.log" -c "$WORK/nginx-proxy/nginx.conf" &
    PROXY_PID=$!
    PIDS+=("$PROXY_PID")
    wait_http "http://127.0.0.1:$PROXY_PORT/"
}
start_mintproxy() { # log-mode (warn|info) upstream-port stderr-file
    local mode=$1 upstream=$2 errfile=$3
    if [ "$mode" = warn ]; then
        env RUST_LOG=warn "${PRIO[@]}" taskset -c 0 "$BIN" serve --listen "127.0.0.1:$PROXY_PORT" \
            --upstream "http://127.0.0.1:$upstream" --token-file "$WORK/token" \
            >"$WORK/mintproxy.out" 2>"$errfile" &
    else
        # RUST_LOG unset: the default `info`, one access line per request, to a file
        env -u RUST_LOG "${PRIO[@]}" taskset -c 0 "$BIN" serve --listen "127.0.0.1:$PROXY_PORT" \
            --upstream "http://127.0.0.1:$upstream" --token-file "$WORK/token" \
            >"$WORK/mintproxy.out" 2>"$errfile" &
    fi
    PROXY_PID=$!
    PIDS+=("$PROXY_PID")
    wait_http "http://127.0.0.1:$PROXY_PORT/"
}

to_ms() { # wrk duration (850.00us, 1.23ms, 1.02s, 2.00m) -> milliseconds
    awk -v v="$1" 'BEGIN {
        if (v ~ /us$/) { sub(/us$/, "", v); printf "%.3f", v / 1000 }
        else if (v ~ /ms$/) { sub(/ms$/, "", v); printf "%.3f", v }
        else if (v ~ /m$/) { sub(/m$/, "", v); printf "%.1f", v * 60000 }
        else if (v ~ /s$/) { sub(/s$/, "", v); printf "%.3f", v * 1000 }
        else printf "%s", v }'
}

RUNS="$WORK/runs.tsv" # one line per measurement, for the tables
: >"$RUNS"
RAW="$WORK/wrk-raw.txt"
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

bench_one() { # name url proxy-pid-or-empty [wrk args...]
    local name=$1 url=$2 ppid=$3
    shift 3
    local out="$WORK/wrk.txt" secs u0 u1 t0=0 t1=0 b0 b1 w0 w1 k0 k1
    local rps reqs p50 p99 non2xx errs busy0 busy1 proxy_pct=0 cpu_us=- rss=- hwm=- thr=- wrk_pct be_pct other0 other1 clean
    wait_quiet
    log "$name: warm-up $WARMUP"
    "${PRIO[@]}" taskset -c 1 wrk -t1 -c"$CONNS" -d"$WARMUP" "$@" "$url" >/dev/null
    log "$name: measuring $DURATION"
    u0=$(awk '{print $1}' /proc/uptime)
    [ -n "$ppid" ] && t0=$(cpu_ticks "$ppid")
    b0=$(cpu_ticks "$BACKEND_PID")
    k0=$(core_ticks)
    children_cpu >"$WORK/w0"
    "${PRIO[@]}" taskset -c 1 wrk -t1 -c"$CONNS" -d"$DURATION" --latency "$@" "$url" >"$out"
    children_cpu >"$WORK/w1"
    k1=$(core_ticks)
    b1=$(cpu_ticks "$BACKEND_PID")
    [ -n "$ppid" ] && t1=$(cpu_ticks "$ppid")
    u1=$(awk '{print $1}' /proc/uptime)
    secs=$(awk -v a="$u0" -v b="$u1" 'BEGIN{print b - a}') # the window the CPU times cover
    { echo "### $name"; cat "$out"; echo; } >>"$RAW"

    rps=$(awk '$1=="Requests/sec:"{printf "%.0f", $2}' "$out")
    reqs=$(awk '$2=="requests" && $3=="in"{print $1}' "$out")
    p50=$(to_ms "$(awk '$1=="50%"{print $2}' "$out")")
    p99=$(to_ms "$(awk '$1=="99%"{print $2}' "$out")")
    non2xx=$(awk -F: '/Non-2xx or 3xx responses/{gsub(/ /, "", $2); print $2}' "$out")
    non2xx=${non2xx:-0}
    errs=$(awk '/Socket errors/{sub(/.*Socket errors: /, ""); print}' "$out")
    errs=${errs:-none}
    busy0=$(busy_pct "$k0" "$k1" 0)
    busy1=$(busy_pct "$k0" "$k1" 1)
    w0=$(cat "$WORK/w0") w1=$(cat "$WORK/w1")
    wrk_pct=$(pct "$(awk -v a="$w0" -v b="$w1" 'BEGIN{print b - a}')" "$secs")
    be_pct=$(pct "$(awk -v a="$b0" -v b="$b1" -v hz="$CLK_TCK" 'BEGIN{print (b - a) / hz}')" "$secs")
    if [ -n "$ppid" ]; then
        local cpu
        cpu=$(awk -v a="$t0" -v b="$t1" -v hz="$CLK_TCK" 'BEGIN{printf "%.3f", (b - a) / hz}')
        cpu_us=$(awk -v c="$cpu" -v n="$reqs" 'BEGIN{printf "%.1f", c * 1e6 / n}')
        proxy_pct=$(pct "$cpu" "$secs")
        rss=$(awk -v k="$(status_kb "$ppid" VmRSS)" 'BEGIN{printf "%.1f", k / 1024}')
        hwm=$(awk -v k="$(status_kb "$ppid" VmHWM)" 'BEGIN{printf "%.1f", k / 1024}')
        thr=$(threads_of "$ppid")
    fi
    # CPU on each core that none of our processes accounts for: other work on the machine
    # (and interrupt time the kernel charges to no process)
    other0=$((busy0 - proxy_pct))
    other1=$((busy1 - wrk_pct - be_pct))
    [ "$other0" -ge 0 ] || other0=0
    [ "$other1" -ge 0 ] || other1=0
    local other0_txt="$other0%"
    [ -n "$ppid" ] || other0=- other0_txt=- # backend direct: nothing of ours on core 0, its load is irrelevant
    if { [ "$other0" = - ] || [ "$other0" -le "$CLEAN_MAX" ]; } && [ "$other1" -le "$CLEAN_MAX" ]; then
        clean=yes
    else
        clean=no
    fi
    printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' \
        "$name" "$rps" "$p50" "$p99" "$non2xx" "$errs" "$([ -n "$ppid" ] && echo "$proxy_pct%" || echo -)" "$cpu_us" \
        "$wrk_pct% / $be_pct%" "$busy0% / $busy1%" "$other0_txt / $other1%" "$clean" "$rss / $hwm" "$thr" "${name% (r*)}" >>"$RUNS"
    log "$name: $rps req/s, p50 ${p50} ms, p99 ${p99} ms, non-2xx $non2xx, proxy CPU $proxy_pct%, µs/req $cpu_us, cores busy $busy0% / $busy1%, other load $other0_txt / $other1% (clean: $clean)"
    [ "$non2xx" = 0 ] || log "WARNING: $name had $non2xx non-2xx responses"
}

# ---------------------------------------------------------------- throughput
start_backend
log "backend nginx on 127.0.0.1:$BACKEND_PORT (core 1), pid $BACKEND_PID"

for round in $(seq "$ROUNDS"); do
    bench_one "backend direct (r$round)" "http://127.0.0.1:$BACKEND_PORT/" "" -H "Authorization: $AUTH"

    start_nginx_proxy
    bench_one "nginx proxy (r$round)" "http://127.0.0.1:$PROXY_PORT/" "$PROXY_PID"
    stop "$PROXY_PID"

    start_mintproxy warn "$BACKEND_PORT" "$WORK/mintproxy-warn.log"
    bench_one "mintproxy RUST_LOG=warn (r$round)" "http://127.0.0.1:$PROXY_PORT/" "$PROXY_PID"
    stop "$PROXY_PID"

    start_mintproxy info "$BACKEND_PORT" "$WORK/mintproxy-info.log"
    bench_one "mintproxy default log (r$round)" "http://127.0.0.1:$PROXY_PORT/" "$PROXY_PID"
    stop "$PROXY_PID"
    INFO_LINES=$(wc -l <"$WORK/mintproxy-info.log")
    INFO_BYTES=$(wc -c <"$WORK/mintproxy-info.log")
    INFO_SAMPLE=$(grep -m1 'mintproxy::access' "$WORK/mintproxy-info.log" | tail -c 300 || true)
done
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
curl -s -o /dev/null -X POST --data-binary 'warm' "http://127.0.0.1:$PROXY_PORT/"
mib() { awk -v k="$1" 'BEGIN{printf "%.1f", k / 1024}'; }
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

{
    echo "# mintproxy vs nginx: results"
    echo
    echo "Produced by \`$CMDLINE\` on $(date -u '+%Y-%m-%d %H:%M UTC'), in ${ELAPSED} s (of which cargo build ${BUILD_SECS} s)."
    echo
    echo "- machine: $(nproc --all) cores, $CPU_MODEL, $(uname -sr), $(awk '/MemTotal/{printf "%.0f GiB", $2/1048576}' /proc/meminfo)"
    echo "- $("$NGINX" -v 2>&1), $(wrk -v 2>&1 | head -1 | awk '{print "wrk " $2}'), $("$BIN" --version) at $GIT_REV$GIT_DIRTY, $(rustc --version)"
    echo "- load: \`taskset -c 1 wrk -t1 -c$CONNS -d$DURATION --latency\` after a $WARMUP warm-up, $ROUNDS rounds;"
    printf '%s\n' "  proxy on core 0, backend nginx (\`return 200 \"ok\\n\"\` if the bearer is there, else 401) and wrk on core 1;"
    echo "  every benchmark process at $PRIO_DESC; measurements that began while other work was running: $BUSY_WARNINGS"
    echo
    echo "Best run of each target (highest req/s among the clean runs, or among all when none is clean;"
    echo "a run is clean when CPU time that none of the benchmark's processes accounts for stayed at or"
    echo "under $CLEAN_MAX % on each core):"
    echo
    echo "| target | req/s | p50 ms | p99 ms | proxy CPU | proxy CPU µs/req | clean |"
    echo "| --- | ---: | ---: | ---: | ---: | ---: | --- |"
    awk -F'\t' '
        { t = $15; if (!(t in seen)) { seen[t] = 1; order[++n] = t } }
        ($12 == "yes") && (!(t in best) || $2 > bestrps[t]) { best[t] = $0; bestrps[t] = $2 }
        !(t in any) || $2 > anyrps[t] { any[t] = $0; anyrps[t] = $2 }
        END {
            for (i = 1; i <= n; i++) {
                t = order[i]; line = (t in best) ? best[t] : any[t]; split(line, f, "\t")
                printf "| %s | %s | %s | %s | %s | %s | %s |\n", t, f[2], f[3], f[4], f[7], f[8], f[12]
            }
        }' "$RUNS"
    echo
    echo "Every run:"
    echo
    echo "| run | req/s | p50 ms | p99 ms | non-2xx | socket errors | proxy CPU | proxy CPU µs/req | wrk / backend CPU | core 0 / 1 busy | other load core 0 / 1 | clean | proxy RSS / peak MiB | threads |"
    echo "| --- | ---: | ---: | ---: | ---: | --- | ---: | ---: | ---: | ---: | ---: | --- | ---: | ---: |"
    awk -F'\t' '{ printf "|"; for (i = 1; i <= 14; i++) printf " %s |", $i; printf "\n" }' "$RUNS"
    echo
    echo "Default logging (RUST_LOG unset = info, stderr to a file): the last run wrote $INFO_LINES lines,"
    echo "$((INFO_BYTES / 1048576)) MiB. A line: \`$INFO_SAMPLE\`"
    echo
    echo "## Memory: $UPLOAD_BYTES-byte upload through mintproxy (RUST_LOG=warn) to a sink that reads and discards"
    echo
    echo "Before the uploads (after one small request): VmRSS $RSS_BEFORE MiB, VmHWM $HWM_BEFORE MiB."
    echo
    echo "| upload | status | bytes counted by the sink | chunked | time | max sampled VmRSS MiB | VmHWM after MiB |"
    echo "| --- | ---: | ---: | --- | ---: | ---: | ---: |"
    printf '%s\n' "${UPLOADS[@]}"
    echo
    echo "<details><summary>raw wrk output</summary>"
    echo
    echo '```'
    cat "$RAW"
    echo '```'
    echo "</details>"
} >"$RESULTS"

cat "$RESULTS"
log "done in ${ELAPSED} s; results in $RESULTS"
