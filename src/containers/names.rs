//! Container, image and Kubernetes names from what the runtimes write: the
//! CRI annotations containerd and CRI-O put into the bundle, podman's
//! `containers.json` (containers/storage) and docker's `config.v2.json`.
//! Everything here is untrusted text: kept bounded, escaped by the renderers.

use std::collections::HashMap;

use serde::Deserialize;

/// Longest name kept; longer ones are cut at a character boundary.
/// (Kubernetes names are at most 253 bytes, image references a few hundred.)
pub const NAME_MAX: usize = 512;

/// containerd's CRI plugin (pkg/cri/annotations).
pub mod cri {
    pub const CONTAINER_TYPE: &str = "io.kubernetes.cri.container-type";
    pub const CONTAINER_NAME: &str = "io.kubernetes.cri.container-name";
    pub const SANDBOX_NAME: &str = "io.kubernetes.cri.sandbox-name";
    pub const SANDBOX_NAMESPACE: &str = "io.kubernetes.cri.sandbox-namespace";
    pub const SANDBOX_UID: &str = "io.kubernetes.cri.sandbox-uid";
    pub const IMAGE_NAME: &str = "io.kubernetes.cri.image-name";
}

/// CRI-O: the kubelet's labels, which CRI-O copies into the annotations
/// (SpecAddAnnotations), and its own `io.kubernetes.cri-o.*` keys.
pub mod crio {
    pub const POD_NAME: &str = "io.kubernetes.pod.name";
    pub const POD_NAMESPACE: &str = "io.kubernetes.pod.namespace";
    pub const POD_UID: &str = "io.kubernetes.pod.uid";
    pub const CONTAINER_NAME: &str = "io.kubernetes.container.name";
    /// Some name of the image ("" when it was referenced by id).
    pub const IMAGE_NAME: &str = "io.kubernetes.cri-o.ImageName";
    /// The image as the user asked for it.
    pub const IMAGE: &str = "io.kubernetes.cri-o.Image";
    pub const CONTAINER_TYPE: &str = "io.kubernetes.cri-o.ContainerType";
}

/// Who created the container: `cri-o` or `libpod` (podman).
pub const CONTAINER_MANAGER: &str = "io.container.manager";

const WANTED: [&str; 14] = [
    cri::CONTAINER_TYPE,
    cri::CONTAINER_NAME,
    cri::SANDBOX_NAME,
    cri::SANDBOX_NAMESPACE,
    cri::SANDBOX_UID,
    cri::IMAGE_NAME,
    crio::POD_NAME,
    crio::POD_NAMESPACE,
    crio::POD_UID,
    crio::CONTAINER_NAME,
    crio::IMAGE_NAME,
    crio::IMAGE,
    crio::CONTAINER_TYPE,
    CONTAINER_MANAGER,
];

/// The annotations attribution reads; the rest are not kept.
pub fn is_wanted_annotation(key: &str) -> bool {
    WANTED.contains(&key)
}

/// Names of one container.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Names {
    pub name: Option<String>,
    pub image: Option<ImageRef>,
    pub kubernetes: Option<Kubernetes>,
}

/// Kubernetes names, from the CRI annotations.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Kubernetes {
    pub pod_name: Option<String>,
    pub namespace: Option<String>,
    pub pod_uid: Option<String>,
    /// `None` for a pod's sandbox (pause) container.
    pub container_name: Option<String>,
}

/// An image reference split as `[registry[:port]/]path[:tag][@digest]`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ImageRef {
    pub name: String,
    pub tag: Option<String>,
    pub digest: Option<String>,
}

/// Cut to at most `NAME_MAX` bytes; empty is no name.
pub fn bounded(s: &str) -> Option<String> {
    if s.is_empty() {
        return None;
    }
    let mut end = s.len().min(NAME_MAX);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    Some(s[..end].to_string())
}

impl ImageRef {
    /// Split a reference. A bare image id (`sha256:<hex>` or 64 hex) has no
    /// tag: the colon there is not a tag separator.
    pub fn parse(reference: &str) -> Option<ImageRef> {
        let r = reference.trim();
        if r.is_empty() {
            return None;
        }
        let is_hex64 = |s: &str| s.len() == 64 && s.bytes().all(|b| b.is_ascii_hexdigit());
        if is_hex64(r) || r.strip_prefix("sha256:").is_some_and(is_hex64) {
            return Some(ImageRef {
                name: bounded(r)?,
                tag: None,
                digest: None,
            });
        }
        let (rest, digest) = match r.split_once('@') {
            Some((n, d)) => (n, bounded(d)),
            None => (r, None),
        };
        // A tag's colon comes after the last `/`; an earlier one is a
        // registry port (`host:5000/app`).
        let last_slash = rest.rfind('/').map_or(0, |i| i + 1);
        let (name, tag) = match rest[last_slash..].rfind(':') {
            Some(i) => (
                &rest[..last_slash + i],
                bounded(&rest[last_slash + i + 1..]),
            ),
            None => (rest, None),
        };
        Some(ImageRef {
            name: bounded(name)?,
            tag,
            digest,
        })
    }
}

