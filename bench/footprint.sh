#!/usr/bin/env bash
# The footprint of mintproxy as a sidecar, paid once per pod: the stripped release binary, idle
# memory, memory per idle keep-alive connection, and what the access log costs.
#
#   bash bench/footprint.sh [REV]        # REV: a commit (default HEAD); run by hand, not in CI
#
# - Build: REV exported with `git archive` to /tmp/mp-footprint-<sha>, built there with
#   `nice -n NICE_BUILD cargo build --release --locked` (the release profile as users get it),
#   CARGO_TARGET_DIR=target/bench-rev-footprint. The working tree is not touched.
# - Binary: its size as built, and as `strip` leaves it (the same when the profile strips);
#   the crates that appear in more than one version (`cargo tree -d`).
# - Idle RSS: `serve --token-file <file> --upstream http://127.0.0.1:<sink>` with RUST_LOG unset
#   (the default: info, access log on), one request answered, then 1 s of rest: VmRSS, and its
#   anonymous and file-backed parts (RssAnon, RssFile: the binary's and libc's pages, shared
#   with every process mapping the same files), with `--threads 1` and with the default thread
#   count (as many as the CPUs the process may use).
# - Per idle connection: with `--threads 1`, IDLE_CONNS keep-alive connections opened by
#   bench/idle_conns.py (one GET each, then idle); (RSS with them - RSS before) / IDLE_CONNS.
# - The access log's and the metrics' CPU: instructions per proxied request counted by callgrind
#   (bench/instructions.sh, plain upstream, mintproxy only) with RUST_LOG=warn, with the default
#   level (one access line per request, stderr to a file), and with RUST_LOG=warn and an admin
#   listener (every request counted in the metrics), each against the first. The access log's
#   throughput cost needs a quiet machine and is bench/run.sh's "mintproxy default log" row
#   against "mintproxy RUST_LOG=warn" in the same run (ROUNDS=4 bash bench/run.sh); this
#   script does not repeat it. INSTRUCTIONS=0 skips this part (it needs valgrind, h2load, nginx).
#
# Knobs (environment): IDLE_CONNS=1000 BASE_PORT=18390 (uses BASE_PORT..BASE_PORT+2;
#   instructions.sh uses its own) NICE_BUILD=10 INSTRUCTIONS=1 REQUESTS=20000 (for callgrind)
#
# Prints a markdown report on stdout, progress on stderr.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/.." && pwd)
REV=${1:-HEAD}
IDLE_CONNS=${IDLE_CONNS:-1000}
BASE_PORT=${BASE_PORT:-18390}
NICE_BUILD=${NICE_BUILD:-10}
INSTRUCTIONS=${INSTRUCTIONS:-1}
REQUESTS=${REQUESTS:-20000}
TARGET_DIR=$ROOT/target/bench-rev-footprint
SINK_PORT=$BASE_PORT
PROXY_PORT=$((BASE_PORT + 1))
TOKEN="bench-fake-token-0123456789abcdef0123456789abcdef"

uptime_s() { awk '{print int($1)}' /proc/uptime; }
START_TIME=$(uptime_s)
log() { printf '[footprint %3ss] %s\n' "$(($(uptime_s) - START_TIME))" "$*" >&2; }
die() { log "FAILED: $*"; exit 1; }
for tool in curl python3 strip; do command -v "$tool" >/dev/null || die "needs $tool"; done
for port in "$SINK_PORT" "$PROXY_PORT"; do
    if ss -Hltn "sport = :$port" | grep -q .; then die "port $port is taken; set BASE_PORT"; fi
done

WORK=$(mktemp -d /tmp/mintproxy-footprint.XXXXXX)
PIDS=()
SRC=""
cleanup() {
    local pid
    for pid in ${PIDS[@]+"${PIDS[@]}"}; do kill "$pid" 2>/dev/null || true; done
    [ -z "$SRC" ] || rm -rf "$SRC"
    rm -rf "$WORK"
}
trap cleanup EXIT

