//! The shipped unit, unchanged, under a real systemd (PID 1 of a
//! systemd-nspawn container booted from a minimal Debian rootfs): the
//! hardening must not break the daemon, and `systemctl restart` leaves no
//! gap. Slow (a boot, and a debootstrap on first use), so it is ignored by a
//! plain `cargo test`; scripts/test runs it with `--ignored`. The Debian
//! package gets the same treatment in tests/package.rs.

mod common;
#[path = "common/nspawn.rs"]
mod nspawn;

use std::time::{Duration, Instant};

use common::marker;
use nspawn::Container;
use serde_json::Value;

/// One container at a time: each runs an execwatch that records every exec
/// of the host, and two boots at once are slow enough to time out.
static CONTAINER: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// Boot with the shipped unit, unchanged and enabled, and the binary
/// bind-mounted in; returns once execwatch.service is active.
fn boot_shipped_unit(name: &str) -> Container {
    common::require_root();
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
    let container = Container::boot(name, prepare, &[bind]);
    let state = container.run_str(&["systemctl", "is-active", "execwatch"]);
    assert_eq!(
        state,
        "active",
        "see {} and its journal:\n{}",
        container.log.display(),
        container.run_str(&[
            "journalctl",
            "-b",
            "-u",
            "execwatch",
            "--no-pager",
            "-n",
            "30"
        ])
    );
    container
}

