//! Central logs with systemd's own tools: execwatch's journal entries, sent
//! by systemd-journal-upload from this host to systemd-journal-remote on a
//! collector (a network namespace of its own, reached over a veth pair),
//! arrive there with every field as it is in the local journal.

mod common;

use common::{
    ensure_journald, journal_bytes as bytes, journal_cursor, wait_journal_entries, KillOnDrop,
};
use std::collections::BTreeMap;
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

const REMOTE: &str = "/lib/systemd/systemd-journal-remote";
const UPLOAD: &str = "/lib/systemd/systemd-journal-upload";
const PORT: u16 = 19532;

fn ip(args: &[&str]) {
    let o = Command::new("ip")
        .args(args)
        .output()
        .expect("ip (iproute2) is installed by scripts/install-deps --test");
    assert!(
        o.status.success(),
        "ip {args:?}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
}

/// A network namespace for the collector, joined to this host by a veth
/// pair with a link-local /30: nothing is routed anywhere else.
struct CollectorNet {
    netns: String,
    host_addr: String,
    collector_addr: String,
}

impl CollectorNet {
    fn new() -> CollectorNet {
        let id = std::process::id();
        let netns = format!("execwatch-jr-{id}");
        let (host_if, peer_if) = (
            format!("ewjr{}h", id % 100_000),
            format!("ewjr{}c", id % 100_000),
        );
        // One /30 per test process: 169.254.N.0/30, N from the pid.
        let n = 10 + id % 240;
        let net = CollectorNet {
            netns: netns.clone(),
            host_addr: format!("169.254.{n}.1"),
            collector_addr: format!("169.254.{n}.2"),
        };
        let _ = Command::new("ip")
            .args(["netns", "del", &netns])
            .stderr(Stdio::null())
            .status();
        ip(&["netns", "add", &netns]);
        ip(&[
            "link", "add", &host_if, "type", "veth", "peer", "name", &peer_if,
        ]);
        ip(&["link", "set", &peer_if, "netns", &netns]);
        ip(&[
            "addr",
            "add",
            &format!("{}/30", net.host_addr),
            "dev",
            &host_if,
        ]);
        ip(&["link", "set", &host_if, "up"]);
        ip(&[
            "-n",
            &netns,
            "addr",
            "add",
            &format!("{}/30", net.collector_addr),
            "dev",
            &peer_if,
        ]);
        ip(&["-n", &netns, "link", "set", &peer_if, "up"]);
        ip(&["-n", &netns, "link", "set", "lo", "up"]);
        net
    }
}

impl Drop for CollectorNet {
    fn drop(&mut self) {
        // Deleting the namespace destroys its veth end, and so the pair.
        let _ = Command::new("ip")
            .args(["netns", "del", &self.netns])
            .status();
    }
}

/// Fields of an entry, without the ones that name its place in one journal
/// file (cursor, sequence numbers).
fn fields(entry: &Value) -> BTreeMap<String, Value> {
    entry
        .as_object()
        .unwrap()
        .iter()
        .filter(|(k, _)| !matches!(k.as_str(), "__CURSOR" | "__SEQNUM" | "__SEQNUM_ID"))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

/// Run execwatch --format journald until one marked exec is in the
/// journal; the daemon's pid (journald's _PID of its entries) and the marker.
fn record_one_exec() -> (u32, String) {
    let daemon = common::Daemon::start_format("journald", &["--comm", "true"]);
    let m = common::marker("journal-remote");
    let hostile: [&[u8]; 3] = [b"line\nFORGED_FIELD=1", b"\xff\xfe", "caf\u{e9}".as_bytes()];
    let mut cmd = Command::new("/bin/true");
    cmd.arg(&m);
    for a in hostile {
        cmd.arg(<std::ffi::OsStr as std::os::unix::ffi::OsStrExt>::from_bytes(a));
    }
    assert!(common::run_quiet(&mut cmd).success());
    let pid = daemon.pid();
    let ours = common::exec_entry_matches(&m, pid);
    let written = wait_journal_entries(&ours, 1, Duration::from_secs(10));
    assert!(
        !written.is_empty(),
        "no journal entry {ours:?} from the daemon"
    );
    let stopped = daemon.stop();
    assert!(stopped.status.success(), "{}", stopped.stderr);
    (pid, m)
}

#[test]
fn journal_upload_carries_every_field_to_journal_remote() {
    common::require_root();
    for tool in [REMOTE, UPLOAD] {
        assert!(
            Path::new(tool).exists(),
            "{tool} is missing: scripts/install-deps --test installs systemd-journal-remote"
        );
    }
    ensure_journald();
    let net = CollectorNet::new();
    let out_dir: PathBuf =
        std::env::temp_dir().join(format!("execwatch-jr-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&out_dir);
    std::fs::create_dir_all(&out_dir).unwrap();
    let remote_file = out_dir.join("remote.journal");

    // The collector: journal-remote listening on http, in its namespace.
    let listen = format!("{}:{PORT}", net.collector_addr);
    let log = std::fs::File::create(out_dir.join("remote.log")).unwrap();
    let _collector = KillOnDrop(
        Command::new("ip")
            .args(["netns", "exec", &net.netns, REMOTE])
            .arg(format!("--listen-http={listen}"))
            .arg(format!("--output={}", remote_file.display()))
            .arg("--split-mode=none")
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap(),
    );
    let addr: SocketAddr = listen.parse().unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_err() {
        assert!(
            Instant::now() < deadline,
            "journal-remote is not listening on {listen}: {}",
            std::fs::read_to_string(out_dir.join("remote.log")).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(100));
    }

    // Upload only what comes after this point of the local journal.
    let cursor = journal_cursor();
    let (daemon_pid, m) = record_one_exec();
    let ours = common::exec_entry_matches(&m, daemon_pid);
    let local = wait_journal_entries(&ours, 1, Duration::from_secs(10));
    assert_eq!(local.len(), 1, "one local entry for the exec: {local:?}");

    // The host: journal-upload sends the local journal to the collector.
    let mut upload = Command::new(UPLOAD);
    upload
        .arg(format!("--url=http://{listen}"))
        .arg("--follow=no");
    if let Some(c) = &cursor {
        upload.arg(format!("--after-cursor={c}"));
    }
    let mut upload = upload
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    let status = loop {
        if let Some(st) = upload.try_wait().unwrap() {
            break st;
        }
        assert!(Instant::now() < deadline, "journal-upload did not finish");
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(
        status.success(),
        "journal-upload: {}",
        common::read_all(upload.stderr.take().unwrap())
    );

    // At the collector: the same entry, field for field.
    let mut at_collector = vec![format!("--file={}", remote_file.display())];
    at_collector.extend(ours.iter().cloned());
    let remote = wait_journal_entries(&at_collector, 1, Duration::from_secs(10));
    assert_eq!(remote.len(), 1, "one remote entry for the exec: {remote:?}");
    let (local, remote) = (fields(&local[0]), fields(&remote[0]));
    let execwatch_fields = local.keys().filter(|k| k.starts_with("EXECWATCH_")).count();
    assert!(execwatch_fields >= 15, "{local:?}");
    for (k, v) in &local {
        assert_eq!(remote.get(k), Some(v), "field {k} differs at the collector");
    }
    assert_eq!(
        local.keys().collect::<Vec<_>>(),
        remote.keys().collect::<Vec<_>>(),
        "the collector has the same fields"
    );
    // Binary-safe all the way: the newline and invalid UTF-8 stay data.
    assert_eq!(bytes(&remote["EXECWATCH_ARGV_2"]), b"line\nFORGED_FIELD=1");
    assert_eq!(bytes(&remote["EXECWATCH_ARGV_3"]), b"\xff\xfe");
    assert_eq!(bytes(&remote["EXECWATCH_ARGV_4"]), "caf\u{e9}".as_bytes());
    assert!(!remote.contains_key("FORGED_FIELD"));
    std::fs::remove_dir_all(&out_dir).unwrap();
}
