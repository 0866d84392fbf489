//! The Debian package made by scripts/package: what it holds, lintian's
//! verdict, and a real install, use and purge with apt in a minimal Debian
//! booted under systemd-nspawn. `make install` too. Slow (a release build, a
//! boot): ignored by a plain `cargo test`; scripts/test runs them with
//! `--ignored`.

mod common;
#[path = "common/nspawn.rs"]
mod nspawn;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use execwatch::output::journald::message_ids;
use nspawn::Container;

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// Run scripts/package once per test binary; the .deb it wrote.
fn package() -> &'static Path {
    static DEB: OnceLock<PathBuf> = OnceLock::new();
    DEB.get_or_init(|| {
        let t = Instant::now();
        let o = Command::new(repo().join("scripts/package"))
            .output()
            .expect("run scripts/package");
        assert!(
            o.status.success(),
            "scripts/package failed:\n{}",
            String::from_utf8_lossy(&o.stderr)
        );
        eprintln!("scripts/package: {:.1} s", t.elapsed().as_secs_f64());
        let listed = String::from_utf8_lossy(&o.stdout).trim().to_string();
        let deb = repo().join(&listed);
        let arch = Command::new("dpkg")
            .arg("--print-architecture")
            .output()
            .unwrap();
        let want = format!(
            "target/debian/execwatch_{}-1_{}.deb",
            env!("CARGO_PKG_VERSION"),
            String::from_utf8_lossy(&arch.stdout).trim()
        );
        assert_eq!(listed, want);
        assert!(deb.is_file(), "{}", deb.display());
        deb
    })
}