/// Which runtime made a container found in an OCI runtime's state root,
/// from its annotations: `cri-o`, `podman`, or the root's own runtime.
pub fn manager(annotations: &HashMap<String, String>, root_runtime: &'static str) -> &'static str {
    match annotations.get(CONTAINER_MANAGER).map(String::as_str) {
        Some("cri-o") => "cri-o",
        Some("libpod") => "podman",
        _ if annotations.contains_key(crio::CONTAINER_TYPE) => "cri-o",
        _ => root_runtime,
    }
}

/// Names from the CRI annotations (containerd's or CRI-O's); `None` when the
/// container was not made through the CRI.
pub fn from_cri_annotations(a: &HashMap<String, String>) -> Option<Names> {
    let get = |k: &str| a.get(k).and_then(|v| bounded(v));
    if a.contains_key(cri::SANDBOX_NAME) || a.contains_key(cri::CONTAINER_TYPE) {
        let k = Kubernetes {
            pod_name: get(cri::SANDBOX_NAME),
            namespace: get(cri::SANDBOX_NAMESPACE),
            pod_uid: get(cri::SANDBOX_UID),
            container_name: get(cri::CONTAINER_NAME),
        };
        return Some(Names {
            name: k.container_name.clone(),
            image: a.get(cri::IMAGE_NAME).and_then(|i| ImageRef::parse(i)),
            kubernetes: Some(k),
        });
    }
    if a.contains_key(crio::POD_NAME) || a.contains_key(crio::CONTAINER_TYPE) {
        let k = Kubernetes {
            pod_name: get(crio::POD_NAME),
            namespace: get(crio::POD_NAMESPACE),
            pod_uid: get(crio::POD_UID),
            container_name: get(crio::CONTAINER_NAME),
        };
        let image = [crio::IMAGE_NAME, crio::IMAGE]
            .iter()
            .find_map(|key| a.get(*key).and_then(|i| ImageRef::parse(i)));
        return Some(Names {
            name: k.container_name.clone(),
            image,
            kubernetes: Some(k),
        });
    }
    None
}

#[derive(Deserialize)]
struct StorageContainer {
    id: String,
    #[serde(default)]
    names: Option<Vec<String>>,
    /// A JSON document in a string: podman's RuntimeContainerMetadata.
    #[serde(default)]
    metadata: Option<String>,
}

#[derive(Deserialize)]
struct PodmanMetadata {
    #[serde(rename = "image-name", default)]
    image_name: Option<String>,
    #[serde(default)]
    name: Option<String>,
}

/// Names of container `id` from containers/storage's `containers.json`, the
/// list podman keeps beside each container's directory.
pub fn from_podman_containers_json(bytes: &[u8], id: &str) -> Result<Names, serde_json::Error> {
    let list: Vec<StorageContainer> = serde_json::from_slice(bytes)?;
    let Some(c) = list.into_iter().find(|c| c.id == id) else {
        return Ok(Names::default());
    };
    let meta = c
        .metadata
        .as_deref()
        .and_then(|m| serde_json::from_str::<PodmanMetadata>(m).ok());
    let name = meta
        .as_ref()
        .and_then(|m| m.name.as_deref())
        .or_else(|| c.names.as_ref().and_then(|n| n.first()).map(String::as_str))
        .and_then(bounded);
    let image = meta
        .as_ref()
        .and_then(|m| m.image_name.as_deref())
        .and_then(ImageRef::parse);
    Ok(Names {
        name,
        image,
        kubernetes: None,
    })
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct DockerContainer {
    #[serde(default, rename = "ID")]
    id: Option<String>,
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    config: Option<DockerConfig>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct DockerConfig {
    #[serde(default)]
    image: Option<String>,
}

/// Names from docker's `/var/lib/docker/containers/<id>/config.v2.json`.
pub fn from_docker_config(bytes: &[u8], id: &str) -> Result<Names, serde_json::Error> {
    let c: DockerContainer = serde_json::from_slice(bytes)?;
    if c.id.as_deref().is_some_and(|i| i != id) {
        return Ok(Names::default());
    }
    Ok(Names {
        // Docker keeps the name with a leading `/`.
        name: c
            .name
            .as_deref()
            .map(|n| n.trim_start_matches('/'))
            .and_then(bounded),
        image: c
            .config
            .and_then(|c| c.image)
            .as_deref()
            .and_then(ImageRef::parse),
        kubernetes: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn img(r: &str) -> (String, Option<String>, Option<String>) {
        let i = ImageRef::parse(r).unwrap();
        (i.name, i.tag, i.digest)
    }

    fn s(x: &str) -> Option<String> {
        Some(x.to_string())
    }

    const HEX: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    #[test]
    fn image_references() {
        assert_eq!(img("nginx"), ("nginx".into(), None, None));
        assert_eq!(img("nginx:1.25"), ("nginx".into(), s("1.25"), None));
        assert_eq!(
            img("docker.io/library/nginx:latest"),
            ("docker.io/library/nginx".into(), s("latest"), None)
        );
        assert_eq!(
            img("registry.local:5000/team/app"),
            ("registry.local:5000/team/app".into(), None, None)
        );
        assert_eq!(
            img("registry.local:5000/team/app:v2"),
            ("registry.local:5000/team/app".into(), s("v2"), None)
        );
        let d = format!("sha256:{HEX}");
        assert_eq!(
            img(&format!("[::1]:5000/app:v1@{d}")),
            ("[::1]:5000/app".into(), s("v1"), Some(d.clone()))
        );
        assert_eq!(
            img(&format!("quay.io/app@{d}")),
            ("quay.io/app".into(), None, Some(d.clone()))
        );
        // A bare id is not name "sha256", tag "<hex>".
        assert_eq!(img(&d), (d.clone(), None, None));
        assert_eq!(img(HEX), (HEX.into(), None, None));
        assert_eq!(ImageRef::parse(""), None);
        assert_eq!(ImageRef::parse("@sha256:x"), None);
        assert_eq!(img("app:"), ("app".into(), None, None));
    }

    #[test]
    fn names_are_bounded_at_a_char_boundary() {
        let long = "é".repeat(NAME_MAX);
        let b = bounded(&long).unwrap();
        assert!(b.len() <= NAME_MAX && b.len() >= NAME_MAX - 1);
        assert!(long.starts_with(&b));
        assert_eq!(bounded(""), None);
        // Control characters are kept: the renderers escape them.
        assert_eq!(bounded("a\n\x1b[31m").as_deref(), Some("a\n\x1b[31m"));
    }

    fn ann(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn containerd_cri_annotations() {
        let a = ann(&[
            (cri::CONTAINER_TYPE, "container"),
            (cri::CONTAINER_NAME, "nginx"),
            (cri::SANDBOX_NAME, "web-7d9f-abcde"),
            (cri::SANDBOX_NAMESPACE, "shop"),
            (cri::SANDBOX_UID, "8a3b2c1d-1234-4abc-9def-0123456789ab"),
            (cri::IMAGE_NAME, "docker.io/library/nginx:1.25"),
        ]);
        let n = from_cri_annotations(&a).unwrap();
        assert_eq!(n.name.as_deref(), Some("nginx"));
        let k = n.kubernetes.unwrap();
        assert_eq!(k.pod_name.as_deref(), Some("web-7d9f-abcde"));
        assert_eq!(k.namespace.as_deref(), Some("shop"));
        assert_eq!(k.container_name.as_deref(), Some("nginx"));
        let i = n.image.unwrap();
        assert_eq!(
            (i.name.as_str(), i.tag.as_deref()),
            ("docker.io/library/nginx", Some("1.25"))
        );
        assert_eq!(manager(&a, "containerd"), "containerd");
        // The sandbox (pause) container: a pod, no container name.
        let a = ann(&[
            (cri::CONTAINER_TYPE, "sandbox"),
            (cri::SANDBOX_NAME, "web-0"),
            (cri::SANDBOX_NAMESPACE, "shop"),
        ]);
        let n = from_cri_annotations(&a).unwrap();
        assert_eq!(n.name, None);
        assert_eq!(n.kubernetes.unwrap().container_name, None);
    }

    #[test]
    fn crio_annotations() {
        let a = ann(&[
            (CONTAINER_MANAGER, "cri-o"),
            (crio::CONTAINER_TYPE, "container"),
            (crio::POD_NAME, "db-0"),
            (crio::POD_NAMESPACE, "data"),
            (crio::POD_UID, "8a3b2c1d-1234-4abc-9def-0123456789ab"),
            (crio::CONTAINER_NAME, "postgres"),
            (crio::IMAGE, "postgres:16"),
            (crio::IMAGE_NAME, "docker.io/library/postgres:16"),
        ]);
        assert_eq!(manager(&a, "runc"), "cri-o");
        let n = from_cri_annotations(&a).unwrap();
        assert_eq!(n.name.as_deref(), Some("postgres"));
        let k = n.kubernetes.unwrap();
        assert_eq!(
            (k.pod_name.as_deref(), k.namespace.as_deref()),
            (Some("db-0"), Some("data"))
        );
        assert_eq!(n.image.unwrap().name, "docker.io/library/postgres");
        // ImageName is "" when the image was given by id: fall back.
        let a = ann(&[
            (crio::POD_NAME, "p"),
            (crio::IMAGE_NAME, ""),
            (crio::IMAGE, "quay.io/x/y:3"),
        ]);
        let i = from_cri_annotations(&a).unwrap().image.unwrap();
        assert_eq!(
            (i.name.as_str(), i.tag.as_deref()),
            ("quay.io/x/y", Some("3"))
        );
    }

    #[test]
    fn podman_annotations_are_not_cri() {
        // podman sets some io.kubernetes.cri-o.* keys too, but not these.
        let a = ann(&[(CONTAINER_MANAGER, "libpod")]);
        assert_eq!(from_cri_annotations(&a), None);
        assert_eq!(manager(&a, "runc"), "podman");
        assert_eq!(manager(&HashMap::new(), "crun"), "crun");
    }

    #[test]
    fn podman_containers_json() {
        // As written by podman 4.3.1 (containers/storage), trimmed.
        let j = format!(
            r#"[{{"id":"other","names":["x"]}},
            {{"id":"{HEX}","names":["ewprobe"],"image":"f936","layer":"2418",
            "metadata":"{{\"image-name\":\"localhost/ewbusybox:1.0\",\"image-id\":\"f936\",\"name\":\"ewprobe\",\"created-at\":1795655724}}",
            "created":"2026-11-26T01:15:24.925828983Z","flags":{{"MountLabel":""}}}}]"#
        );
        let n = from_podman_containers_json(j.as_bytes(), HEX).unwrap();
        assert_eq!(n.name.as_deref(), Some("ewprobe"));
        let i = n.image.unwrap();
        assert_eq!(
            (i.name.as_str(), i.tag.as_deref()),
            ("localhost/ewbusybox", Some("1.0"))
        );
        assert_eq!(
            from_podman_containers_json(j.as_bytes(), "absent").unwrap(),
            Names::default()
        );
        // Broken metadata: the storage name still names it.
        let j = format!(r#"[{{"id":"{HEX}","names":["n1"],"metadata":"{{not json"}}]"#);
        let n = from_podman_containers_json(j.as_bytes(), HEX).unwrap();
        assert_eq!((n.name.as_deref(), n.image), (Some("n1"), None));
        assert!(from_podman_containers_json(b"{}", HEX).is_err());
        assert!(from_podman_containers_json(b"[{\"id\":1}]", HEX).is_err());
    }

    #[test]
    fn docker_config_v2() {
        let j = format!(
            r#"{{"StreamConfig":{{}},"State":{{"Running":true,"Pid":42}},"ID":"{HEX}",
            "Created":"2026-01-01T00:00:00Z","Path":"sh","Args":[],
            "Config":{{"Hostname":"0123","Image":"ghcr.io/acme/api:2.1","Labels":{{}}}},
            "Image":"sha256:{HEX}","Name":"/api-1","Driver":"overlay2"}}"#
        );
        let n = from_docker_config(j.as_bytes(), HEX).unwrap();
        assert_eq!(n.name.as_deref(), Some("api-1"));
        let i = n.image.unwrap();
        assert_eq!(
            (i.name.as_str(), i.tag.as_deref()),
            ("ghcr.io/acme/api", Some("2.1"))
        );
        assert_eq!(
            from_docker_config(j.as_bytes(), "other").unwrap(),
            Names::default()
        );
        assert!(from_docker_config(b"{\"Name\":[]}", HEX).is_err());
    }

    #[test]
    fn hostile_names_are_bounded() {
        let huge = "A".repeat(1 << 20);
        let a = ann(&[(cri::SANDBOX_NAME, &huge), (cri::IMAGE_NAME, &huge)]);
        let n = from_cri_annotations(&a).unwrap();
        assert_eq!(n.kubernetes.unwrap().pod_name.unwrap().len(), NAME_MAX);
        assert_eq!(n.image.unwrap().name.len(), NAME_MAX);
    }
}
