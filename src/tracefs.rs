//! The classic syscall exit tracepoints: their ids, from tracefs, and a
//! perf event on each to attach a program to.
//!
//! When tracefs is not mounted, execwatch mounts a private instance in a
//! temporary directory just long enough to read the two ids, then unmounts
//! it. The perf events need no mount once open. /sys/kernel/tracing is never
//! mounted or unmounted, so a concurrent user of tracefs (another tracer,
//! another execwatch starting) cannot have it pulled from under it.

use std::os::fd::{FromRawFd, OwnedFd};
use std::path::{Path, PathBuf};

const TRACEFS: &str = "/sys/kernel/tracing";
const DEBUGFS_TRACING: &str = "/sys/kernel/debug/tracing";

/// Why the syscall exit tracepoints cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum TracefsError {
    #[error("tracefs is not mounted and mounting it in {dir} failed: {source}")]
    Mount {
        dir: String,
        #[source]
        source: nix::Error,
    },
    #[error("making a directory to mount tracefs in failed: {0}")]
    TempDir(nix::Error),
    #[error(
        "the kernel has no syscalls:sys_exit_execve/execveat tracepoints (CONFIG_FTRACE_SYSCALLS)"
    )]
    NoSyscallEvents,
}

/// perf_event_open's `config` for syscalls:sys_exit_execve and
/// syscalls:sys_exit_execveat.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExitEventIds {
    pub execve: u64,
    pub execveat: u64,
}

fn is_tracefs(p: &Path) -> bool {
    nix::sys::statfs::statfs(p)
        .is_ok_and(|s| s.filesystem_type() == nix::sys::statfs::TRACEFS_MAGIC)
}

fn read_ids(root: &Path) -> Result<ExitEventIds, TracefsError> {
    let id = |event: &str| -> Result<u64, TracefsError> {
        std::fs::read_to_string(root.join("events/syscalls").join(event).join("id"))
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .ok_or(TracefsError::NoSyscallEvents)
    };
    Ok(ExitEventIds {
        execve: id("sys_exit_execve")?,
        execveat: id("sys_exit_execveat")?,
    })
}

/// A tracefs mounted by execwatch in a directory of its own: unmounted and
/// removed on drop.
struct PrivateMount {
    dir: PathBuf,
}

impl PrivateMount {
    fn new() -> Result<PrivateMount, TracefsError> {
        let dir = nix::unistd::mkdtemp(&std::env::temp_dir().join("execwatch-tracefs.XXXXXX"))
            .map_err(TracefsError::TempDir)?;
        let flags = nix::mount::MsFlags::MS_NOSUID
            | nix::mount::MsFlags::MS_NODEV
            | nix::mount::MsFlags::MS_NOEXEC
            | nix::mount::MsFlags::MS_RDONLY;
        if let Err(source) =
            nix::mount::mount(Some("tracefs"), &dir, Some("tracefs"), flags, None::<&str>)
        {
            let _ = std::fs::remove_dir(&dir);
            return Err(TracefsError::Mount {
                dir: dir.display().to_string(),
                source,
            });
        }
        tracing::info!(
            "mounted tracefs at {} to read the execve/execveat exit tracepoint ids",
            dir.display()
        );
        Ok(PrivateMount { dir })
    }
}

impl Drop for PrivateMount {
    fn drop(&mut self) {
        // MNT_DETACH: nothing keeps it busy, and nothing should keep it.
        match nix::mount::umount2(&self.dir, nix::mount::MntFlags::MNT_DETACH) {
            Ok(()) => {
                let _ = std::fs::remove_dir(&self.dir);
                tracing::info!("unmounted tracefs at {}", self.dir.display());
            }
            Err(e) => {
                tracing::warn!(error = %e, "could not unmount tracefs at {}", self.dir.display())
            }
        }
    }
}

/// Where tracefs is mounted at its usual places, and whether it shows the
/// two exec exit tracepoints; reads only (for `execwatch check`).
pub fn find_mounted() -> Option<(&'static Path, bool)> {
    [TRACEFS, DEBUGFS_TRACING]
        .into_iter()
        .map(Path::new)
        .find(|p| is_tracefs(p))
        .map(|p| (p, read_ids(p).is_ok()))
}

/// The ids of the two tracepoints, from the tracefs already mounted at the
/// usual places, else from a private mount made and undone here (needs
/// CAP_SYS_ADMIN).
pub fn syscall_exit_event_ids() -> Result<ExitEventIds, TracefsError> {
    for root in [TRACEFS, DEBUGFS_TRACING] {
        let root = Path::new(root);
        if is_tracefs(root) {
            return read_ids(root);
        }
    }
    let mount = PrivateMount::new()?;
    read_ids(&mount.dir)
}

/// A perf event on tracepoint `id`, as libbpf opens one (pid -1, cpu 0:
/// the program attached to it runs on every CPU).
pub fn open_tracepoint_event(id: u64) -> std::io::Result<OwnedFd> {
    use perf_event_open_sys::bindings::{
        perf_event_attr, PERF_FLAG_FD_CLOEXEC, PERF_TYPE_TRACEPOINT,
    };
    let mut attr = perf_event_attr {
        type_: PERF_TYPE_TRACEPOINT,
        size: u32::try_from(std::mem::size_of::<perf_event_attr>()).expect("a small struct"),
        config: id,
        ..Default::default()
    };
    // SAFETY: `attr` is a valid, initialised perf_event_attr whose `size`
    // says how big it is; the kernel only reads it.
    let fd = unsafe {
        perf_event_open_sys::perf_event_open(&mut attr, -1, 0, -1, PERF_FLAG_FD_CLOEXEC.into())
    };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: perf_event_open returned a new descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_read_from_the_events_directory() {
        let dir = std::env::temp_dir().join(format!("execwatch-ids-{}", std::process::id()));
        for (event, id) in [("sys_exit_execve", "721\n"), ("sys_exit_execveat", "719\n")] {
            let d = dir.join("events/syscalls").join(event);
            std::fs::create_dir_all(&d).unwrap();
            std::fs::write(d.join("id"), id).unwrap();
        }
        assert_eq!(
            read_ids(&dir).unwrap(),
            ExitEventIds {
                execve: 721,
                execveat: 719
            }
        );
        std::fs::write(dir.join("events/syscalls/sys_exit_execveat/id"), "x").unwrap();
        assert!(matches!(read_ids(&dir), Err(TracefsError::NoSyscallEvents)));
        std::fs::remove_dir_all(&dir).unwrap();
        assert!(matches!(read_ids(&dir), Err(TracefsError::NoSyscallEvents)));
    }
}
