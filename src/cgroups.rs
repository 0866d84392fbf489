//! What a cgroup v2 path says about who ran a program: the container it
//! claims (confirmed against runtime state by [`crate::containers`]),
//! Kubernetes pod, systemd unit and slice.

use std::collections::{HashMap, HashSet};
use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::containers::{ContainerInfo, Resolver};
use crate::output::clock::boot_ns_now;
use crate::process_table::{proc_pids, read_bounded};

/// A container id named by one component of a cgroup path. Anyone who can
/// create cgroups can write one: [`crate::containers`] confirms it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContainerClaim {
    pub id: String,
    /// The runtime the naming convention belongs to, when it says.
    pub runtime: Option<&'static str>,
    /// Bytes of the path up to and including the naming component.
    pub prefix_len: usize,
}

/// Attribution of one cgroup.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CgroupInfo {
    /// The cgroup v2 path, from the root of the hierarchy.
    pub path: Vec<u8>,
    /// Id of a system container confirmed by root-owned runtime state; never
    /// a rootless or merely claimed one (those are in `container`).
    pub container_id: Option<String>,
    /// Runtime of that confirmed container.
    pub runtime: Option<&'static str>,
    /// Kubernetes pod uid, once a container in the pod is confirmed.
    pub pod_uid: Option<String>,
    /// Innermost systemd unit (`*.service`, `*.scope`) of a non-container.
    pub unit: Option<String>,
    /// Innermost systemd slice.
    pub slice: Option<String>,
    /// The kernel cut the path (too deep or too long): `path` is its tail.
    pub path_truncated: bool,
    /// Container ids the path's names claim, innermost first (unverified).
    pub claims: Vec<ContainerClaim>,
    /// Pod uid the path's names claim (unverified).
    pub claimed_pod_uid: Option<String>,
    /// The user whose systemd manager the cgroup is delegated to
    /// (`user-<uid>.slice/user@<uid>.service/...`).
    pub delegated_uid: Option<u32>,
    /// Confirmation and names, when the path claims a container.
    pub container: Option<Arc<ContainerInfo>>,
}

