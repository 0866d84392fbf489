//! Confirming the container a cgroup path claims, and naming it, from the
//! runtimes' own state on disk: no runtime socket, no Kubernetes API.
//!
//! A cgroup name such as `docker-<id>.scope` is only a claim: a user can
//! create one in the subtree systemd delegates to them. The claim is
//! confirmed when a runtime's state for that id, in a state root only root
//! can write (see [`trust`]), places the container in a cgroup that holds
//! the process's cgroup. State under `/run/user/<uid>` confirms a rootless
//! container of that user, never a system one. docs/design.md has the
//! reasoning and the race with short-lived containers.

pub mod names;
pub mod oci_state;
pub mod trust;

use std::collections::HashMap;
use std::path::{Component, Path, PathBuf};
use std::sync::Arc;

use tracing::debug;

use crate::cgroups::{CgroupInfo, ContainerClaim};
pub use names::{ImageRef, Kubernetes, Names};
use oci_state::OciState;
use trust::{Owners, TrustError};

/// Who a cgroup's processes belong to, as far as runtime state confirms.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ContainerInfo {
    /// The container id, confirmed by runtime state.
    pub id: Option<String>,
    /// The id the cgroup path claimed when no state confirmed it.
    pub unconfirmed_id: Option<String>,
    /// `docker`, `containerd`, `cri-o`, `podman`, `runc`, `crun` (confirmed only).
    pub runtime: Option<&'static str>,
    /// Set for a rootless container: the user whose state confirmed it.
    pub rootless_uid: Option<u32>,
    /// The runtime's name for the container (Kubernetes: the container name).
    pub name: Option<String>,
    pub image: Option<ImageRef>,
    pub kubernetes: Option<Kubernetes>,
}

impl ContainerInfo {
    /// Confirmed by root-owned state: a system container.
    pub fn is_system(&self) -> bool {
        self.id.is_some() && self.rootless_uid.is_none()
    }
}

/// A directory where a runtime keeps `<id>/state.json` (runc) or
/// `<id>/status` (crun).
#[derive(Debug, Clone)]
pub struct StateRoot {
    pub dir: PathBuf,
    /// Who writes there, unless the annotations say CRI-O or podman.
    pub runtime: &'static str,
    /// One level of namespaces first (containerd: `<root>/<namespace>/<id>`).
    pub namespaced: bool,
}

/// Where the runtimes keep their state.
#[derive(Debug, Clone)]
pub struct Layout {
    /// System runtimes' state roots, searched in order.
    pub roots: Vec<StateRoot>,
    /// Holds each user's runtime directory (`/run/user/<uid>`), where
    /// rootless runc and crun keep `runc/` and `crun/`.
    pub user_runtime_dirs: PathBuf,
    /// docker's per-container metadata (`<dir>/<id>/config.v2.json`).
    pub docker_containers: PathBuf,
}

impl Default for Layout {
    /// The runtimes' default paths (from their sources, checked on Debian 12
    /// with runc 1.1.5 and podman 4.3.1).
    fn default() -> Self {
        let root = |dir: &str, runtime, namespaced| StateRoot {
            dir: dir.into(),
            runtime,
            namespaced,
        };
        Layout {
            roots: vec![
                // dockerd: <exec-root>/runtime-runc, namespace "moby".
                root("/run/docker/runtime-runc/moby", "docker", false),
                // containerd's runc shim: /run/containerd/runc/<namespace>.
                root("/run/containerd/runc", "containerd", true),
                // runc's default root; CRI-O and podman use it with runc.
                root("/run/runc", "runc", false),
                // crun's default root; CRI-O's default runtime.
                root("/run/crun", "crun", false),
            ],
            user_runtime_dirs: "/run/user".into(),
            docker_containers: "/var/lib/docker/containers".into(),
        }
    }
}

/// Largest state file read (runc's state.json holds the whole libcontainer
/// config: a few KiB, more with many mounts).
pub const STATE_MAX: usize = 1 << 20;
/// Largest `config.json` or docker `config.v2.json` read.
pub const CONFIG_MAX: usize = 1 << 20;
/// Largest podman `containers.json` read (one entry is ~500 bytes).
pub const PODMAN_LIST_MAX: usize = 8 << 20;
/// Containerd namespaces looked at.
const NAMESPACES_MAX: usize = 64;
/// Containers whose names are remembered; then the cache starts over.
pub const NAMES_CACHE_MAX: usize = 4096;

