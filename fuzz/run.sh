#!/usr/bin/env bash
# Runs every fuzz target for a bounded time; exits non-zero if any target finds a crash.
#
#   fuzz/run.sh                 # 60 s per target
#   fuzz/run.sh 300             # 300 s per target
#   FUZZ_SECONDS=10 fuzz/run.sh headers config
#   FUZZ_SEED=1 fuzz/run.sh     # libFuzzer's seed: the same inputs in the same order (CI)
#
# CI runs it with FUZZ_SECONDS=15 (.ci/run). Needs cargo-fuzz (installed here if missing) and nightly features, which
# the stable toolchain allows with RUSTC_BOOTSTRAP=1.
set -euo pipefail
cd "$(dirname "$0")"

seconds="${FUZZ_SECONDS:-60}"
if [[ $# -gt 0 && "$1" =~ ^[0-9]+$ ]]; then
    seconds="$1"
    shift
fi
if [[ ! "$seconds" =~ ^[1-9][0-9]*$ ]]; then
    echo "run.sh: seconds must be a positive whole number, got '$seconds'" >&2
    exit 2
fi
if [[ $# -gt 0 ]]; then
    targets=("$@")
else
    targets=(keyfile config headers fields normalize response)
fi

export RUSTC_BOOTSTRAP=1

if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "run.sh: installing cargo-fuzz" >&2
    cargo install cargo-fuzz --locked
fi

# Debug assertions on (-a): integer overflow and the like count as findings too. A build
# failure stops here (set -e), before any target runs.
cargo fuzz build -a
logs=target/fuzz-logs
mkdir -p "$logs"

# A throwaway RSA key, made here and never tracked (only seed-* files are), so the keyfile
# target also reaches the path that loads a real key. Skipped without openssl.
runtime_key() { # kind subject-field pem-command...
    local kind="$1" field="$2" file="corpus/keyfile/runtime-$1.json" pem
    shift 2
    [[ -e "$file" ]] && return
    pem="$("$@" 2>/dev/null | awk '{printf "%s\\n", $0}')" || return 0
    [[ -n "$pem" ]] || return 0
    printf '{"type":"%s","keyId":"1","key":"%s","%s":"2"}\n' "$kind" "$pem" "$field" >"$file"
}
if [[ " ${targets[*]} " == *" keyfile "* ]] && command -v openssl >/dev/null; then
    mkdir -p corpus/keyfile
    runtime_key serviceaccount userId bash -c \
        'openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 | openssl rsa -traditional'
    runtime_key application clientId openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048
fi

failed=()
summary=()
for target in "${targets[@]}"; do
    mkdir -p "corpus/$target"
    log="$logs/$target.log"
    echo "=== $target: ${seconds}s (log: fuzz/$log)"
    status=0
    # -timeout: one input taking over 25 s is a finding (a hang); -rss_limit_mb the default.
    cargo fuzz run -a "$target" -- -max_total_time="$seconds" -timeout=25 -print_final_stats=1 \
        ${FUZZ_SEED:+-seed="$FUZZ_SEED"} >"$log" 2>&1 || status=$?
    runs="$(grep -Eo '^stat::number_of_executed_units: *[0-9]+' "$log" | grep -Eo '[0-9]+$' | tail -n1 || true)"
    corpus="$(find "corpus/$target" -type f | wc -l | tr -d ' ')"
    if [[ $status -ne 0 ]]; then
        failed+=("$target")
        summary+=("$target: FAILED (exit $status) after ${runs:-?} executions; corpus $corpus files")
        echo "--- $target failed; the end of its log:" >&2
        tail -n 40 "$log" >&2
    else
        summary+=("$target: ok, ${runs:-?} executions in ${seconds}s; corpus $corpus files")
    fi
done

echo "=== summary"
printf '%s\n' "${summary[@]}"
if [[ ${#failed[@]} -gt 0 ]]; then
    echo "crashes in: ${failed[*]} (inputs under fuzz/artifacts/<target>/)" >&2
    exit 1
fi