fn is_hex64(s: &str) -> bool {
    s.len() == 64
        && s.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

fn is_name(s: &str) -> bool {
    !s.is_empty()
        && !s.bytes().all(|b| b == b'.')
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_.-".contains(&b))
}

/// Container id and runtime named by one path component, given its parent.
fn container_of(comp: &str, parent: Option<&str>) -> Option<(String, Option<&'static str>)> {
    const SCOPES: [(&str, &str, bool); 6] = [
        ("docker-", "docker", true),
        ("cri-containerd-", "containerd", true),
        ("crio-", "cri-o", true),
        ("libpod-", "podman", true),
        ("runc-", "runc", false),
        ("crun-", "crun", false),
    ];
    if let Some(inner) = comp.strip_suffix(".scope") {
        for (prefix, runtime, hex) in SCOPES {
            if let Some(id) = inner.strip_prefix(prefix) {
                if (hex && is_hex64(id)) || (!hex && is_name(id)) {
                    return Some((id.to_string(), Some(runtime)));
                }
            }
        }
    }
    // cgroupfs drivers: /docker/<id>, /libpod_parent/libpod-<id>,
    // /kubepods/<qos>/pod<uid>/<id> (containerd), .../pod<uid>/crio-<id>
    if let Some(id) = comp.strip_prefix("libpod-").filter(|id| is_hex64(id)) {
        return Some((id.to_string(), Some("podman")));
    }
    if let Some(id) = comp.strip_prefix("crio-").filter(|id| is_hex64(id)) {
        return Some((id.to_string(), Some("cri-o")));
    }
    if is_hex64(comp) {
        let runtime = match parent {
            Some("docker") => Some("docker"),
            _ => None,
        };
        if runtime.is_some() || parent.is_some_and(|p| p.starts_with("pod")) {
            return Some((comp.to_string(), runtime));
        }
    }
    None
}

/// Kubernetes pod uid named by a component: `kubepods-burstable-pod<uid>.slice`
/// (systemd driver, `_` for `-`) or `pod<uid>` (cgroupfs driver).
fn pod_of(comp: &str) -> Option<String> {
    let uid = if let Some(s) = comp.strip_suffix(".slice") {
        s.rsplit_once("-pod").map(|(_, u)| u.replace('_', "-"))?
    } else {
        comp.strip_prefix("pod")?.to_string()
    };
    (uid.len() == 36 && uid.bytes().all(|b| b.is_ascii_hexdigit() || b == b'-')).then_some(uid)
}

/// `user@<uid>.service` directly under `user-<uid>.slice`.
fn delegated_uid_of(comp: &str, parent: Option<&str>) -> Option<u32> {
    let uid = comp.strip_prefix("user@")?.strip_suffix(".service")?;
    let slice_uid = parent?.strip_prefix("user-")?.strip_suffix(".slice")?;
    (uid == slice_uid && uid.bytes().all(|b| b.is_ascii_digit()))
        .then(|| uid.parse().ok())
        .flatten()
}

/// Most container claims of one path looked up: the innermost 3 and the
/// outermost. Real nesting (a container in a container, a container's
/// sub-cgroup named like another) is shallow, and each claim costs a lookup
/// in every runtime's state, so a path made of claims cannot multiply one
/// cgroup's cost.
pub const CLAIMS_MAX: usize = 4;

/// Read a cgroup path: what its names claim. Nothing is confirmed here.
pub fn parse(path: &[u8]) -> CgroupInfo {
    // Components with their end offsets in `path`, so claims can point back
    // into the raw bytes.
    let mut comps: Vec<(String, usize)> = Vec::new();
    let mut start = 0;
    for (i, &b) in path.iter().chain(std::iter::once(&b'/')).enumerate() {
        if b == b'/' {
            if i > start {
                comps.push((String::from_utf8_lossy(&path[start..i]).into_owned(), i));
            }
            start = i + 1;
        }
    }
    let mut info = CgroupInfo {
        path: path.to_vec(),
        ..Default::default()
    };
    for (i, (comp, end)) in comps.iter().enumerate().rev() {
        let parent = i.checked_sub(1).map(|p| comps[p].0.as_str());
        if let Some((id, runtime)) = container_of(comp, parent) {
            info.claims.push(ContainerClaim {
                id,
                runtime,
                prefix_len: *end,
            });
        }
        if info.claimed_pod_uid.is_none() && comps[..i].iter().any(|c| c.0.starts_with("kubepods"))
        {
            info.claimed_pod_uid = pod_of(comp);
        }
        if info.delegated_uid.is_none() {
            info.delegated_uid = delegated_uid_of(comp, parent);
        }
        if info.unit.is_none() && (comp.ends_with(".service") || comp.ends_with(".scope")) {
            info.unit = Some(comp.to_string());
        }
        if info.slice.is_none() && comp.ends_with(".slice") {
            info.slice = Some(comp.to_string());
        }
    }
    // The innermost few, and the outermost: a process can only make cgroups
    // below its own, so a chain of forged claims lies inside the real one.
    if info.claims.len() > CLAIMS_MAX {
        info.claims.drain(CLAIMS_MAX - 1..info.claims.len() - 1);
    }
    info
}

impl CgroupInfo {
    /// Attach what the runtime state says. Only a confirmed system container
    /// fills the plain `container_id`, `runtime` and `pod_uid` fields.
    pub fn with_container(mut self, container: Option<Arc<ContainerInfo>>) -> CgroupInfo {
        self.container_id = None;
        self.runtime = None;
        self.pod_uid = None;
        if let Some(c) = &container {
            if c.id.is_some() {
                // The scope a runtime made is not the program's unit.
                self.unit = None;
            }
            if c.is_system() {
                self.container_id = c.id.clone();
                self.runtime = c.runtime;
                self.pod_uid = c.kubernetes.as_ref().and_then(|k| k.pod_uid.clone());
            }
        }
        self.container = container;
        self
    }

    fn is_unconfirmed_claim(&self) -> bool {
        self.container.as_ref().is_some_and(|c| c.id.is_none())
    }

    /// Unconfirmed, or confirmed with its names file not written yet.
    pub fn wants_lookup(&self) -> bool {
        self.container
            .as_ref()
            .is_some_and(|c| c.id.is_none() || c.names_pending)
    }
}

/// First retry of a claim no state confirmed yet, or of a confirmed
/// container's missing names file (for `NAMES_RETRY_FOR`); the wait doubles
/// up to `RETRY_MAX`, and a claim's retries go on for as long as the cgroup
/// is cached (a retry is a few failed `openat`s).
pub const RETRY_FIRST: Duration = Duration::from_millis(10);
pub const RETRY_MAX: Duration = Duration::from_millis(250);
/// Retries per second over all cgroups: many forged cgroups exec'ing in a
/// loop cannot make the daemon spend more than a few percent of a CPU
/// (a retry is ~0.1 ms). First lookups of new cgroups count too. Claims in
/// users' delegated subtrees have a budget of their own, the same size
/// (and the bytes of users' state read are limited too: containers).
pub const RETRIES_PER_SEC: u32 = 500;

#[derive(Debug)]
struct Entry {
    info: Arc<CgroupInfo>,
    /// When the unconfirmed claim may be looked up again, and the wait after.
    retry: Option<(Instant, Duration)>,
    /// CLOCK_BOOTTIME of the cgroup's first event, and of the last lookup
    /// that found no state: an exec after that lookup may find it.
    first_event_ns: u64,
    looked_ns: u64,
}

impl Entry {
    /// `ns` is in the cgroup's first `EAGER_RETRY_WINDOW`.
    fn in_first_window(&self, ns: u64) -> bool {
        ns.saturating_sub(self.first_event_ns) < EAGER_RETRY_WINDOW.as_nanos() as u64
    }
}

/// For this long after a cgroup's first exec, any exec made after the last
/// failed lookup is looked up again at once (within the retry budget): a
/// container's runtime writes its state around its first execs, and the
/// daemon may see those execs in one batch, microseconds apart.
pub const EAGER_RETRY_WINDOW: Duration = Duration::from_secs(1);

/// Cgroup ids the daemon has resolved. The BPF side stops sending a path for
/// an id once the daemon has marked it known, for as long as the id keeps
/// its slot in the kernel's table; ids are never reused.
#[derive(Debug, Default)]
pub struct CgroupCache {
    known: HashMap<u64, Entry>,
    /// Resolved, not yet marked known in the kernel. An unconfirmed claim
    /// waits here for its cgroup's first second: its records keep the path,
    /// so each wakes the daemon, which looks again (a runtime writes its
    /// state after `runc init` runs there).
    new: Vec<u64>,
    resolver: Resolver,
    /// Start of the current second of retries, and retries in it.
    retry_budget: PerSecond,
    /// The same for claims in users' delegated subtrees, which any user can
    /// make: they cannot use up the system containers' budget.
    user_retry_budget: PerSecond,
}

/// Most cgroups remembered; past this the cache (and the kernel's set) is
/// emptied and paths are sent again, so churn cannot grow memory forever.
pub const CACHE_MAX: usize = crate::bpf_loader::KNOWN_CGROUPS_MAX;

impl CgroupCache {
    pub fn new(resolver: Resolver) -> Self {
        CgroupCache {
            resolver,
            ..Default::default()
        }
    }

    /// The cgroup's attribution still waits for its runtime's state: a
    /// claimed container, unconfirmed or without its names yet, in the
    /// cgroup's first second, with lookups still scheduled. Its events may
    /// wait briefly for the state, in order, rather than go out without it.
    pub fn awaits_state(&self, id: u64) -> bool {
        self.known.get(&id).is_some_and(|e| {
            e.retry.is_some() && e.info.wants_lookup() && e.in_first_window(boot_ns_now())
        })
    }

    /// Attribution for an event made at `event_ns` (CLOCK_BOOTTIME): from
    /// the path it carries (first exec in a cgroup), else from the cache. A
    /// claimed container not confirmed yet is looked up again: at once for
    /// an exec made after the last lookup, in the cgroup's first second;
    /// else at most every few milliseconds, backing off. Its runtime may not
    /// have written its state when the first exec was seen.
    pub fn resolve(
        &mut self,
        id: u64,
        path: Option<&[u8]>,
        truncated: bool,
        event_ns: u64,
    ) -> Option<Arc<CgroupInfo>> {
        match path {
            // A path sent again for a known id: the cached attribution (and
            // its retry schedule) stands. The kernel had not learnt the id
            // yet, or another id sharing its slot in `known_cgroups` took
            // the slot since: the id is written again (once).
            Some(p)
                if self
                    .known
                    .get(&id)
                    .is_some_and(|e| e.info.path == p && e.info.path_truncated == truncated) =>
            {
                if !self.new.contains(&id) {
                    self.new.push(id);
                }
                self.resolve(id, None, truncated, event_ns)
            }
            Some(p) => {
                let mut info = parse(p);
                info.path_truncated = truncated;
                // A first lookup shares the retries' budget: anyone may make
                // cgroups named like containers in a delegated subtree, as
                // fast as they like. Past it, the claim waits for a retry.
                let budget = if info.delegated_uid.is_some() {
                    &mut self.user_retry_budget
                } else {
                    &mut self.retry_budget
                };
                let looked = info.claims.is_empty() || take_retry(budget, Instant::now());
                let container = if looked {
                    self.resolver.resolve(&info)
                } else {
                    crate::containers::unconfirmed(&info)
                };
                let info = Arc::new(info.with_container(container));
                log_attribution(id, &info);
                let retry = info
                    .wants_lookup()
                    .then(|| (Instant::now() + RETRY_FIRST, RETRY_FIRST));
                let entry = Entry {
                    info: Arc::clone(&info),
                    retry,
                    first_event_ns: event_ns,
                    // Never looked: the cgroup's next exec may look at once.
                    looked_ns: if looked { boot_ns_now() } else { 0 },
                };
                if self.known.insert(id, entry).is_none() {
                    self.new.push(id);
                }
                Some(info)
            }
            None => {
                let entry = self.known.get_mut(&id)?;
                if let Some((at, wait)) = entry.retry {
                    let now = Instant::now();
                    let eager = event_ns > entry.looked_ns && entry.in_first_window(event_ns);
                    let budget = if entry.info.delegated_uid.is_some() {
                        &mut self.user_retry_budget
                    } else {
                        &mut self.retry_budget
                    };
                    if (now >= at || eager) && take_retry(budget, now) {
                        entry.looked_ns = boot_ns_now();
                        let container = self.resolver.resolve(&entry.info);
                        let confirmed = container.as_ref().is_some_and(|c| c.id.is_some());
                        if confirmed && container != entry.info.container {
                            let info = (*entry.info).clone().with_container(container);
                            entry.info = Arc::new(info);
                            log_attribution(id, &entry.info);
                        }
                        // A confirmed container whose state is gone keeps
                        // what it had: its names will not come now.
                        let gone = !confirmed && !entry.info.is_unconfirmed_claim();
                        entry.retry = if entry.info.wants_lookup() && !gone {
                            let wait = (wait * 2).min(RETRY_MAX);
                            Some((now + wait, wait))
                        } else {
                            None
                        };
                    }
                }
                Some(Arc::clone(&entry.info))
            }
        }
    }

    /// Learn the cgroups of the processes already running, from
    /// `/proc/PID/cgroup`: exit records carry no path. A path counts only
    /// as checked by [`cgroup_dir_id`] (names there are printed raw, pids get
    /// reused). At most half the cache. Returns how many were learnt, or
    /// None when no cgroup v2 mount here shows the whole hierarchy (a cgroup
    /// namespace of its own, as in a Kubernetes pod): nothing can be learnt.
    pub fn seed_from_proc(&mut self) -> Option<usize> {
        let (mount, root) = whole_cgroup2_mount()?;
        let Ok(pids) = proc_pids() else {
            return Some(0);
        };
        let mut tried: HashSet<Vec<u8>> = HashSet::new();
        let mut learnt = 0;
        let now = boot_ns_now();
        for pid in pids {
            if tried.len() >= CACHE_MAX / 2 {
                break;
            }
            let Ok(text) = read_bounded(format!("/proc/{pid}/cgroup"), PROC_CGROUP_MAX) else {
                continue;
            };
            let Some(path) = unified_path(&text) else {
                continue;
            };
            if path.len() > CGROUP_PATH_MAX || !tried.insert(path.to_vec()) {
                continue;
            }
            let Some(id) = cgroup_dir_id(&mount, &root, path) else {
                continue;
            };
            if !self.known.contains_key(&id) {
                self.resolve(id, Some(path), false, now);
                learnt += 1;
            }
        }
        Some(learnt)
    }

    /// Ids to mark known in the kernel: the new ones, but an unconfirmed
    /// claim only once confirmed or past its cgroup's first second.
    pub fn take_new(&mut self) -> Vec<u64> {
        if self.new.is_empty() {
            return Vec::new();
        }
        let now = boot_ns_now();
        let known = &self.known;
        let (ready, unsettled) = std::mem::take(&mut self.new).into_iter().partition(|id| {
            known
                .get(id)
                .is_none_or(|e| !(e.info.is_unconfirmed_claim() && e.in_first_window(now)))
        });
        self.new = unsettled;
        ready
    }

    /// When full, forget everything; returns the ids to forget in the kernel.
    pub fn trim(&mut self) -> Option<Vec<u64>> {
        if self.known.len() < CACHE_MAX {
            return None;
        }
        self.new.clear();
        Some(self.known.drain().map(|(id, _)| id).collect())
    }

    pub fn len(&self) -> usize {
        self.known.len()
    }

    pub fn is_empty(&self) -> bool {
        self.known.is_empty()
    }
}

/// The root cgroup's id (its kernfs inode number).
const ROOT_CGROUP_ID: u64 = 1;
/// Longest cgroup path the BPF side sends; a longer one is not seeded.
const CGROUP_PATH_MAX: usize = crate::bpf_loader::CGROUP_PATH_MAX_LEN;
/// Most bytes of a `/proc/PID/cgroup` read (one line per hierarchy).
const PROC_CGROUP_MAX: usize = 64 * 1024;

/// A cgroup2 mount of the whole hierarchy (its root is cgroup 1; a cgroup
/// namespace's mount shows a part), with its root's metadata.
fn whole_cgroup2_mount() -> Option<(std::path::PathBuf, std::fs::Metadata)> {
    let mounts = crate::mounts::MountTable::read().ok()?;
    let found = mounts
        .iter()
        .filter(|m| m.fstype == b"cgroup2")
        .find_map(|m| {
            // What the directory holds now: a later mount may cover it.
            let fs = nix::sys::statfs::statfs(&m.dir).ok()?;
            if fs.filesystem_type() != nix::sys::statfs::CGROUP2_SUPER_MAGIC {
                return None;
            }
            let root = std::fs::metadata(&m.dir).ok()?;
            (root.ino() == ROOT_CGROUP_ID).then(|| (m.dir.clone(), root))
        });
    found
}

/// The id of the cgroup at `path` under `mount`: the inode of a directory
/// on the mount's own file system (`..` could reach another, whose inode
/// numbers are no cgroup ids; `unified_path` refuses it too).
fn cgroup_dir_id(mount: &Path, root: &std::fs::Metadata, path: &[u8]) -> Option<u64> {
    let rel = path.strip_prefix(b"/")?;
    let m = std::fs::symlink_metadata(mount.join(OsStr::from_bytes(rel))).ok()?;
    (m.is_dir() && m.dev() == root.dev()).then(|| m.ino())
}

/// The cgroup v2 path in a `/proc/PID/cgroup` text: its `0::` line's,
/// when absolute and without `.` or `..` (a process outside the reader's
/// cgroup namespace shows as `/../..`).
fn unified_path(text: &[u8]) -> Option<&[u8]> {
    text.split(|&b| b == b'\n')
        .find_map(|l| l.strip_prefix(b"0::"))
        .filter(|p| p.starts_with(b"/"))
        .filter(|p| !p.split(|&b| b == b'/').any(|c| c == b"." || c == b".."))
}

/// An allowance per second: what the work of one second may use up.
#[derive(Debug, Default, Clone, Copy)]
pub struct PerSecond {
    /// Start of the current second, and what was used in it.
    start: Option<Instant>,
    used: u64,
}

impl PerSecond {
    /// Whether less than `limit` is used in the second `now` falls in (a new
    /// second starts at the first look a second or more after the last).
    pub fn has_room(&mut self, now: Instant, limit: u64) -> bool {
        match self.start {
            Some(start) if now.duration_since(start) < Duration::from_secs(1) => self.used < limit,
            _ => {
                self.start = Some(now);
                self.used = 0;
                true
            }
        }
    }

    /// Count `n` more as used.
    pub fn spend(&mut self, n: u64) {
        self.used += n;
    }

    /// One more, if there is room for it.
    pub fn take(&mut self, now: Instant, limit: u64) -> bool {
        let room = self.has_room(now, limit);
        if room {
            self.spend(1);
        }
        room
    }
}

/// Whether the retry budget allows one more retry now.
fn take_retry(budget: &mut PerSecond, now: Instant) -> bool {
    budget.take(now, u64::from(RETRIES_PER_SEC))
}

/// One debug line per container attribution (first sight, and a later
/// confirmation).
fn log_attribution(cgroup_id: u64, info: &CgroupInfo) {
    let Some(c) = &info.container else { return };
    let k = c.kubernetes.as_ref();
    tracing::debug!(
        cgroup_id,
        cgroup_path = %String::from_utf8_lossy(&info.path).escape_debug(),
        container_id = c.id.as_deref(),
        unconfirmed_id = c.unconfirmed_id.as_deref(),
        runtime = c.runtime,
        rootless_uid = c.rootless_uid,
        container_name = c.name.as_deref(),
        image_name = c.image.as_ref().map(|i| i.name.as_str()),
        image_tag = c.image.as_ref().and_then(|i| i.tag.as_deref()),
        pod_name = k.and_then(|k| k.pod_name.as_deref()),
        pod_namespace = k.and_then(|k| k.namespace.as_deref()),
        pod_uid = k.and_then(|k| k.pod_uid.as_deref()),
        k8s_container_name = k.and_then(|k| k.container_name.as_deref()),
        "{}",
        if c.id.is_some() {
            "container confirmed"
        } else {
            "container not confirmed"
        }
    );
}

/// Where the cgroup v2 hierarchy is mounted (`/sys/fs/cgroup`, or
/// `/sys/fs/cgroup/unified` on hybrid hosts).
pub fn cgroup2_mount() -> Option<std::path::PathBuf> {
    let mounts = crate::mounts::MountTable::read().ok()?;
    mounts
        .first_of_type("cgroup2")
        .map(std::path::Path::to_path_buf)
}

/// A `--cgroup` argument: a directory of the cgroup v2 mount, given either as
/// a full path under it or as a path from the hierarchy's root
/// (`/system.slice/foo.service`).
pub fn resolve_cgroup_arg(arg: &str) -> Result<std::path::PathBuf, String> {
    let root = cgroup2_mount().ok_or("no cgroup v2 hierarchy is mounted")?;
    let p = std::path::Path::new(arg);
    let full = if p.starts_with(&root) {
        p.to_path_buf()
    } else {
        root.join(arg.trim_start_matches('/'))
    };
    if !full.join("cgroup.procs").is_file() {
        return Err(format!(
            "{} is not a cgroup v2 directory (cgroup v2 is mounted at {})",
            full.display(),
            root.display()
        ));
    }
    Ok(full)
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
    const POD: &str = "8a3b2c1d-1234-4abc-9def-0123456789ab";

    fn p(s: &str) -> CgroupInfo {
        parse(s.as_bytes())
    }

    #[test]
    fn the_unified_line_of_proc_cgroup_is_the_path() {
        let hybrid = b"9:name=systemd:/\n4:memory:/a\n0::/system.slice/x.service\n";
        assert_eq!(unified_path(hybrid), Some(&b"/system.slice/x.service"[..]));
        assert_eq!(unified_path(b"0::/\n"), Some(&b"/"[..]));
        // v1 only; a line cut before its path; not a path.
        assert_eq!(unified_path(b"4:memory:/a\n"), None);
        assert_eq!(unified_path(b"0::"), None);
        assert_eq!(unified_path(b"0::x\n"), None);
        // Raw bytes are kept (the inode check decides what they name).
        assert_eq!(unified_path(b"0::/\xff a\n"), Some(&b"/\xff a"[..]));
        // Outside the reader's cgroup namespace; a dot component.
        assert_eq!(unified_path(b"0::/../../system.slice\n"), None);
        assert_eq!(unified_path(b"0::/a/./b\n"), None);
        assert_eq!(unified_path(b"0::/a/..b\n"), Some(&b"/a/..b"[..]));
    }

    #[test]
    fn a_cgroup_id_is_the_inode_of_a_directory_on_the_mount() {
        use std::os::unix::fs::MetadataExt;
        let dir = std::env::temp_dir().join(format!("execwatch-cgid-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("a/b")).unwrap();
        std::fs::write(dir.join("file"), b"").unwrap();
        std::os::unix::fs::symlink("a", dir.join("link")).unwrap();
        let root = std::fs::metadata(&dir).unwrap();
        let b = std::fs::metadata(dir.join("a/b")).unwrap().ino();
        assert_eq!(cgroup_dir_id(&dir, &root, b"/a/b"), Some(b));
        assert_eq!(cgroup_dir_id(&dir, &root, b"/"), Some(root.ino()));
        // Not a directory; a symlink; missing; not absolute.
        assert_eq!(cgroup_dir_id(&dir, &root, b"/file"), None);
        assert_eq!(cgroup_dir_id(&dir, &root, b"/link"), None);
        assert_eq!(cgroup_dir_id(&dir, &root, b"/nope"), None);
        assert_eq!(cgroup_dir_id(&dir, &root, b"a/b"), None);
        // Another file system (/proc is never the temporary directory's).
        let proc_root = std::fs::metadata("/proc").unwrap();
        assert_ne!(proc_root.dev(), root.dev());
        assert_eq!(cgroup_dir_id(Path::new("/"), &root, b"/proc"), None);
        assert_eq!(cgroup_dir_id(&dir, &proc_root, b"/a"), None);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// The innermost claim: (id, runtime).
    fn claim(i: &CgroupInfo) -> (Option<&str>, Option<&str>) {
        match i.claims.first() {
            Some(c) => (Some(c.id.as_str()), c.runtime),
            None => (None, None),
        }
    }

    #[test]
    fn docker_both_drivers() {
        let path = format!("/system.slice/docker-{ID}.scope");
        let i = p(&path);
        assert_eq!(claim(&i), (Some(ID), Some("docker")));
        assert_eq!(i.claims[0].prefix_len, path.len());
        assert_eq!(i.container_id, None, "parsing confirms nothing");
        assert_eq!(i.slice.as_deref(), Some("system.slice"));
        let i = p(&format!("/docker/{ID}"));
        assert_eq!(claim(&i), (Some(ID), Some("docker")));
    }

    #[test]
    fn containerd_crio_podman() {
        let i = p(&format!("/system.slice/cri-containerd-{ID}.scope"));
        assert_eq!(claim(&i), (Some(ID), Some("containerd")));
        let i = p(&format!("/machine.slice/crio-{ID}.scope"));
        assert_eq!(claim(&i), (Some(ID), Some("cri-o")));
        let path = format!("/machine.slice/libpod-{ID}.scope/container");
        let i = p(&path);
        assert_eq!(claim(&i), (Some(ID), Some("podman")));
        assert_eq!(i.claims[0].prefix_len, path.len() - "/container".len());
        let i = p(&format!("/libpod_parent/libpod-{ID}"));
        assert_eq!(claim(&i), (Some(ID), Some("podman")));
        // conmon runs beside the container: not a container itself.
        let i = p(&format!("/machine.slice/crio-conmon-{ID}.scope"));
        assert!(i.claims.is_empty());
        assert_eq!(i.unit.as_deref(), Some(&*format!("crio-conmon-{ID}.scope")));
    }

    #[test]
    fn runc_and_crun_systemd_scopes() {
        let i = p("/system.slice/runc-web1.scope");
        assert_eq!(claim(&i), (Some("web1"), Some("runc")));
        let i = p("/machine.slice/crun-db_2.scope");
        assert_eq!(claim(&i), (Some("db_2"), Some("crun")));
    }

    #[test]
    fn nested_claims_innermost_first() {
        let other = ID.replace('0', "f");
        let i = p(&format!(
            "/system.slice/docker-{ID}.scope/inner/docker-{other}.scope"
        ));
        let ids: Vec<&str> = i.claims.iter().map(|c| c.id.as_str()).collect();
        assert_eq!(ids, [other.as_str(), ID]);
    }

    #[test]
    fn a_path_of_many_claims_is_looked_up_for_its_innermost_few_and_its_outermost() {
        let ids: Vec<String> = (0..10).map(|i| ID.replace('0', &i.to_string())).collect();
        let path: String = ids.iter().map(|id| format!("/docker-{id}.scope")).collect();
        let i = p(&path);
        let got: Vec<&str> = i.claims.iter().map(|c| c.id.as_str()).collect();
        // Forged claims below a real container's cannot push it out.
        let want = [&ids[9], &ids[8], &ids[7], &ids[0]].map(String::as_str);
        assert_eq!(got, want);
        // Each claim still points at its own prefix of the path.
        for c in &i.claims {
            assert!(path[..c.prefix_len].ends_with(&format!("docker-{}.scope", c.id)));
        }
    }

    #[test]
    fn kubernetes_pods_both_drivers() {
        let slice_uid = POD.replace('-', "_");
        let i = p(&format!(
            "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{slice_uid}.slice/cri-containerd-{ID}.scope"
        ));
        assert_eq!(i.claimed_pod_uid.as_deref(), Some(POD));
        assert_eq!(i.pod_uid, None, "a pod uid counts once confirmed");
        assert_eq!(claim(&i), (Some(ID), Some("containerd")));
        let i = p(&format!("/kubepods/besteffort/pod{POD}/{ID}"));
        assert_eq!(i.claimed_pod_uid.as_deref(), Some(POD));
        assert_eq!(claim(&i), (Some(ID), None));
        let i = p(&format!("/kubepods/besteffort/pod{POD}/crio-{ID}"));
        assert_eq!(i.claimed_pod_uid.as_deref(), Some(POD));
        assert_eq!(claim(&i), (Some(ID), Some("cri-o")));
        let i = p(&format!("/kubepods/besteffort/pod{POD}/crio-conmon-{ID}"));
        assert!(i.claims.is_empty(), "conmon is not the container");
    }

    #[test]
    fn host_services_and_users() {
        let i = p("/system.slice/ssh.service");
        assert!(i.claims.is_empty());
        assert_eq!(i.unit.as_deref(), Some("ssh.service"));
        assert_eq!(i.slice.as_deref(), Some("system.slice"));
        assert_eq!(i.delegated_uid, None);
        let i = p("/user.slice/user-1000.slice/user@1000.service/app.slice/app-foo.scope");
        assert_eq!(i.unit.as_deref(), Some("app-foo.scope"));
        assert_eq!(i.slice.as_deref(), Some("app.slice"));
        assert_eq!(i.delegated_uid, Some(1000));
        let i = p("/user.slice/user-1000.slice/session-3.scope");
        assert_eq!(i.unit.as_deref(), Some("session-3.scope"));
        assert_eq!(i.delegated_uid, None, "a session is not delegated");
        let i = p("/user.slice/user-1000.slice/user@1001.service/x");
        assert_eq!(i.delegated_uid, None, "uids must agree");
        let i = p("/");
        assert_eq!(
            i,
            CgroupInfo {
                path: b"/".to_vec(),
                ..Default::default()
            }
        );
    }

    #[test]
    fn look_alikes_are_not_containers() {
        for s in [
            "/system.slice/docker-notanid.scope",
            "/system.slice/docker.service",
            &format!("/somewhere/{ID}"),
            "/system.slice/runc-.scope",
            "/system.slice/runc-..scope",
            "/system.slice/runc-...scope",
            "/kubepods/podnot-a-uid/x",
        ] {
            let i = p(s);
            assert!(i.claims.is_empty(), "{s}");
            assert_eq!(i.claimed_pod_uid, None, "{s}");
        }
    }

    fn confirmed(id: &str, rootless_uid: Option<u32>) -> Arc<ContainerInfo> {
        Arc::new(ContainerInfo {
            id: Some(id.into()),
            runtime: Some("docker"),
            rootless_uid,
            kubernetes: Some(crate::containers::Kubernetes {
                pod_uid: Some(POD.into()),
                ..Default::default()
            }),
            ..Default::default()
        })
    }

    #[test]
    fn only_a_confirmed_system_container_fills_the_plain_fields() {
        let path = format!("/system.slice/docker-{ID}.scope");
        let i = p(&path).with_container(Some(confirmed(ID, None)));
        assert_eq!(
            (i.container_id.as_deref(), i.runtime, i.pod_uid.as_deref()),
            (Some(ID), Some("docker"), Some(POD))
        );
        assert_eq!(i.unit, None, "the runtime's scope is not a unit");

        let i = p(&path).with_container(Some(confirmed(ID, Some(1000))));
        assert_eq!((i.container_id, i.runtime, i.pod_uid), (None, None, None));
        assert_eq!(i.unit, None);

        let unconfirmed = Arc::new(ContainerInfo {
            unconfirmed_id: Some(ID.into()),
            ..Default::default()
        });
        let i = p(&path).with_container(Some(unconfirmed));
        assert_eq!(i.container_id, None);
        assert_eq!(
            i.unit.as_deref(),
            Some(&*format!("docker-{ID}.scope")),
            "an unconfirmed claim is just a cgroup name"
        );
        assert_eq!(i.container.unwrap().unconfirmed_id.as_deref(), Some(ID));
    }

    #[test]
    fn cache_resolves_once_then_from_memory() {
        let mut c = CgroupCache::default();
        let a = c
            .resolve(7, Some(b"/system.slice/a.service"), false, 0)
            .unwrap();
        assert_eq!(c.take_new(), vec![7]);
        let b = c.resolve(7, None, false, 0).unwrap();
        assert!(Arc::ptr_eq(&a, &b));
        // The same path again (records sent before the kernel learnt the
        // id, or after another id took its slot): the cached attribution,
        // not a new lookup, and the id is written to the kernel again, once.
        for _ in 0..2 {
            let again = c
                .resolve(7, Some(b"/system.slice/a.service"), false, 0)
                .unwrap();
            assert!(Arc::ptr_eq(&a, &again));
        }
        assert_eq!(c.take_new(), vec![7]);
        assert!(c.take_new().is_empty());
        assert_eq!(c.resolve(8, None, false, 0), None, "unknown id: no guess");
        assert_eq!(c.trim(), None);
    }

    /// A cache whose runtimes keep no state, and a docker path it cannot
    /// confirm: the claim stays a claim.
    fn cache_without_state() -> (CgroupCache, String) {
        let none = "/nonexistent/execwatch-test";
        let layout = crate::containers::Layout {
            roots: vec![crate::containers::StateRoot {
                dir: none.into(),
                runtime: "runc",
                namespaced: false,
            }],
            user_runtime_dirs: none.into(),
            docker_containers: none.into(),
        };
        let path = format!("/system.slice/docker-{ID}.scope");
        (CgroupCache::new(Resolver::new(layout)), path)
    }

    #[test]
    fn an_unstated_claim_is_unconfirmed_and_retried() {
        let (mut c, path) = cache_without_state();
        let a = c.resolve(9, Some(path.as_bytes()), false, 0).unwrap();
        assert_eq!(a.container_id, None);
        let ctr = a.container.as_ref().unwrap();
        assert_eq!(
            (ctr.id.as_deref(), ctr.unconfirmed_id.as_deref()),
            (None, Some(ID))
        );
        assert!(c.known[&9].retry.is_some());
        std::thread::sleep(RETRY_FIRST);
        let b = c.resolve(9, None, false, 0).unwrap();
        assert_eq!(b.container_id, None);
        let (_, wait) = c.known[&9].retry.unwrap();
        assert_eq!(wait, RETRY_FIRST * 2, "the wait doubles");
    }

    #[test]
    fn first_lookups_share_the_retry_budget() {
        let (mut c, path) = cache_without_state();
        let n = 2 * u64::from(RETRIES_PER_SEC) + 100;
        let now = boot_ns_now();
        for id in 0..n {
            let a = c.resolve(id, Some(path.as_bytes()), false, now).unwrap();
            // Looked up or not, the claim is there, unconfirmed, and retried.
            let ctr = a.container.as_ref().unwrap();
            assert_eq!(ctr.unconfirmed_id.as_deref(), Some(ID));
            assert!(c.known[&id].retry.is_some());
        }
        // One state root, one claim: a look per lookup, within the budget
        // (the test may straddle a second: two budgets at most).
        let looked = c.resolver.state_lookups;
        assert!(looked >= u64::from(RETRIES_PER_SEC), "{looked}");
        assert!(looked <= 2 * u64::from(RETRIES_PER_SEC), "{looked}");
        assert!(looked < n, "{looked}");
        // One skipped is looked up at its cgroup's next exec once the budget
        // allows, even an exec already waiting in the ring buffer (made
        // before the skip), as none has looked since.
        c.retry_budget = PerSecond::default();
        c.resolve(n - 1, None, false, now);
        assert_eq!(c.resolver.state_lookups, looked + 1);
    }

    #[test]
    fn users_claims_cannot_use_up_the_system_containers_budget() {
        let (mut c, system) = cache_without_state();
        let user =
            format!("/user.slice/user-1000.slice/user@1000.service/app.slice/libpod-{ID}.scope");
        let now = boot_ns_now();
        c.resolve(1, Some(user.as_bytes()), false, now);
        assert!(c.resolver.state_lookups > 0, "a user's claim is looked up");
        // Users' claims spent their second's budget.
        c.user_retry_budget = PerSecond {
            start: Some(Instant::now()),
            used: RETRIES_PER_SEC.into(),
        };
        let before = c.resolver.state_lookups;
        c.resolve(2, Some(user.as_bytes()), false, now);
        assert_eq!(
            c.resolver.state_lookups, before,
            "the users' budget is spent"
        );
        c.resolve(3, Some(system.as_bytes()), false, now);
        assert_eq!(
            c.resolver.state_lookups,
            before + 1,
            "a system claim is still looked up"
        );
    }

    #[test]
    fn an_unconfirmed_claim_is_marked_known_once_confirmed_or_past_its_first_second() {
        let (mut c, path) = cache_without_state();
        let now = boot_ns_now();
        // No claim: known at once.
        c.resolve(1, Some(b"/system.slice/cron.service"), false, now);
        // A claim no state confirms: records keep the path for a second.
        c.resolve(2, Some(path.as_bytes()), false, now);
        // The same claim, its first event over a second ago.
        let old = now - EAGER_RETRY_WINDOW.as_nanos() as u64 - 1;
        c.resolve(3, Some(path.as_bytes()), false, old);
        assert_eq!(c.take_new(), vec![1, 3]);
        assert_eq!(c.take_new(), Vec::<u64>::new(), "2 is still unsettled");
        // No longer an unconfirmed claim (as after a lookup that confirms
        // it): marked at the next turn.
        let confirmed = (*c.known[&2].info).clone().with_container(None);
        c.known.get_mut(&2).unwrap().info = Arc::new(confirmed);
        assert_eq!(c.take_new(), vec![2]);
        // Emptied with the cache.
        c.resolve(4, Some(path.as_bytes()), false, now);
        for id in 100..(100 + CACHE_MAX as u64) {
            c.resolve(id, Some(b"/a.slice"), false, now);
        }
        assert!(c.trim().is_some());
        assert_eq!(c.take_new(), Vec::<u64>::new());
    }

    #[test]
    fn an_exec_after_a_failed_lookup_is_looked_up_again_at_once() {
        // "Not looked up again" holds only until the retry timer fires: an
        // attempt that took longer than RETRY_FIRST is run again, and the
        // test fails if none was quick enough.
        for _ in 0..50 {
            if eager_retry_attempt() {
                return;
            }
        }
        panic!("no attempt ran within {RETRY_FIRST:?}: the machine is too busy for this test");
    }

    /// False when the timer may have fired before a check.
    fn eager_retry_attempt() -> bool {
        let (mut c, path) = cache_without_state();
        let t0 = Instant::now();
        let first = boot_ns_now();
        c.resolve(9, Some(path.as_bytes()), false, first).unwrap();
        let looked = c.known[&9].looked_ns;
        // An exec from before that lookup: the lookup stands (until the timer).
        c.resolve(9, None, false, looked - 1).unwrap();
        if t0.elapsed() >= RETRY_FIRST {
            return false;
        }
        assert_eq!(c.known[&9].looked_ns, looked, "not looked up again");
        // An exec after it: looked up at once, without waiting for the timer
        // (which this lookup sets again, at least RETRY_FIRST after t1).
        let t1 = Instant::now();
        c.resolve(9, None, false, boot_ns_now()).unwrap();
        assert!(c.known[&9].looked_ns > looked, "looked up again");
        // Past the cgroup's first second, only the timer retries.
        let later = first + EAGER_RETRY_WINDOW.as_nanos() as u64 + 1;
        let before = c.known[&9].looked_ns;
        c.resolve(9, None, false, later.max(boot_ns_now())).unwrap();
        if t1.elapsed() >= RETRY_FIRST {
            return false;
        }
        assert_eq!(
            c.known[&9].looked_ns, before,
            "no eager retry after the window"
        );
        true
    }

    #[test]
    fn retries_are_budgeted_per_second() {
        let mut b = PerSecond::default();
        let t0 = Instant::now();
        let granted = (0..RETRIES_PER_SEC + 10)
            .filter(|_| take_retry(&mut b, t0))
            .count();
        assert_eq!(granted, RETRIES_PER_SEC as usize);
        assert!(
            take_retry(&mut b, t0 + Duration::from_secs(1)),
            "a new second"
        );
    }

    #[test]
    fn cache_is_bounded() {
        let mut c = CgroupCache::default();
        for id in 0..CACHE_MAX as u64 {
            c.resolve(id, Some(b"/x.service"), false, 0);
        }
        let forgotten = c.trim().unwrap();
        assert_eq!(forgotten.len(), CACHE_MAX);
        assert!(c.is_empty());
    }
}
