//! Compiles the BPF program and generates its skeleton into OUT_DIR.
use std::env;
use std::path::PathBuf;

use libbpf_cargo::SkeletonBuilder;

const SRC: &str = "src/bpf/execve.bpf.c";
const HEADERS: &[&str] = &["src/bpf/execve.h"];

fn main() {
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
