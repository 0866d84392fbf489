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
    let vmlinux_h = vmlinux_header(&arch);
    if !vmlinux_h.exists() {
        panic!(
            "no {}: generate it with scripts/gen-vmlinux-h on a {arch} machine",
            vmlinux_h.display()
        );
    }
    // Test-only: another record layout, for tests/restart.rs's upgrade test.
    let test_layout = env::var_os("EXECWATCH_TEST_LAYOUT").is_some();
    println!("cargo:rerun-if-env-changed=EXECWATCH_TEST_LAYOUT");

    SkeletonBuilder::new()
        .source(SRC)
        .clang_args(clang_args(&arch, test_layout))
        .build_and_generate(out.join("execve.skel.rs"))
        .expect("building the BPF skeleton failed");

    // The other architectures with a header are compiled too (not loaded):
    // their own code paths (syscall numbers, compat checks, pt_regs) must
    // build wherever the native one does. bpf_loader's tests open them.
    for other in ARCHES.iter().filter(|&&a| a != arch) {
        let header = vmlinux_header(other);
        if !header.exists() {
            continue;
        }
        let obj = out.join(format!("execve.{other}.bpf.o"));
        SkeletonBuilder::new()
            .source(SRC)
            .obj(&obj)
            .clang_args(clang_args(other, test_layout))
            .build()
            .unwrap_or_else(|e| panic!("building the BPF program for {other} failed: {e:#}"));
        println!("cargo:rerun-if-changed={}", header.display());
    }

    println!("cargo:rerun-if-changed={SRC}");
    for h in HEADERS {
        println!("cargo:rerun-if-changed={h}");
    }
    println!("cargo:rerun-if-changed={}", vmlinux_h.display());
}

/// Architectures the BPF program is written for (Rust's names).
const ARCHES: [&str; 2] = ["x86_64", "aarch64"];

fn vmlinux_header(arch: &str) -> PathBuf {
    PathBuf::from("vmlinux").join(arch).join("vmlinux.h")
}

fn clang_args(arch: &str, test_layout: bool) -> Vec<std::ffi::OsString> {
    // libbpf's __TARGET_ARCH_* names differ from Rust's for a few targets.
    let bpf_arch = match arch {
        "x86_64" => "x86",
        "aarch64" => "arm64",
        "riscv64" => "riscv",
        "powerpc64" => "powerpc",
        "s390x" => "s390",
        other => other,
    };
    let mut args: Vec<std::ffi::OsString> = vec![
        "-I".into(),
        PathBuf::from("vmlinux").join(arch).into_os_string(),
        format!("-D__TARGET_ARCH_{bpf_arch}").into(),
        // v3: atomic fetch-add (the global sequence number), 32-bit jumps.
        "-mcpu=v3".into(),
        "-Wall".into(),
        "-Werror".into(),
    ];
    if test_layout {
        args.push("-DEXECWATCH_TEST_LAYOUT".into());
    }
    args
}
