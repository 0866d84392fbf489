//! The shipped unit, unchanged, under a real systemd (PID 1 of a
//! systemd-nspawn container booted from a minimal Debian rootfs): the
//! hardening must not break the daemon. Slow (a boot, and a debootstrap on
//! first use), so it is ignored by a plain `cargo test`; scripts/test runs it
//! with `--ignored`. The Debian package gets the same treatment in
//! tests/package.rs.

mod common;
#[path = "common/nspawn.rs"]
mod nspawn;

use common::marker;
use nspawn::Container;

#[test]
#[ignore = "boots a container (slow): scripts/test runs it with --ignored"]
fn shipped_unit_runs_under_real_systemd() {
    common::require_root();
    // The shipped unit, unchanged, enabled; the binary bind-mounted in.
    let unit =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/systemd/execwatch.service");
    let prepare = |root: &std::path::Path| {
        std::fs::copy(&unit, root.join("etc/systemd/system/execwatch.service")).unwrap();
        let wants = root.join("etc/systemd/system/multi-user.target.wants");
        std::fs::create_dir_all(&wants).unwrap();
        let _ = std::fs::remove_file(wants.join("execwatch.service"));
        std::os::unix::fs::symlink(
            "/etc/systemd/system/execwatch.service",
            wants.join("execwatch.service"),
        )
        .unwrap();
        std::fs::write(root.join("usr/local/bin/execwatch"), b"").unwrap(); // bind target
    };
    let bind = format!("--bind-ro={}:/usr/local/bin/execwatch", common::BIN);
    let container = Container::boot("nspawn-unit", prepare, &[bind]);
    assert_eq!(
        container.run_str(&["systemctl", "is-active", "execwatch"]),
        "active",
        "see {}",
        container.log.display()
    );

    // An exec inside the container lands in the container's journal.
    let m = marker("nspawn");
    assert!(container.run(&["/bin/true", &m]).status.success());
    let entry = container.journal_entry(&[&format!("EXECWATCH_ARGV_1={m}")]);
    assert_eq!(entry["EXECWATCH_EXE"], "/usr/bin/true");
    assert_eq!(entry["SYSLOG_IDENTIFIER"], "execwatch");
    assert_eq!(entry["_SYSTEMD_UNIT"], "execwatch.service");

    // A clean stop under systemd: SIGTERM, drain, exit 0.
    container.run_ok(&["systemctl", "stop", "execwatch"]);
    let result = container.run_str(&[
        "systemctl",
        "show",
        "-p",
        "Result",
        "-p",
        "ExecMainStatus",
        "execwatch",
    ]);
    assert!(
        result.contains("Result=success") && result.contains("ExecMainStatus=0"),
        "{result}"
    );
    let cg = container.cgroup.clone();
    drop(container);
    assert!(!cg.exists(), "the container's cgroup is cleaned up");
}
