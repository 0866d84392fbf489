//! Bad input and a host that cannot run execwatch: one clear line, a non-zero
//! exit, no panic.

mod common;

use std::process::{Command, Output};

fn run(args: &[&str]) -> Output {
    Command::new(common::BIN)
        .args(args)
        .output()
        .expect("run execwatch")
}

fn assert_no_panic(o: &Output) {
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        !err.contains("panicked") && !err.contains("backtrace"),
        "{err}"
    );
}

#[test]
fn unknown_flag_is_a_usage_error() {
    let o = run(&["--no-such-flag"]);
    assert_eq!(o.status.code(), Some(2));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("unexpected argument '--no-such-flag'"),
        "{err}"
    );
    assert!(err.contains("Usage:"), "{err}");
    assert_no_panic(&o);
}

#[test]
fn bad_values_are_usage_errors_naming_the_rule() {
    for (args, want) in [
        (&["--ring-buffer-size", "3"][..], "power of two"),
        (&["--ring-buffer-size", "100K"][..], "power of two"),
        (&["--max-args-bytes", "1MiB"][..], "between 1 and 131072"),
        (&["--max-args-bytes", "lots"][..], "is not a size"),
        (&["--format", "xml"][..], "invalid value 'xml'"),
        (&["--poll-interval", "0"][..], "--poll-interval"),
    ] {
        let o = run(args);
        assert_eq!(o.status.code(), Some(2), "{args:?}");
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(err.contains(want), "{args:?}: {err}");
        assert_no_panic(&o);
    }
}

#[test]
fn without_privileges_it_says_so_in_one_line() {
    // Needs root to drop to an unprivileged user with no capabilities.
    common::require_root();
    let o = Command::new("setpriv")
        .args([
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            "--inh-caps=-all",
            "--bounding-set=-all",
            "--",
        ])
        .arg(common::BIN)
        .output()
        .expect("setpriv (util-linux) is installed by scripts/install-deps");
    assert_eq!(o.status.code(), Some(1));
    let err = String::from_utf8_lossy(&o.stderr);
    let lines: Vec<&str> = err.lines().collect();
    assert_eq!(lines.len(), 1, "{err}");
    assert!(
        lines[0].starts_with("execwatch: error: insufficient privileges"),
        "{err}"
    );
    assert!(
        lines[0].contains("CAP_BPF") && lines[0].contains("root"),
        "{err}"
    );
    assert_no_panic(&o);
}

#[test]
fn help_lists_every_flag() {
    let o = run(&["--help"]);
    assert!(o.status.success());
    let out = String::from_utf8_lossy(&o.stdout);
    for flag in [
        "--format",
        "--max-args-bytes",
        "--ring-buffer-size",
        "--poll-interval",
        "--failed-execs",
    ] {
        assert!(out.contains(flag), "{flag} missing from --help");
    }
}
