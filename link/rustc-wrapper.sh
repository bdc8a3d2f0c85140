#!/bin/sh
# rustc, with profile-guided optimisation for optimised x86-64 Linux builds (.cargo/config.toml).
#
# Cargo runs `link/rustc-wrapper.sh rustc ARGS...` for every crate. When the crate is compiled
# with optimisation for x86-64 Linux, this adds -Cprofile-use with link/mintproxy.profdata: the
# branch and call counts of the request path, made by bench/layout.py. A wrapper rather than
# rustflags because rustc reads the profile relative to each crate's own directory, so the path
# must be absolute. Debug builds (the tests), instrumented builds (cargo fuzz, profiling,
# coverage) and other targets compile as without it. A profile older than the code misses only
# the functions that changed (-no-pgo-warn-mismatch keeps that quiet); a rustc whose LLVM cannot
# read the profile warns and builds without it.
profile="$(cd "$(dirname "$0")" && pwd)/mintproxy.profdata"
optimised=no
host=yes
previous=
for arg in "$@"; do
    case "$previous $arg" in
        "--cfg fuzzing" | *profile-generate* | *instrument-coverage*) exec "$@" ;;
        "--target x86_64-unknown-linux-gnu") host=no ;;
        "--target "*) exec "$@" ;;
        *" opt-level="[123sz] | *" -Copt-level="[123sz]) optimised=yes ;;
    esac
    previous=$arg
done
if [ "$optimised" = no ] || [ ! -f "$profile" ]; then exec "$@"; fi
if [ "$host" = yes ] && [ "$(uname -sm)" != "Linux x86_64" ]; then exec "$@"; fi
exec "$@" "-Cprofile-use=$profile" -Cllvm-args=-no-pgo-warn-mismatch
