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
use std::time::{Duration, Instant};

use tracing::debug;

use crate::cgroups::{CgroupInfo, ContainerClaim, PerSecond};
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
    /// Confirmed, but the file its names come from was missing or did not
    /// parse: a later lookup reads it again (see [`NAMES_RETRY_FOR`]).
    pub names_pending: bool,
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
/// Largest state file read from a user's runtime directory: theirs to fill,
/// and parsed on the event thread (a rootless runc's state is a few KiB).
pub const USER_STATE_MAX: usize = 256 << 10;
/// Bytes of users' state files read per second, all users together: what
/// users can make the event thread parse. Past it, their claims wait for a
/// retry; system containers are looked up as before.
pub const USER_STATE_BYTES_PER_SEC: usize = 1 << 20;
/// Largest `config.json` or docker `config.v2.json` read.
pub const CONFIG_MAX: usize = 1 << 20;
/// Largest podman `containers.json` read (one entry is ~500 bytes).
pub const PODMAN_LIST_MAX: usize = 8 << 20;
/// Containerd namespaces looked at.
const NAMESPACES_MAX: usize = 64;
/// Containers whose names are remembered; then the cache starts over.
pub const NAMES_CACHE_MAX: usize = 4096;
/// How long after the first miss a container's names file is read again
/// (its runtime may write it after the state); then the miss is cached.
pub const NAMES_RETRY_FOR: Duration = Duration::from_secs(2);

/// One container instance: its state directory and creation time.
type InstanceKey = (PathBuf, String);

/// Runtime state read for one candidate.
struct Found {
    id_dir: PathBuf,
    state: OciState,
    /// crun keeps the annotations in its copy of config.json, read lazily.
    crun: bool,
}

/// Confirms and names containers. Names are read once per system
/// container instance and cached; a rootless container's are never read.
#[derive(Debug, Default)]
pub struct Resolver {
    layout: Layout,
    names: HashMap<InstanceKey, (&'static str, Arc<Names>)>,
    /// Instances whose names file was missing: when it was first missed.
    missed: HashMap<InstanceKey, Instant>,
    /// State directories looked in, since start (what a lookup costs).
    pub(crate) state_lookups: u64,
    /// Users' state bytes read, per second.
    user_bytes: PerSecond,
}

/// What a cgroup's path claims, before (or without) a lookup: its innermost
/// claim, unconfirmed; `None` when it claims none.
pub fn unconfirmed(cg: &CgroupInfo) -> Option<Arc<ContainerInfo>> {
    let innermost = cg.claims.first()?;
    Some(Arc::new(ContainerInfo {
        unconfirmed_id: Some(innermost.id.clone()),
        ..Default::default()
    }))
}

impl Resolver {
    pub fn new(layout: Layout) -> Self {
        Resolver {
            layout,
            ..Default::default()
        }
    }

    /// The container a cgroup belongs to; `None` when its path claims none.
    pub fn resolve(&mut self, cg: &CgroupInfo) -> Option<Arc<ContainerInfo>> {
        cg.claims.first()?;
        // An outer claim can confirm when an inner one does not: a
        // container's own sub-cgroup named like another container.
        for claim in &cg.claims {
            if let Some(info) = self.confirm(cg, claim) {
                return Some(Arc::new(info));
            }
        }
        unconfirmed(cg)
    }