# ---------------------------------------------------------------- build
REV_SHA=$(cd "$ROOT" && git rev-parse --verify "$REV^{commit}")
SRC=/tmp/mp-footprint-$REV_SHA
rm -rf "$SRC"
mkdir -p "$SRC"
(cd "$ROOT" && git archive "$REV_SHA" | tar -x -m -C "$SRC")
log "nice -n $NICE_BUILD cargo build --release --locked (commit ${REV_SHA:0:12}) in $SRC, target dir $TARGET_DIR"
(cd "$SRC" && CARGO_TARGET_DIR=$TARGET_DIR nice -n "$NICE_BUILD" cargo build --release --locked --quiet)
DUPLICATES=$(cd "$SRC" && cargo tree -d -e normal,no-proc-macro --depth 0 --prefix none --locked 2>/dev/null |
    grep -E '^[a-z]' | sort -u | paste -sd, - | sed 's/,/, /g')
rm -rf "$SRC"
SRC=""
BIN=$WORK/mintproxy
cp "$TARGET_DIR/release/mintproxy" "$BIN"
strip -o "$WORK/mintproxy-stripped" "$BIN"
BUILT_BYTES=$(stat -c %s "$BIN")
# The code laid out by link/hot-text.ld (build.rs): its output section as linked, against the
# bytes of functions the script listed when bench/layout.py wrote it.
read -r HOT_BYTES HOT_LISTED < <(bash "$ROOT/link/coverage.sh" "$BIN" \
    <(cd "$ROOT" && git show "$REV_SHA:link/hot-text.ld" 2>/dev/null || true))
STRIPPED_BYTES=$(stat -c %s "$WORK/mintproxy-stripped")

# ---------------------------------------------------------------- memory
printf '%s\n' "$TOKEN" >"$WORK/token"
chmod 600 "$WORK/token"
python3 "$HERE/sink.py" "$SINK_PORT" "Bearer $TOKEN" >"$WORK/sink.out" 2>"$WORK/sink.log" &
PIDS+=("$!")

kib() { awk -v f="$2:" '$1==f{print $2}' "/proc/$1/status"; }
mib() { awk -v k="$1" 'BEGIN{printf "%.1f", k / 1024}'; }
wait_answer() { # url: until it answers 200, at most 10 s
    for _ in $(seq 100); do
        [ "$(curl -s -o /dev/null -w '%{http_code}' --max-time 2 "$1" || true)" = 200 ] && return 0
        sleep 0.1
    done
    die "no 200 from $1"
}
PROXY_PID=""
start_proxy() { # serve args...
    "$BIN" serve --listen "127.0.0.1:$PROXY_PORT" --upstream "http://127.0.0.1:$SINK_PORT" \
        --token-file "$WORK/token" "$@" >"$WORK/proxy.out" 2>"$WORK/proxy.err" &
    PROXY_PID=$!
    PIDS+=("$PROXY_PID")
    wait_answer "http://127.0.0.1:$PROXY_PORT/"
    sleep 1 # let it settle
}
stop_proxy() {
    kill -TERM "$PROXY_PID"
    wait "$PROXY_PID" 2>/dev/null || true
}
IDLE_ROWS=()
idle_row() { # label
    IDLE_ROWS+=("| $1 | $(mib "$(kib "$PROXY_PID" VmRSS)") | $(mib "$(kib "$PROXY_PID" RssAnon)") | $(mib "$(kib "$PROXY_PID" RssFile)") | $(kib "$PROXY_PID" Threads) |")
    log "idle, $1: ${IDLE_ROWS[-1]}"
}

wait_answer "http://127.0.0.1:$SINK_PORT/"
start_proxy --threads 1
idle_row "--threads 1"
before=$(kib "$PROXY_PID" VmRSS)
log "opening $IDLE_CONNS idle keep-alive connections"
python3 "$HERE/idle_conns.py" "$PROXY_PORT" "$IDLE_CONNS" "$WORK/ready" "$WORK/stop" 120 >"$WORK/idle.out" 2>&1 &
HOLDER=$!
PIDS+=("$HOLDER")
for _ in $(seq 900); do
    [ -e "$WORK/ready" ] || ! kill -0 "$HOLDER" 2>/dev/null || { sleep 0.1; continue; }
    break