fn dpkg_deb(args: &[&str]) -> String {
    let o = Command::new("dpkg-deb")
        .args(args)
        .arg(package())
        .output()
        .unwrap();
    assert!(o.status.success(), "dpkg-deb {args:?}");
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// Files the package installs, without the leading `.`.
const FILES: &[&str] = &[
    "/usr/bin/execwatch",
    "/usr/lib/systemd/system/execwatch.service",
    "/usr/lib/systemd/catalog/execwatch.catalog",
    "/usr/lib/modules-load.d/execwatch.conf",
    "/usr/share/man/man1/execwatch.1.gz",
    "/usr/share/man/man1/execwatch-run.1.gz",
    "/usr/share/man/man1/execwatch-check.1.gz",
    "/usr/share/man/man1/execwatch-detach.1.gz",
    "/usr/share/bash-completion/completions/execwatch",
    "/usr/share/zsh/vendor-completions/_execwatch",
    "/usr/share/fish/vendor_completions.d/execwatch.fish",
    "/usr/share/doc/execwatch/copyright",
    "/usr/share/doc/execwatch/changelog.Debian.gz",
];

#[test]
#[ignore = "builds the release package (slow): scripts/test runs it with --ignored"]
fn package_holds_the_daemon_unit_catalog_man_pages_and_completions() {
    let listing = dpkg_deb(&["--contents"]);
    let files: BTreeSet<&str> = listing
        .lines()
        .filter(|l| l.starts_with('-'))
        .filter_map(|l| l.split_whitespace().last())
        .map(|p| p.trim_start_matches('.'))
        .collect();
    for f in FILES {
        assert!(files.contains(f), "{f} not in the package:\n{listing}");
    }
    assert!(
        files.iter().all(|f| !f.starts_with("/usr/local")),
        "{files:?}"
    );

    let x = std::env::temp_dir().join(format!("execwatch-deb-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&x);
    let o = Command::new("dpkg-deb")
        .arg("-R")
        .arg(package())
        .arg(&x)
        .status()
        .unwrap();
    assert!(o.success());
    let read = |p: &str| std::fs::read_to_string(x.join(p.trim_start_matches('/'))).unwrap();

    // The shipped unit, pointed at /usr/bin and otherwise unchanged.
    let unit = read("/usr/lib/systemd/system/execwatch.service");
    let shipped = std::fs::read_to_string(repo().join("deploy/systemd/execwatch.service")).unwrap();
    assert_eq!(
        unit,
        shipped.replace(
            "ExecStart=/usr/local/bin/execwatch ",
            "ExecStart=/usr/bin/execwatch "
        )
    );
    assert!(unit.contains("\nExecStart=/usr/bin/execwatch "));
    assert_eq!(
        read("/usr/lib/systemd/catalog/execwatch.catalog"),
        std::fs::read_to_string(repo().join("deploy/systemd/execwatch.catalog")).unwrap()
    );

    // deb-systemd-helper's conventions: enabled and started on install,
    // stopped on removal, forgotten on purge.
    let postinst = read("/DEBIAN/postinst");
    assert!(postinst.contains("deb-systemd-helper enable execwatch.service"));
    assert!(postinst.contains("deb-systemd-invoke $_dh_action execwatch.service"));
    assert!(read("/DEBIAN/prerm").contains("deb-systemd-invoke stop execwatch.service"));
    assert!(read("/DEBIAN/postrm").contains("deb-systemd-helper purge execwatch.service"));

    // The man page is the clap definition's: every flag and subcommand.
    let man = Command::new("man")
        .args(["-l", "-P", "cat"])
        .arg(x.join("usr/share/man/man1/execwatch.1.gz"))
        .env("MANWIDTH", "100")
        .output()
        .unwrap();
    let man = String::from_utf8_lossy(&man.stdout);
    for want in [
        "--max-args-bytes",
        "--failed-execs",
        "--metrics-addr",
        "--bpf-pin-dir",
        "execwatch-check(1)",
        "execwatch-run(1)",
        "execwatch-detach(1)",
        env!("CARGO_PKG_VERSION"),
    ] {
        assert!(man.contains(want), "{want} not in the man page:\n{man}");
    }
    for comp in [
        "/usr/share/bash-completion/completions/execwatch",
        "/usr/share/zsh/vendor-completions/_execwatch",
        "/usr/share/fish/vendor_completions.d/execwatch.fish",
    ] {
        let text = read(comp);
        assert!(
            text.contains("max-args-bytes") && text.contains("check"),
            "{comp}"
        );
        assert!(!text.contains("gen-package-files"), "{comp}");
    }
    let copyright = read("/usr/share/doc/execwatch/copyright");
    assert!(copyright.contains("License: GPL-2.0-only"));
    assert!(copyright.contains("/usr/share/common-licenses/GPL-2"));
    std::fs::remove_dir_all(&x).unwrap();
}

#[test]
#[ignore = "builds the release package (slow): scripts/test runs it with --ignored"]
fn lintian_reports_no_errors() {
    let o = Command::new("lintian")
        .args(["--allow-root", "--pedantic"])
        .arg(package())
        .output()
        .expect("lintian is installed by scripts/install-deps --test");
    let out = String::from_utf8_lossy(&o.stdout);
    eprintln!("lintian:\n{out}");
    let errors: Vec<&str> = out.lines().filter(|l| l.starts_with("E:")).collect();
    assert!(errors.is_empty(), "lintian errors:\n{out}");
    // lintian exits non-zero on errors only (warnings are listed above).
    assert!(
        o.status.success(),
        "{out}{}",
        String::from_utf8_lossy(&o.stderr)
    );
}

/// BPF program ids held by these processes (prog and link fds).
fn prog_ids(pids: &[u32]) -> BTreeSet<u32> {
    let mut ids = BTreeSet::new();
    for pid in pids {
        let Ok(fds) = std::fs::read_dir(format!("/proc/{pid}/fdinfo")) else {
            continue;
        };
        for fd in fds.flatten() {
            let info = std::fs::read_to_string(fd.path()).unwrap_or_default();
            ids.extend(
                info.lines()
                    .filter_map(|l| l.strip_prefix("prog_id:"))
                    .filter_map(|v| v.trim().parse::<u32>().ok()),
            );
        }
    }
    ids
}

/// id -> name of every BPF program loaded in the kernel.
fn loaded_programs() -> std::collections::BTreeMap<u32, String> {
    libbpf_rs::query::ProgInfoIter::default()
        .map(|p| (p.id, p.name.to_string_lossy().into_owned()))
        .collect()
}

/// Host pids in the cgroup of `unit` somewhere below `root`.
fn unit_pids(root: &Path, unit: &str) -> Vec<u32> {
    let mut found = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for e in entries.flatten() {
            if !e.file_type().is_ok_and(|t| t.is_dir()) {
                continue;
            }
            if e.file_name() == unit {
                let procs = std::fs::read_to_string(e.path().join("cgroup.procs")).unwrap();
                found.extend(procs.lines().filter_map(|l| l.parse::<u32>().ok()));
            }
            stack.push(e.path());
        }
    }
    found
}

#[test]
#[ignore = "builds the release package and boots a container (slow): scripts/test runs it with --ignored"]
fn apt_install_runs_the_service_and_purge_leaves_nothing() {
    common::require_root();
    let deb = package();
    let t = Instant::now();
    let in_container = format!("/srv/{}", deb.file_name().unwrap().to_string_lossy());
    let prepare = |root: &Path| {
        std::fs::copy(deb, root.join(in_container.trim_start_matches('/'))).unwrap();
        // tests/nspawn.rs once wrote into the cache itself: not here.
        for stale in [
            "etc/systemd/system/execwatch.service",
            "etc/systemd/system/multi-user.target.wants/execwatch.service",
            "usr/local/bin/execwatch",
        ] {
            let _ = std::fs::remove_file(root.join(stale));
        }
    };
    let c = Container::boot("nspawn-package", prepare, &[]);
    eprintln!("boot: {:.1} s", t.elapsed().as_secs_f64());

    // apt install: enabled, started, catalog updated by systemd's trigger.
    let t = Instant::now();
    c.run_ok(&[
        "env",
        "DEBIAN_FRONTEND=noninteractive",
        "apt-get",
        "install",
        "-y",
        "-q",
        &in_container,
    ]);
    eprintln!("apt-get install: {:.1} s", t.elapsed().as_secs_f64());
    assert_eq!(
        c.run_str(&["systemctl", "is-active", "execwatch"]),
        "active",
        "{}",
        c.run_str(&["journalctl", "-u", "execwatch", "--no-pager"])
    );
    assert_eq!(
        c.run_str(&["systemctl", "is-enabled", "execwatch"]),
        "enabled"
    );
    let catalog = c.run_ok(&["journalctl", "--list-catalog"]);
    for id in [
        message_ids::EXEC,
        message_ids::EXEC_FAILED,
        message_ids::STARTED,
    ] {
        assert!(catalog.contains(id), "{id} not in the journal catalog");
    }

    // An exec reaches the journal, written by the packaged binary.
    let m = common::marker("package");
    assert!(c.run(&["/bin/true", &m]).status.success());
    let entry = c.journal_entry(&[&format!("EXECWATCH_ARGV_1={m}")]);
    assert_eq!(entry["EXECWATCH_EXE"], "/usr/bin/true");
    assert_eq!(entry["_SYSTEMD_UNIT"], "execwatch.service");
    assert_eq!(entry["_EXE"], "/usr/bin/execwatch");
    assert_eq!(entry["MESSAGE_ID"], message_ids::EXEC);

    // man execwatch renders (man-db, from the package's gzipped pages).
    let man = c.run(&["env", "MANWIDTH=100", "man", "-P", "cat", "execwatch"]);
    let text = String::from_utf8_lossy(&man.stdout);
    assert!(
        man.status.success(),
        "{}",
        String::from_utf8_lossy(&man.stderr)
    );
    assert!(
        text.contains("--max-args-bytes") && text.contains("execwatch-check(1)"),
        "{text}"
    );
    assert!(c
        .run_ok(&["man", "-P", "cat", "execwatch-check"])
        .contains("requirement"));

    // execwatch check passes on this host.
    let check = c.run(&["execwatch", "check"]);
    let report = String::from_utf8_lossy(&check.stdout);
    eprintln!("execwatch check in the container:\n{report}");
    assert!(check.status.success(), "{report}");
    assert!(
        report.contains("execwatch can run on this host"),
        "{report}"
    );

    // The daemon's BPF programs, to see them go.
    let pids = unit_pids(&c.cgroup, "execwatch.service");
    assert!(!pids.is_empty(), "no process in execwatch.service's cgroup");
    let ids = prog_ids(&pids);
    let loaded = loaded_programs();
    let names: BTreeSet<&str> = ids
        .iter()
        .filter_map(|id| loaded.get(id).map(String::as_str))
        .collect();
    assert!(names.contains("exec_success"), "{names:?} ({ids:?})");

    // apt purge: nothing left behind.
    let t = Instant::now();
    c.run_ok(&[
        "env",
        "DEBIAN_FRONTEND=noninteractive",
        "apt-get",
        "purge",
        "-y",
        "-q",
        "execwatch",
    ]);
    eprintln!("apt-get purge: {:.1} s", t.elapsed().as_secs_f64());
    let left = c.run_str(&[
        "find",
        "/etc",
        "/usr",
        "/var/lib/systemd",
        "/var/lib/dpkg/info",
        "-name",
        "*execwatch*",
    ]);
    assert!(left.is_empty(), "left behind:\n{left}");
    for f in FILES {
        assert!(
            !c.run(&["test", "-e", f]).status.success(),
            "{f} is still there"
        );
    }
    assert!(
        !c.run(&["dpkg", "-s", "execwatch"]).status.success(),
        "dpkg still knows execwatch (config-files?)"
    );
    assert_ne!(
        c.run_str(&["systemctl", "is-active", "execwatch"]),
        "active"
    );
    let catalog = c.run_ok(&["journalctl", "--list-catalog"]);
    assert!(
        !catalog.contains(message_ids::EXEC),
        "the catalog still has execwatch's entries"
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let loaded = loaded_programs();
        let still: Vec<(&u32, &String)> =
            loaded.iter().filter(|(id, _)| ids.contains(id)).collect();
        if still.is_empty() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "BPF programs still loaded after purge: {still:?}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(pids
        .iter()
        .all(|p| !Path::new(&format!("/proc/{p}")).exists()));
}

#[test]
#[ignore = "a release build (slow): scripts/test runs it with --ignored"]
fn make_install_and_uninstall() {
    let dest = std::env::temp_dir().join(format!("execwatch-make-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dest);
    let make = |target: &str| {
        let o = Command::new("make")
            .arg("-C")
            .arg(repo())
            .arg(target)
            .arg(format!("DESTDIR={}", dest.display()))
            .arg("PREFIX=/usr")
            .output()
            .unwrap();
        assert!(
            o.status.success(),
            "make {target}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
    };
    make("install");
    for f in [
        "usr/bin/execwatch",
        "etc/systemd/system/execwatch.service",
        "usr/lib/systemd/catalog/execwatch.catalog",
        "usr/lib/modules-load.d/execwatch.conf",
        "usr/share/man/man1/execwatch.1",
        "usr/share/man/man1/execwatch-check.1",
        "usr/share/bash-completion/completions/execwatch",
        "usr/share/zsh/site-functions/_execwatch",
        "usr/share/fish/vendor_completions.d/execwatch.fish",
    ] {
        assert!(dest.join(f).is_file(), "make install did not install {f}");
    }
    let unit = std::fs::read_to_string(dest.join("etc/systemd/system/execwatch.service")).unwrap();
    assert!(
        unit.contains("\nExecStart=/usr/bin/execwatch "),
        "ExecStart follows PREFIX"
    );
    let version = Command::new(dest.join("usr/bin/execwatch"))
        .arg("--version")
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&version.stdout).starts_with("execwatch "));
    make("uninstall");
    let left: Vec<PathBuf> = walk(&dest);
    assert!(left.is_empty(), "make uninstall left {left:?}");
    std::fs::remove_dir_all(&dest).unwrap();
}

/// Regular files below `dir`.
fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        if e.file_type().is_ok_and(|t| t.is_dir()) {
            files.extend(walk(&e.path()));
        } else {
            files.push(e.path());
        }
    }
    files
}
