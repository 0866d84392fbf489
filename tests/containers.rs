//! Attribution to containers, pods, systemd units and pid namespaces, with
//! real OCI containers (runc), real cgroups and real namespaces; and the
//! in-kernel filters.

mod common;

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use common::{has_arg, marker, run_quiet, Daemon};
use serde_json::Value;

const WAIT: Duration = Duration::from_secs(30);

fn hex64(seed: &str) -> String {
    // A deterministic 64-hex id from the marker (no rand dependency).
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    let mut out = String::new();
    for round in 0..4u64 {
        for b in seed.bytes().chain(round.to_le_bytes()) {
            h = (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3);
        }
        out.push_str(&format!("{h:016x}"));
    }
    out
}

/// A runc bundle with a static busybox rootfs, running `sh -c 'true MARKER'`
/// in `cgroups_path`.
fn run_container(name: &str, cgroups_path: &str, m: &str) {
    let dir = std::env::temp_dir().join(format!("execwatch-bundle-{name}"));
    let _ = std::fs::remove_dir_all(&dir);
    let bin = dir.join("rootfs/bin");
    std::fs::create_dir_all(&bin).unwrap();
    std::fs::copy("/bin/busybox", bin.join("busybox"))
        .expect("busybox-static is installed by scripts/install-deps");
    for link in ["sh", "true"] {
        std::os::unix::fs::symlink("busybox", bin.join(link)).unwrap();
    }
    let st = Command::new("runc")
        .arg("spec")
        .current_dir(&dir)
        .status()
        .expect("runc is installed by scripts/install-deps");
    assert!(st.success());
    let cfg_path = dir.join("config.json");
    let mut cfg: Value = serde_json::from_slice(&std::fs::read(&cfg_path).unwrap()).unwrap();
    cfg["process"]["terminal"] = false.into();
    cfg["process"]["args"] = serde_json::json!(["/bin/sh", "-c", format!("/bin/true {m}")]);
    cfg["linux"]["cgroupsPath"] = cgroups_path.into();
    std::fs::write(&cfg_path, serde_json::to_vec(&cfg).unwrap()).unwrap();
    let out = Command::new("runc")
        .args(["run", "--bundle"])
        .arg(&dir)
        .arg(name)
        .output()
        .unwrap();
    let _ = Command::new("runc").args(["delete", "-f", name]).output();
    assert!(
        out.status.success(),
        "runc run: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn oci_containers_are_attributed_by_runtime_naming() {
    let d = Daemon::start(&[]);
    let pod = "8a3b2c1d-1234-4abc-9def-0123456789ab";
    let cases: Vec<(String, &str, Option<&str>)> = vec![
        ("/system.slice/docker-{ID}.scope".into(), "docker", None),
        ("/docker/{ID}".into(), "docker", None),
        ("/system.slice/cri-containerd-{ID}.scope".into(), "containerd", None),
        ("/machine.slice/crio-{ID}.scope".into(), "cri-o", None),
        ("/machine.slice/libpod-{ID}.scope".into(), "podman", None),
        (
            format!(
                "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{}.slice/cri-containerd-{{ID}}.scope",
                pod.replace('-', "_")
            ),
            "containerd",
            Some(pod),
        ),
    ];
    let mut expected = Vec::new();
    for (i, (template, runtime, pod_uid)) in cases.iter().enumerate() {
        let m = marker(&format!("ctr{i}"));
        let id = hex64(&m);
        let path = template.replace("{ID}", &id);
        run_container(&format!("ew-{}-{i}", std::process::id()), &path, &m);
        expected.push((m, id, path, *runtime, *pod_uid));
    }
    for (m, id, path, runtime, pod_uid) in &expected {
        let e = d.wait_for(1, WAIT, |v| has_arg(v, m)).remove(0);
        assert_eq!(e["container"]["id"], id.as_str(), "{path}: {e}");
        assert_eq!(e["container"]["runtime"], *runtime, "{path}");
        assert_eq!(e["execwatch"]["cgroup"]["path"], path.as_str());
        assert_eq!(
            e["execwatch"]["pid_ns"]["host"], false,
            "runc makes a pid namespace"
        );
        assert!(
            e["execwatch"]["systemd"].get("unit").is_none(),
            "a container is not a unit: {e}"
        );
        match pod_uid {
            Some(uid) => {
                assert_eq!(e["kubernetes"]["pod"]["uid"], *uid);
                assert_eq!(e["orchestrator"]["type"], "kubernetes");
            }
            None => assert!(e.get("kubernetes").is_none()),
        }
        // The container's own view of the executable.
        assert_eq!(e["process"]["executable"], "/bin/busybox");
    }
    d.stop();
}

/// Where this host mounts cgroup v2 (pure or hybrid).
fn cgroup2_root() -> PathBuf {
    execwatch::cgroups::cgroup2_mount().expect("a cgroup v2 mount")
}

/// Make `rel` under the cgroup v2 root and run `sh -c 'join; exec true M'`.
fn run_in_cgroup(rel: &str, m: &str, extra: &[&str]) {
    let dir = cgroup2_root().join(rel.trim_start_matches('/'));
    std::fs::create_dir_all(&dir).unwrap();
    let script = format!(
        "echo $$ > {}/cgroup.procs && exec /bin/true {m} {}",
        dir.display(),
        extra.join(" ")
    );
    assert!(run_quiet(Command::new("/bin/sh").arg("-c").arg(&script)).success());
    let _ = std::fs::remove_dir(&dir);
}

#[test]
fn a_host_service_carries_its_unit_and_no_container() {
    let d = Daemon::start(&[]);
    let m = marker("unit");
    let unit = format!("execwatch-test-{}.service", std::process::id());
    run_in_cgroup(&format!("system.slice/{unit}"), &m, &[]);
    let e = d.wait_for(1, WAIT, |v| has_arg(v, &m)).remove(0);
    d.stop();
    assert_eq!(e["execwatch"]["systemd"]["unit"], unit.as_str());
    assert_eq!(e["execwatch"]["systemd"]["slice"], "system.slice");
    assert!(e.get("container").is_none());
    assert_eq!(e["execwatch"]["pid_ns"]["host"], true);
    assert_eq!(
        e["execwatch"]["cgroup"]["path"],
        format!("/system.slice/{unit}")
    );
}

#[test]
fn a_new_pid_namespace_gives_the_inner_pid() {
    let d = Daemon::start(&[]);
    let m = marker("pidns");
    assert!(
        run_quiet(Command::new("unshare").args(["--pid", "--fork", "/bin/true", &m])).success()
    );
    // unshare's own exec carries the marker too: take the inner `true`.
    let e = d
        .wait_for(1, WAIT, |v| {
            has_arg(v, &m) && v["process"]["name"] == "true"
        })
        .remove(0);
    d.stop();
    assert_eq!(e["execwatch"]["pid_ns"]["pid"], 1);
    assert_ne!(e["process"]["pid"], 1);
    assert_eq!(e["execwatch"]["pid_ns"]["host"], false);
    let own = std::fs::read_link("/proc/self/ns/pid").unwrap();
    assert_ne!(
        own.to_string_lossy(),
        format!("pid:[{}]", e["execwatch"]["pid_ns"]["inode"])
    );
}

/// Run `f` under a daemon started with `args`, then return (our events, summary).
fn filtered(args: &[&str], last: &str, f: impl FnOnce()) -> (Vec<Value>, Value) {
    let d = Daemon::start(args);
    f();
    d.wait_for(1, WAIT, |v| has_arg(v, last));
    let stopped = d.stop();
    let s = stopped.summary();
    (stopped.events, s)
}

fn count(evs: &[Value], m: &str) -> usize {
    evs.iter().filter(|v| has_arg(v, m)).count()
}

#[test]
fn filter_by_uid_costs_no_record() {
    let (yes, no) = (marker("uid-yes"), marker("uid-no"));
    let (evs, s) = filtered(&["--uid", "nobody"], &yes, || {
        for _ in 0..20 {
            assert!(run_quiet(Command::new("/bin/true").arg(&no)).success());
        }
        assert!(run_quiet(std::os::unix::process::CommandExt::uid(
            Command::new("/bin/true").arg(&yes),
            65534
        ))
        .success());
    });
    assert_eq!(count(&evs, &no), 0);
    assert_eq!(count(&evs, &yes), 1);
    // The proof that filtered execs cost no record: the kernel saw (made
    // records for) exactly what was delivered, and counted the rest filtered.
    assert!(s["filtered"].as_u64().unwrap() >= 20, "{s}");
    assert_eq!(s["seen"], s["events"], "{s}");
    assert!(
        evs.iter().all(|v| v["user"]["id"] == "65534"),
        "only uid 65534"
    );
}

#[test]
fn filter_by_comm_and_exclude_comm() {
    let m = marker("comm");
    let last = marker("comm-last");
    let (evs, _) = filtered(&["--comm", "true"], &last, || {
        assert!(run_quiet(Command::new("/bin/echo").arg(&m)).success());
        assert!(run_quiet(Command::new("/bin/true").arg(&m)).success());
        assert!(run_quiet(Command::new("/bin/true").arg(&last)).success());
    });
    assert!(evs.iter().all(|v| v["process"]["name"] == "true"));
    assert_eq!(count(&evs, &m), 1);

    let m = marker("xcomm");
    let last = marker("xcomm-last");
    let (evs, s) = filtered(&["--exclude-comm", "echo"], &last, || {
        assert!(run_quiet(Command::new("/bin/echo").arg(&m)).success());
        assert!(run_quiet(Command::new("/bin/true").arg(&m)).success());
        assert!(run_quiet(Command::new("/bin/true").arg(&last)).success());
    });
    assert!(evs.iter().all(|v| v["process"]["name"] != "echo"));
    assert_eq!(count(&evs, &m), 1);
    assert!(s["filtered"].as_u64().unwrap() >= 1);
}

#[test]
fn filter_by_cgroup_subtree() {
    let base = format!("execwatch-filter-{}", std::process::id());
    let inside = marker("cg-in");
    let outside = marker("cg-out");
    std::fs::create_dir_all(cgroup2_root().join(&base)).unwrap();
    let (evs, _) = filtered(&["--cgroup", &format!("/{base}")], &inside, || {
        assert!(run_quiet(Command::new("/bin/true").arg(&outside)).success());
        run_in_cgroup(&format!("{base}/child"), &inside, &[]);
    });
    let _ = std::fs::remove_dir(cgroup2_root().join(&base));
    assert_eq!(count(&evs, &outside), 0);
    let e = evs.iter().find(|v| has_arg(v, &inside)).unwrap();
    assert_eq!(
        e["execwatch"]["cgroup"]["path"],
        format!("/{base}/child"),
        "subtree: a child cgroup is in"
    );
}

#[test]
fn containers_only_and_failed_only() {
    let host = marker("host");
    let inner = marker("inner");
    let (evs, s) = filtered(&["--containers-only"], &inner, || {
        assert!(run_quiet(Command::new("/bin/true").arg(&host)).success());
        assert!(
            run_quiet(Command::new("unshare").args(["--pid", "--fork", "/bin/true", &inner]))
                .success()
        );
    });
    assert_eq!(count(&evs, &host), 0);
    assert_eq!(count(&evs, &inner), 1);
    assert!(evs
        .iter()
        .all(|v| v["execwatch"]["pid_ns"]["host"] == false));
    assert!(s["filtered"].as_u64().unwrap() >= 1);

    let ok = marker("ok");
    let bad = marker("bad");
    let (evs, _) = filtered(&["--failed-only"], &bad, || {
        assert!(run_quiet(Command::new("/bin/true").arg(&ok)).success());
        assert!(Command::new(format!("/nonexistent/{bad}"))
            .arg(&bad)
            .status()
            .is_err());
    });
    assert_eq!(count(&evs, &ok), 0);
    assert!(evs.iter().all(|v| v["event"]["outcome"] == "failure"));
}

#[test]
fn filters_combine() {
    // uid AND comm: only nobody's `true` passes.
    let m = marker("combo");
    let last = marker("combo-last");
    let (evs, s) = filtered(&["--uid", "65534", "--comm", "true"], &last, || {
        use std::os::unix::process::CommandExt;
        assert!(run_quiet(Command::new("/bin/true").arg(&m)).success()); // root
        assert!(run_quiet(Command::new("/bin/echo").arg(&m).uid(65534)).success()); // echo
        assert!(run_quiet(Command::new("/bin/true").arg(&m).uid(65534)).success()); // passes
        assert!(run_quiet(Command::new("/bin/true").arg(&last).uid(65534)).success());
    });
    let ours: Vec<&Value> = evs.iter().filter(|v| has_arg(v, &m)).collect();
    assert_eq!(ours.len(), 1, "{ours:?}");
    assert_eq!(ours[0]["user"]["id"], "65534");
    assert_eq!(ours[0]["process"]["name"], "true");
    assert!(s["filtered"].as_u64().unwrap() >= 2);
}

#[test]
fn bad_filter_values_are_clear_errors() {
    for (args, want) in [
        (&["--uid", "no-such-user-xyz"][..], "no user named"),
        (
            &["--comm", "a-very-long-program-name"][..],
            "longer than 15 bytes",
        ),
        (
            &["--cgroup", "/no/such/cgroup"][..],
            "is not a cgroup v2 directory",
        ),
    ] {
        let o = Command::new(common::BIN).args(args).output().unwrap();
        assert_eq!(o.status.code(), Some(2), "{args:?}");
        assert!(
            String::from_utf8_lossy(&o.stderr).contains(want),
            "{args:?}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
    }
}
