//! Link settings of the release binary on Linux.
//!
//! - Code layout: `link/hot-text.ld` (made by `bench/layout.py`) places the functions that
//!   start-up and the request path run side by side, ahead of the rest of `.text`. The kernel
//!   maps a binary's code 64 KiB around each page fault, so scattered start-up code kept most of
//!   the 7 MiB of code resident in an idle proxy (bench/results-footprint.md).
//! - Stripping: done here, at link time, rather than by the profile's `strip`: the profile is
//!   part of every crate's symbol hash, so a build that keeps its symbols for
//!   `bench/layout.py` (`MINTPROXY_KEEP_SYMBOLS=1`) must differ from the release build in link
//!   arguments only, or the names in `link/hot-text.ld` would match nothing.

use std::env;
use std::path::Path;

fn main() {
    println!("cargo:rerun-if-changed=link/hot-text.ld");
    println!("cargo:rerun-if-env-changed=MINTPROXY_KEEP_SYMBOLS");
    let release = env::var("PROFILE").is_ok_and(|profile| profile == "release");
    let linux = env::var("CARGO_CFG_TARGET_OS").is_ok_and(|os| os == "linux");
    if !(release && linux) {
        return;
    }
    let manifest_dir = env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR");
    let script = Path::new(&manifest_dir).join("link").join("hot-text.ld");
    println!("cargo:rustc-link-arg-bins=-Wl,-T,{}", script.display());
    if env::var_os("MINTPROXY_KEEP_SYMBOLS").is_none() {
        println!("cargo:rustc-link-arg-bins=-Wl,--strip-all");
    }
}
