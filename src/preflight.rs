//! Checks made before loading, so that a host that cannot run execwatch gets
//! one line naming what is missing instead of a libbpf error. Each check is
//! here once: the daemon runs the required ones before loading, and
//! `execwatch check` (crate::check) reports all of them.

use std::path::{Path, PathBuf};

use crate::bpf_loader::{FailedExecs, TASK_PT_REGS_KERNEL};
use crate::mounts::MountTable;

/// Oldest kernel supported: BPF atomic fetch-add (the global sequence number)
/// arrived in 5.12; ring buffer (5.8), tp_btf/fentry (5.5) are older.
pub const MIN_KERNEL: (u32, u32) = (5, 12);

/// BPF_MAP_TYPE_RINGBUF arrived in 5.8.
pub const RINGBUF_KERNEL: (u32, u32) = (5, 8);

pub const BTF_PATH: &str = "/sys/kernel/btf/vmlinux";
pub const TRACEFS_PATH: &str = "/sys/kernel/tracing";
pub const BPFFS_PATH: &str = "/sys/fs/bpf";

const CAP_SYS_ADMIN: u32 = 21;
const CAP_PERFMON: u32 = 38;
const CAP_BPF: u32 = 39;

/// What the packaged unit (deploy/systemd/execwatch.service) leaves the
/// daemon, as root: its CapabilityBoundingSet.
pub const UNIT_CAPS: u64 = (1 << CAP_BPF) | (1 << CAP_PERFMON);
/// How `execwatch check` names them.
pub const UNIT_CAPS_NAMES: &str = "CAP_BPF and CAP_PERFMON";

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PreflightError {
    #[error(
        "kernel {release} is too old: execwatch needs Linux {}.{} or newer (BPF ring buffer and atomics)",
        MIN_KERNEL.0,
        MIN_KERNEL.1
    )]
    KernelTooOld { release: String },
    #[error(
        "kernel BTF not found at {BTF_PATH}: execwatch needs a kernel built with \
         CONFIG_DEBUG_INFO_BTF=y"
    )]
    NoBtf,
    #[error(
        "insufficient privileges (missing {missing}): run execwatch as root, or grant it \
         CAP_BPF and CAP_PERFMON"
    )]
    NotPrivileged { missing: String },
    #[error(
        "the kernel has no BPF ring buffer (BPF_MAP_TYPE_RINGBUF): execwatch needs Linux \
         {}.{} or newer",
        RINGBUF_KERNEL.0,
        RINGBUF_KERNEL.1
    )]
    NoRingBuffer,
    #[error(
        "probing the BPF ring buffer failed ({0}): the kernel forbids BPF (lockdown, an LSM?)"
    )]
    RingBufferProbe(String),
    #[error(
        "{why}: failed execs are recorded by the sys_exit hook, which runs briefly on every \
         syscall; {fix}"
    )]
    NoSyscallTracepoints { why: String, fix: &'static str },
    #[error(
        "no cgroup v2 hierarchy is mounted: containers and units are not named and --cgroup \
         cannot work; boot with systemd.unified_cgroup_hierarchy=1, or mount one: \
         mount -t cgroup2 none /sys/fs/cgroup"
    )]
    NoCgroup2,
    #[error("{0}; without it, use --format json or text")]
    NoJournald(String),
    #[error(
        "bpffs is not mounted at {BPFFS_PATH}: BPF objects cannot be pinned; mount it: \
         mount -t bpf bpf {BPFFS_PATH}"
    )]
    NoBpffs,
}

/// Parse `major.minor` from a kernel release string like `6.18.44-foo`.
/// Whether overlayfs is in the kernel now (built in, or its module loaded):
/// the BPF program reads its types only if they exist when it loads.
pub fn overlayfs_known() -> bool {
    std::fs::read_to_string("/proc/filesystems")
        .is_ok_and(|f| f.lines().any(|l| l.split('\t').nth(1) == Some("overlay")))
}

pub fn parse_release(release: &str) -> Option<(u32, u32)> {
    let mut it = release.split(|c: char| !c.is_ascii_digit());
    let major = it.next()?.parse().ok()?;
    let minor = it.next()?.parse().ok()?;
    Some((major, minor))
}

/// The running kernel's release, e.g. `6.18.44-foo` (empty if uname fails).
pub fn kernel_release() -> String {
    nix::sys::utsname::uname()
        .map(|u| u.release().to_string_lossy().into_owned())
        .unwrap_or_default()
}

pub fn check_kernel(release: &str) -> Result<(), PreflightError> {
    match parse_release(release) {
        Some(v) if v >= MIN_KERNEL => Ok(()),
        // An unparsable release is left for the loader to judge.
        None => Ok(()),
        Some(_) => Err(PreflightError::KernelTooOld {
            release: release.to_string(),
        }),
    }
}

