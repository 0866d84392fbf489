//! What a cgroup v2 path says about who ran a program: container id and
//! runtime, Kubernetes pod, systemd unit and slice.

use std::collections::HashMap;
use std::sync::Arc;

/// Attribution of one cgroup.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CgroupInfo {
    /// The cgroup v2 path, from the root of the hierarchy.
    pub path: Vec<u8>,
    pub container_id: Option<String>,
    /// `docker`, `containerd`, `cri-o`, `podman`, `runc`, `crun`, when known.
    pub runtime: Option<&'static str>,
    pub pod_uid: Option<String>,
    /// Innermost systemd unit (`*.service`, `*.scope`) of a non-container.
    pub unit: Option<String>,
    /// Innermost systemd slice.
    pub slice: Option<String>,
    /// The kernel cut the path (too deep or too long): `path` is its tail.
    pub path_truncated: bool,
}

fn is_hex64(s: &str) -> bool {
    s.len() == 64
        && s.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

fn is_name(s: &str) -> bool {
    !s.is_empty()
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
    // /kubepods/<qos>/pod<uid>/<id>
    if let Some(id) = comp.strip_prefix("libpod-").filter(|id| is_hex64(id)) {
        return Some((id.to_string(), Some("podman")));
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

/// Read a cgroup path.
pub fn parse(path: &[u8]) -> CgroupInfo {
    let text = String::from_utf8_lossy(path);
    let comps: Vec<&str> = text.split('/').filter(|c| !c.is_empty()).collect();
    let mut info = CgroupInfo {
        path: path.to_vec(),
        ..Default::default()
    };
    for (i, comp) in comps.iter().enumerate().rev() {
        let parent = i.checked_sub(1).map(|p| comps[p]);
        if info.container_id.is_none() {
            if let Some((id, runtime)) = container_of(comp, parent) {
                info.container_id = Some(id);
                info.runtime = runtime;
            }
        }
        if info.pod_uid.is_none() && comps[..i].iter().any(|c| c.starts_with("kubepods")) {
            info.pod_uid = pod_of(comp);
        }
        if info.unit.is_none() && (comp.ends_with(".service") || comp.ends_with(".scope")) {
            info.unit = Some(comp.to_string());
        }
        if info.slice.is_none() && comp.ends_with(".slice") {
            info.slice = Some(comp.to_string());
        }
    }
    if info.container_id.is_some() {
        info.unit = None; // the scope a runtime made is not the program's unit
    }
    info
}

/// Cgroup ids the daemon has resolved. The BPF side stops sending a path for
/// an id once the daemon has marked it known; ids are never reused.
#[derive(Debug, Default)]
pub struct CgroupCache {
    known: HashMap<u64, Arc<CgroupInfo>>,
    /// Resolved since the last `take_new`: to mark known in the kernel.
    new: Vec<u64>,
}

/// Most cgroups remembered; past this the cache (and the kernel's set) is
/// emptied and paths are sent again, so churn cannot grow memory forever.
pub const CACHE_MAX: usize = crate::bpf_loader::KNOWN_CGROUPS_MAX;

impl CgroupCache {
    /// Attribution for an event: from the path it carries (first exec in a
    /// cgroup), else from the cache.
    pub fn resolve(
        &mut self,
        id: u64,
        path: Option<&[u8]>,
        truncated: bool,
    ) -> Option<Arc<CgroupInfo>> {
        match path {
            Some(p) => {
                let info = Arc::new(CgroupInfo {
                    path_truncated: truncated,
                    ..parse(p)
                });
                if self.known.insert(id, Arc::clone(&info)).is_none() {
                    self.new.push(id);
                }
                Some(info)
            }
            None => self.known.get(&id).cloned(),
        }
    }

    /// Ids to mark known in the kernel.
    pub fn take_new(&mut self) -> Vec<u64> {
        std::mem::take(&mut self.new)
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

/// Where the cgroup v2 hierarchy is mounted (`/sys/fs/cgroup`, or
/// `/sys/fs/cgroup/unified` on hybrid hosts).
pub fn cgroup2_mount() -> Option<std::path::PathBuf> {
    let mounts = std::fs::read_to_string("/proc/self/mounts").ok()?;
    mounts.lines().find_map(|l| {
        let mut f = l.split_whitespace();
        let (_, dir, fstype) = (f.next()?, f.next()?, f.next()?);
        (fstype == "cgroup2").then(|| std::path::PathBuf::from(dir))
    })
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
    fn docker_both_drivers() {
        let i = p(&format!("/system.slice/docker-{ID}.scope"));
        assert_eq!(i.container_id.as_deref(), Some(ID));
        assert_eq!(i.runtime, Some("docker"));
        assert_eq!(i.unit, None);
        assert_eq!(i.slice.as_deref(), Some("system.slice"));
        let i = p(&format!("/docker/{ID}"));
        assert_eq!(
            (i.container_id.as_deref(), i.runtime),
            (Some(ID), Some("docker"))
        );
    }

    #[test]
    fn containerd_crio_podman() {
        let i = p(&format!("/system.slice/cri-containerd-{ID}.scope"));
        assert_eq!(
            (i.container_id.as_deref(), i.runtime),
            (Some(ID), Some("containerd"))
        );
        let i = p(&format!("/machine.slice/crio-{ID}.scope"));
        assert_eq!(
            (i.container_id.as_deref(), i.runtime),
            (Some(ID), Some("cri-o"))
        );
        let i = p(&format!("/machine.slice/libpod-{ID}.scope/container"));
        assert_eq!(
            (i.container_id.as_deref(), i.runtime),
            (Some(ID), Some("podman"))
        );
        let i = p(&format!("/libpod_parent/libpod-{ID}"));
        assert_eq!(
            (i.container_id.as_deref(), i.runtime),
            (Some(ID), Some("podman"))
        );
        // conmon runs beside the container: not a container itself.
        let i = p(&format!("/machine.slice/crio-conmon-{ID}.scope"));
        assert_eq!(i.container_id, None);
        assert_eq!(i.unit.as_deref(), Some(&*format!("crio-conmon-{ID}.scope")));
    }

    #[test]
    fn runc_and_crun_systemd_scopes() {
        let i = p("/system.slice/runc-web1.scope");
        assert_eq!(
            (i.container_id.as_deref(), i.runtime),
            (Some("web1"), Some("runc"))
        );
        let i = p("/machine.slice/crun-db_2.scope");
        assert_eq!(
            (i.container_id.as_deref(), i.runtime),
            (Some("db_2"), Some("crun"))
        );
    }

    #[test]
    fn kubernetes_pods_both_drivers() {
        let slice_uid = POD.replace('-', "_");
        let i = p(&format!(
            "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{slice_uid}.slice/cri-containerd-{ID}.scope"
        ));
        assert_eq!(i.pod_uid.as_deref(), Some(POD));
        assert_eq!(
            (i.container_id.as_deref(), i.runtime),
            (Some(ID), Some("containerd"))
        );
        let i = p(&format!("/kubepods/besteffort/pod{POD}/{ID}"));
        assert_eq!(i.pod_uid.as_deref(), Some(POD));
        assert_eq!((i.container_id.as_deref(), i.runtime), (Some(ID), None));
    }

    #[test]
    fn host_services_and_users() {
        let i = p("/system.slice/ssh.service");
        assert_eq!(i.container_id, None);
        assert_eq!(i.unit.as_deref(), Some("ssh.service"));
        assert_eq!(i.slice.as_deref(), Some("system.slice"));
        let i = p("/user.slice/user-1000.slice/user@1000.service/app.slice/app-foo.scope");
        assert_eq!(i.unit.as_deref(), Some("app-foo.scope"));
        assert_eq!(i.slice.as_deref(), Some("app.slice"));
        let i = p("/user.slice/user-1000.slice/session-3.scope");
        assert_eq!(i.unit.as_deref(), Some("session-3.scope"));
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
            "/kubepods/podnot-a-uid/x",
        ] {
            let i = p(s);
            assert_eq!(i.container_id, None, "{s}");
            assert_eq!(i.pod_uid, None, "{s}");
        }
    }

    #[test]
    fn cache_resolves_once_then_from_memory() {
        let mut c = CgroupCache::default();
        let a = c
            .resolve(7, Some(b"/system.slice/a.service"), false)
            .unwrap();
        assert_eq!(c.take_new(), vec![7]);
        let b = c.resolve(7, None, false).unwrap();
        assert!(Arc::ptr_eq(&a, &b));
        assert!(c.take_new().is_empty());
        assert_eq!(c.resolve(8, None, false), None, "unknown id: no guess");
        assert_eq!(c.trim(), None);
    }

    #[test]
    fn cache_is_bounded() {
        let mut c = CgroupCache::default();
        for id in 0..CACHE_MAX as u64 {
            c.resolve(id, Some(b"/x.service"), false);
        }
        let forgotten = c.trim().unwrap();
        assert_eq!(forgotten.len(), CACHE_MAX);
        assert!(c.is_empty());
    }
}