done
[ -e "$WORK/ready" ] || die "the connection holder did not get ready: $(tail -3 "$WORK/idle.out")"
read -r opened ok codes err <"$WORK/ready"
[ "$ok" = "$IDLE_CONNS" ] || die "$ok of $IDLE_CONNS connections got a 2xx ($codes; $opened open; $err)"
sleep 1
loaded=$(kib "$PROXY_PID" VmRSS)
touch "$WORK/stop"
wait "$HOLDER" 2>/dev/null || true
PER_CONN=$(awk -v a="$before" -v b="$loaded" -v n="$IDLE_CONNS" 'BEGIN{printf "%.1f", (b - a) / n}')
log "per idle connection: $PER_CONN KiB ($(mib "$before") -> $(mib "$loaded") MiB)"
stop_proxy
start_proxy
idle_row "default ($(nproc) CPUs)"
stop_proxy

# ---------------------------------------------------------------- the access log's instructions
INSTR_TABLE=""
if [ "$INSTRUCTIONS" = 1 ]; then
    count() { # name rust-log serve-args: instructions per request into $WORK/ir-name
        log "instructions per request, $1: RUST_LOG=$2 $3 (bench/instructions.sh $REV_SHA)"
        MP_RUST_LOG=$2 MP_ARGS=$3 TARGETS=mintproxy UPSTREAMS=plain REQUESTS=$REQUESTS \
            bash "$HERE/instructions.sh" "$REV_SHA" >"$WORK/instructions-$1.md"
        awk -F'|' '$2 ~ /mintproxy/ {gsub(/ /, "", $4); print $4}' "$WORK/instructions-$1.md" >"$WORK/ir-$1"
    }
    count bare warn ""
    count log info ""
    count metrics warn "--admin-listen 127.0.0.1:$((BASE_PORT + 2))"
    bare=$(cat "$WORK/ir-bare")
    share() { awk -v b="$bare" -v x="$(cat "$WORK/ir-$1")" 'BEGIN{printf "%s (%+.1f %%)", x, (x - b) * 100 / b}'; }
    INSTR_TABLE=$(
        echo "| mintproxy | instructions per request |"
        echo "| --- | ---: |"
        echo "| RUST_LOG=warn: no access log, no metrics | $bare |"
        echo "| RUST_LOG unset (info): one access line per request | $(share log) |"
        echo "| RUST_LOG=warn, --admin-listen: every request in the metrics | $(share metrics) |"
    )
fi

# ---------------------------------------------------------------- report
echo "## Footprint of mintproxy at ${REV_SHA:0:12} ($("$BIN" --version)), $(date -u '+%Y-%m-%d %H:%M UTC')"
echo
echo "Command: \`bash bench/footprint.sh $REV\`; $(rustc --version), $(uname -sr), $(nproc) CPUs."
echo
echo "Binary: $BUILT_BYTES bytes as built ($(mib $((BUILT_BYTES / 1024))) MiB), $STRIPPED_BYTES stripped ($(mib $((STRIPPED_BYTES / 1024))) MiB)."
echo "Crates in more than one version: ${DUPLICATES:-none}."
echo "Code laid out by link/hot-text.ld: .text.hot holds $HOT_BYTES bytes; the script lists ${HOT_LISTED:-0} bytes of functions."
echo
echo "Idle, with a static --token-file, a plain upstream, RUST_LOG unset, after one request (MiB):"
echo
echo "| threads | VmRSS | RssAnon | RssFile | OS threads |"
echo "| --- | ---: | ---: | ---: | ---: |"
printf '%s\n' "${IDLE_ROWS[@]}"
echo
echo "Per idle keep-alive connection (--threads 1, $IDLE_CONNS of them): $PER_CONN KiB."
if [ -n "$INSTR_TABLE" ]; then
    echo
    echo "The access log's and the metrics' CPU, instructions per proxied request (callgrind, user space, plain upstream, --threads 1, $REQUESTS requests):"
    echo
    echo "$INSTR_TABLE"
fi
echo
echo "Its throughput cost: the \"mintproxy default log\" row against \"mintproxy RUST_LOG=warn\" of"
echo "\`ROUNDS=4 bash bench/run.sh\` on a quiet machine."