pub fn check_btf(path: &Path) -> Result<(), PreflightError> {
    if path.exists() {
        Ok(())
    } else {
        Err(PreflightError::NoBtf)
    }
}

/// `CapEff` from /proc/self/status text.
pub fn parse_cap_eff(status: &str) -> Option<u64> {
    status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
}

/// This process's effective capabilities, if /proc says.
pub fn cap_eff() -> Option<u64> {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .as_deref()
        .and_then(parse_cap_eff)
}

fn has_cap(cap_eff: u64, cap: u32) -> bool {
    cap_eff & (1 << cap) != 0
}

/// Which capabilities let this process load and attach the programs.
pub fn check_caps(cap_eff: u64) -> Result<&'static str, PreflightError> {
    let has = |c: u32| has_cap(cap_eff, c);
    if has(CAP_BPF) && has(CAP_PERFMON) {
        return Ok("CAP_BPF and CAP_PERFMON");
    }
    if has(CAP_SYS_ADMIN) {
        return Ok("CAP_SYS_ADMIN");
    }
    let missing: Vec<&str> = [(CAP_BPF, "CAP_BPF"), (CAP_PERFMON, "CAP_PERFMON")]
        .into_iter()
        .filter(|&(c, _)| !has(c))
        .map(|(_, n)| n)
        .collect();
    Err(PreflightError::NotPrivileged {
        missing: missing.join(", "),
    })
}

/// How the ring buffer's presence is known.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RingBufferEvidence {
    /// The kernel created one when asked (libbpf's probe).
    Probed,
    /// Not probed (the probe needs CAP_BPF): the kernel is new enough.
    KernelVersion,
}

/// libbpf's probe: creates and frees a small ring buffer map. It needs
/// CAP_BPF, and without it answers "unsupported": call it only when privileged.
pub fn probe_ring_buffer() -> Result<bool, String> {
    libbpf_rs::MapType::RingBuf
        .is_supported()
        .map_err(|e| e.to_string())
}

/// Judge the probe's answer; `None` (not probed, for lack of privileges)
/// falls back to the kernel version.
pub fn check_ring_buffer(
    probe: Option<Result<bool, String>>,
    release: &str,
) -> Result<RingBufferEvidence, PreflightError> {
    match probe {
        Some(Ok(true)) => Ok(RingBufferEvidence::Probed),
        Some(Ok(false)) => Err(PreflightError::NoRingBuffer),
        Some(Err(e)) => Err(PreflightError::RingBufferProbe(e)),
        None => match parse_release(release) {
            Some(v) if v < RINGBUF_KERNEL => Err(PreflightError::NoRingBuffer),
            _ => Ok(RingBufferEvidence::KernelVersion),
        },
    }
}

/// What `--failed-execs auto` will pick on this host, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FailedExecsPlan {
    pub hook: FailedExecs,
    /// Where the tracepoints are read from (mounted now, or to be mounted).
    pub tracefs: Option<PathBuf>,
    /// tracefs is to be mounted by execwatch at start.
    pub will_mount: bool,
}

/// What a mounted tracefs shows this process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TracefsEvents {
    /// syscalls:sys_exit_execve and sys_exit_execveat are there.
    Present,
    Absent,
    /// Its events are not readable by this user.
    Unreadable,
}

/// Where tracefs is mounted and what it shows; reads only.
pub fn tracefs_seen() -> Option<(&'static Path, TracefsEvents)> {
    let (root, has_events) = crate::tracefs::find_mounted()?;
    let events = if has_events {
        TracefsEvents::Present
    } else if std::fs::read_dir(root.join("events"))
        .is_err_and(|e| e.kind() == std::io::ErrorKind::PermissionDenied)
    {
        TracefsEvents::Unreadable
    } else {
        TracefsEvents::Absent
    };
    Some((root, events))
}

