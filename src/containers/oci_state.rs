//! The OCI runtimes' own per-container state: runc's `<root>/<id>/state.json`
//! and crun's `<root>/<id>/status` (with its copy of the bundle's
//! `config.json`). Only the fields attribution needs are kept.

use std::collections::HashMap;

use serde::Deserialize;

/// What a runtime's state says about one container.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OciState {
    /// The container's cgroup, from the root of the v2 hierarchy.
    pub cgroup_path: Option<String>,
    /// The bundle directory the container was created from.
    pub bundle: Option<String>,
    /// The bundle's annotations, when the state carries them (runc copies
    /// them into its `labels`).
    pub annotations: HashMap<String, String>,
    /// Creation time as the runtime wrote it: with the id, names one
    /// container instance (a runc id can be reused after delete).
    pub created: String,
}

#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("not valid JSON for this file: {0}")]
    Json(#[from] serde_json::Error),
    #[error("state names container {found:?}, not {want:?}")]
    OtherId { found: String, want: String },
}

/// Where runc mounts cgroup v2: the unified hierarchy alone, or beside the
/// v1 controllers on hybrid hosts.
const CGROUP2_PURE: &str = "/sys/fs/cgroup";
const CGROUP2_HYBRID: &str = "/sys/fs/cgroup/unified";

#[derive(Deserialize)]
struct RuncState {
    id: String,
    #[serde(default)]
    created: Option<String>,
    #[serde(default)]
    cgroup_paths: Option<HashMap<String, String>>,
    #[serde(default)]
    config: Option<RuncConfig>,
}

#[derive(Deserialize)]
struct RuncConfig {
    #[serde(default)]
    labels: Option<Vec<String>>,
}

/// runc's `state.json`. `id` is the directory name it was read from.
pub fn parse_runc(bytes: &[u8], id: &str) -> Result<OciState, StateError> {
    let s: RuncState = serde_json::from_slice(bytes)?;
    if s.id != id {
        return Err(StateError::OtherId {
            found: s.id,
            want: id.to_string(),
        });
    }
    let paths = s.cgroup_paths.unwrap_or_default();
    // The v2 path is under key "": alone on a pure v2 host, beside the v1
    // controllers' keys on a hybrid one, where v2 is mounted at .../unified.
    let hybrid = paths.keys().any(|k| !k.is_empty());
    let mount = if hybrid { CGROUP2_HYBRID } else { CGROUP2_PURE };
    let cgroup_path = paths.get("").and_then(|p| {
        let rel = p.strip_prefix(mount)?;
        match rel {
            "" => Some("/".to_string()),
            r if r.starts_with('/') => Some(r.to_string()),
            _ => None,
        }
    });
    let mut annotations = HashMap::new();
    let mut bundle = None;
    for label in s.config.and_then(|c| c.labels).unwrap_or_default() {
        if let Some((k, v)) = label.split_once('=') {
            if k == "bundle" {
                bundle = Some(v.to_string());
            } else if super::names::is_wanted_annotation(k) {
                annotations.insert(k.to_string(), v.to_string());
            }
        }
    }
    Ok(OciState {
        cgroup_path,
        bundle,
        annotations,
        created: s.created.unwrap_or_default(),
    })
}

#[derive(Deserialize)]
struct CrunStatus {
    #[serde(rename = "cgroup-path", default)]
    cgroup_path: Option<String>,
    #[serde(default)]
    bundle: Option<String>,
    #[serde(default)]
    created: Option<String>,
}

/// crun's `status`. It has no id field: the directory name is the id.
pub fn parse_crun(bytes: &[u8]) -> Result<OciState, StateError> {
    let s: CrunStatus = serde_json::from_slice(bytes)?;
    Ok(OciState {
        // crun writes the path from the v2 root, with a leading `/`.
        cgroup_path: s.cgroup_path.filter(|p| p.starts_with('/')),
        bundle: s.bundle.filter(|b| !b.is_empty()),
        annotations: HashMap::new(),
        created: s.created.unwrap_or_default(),
    })
}

