//! The event model: one exec, owned, and the facts derived from it. Every
//! output format renders these through [`crate::fields`]; none works out a
//! fact of its own.

use std::borrow::Cow;
use std::sync::Arc;

use crate::cgroups::CgroupInfo;
use crate::entity_id::EntityId;
use crate::exe_hash::{FileIdentity, HashOutcome};
use crate::process_table::{Image, Related};

/// `process.command_line` is for display and search: at most this many
/// bytes of arguments (keyword fields are not indexed past ~1 KiB anyway);
/// `process.args` carries them all.
pub const COMMAND_LINE_MAX: usize = 4096;

/// What a record says happened.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Action {
    #[default]
    Exec,
    /// The process ended (its last thread exited).
    Exit,
}

/// Who the process is and where it comes from, from the daemon's table of
/// live processes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lineage {
    pub entity_id: EntityId,
    pub parent_entity_id: Option<EntityId>,
    /// The parent's image and start, when the table knows it.
    pub parent: Option<Related>,
    pub session_leader: Option<Related>,
    pub group_leader: Option<Related>,
    /// The image this process ran before this exec (a second exec).
    pub previous: Option<Arc<Image>>,
}

/// Bytes of one `--env` value kept; longer values are cut and flagged.
pub const ENV_VALUE_MAX: usize = 4096;

/// The executable's inode at exec.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ExeIdentity {
    /// Kernel dev_t of the file system: major << 20 | minor.
    pub dev: u32,
    pub ino: u64,
    pub size: u64,
    pub nlink: u32,
    pub uid: u32,
    pub gid: u32,
    pub mode: u32,
    /// Seconds and nanoseconds since the Unix epoch.
    pub mtime: (i64, u32),
    pub ctime: (i64, u32),
}

impl ExeIdentity {
    pub fn dev_major(&self) -> u32 {
        self.dev >> 20
    }

    pub fn dev_minor(&self) -> u32 {
        self.dev & 0xfffff
    }
}

/// The caller's effective ids and capabilities, before exec.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct OldCreds {
    pub euid: u32,
    pub egid: u32,
    pub cap_permitted: u64,
}

/// Why an exec raised privileges.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Privilege {
    Setuid,
    Setgid,
    FileCaps,
}

impl Privilege {
    pub const ALL: [Privilege; 3] = [Privilege::Setuid, Privilege::Setgid, Privilege::FileCaps];

    pub fn name(self) -> &'static str {
        match self {
            Privilege::Setuid => "setuid",
            Privilege::Setgid => "setgid",
            Privilege::FileCaps => "file_caps",
        }
    }
}

/// A set of [`Privilege`]s.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Privileges(u8);

impl Privileges {
    pub fn insert(&mut self, p: Privilege) {
        self.0 |= 1 << p as u8;
    }

    pub fn contains(self, p: Privilege) -> bool {
        self.0 & (1 << p as u8) != 0
    }

    pub fn is_empty(self) -> bool {
        self.0 == 0
    }

    pub fn iter(self) -> impl Iterator<Item = Privilege> {
        Privilege::ALL
            .into_iter()
            .filter(move |p| self.contains(*p))
    }
}

const S_ISUID: u32 = 0o4000;
const S_ISGID: u32 = 0o2000;

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