    fn find_state(
        &mut self,
        dir: &Path,
        id: &str,
        owners: Owners,
        claimed: &[u8],
        path: &[u8],
    ) -> Option<Found> {
        self.state_lookups += 1;
        match owners {
            Owners::Root => find_state(dir, id, owners, STATE_MAX, claimed, path).0,
            Owners::RootOr(_) => {
                let (found, read) = find_state(dir, id, owners, USER_STATE_MAX, claimed, path);
                self.user_bytes.spend(read as u64);
                found
            }
        }
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
                if let Some(found) =
                    self.find_state(&dir, &claim.id, Owners::Root, claimed, &cg.path)
                {
                    return Some(self.describe(cg, &claim.id, found, root.runtime, None));
                }
            }
        }
        // Rootless runc and crun keep state in the user's runtime directory
        // ($XDG_RUNTIME_DIR/runc, /crun); only a cgroup in that same user's
        // delegated subtree is looked up there.
        let uid = cg.delegated_uid?;
        if !self
            .user_bytes
            .has_room(Instant::now(), USER_STATE_BYTES_PER_SEC as u64)
        {
            return None;
        }
        let user_dir = self.layout.user_runtime_dirs.join(uid.to_string());
        for (sub, runtime) in [("runc", "runc"), ("crun", "crun")] {
            let dir = user_dir.join(sub);
            if let Some(found) =
                self.find_state(&dir, &claim.id, Owners::RootOr(uid), claimed, &cg.path)
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
        if let Some(uid) = rootless_uid {
            // A rootless container's names are its user's word and never
            // shown: its user's files (up to 8 MiB each) are not read, and
            // not cached, so a user cannot make every new cgroup cost a
            // parse or evict system containers' names.
            return ContainerInfo {
                id: Some(id.to_string()),
                runtime: Some(names::manager(&found.state.annotations, root_runtime)),
                rootless_uid: Some(uid),
                ..Default::default()
            };
        }
        let key = (found.id_dir.clone(), found.state.created.clone());
        let (runtime, names, names_pending) = match self.names.get(&key) {
            Some((runtime, names)) => (*runtime, Arc::clone(names), false),
            None => {
                let mut missing = false;
                if found.crun {
                    match crun_annotations(&found.id_dir) {
                        Some(a) => found.state.annotations = a,
                        None => missing = true,
                    }
                }
                let runtime = names::manager(&found.state.annotations, root_runtime);
                let names = match self.read_names(id, &found, runtime) {
                    Some(n) => n,
                    None => {
                        missing = true;
                        Names::default()
                    }
                };
                let names = Arc::new(names);
                let pending = missing && self.may_retry(&key);
                if !pending {
                    self.missed.remove(&key);
                    if self.names.len() >= NAMES_CACHE_MAX {
                        self.names.clear();
                    }
                    self.names.insert(key, (runtime, Arc::clone(&names)));
                }
                (runtime, names, pending)
            }
        };
        let mut kubernetes = names.kubernetes.clone();
        // The path's pod uid counts once a container in it is confirmed.
        if let Some(uid) = &cg.claimed_pod_uid {
            let k = kubernetes.get_or_insert_with(Kubernetes::default);
            if k.pod_uid.is_none() {
                k.pod_uid = Some(uid.clone());
            }
        }
        ContainerInfo {
            id: Some(id.to_string()),
            unconfirmed_id: None,
            runtime: Some(runtime),
            rootless_uid: None,
            name: names.name.clone(),
            image: names.image.clone(),
            kubernetes,
            names_pending,
        }
    }

    /// Whether a missed names file is still worth reading again: for
    /// `NAMES_RETRY_FOR` after the first miss.
    fn may_retry(&mut self, key: &InstanceKey) -> bool {
        if self.missed.len() >= NAMES_CACHE_MAX && !self.missed.contains_key(key) {
            self.missed.clear();
        }
        let now = Instant::now();
        let first = *self.missed.entry(key.clone()).or_insert(now);
        now.duration_since(first) < NAMES_RETRY_FOR
    }