#[test]
#[ignore = "boots a container (slow): scripts/test runs it with --ignored"]
fn shipped_unit_runs_under_real_systemd() {
    let _one = CONTAINER.lock().unwrap_or_else(|e| e.into_inner());
    let container = boot_shipped_unit("nspawn-unit");
    // An exec inside the container lands in the container's journal.
    let m = marker("nspawn");
    assert!(container.run(&["/bin/true", &m]).status.success());
    let entry = container.journal_entry(&[&format!("EXECWATCH_ARGV_1={m}")]);
    assert_eq!(entry["EXECWATCH_EXE"], "/usr/bin/true");
    assert_eq!(entry["SYSLOG_IDENTIFIER"], "execwatch");
    assert_eq!(entry["_SYSTEMD_UNIT"], "execwatch.service");
    // Hashed under the unit's sandbox: a mount namespace of its own
    // (PrivateMounts=) and no CAP_SYS_PTRACE for the exited process's
    // /proc/PID/exe, so through the path.
    let sum = container.run_str(&["sha256sum", "/usr/bin/true"]);
    let sum = sum.split_whitespace().next().unwrap_or_default();
    assert_eq!(entry["EXECWATCH_SHA256"], sum, "{entry}");

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

/// The host pid of a process of the container (pid `inner` in it).
fn host_pid(container: &Container, inner: u32) -> u32 {
    let cg = container
        .cgroup
        .file_name()
        .unwrap()
        .to_string_lossy()
        .into_owned();
    std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .find(|&pid| {
            nspawn::status_field(pid, "NSpid:")
                .is_some_and(|v| v.split_whitespace().last() == Some(&inner.to_string()))
                && std::fs::read_to_string(format!("/proc/{pid}/cgroup"))
                    .is_ok_and(|c| c.contains(&cg))
        })
        .unwrap_or_else(|| panic!("no host pid for the container's pid {inner}"))
}

/// execwatch's journal entries of this boot matching `filters`, with only
/// the fields the restart test reads.
fn journal(container: &Container, filters: &[&str]) -> Vec<Value> {
    let mut args = vec![
        "journalctl",
        "-b",
        "-u",
        "execwatch",
        "-o",
        "json",
        "--no-pager",
        "--output-fields=MESSAGE,EXECWATCH_ACTION,EXECWATCH_SEQUENCE,EXECWATCH_ARGV_1,EXECWATCH_ARGV_2,LOST_TOTAL,RECORDS,PENDING,_PID",
    ];
    args.extend_from_slice(filters);
    let out = container.run(&args);
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// Wait (30 s at most) until the last of an exec loop's `n` execs, marked
/// `m`, is in the journal.
fn wait_for_the_last_exec(container: &Container, m: &str, n: u64) {
    let deadline = Instant::now() + Duration::from_secs(30);
    let (marked, last) = (
        format!("EXECWATCH_ARGV_1={m}"),
        format!("EXECWATCH_ARGV_2={}", n - 1),
    );
    while journal(container, &[&marked, &last]).is_empty() {
        assert!(
            Instant::now() < deadline,
            "the last exec of the loop never reached the journal"
        );
        std::thread::sleep(Duration::from_millis(300));
    }
}

fn field_u64(v: &Value, k: &str) -> Option<u64> {
    v[k].as_str()?.parse().ok()
}

#[test]
#[ignore = "boots a container (slow): scripts/test runs it with --ignored"]
fn restart_keeps_programs_attached_and_stop_detaches_them() {
    let _one = CONTAINER.lock().unwrap_or_else(|e| e.into_inner());
    let container = boot_shipped_unit("nspawn-restart");
    let show = |p: &str| container.run_str(&["systemctl", "show", "-p", p, "--value", "execwatch"]);
    let m = marker("nspawn-restart");
    // Every exec on the kernel reaches the container's execwatch: the loop
    // runs here, on the host.
    let execs = common::ExecLoop::start(&m);
    execs.wait_for_more(50);
    const RESTARTS: usize = 2;
    for _ in 0..RESTARTS {
        let out = container.run(&["systemctl", "restart", "execwatch"]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        // 5 maps, and an array and a link per hook (rename, exec, exit,
        // and one or two for failed execs).
        let stored: u32 = show("NFileDescriptorStore").parse().unwrap();
        assert!(stored >= 13, "{stored} objects in the fd store");
        execs.wait_for_more(50);
    }
    let daemon = host_pid(&container, show("MainPID").parse().unwrap());
    let ids = common::bpf_ids(daemon);
    let n = execs.stop();
    wait_for_the_last_exec(&container, &m, n);

    // Every exec of the loop in the journal exactly once (exits carry the
    // argv of what ended, too).
    let mut count = vec![0u32; n as usize];
    for e in journal(
        &container,
        &[&format!("EXECWATCH_ARGV_1={m}"), "EXECWATCH_ACTION=exec"],
    ) {
        count[field_u64(&e, "EXECWATCH_ARGV_2").unwrap() as usize] += 1;
    }
    let missing: Vec<usize> = (0..count.len()).filter(|&i| count[i] == 0).collect();
    let twice: Vec<usize> = (0..count.len()).filter(|&i| count[i] > 1).collect();
    assert!(
        missing.is_empty() && twice.is_empty(),
        "of {n} execs, missing {missing:?}, twice {twice:?}"
    );

    // One sequence through the restarts: no duplicate, no gap.
    let all = journal(&container, &[]);
    let mut seqs: Vec<u64> = all
        .iter()
        .filter_map(|e| field_u64(e, "EXECWATCH_SEQUENCE"))
        .collect();
    let len = seqs.len();
    seqs.sort_unstable();
    seqs.dedup();
    assert_eq!(seqs.len(), len, "a sequence number twice in the journal");
    let gaps: Vec<u64> = seqs
        .windows(2)
        .filter(|w| w[1] != w[0] + 1)
        .map(|w| w[0])
        .collect();
    assert!(gaps.is_empty(), "sequence gaps after {gaps:?}");
    let message = |e: &Value| e["MESSAGE"].as_str().unwrap_or("").to_string();
    let takeovers = all
        .iter()
        .filter(|e| {
            message(e)
                == "taking over the ring buffer: draining what the previous execwatch left first"
        })
        .count();
    assert_eq!(
        takeovers, RESTARTS,
        "each restart drained the kept buffer first"
    );
    let summaries: Vec<&Value> = all.iter().filter(|e| message(e) == "summary").collect();
    assert_eq!(summaries.len(), RESTARTS, "one per restart");
    for s in summaries {
        assert_eq!(field_u64(s, "LOST_TOTAL"), Some(0), "{s}");
        assert!(field_u64(s, "PENDING").is_some(), "{s}");
    }
    // Every summary added up (else the daemon says so and fails).
    assert!(
        !all.iter().any(|e| message(e).contains("does not add up")),
        "a summary did not add up"
    );

    // A stop releases the store (systemd 252): nothing stays attached.
    container.run_ok(&["systemctl", "stop", "execwatch"]);
    assert_eq!(show("NFileDescriptorStore"), "0");
    assert!(!ids.links.is_empty() && !ids.progs.is_empty(), "{ids:?}");
    common::assert_all_gone(&ids);
    drop(container);
}

#[test]
#[ignore = "boots a container (slow): scripts/test runs it with --ignored"]
fn a_crash_keeps_the_programs_attached_and_the_restarted_daemon_takes_over() {
    let _one = CONTAINER.lock().unwrap_or_else(|e| e.into_inner());
    let container = boot_shipped_unit("nspawn-crash");
    let show = |p: &str| container.run_str(&["systemctl", "show", "-p", p, "--value", "execwatch"]);
    let m = marker("nspawn-crash");
    let execs = common::ExecLoop::start(&m);
    execs.wait_for_more(50);
    let first_main: u32 = show("MainPID").parse().unwrap();
    let first = host_pid(&container, first_main);
    let ids = common::bpf_ids(first);
    assert!(!ids.links.is_empty(), "{ids:?}");

    // A crash: SIGKILL, no drain, no summary. systemd restarts the unit
    // after RestartSec=2s and keeps its fd store meanwhile.
    container.run_ok(&[
        "systemctl",
        "kill",
        "-s",
        "KILL",
        "--kill-whom=main",
        "execwatch",
    ]);
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::path::Path::new(&format!("/proc/{first}")).exists() {
        assert!(Instant::now() < deadline, "execwatch outlived SIGKILL");
        std::thread::sleep(Duration::from_millis(20));
    }
    // No daemon runs now, yet every program stays attached: the execs of
    // this window wait in the kept ring buffer.
    let left = common::still_there(&ids);
    for id in &ids.links {
        assert!(
            left.contains(&format!("link {id}")),
            "link {id} gone after the crash: {left:?}"
        );
    }
    let stored: u32 = show("NFileDescriptorStore").parse().unwrap();
    assert!(
        stored >= 13,
        "{stored} objects in the fd store after the crash"
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    while show("ActiveState") != "active" || show("MainPID") == first_main.to_string() {
        assert!(Instant::now() < deadline, "execwatch was not restarted");
        std::thread::sleep(Duration::from_millis(200));
    }
    execs.wait_for_more(50);
    let n = execs.stop();
    wait_for_the_last_exec(&container, &m, n);

    // Nothing twice. The only possible loss is what the killed daemon had
    // read and not yet sent; everything the loop ran while no daemon ran is
    // there, from the kept buffer.
    let second = show("MainPID");
    let mut by_index: Vec<Vec<String>> = vec![Vec::new(); n as usize];
    for e in journal(
        &container,
        &[&format!("EXECWATCH_ARGV_1={m}"), "EXECWATCH_ACTION=exec"],
    ) {
        let i = field_u64(&e, "EXECWATCH_ARGV_2").unwrap() as usize;
        by_index[i].push(e["_PID"].as_str().unwrap_or("").to_string());
    }
    let twice: Vec<usize> = (0..by_index.len())
        .filter(|&i| by_index[i].len() > 1)
        .collect();
    assert!(twice.is_empty(), "delivered twice: {twice:?}");
    let first_by_second = by_index
        .iter()
        .position(|pids| pids.contains(&second))
        .unwrap_or_else(|| {
            let pids: std::collections::BTreeSet<&String> = by_index.iter().flatten().collect();
            panic!("the restarted daemon ({second}) delivered no loop exec; senders {pids:?}")
        });
    let missing_after: Vec<usize> = (first_by_second..by_index.len())
        .filter(|&i| by_index[i].is_empty())
        .collect();
    assert!(missing_after.is_empty(), "missing {missing_after:?}");
    let all = journal(&container, &[]);
    let said = |text: &str| {
        all.iter()
            .any(|e| e["MESSAGE"].as_str().is_some_and(|s| s.contains(text)))
    };
    assert!(said("the previous execwatch did not exit cleanly"));
    assert!(said(
        "taking over the ring buffer: draining what the previous execwatch left first"
    ));
    let lost: usize = by_index.iter().filter(|p| p.is_empty()).count();
    eprintln!(
        "crash under systemd: {n} execs, {} by the restarted daemon from index {first_by_second}, {lost} lost with the killed daemon",
        by_index.iter().filter(|p| p.contains(&second)).count()
    );
    container.run_ok(&["systemctl", "stop", "execwatch"]);
    common::assert_all_gone(&ids);
}