/// Runtime state read for one candidate.
struct Found {
    id_dir: PathBuf,
    state: OciState,
    /// crun keeps the annotations in its copy of config.json, read lazily.
    crun: bool,
}

/// Confirms and names containers. Names are read once per container
/// instance and cached.
#[derive(Debug, Default)]
pub struct Resolver {
    layout: Layout,
    /// By state directory and creation time: one container instance.
    names: HashMap<(PathBuf, String), (&'static str, Arc<Names>)>,
}

impl Resolver {
    pub fn new(layout: Layout) -> Self {
        Resolver {
            layout,
            names: HashMap::new(),
        }
    }

    /// The container a cgroup belongs to; `None` when its path claims none.
    pub fn resolve(&mut self, cg: &CgroupInfo) -> Option<Arc<ContainerInfo>> {
        let innermost = cg.claims.first()?;
        // An outer claim can confirm when an inner one does not: a
        // container's own sub-cgroup named like another container.
        for claim in &cg.claims {
            if let Some(info) = self.confirm(cg, claim) {
                return Some(Arc::new(info));
            }
        }
        Some(Arc::new(ContainerInfo {
            unconfirmed_id: Some(innermost.id.clone()),
            ..Default::default()
        }))
    }

    fn confirm(&mut self, cg: &CgroupInfo, claim: &ContainerClaim) -> Option<ContainerInfo> {
        let claimed = &cg.path[..claim.prefix_len];
        for i in 0..self.layout.roots.len() {
            let root = self.layout.roots[i].clone();
            let dirs = if root.namespaced {
                match trust::list_dirs(&root.dir, Owners::Root, NAMESPACES_MAX) {
                    Ok(ns) => ns.iter().map(|n| root.dir.join(n)).collect(),
                    Err(e) => {
                        log_unusable(&e);
                        continue;
                    }
                }
            } else {
                vec![root.dir.clone()]
            };
            for dir in dirs {
                if let Some(found) = find_state(&dir, &claim.id, Owners::Root, claimed, &cg.path) {
                    return Some(self.describe(cg, &claim.id, found, root.runtime, None));
                }
            }
        }
        // Rootless runc and crun keep state in the user's runtime directory
        // ($XDG_RUNTIME_DIR/runc, /crun); only a cgroup in that same user's
        // delegated subtree is looked up there.
        let uid = cg.delegated_uid?;
        let user_dir = self.layout.user_runtime_dirs.join(uid.to_string());
        for (sub, runtime) in [("runc", "runc"), ("crun", "crun")] {
            let dir = user_dir.join(sub);
            if let Some(found) = find_state(&dir, &claim.id, Owners::RootOr(uid), claimed, &cg.path)
            {
                return Some(self.describe(cg, &claim.id, found, runtime, Some(uid)));
            }
        }
        None
    }

    /// The confirmed container's runtime and names.
    fn describe(
        &mut self,
        cg: &CgroupInfo,
        id: &str,
        mut found: Found,
        root_runtime: &'static str,
        rootless_uid: Option<u32>,
    ) -> ContainerInfo {
        let owners = rootless_uid.map_or(Owners::Root, Owners::RootOr);
        let key = (found.id_dir.clone(), found.state.created.clone());
        let (runtime, names) = match self.names.get(&key) {
            Some((runtime, names)) => (*runtime, Arc::clone(names)),
            None => {
                if found.crun {
                    found.state.annotations = crun_annotations(&found.id_dir, owners);
                }
                let runtime = names::manager(&found.state.annotations, root_runtime);
                let names = Arc::new(self.read_names(id, &found, runtime, owners));
                if self.names.len() >= NAMES_CACHE_MAX {
                    self.names.clear();
                }
                self.names.insert(key, (runtime, Arc::clone(&names)));
                (runtime, names)
            }
        };
        let mut kubernetes = names.kubernetes.clone();
        if rootless_uid.is_none() {
            // The path's pod uid counts once a container in it is confirmed.
            if let Some(uid) = &cg.claimed_pod_uid {
                let k = kubernetes.get_or_insert_with(Kubernetes::default);
                if k.pod_uid.is_none() {
                    k.pod_uid = Some(uid.clone());
                }
            }
        }
        ContainerInfo {
            id: Some(id.to_string()),
            unconfirmed_id: None,
            runtime: Some(runtime),
            rootless_uid,
            name: names.name.clone(),
            image: names.image.clone(),
            kubernetes,
        }
    }

