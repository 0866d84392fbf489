//! The log shipper configurations in deploy/shipping parse, and name what
//! execwatch really emits (labels, SYSLOG_IDENTIFIER, MESSAGE_IDs). Vector
//! and Fluent Bit are not Debian packages, so they are not run here.

use std::process::Command;

use execwatch::output::journald::message_ids as ids;

const VENV_PYTHON: &str = "/var/cache/execwatch/venv/bin/python3";

/// Parse a config with Python (tomllib, or PyYAML from the test venv) and
/// return it as JSON.
fn parse(rel: &str) -> serde_json::Value {
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

#[test]
fn vector_kubernetes_config_selects_the_daemonset_and_keeps_ecs_as_is() {
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
    let remap = c["transforms"]["execwatch_events"]["source"]
        .as_str()
        .unwrap();
    assert_eq!(
        remap.trim(),
        ". = parse_json!(string!(.message))",
        "no remapping of ECS fields"
    );
    assert_eq!(c["sinks"]["elasticsearch"]["inputs"][0], "execwatch_events");
}

#[test]
fn journald_configs_name_the_real_identifier_and_message_ids() {
    let v = parse("deploy/shipping/vector-journald.toml");
    let m = &v["sources"]["execwatch_journal"]["include_matches"];
    assert_eq!(m["SYSLOG_IDENTIFIER"][0], "execwatch");
    assert_eq!(
        m["MESSAGE_ID"],
        serde_json::json!([ids::EXEC, ids::EXEC_FAILED])
    );
    let f = parse("deploy/shipping/fluent-bit.yaml");
    let input = &f["pipeline"]["inputs"][0];
    assert_eq!(input["name"], "systemd");
    assert_eq!(input["systemd_filter"][0], "SYSLOG_IDENTIFIER=execwatch");
    let grep = f["pipeline"]["filters"][0]["regex"].as_str().unwrap();
    assert!(
        grep.contains(ids::EXEC) && grep.contains(ids::EXEC_FAILED),
        "{grep}"
    );
}
