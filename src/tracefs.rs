//! tracefs for the classic syscall exit tracepoints: found, or mounted.

use std::path::Path;

const TRACEFS: &str = "/sys/kernel/tracing";
const DEBUGFS_TRACING: &str = "/sys/kernel/debug/tracing";

fn has_exec_exit_events(root: &Path) -> bool {
    ["sys_exit_execve", "sys_exit_execveat"]
        .iter()
        .all(|e| root.join("events/syscalls").join(e).join("id").exists())
}

fn is_tracefs(p: &Path) -> bool {
    nix::sys::statfs::statfs(p)
        .is_ok_and(|s| s.filesystem_type() == nix::sys::statfs::TRACEFS_MAGIC)
}

/// Where tracefs is mounted already, and whether it has the exec exit
/// tracepoints. Reads only: mounts nothing.
pub fn find_mounted() -> Option<(&'static Path, bool)> {
    [TRACEFS, DEBUGFS_TRACING]
        .into_iter()
        .map(Path::new)
        .find(|p| is_tracefs(p))
        .map(|p| (p, has_exec_exit_events(p)))
}

/// Why the syscall exit tracepoints cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum TracefsError {
    #[error("mounting tracefs at {TRACEFS} failed: {0}")]
    Mount(nix::Error),
    #[error(
        "the kernel has no syscalls:sys_exit_execve/execveat tracepoints (CONFIG_FTRACE_SYSCALLS)"
    )]
    NoSyscallEvents,
}

/// Where libbpf will find the tracepoints. Mounts tracefs at
/// /sys/kernel/tracing when it is not mounted yet (needs CAP_SYS_ADMIN);
/// `Ok(true)` when this call mounted it.
pub fn ensure_syscall_exit_events() -> Result<bool, TracefsError> {
    if let Some((_, has_events)) = find_mounted() {
        return if has_events {
            Ok(false)
        } else {
            Err(TracefsError::NoSyscallEvents)
        };
    }
    nix::mount::mount(
        Some("tracefs"),
        TRACEFS,
        Some("tracefs"),
        nix::mount::MsFlags::MS_NOSUID
            | nix::mount::MsFlags::MS_NODEV
            | nix::mount::MsFlags::MS_NOEXEC,
        None::<&str>,
    )
    .map_err(TracefsError::Mount)?;
    if has_exec_exit_events(Path::new(TRACEFS)) {
        Ok(true)
    } else {
        Err(TracefsError::NoSyscallEvents)
    }
}