/// The same choice as the loader's `auto` (bpf_loader), made without
/// mounting anything. `mounted`: where tracefs is and what it shows;
/// `can_mount`: CAP_SYS_ADMIN.
pub fn plan_failed_execs(
    release: &str,
    mounted: Option<(&Path, TracefsEvents)>,
    can_mount: bool,
) -> Result<FailedExecsPlan, PreflightError> {
    let sys_exit =
        |why: String, fix: &'static str| Err(PreflightError::NoSyscallTracepoints { why, fix });
    if parse_release(release).is_some_and(|v| v < TASK_PT_REGS_KERNEL) {
        return sys_exit(
            format!(
                "kernel {release} is older than {}.{} (bpf_task_pt_regs)",
                TASK_PT_REGS_KERNEL.0, TASK_PT_REGS_KERNEL.1
            ),
            "nothing to do (Linux 5.15 or newer uses the exec tracepoints)",
        );
    }
    match mounted {
        Some((root, TracefsEvents::Present)) => Ok(FailedExecsPlan {
            hook: FailedExecs::Tracepoints,
            tracefs: Some(root.to_path_buf()),
            will_mount: false,
        }),
        Some((root, TracefsEvents::Unreadable)) => sys_exit(
            format!("tracefs at {} is not readable by this user", root.display()),
            "run execwatch as root",
        ),
        Some((root, TracefsEvents::Absent)) => sys_exit(
            format!(
                "tracefs at {} has no syscalls:sys_exit_execve tracepoint",
                root.display()
            ),
            "use a kernel built with CONFIG_FTRACE_SYSCALLS=y",
        ),
        None if can_mount => Ok(FailedExecsPlan {
            hook: FailedExecs::Tracepoints,
            tracefs: Some(PathBuf::from(TRACEFS_PATH)),
            will_mount: true,
        }),
        None => sys_exit(
            "tracefs is not mounted and cannot be without CAP_SYS_ADMIN".into(),
            "mount it: mount -t tracefs tracefs /sys/kernel/tracing",
        ),
    }
}

/// May this process mount tracefs.
pub fn can_mount(cap_eff: u64) -> bool {
    has_cap(cap_eff, CAP_SYS_ADMIN)
}

pub fn check_cgroup2(mount: Option<PathBuf>) -> Result<PathBuf, PreflightError> {
    mount.ok_or(PreflightError::NoCgroup2)
}

/// journald answers on its native socket (as `--format journald` connects).
pub fn check_journald() -> Result<(), PreflightError> {
    crate::output::journald::Journal::connect()
        .map(drop)
        .map_err(|e| PreflightError::NoJournald(e.to_string()))
}

/// bpffs at its usual place, else wherever it is mounted.
pub fn check_bpffs(mounts: &MountTable) -> Result<PathBuf, PreflightError> {
    let usual = Path::new(BPFFS_PATH);
    if mounts.has(usual, "bpf") {
        return Ok(usual.to_path_buf());
    }
    mounts
        .first_of_type("bpf")
        .map(Path::to_path_buf)
        .ok_or(PreflightError::NoBpffs)
}

