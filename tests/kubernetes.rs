//! The DaemonSet manifest validates against the Kubernetes schemas
//! (kubernetes-validate, offline), and asks for what execwatch needs.

use std::path::Path;
use std::process::Command;

const VALIDATOR: &str = "/var/cache/execwatch/venv/bin/kubernetes-validate";

fn validate(file: &Path) -> std::process::Output {
    Command::new(VALIDATOR)
        .args(["--strict", "-k", "1.30.0"])
        .arg(file)
        .output()
        .expect("kubernetes-validate is installed by scripts/install-deps")
}

fn manifest() -> String {
    std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/deploy/kubernetes/execwatch.yaml"
    ))
    .unwrap()
}

#[test]
fn daemonset_validates_and_asks_only_for_what_it_needs() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/kubernetes/execwatch.yaml");
    let out = validate(&path);
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let m = manifest();
    for want in [
        "kind: DaemonSet",
        "hostPID: true",
        r#"add: ["BPF", "PERFMON"]"#,
        r#"drop: ["ALL"]"#,
        "privileged: false",
        "readOnlyRootFilesystem: true",
        r#"args: ["--format", "json", "--metrics-addr", "0.0.0.0:9464", "--bpf-pin-dir", "/sys/fs/bpf/execwatch"]"#,
        "mountPropagation: HostToContainer",
        "path: /metrics",
        "path: /sys/kernel/btf",
    ] {
        assert!(m.contains(want), "manifest lacks {want}");
    }
}

#[test]
fn the_validator_rejects_a_broken_manifest() {
    // The check above can fail: a misspelt field does not pass.
    let broken = manifest().replace("hostPID: true", "hostPid: true");
    let path = std::env::temp_dir().join(format!("execwatch-broken-{}.yaml", std::process::id()));
    std::fs::write(&path, broken).unwrap();
    let out = validate(&path);
    std::fs::remove_file(&path).unwrap();
    assert!(!out.status.success(), "a misspelt field passed validation");
}
