//! The event model: one exec, owned, and the facts derived from it. Every
//! output format renders these through [`crate::fields`]; none works out a
//! fact of its own.

use std::borrow::Cow;
use std::sync::Arc;

use crate::cgroups::CgroupInfo;

/// `process.command_line` is for display and search: at most this many
/// bytes of arguments (keyword fields are not indexed past ~1 KiB anyway);
/// `process.args` carries them all.
pub const COMMAND_LINE_MAX: usize = 4096;

/// Which syscall a failed exec came through.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Syscall {
    Execve,
    Execveat,
}

impl Syscall {
    pub fn name(self) -> &'static str {
        match self {
            Syscall::Execve => "execve",
            Syscall::Execveat => "execveat",
        }
    }
}

/// One exec, owned. Buffers are reused by [`ExecEvent::decode_from`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ExecEvent {
    pub seq: u64,
    /// CLOCK_BOOTTIME nanoseconds of the exec.
    pub boot_ns: u64,
    pub cgroup_id: u64,
    /// `None` on success, the errno of a failed exec.
    pub errno: Option<i32>,
    /// Set on failed execs only; a successful record does not say.
    pub syscall: Option<Syscall>,
    pub pid: u32,
    pub tid: u32,
    pub ppid: u32,
    pub uid: u32,
    pub gid: u32,
    pub euid: u32,
    pub egid: u32,
    /// loginuid, `None` when unset.
    pub auid: Option<u32>,
    /// audit session id, `None` when unset.
    pub session_id: Option<u32>,
    pub pidns_ino: u32,
    pub ns_pid: u32,
    pub mntns_ino: u32,
    /// Total argument count, including arguments not captured.
    pub argc: u32,
    /// Total bytes of the argument area (NULs included).
    pub args_size: u32,
    /// execveat's dirfd and flags, on a failed execveat.
    pub dirfd: i32,
    pub at_flags: u32,
    pub args_truncated: bool,
    pub filename_truncated: bool,
    pub exe_truncated: bool,
    pub args_read_failed: bool,
    pub exe_read_failed: bool,
    /// comm after exec.
    pub comm: Vec<u8>,
    /// comm before exec; empty when the kernel side missed it.
    pub caller_comm: Vec<u8>,
    /// The file name as passed to exec.
    pub filename: Vec<u8>,
    /// Path of what ran, from the root of its mount namespace; empty on failure.
    pub executable: Vec<u8>,
    /// The cgroup v2 path, in the first record of each cgroup only (the BPF
    /// side stops sending it once the daemon knows the cgroup).
    pub cgroup_path: Option<Vec<u8>>,
    /// The record's cgroup path was cut (meaningful with `cgroup_path`).
    pub cgroup_path_truncated: bool,
    /// Set by the daemon after decoding: who the cgroup belongs to.
    pub cgroup: Option<Arc<CgroupInfo>>,
    /// Set by the daemon: whether the process is in execwatch's pid namespace.
    pub host_pid_ns: Option<bool>,
    pub(crate) args_bytes: Vec<u8>,
    pub(crate) arg_ends: Vec<usize>,
}

