//! Compiles the BPF program and generates its skeleton into OUT_DIR, and
//! records the git commit for `--version`.
use std::env;
use std::path::{Path, PathBuf};
use std::process::Command;

use libbpf_cargo::SkeletonBuilder;

const SRC: &str = "src/bpf/execve.bpf.c";
const HEADERS: &[&str] = &[
    "src/bpf/execve.h",
    "src/bpf/path.bpf.h",
    "src/bpf/core_fixes.bpf.h",
];

fn git(args: &[&str]) -> Option<String> {
    let out = Command::new("git").args(args).output().ok()?;
    let s = String::from_utf8(out.stdout).ok()?.trim().to_string();
    (out.status.success() && !s.is_empty()).then_some(s)
}

/// The short commit this is built from: EXECWATCH_GIT_COMMIT if set (a
/// build from a tarball that knows it), else git's, else "unknown". Rebuilt
/// when HEAD moves.
fn git_commit() -> String {
    println!("cargo:rerun-if-env-changed=EXECWATCH_GIT_COMMIT");
    if let Ok(c) = env::var("EXECWATCH_GIT_COMMIT") {
        return c;
    }
    let Some(commit) = git(&["rev-parse", "--short", "HEAD"]) else {
        return "unknown".into();
    };
    // HEAD, the branch it names, and packed-refs: a missing path would make
    // cargo rerun this script on every build, so only existing ones.
    let mut watched = vec![git(&["rev-parse", "--git-path", "HEAD"])];
    if let Some(branch) = git(&["symbolic-ref", "-q", "HEAD"]) {
        watched.push(git(&["rev-parse", "--git-path", &branch]));
    }
    watched.push(git(&["rev-parse", "--git-path", "packed-refs"]));
    for p in watched.into_iter().flatten() {
        if Path::new(&p).exists() {
            println!("cargo:rerun-if-changed={p}");
        }
    }
    commit
}

fn main() {
    println!("cargo:rustc-env=EXECWATCH_GIT_COMMIT={}", git_commit());
    let out = PathBuf::from(env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"));
    let arch = env::var("CARGO_CFG_TARGET_ARCH").expect("cargo sets CARGO_CFG_TARGET_ARCH");
    // libbpf's __TARGET_ARCH_* names differ from Rust's for a few targets.
    let bpf_arch = match arch.as_str() {
        "x86_64" => "x86",
        "aarch64" => "arm64",
        "riscv64" => "riscv",
        "powerpc64" => "powerpc",
        "s390x" => "s390",
        other => other,
    };
    let vmlinux_dir = PathBuf::from("vmlinux").join(&arch);
    let vmlinux_h = vmlinux_dir.join("vmlinux.h");
    if !vmlinux_h.exists() {
        panic!(
            "no {}: generate it with scripts/gen-vmlinux-h on a {arch} machine",
            vmlinux_h.display()
        );
    }

    let mut clang_args: Vec<std::ffi::OsString> = vec![
        "-I".into(),
        vmlinux_dir.into_os_string(),
        format!("-D__TARGET_ARCH_{bpf_arch}").into(),
        // v3: atomic fetch-add (the global sequence number), 32-bit jumps.
        "-mcpu=v3".into(),
        "-Wall".into(),
        "-Werror".into(),
    ];
    // Test-only: another record layout, for tests/restart.rs's upgrade test.
    if env::var_os("EXECWATCH_TEST_LAYOUT").is_some() {
        clang_args.push("-DEXECWATCH_TEST_LAYOUT".into());
    }
    println!("cargo:rerun-if-env-changed=EXECWATCH_TEST_LAYOUT");

    SkeletonBuilder::new()
        .source(SRC)
        .clang_args(clang_args)
        .build_and_generate(out.join("execve.skel.rs"))
        .expect("building the BPF skeleton failed");

    println!("cargo:rerun-if-changed={SRC}");
    for h in HEADERS {
        println!("cargo:rerun-if-changed={h}");
    }
    println!("cargo:rerun-if-changed={}", vmlinux_h.display());
}
