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
        let got = ev["process"]["executable"].as_str().unwrap();
        if whole {
            assert_eq!(got, exe.to_str().unwrap(), "{total} components: {ev}");
            assert!(
                ev["execwatch"].get("executable_truncated").is_none(),
                "{ev}"
            );
        } else {
            assert!(!got.starts_with('/'), "a cut path is not absolute: {got}");
            assert_eq!(components(got), depth, "{got}");
            assert!(exe.to_str().unwrap().ends_with(got), "{got}");
            assert_eq!(ev["execwatch"]["executable_truncated"], true, "{ev}");
        }
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