#[derive(Deserialize)]
struct OciConfig {
    #[serde(default)]
    annotations: Option<HashMap<String, String>>,
}

/// The annotations of an OCI `config.json` (crun keeps a copy in its state
/// directory).
pub fn parse_config_annotations(bytes: &[u8]) -> Result<HashMap<String, String>, StateError> {
    let c: OciConfig = serde_json::from_slice(bytes)?;
    Ok(c.annotations
        .unwrap_or_default()
        .into_iter()
        .filter(|(k, _)| super::names::is_wanted_annotation(k))
        .collect())
}

/// Whether a cgroup path is `container` or below it: component-wise, on bytes.
pub fn is_within(path: &[u8], container: &[u8]) -> bool {
    if container == b"/" {
        return path.starts_with(b"/");
    }
    path.strip_prefix(container)
        .is_some_and(|rest| rest.is_empty() || rest.starts_with(b"/"))
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID: &str = "4253b43924fe097bf14c0ea0953779a99716b7b8cb07b6e2344f2237ae76c70d";

    /// Trimmed from a real runc 1.1.5 state.json (podman container, hybrid host).
    fn runc_hybrid() -> String {
        format!(
            r#"{{"id":"{ID}","init_process_pid":11697,"init_process_start":32141,
            "created":"2026-11-26T01:15:24.9Z","config":{{"no_pivot_root":false,
            "mounts":[{{"source":"proc","destination":"/proc"}}],
            "labels":["io.podman.annotations.init=FALSE","io.container.manager=libpod",
            "io.kubernetes.cri-o.TTY=false","odd-label-without-equals",
            "bundle=/var/lib/containers/storage/overlay-containers/{ID}/userdata"]}},
            "rootless":false,
            "cgroup_paths":{{"":"/sys/fs/cgroup/unified/libpod_parent/libpod-{ID}",
            "cpu":"/sys/fs/cgroup/cpu/libpod_parent/libpod-{ID}",
            "name=systemd":"/sys/fs/cgroup/systemd/libpod_parent/libpod-{ID}"}},
            "namespace_paths":{{"NEWPID":"/proc/11697/ns/pid"}},"external_descriptors":[],
            "intel_rdt_path":""}}"#
        )
    }

    #[test]
    fn runc_state_on_a_hybrid_host() {
        let s = parse_runc(runc_hybrid().as_bytes(), ID).unwrap();
        assert_eq!(
            s.cgroup_path.as_deref(),
            Some(&*format!("/libpod_parent/libpod-{ID}"))
        );
        assert_eq!(
            s.bundle.as_deref(),
            Some(&*format!(
                "/var/lib/containers/storage/overlay-containers/{ID}/userdata"
            ))
        );
        assert_eq!(s.annotations["io.container.manager"], "libpod");
        assert!(!s.annotations.contains_key("io.podman.annotations.init"));
        assert_eq!(s.created, "2026-11-26T01:15:24.9Z");
    }

    #[test]
    fn runc_state_on_a_pure_v2_host() {
        let j = r#"{"id":"web","cgroup_paths":{"":"/sys/fs/cgroup/unified/x.scope"},
            "config":{"labels":["io.kubernetes.cri.container-name=a=b"]}}"#;
        let s = parse_runc(j.as_bytes(), "web").unwrap();
        // Pure v2: "unified" is an ordinary cgroup name there.
        assert_eq!(s.cgroup_path.as_deref(), Some("/unified/x.scope"));
        assert_eq!(s.annotations["io.kubernetes.cri.container-name"], "a=b");
        assert_eq!(s.bundle, None);
    }

    #[test]
    fn runc_state_for_another_id_is_refused() {
        let e = parse_runc(runc_hybrid().as_bytes(), "other").unwrap_err();
        assert!(matches!(e, StateError::OtherId { .. }), "{e}");
    }

    #[test]
    fn runc_state_without_v2_path_or_with_nulls() {
        let j = r#"{"id":"a","cgroup_paths":null,"config":{"labels":null}}"#;
        let s = parse_runc(j.as_bytes(), "a").unwrap();
        assert_eq!(s.cgroup_path, None);
        // A path outside the cgroup mount names no cgroup.
        let j = r#"{"id":"a","cgroup_paths":{"":"/elsewhere/x"}}"#;
        assert_eq!(parse_runc(j.as_bytes(), "a").unwrap().cgroup_path, None);
        let j = r#"{"id":"a","cgroup_paths":{"":"/sys/fs/cgroupx/y"}}"#;
        assert_eq!(parse_runc(j.as_bytes(), "a").unwrap().cgroup_path, None);
    }

    #[test]
    fn hostile_state_is_an_error_not_a_panic() {
        for bad in [
            &b""[..],
            b"null",
            b"[]",
            b"{\"id\":5}",
            b"{\"id\":\"a\",\"cgroup_paths\":[1,2]}",
            b"{\"id\":\"a\",\"config\":{\"labels\":[1]}}",
            b"{\"id\":\"\xff\xfe\"}",
            b"{\"id\":\"a\"",
        ] {
            assert!(
                parse_runc(bad, "a").is_err(),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
        // Deep nesting: skipped in a field not read, a type error in one
        // that is; never a stack overflow.
        let nest = |field: &str| {
            format!(
                "{{\"id\":\"a\",\"{field}\":{}{}}}",
                "[".repeat(100_000),
                "]".repeat(100_000)
            )
        };
        let s = parse_runc(nest("x").as_bytes(), "a").unwrap();
        assert_eq!(s.cgroup_path, None);
        assert!(parse_runc(nest("cgroup_paths").as_bytes(), "a").is_err());
        assert!(parse_crun(nest("bundle").as_bytes()).is_err());
    }

    #[test]
    fn crun_status() {
        // Shape written by libcrun_write_container_status.
        let j = r#"{
            "pid" : 4242, "process-start-time" : 123456,
            "cgroup-path" : "/machine.slice/libpod-abc.scope/container",
            "scope" : "libpod-abc.scope", "rootfs" : "/r", "systemd-cgroup" : true,
            "bundle" : "/run/containers/storage/overlay-containers/abc/userdata",
            "created" : "2026-01-01T00:00:00.000000000Z", "owner" : "root",
            "detached" : true, "external_descriptors" : "[\"/dev/null\"]" }"#;
        let s = parse_crun(j.as_bytes()).unwrap();
        assert_eq!(
            s.cgroup_path.as_deref(),
            Some("/machine.slice/libpod-abc.scope/container")
        );
        assert_eq!(
            s.bundle.as_deref(),
            Some("/run/containers/storage/overlay-containers/abc/userdata")
        );
        let s = parse_crun(br#"{"cgroup-path":"relative/x","bundle":""}"#).unwrap();
        assert_eq!((s.cgroup_path, s.bundle), (None, None));
    }

    #[test]
    fn config_annotations_keep_only_what_attribution_reads() {
        let j = r#"{"ociVersion":"1.0.2","process":{"args":["sh"]},
            "annotations":{"io.kubernetes.cri.sandbox-name":"web-0","unrelated":"x"}}"#;
        let a = parse_config_annotations(j.as_bytes()).unwrap();
        assert_eq!(a.len(), 1);
        assert_eq!(a["io.kubernetes.cri.sandbox-name"], "web-0");
        assert!(parse_config_annotations(br#"{"annotations":{"a":1}}"#).is_err());
        assert!(parse_config_annotations(br#"{}"#).unwrap().is_empty());
    }

    #[test]
    fn within_is_component_wise() {
        assert!(is_within(b"/a/b", b"/a/b"));
        assert!(is_within(b"/a/b/c", b"/a/b"));
        assert!(!is_within(b"/a/bc", b"/a/b"));
        assert!(!is_within(b"/a", b"/a/b"));
        assert!(
            !is_within(b"a/b", b"/a/b"),
            "a truncated path confirms nothing"
        );
        assert!(is_within(b"/x", b"/"));
    }
}
