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
        (&["--exclude-field", "process.arg"][..], "docs/schema.md"),
        (
            &["--exclude-field", "process.command_line,event.sequence"][..],
            "event.sequence identifies every event",
        ),
        (
            &["--exclude-field", "process"][..],
            "name the fields under it",
        ),
    ] {
        let o = run(args);
        assert_eq!(o.status.code(), Some(2), "{args:?}");
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(err.contains(want), "{args:?}: {err}");
        assert_no_panic(&o);
    }
}

#[test]
fn env_with_its_field_left_out_is_refused_in_one_line() {
    let o = run(&["--env", "LD_PRELOAD", "--exclude-field", "process.env_vars"]);
    assert_eq!(o.status.code(), Some(1));
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("drop one of the two"), "{err}");
    assert_no_panic(&o);
}

#[test]
fn without_privileges_it_says_so_in_one_line() {
    // Both spellings of the daemon: bare and `run`.
    for args in [&[][..], &["run"][..]] {
        let o = unprivileged(args);
        assert_eq!(o.status.code(), Some(1), "{args:?}");
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

/// Run as an unprivileged user with no capabilities at all.
fn unprivileged(args: &[&str]) -> Output {
    common::require_root();
    Command::new("setpriv")
        .args([
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            "--inh-caps=-all",
            "--bounding-set=-all",
            "--",
        ])
        .arg(common::BIN)
        .args(args)
        .output()
        .expect("setpriv (util-linux) is installed by scripts/install-deps")
}

const CHECKED: [&str; 8] = [
    "kernel",
    "BTF",
    "ring buffer",
    "capabilities",
    "tracefs",
    "cgroup v2",
    "journald",
    "bpffs",
];

/// The status word of the line for `name` in a check report.
fn check_status<'a>(out: &'a str, name: &str) -> &'a str {
    out.lines()
        .find(|l| l.get(9..).is_some_and(|rest| rest.starts_with(name)))
        .unwrap_or_else(|| panic!("no line for {name}:\n{out}"))
        .split_whitespace()
        .next()
        .unwrap()
}

