#!/usr/bin/env bash
# How much of link/hot-text.ld a binary's layout still matches: the bytes its .text.hot section
# holds, then the bytes of functions the script listed when bench/layout.py wrote it. A
# function renamed since, or a dependency or toolchain of another version, matches nothing.
#
#   bash link/coverage.sh BINARY [SCRIPT]      # SCRIPT: default link/hot-text.ld; prints "HOT LISTED"
set -euo pipefail
BIN=${1:?usage: coverage.sh BINARY [SCRIPT]}
SCRIPT=${2:-$(dirname "$0")/hot-text.ld}
hex=$(readelf -SW "$BIN" | sed -n 's/.* \.text\.hot  *PROGBITS  *[0-9a-f]*  *[0-9a-f]*  *\([0-9a-f]*\) .*/\1/p')
listed=$(awk '$1 == "/*" && $3 == "functions," {sum += $4} END {print sum + 0}' "$SCRIPT")
echo "$((16#${hex:-0})) $listed"
