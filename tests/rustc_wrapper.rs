//! `link/rustc-wrapper.sh`, which cargo runs in place of rustc (`.cargo/config.toml`), adds
//! the PGO profile to optimised x86-64 Linux crates and to nothing else (run with `echo` as
//! the compiler, so each case prints the command the wrapper would run); the profile's digest
//! among cargo's flags is the profile's, so that cargo rebuilds what a new profile changes.
#![cfg(all(target_os = "linux", target_arch = "x86_64"))]

use std::fs;
use std::path::Path;
use std::process::Command;

/// The command line the wrapper runs for `rustc ARGS`, with `echo` standing in for rustc.
fn wrapped(args: &[&str]) -> String {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let out = Command::new(root.join("link/rustc-wrapper.sh"))
        .arg("echo")
        .args(args)
        .current_dir(std::env::temp_dir())
        .output()
        .expect("link/rustc-wrapper.sh runs");
    assert!(out.status.success(), "{out:?}");
    String::from_utf8(out.stdout).unwrap().trim_end().to_owned()
}

#[test]
fn optimised_crates_get_the_profile_by_its_absolute_path() {
    let profile = Path::new(env!("CARGO_MANIFEST_DIR")).join("link/mintproxy.profdata");
    assert!(profile.is_file(), "{} is missing", profile.display());
    let expected = |args: &str| {
        format!(
            "{args} -Cprofile-use={} -Cllvm-args=-no-pgo-warn-mismatch",
            profile.display()
        )
    };
    for args in [
        ["--crate-name", "hyper", "-C", "opt-level=3"].as_slice(),
        &["--crate-name", "toml", "-C", "opt-level=s"],
        &["-C", "opt-level=3", "--target", "x86_64-unknown-linux-gnu"],
    ] {
        assert_eq!(wrapped(args), expected(&args.join(" ")));
    }
}

#[test]
fn other_builds_run_rustc_as_given() {
    for args in [
        // cargo's queries, a debug build (no opt-level: the tests), an explicit opt-level 0
        ["-vV"].as_slice(),
        &["--crate-name", "mintproxy", "-C", "debuginfo=2"],
        &["--crate-name", "mintproxy", "-C", "opt-level=0"],
        // cargo fuzz, an instrumented build (bench/layout.py), coverage, another target
        &["-C", "opt-level=3", "--cfg", "fuzzing"],
        &["-C", "opt-level=3", "-Cprofile-generate=/tmp/p"],
        &["-C", "opt-level=3", "-C", "instrument-coverage"],
        &["-C", "opt-level=3", "--target", "aarch64-unknown-linux-gnu"],
    ] {
        assert_eq!(wrapped(args), args.join(" "));
    }
}

#[test]
fn cargo_flags_carry_the_profiles_digest() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let out = Command::new("sha256sum")
        .arg(root.join("link/mintproxy.profdata"))
        .output()
        .expect("sha256sum runs");
    assert!(out.status.success(), "{out:?}");
    let digest = &String::from_utf8(out.stdout).unwrap()[..16];
    let config = fs::read_to_string(root.join(".cargo/config.toml")).unwrap();
    assert!(
        config.contains(&format!(r#"mintproxy_profile=\"{digest}\""#)),
        ".cargo/config.toml's mintproxy_profile is not {digest}, link/mintproxy.profdata's \
         SHA-256: a profile written by hand? bench/layout.py writes both"
    );
}
