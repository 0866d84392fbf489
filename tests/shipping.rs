//! The log shipper configurations in deploy/shipping parse, name what
//! execwatch really emits, and select it by fields the sender cannot forge:
//! an entry forged with `logger --journald` is in the journal but not
//! selected, checked with journalctl and the very matches the configs ship.
//! Vector and Fluent Bit are not Debian packages, so they are not run here.

mod common;
mod spawned;

use std::process::{Command, Stdio};
use std::time::Duration;

use common::{ensure_journald, journal_entries, wait_journal_entries};
use common::{marker, run_quiet};
use execwatch::output::journald::message_ids as ids;
use serde_json::Value;
use spawned::{NotifySocket, BIN};

const VENV_PYTHON: &str = "/var/cache/execwatch/venv/bin/python3";
const JOURNAL_WAIT: Duration = Duration::from_secs(15);

/// Parse a config with Python (tomllib, or PyYAML from the test venv) and
/// return it as JSON.
fn parse(rel: &str) -> Value {
    let path = format!("{}/{rel}", env!("CARGO_MANIFEST_DIR"));
    let code = if rel.ends_with(".toml") {
        "import json,sys,tomllib; print(json.dumps(tomllib.load(open(sys.argv[1],'rb'))))"
    } else {
        "import json,sys,yaml; print(json.dumps(yaml.safe_load(open(sys.argv[1]))))"
    };
    let out = Command::new(VENV_PYTHON)
        .args(["-c", code, &path])
        .output()
        .expect("the test venv is made by scripts/install-deps");
    assert!(
        out.status.success(),
        "{rel}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

fn strings(v: &Value) -> Vec<String> {
    v.as_array()
        .unwrap_or_else(|| panic!("not a list: {v}"))
        .iter()
        .map(|s| s.as_str().unwrap().to_string())
        .collect()
}

/// A VRL condition made of `&&`-joined terms, `.F == "v"` or
/// `includes(["a", "b"], .F)`, as journalctl matches (different fields
/// AND, one field's values OR: the same logic). Any other form fails.
fn vrl_terms_as_matches(condition: &str) -> Vec<String> {
    let mut matches = Vec::new();
    for term in condition.split(" && ") {
        let term = term.trim();
        if let Some(rest) = term.strip_prefix("includes([") {
            let (list, field) = rest
                .split_once("], .")
                .unwrap_or_else(|| panic!("unrecognised term {term}"));
            let field = field.strip_suffix(')').unwrap();
            for value in list.split(", ") {
                matches.push(format!("{field}={}", value.trim_matches('"')));
            }
        } else {
            let (field, value) = term
                .strip_prefix('.')
                .and_then(|t| t.split_once(" == "))
                .unwrap_or_else(|| panic!("unrecognised term {term}"));
            matches.push(format!("{field}={}", value.trim_matches('"')));
        }
    }
    matches
}

/// What Vector's journald pipeline selects, as journalctl matches.
fn vector_journald_selectors() -> Vec<String> {
    let v = parse("deploy/shipping/vector-journald.toml");
    let src = &v["sources"]["execwatch_journal"];
    // include_matches takes an entry when any one pair matches: nothing but
    // the unit may be there.
    assert!(src.get("include_matches").is_none(), "{src}");
    let mut m: Vec<String> = strings(&src["include_units"])
        .iter()
        .map(|u| format!("_SYSTEMD_UNIT={u}"))
        .collect();
    let filter = &v["transforms"]["execwatch_exec_entries"];
    assert_eq!(filter["type"], "filter");
    assert_eq!(filter["inputs"][0], "execwatch_journal");
    assert_eq!(v["sinks"]["loki"]["inputs"][0], "execwatch_exec_entries");
    m.extend(vrl_terms_as_matches(filter["condition"].as_str().unwrap()));
    m
}

/// What Fluent Bit's systemd input and grep filter select.
fn fluent_bit_selectors() -> Vec<String> {
    let f = parse("deploy/shipping/fluent-bit.yaml");
    let input = &f["pipeline"]["inputs"][0];
    assert_eq!(input["name"], "systemd");
    assert_eq!(input["systemd_filter_type"], "And", "the default is Or");
    let mut m = strings(&input["systemd_filter"]);
    let grep = f["pipeline"]["filters"][0]["regex"].as_str().unwrap();
    let alternatives = grep
        .strip_prefix("MESSAGE_ID ^(")
        .and_then(|r| r.strip_suffix(")$"))
        .unwrap_or_else(|| panic!("unrecognised regex {grep}"));
    m.extend(alternatives.split('|').map(|id| format!("MESSAGE_ID={id}")));
    m
}

#[test]
fn journald_configs_select_by_trusted_fields_and_the_exec_message_ids() {
    for (name, m) in [
        ("vector", vector_journald_selectors()),
        ("fluent-bit", fluent_bit_selectors()),
    ] {
        for want in [
            "_SYSTEMD_UNIT=execwatch.service".to_string(),
            "_UID=0".into(),
            "_TRANSPORT=journal".into(),
            format!("MESSAGE_ID={}", ids::EXEC),
            format!("MESSAGE_ID={}", ids::EXEC_FAILED),
        ] {
            assert!(m.contains(&want), "{name} lacks {want}: {m:?}");
        }
        for field in m.iter().map(|x| x.split('=').next().unwrap()) {
            assert!(
                field.starts_with('_') || field == "MESSAGE_ID",
                "{name}: {field} is set by the sender"
            );
        }
    }
}

#[test]
fn vector_kubernetes_config_takes_the_daemonsets_stdout_and_keeps_ecs_as_is() {
    let c = parse("deploy/shipping/vector-kubernetes.toml");
    let src = &c["sources"]["execwatch_pods"];
    assert_eq!(src["type"], "kubernetes_logs");
    let manifest = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/deploy/kubernetes/execwatch.yaml"
    ))
    .unwrap();
    let selector = src["extra_label_selector"].as_str().unwrap();
    let (k, v) = selector.split_once('=').unwrap();
    assert!(
        manifest.contains(&format!("{k}: {v}")),
        "the DaemonSet carries {selector}"
    );
    // Only pods of execwatch's namespace, where the DaemonSet lives.
    let ns = src["extra_field_selector"]
        .as_str()
        .unwrap()
        .strip_prefix("metadata.namespace=")
        .expect("a namespace field selector");
    assert!(
        manifest.contains(&format!(
            "kind: DaemonSet\nmetadata:\n  name: execwatch\n  namespace: {ns}\n"
        )),
        "the DaemonSet is in {ns}"
    );
    // stdout only: stderr carries diagnostics, not events.
    let filter = &c["transforms"]["execwatch_stdout"];
    assert_eq!(filter["type"], "filter");
    let cond = filter["condition"].as_str().unwrap();
    let terms = vrl_terms_as_matches(cond);
    for want in [
        "stream=stdout".to_string(),
        format!("kubernetes.pod_namespace={ns}"),
        "kubernetes.container_name=execwatch".into(),
    ] {
        assert!(terms.contains(&want), "{want} not in {cond}");
    }
    assert!(manifest.contains("- name: execwatch\n          image:"));
    let remap = &c["transforms"]["execwatch_events"];
    assert_eq!(remap["inputs"][0], "execwatch_stdout");
    assert_eq!(
        remap["source"].as_str().unwrap().trim(),
        ". = parse_json!(string!(.message))",
        "no remapping of ECS fields"
    );
    assert_eq!(c["sinks"]["elasticsearch"]["inputs"][0], "execwatch_events");
}

