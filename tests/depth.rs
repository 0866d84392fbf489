//! Paths at and past the walkers' depth limits, with real files and cgroups:
//! a path exactly at the limit is whole (absolute, not flagged); one past it
//! is its tail, flagged, without a leading `/`; a cut cgroup path stays
//! flagged on every event of that cgroup, not only the first.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use common::{has_arg, marker, Daemon};
use execwatch::bpf_loader::types::event_limits as L;

/// `base/d/d/.../d` with `n` components below `base`.
fn nested(base: &Path, n: usize) -> PathBuf {
    (0..n).fold(base.to_path_buf(), |p, _| p.join("d"))
}

fn components(p: &str) -> usize {
    p.split('/').filter(|c| !c.is_empty()).count()
}

/// A path exactly at the limit is whole and unflagged; one past it is its
/// tail, flagged. `want` is the path as the process sees it.
fn assert_depth(ev: &serde_json::Value, want: &str, whole: bool, depth: usize) {
    let got = ev["process"]["executable"].as_str().unwrap();
    if whole {
        assert_eq!(got, want, "{ev}");
        assert!(
            ev["execwatch"].get("executable_truncated").is_none(),
            "{ev}"
        );
    } else {
        assert!(!got.starts_with('/'), "a cut path is not absolute: {got}");
        assert_eq!(components(got), depth, "{got}");
        assert!(want.ends_with(got), "{got}");
        assert_eq!(ev["execwatch"]["executable_truncated"], true, "{ev}");
    }
}

#[test]
fn executable_paths_at_and_past_the_depth_limit() {
    let d = Daemon::start(&[]);
    let tmp = common::tempdir::TempDir::new("depth");
    let depth = L::EXE_PATH_MAX_DEPTH.0 as usize;
    // The file itself is one component: its directory holds the rest.
    let base_depth = components(tmp.0.to_str().unwrap());
    for (total, whole) in [(depth, true), (depth + 1, false)] {
        let dir = nested(&tmp.0, total - base_depth - 1);
        std::fs::create_dir_all(&dir).unwrap();
        let exe = dir.join("prog");
        std::fs::copy("/bin/true", &exe).unwrap();
        let m = marker("depth");
        assert!(Command::new(&exe).arg(&m).status().unwrap().success());
        let ev = d
            .wait_for(1, Duration::from_secs(10), |v| has_arg(v, &m))
            .remove(0);
        assert_depth(&ev, exe.to_str().unwrap(), whole, depth);
    }
    assert!(d.stop().status.success());
}

/// In a chroot the walk stops at the process's root: the limit counts from
/// there, and a path exactly at it reaches the root on its last step.
#[test]
fn executable_paths_at_and_past_the_depth_limit_in_a_chroot() {
    let d = Daemon::start(&[]);
    let root = common::tempdir::TempDir::new("depthroot");
    common::busybox_rootfs(&root.0);
    let depth = L::EXE_PATH_MAX_DEPTH.0 as usize;
    for (total, whole) in [(depth, true), (depth + 1, false)] {
        let inside = nested(Path::new("/"), total - 1).join("true");
        let exe = root.0.join(inside.strip_prefix("/").unwrap());
        std::fs::create_dir_all(exe.parent().unwrap()).unwrap();
        // busybox runs the applet its name says.
        std::fs::copy("/bin/busybox", &exe).unwrap();
        let m = marker("chrootdepth");
        common::run_ok(Command::new("chroot").arg(&root.0).arg(&inside).arg(&m));
        // The exec in the chroot (argv[0] is its path), not chroot's own.
        let argv0 = inside.to_str().unwrap();
        let ev = d
            .wait_for(1, Duration::from_secs(10), |v| {
                has_arg(v, &m) && v["process"]["args"][0] == argv0
            })
            .remove(0);
        assert_depth(&ev, argv0, whole, depth);
    }
    assert!(d.stop().status.success());
}

#[test]
fn cgroup_paths_at_and_past_the_depth_limit() {
    let d = Daemon::start(&[]);
    let root = execwatch::cgroups::cgroup2_mount().expect("a cgroup v2 mount");
    let top = root.join(marker("cgdepth"));
    let depth = L::CGROUP_PATH_MAX_DEPTH.0 as usize;
    let run_in = |dir: &Path, m: &str| {
        let script = format!(
            "echo $$ > {}/cgroup.procs && exec /bin/true {m}",
            dir.display()
        );
        assert!(Command::new("sh")
            .args(["-c", &script])
            .status()
            .unwrap()
            .success());
    };
    let at_limit = nested(&top, depth - 1);
    let past = nested(&top, depth);
    std::fs::create_dir_all(&past).unwrap();
    let mut seen = Vec::new();
    for (dir, whole) in [(&at_limit, true), (&past, false), (&past, false)] {
        let m = marker("cg");
        run_in(dir, &m);
        let ev = d
            .wait_for(1, Duration::from_secs(10), |v| has_arg(v, &m))
            .remove(0);
        let path = ev["execwatch"]["cgroup"]["path"]
            .as_str()
            .unwrap()
            .to_string();
        let want = dir
            .strip_prefix(&root)
            .unwrap()
            .to_str()
            .unwrap()
            .to_string();
        if whole {
            assert_eq!(path, format!("/{want}"), "{ev}");
            assert!(
                ev["execwatch"]["cgroup"].get("path_truncated").is_none(),
                "{ev}"
            );
        } else {
            assert!(!path.starts_with('/') && want.ends_with(&path), "{path}");
            // Every event of the cgroup says so, the second as the first.
            assert_eq!(ev["execwatch"]["cgroup"]["path_truncated"], true, "{ev}");
        }
        seen.push(ev);
    }
    assert!(d.stop().status.success());
    // Remove the cgroups, deepest first (they are empty again: sh exec'd
    // /bin/true, which exited).
    for n in (0..=depth).rev() {
        let _ = std::fs::remove_dir(nested(&top, n));
    }
}