    fn read_names(&self, id: &str, found: &Found, runtime: &str, owners: Owners) -> Names {
        match runtime {
            "docker" => {
                let dir = self.layout.docker_containers.join(id);
                read_parsed(&dir, "config.v2.json", owners, CONFIG_MAX, "docker", |b| {
                    names::from_docker_config(b, id)
                })
            }
            "podman" => {
                // containers/storage keeps containers.json two levels above
                // each container's bundle (<graphroot>/<driver>-containers/<id>/userdata).
                let Some(list_dir) = found
                    .state
                    .bundle
                    .as_deref()
                    .map(Path::new)
                    .and_then(|b| b.parent()?.parent())
                    .filter(|d| is_plain_absolute(d))
                else {
                    return Names::default();
                };
                read_parsed(
                    list_dir,
                    "containers.json",
                    owners,
                    PODMAN_LIST_MAX,
                    "podman",
                    |b| names::from_podman_containers_json(b, id),
                )
            }
            _ => names::from_cri_annotations(&found.state.annotations).unwrap_or_default(),
        }
    }
}

/// crun keeps a copy of the bundle's config.json in its state directory.
fn crun_annotations(id_dir: &Path, owners: Owners) -> HashMap<String, String> {
    read_parsed(id_dir, "config.json", owners, CONFIG_MAX, "crun", |b| {
        oci_state::parse_config_annotations(b)
    })
}

/// `dir/name` (at most `max` bytes, trusted as `owners` trust it) parsed;
/// the default when it is missing, untrusted or does not parse. `runtime`
/// names the file's writer in the log.
fn read_parsed<T: Default, E: std::fmt::Display>(
    dir: &Path,
    name: &str,
    owners: Owners,
    max: usize,
    runtime: &str,
    parse: impl FnOnce(&[u8]) -> Result<T, E>,
) -> T {
    match trust::read_file(dir, name, owners, max) {
        Ok(b) => parse(&b).unwrap_or_else(|e| {
            debug!(dir = %dir.display(), error = %e, "{runtime} {name} unreadable");
            T::default()
        }),
        Err(e) => {
            log_unusable(&e);
            T::default()
        }
    }
}

fn is_plain_absolute(p: &Path) -> bool {
    p.is_absolute()
        && p.components()
            .all(|c| matches!(c, Component::RootDir | Component::Normal(_)))
}

/// Missing files are the normal case; anything else is worth a debug line.
fn log_unusable(e: &TrustError) {
    if !e.is_missing() {
        debug!(error = %e, "runtime state not used");
    }
}

/// The state of container `id` under `dir`, if trusted, parseable, and its
/// cgroup both lies within the claimed cgroup `claimed` and holds the
/// process's cgroup `path`.
fn find_state(dir: &Path, id: &str, owners: Owners, claimed: &[u8], path: &[u8]) -> Option<Found> {
    let id_dir = match trust::TrustedDir::open(&dir.join(id), owners) {
        Ok(d) => d,
        Err(e) => {
            log_unusable(&e);
            return None;
        }
    };
    let parsed = match id_dir.read("state.json", STATE_MAX) {
        Ok(b) => oci_state::parse_runc(&b, id).map(|s| (s, false)),
        Err(e) if e.is_missing() => match id_dir.read("status", STATE_MAX) {
            Ok(b) => oci_state::parse_crun(&b).map(|s| (s, true)),
            Err(e) => {
                log_unusable(&e);
                return None;
            }
        },
        Err(e) => {
            log_unusable(&e);
            return None;
        }
    };
    let id_dir = id_dir.path().to_path_buf();
    let (state, crun) = match parsed {
        Ok(s) => s,
        Err(e) => {
            debug!(dir = %id_dir.display(), error = %e, "runtime state unreadable");
            return None;
        }
    };
    let cgroup = state.cgroup_path.as_deref()?.as_bytes();
    if oci_state::is_within(cgroup, claimed) && oci_state::is_within(path, cgroup) {
        Some(Found {
            id_dir,
            state,
            crun,
        })
    } else {
        debug!(
            dir = %id_dir.display(),
            state_cgroup = %String::from_utf8_lossy(cgroup),
            cgroup = %String::from_utf8_lossy(path),
            "runtime state is for another cgroup"
        );
        None
    }
}
