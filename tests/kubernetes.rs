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

/// The manifest's documents as JSON (PyYAML from the validator's venv).
fn manifest_documents() -> Vec<serde_json::Value> {
    let out = Command::new("/var/cache/execwatch/venv/bin/python")
        .args([
            "-c",
            "import json, sys, yaml; print(json.dumps(list(yaml.safe_load_all(sys.stdin))))",
        ])
        .stdin(
            std::fs::File::open(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/deploy/kubernetes/execwatch.yaml"
            ))
            .unwrap(),
        )
        .output()
        .expect("the kubernetes-validate venv (with PyYAML) is installed by scripts/install-deps");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

#[test]
fn runtime_state_roots_are_mounted_read_only_at_their_own_paths() {
    let docs = manifest_documents();
    let ds = docs
        .iter()
        .find(|d| d["kind"] == "DaemonSet")
        .expect("a DaemonSet");
    let pod = &ds["spec"]["template"]["spec"];
    let volumes = pod["volumes"].as_array().unwrap();
    let mounts = pod["containers"][0]["volumeMounts"].as_array().unwrap();
    // execwatch::containers::Layout::default() reads below these.
    let layout = execwatch::containers::Layout::default();
    let mut wanted: Vec<std::path::PathBuf> = layout
        .roots
        .iter()
        .map(|r| r.dir.clone())
        .chain([layout.docker_containers.clone()])
        .collect();
    wanted.sort();
    for dir in &wanted {
        let mount = mounts
            .iter()
            .find(|m| dir.starts_with(m["mountPath"].as_str().unwrap()) && m["mountPath"] != "/")
            .unwrap_or_else(|| panic!("nothing mounts {}", dir.display()));
        assert_eq!(mount["readOnly"], true, "{mount}");
        let vol = volumes
            .iter()
            .find(|v| v["name"] == mount["name"])
            .unwrap_or_else(|| panic!("no volume {}", mount["name"]));
        assert_eq!(
            vol["hostPath"]["path"], mount["mountPath"],
            "the node's path, mounted at the same path: {vol}"
        );
        // A directory: a missing root is made as the runtime would make it
        // (root-owned), never a file or socket in its place.
        let ty = vol["hostPath"]["type"].as_str().unwrap_or_default();
        assert!(["Directory", "DirectoryOrCreate"].contains(&ty), "{vol}");
    }
    // No runtime socket directory is mounted: read-only does not stop connect().
    for m in mounts {
        let p = m["mountPath"].as_str().unwrap();
        for socket_dir in ["/run/containerd", "/run/docker", "/var/run", "/run"] {
            assert_ne!(p, socket_dir, "{m}");
        }
    }
}