#[test]
fn check_as_root_passes_with_a_line_per_requirement() {
    common::require_root();
    let o = run(&["check"]);
    let out = String::from_utf8_lossy(&o.stdout);
    assert_eq!(o.status.code(), Some(0), "{out}");
    assert_eq!(out.lines().count(), CHECKED.len() + 1, "{out}");
    for name in ["kernel", "BTF", "ring buffer", "capabilities"] {
        assert_eq!(check_status(&out, name), "ok", "{out}");
    }
    for name in CHECKED {
        assert!(
            ["ok", "missing"].contains(&check_status(&out, name)),
            "{out}"
        );
    }
    assert!(
        out.contains("ring buffer   BPF_MAP_TYPE_RINGBUF supported (probed)"),
        "{out}"
    );
    // Which failed-exec hook: root may mount tracefs, so the tracepoints;
    // the packaged unit (CAP_BPF, CAP_PERFMON) may not, and the line says
    // so when tracefs is not mounted.
    let tracefs = out
        .lines()
        .find(|l| l.starts_with("ok       tracefs"))
        .unwrap_or_else(|| panic!("{out}"));
    assert!(tracefs.contains("syscall exit tracepoints"), "{tracefs}");
    let mounted = execwatch::tracefs::find_mounted().is_some();
    assert_eq!(
        tracefs.contains(
            "the packaged unit (CAP_BPF and CAP_PERFMON only) would use the sys_exit hook"
        ),
        !mounted,
        "{tracefs}"
    );
    assert!(
        out.lines()
            .last()
            .unwrap()
            .starts_with("execwatch can run on this host"),
        "{out}"
    );
    assert!(
        o.stderr.is_empty(),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
}

#[test]
fn check_unprivileged_fails_and_names_the_capabilities() {
    let o = unprivileged(&["check"]);
    let out = String::from_utf8_lossy(&o.stdout);
    assert_eq!(o.status.code(), Some(1), "{out}");
    let caps = out
        .lines()
        .find(|l| l.starts_with("missing  capabilities"))
        .unwrap_or_else(|| panic!("{out}"));
    assert!(
        caps.contains("CAP_BPF") && caps.contains("CAP_PERFMON") && caps.contains("root"),
        "{caps}"
    );
    // Not probed without CAP_BPF: judged by the kernel version, not "missing".
    assert_eq!(check_status(&out, "ring buffer"), "ok", "{out}");
    assert_eq!(
        out.lines().last().unwrap(),
        "execwatch cannot run on this host: missing capabilities"
    );
    assert_no_panic(&o);
}

#[test]
fn version_has_the_git_commit() {
    let o = run(&["--version"]);
    assert!(o.status.success());
    let out = String::from_utf8_lossy(&o.stdout);
    let want = match Command::new("git")
        .args(["rev-parse", "--short", "HEAD"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
    {
        Ok(g) if g.status.success() => String::from_utf8_lossy(&g.stdout).trim().to_string(),
        _ => "unknown".to_string(),
    };
    assert_eq!(
        out.trim(),
        format!("execwatch {} (git {want})", env!("CARGO_PKG_VERSION"))
    );
}

#[test]
fn run_subcommand_takes_the_daemon_flags() {
    let mut cmd = Command::new(common::BIN);
    cmd.args(["run", "--format", "json", "--comm", "true"]);
    // Waits for READY=1, so the exec below comes after the attach.
    let d = common::Daemon::start_cmd(cmd);
    let m = common::marker("run-subcommand");
    assert!(Command::new("/bin/true")
        .arg(&m)
        .status()
        .unwrap()
        .success());
    let ev = d
        .wait_for(1, std::time::Duration::from_secs(10), |v| {
            common::has_arg(v, &m)
        })
        .remove(0);
    assert_eq!(ev["process"]["name"], "true");
    assert!(d.stop().status.success());
}

#[test]
fn daemon_flags_before_a_subcommand_are_a_usage_error() {
    let o = run(&["--format", "json", "check"]);
    assert_eq!(o.status.code(), Some(2));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("'check' cannot be used with '--format <FORMAT>'"),
        "{err}"
    );
    assert_no_panic(&o);
}

#[test]
fn detach_needs_its_directory_and_takes_no_daemon_flags() {
    let o = run(&["detach"]);
    assert_eq!(o.status.code(), Some(2));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("--bpf-pin-dir <DIR>"), "{err}");
    assert_no_panic(&o);
    let o = run(&["detach", "--bpf-pin-dir", "/tmp/x", "--format", "json"]);
    assert_eq!(o.status.code(), Some(2));
    assert_no_panic(&o);
}

#[test]
fn detach_of_a_directory_that_does_not_exist_has_nothing_to_do() {
    let dir = std::env::temp_dir().join(common::marker("no-pins"));
    let o = run(&["detach", "--bpf-pin-dir", dir.to_str().unwrap()]);
    assert!(o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("does not exist: nothing to detach"), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
}

/// A directory of stand-in programs (`name`, shell body), each logging its
/// arguments to `calls`, and an empty HOME.
struct FakeBin {
    dir: std::path::PathBuf,
}

impl FakeBin {
    fn new(name: &str, programs: &[(&str, &str)]) -> FakeBin {
        use std::os::unix::fs::PermissionsExt;
        let dir =
            std::env::temp_dir().join(format!("execwatch-fakebin-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("bin")).unwrap();
        std::fs::create_dir_all(dir.join("home")).unwrap();
        for (prog, body) in programs {
            let path = dir.join("bin").join(prog);
            let log = dir.join("calls");
            let script = format!(
                "#!/bin/sh\necho \"{prog} $*\" >> {}\n{body}\n",
                log.display()
            );
            std::fs::write(&path, script).unwrap();
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
        }
        FakeBin { dir }
    }

    /// scripts/install-deps with only these programs and the system's.
    fn install_deps(&self, args: &[&str]) -> Output {
        Command::new(concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/install-deps"))
            .args(args)
            .env_clear()
            .env("HOME", self.dir.join("home"))
            .env(
                "PATH",
                format!(
                    "{}:/usr/sbin:/usr/bin:/sbin:/bin",
                    self.dir.join("bin").display()
                ),
            )
            .output()
            .unwrap()
    }

    fn calls(&self) -> String {
        std::fs::read_to_string(self.dir.join("calls")).unwrap_or_default()
    }
}

impl Drop for FakeBin {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

#[test]
fn install_deps_without_cargo_points_to_rustup_and_installs_no_debian_rust() {
    // Debian 12's cargo is Rust 1.63: too old, so never installed.
    assert!(
        !std::path::Path::new("/usr/bin/cargo").exists(),
        "this test needs a host without Debian's cargo"
    );
    let fake = FakeBin::new("nocargo", &[("apt-get", "exit 1")]);
    let o = fake.install_deps(&[]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert_eq!(fake.calls(), "", "apt-get is not run");
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.contains("https://rustup.rs") && err.contains("1.85"),
        "{err}"
    );
}

#[test]
fn install_deps_test_adds_rustfmt_and_clippy_with_rustup() {
    let fake = FakeBin::new(
        "components",
        &[
            ("apt-get", "exit 1"),
            ("rustc", "echo 'rustc 1.90.0 (fake)'"),
            // fmt and clippy are missing; everything else (cargo deb) is there.
            (
                "cargo",
                r#"case "$1" in fmt|clippy) exit 101;; *) exit 0;; esac"#,
            ),
            ("rustup", "exit 0"),
        ],
    );
    let o = fake.install_deps(&["--test"]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(0), "{err}\n{}", fake.calls());
    assert!(
        fake.calls()
            .lines()
            .any(|l| l == "rustup component add rustfmt clippy"),
        "{}",
        fake.calls()
    );
    assert!(!fake.calls().contains("apt-get"), "{}", fake.calls());
    // Without --test the components are not needed.
    let fake = FakeBin::new(
        "components-run",
        &[
            ("rustc", "echo 'rustc 1.90.0 (fake)'"),
            (
                "cargo",
                r#"case "$1" in fmt|clippy) exit 101;; *) exit 0;; esac"#,
            ),
            ("rustup", "exit 0"),
        ],
    );
    assert!(fake.install_deps(&[]).status.success());
    assert!(!fake.calls().contains("rustup"), "{}", fake.calls());
}