/// A cgroup named like the unit, in every hierarchy journald may read a
/// sender's unit from; removed on drop. Under it a process is, to journald,
/// execwatch.service (here PID 1 is not systemd, so nothing else manages
/// these).
struct UnitCgroup {
    dirs: Vec<std::path::PathBuf>,
}

impl UnitCgroup {
    fn new() -> UnitCgroup {
        assert!(
            !std::path::Path::new("/run/systemd/system").exists(),
            "systemd manages cgroups on this host: run this test where PID 1 is not systemd"
        );
        let rel = format!(
            "execwatch-test-{}.slice/execwatch.service",
            std::process::id()
        );
        let dirs: Vec<_> = [
            "/sys/fs/cgroup/unified",
            "/sys/fs/cgroup/systemd",
            "/sys/fs/cgroup",
        ]
        .iter()
        .map(std::path::Path::new)
        .filter(|h| h.join("cgroup.procs").exists())
        .map(|h| h.join(&rel))
        .collect();
        for d in &dirs {
            std::fs::create_dir_all(d).unwrap();
        }
        UnitCgroup { dirs }
    }

    /// `sh -c` text that moves the shell into the cgroups, then execs.
    fn enter(&self) -> String {
        self.dirs
            .iter()
            .map(|d| format!("echo $$ > {}/cgroup.procs && ", d.display()))
            .collect()
    }
}

impl Drop for UnitCgroup {
    fn drop(&mut self) {
        for d in &self.dirs {
            let _ = std::fs::remove_dir(d);
            let _ = std::fs::remove_dir(d.parent().unwrap());
        }
    }
}