/// The checks the daemon needs to pass before loading.
pub fn check_host() -> Result<(), PreflightError> {
    let release = kernel_release();
    check_kernel(&release)?;
    check_btf(Path::new(BTF_PATH))?;
    if let Some(caps) = cap_eff() {
        check_caps(caps)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn release_parsing() {
        assert_eq!(parse_release("6.18.44-fc-v669"), Some((6, 18)));
        assert_eq!(parse_release("5.4.0-150-generic"), Some((5, 4)));
        assert_eq!(parse_release("junk"), None);
    }

    #[test]
    fn kernel_floor() {
        assert!(check_kernel("5.12.0").is_ok());
        assert!(check_kernel("6.1.0-27-cloud-amd64").is_ok());
        let e = check_kernel("5.10.0-30-amd64").unwrap_err();
        assert!(e.to_string().contains("5.10.0-30-amd64 is too old"), "{e}");
    }

    #[test]
    fn missing_btf_is_named() {
        let e = check_btf(Path::new("/nonexistent/btf")).unwrap_err();
        assert!(e.to_string().contains("CONFIG_DEBUG_INFO_BTF"));
    }

    #[test]
    fn capabilities() {
        assert!(check_caps(u64::MAX).is_ok());
        assert!(check_caps(1 << CAP_SYS_ADMIN).is_ok());
        assert!(check_caps((1 << CAP_BPF) | (1 << CAP_PERFMON)).is_ok());
        let e = check_caps(1 << CAP_BPF).unwrap_err();
        assert_eq!(
            e,
            PreflightError::NotPrivileged {
                missing: "CAP_PERFMON".into()
            }
        );
        assert!(check_caps(0)
            .unwrap_err()
            .to_string()
            .contains("CAP_BPF, CAP_PERFMON"));
        let status = "Name:\tx\nCapEff:\t000001ffffffffff\n";
        assert_eq!(parse_cap_eff(status), Some(0x1ff_ffff_ffff));
    }

    #[test]
    fn ring_buffer_probe_or_kernel_version() {
        assert_eq!(
            check_ring_buffer(Some(Ok(true)), "6.1.0"),
            Ok(RingBufferEvidence::Probed)
        );
        assert_eq!(
            check_ring_buffer(Some(Ok(false)), "6.1.0"),
            Err(PreflightError::NoRingBuffer)
        );
        assert!(matches!(
            check_ring_buffer(Some(Err("EPERM".into())), "6.1.0"),
            Err(PreflightError::RingBufferProbe(_))
        ));
        assert_eq!(
            check_ring_buffer(None, "5.8.0"),
            Ok(RingBufferEvidence::KernelVersion)
        );
        let e = check_ring_buffer(None, "5.4.0").unwrap_err();
        assert!(e.to_string().contains("Linux 5.8 or newer"), "{e}");
    }

    #[test]
    fn unit_caps_are_the_units_bounding_set() {
        let unit = include_str!("../deploy/systemd/execwatch.service");
        let set: Vec<&str> = unit
            .lines()
            .find_map(|l| l.strip_prefix("CapabilityBoundingSet="))
            .expect("the unit bounds its capabilities")
            .split_whitespace()
            .collect();
        assert_eq!(set, ["CAP_BPF", "CAP_PERFMON"]);
        assert_eq!(UNIT_CAPS, (1 << CAP_BPF) | (1 << CAP_PERFMON));
        assert!(!can_mount(UNIT_CAPS));
    }

    #[test]
    fn failed_exec_hook_plan() {
        let tracing = Path::new("/sys/kernel/tracing");
        let plan = plan_failed_execs("6.1.0", Some((tracing, TracefsEvents::Present)), false);
        assert_eq!(
            plan,
            Ok(FailedExecsPlan {
                hook: FailedExecs::Tracepoints,
                tracefs: Some(tracing.into()),
                will_mount: false
            })
        );
        let plan = plan_failed_execs("6.1.0", None, true).unwrap();
        assert!(plan.will_mount && plan.hook == FailedExecs::Tracepoints);

        let e = plan_failed_execs("6.1.0", None, false).unwrap_err();
        let text = e.to_string();
        assert!(text.contains("sys_exit hook"), "{text}");
        assert!(text.contains("mount -t tracefs"), "{text}");
        let e =
            plan_failed_execs("5.12.0", Some((tracing, TracefsEvents::Present)), true).unwrap_err();
        assert!(e.to_string().contains("older than 5.15"), "{e}");
        let e =
            plan_failed_execs("6.1.0", Some((tracing, TracefsEvents::Absent)), true).unwrap_err();
        assert!(e.to_string().contains("CONFIG_FTRACE_SYSCALLS"), "{e}");
        let e = plan_failed_execs("6.1.0", Some((tracing, TracefsEvents::Unreadable)), true)
            .unwrap_err();
        assert!(e.to_string().contains("not readable by this user"), "{e}");
    }

    #[test]
    fn bpffs_at_its_usual_place_first() {
        let bpffs = |text: &[u8]| check_bpffs(&MountTable::parse(text));
        let mounts = b"sysfs /sys sysfs rw 0 0\n\
                      cgroup2 /sys/fs/cgroup/unified cgroup2 rw 0 0\n\
                      bpf /sys/fs/bpf bpf rw 0 0\n";
        assert_eq!(bpffs(mounts), Ok(PathBuf::from("/sys/fs/bpf")));
        let elsewhere = b"bpf /tmp/pins bpf rw 0 0\nbpf /sys/fs/bpf bpf rw 0 0\n";
        assert_eq!(bpffs(elsewhere), Ok(PathBuf::from("/sys/fs/bpf")));
        assert_eq!(
            bpffs(b"bpf /tmp/pins bpf rw 0 0\n"),
            Ok(PathBuf::from("/tmp/pins"))
        );
        assert_eq!(
            bpffs(b"bpf /tmp/my\\040pins bpf rw 0 0\n"),
            Ok(PathBuf::from("/tmp/my pins"))
        );
        let e = bpffs(b"sysfs /sys sysfs rw 0 0\n").unwrap_err();
        assert!(
            e.to_string().contains("mount -t bpf bpf /sys/fs/bpf"),
            "{e}"
        );
        assert!(check_cgroup2(None)
            .unwrap_err()
            .to_string()
            .contains("mount -t cgroup2"));
    }

    #[test]
    fn which_capabilities_are_enough() {
        assert_eq!(
            check_caps((1 << CAP_BPF) | (1 << CAP_PERFMON)),
            Ok("CAP_BPF and CAP_PERFMON")
        );
        assert_eq!(check_caps(1 << CAP_SYS_ADMIN), Ok("CAP_SYS_ADMIN"));
        assert!(can_mount(1 << CAP_SYS_ADMIN));
        assert!(!can_mount((1 << CAP_BPF) | (1 << CAP_PERFMON)));
    }
}