impl ExecEvent {
    /// Captured arguments, in order. Empty arguments are kept.
    pub fn args(&self) -> impl ExactSizeIterator<Item = &[u8]> + '_ {
        let mut start = 0;
        self.arg_ends.iter().map(move |&end| {
            let arg = &self.args_bytes[start..end];
            start = end + 1;
            arg
        })
    }

    /// Number of captured arguments (at most `argc`).
    pub fn captured_args(&self) -> usize {
        self.arg_ends.len()
    }

    pub fn succeeded(&self) -> bool {
        self.errno.is_none()
    }

    /// Set the arguments (for building events in tests and benchmarks).
    pub fn set_args<'a>(&mut self, args: impl IntoIterator<Item = &'a [u8]>) {
        self.args_bytes.clear();
        self.arg_ends.clear();
        for a in args {
            self.args_bytes.extend_from_slice(a);
            self.arg_ends.push(self.args_bytes.len());
            self.args_bytes.push(0);
        }
    }

    /// Split the NUL-separated argument area. At most `argc` pieces; a last
    /// piece without its NUL (truncated capture) is kept as it is.
    pub(crate) fn split_args(&mut self, area: &[u8]) {
        self.args_bytes.clear();
        self.arg_ends.clear();
        self.args_bytes.extend_from_slice(area);
        let max = self.argc as usize;
        let mut start = 0;
        while start < area.len() && self.arg_ends.len() < max {
            let end = memchr::memchr(0, &area[start..]).map_or(area.len(), |p| start + p);
            self.arg_ends.push(end);
            start = end + 1;
        }
        // The area ends at the last NUL; a partial piece keeps no NUL.
        if let Some(&last) = self.arg_ends.last() {
            self.args_bytes.truncate(last + 1);
        }
    }

    /// `success` or `failure`.
    pub fn outcome(&self) -> &'static str {
        if self.succeeded() {
            "success"
        } else {
            "failure"
        }
    }

    /// errno name of a failed exec (`ENOENT`), or the number when unknown.
    pub fn error_code(&self) -> Option<Cow<'static, str>> {
        self.errno.map(errno_name)
    }

    /// errno description of a failed exec.
    pub fn error_message(&self) -> Option<&'static str> {
        self.errno.map(|e| nix::errno::Errno::from_raw(e).desc())
    }

    /// Some argument is missing or cut: argv was longer than the capture
    /// limit, or its memory could not be read.
    pub fn args_incomplete(&self) -> bool {
        self.args_truncated || self.args_read_failed || self.captured_args() != self.argc as usize
    }

    /// The arguments joined by spaces exceed [`COMMAND_LINE_MAX`] bytes.
    pub fn command_line_truncated(&self) -> bool {
        let n = self.captured_args();
        let joined = self.args_bytes_len() + n.saturating_sub(1);
        n > 0 && joined > COMMAND_LINE_MAX
    }

    fn args_bytes_len(&self) -> usize {
        // Each argument but a cut last one is followed by its NUL.
        self.arg_ends.iter().enumerate().fold(0, |acc, (i, &end)| {
            let start = if i == 0 { 0 } else { self.arg_ends[i - 1] + 1 };
            acc + (end - start)
        })
    }

    /// Whether the execveat arguments (dirfd, flags) are known: failed
    /// execveat only.
    pub fn has_execveat_args(&self) -> bool {
        self.syscall == Some(Syscall::Execveat)
    }

    /// The cgroup attribution, when the path is known.
    pub fn attribution(&self) -> Option<&CgroupInfo> {
        self.cgroup.as_deref()
    }

    pub fn container_id(&self) -> Option<&str> {
        self.attribution()?.container_id.as_deref()
    }

    pub fn container_runtime(&self) -> Option<&'static str> {
        let cg = self.attribution()?;
        cg.container_id.as_ref()?;
        cg.runtime
    }

    pub fn pod_uid(&self) -> Option<&str> {
        self.attribution()?.pod_uid.as_deref()
    }

    pub fn systemd_unit(&self) -> Option<&str> {
        self.attribution()?.unit.as_deref()
    }

    pub fn systemd_slice(&self) -> Option<&str> {
        self.attribution()?.slice.as_deref()
    }

    pub fn cgroup_path(&self) -> Option<&[u8]> {
        self.attribution().map(|cg| cg.path.as_slice())
    }

    /// The cgroup path is its tail only (kept for every event of the cgroup).
    pub fn cgroup_truncated(&self) -> bool {
        self.attribution().is_some_and(|cg| cg.path_truncated)
    }

    /// The daemon has no path for the cgroup: nothing is attributed.
    pub fn cgroup_unresolved(&self) -> bool {
        self.cgroup.is_none()
    }

    /// The process lives in another pid namespace than execwatch.
    pub fn in_other_pid_ns(&self) -> bool {
        self.ns_pid != self.pid
    }
}

/// errno name (`ENOENT`), or the number when the name is unknown.
pub fn errno_name(errno: i32) -> Cow<'static, str> {
    let err = nix::errno::Errno::from_raw(errno);
    if err == nix::errno::Errno::UnknownErrno {
        Cow::Owned(errno.to_string())
    } else {
        Cow::Owned(format!("{err:?}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errno_names() {
        assert_eq!(errno_name(2), "ENOENT");
        assert_eq!(errno_name(13), "EACCES");
        assert_eq!(errno_name(9999), "9999");
    }

    #[test]
    fn unreadable_args_are_incomplete() {
        let mut ev = ExecEvent {
            argc: 2,
            ..Default::default()
        };
        ev.args_read_failed = true;
        assert!(ev.args_incomplete());
        let mut ok = ExecEvent {
            argc: 1,
            ..Default::default()
        };
        ok.set_args([&b"ls"[..]]);
        assert!(!ok.args_incomplete());
    }

    #[test]
    fn command_line_cap() {
        let mut ev = ExecEvent::default();
        let a = vec![b'a'; COMMAND_LINE_MAX / 2];
        let b = vec![b'a'; COMMAND_LINE_MAX / 2 - 1];
        ev.set_args([&a[..], &b[..]]);
        assert!(!ev.command_line_truncated(), "exactly the cap fits");
        ev.set_args([&a[..], &a[..]]);
        assert!(ev.command_line_truncated());
    }
}