/// `logger --journald` entry forging an execwatch exec event; fields with
/// a leading underscore are the trusted ones, which journald must drop.
fn forged_entry(m: &str) -> String {
    format!(
        "MESSAGE=exec /usr/bin/true {m}\nMESSAGE_ID={}\nSYSLOG_IDENTIFIER=execwatch\n\
         PRIORITY=6\nEXECWATCH_OUTCOME=success\nEXECWATCH_ARGV_1={m}\n\
         _SYSTEMD_UNIT=execwatch.service\n_UID=0\n_TRANSPORT=journal\n",
        ids::EXEC
    )
}

#[test]
fn forged_logger_entries_are_not_selected_by_the_shipped_configs() {
    common::require_root();
    ensure_journald();
    let cgroup = UnitCgroup::new();
    let notify = NotifySocket::new("shipping");
    let mut daemon = Command::new("sh")
        .arg("-c")
        .arg(format!("{}exec \"$0\" --format journald", cgroup.enter()))
        .arg(BIN)
        .env("NOTIFY_SOCKET", notify.path())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    notify.until(Duration::from_secs(60), |m| m.contains("READY=1"));
    let real = marker("shipped-real");
    assert!(run_quiet(Command::new("/bin/true").arg(&real)).success());

    // Two forgers outside the unit: an unprivileged user, and root.
    let forged = marker("shipped-forged");
    let file = std::env::temp_dir().join(format!("{forged}.entry"));
    std::fs::write(&file, forged_entry(&forged)).unwrap();
    std::fs::set_permissions(&file, std::os::unix::fs::PermissionsExt::from_mode(0o644)).unwrap();
    let as_nobody = Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups", "logger"])
        .arg(format!("--journald={}", file.display()))
        .status()
        .unwrap();
    assert!(as_nobody.success());
    let as_root = Command::new("logger")
        .arg(format!("--journald={}", file.display()))
        .status()
        .unwrap();
    assert!(as_root.success());
    std::fs::remove_file(&file).unwrap();

    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(daemon.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    assert!(daemon.wait().unwrap().success());
    drop(cgroup);

    // Both kinds are in the journal; the forgeries passed the selectors
    // shipped before (identifier and MESSAGE_ID).
    let real_arg = format!("EXECWATCH_ARGV_1={real}");
    let forged_arg = format!("EXECWATCH_ARGV_1={forged}");
    let forgeries = wait_journal_entries(std::slice::from_ref(&forged_arg), 2, JOURNAL_WAIT);
    assert_eq!(forgeries.len(), 2, "{forgeries:?}");
    for f in &forgeries {
        assert_ne!(
            f["_SYSTEMD_UNIT"], "execwatch.service",
            "journald set it: {f}"
        );
        assert_eq!(f["_TRANSPORT"], "journal", "{f}");
    }
    assert!(forgeries.iter().any(|f| f["_UID"] == "65534"));
    let old = [
        "SYSLOG_IDENTIFIER=execwatch".to_string(),
        format!("MESSAGE_ID={}", ids::EXEC),
        forged_arg.clone(),
    ];
    assert_eq!(
        journal_entries(&old).len(),
        2,
        "the forgery passes the old selectors"
    );

    for (name, selectors) in [
        ("vector", vector_journald_selectors()),
        ("fluent-bit", fluent_bit_selectors()),
    ] {
        let with = |extra: &str| {
            let mut m = selectors.clone();
            m.push(extra.to_string());
            m
        };
        // The real exec, and its exit (found by the exec's entity id: an
        // exit carries no argv): both execwatch's own entries.
        let exec = wait_journal_entries(&with(&real_arg), 1, JOURNAL_WAIT);
        assert_eq!(
            exec.len(),
            1,
            "{name} selects execwatch's own exec: {selectors:?}"
        );
        let entity = exec[0]["EXECWATCH_ENTITY_ID"]
            .as_str()
            .expect("the exec's EXECWATCH_ENTITY_ID");
        let selected = wait_journal_entries(
            &with(&format!("EXECWATCH_ENTITY_ID={entity}")),
            2,
            JOURNAL_WAIT,
        );
        assert_eq!(
            selected.len(),
            2,
            "{name} selects execwatch's own entries: {selectors:?}"
        );
        for e in &selected {
            assert_eq!(e["_PID"], daemon.id().to_string());
        }
        let mut kinds: Vec<&str> = selected
            .iter()
            .map(|e| e["MESSAGE_ID"].as_str().unwrap())
            .collect();
        kinds.sort();
        let mut want = [ids::EXEC, ids::EXIT];
        want.sort();
        assert_eq!(kinds, want, "{name}");
        assert_eq!(
            journal_entries(&with(&forged_arg)),
            Vec::<Value>::new(),
            "{name} selects a forgery: {selectors:?}"
        );
    }
}