    /// A system container's names; `None` when the file they come from is
    /// missing or does not parse (it may not be written yet).
    fn read_names(&self, id: &str, found: &Found, runtime: &str) -> Option<Names> {
        match runtime {
            "docker" => {
                let dir = self.layout.docker_containers.join(id);
                read_parsed(&dir, "config.v2.json", CONFIG_MAX, "docker", |b| {
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
                    return Some(Names::default());
                };
                read_parsed(
                    list_dir,
                    "containers.json",
                    PODMAN_LIST_MAX,
                    "podman",
                    |b| names::from_podman_containers_json(b, id),
                )
            }
            _ => Some(names::from_cri_annotations(&found.state.annotations).unwrap_or_default()),
        }
    }
}

/// crun keeps a copy of the bundle's config.json in its state directory;
/// `None` when it is missing or does not parse.
fn crun_annotations(id_dir: &Path) -> Option<HashMap<String, String>> {
    read_parsed(id_dir, "config.json", CONFIG_MAX, "crun", |b| {
        oci_state::parse_config_annotations(b)
    })
}

/// `dir/name` (at most `max` bytes, root's) parsed. `None` when it is
/// missing or does not parse, which a retry may mend; the default when it
/// is untrusted or too large, which it will not. `runtime` names the
/// file's writer in the log.
fn read_parsed<T: Default, E: std::fmt::Display>(
    dir: &Path,
    name: &str,
    max: usize,
    runtime: &str,
    parse: impl FnOnce(&[u8]) -> Result<T, E>,
) -> Option<T> {
    match trust::read_file(dir, name, Owners::Root, max) {
        Ok(b) => match parse(&b) {
            Ok(t) => Some(t),
            Err(e) => {
                debug!(dir = %dir.display(), error = %e, "{runtime} {name} unreadable");
                None
            }
        },
        Err(e) if e.is_missing() => None,
        Err(e) => {
            log_unusable(&e);
            Some(T::default())
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

/// The state of container `id` under `dir` (a file of at most `cap`
/// bytes), if trusted, parseable, and its cgroup both lies within the
/// claimed cgroup `claimed` and holds the process's cgroup `path`; and the
/// bytes read.
fn find_state(
    dir: &Path,
    id: &str,
    owners: Owners,
    cap: usize,
    claimed: &[u8],
    path: &[u8],
) -> (Option<Found>, usize) {
    let id_dir = match trust::TrustedDir::open(&dir.join(id), owners) {
        Ok(d) => d,
        Err(e) => {
            log_unusable(&e);
            return (None, 0);
        }
    };
    let (parsed, read) = match id_dir.read("state.json", cap) {
        Ok(b) => (oci_state::parse_runc(&b, id).map(|s| (s, false)), b.len()),
        Err(e) if e.is_missing() => match id_dir.read("status", cap) {
            Ok(b) => (oci_state::parse_crun(&b).map(|s| (s, true)), b.len()),
            Err(e) => {
                log_unusable(&e);
                return (None, 0);
            }
        },
        Err(e) => {
            log_unusable(&e);
            return (None, 0);
        }
    };
    (found_in(id_dir, parsed, claimed, path), read)
}

/// The parsed state, if its cgroup fits the claim and the process.
fn found_in(
    id_dir: trust::TrustedDir,
    parsed: Result<(OciState, bool), oci_state::StateError>,
    claimed: &[u8],
    path: &[u8],
) -> Option<Found> {
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
            dir = %id_dir.display().to_string().escape_debug(),
            state_cgroup = %String::from_utf8_lossy(cgroup).escape_debug(),
            cgroup = %String::from_utf8_lossy(path).escape_debug(),
            "runtime state is for another cgroup"
        );
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cgroups::{parse, CgroupCache};
    use nix::sys::inotify::{AddWatchFlags, InitFlags, Inotify};
    use std::os::unix::fs::DirBuilderExt;

    const ID: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
    const ID2: &str = "fedcba9876543210fedcba9876543210fedcba9876543210fedcba9876543210";
    const T1: &str = "2026-01-01T00:00:00.1Z";

    /// Runtime state and names files in a private temporary directory:
    /// `system/runc` (a system state root, runtime `docker`), `user/<uid>`
    /// (the users' runtime directories), `storage/overlay-containers`
    /// (podman's list) and `docker/<id>`.
    struct Fixture(PathBuf);

    impl Fixture {
        fn new(name: &str) -> Fixture {
            let d = std::env::temp_dir()
                .join(format!("execwatch-resolver-{}-{name}", std::process::id()));
            let _ = std::fs::remove_dir_all(&d);
            Fixture::mkdir(&d);
            Fixture(d)
        }

        fn mkdir(dir: &Path) {
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o755)
                .create(dir)
                .unwrap();
        }

        fn layout(&self) -> Layout {
            Layout {
                roots: vec![StateRoot {
                    dir: self.0.join("system/runc"),
                    runtime: "docker",
                    namespaced: false,
                }],
                user_runtime_dirs: self.0.join("user"),
                docker_containers: self.0.join("docker"),
            }
        }

        fn storage(&self) -> PathBuf {
            self.0.join("storage/overlay-containers")
        }

        /// runc's state.json for `id` in `cgroup`; made by podman if `podman`.
        fn runc_state(&self, root: &Path, id: &str, cgroup: &str, created: &str, podman: bool) {
            let bundle = self.storage().join(id).join("userdata");
            let mut labels = vec![format!("bundle={}", bundle.display())];
            if podman {
                labels.push("io.container.manager=libpod".into());
            }
            let state = serde_json::json!({"id": id, "created": created,
                "cgroup_paths": {"": format!("/sys/fs/cgroup{cgroup}")},
                "config": {"labels": labels}});
            self.write(&root.join(id), "state.json", &state.to_string());
        }

        fn write(&self, dir: &Path, name: &str, content: &str) {
            Fixture::mkdir(dir);
            std::fs::write(dir.join(name), content).unwrap();
        }

        fn docker_config(&self, id: &str, name: &str) {
            let doc = serde_json::json!({"ID": id, "Name": format!("/{name}"),
                "Config": {"Image": "registry.local/app:1"}});
            self.write(
                &self.0.join("docker").join(id),
                "config.v2.json",
                &doc.to_string(),
            );
        }
    }

    impl Drop for Fixture {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    /// Files opened in the watched directories since the last call.
    fn opened(watch: &Inotify) -> Vec<String> {
        let mut names = Vec::new();
        while let Ok(events) = watch.read_events() {
            if events.is_empty() {
                break;
            }
            names.extend(
                events
                    .into_iter()
                    .filter_map(|e| e.name.map(|n| n.to_string_lossy().into_owned())),
            );
        }
        names
    }

    fn watch_opens(dirs: &[&Path]) -> Inotify {
        let w = Inotify::init(InitFlags::IN_NONBLOCK | InitFlags::IN_CLOEXEC).unwrap();
        for d in dirs {
            w.add_watch(*d, AddWatchFlags::IN_OPEN).unwrap();
        }
        w
    }

    /// System runtime state must be root's: these tests write it.
    fn require_root() {
        assert!(
            nix::unistd::geteuid().is_root(),
            "this test writes root-owned runtime state: run it as root"
        );
    }

    #[test]
    fn a_rootless_claim_reads_no_names() {
        // The user's podman list and crun's config.json copy are in place
        // (the user could make them 8 MiB each): confirming the container
        // must not open them, only its state.
        require_root();
        let f = Fixture::new("rootless");
        let uid = 4242;
        let user = format!("/user.slice/user-{uid}.slice/user@{uid}.service/user.slice");
        let runc_cg = format!("{user}/libpod-{ID}.scope");
        let crun_cg = format!("{user}/crun-{ID2}.scope");
        let user_dir = f.0.join(format!("user/{uid}"));
        f.runc_state(&user_dir.join("runc"), ID, &runc_cg, T1, true);
        let list = serde_json::json!([{"id": ID, "names": ["poison"]}]);
        f.write(&f.storage(), "containers.json", &list.to_string());
        let crun_dir = user_dir.join("crun").join(ID2);
        let status = serde_json::json!({"cgroup-path": crun_cg, "bundle": "/b", "created": T1});
        f.write(&crun_dir, "status", &status.to_string());
        let config =
            r#"{"annotations":{"io.container.manager":"cri-o","io.kubernetes.pod.name":"poison"}}"#;
        f.write(&crun_dir, "config.json", config);
        let watch = watch_opens(&[&f.storage(), &crun_dir]);

        let mut r = Resolver::new(f.layout());
        let runc = r.resolve(&parse(runc_cg.as_bytes())).unwrap();
        let crun = r.resolve(&parse(crun_cg.as_bytes())).unwrap();
        // crun's state itself (`status`) is read; its config.json is not.
        assert_eq!(opened(&watch), ["status"], "only the state is opened");
        assert_eq!(runc.id.as_deref(), Some(ID), "{runc:?}");
        assert_eq!(crun.id.as_deref(), Some(ID2), "{crun:?}");
        for c in [&runc, &crun] {
            assert_eq!(c.rootless_uid, Some(uid));
            assert_eq!((&c.name, &c.image, &c.kubernetes), (&None, &None, &None));
            assert!(!c.names_pending);
        }
        assert!(r.names.is_empty() && r.missed.is_empty(), "nothing cached");

        // The same files for a system container are read: the watch sees it.
        let cg = format!("/machine.slice/libpod-{ID}.scope");
        f.runc_state(&f.0.join("system/runc"), ID, &cg, T1, true);
        let sys = r.resolve(&parse(cg.as_bytes())).unwrap();
        assert_eq!(sys.name.as_deref(), Some("poison"));
        assert_eq!(opened(&watch), ["containers.json"]);
    }

    #[test]
    fn users_state_is_read_within_a_byte_budget_and_a_size_cap() {
        require_root();
        let f = Fixture::new("user-bytes");
        let uid = 4343;
        let user = format!("/user.slice/user-{uid}.slice/user@{uid}.service/user.slice");
        let runc = f.0.join(format!("user/{uid}/runc"));
        let state = |id: &str, pad: usize| {
            let cg = format!("{user}/libpod-{id}.scope");
            let doc = serde_json::json!({"id": id, "created": T1,
                "cgroup_paths": {"": format!("/sys/fs/cgroup{cg}")}, "pad": "x".repeat(pad)});
            f.write(&runc.join(id), "state.json", &doc.to_string());
            cg
        };
        let cgroups: Vec<String> = (0..8)
            .map(|i| state(&format!("{i:064x}"), 200 << 10))
            .collect();
        let mut r = Resolver::new(f.layout());
        let mut confirm = |cg: &str| r.resolve(&parse(cg.as_bytes())).unwrap().id.is_some();
        let first: Vec<bool> = cgroups.iter().map(|cg| confirm(cg)).collect();
        // 1 MiB a second: six files of 200 KiB, not eight.
        let n = first.iter().filter(|&&c| c).count();
        assert!((5..8).contains(&n), "{first:?}");
        // A second later the rest are read.
        std::thread::sleep(Duration::from_millis(1100));
        let rest = cgroups.iter().zip(&first).filter(|(_, &c)| !c);
        assert!(rest.map(|(cg, _)| cg).all(|cg| confirm(cg)));
        // A state file past the cap is not read at all.
        let big = state(&format!("{:064x}", 9), USER_STATE_MAX);
        std::thread::sleep(Duration::from_millis(1100));
        assert!(!confirm(&big));
    }

    #[test]
    fn names_are_read_once_per_container_instance() {
        require_root();
        let f = Fixture::new("cache");
        let cg = format!("/system.slice/docker-{ID}.scope");
        let root = f.0.join("system/runc");
        f.runc_state(&root, ID, &cg, T1, false);
        f.docker_config(ID, "first");
        let mut r = Resolver::new(f.layout());
        let first = r.resolve(&parse(cg.as_bytes())).unwrap();
        assert_eq!(first.name.as_deref(), Some("first"));
        assert_eq!(first.runtime, Some("docker"));

        // Renamed after it was first seen: the cached name stays, and the
        // metadata is not even opened again.
        f.docker_config(ID, "renamed");
        let watch = watch_opens(&[&f.0.join("docker").join(ID)]);
        let again = r.resolve(&parse(format!("{cg}/sub").as_bytes())).unwrap();
        assert_eq!(again.name.as_deref(), Some("first"));
        assert!(opened(&watch).is_empty(), "names came from the cache");

        // The id reused by a new container (a new `created`): read afresh.
        f.runc_state(&root, ID, &cg, "2026-01-01T00:00:05Z", false);
        let new = r.resolve(&parse(cg.as_bytes())).unwrap();
        assert_eq!(new.name.as_deref(), Some("renamed"));
        assert_eq!(opened(&watch), ["config.v2.json"]);
    }

    #[test]
    fn missing_names_are_read_again_for_a_while_then_cached() {
        require_root();
        let f = Fixture::new("late-names");
        let root = f.0.join("system/runc");
        let cg = format!("/system.slice/docker-{ID}.scope");
        f.runc_state(&root, ID, &cg, T1, false);
        // The state is there, dockerd's metadata not yet.
        let mut cache = CgroupCache::new(Resolver::new(f.layout()));
        let first = cache.resolve(1, Some(cg.as_bytes()), false, 0).unwrap();
        assert_eq!(first.container_id.as_deref(), Some(ID), "confirmed");
        let c = first.container.as_ref().unwrap();
        assert!(c.names_pending && c.name.is_none(), "{c:?}");
        f.docker_config(ID, "late");
        let deadline = Instant::now() + Duration::from_secs(1);
        let named = loop {
            std::thread::sleep(crate::cgroups::RETRY_FIRST);
            let now = cache.resolve(1, None, false, 0).unwrap();
            if now.container.as_ref().unwrap().name.is_some() || Instant::now() > deadline {
                break now;
            }
        };
        let c = named.container.as_ref().unwrap();
        assert_eq!(c.name.as_deref(), Some("late"), "{c:?}");
        assert!(!c.names_pending);

        // Metadata that never comes: after NAMES_RETRY_FOR the miss is
        // cached like names, and no longer read.
        let cg2 = format!("/system.slice/docker-{ID2}.scope");
        f.runc_state(&root, ID2, &cg2, T1, false);
        let mut r = Resolver::new(f.layout());
        assert!(r.resolve(&parse(cg2.as_bytes())).unwrap().names_pending);
        for t in r.missed.values_mut() {
            *t = t.checked_sub(NAMES_RETRY_FOR).unwrap();
        }
        let given_up = r.resolve(&parse(cg2.as_bytes())).unwrap();
        assert!(!given_up.names_pending && given_up.name.is_none());
        f.docker_config(ID2, "too-late");
        let cached = r.resolve(&parse(cg2.as_bytes())).unwrap();
        assert_eq!(cached.name, None, "the miss is cached");
        assert!(r.missed.is_empty());
    }
}