/// Where a process runs, as [`ExecEvent::workload`] says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Workload<'a> {
    /// A container confirmed by root-owned runtime state, and its name there.
    Container { id: &'a str, name: Option<&'a str> },
    /// A container id the cgroup path claims that no root-owned state
    /// confirms (a rootless container, a forgery, or one gone too soon).
    UnconfirmedContainer(&'a str),
    /// The innermost systemd unit of a process outside containers.
    Unit(&'a str),
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
    /// Path of what ran, from the process's root directory; empty on failure.
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
    /// Exec or exit.
    pub action: Action,
    /// Process start (the fork), CLOCK_BOOTTIME nanoseconds.
    pub start_ns: u64,
    /// The real parent's start, likewise.
    pub parent_start_ns: u64,
    /// Exec: when the parent never exec'd, the ancestor whose image it runs
    /// (pid, start).
    pub image_ancestor: Option<(u32, u64)>,
    /// Exit: the wait status (exit code << 8, 0x80 core dumped, signal).
    pub exit_status: u32,
    /// Set by the daemon from its process table.
    pub lineage: Option<Lineage>,
    /// Set by the daemon: the executable's SHA-256, or why there is none.
    pub hash: Option<HashOutcome>,
    /// Session and process group ids in the initial pid namespace; 0: none.
    pub sid: u32,
    pub pgid: u32,
    /// Controlling terminal's device number (major, minor).
    pub tty: Option<(u32, u32)>,
    /// Working directory at exec, from the process's root directory.
    pub cwd: Vec<u8>,
    pub cwd_truncated: bool,
    /// The `#!` script (or binfmt_misc file) the interpreter runs; empty if none.
    pub script: Vec<u8>,
    pub script_truncated: bool,
    /// These paths lie outside the process's root directory (a chroot): they
    /// are then from the root of the mount namespace.
    pub exe_outside_root: bool,
    pub cwd_outside_root: bool,
    pub script_outside_root: bool,
    /// The executable is a pseudo file (memfd, anonymous): no path on a disk.
    pub exe_pseudo: bool,
    /// The executable is on an overlayfs upper (writable) layer.
    pub exe_upper_layer: bool,
    /// A FUSE server gives the executable's bytes, or the kernel could not
    /// tell what lies under its stacked file system.
    pub exe_fuse: bool,
    /// The executable's inode, on successful execs.
    pub exe_identity: Option<ExeIdentity>,
    /// The caller's credentials before exec, when the kernel side kept them.
    pub old_creds: Option<OldCreds>,
    /// Permitted capabilities after exec.
    pub cap_permitted: u64,
    /// The kernel ran the exec in secure mode (AT_SECURE): privileges changed.
    pub secureexec: bool,
    /// The environment area as captured (`--env` only), NUL-separated.
    pub(crate) env_area: Vec<u8>,
    /// The environment went past what the kernel side copies.
    pub env_truncated: bool,
    /// `NAME=VALUE` entries picked by `--env`, in the process's order.
    pub env_vars: Vec<Vec<u8>>,
    /// Some picked value was longer than [`ENV_VALUE_MAX`] and was cut.
    pub env_value_truncated: bool,
    pub(crate) args_bytes: Vec<u8>,
    pub(crate) arg_ends: Vec<usize>,
    /// Every captured argument is valid UTF-8 (checked once, when set).
    pub(crate) args_utf8: bool,
    /// Every captured argument is plain printable ASCII (its own escape in
    /// every format), checked once, when set.
    pub(crate) args_plain: bool,
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

    /// The captured arguments as one area, NUL-separated, and the end of
    /// each argument in it (the last may have no NUL after it).
    pub fn args_area(&self) -> (&[u8], &[usize]) {
        (&self.args_bytes, &self.arg_ends)
    }

    /// Whether every captured argument is valid UTF-8.
    pub fn args_utf8(&self) -> bool {
        self.args_utf8
    }

    /// Whether every captured argument is plain printable ASCII, which every
    /// format copies as it is.
    pub fn args_plain(&self) -> bool {
        self.args_plain
    }

    fn check_args(&mut self) {
        let plain = self.args().all(crate::output::escape::is_plain);
        self.args_plain = plain;
        self.args_utf8 = self.args_plain || std::str::from_utf8(&self.args_bytes).is_ok();
    }

    /// Number of captured arguments (at most `argc`).
    pub fn captured_args(&self) -> usize {
        self.arg_ends.len()
    }

    pub fn succeeded(&self) -> bool {
        self.errno.is_none()
    }

    /// Set the arguments (for building events in tests).
    #[cfg(test)]
    pub fn set_args<'a>(&mut self, args: impl IntoIterator<Item = &'a [u8]>) {
        self.args_bytes.clear();
        self.arg_ends.clear();
        for a in args {
            self.args_bytes.extend_from_slice(a);
            self.arg_ends.push(self.args_bytes.len());
            self.args_bytes.push(0);
        }
        self.check_args();
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
        // NULs are valid UTF-8 and no sequence spans one: one pass says it
        // for every argument.
        self.check_args();
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
        // One NUL between arguments: the last one's end is the joined length.
        self.arg_ends
            .last()
            .is_some_and(|&end| end > COMMAND_LINE_MAX)
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

    /// Confirmation and names of the container the cgroup path claims.
    pub fn container(&self) -> Option<&crate::containers::ContainerInfo> {
        self.attribution()?.container.as_deref()
    }

    /// A container confirmed by root-owned runtime state: names come from
    /// there. A rootless container's names are its user's word, not shown.
    fn system_container(&self) -> Option<&crate::containers::ContainerInfo> {
        self.container().filter(|c| c.is_system())
    }

    pub fn container_name(&self) -> Option<&str> {
        self.system_container()?.name.as_deref()
    }

    pub fn container_image(&self) -> Option<&crate::containers::ImageRef> {
        self.system_container()?.image.as_ref()
    }

    pub fn kubernetes(&self) -> Option<&crate::containers::Kubernetes> {
        self.system_container()?.kubernetes.as_ref()
    }

    /// The id a cgroup name claims that no root-owned state confirms: a
    /// forgery, a container gone before it was seen, or a rootless one.
    pub fn unconfirmed_container_id(&self) -> Option<&str> {
        let c = self.container()?;
        match (&c.unconfirmed_id, c.rootless_uid) {
            (Some(id), _) => Some(id),
            (None, Some(_)) => c.id.as_deref(),
            (None, None) => None,
        }
    }

    /// The user whose own runtime state confirms a rootless container.
    pub fn rootless_uid(&self) -> Option<u32> {
        self.container()?.rootless_uid
    }

    pub fn pod_uid(&self) -> Option<&str> {
        self.attribution()?.pod_uid.as_deref()
    }

    pub fn systemd_unit(&self) -> Option<&str> {
        self.attribution()?.unit.as_deref()
    }

    /// Where the process runs, for people: its confirmed container, else a
    /// container id claimed without confirmation, else its systemd unit.
    pub fn workload(&self) -> Option<Workload<'_>> {
        if let Some(id) = self.container_id() {
            return Some(Workload::Container {
                id,
                name: self.container_name(),
            });
        }
        if let Some(id) = self.unconfirmed_container_id() {
            return Some(Workload::UnconfirmedContainer(id));
        }
        self.systemd_unit().map(Workload::Unit)
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

    /// A person may sit at it: the process has a controlling terminal.
    pub fn interactive(&self) -> bool {
        self.tty.is_some()
    }

    /// The executable is a memfd: it exists on no disk.
    pub fn exe_memfd(&self) -> bool {
        self.exe_pseudo && self.executable.starts_with(b"memfd:")
    }

    /// The executable had no name left on its file system when it ran.
    pub fn exe_deleted(&self) -> bool {
        !self.exe_pseudo && self.exe_identity.is_some_and(|i| i.nlink == 0)
    }

    /// How the exec raised privileges above the caller's. With the caller's
    /// credentials: a new effective uid (gid) from a set-user (group) id file,
    /// and permitted capabilities the caller lacked (not counting those a
    /// set-user-id root file brings). Without them, the file mode against the
    /// real ids, and the kernel's secure-exec mark.
    pub fn privileges_raised(&self) -> Privileges {
        let mut p = Privileges::default();
        let Some(exe) = self.exe_identity else {
            return p;
        };
        match self.old_creds {
            Some(old) => {
                if exe.mode & S_ISUID != 0 && self.euid != old.euid {
                    p.insert(Privilege::Setuid);
                }
                if exe.mode & S_ISGID != 0 && self.egid != old.egid {
                    p.insert(Privilege::Setgid);
                }
                let became_root = p.contains(Privilege::Setuid) && self.euid == 0;
                if self.cap_permitted & !old.cap_permitted != 0 && !became_root {
                    p.insert(Privilege::FileCaps);
                }
            }
            None => {
                if exe.mode & S_ISUID != 0 && self.euid != self.uid {
                    p.insert(Privilege::Setuid);
                }
                if exe.mode & S_ISGID != 0 && self.egid != self.gid {
                    p.insert(Privilege::Setgid);
                }
                if self.secureexec && p.is_empty() {
                    p.insert(Privilege::FileCaps);
                }
            }
        }
        p
    }

    /// Pick the `names` variables out of the captured environment, each
    /// value cut at [`ENV_VALUE_MAX`] bytes.
    pub fn select_env(&mut self, names: &[Vec<u8>]) {
        self.env_vars.clear();
        self.env_value_truncated = false;
        if names.is_empty() {
            return;
        }
        for entry in self.env_area.split(|&b| b == 0) {
            let Some(eq) = memchr::memchr(b'=', entry) else {
                continue;
            };
            if !names.iter().any(|n| n.as_slice() == &entry[..eq]) {
                continue;
            }
            let keep = (eq + 1 + ENV_VALUE_MAX).min(entry.len());
            self.env_value_truncated |= keep < entry.len();
            self.env_vars.push(entry[..keep].to_vec());
        }
    }

    pub fn is_exec(&self) -> bool {
        self.action == Action::Exec
    }

    /// ECS `event.action`.
    pub fn action_name(&self) -> &'static str {
        match self.action {
            Action::Exec => "exec",
            Action::Exit => "exit",
        }
    }

    /// ECS `event.type`.
    pub fn event_type(&self) -> &'static [&'static str] {
        match self.action {
            Action::Exit => &["end"],
            _ => &["start"],
        }
    }

    /// Exit: the code the process passed to exit(), or 128 + the signal
    /// that killed it (as a shell reports it).
    pub fn exit_code(&self) -> Option<u32> {
        (self.action == Action::Exit).then(|| match self.exit_signal_number() {
            Some(sig) => 128 + sig,
            None => (self.exit_status >> 8) & 0xff,
        })
    }

    fn exit_signal_number(&self) -> Option<u32> {
        let sig = self.exit_status & 0x7f;
        (self.action == Action::Exit && sig != 0).then_some(sig)
    }

    /// Exit: the signal that killed the process (`SIGKILL`).
    pub fn exit_signal(&self) -> Option<Cow<'static, str>> {
        self.exit_signal_number()
            .map(|n| match nix::sys::signal::Signal::try_from(n as i32) {
                Ok(s) => Cow::Borrowed(s.as_str()),
                Err(_) => Cow::Owned(format!("SIG{n}")),
            })
    }

    /// Bytes this event takes in memory: its own buffers, and the images
    /// of its lineage, which a held event may be the last to own once the
    /// table lets them go (the cgroup cache's share is not counted).
    pub fn held_bytes(&self) -> usize {
        let images = self.lineage.as_ref().map_or(0, |l| {
            let related = [&l.parent, &l.session_leader, &l.group_leader];
            related
                .iter()
                .filter_map(|r| r.as_ref()?.image.as_ref())
                .chain(l.previous.as_ref())
                .map(|i| i.held_bytes())
                .sum::<usize>()
        });
        let buffers = [
            &self.comm,
            &self.caller_comm,
            &self.filename,
            &self.executable,
            &self.cwd,
            &self.script,
            &self.env_area,
            &self.args_bytes,
        ];
        std::mem::size_of::<Self>()
            + buffers.iter().map(|b| b.capacity()).sum::<usize>()
            + self.cgroup_path.as_ref().map_or(0, Vec::capacity)
            + self
                .env_vars
                .iter()
                .map(|v| v.capacity() + std::mem::size_of::<Vec<u8>>())
                .sum::<usize>()
            + self.arg_ends.capacity() * std::mem::size_of::<usize>()
            + images
    }

    /// A short word for people: the errno of a failed exec, how an exit
    /// ended (`exit=3`, `SIGKILL`), nothing for a successful exec.
    pub fn status_label(&self) -> Option<Cow<'static, str>> {
        match self.action {
            Action::Exit => {
                Some(self.exit_signal().unwrap_or_else(|| {
                    Cow::Owned(format!("exit={}", self.exit_code().unwrap_or(0)))
                }))
            }
            _ => self.error_code(),
        }
    }

    /// Exit: a core dump was written.
    pub fn core_dumped(&self) -> bool {
        self.action == Action::Exit && self.exit_status & 0x80 != 0
    }

    /// Exit: nanoseconds the process lived.
    pub fn duration_ns(&self) -> Option<u64> {
        (self.action == Action::Exit).then(|| self.boot_ns.saturating_sub(self.start_ns))
    }

    pub fn entity_id(&self) -> Option<&EntityId> {
        self.lineage.as_ref().map(|l| &l.entity_id)
    }

    pub fn parent_entity_id(&self) -> Option<&EntityId> {
        self.lineage.as_ref()?.parent_entity_id.as_ref()
    }

    pub fn parent(&self) -> Option<&Related> {
        self.lineage.as_ref()?.parent.as_ref()
    }

    pub fn parent_image(&self) -> Option<&Image> {
        self.parent()?.image.as_deref()
    }

    pub fn session_leader(&self) -> Option<&Related> {
        self.lineage.as_ref()?.session_leader.as_ref()
    }

    pub fn group_leader(&self) -> Option<&Related> {
        self.lineage.as_ref()?.group_leader.as_ref()
    }

    pub fn previous_image(&self) -> Option<&Image> {
        self.lineage.as_ref()?.previous.as_deref()
    }

    /// The executable's identity as the hasher checks it.
    pub fn file_identity(&self) -> Option<FileIdentity> {
        let i = self.exe_identity?;
        Some(FileIdentity::from_kernel(
            i.dev, i.ino, i.size, i.mtime, i.ctime,
        ))
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
    fn held_bytes_count_what_a_traced_process_can_make_large() {
        let mut ev = ExecEvent::default();
        let base = ev.held_bytes();
        assert!(base >= std::mem::size_of::<ExecEvent>());
        let arg = vec![b'a'; 10_000];
        ev.set_args([arg.as_slice()]);
        ev.env_vars = vec![vec![b'e'; 5_000]; 3];
        ev.cwd = vec![b'/'; 4_000];
        assert!(ev.held_bytes() >= base + 10_000 + 15_000 + 4_000);
        // A clone, as the hold keeps, weighs as much.
        assert!(ev.clone().held_bytes() >= base + 29_000);
        // The lineage's images too: the held event may be their last owner.
        let before = ev.held_bytes();
        let limits = crate::process_table::Limits::default();
        let image = std::sync::Arc::new(crate::process_table::Image::new(
            &[b'/'; 400],
            [&[b'x'; 500][..]],
            b"sh",
            &limits,
        ));
        let ids = crate::entity_id::EntityIds::new(crate::entity_id::BootId([7; 16]));
        ev.lineage = Some(Lineage {
            entity_id: ids.from_ticks(1, 5),
            parent_entity_id: None,
            parent: None,
            session_leader: None,
            group_leader: None,
            previous: Some(image),
        });
        assert!(
            ev.held_bytes() >= before + 900,
            "{}",
            ev.held_bytes() - before
        );
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
    fn workload_prefers_a_confirmed_container_then_a_claim_then_the_unit() {
        use crate::containers::ContainerInfo;
        let with = |cg: CgroupInfo| ExecEvent {
            cgroup: Some(Arc::new(cg)),
            ..Default::default()
        };
        let system = with(CgroupInfo {
            container_id: Some("abc".into()),
            unit: Some("ignored.service".into()),
            container: Some(Arc::new(ContainerInfo {
                id: Some("abc".into()),
                name: Some("web".into()),
                ..Default::default()
            })),
            ..Default::default()
        });
        assert_eq!(
            system.workload(),
            Some(Workload::Container {
                id: "abc",
                name: Some("web")
            })
        );
        let rootless = with(CgroupInfo {
            unit: Some("user@1000.service".into()),
            container: Some(Arc::new(ContainerInfo {
                id: Some("def".into()),
                rootless_uid: Some(1000),
                name: Some("theirs".into()),
                ..Default::default()
            })),
            ..Default::default()
        });
        assert_eq!(
            rootless.workload(),
            Some(Workload::UnconfirmedContainer("def"))
        );
        let unit = with(CgroupInfo {
            unit: Some("cron.service".into()),
            ..Default::default()
        });
        assert_eq!(unit.workload(), Some(Workload::Unit("cron.service")));
        assert_eq!(ExecEvent::default().workload(), None);
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
