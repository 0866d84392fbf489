//! Hand-over of the BPF objects from one daemon to the next, so that a
//! restart or an upgrade leaves no window (docs/design.md, "Restart and
//! upgrade").
//!
//! The objects live on, by name, in systemd's file descriptor store or in a
//! bpffs directory. The only attached programs are dispatchers that run the
//! implementation in slot 0 of their program array: a new daemon puts its
//! own implementation there with one map update, so every exec runs exactly
//! one of the two, and the attachment itself never changes hands.

use std::collections::{BTreeMap, BTreeSet};
use std::ffi::CString;
use std::fs;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use libbpf_rs::{
    Link, MapCore, MapFlags, MapHandle, MapInfo, MapMut, MapType, OpenMapMut, OpenProgramMut,
    ProgramMut,
};
use nix::fcntl::{Flock, FlockArg};
use tracing::{info, warn};

use crate::bpf_loader::skel::{ExecveSkel, OpenExecveSkel};
use crate::bpf_loader::{types, BpfLoader};
use crate::counters::{Counter, Counts};
use crate::layout::{Layout, Translation};

/// Layout of the kept maps this build reads and writes (`EVENT_LAYOUT_VERSION`).
pub const LAYOUT_VERSION: u32 = types::event_layout::EVENT_LAYOUT_VERSION.0;

// Names of the kept objects: fd names in systemd's store, files in the pin
// directory. Hook arrays and links are named by `Hook`.
const EVENTS: &str = "events";
/// Each CPU's ring buffer is kept too, as `ring_<cpu>` (bpffs refuses dots
/// in names): a daemon limited to CAP_BPF cannot open a map by id
/// (BPF_MAP_GET_FD_BY_ID wants CAP_SYS_ADMIN), so the map of rings alone
/// would not give them back.
const RING_PREFIX: &str = "ring_";
const STATS: &str = "stats";
const SEQ: &str = "seq";
const META: &str = "meta";
const PROGRESS: &str = "progress";
const CALLER_COMMS: &str = "caller_comms";
const LAYOUT: &str = "layout";

/// bpffs, as statfs reports it.
const BPF_FS_MAGIC: i64 = 0xcafe_4a11;

/// Why the objects could not be kept or taken over.
#[derive(Debug, thiserror::Error)]
pub enum HandoverError {
    #[error(
        "--bpf-pin-dir {path}: not on a BPF filesystem (bpffs); give a directory under \
         /sys/fs/bpf, or mount one with `mount -t bpf bpf /sys/fs/bpf`"
    )]
    NotBpffs { path: String },
    #[error(
        "--bpf-pin-dir {path}: no bpffs at /sys/fs/bpf and mounting one failed ({err}); \
         mount it on the host with `mount -t bpf bpf /sys/fs/bpf`"
    )]
    Mount { path: String, err: nix::Error },
    #[error(
        "--bpf-pin-dir {path}: the root of a bpffs mount; give a directory of execwatch's \
         own below it, such as {path}/execwatch"
    )]
    MountRoot { path: String },
    #[error("--bpf-pin-dir {path}: {err}")]
    Io { path: String, err: io::Error },
    #[error(
        "--bpf-pin-dir {path}: an execwatch daemon is running with this directory; stop it \
         first (its programs stay attached while it runs)"
    )]
    Busy { path: String },
    #[error("{what} failed")]
    Libbpf {
        what: &'static str,
        #[source]
        source: libbpf_rs::Error,
    },
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> HandoverError + '_ {
    move |err| HandoverError::Io {
        path: path.display().to_string(),
        err,
    }
}

fn libbpf_err(what: &'static str) -> impl FnOnce(libbpf_rs::Error) -> HandoverError {
    move |source| HandoverError::Libbpf { what, source }
}

/// Where this daemon keeps its objects for the next one.
#[derive(Debug)]
pub enum Keep {
    /// Nowhere: a stop detaches everything (a plain run).
    Nothing,
    /// systemd's file descriptor store (a service: NOTIFY_SOCKET is set).
    FdStore,
    /// Pinned in a bpffs directory (`--bpf-pin-dir`).
    PinDir(PinDir),
}

impl Keep {
    /// `--bpf-pin-dir` when given, else systemd's fd store when the unit
    /// has one, else nothing.
    pub fn choose(pin_dir: Option<&Path>) -> Result<Keep, HandoverError> {
        if let Some(dir) = pin_dir {
            return Ok(Keep::PinDir(PinDir::open(dir)?));
        }
        if std::env::var_os("NOTIFY_SOCKET").is_some() && fd_store_size() > 0 {
            return Ok(Keep::FdStore);
        }
        Ok(Keep::Nothing)
    }

    fn keeps(&self) -> bool {
        !matches!(self, Keep::Nothing)
    }
}

/// `$FDSTORE`: the unit's FileDescriptorStoreMax=, which systemd 254 and
/// later put there; the shipped unit sets it too, for older ones. Without
/// it systemd refuses FDSTORE=1, and NOTIFY_SOCKET alone does not say.
fn fd_store_size() -> u32 {
    std::env::var("FDSTORE")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// A pin directory, locked while this daemon uses it: a second daemon
/// waits for the first to exit, and `detach` refuses to run under one.
#[derive(Debug)]
pub struct PinDir {
    path: PathBuf,
    _lock: Flock<fs::File>,
}

// f_type's width differs between architectures.
#[allow(clippy::unnecessary_cast)]
fn is_bpffs(path: &Path) -> bool {
    nix::sys::statfs::statfs(path).is_ok_and(|s| s.filesystem_type().0 as i64 == BPF_FS_MAGIC)
}

/// The directory's filesystem is bpffs; mounts one at /sys/fs/bpf when the
/// directory is below it and nothing is mounted there (and says so).
fn ensure_bpffs(path: &Path) -> Result<(), HandoverError> {
    let mut existing = path;
    while !existing.exists() {
        existing = existing.parent().unwrap_or(Path::new("/"));
    }
    if is_bpffs(existing) {
        return Ok(());
    }
    let root = Path::new("/sys/fs/bpf");
    if path.starts_with(root) && root.starts_with(existing) || existing == root {
        nix::mount::mount(
            Some("bpf"),
            root,
            Some("bpf"),
            nix::mount::MsFlags::empty(),
            None::<&str>,
        )
        .map_err(|err| HandoverError::Mount {
            path: path.display().to_string(),
            err,
        })?;
        info!("mounted bpffs at /sys/fs/bpf: nothing was mounted there");
        return Ok(());
    }
    Err(HandoverError::NotBpffs {
        path: path.display().to_string(),
    })
}

/// A bpffs mount's root also holds bpffs's own files: not a pin directory.
fn refuse_mount_root(path: &Path) -> Result<(), HandoverError> {
    if is_bpffs(path) && !path.parent().is_some_and(is_bpffs) {
        return Err(HandoverError::MountRoot {
            path: path.display().to_string(),
        });
    }
    Ok(())
}

impl PinDir {
    /// Create (on bpffs) and lock the directory; waits for a daemon that
    /// still holds it.
    pub fn open(path: &Path) -> Result<PinDir, HandoverError> {
        ensure_bpffs(path)?;
        refuse_mount_root(path)?;
        fs::create_dir_all(path).map_err(io_err(path))?;
        let dir = fs::File::open(path).map_err(io_err(path))?;
        let lock = match Flock::lock(dir, FlockArg::LockExclusiveNonblock) {
            Ok(lock) => lock,
            Err((dir, nix::errno::Errno::EWOULDBLOCK)) => {
                info!(dir = %path.display(), "waiting for the execwatch daemon using the pin directory to exit");
                Flock::lock(dir, FlockArg::LockExclusive)
                    .map_err(|(_, e)| io_err(path)(e.into()))?
            }
            Err((_, e)) => return Err(io_err(path)(e.into())),
        };
        Ok(PinDir {
            path: path.to_path_buf(),
            _lock: lock,
        })
    }

    /// Every object pinned in the directory, by file name.
    fn open_pinned(&self) -> Result<Vec<(String, OwnedFd)>, HandoverError> {
        let mut found = Vec::new();
        for entry in fs::read_dir(&self.path).map_err(io_err(&self.path))? {
            let entry = entry.map_err(io_err(&self.path))?;
            let Ok(name) = entry.file_name().into_string() else {
                warn!(file = ?entry.file_name(), "pin directory: a name that is not UTF-8, skipped");
                continue;
            };
            let path = entry.path();
            // A map, or else a link; each keeps its own fd, so take a copy.
            let fd = match MapHandle::from_pinned_path(&path) {
                Ok(map) => map.as_fd().try_clone_to_owned(),
                Err(_) => match Link::open(&path) {
                    Ok(link) => link.as_fd().try_clone_to_owned(),
                    Err(e) => {
                        warn!(file = %path.display(), error = %e, "pin directory: not a BPF map or link, skipped");
                        continue;
                    }
                },
            };
            found.push((name, fd.map_err(io_err(&path))?));
        }
        Ok(found)
    }
}

/// Start of the fds systemd passes (SD_LISTEN_FDS_START).
const LISTEN_FDS_START: i32 = 3;

/// The fds systemd passed back from the store (`LISTEN_FDS`,
/// `LISTEN_FDNAMES`), when they are for this process (`LISTEN_PID`).
fn listen_fds() -> Vec<(String, OwnedFd)> {
    let pid = std::env::var("LISTEN_PID").ok();
    let count = std::env::var("LISTEN_FDS").ok();
    let names = std::env::var("LISTEN_FDNAMES").unwrap_or_default();
    for var in ["LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES"] {
        std::env::remove_var(var); // not for any child
    }
    if pid.and_then(|p| p.parse::<u32>().ok()) != Some(std::process::id()) {
        return Vec::new();
    }
    let count = count.and_then(|n| n.parse::<i32>().ok()).unwrap_or(0);
    let names: Vec<&str> = names.split(':').collect();
    let mut fds = Vec::new();
    for i in 0..count.clamp(0, 1024) {
        let raw = LISTEN_FDS_START + i;
        // SAFETY: fcntl on a number only asks whether it is open. systemd
        // passed fds 3..3+LISTEN_FDS to this very process (LISTEN_PID), and
        // nothing in it owns them before this, the one place that takes them.
        let fd = unsafe {
            if libc::fcntl(raw, libc::F_SETFD, libc::FD_CLOEXEC) < 0 {
                warn!(fd = raw, "LISTEN_FDS names an fd that is not open, skipped");
                continue;
            }
            OwnedFd::from_raw_fd(raw)
        };
        let name = names.get(i as usize).copied().unwrap_or("unknown");
        fds.push((name.to_string(), fd));
    }
    fds
}

/// The kept `meta` map's value (`struct handover_meta`): the daemon side
/// of the counters as the daemons before this one left them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Meta {
    pub layout_version: u32,
    /// `HANDOVER_CLEAN_EXIT` when the daemon that wrote it exited cleanly.
    pub flags: u32,
    /// Records decoded and written by all daemons on these maps.
    pub delivered: u64,
    /// Records rejected by all daemons on these maps.
    pub decode_errors: u64,
    /// Loss counters as the last daemon reported them.
    pub lost_ringbuf_full_reported: u64,
    pub lost_no_scratch_reported: u64,
    /// The daemons' own loss counters, all daemons on these maps.
    pub lost_output: u64,
    pub lost_shutdown: u64,
    pub lost_upgrade: u64,
    pub seen_upgrade: u64,
    /// Taken by daemons that died before counting them (not in `struct
    /// handover_meta`: kept in the `progress` map, crate::progress).
    pub lost_crash: u64,
}

const META_LEN: usize = std::mem::size_of::<types::handover_meta>();
const CLEAN_EXIT: u32 = types::handover_flag::HANDOVER_CLEAN_EXIT.0;

impl Meta {
    /// The u64 fields with their offsets in `struct handover_meta`.
    fn u64_fields(&mut self) -> [(usize, &mut u64); 8] {
        use std::mem::offset_of;
        use types::handover_meta as M;
        [
            (offset_of!(M, delivered), &mut self.delivered),
            (offset_of!(M, decode_errors), &mut self.decode_errors),
            (
                offset_of!(M, lost_ringbuf_full_reported),
                &mut self.lost_ringbuf_full_reported,
            ),
            (
                offset_of!(M, lost_no_scratch_reported),
                &mut self.lost_no_scratch_reported,
            ),
            (offset_of!(M, lost_output), &mut self.lost_output),
            (offset_of!(M, lost_shutdown), &mut self.lost_shutdown),
            (offset_of!(M, lost_upgrade), &mut self.lost_upgrade),
            (offset_of!(M, seen_upgrade), &mut self.seen_upgrade),
        ]
    }

    fn from_bytes(b: &[u8]) -> Option<Meta> {
        use std::mem::offset_of;
        use types::handover_meta as M;
        if b.len() < META_LEN {
            return None;
        }
        let u32_at = |off: usize| u32::from_ne_bytes(b[off..off + 4].try_into().expect("4 bytes"));
        let mut m = Meta {
            layout_version: u32_at(offset_of!(M, layout_version)),
            flags: u32_at(offset_of!(M, flags)),
            ..Meta::default()
        };
        for (off, v) in m.u64_fields() {
            *v = u64::from_ne_bytes(b[off..off + 8].try_into().expect("8 bytes"));
        }
        Some(m)
    }

    fn to_bytes(mut self) -> [u8; META_LEN] {
        use std::mem::offset_of;
        use types::handover_meta as M;
        let mut b = [0u8; META_LEN];
        let at = offset_of!(M, layout_version);
        b[at..at + 4].copy_from_slice(&self.layout_version.to_ne_bytes());
        let at = offset_of!(M, flags);
        b[at..at + 4].copy_from_slice(&self.flags.to_ne_bytes());
        for (off, v) in self.u64_fields() {
            b[off..off + 8].copy_from_slice(&v.to_ne_bytes());
        }
        b
    }

    /// The daemon-side counters the earlier daemons left: this daemon's
    /// counts start from them (`*_before` for what they delivered).
    pub fn carried_counts(&self) -> Counts {
        let mut c = Counts::default();
        c.set(Counter::events_before, self.delivered);
        c.set(Counter::decode_errors_before, self.decode_errors);
        c.set(Counter::lost_output, self.lost_output);
        c.set(Counter::lost_shutdown, self.lost_shutdown);
        c.set(Counter::lost_upgrade, self.lost_upgrade);
        c.set(Counter::seen_upgrade, self.seen_upgrade);
        c.set(Counter::lost_crash, self.lost_crash);
        c
    }

    /// The counters as far as earlier daemons reported them: the start of
    /// this daemon's loss reports.
    pub fn reported_counts(&self) -> Counts {
        let mut c = self.carried_counts();
        c.set(Counter::lost_ringbuf_full, self.lost_ringbuf_full_reported);
        c.set(Counter::lost_no_scratch, self.lost_no_scratch_reported);
        c
    }

    /// Records the earlier daemons took from the kept ring buffer: all they
    /// took from any buffer, less those of another layout's buffer
    /// (`seen_upgrade`: delivered translated, or lost with reason upgrade).
    pub fn consumed(&self) -> u64 {
        (self.delivered
            + self.decode_errors
            + self.lost_output
            + self.lost_shutdown
            + self.lost_crash)
            .saturating_sub(self.seen_upgrade.saturating_sub(self.lost_upgrade))
    }

    /// All daemons' counts as of `counts` (this daemon's, which start from
    /// the carried ones).
    pub fn of_counts(counts: &Counts, clean_exit: bool) -> Meta {
        Meta {
            layout_version: LAYOUT_VERSION,
            flags: if clean_exit { CLEAN_EXIT } else { 0 },
            delivered: counts.get(Counter::events_before) + counts.delivered(),
            decode_errors: counts.get(Counter::decode_errors_before)
                + counts.get(Counter::decode_errors),
            lost_ringbuf_full_reported: counts.get(Counter::lost_ringbuf_full),
            lost_no_scratch_reported: counts.get(Counter::lost_no_scratch),
            lost_output: counts.get(Counter::lost_output),
            lost_shutdown: counts.get(Counter::lost_shutdown),
            lost_upgrade: counts.get(Counter::lost_upgrade),
            seen_upgrade: counts.get(Counter::seen_upgrade),
            lost_crash: counts.get(Counter::lost_crash),
        }
    }

    /// The daemon that wrote it exited and saved its final counts.
    pub fn clean_exit(&self) -> bool {
        self.flags & CLEAN_EXIT != 0
    }
}

/// Entry 0 of a kept array map whose value is `value.len()` bytes.
fn read_entry0(fd: BorrowedFd<'_>, value: &mut [u8]) -> bool {
    read_entry(fd, 0, value)
}

/// Entry `key` of a kept map whose key is a u32 and value `value.len()` bytes.
fn read_entry(fd: BorrowedFd<'_>, key: u32, value: &mut [u8]) -> bool {
    // SAFETY: the caller checked that the map's key is 4 bytes and its value
    // value.len() bytes, so the kernel reads and writes inside these buffers.
    let ret = unsafe {
        libbpf_rs::libbpf_sys::bpf_map_lookup_elem(
            fd.as_raw_fd(),
            (&key as *const u32).cast(),
            value.as_mut_ptr().cast(),
        )
    };
    ret == 0
}

/// The meta value of a kept map of the right shape.
fn read_meta(fd: BorrowedFd<'_>) -> Option<Meta> {
    let mut value = [0u8; META_LEN];
    read_entry0(fd, &mut value)
        .then(|| Meta::from_bytes(&value))
        .flatten()
}

/// One attach point: a dispatcher, its program array, the implementation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Hook {
    Rename,
    Exec,
    SysExit,
    FailedExecve,
    FailedExecveat,
    Exit,
}

const HOOKS: [Hook; 6] = [
    Hook::Rename,
    Hook::Exec,
    Hook::SysExit,
    Hook::FailedExecve,
    Hook::FailedExecveat,
    Hook::Exit,
];

impl Hook {
    fn tracepoint(self) -> &'static str {
        match self {
            Hook::Rename => "task_rename",
            Hook::Exec => "sched_process_exec",
            Hook::SysExit => "sys_exit",
            Hook::FailedExecve => "sys_exit_execve",
            Hook::FailedExecveat => "sys_exit_execveat",
            Hook::Exit => "sched_process_exit",
        }
    }

    fn array_name(self) -> &'static str {
        match self {
            Hook::Rename => "hook_rename",
            Hook::Exec => "hook_exec",
            Hook::SysExit => "hook_sysexit",
            Hook::FailedExecve => "hook_fexecve",
            Hook::FailedExecveat => "hook_fexecat",
            Hook::Exit => "hook_exit",
        }
    }

    fn link_name(self) -> &'static str {
        match self {
            Hook::Rename => "link_rename",
            Hook::Exec => "link_exec",
            Hook::SysExit => "link_sysexit",
            Hook::FailedExecve => "link_fexecve",
            Hook::FailedExecveat => "link_fexecat",
            Hook::Exit => "link_exit",
        }
    }
}

struct OpenHook<'a, 'obj> {
    array: &'a mut OpenMapMut<'obj>,
    dispatcher: &'a mut OpenProgramMut<'obj>,
    imp: &'a mut OpenProgramMut<'obj>,
}

fn open_hook<'a, 'obj>(open: &'a mut OpenExecveSkel<'obj>, hook: Hook) -> OpenHook<'a, 'obj> {
    let (m, p) = (&mut open.maps, &mut open.progs);
    match hook {
        Hook::Rename => OpenHook {
            array: &mut m.hook_rename,
            dispatcher: &mut p.dispatch_rename,
            imp: &mut p.save_caller,
        },
        Hook::Exec => OpenHook {
            array: &mut m.hook_exec,
            dispatcher: &mut p.dispatch_exec,
            imp: &mut p.exec_success,
        },
        Hook::SysExit => OpenHook {
            array: &mut m.hook_sysexit,
            dispatcher: &mut p.dispatch_sysexit,
            imp: &mut p.exec_failed_sys_exit,
        },
        Hook::FailedExecve => OpenHook {
            array: &mut m.hook_fexecve,
            dispatcher: &mut p.dispatch_fexecve,
            imp: &mut p.exec_failed_execve,
        },
        Hook::FailedExecveat => OpenHook {
            array: &mut m.hook_fexecat,
            dispatcher: &mut p.dispatch_fexecat,
            imp: &mut p.exec_failed_execveat,
        },
        Hook::Exit => OpenHook {
            array: &mut m.hook_exit,
            dispatcher: &mut p.dispatch_exit,
            imp: &mut p.process_exit,
        },
    }
}

struct LoadedHook<'a, 'obj> {
    array: &'a MapMut<'obj>,
    dispatcher: &'a ProgramMut<'obj>,
    imp: &'a ProgramMut<'obj>,
}

fn loaded_hook<'a, 'obj>(skel: &'a ExecveSkel<'obj>, hook: Hook) -> LoadedHook<'a, 'obj> {
    let (m, p) = (&skel.maps, &skel.progs);
    let (array, dispatcher, imp) = match hook {
        Hook::Rename => (&m.hook_rename, &p.dispatch_rename, &p.save_caller),
        Hook::Exec => (&m.hook_exec, &p.dispatch_exec, &p.exec_success),
        Hook::SysExit => (
            &m.hook_sysexit,
            &p.dispatch_sysexit,
            &p.exec_failed_sys_exit,
        ),
        Hook::FailedExecve => (&m.hook_fexecve, &p.dispatch_fexecve, &p.exec_failed_execve),
        Hook::FailedExecveat => (
            &m.hook_fexecat,
            &p.dispatch_fexecat,
            &p.exec_failed_execveat,
        ),
        Hook::Exit => (&m.hook_exit, &p.dispatch_exit, &p.process_exit),
    };
    LoadedHook {
        array,
        dispatcher,
        imp,
    }
}

/// A map's name, type and sizes: what must match for a takeover. (libbpf
/// renames a reused map after the kernel's name, and the skeleton then
/// finds its maps by name.)
#[derive(Debug, Clone, PartialEq, Eq)]
struct Shape {
    name: String,
    ty: MapType,
    key: u32,
    value: u32,
    max_entries: u32,
}

impl Shape {
    fn of_open(map: &OpenMapMut<'_>) -> Shape {
        // The kernel keeps BPF_OBJ_NAME_LEN - 1 bytes of a name.
        let name = map.name().as_bytes();
        Shape {
            name: String::from_utf8_lossy(&name[..name.len().min(15)]).into_owned(),
            ty: map.map_type(),
            key: map.key_size(),
            value: map.value_size(),
            max_entries: map.max_entries(),
        }
    }

    fn of_fd(fd: BorrowedFd<'_>) -> Option<Shape> {
        let map = MapInfo::new(fd).ok()?;
        let name = map.name().unwrap_or_default().to_string();
        let info = map.info;
        Some(Shape {
            name,
            ty: MapType::from(info.type_),
            key: info.key_size,
            value: info.value_size,
            max_entries: info.max_entries,
        })
    }
}

/// One field of /proc/self/fdinfo/FD (`link_type`, `prog_tag`, ...).
fn fdinfo(fd: BorrowedFd<'_>, key: &str) -> Option<String> {
    let text = fs::read_to_string(format!("/proc/self/fdinfo/{}", fd.as_raw_fd())).ok()?;
    text.lines().find_map(|l| {
        let (k, v) = l.split_once(':')?;
        (k == key).then(|| v.trim().to_string())
    })
}

/// The kept link runs the same program as `dispatcher` (same instructions).
fn runs_same_program(link: BorrowedFd<'_>, dispatcher: &ProgramMut<'_>) -> bool {
    let theirs = fdinfo(link, "prog_tag");
    theirs.is_some() && theirs == fdinfo(dispatcher.as_fd(), "prog_tag")
}

/// The previous daemon's ring buffer, when this daemon does not continue it.
#[derive(Debug, Clone)]
pub struct PrevEvents {
    /// Its layout, when the previous daemon's meta map said.
    pub layout_version: Option<u32>,
    /// The previous ring buffer's kernel id.
    pub events_map_id: Option<u32>,
    /// This build can decode its records (same layout, other size).
    pub decodable: bool,
    /// Its record layout, when the previous daemon published it (the
    /// `layout` map), or why not.
    pub layout: Result<Layout, String>,
}

/// Objects found from a previous daemon, sorted into what the skeleton
/// reuses and what goes once this daemon's programs are attached.
struct Found {
    objects: BTreeMap<String, OwnedFd>,
    /// Names given up: removed from the store or unpinned after attach.
    release: BTreeSet<String>,
    reused: BTreeSet<&'static str>,
}

impl Found {
    /// Reuse `name` in `map` when `compatible` and of `map`'s shape;
    /// otherwise give it up.
    fn take_over(
        &mut self,
        name: &'static str,
        map: &mut OpenMapMut<'_>,
        compatible: bool,
    ) -> Result<bool, HandoverError> {
        let Some(fd) = self.objects.remove(name) else {
            return Ok(false);
        };
        let shape = Shape::of_fd(fd.as_fd());
        if compatible && shape.as_ref() == Some(&Shape::of_open(map)) {
            map.reuse_fd(fd.as_fd())
                .map_err(libbpf_err("reusing a kept map"))?;
            self.reused.insert(name);
            return Ok(true);
        }
        info!(object = name, kept = ?shape, this_build = ?Shape::of_open(map), "not taking over a kept map of another layout or size");
        self.release.insert(name.to_string());
        Ok(false)
    }
}

/// Decided before load: which kept maps the skeleton reuses, which kept
/// dispatchers stay attached.
pub(crate) struct Plan {
    keep: Keep,
    wanted: BTreeSet<Hook>,
    kept_links: BTreeMap<Hook, OwnedFd>,
    release: BTreeSet<String>,
    reused: BTreeSet<&'static str>,
    prev_events: Option<PrevEvents>,
    /// The previous daemon's rings (or its one ring), to read first.
    prev_rings: Vec<OwnedFd>,
    /// The kept rings, by CPU, when the kept map of them is continued.
    continued_rings: Vec<OwnedFd>,
    carried: Option<Meta>,
    found_any: bool,
}

/// Before load: find what a previous daemon kept, check it against this
/// build and configuration, and make the skeleton reuse what fits.
/// Dispatchers and implementations are attached by [`Plan::attach`].
pub(crate) fn prepare(
    open: &mut OpenExecveSkel<'_>,
    keep: Keep,
    ring_bytes: u32,
) -> Result<Plan, HandoverError> {
    let found_list = match &keep {
        Keep::Nothing => Vec::new(),
        Keep::FdStore => listen_fds(),
        Keep::PinDir(dir) => dir.open_pinned()?,
    };
    let mut found = Found {
        objects: BTreeMap::new(),
        release: BTreeSet::new(),
        reused: BTreeSet::new(),
    };
    for (name, fd) in found_list {
        match found.objects.entry(name) {
            // A duplicate: the first one counts.
            std::collections::btree_map::Entry::Occupied(e) => {
                found.release.insert(e.key().clone());
            }
            std::collections::btree_map::Entry::Vacant(e) => {
                e.insert(fd);
            }
        }
    }
    let found_any = !found.objects.is_empty();

    // The kept meta map tells the layout of everything kept with it.
    let meta_shape = Shape::of_open(&open.maps.meta);
    let kept_meta = found
        .objects
        .get(META)
        .filter(|fd| {
            Shape::of_fd(fd.as_fd()).as_ref() == Some(&meta_shape)
                && META_LEN == meta_shape.value as usize
        })
        .and_then(|fd| read_meta(fd.as_fd()));
    let kept_layout = kept_meta.map(|m| m.layout_version);
    // The counters and the meta map go together: the summary adds up only
    // with both (crate::counters), so a missing or odd `stats` counts as
    // another layout.
    let stats_fit = found
        .objects
        .get(STATS)
        .is_some_and(|fd| Shape::of_fd(fd.as_fd()) == Some(Shape::of_open(&open.maps.stats)));
    let same_layout = kept_layout == Some(LAYOUT_VERSION) && stats_fit;
    if found_any && !same_layout {
        info!(
            kept_layout = ?kept_layout,
            layout = LAYOUT_VERSION,
            "the previous execwatch used another record layout: its ring buffer and counters are not taken over, only its sequence and attachments"
        );
    }

    // The sequence has one shape in every layout: always carried on.
    found.take_over(SEQ, &mut open.maps.seq, true)?;
    let carried = if found.take_over(META, &mut open.maps.meta, same_layout)? {
        kept_meta
    } else {
        None
    };
    found.take_over(STATS, &mut open.maps.stats, same_layout)?;
    found.take_over(CALLER_COMMS, &mut open.maps.caller_comms, same_layout)?;

    // Each daemon publishes its own layout: the kept one is read and let go.
    let kept_record_layout = match found.objects.remove(LAYOUT) {
        None => Err("it published none (a build from before the layout map)".to_string()),
        Some(fd) => {
            found.release.insert(LAYOUT.to_string());
            let mut value = vec![0u8; crate::layout::DESC_LEN];
            if Shape::of_fd(fd.as_fd()) != Some(Shape::of_open(&open.maps.layout))
                || crate::layout::DESC_LEN != open.maps.layout.value_size() as usize
            {
                Err("its layout map has another shape".to_string())
            } else if !read_entry0(fd.as_fd(), &mut value) {
                Err("its layout map could not be read".to_string())
            } else {
                Layout::from_bytes(&value).map_err(|e| e.to_string())
            }
        }
    };

    // The kept rings, by CPU: ring_0, ring_1, ...
    let mut kept_rings = BTreeMap::new();
    let ring_names: Vec<String> = found
        .objects
        .keys()
        .filter(|n| n.starts_with(RING_PREFIX))
        .cloned()
        .collect();
    for name in ring_names {
        let fd = found.objects.remove(&name).expect("listed");
        if let Ok(cpu) = name[RING_PREFIX.len()..].parse::<u32>() {
            kept_rings.insert(cpu, fd);
        }
        // Given up whatever becomes of them: this daemon keeps its own set.
        found.release.insert(name);
    }
    let kept_rings: Vec<OwnedFd> = if kept_rings.keys().copied().eq(0..kept_rings.len() as u32) {
        kept_rings.into_values().collect()
    } else {
        Vec::new()
    };

    let mut prev_events = None;
    let mut prev_rings = Vec::new();
    let mut continued_rings = Vec::new();
    if let Some(fd) = found.objects.get(EVENTS) {
        let shape = Shape::of_fd(fd.as_fd());
        let ours = Shape::of_open(&open.maps.events);
        let sizes = kept_ring_sizes(fd.as_fd(), &kept_rings);
        // The same map of rings, each of this daemon's size.
        let continues = same_layout
            && shape.as_ref() == Some(&ours)
            && sizes
                .as_ref()
                .is_some_and(|sizes| sizes.iter().all(|&s| s == ring_bytes));
        // A map of rings of another size or layout, or the one ring of a
        // build from before the rings per CPU: read first.
        if !continues
            && shape.as_ref().is_some_and(|s| {
                s.name == ours.name
                    && (s.ty == MapType::RingBuf
                        || (s.ty == MapType::ArrayOfMaps && sizes.is_some()))
            })
        {
            // Drained (decoded or counted) once this daemon's programs run.
            prev_events = Some(PrevEvents {
                layout_version: kept_layout,
                events_map_id: MapInfo::new(fd.as_fd()).ok().map(|m| m.info.id),
                decodable: same_layout,
                layout: kept_record_layout,
            });
            prev_rings = if shape.as_ref().is_some_and(|s| s.ty == MapType::RingBuf) {
                vec![fd.try_clone().map_err(|err| HandoverError::Io {
                    path: EVENTS.into(),
                    err,
                })?]
            } else {
                kept_rings
            };
        } else if continues {
            continued_rings = kept_rings;
        } else {
            warn!(kept = ?shape, "the previous ring buffer cannot be read by this build: what it still holds is lost (reason upgrade), shown by the gap in sequence numbers");
        }
        found.take_over(EVENTS, &mut open.maps.events, continues)?;
    }
    // With the counters: its `lost_crash` is theirs. Its ring positions are
    // used only when the rings are continued.
    found.take_over(PROGRESS, &mut open.maps.progress, same_layout)?;

    let mut wanted = BTreeSet::new();
    let mut kept_links = BTreeMap::new();
    for hook in HOOKS {
        let h = open_hook(open, hook);
        let wants = h.imp.autoload();
        // Only dispatchers are attached, and by hand (Plan::attach).
        h.dispatcher.set_autoload(wants);
        h.dispatcher.set_autoattach(false);
        h.imp.set_autoattach(false);
        if wants {
            wanted.insert(hook);
        }
        let array = found.objects.remove(hook.array_name());
        let link = found.objects.remove(hook.link_name());
        let paired = matches!((&array, &link), (Some(a), Some(l))
            if Shape::of_fd(a.as_fd()).as_ref() == Some(&Shape::of_open(h.array))
                && fdinfo(l.as_fd(), "link_type").is_some());
        match (array, link) {
            (Some(array), Some(link)) if paired => {
                if wants {
                    h.array
                        .reuse_fd(array.as_fd())
                        .map_err(libbpf_err("reusing a kept program array"))?;
                    found.reused.insert(hook.array_name());
                } else {
                    found.release.insert(hook.array_name().to_string());
                }
                kept_links.insert(hook, link);
            }
            (array, link) => {
                if array.is_some() {
                    found.release.insert(hook.array_name().to_string());
                }
                if let Some(link) = link {
                    // Not ours to swap: detached once ours is attached.
                    found.release.insert(hook.link_name().to_string());
                    kept_links.insert(hook, link);
                }
            }
        }
    }
    for name in std::mem::take(&mut found.objects).into_keys() {
        info!(object = %name, "a kept object this build does not know: released once attached");
        found.release.insert(name);
    }
    Ok(Plan {
        keep,
        wanted,
        kept_links,
        release: found.release,
        reused: found.reused,
        prev_events,
        prev_rings,
        continued_rings,
        carried,
        found_any,
    })
}

impl Plan {
    /// The kept rings, by CPU, when the skeleton reuses the kept map of
    /// them (with what the previous daemon left in them); else None.
    pub(crate) fn take_continued_rings(&mut self) -> Option<Vec<OwnedFd>> {
        self.reused
            .contains(EVENTS)
            .then(|| std::mem::take(&mut self.continued_rings))
    }
}

/// The sizes of the kept rings, when they are exactly the rings in the
/// kept map of ring buffers `map`, by CPU (its values are their ids).
fn kept_ring_sizes(map: BorrowedFd<'_>, rings: &[OwnedFd]) -> Option<Vec<u32>> {
    let info = MapInfo::new(map).ok()?.info;
    if MapType::from(info.type_) != MapType::ArrayOfMaps
        || info.key_size != 4
        || info.value_size != 4
        || rings.len() != info.max_entries as usize
    {
        return None;
    }
    rings
        .iter()
        .enumerate()
        .map(|(cpu, ring)| {
            // Key and value are 4 bytes (checked above).
            let mut id = [0u8; 4];
            let found = read_entry(map, cpu as u32, &mut id);
            let r = MapInfo::new(ring.as_fd()).ok()?.info;
            (found && r.id == u32::from_ne_bytes(id) && MapType::from(r.type_) == MapType::RingBuf)
                .then_some(r.max_entries)
        })
        .collect()
}

/// A dispatcher's attachment: this daemon's link, or one kept from before.
enum Attachment {
    Ours(Link),
    Kept(OwnedFd),
}

impl Attachment {
    fn fd(&self) -> BorrowedFd<'_> {
        match self {
            Attachment::Ours(link) => link.as_fd(),
            Attachment::Kept(fd) => fd.as_fd(),
        }
    }
}

/// What this daemon took over and keeps; owned by the loader.
pub struct Handover {
    keep: Keep,
    links: BTreeMap<Hook, Attachment>,
    /// The previous daemon's ring buffer, to drain before anything else.
    pub prev_events: Option<PrevEvents>,
    /// Its rings (or its one ring), until drained.
    prev_rings: std::sync::Mutex<Vec<OwnedFd>>,
    /// The ring buffer was taken over: it holds records from before this start.
    pub continues_events: bool,
    /// What the daemons before this one delivered and reported (zero when
    /// the counters start here).
    pub carried: Meta,
    /// The daemon before this one on these counters died without saving its
    /// final counts: this run's summary cannot add up exactly.
    pub predecessor_unclean: bool,
    attached_at: Instant,
    /// The next sequence number once this daemon's implementations were in.
    seq_at_swap: u64,
    /// This build's record layout, as published in the `layout` map.
    own_layout: Option<Layout>,
}

/// Write this build's record layout into the `layout` map, for a later
/// daemon of another layout to translate what this one leaves. Without it
/// (a bug: the unit tests build it) that daemon counts them as lost.
fn publish_layout(skel: &ExecveSkel<'_>) -> Option<Layout> {
    use libbpf_rs::skel::Skel;
    let layout = skel
        .object()
        .btf()
        .map_err(|e| e.to_string())
        .and_then(|btf| btf.ok_or_else(|| "no BTF".to_string()))
        .and_then(|btf| Layout::from_btf(&btf).map_err(|e| e.to_string()));
    let mut layout = match layout {
        Ok(l) => l,
        Err(e) => {
            warn!(error = %e, "could not describe this build's record layout: an upgrade from it will count what it leaves as lost");
            return None;
        }
    };
    // Binds the description to this ring buffer: a stale one left beside
    // another buffer is never applied to its records.
    layout.events_map_id = MapInfo::new(skel.maps.events.as_fd())
        .map(|m| m.info.id)
        .unwrap_or(0);
    if let Err(e) = skel
        .maps
        .layout
        .update(&0u32.to_ne_bytes(), &layout.to_bytes(), MapFlags::ANY)
    {
        warn!(error = %e, "could not publish this build's record layout: an upgrade from it will count what it leaves as lost");
    }
    Some(layout)
}

/// Pin `fd` at `path` (bpf_obj_pin).
fn pin_fd(fd: BorrowedFd<'_>, path: &Path) -> Result<(), HandoverError> {
    let c = CString::new(path.as_os_str().as_bytes()).map_err(|_| HandoverError::Io {
        path: path.display().to_string(),
        err: io::Error::from(io::ErrorKind::InvalidInput),
    })?;
    // SAFETY: `fd` is an open BPF object and `c` a NUL-terminated path that
    // lives across the call.
    let ret = unsafe { libbpf_rs::libbpf_sys::bpf_obj_pin(fd.as_raw_fd(), c.as_ptr()) };
    if ret < 0 {
        return Err(io_err(path)(io::Error::from_raw_os_error(-ret)));
    }
    Ok(())
}

impl Plan {
    /// After load: swap this daemon's implementations into the kept program
    /// arrays (or fill new ones), attach the dispatchers no one attached
    /// yet, then let go of the previous daemon's leftovers, in that order:
    /// there is always exactly one implementation running per hook.
    /// `tracepoint_ids`: the syscall exit tracepoints' ids, read from a
    /// private tracefs mount (crate::tracefs), so that their dispatchers are
    /// attached without /sys/kernel/tracing.
    pub(crate) fn attach(
        mut self,
        skel: &ExecveSkel<'_>,
        rings: &[OwnedFd],
        tracepoint_ids: Option<crate::tracefs::ExitEventIds>,
    ) -> Result<Handover, HandoverError> {
        let own_layout = publish_layout(skel);
        for &hook in &self.wanted {
            let h = loaded_hook(skel, hook);
            let fd = u32::try_from(h.imp.as_fd().as_raw_fd()).expect("fds are non-negative");
            h.array
                .update(&0u32.to_ne_bytes(), &fd.to_ne_bytes(), MapFlags::ANY)
                .map_err(libbpf_err("putting a program into its dispatcher's slot"))?;
        }
        let mut links = BTreeMap::new();
        let mut let_go = Vec::new();
        let mut kept = Vec::new();
        for &hook in &self.wanted {
            let h = loaded_hook(skel, hook);
            match self.kept_links.remove(&hook) {
                Some(fd)
                    if !self.release.contains(hook.link_name())
                        && runs_same_program(fd.as_fd(), h.dispatcher) =>
                {
                    kept.push(hook.tracepoint());
                    links.insert(hook, Attachment::Kept(fd));
                }
                other => {
                    if let Some(fd) = other {
                        warn!(
                            hook = hook.tracepoint(),
                            "the previous execwatch attached another program here: attaching this one first, then detaching it (an exec at that moment may be recorded twice)"
                        );
                        self.release.insert(hook.link_name().to_string());
                        let_go.push(fd);
                    }
                    let id = match (hook, tracepoint_ids) {
                        (Hook::FailedExecve, Some(ids)) => Some(ids.execve),
                        (Hook::FailedExecveat, Some(ids)) => Some(ids.execveat),
                        _ => None,
                    };
                    let link = match id {
                        Some(id) => crate::bpf_loader::attach_tracepoint(h.dispatcher, id),
                        None => h.dispatcher.attach(),
                    }
                    .map_err(libbpf_err("attaching the BPF programs"))?;
                    links.insert(hook, Attachment::Ours(link));
                }
            }
        }
        // The previous daemon's hooks this configuration does not use: only
        // now, with this daemon's hooks in place.
        for (hook, fd) in std::mem::take(&mut self.kept_links) {
            info!(
                hook = hook.tracepoint(),
                "detaching a hook the previous execwatch used and this configuration does not"
            );
            self.release.insert(hook.link_name().to_string());
            self.release.insert(hook.array_name().to_string());
            let_go.push(fd);
        }
        if !kept.is_empty() {
            info!(
                hooks = %kept.join(","),
                "took over the previous execwatch's attachments: its programs ran until this one's replaced them, with no gap"
            );
        }
        let carried = match self.carried {
            Some(m) => {
                if !m.clean_exit() {
                    warn!(
                        "the previous execwatch did not exit cleanly: what it had taken from the ring buffer and not counted is counted from the progress it kept"
                    );
                }
                // Running: a crash of this daemon must show the same way.
                let running = Meta {
                    flags: m.flags & !CLEAN_EXIT,
                    ..m
                };
                skel.maps
                    .meta
                    .update(&0u32.to_ne_bytes(), &running.to_bytes(), MapFlags::ANY)
                    .map_err(libbpf_err("writing the meta map"))?;
                m
            }
            None => {
                let fresh = Meta {
                    layout_version: LAYOUT_VERSION,
                    ..Meta::default()
                };
                skel.maps
                    .meta
                    .update(&0u32.to_ne_bytes(), &fresh.to_bytes(), MapFlags::ANY)
                    .map_err(libbpf_err("writing the meta map"))?;
                fresh
            }
        };
        if self.found_any {
            let next = skel
                .maps
                .seq
                .lookup(&0u32.to_ne_bytes(), MapFlags::ANY)
                .ok()
                .flatten()
                .and_then(|v| {
                    v.get(..8)
                        .map(|b| u64::from_ne_bytes(b.try_into().unwrap()))
                });
            info!(
                next_sequence = next,
                sequence_kept = self.reused.contains(SEQ),
                ring_buffer_kept = self.reused.contains(EVENTS),
                counters_kept = self.reused.contains(STATS),
                "taking over from the previous execwatch"
            );
        }
        // Every slot holds this daemon's implementation now: a record
        // numbered from here on in an old buffer has a writer not replaced.
        let seq_at_swap = skel
            .maps
            .seq
            .lookup(&0u32.to_ne_bytes(), MapFlags::ANY)
            .ok()
            .flatten()
            .and_then(|v| Some(u64::from_ne_bytes(v.get(..8)?.try_into().ok()?)))
            .unwrap_or(0);
        let mut handover = Handover {
            seq_at_swap,
            predecessor_unclean: self.carried.is_some_and(|m| !m.clean_exit()),
            continues_events: self.reused.contains(EVENTS),
            prev_events: self.prev_events,
            prev_rings: std::sync::Mutex::new(std::mem::take(&mut self.prev_rings)),
            keep: self.keep,
            links,
            carried,
            attached_at: Instant::now(),
            own_layout,
        };
        handover.keep_objects(skel, rings, &self.release)?;
        drop(let_go); // after the store and the pins let go of them too
        Ok(handover)
    }
}

impl Handover {
    /// This daemon leaves its objects for the next one.
    pub fn keeps(&self) -> bool {
        self.keep.keeps()
    }

    /// Detach: drop this daemon's links (a plain run's stop).
    pub fn drop_links(&mut self) {
        self.links.clear();
    }

    /// Give up `release` in the store or pin directory, then keep every
    /// object in use there (what is already there stays as it is).
    fn keep_objects(
        &mut self,
        skel: &ExecveSkel<'_>,
        rings: &[OwnedFd],
        release: &BTreeSet<String>,
    ) -> Result<(), HandoverError> {
        let m = &skel.maps;
        let ring_names: Vec<String> = (0..rings.len())
            .map(|cpu| format!("{RING_PREFIX}{cpu}"))
            .collect();
        let mut current: Vec<(&str, BorrowedFd<'_>)> = vec![
            (EVENTS, m.events.as_fd()),
            (STATS, m.stats.as_fd()),
            (SEQ, m.seq.as_fd()),
            (META, m.meta.as_fd()),
            (PROGRESS, m.progress.as_fd()),
            (CALLER_COMMS, m.caller_comms.as_fd()),
            (LAYOUT, m.layout.as_fd()),
        ];
        for (&hook, attachment) in &self.links {
            current.push((hook.array_name(), loaded_hook(skel, hook).array.as_fd()));
            current.push((hook.link_name(), attachment.fd()));
        }
        for (name, ring) in ring_names.iter().zip(rings) {
            current.push((name, ring.as_fd()));
        }
        let overflow =
            matches!(self.keep, Keep::FdStore) && current.len() > fd_store_size() as usize;
        match &self.keep {
            Keep::Nothing => {}
            Keep::FdStore if overflow => {
                warn!(
                    objects = current.len(),
                    fd_store_max = fd_store_size(),
                    "too many BPF objects for systemd's fd store (a ring buffer per possible CPU): raise FileDescriptorStoreMax= and FDSTORE=; nothing is kept, a stop detaches and counts what is left as lost"
                );
                // Nothing may stay behind in the store: an old link there
                // would keep its programs attached beside this daemon's.
                for name in release
                    .iter()
                    .map(String::as_str)
                    .chain(current.iter().map(|(n, _)| *n))
                {
                    if let Err(e) = crate::sd_notify::remove_fds(name) {
                        warn!(error = %e, object = name, "could not remove a BPF object from systemd's fd store");
                    }
                }
            }
            Keep::FdStore => {
                // systemd keeps an fd it already has once, whatever is sent.
                let result = release
                    .iter()
                    .try_for_each(|name| crate::sd_notify::remove_fds(name))
                    .and_then(|()| {
                        current
                            .iter()
                            .try_for_each(|(name, fd)| crate::sd_notify::store_fd(name, *fd))
                    });
                if let Err(e) = result {
                    warn!(error = %e, "could not keep the BPF objects in systemd's fd store: a restart will start afresh");
                }
            }
            Keep::PinDir(dir) => {
                for name in release {
                    match fs::remove_file(dir.path.join(name)) {
                        Err(e) if e.kind() != io::ErrorKind::NotFound => {
                            return Err(io_err(&dir.path)(e))
                        }
                        _ => {}
                    }
                }
                for (name, fd) in current {
                    let path = dir.path.join(name);
                    if !path.exists() {
                        pin_fd(fd, &path)?;
                    }
                }
            }
        }
        if overflow {
            self.keep = Keep::Nothing;
        }
        Ok(())
    }
}

/// Record in the kept meta map what all daemons so far delivered, lost and
/// reported (`counts`: this daemon's, which start from the carried ones),
/// for the next daemon's accounting. `clean_exit`: these are the final ones.
pub fn save_progress(
    loader: &BpfLoader<'_>,
    counts: &Counts,
    clean_exit: bool,
) -> Result<(), libbpf_rs::Error> {
    if !loader.handover().keeps() {
        return Ok(());
    }
    let meta = Meta::of_counts(counts, clean_exit);
    loader
        .meta_map()
        .update(&0u32.to_ne_bytes(), &meta.to_bytes(), MapFlags::ANY)
}

/// The previous buffer is read until it has been quiet this long...
const PREV_QUIET: Duration = Duration::from_millis(100);
/// ... and at least this long after this daemon's programs took over: an
/// old program that was running at the swap may still write one record.
const PREV_SETTLE: Duration = Duration::from_millis(300);
/// An old buffer still written to after this has a writer this daemon
/// did not replace.
const PREV_MAX: Duration = Duration::from_secs(5);

/// The sequence number of a record that is an event; `None` for a fork
/// record (`EVENT_NO_SEQ`) or one too short to have one. Every layout
/// starts with it.
pub fn event_seq(record: &[u8]) -> Option<u64> {
    let seq = u64::from_ne_bytes(record.get(..8)?.try_into().ok()?);
    (seq != u64::MAX).then_some(seq)
}

/// What becomes of the records of a previous buffer.
#[derive(Debug)]
pub enum PrevRead {
    /// This build's layout (another ring buffer size): decoded as they are.
    Decode,
    /// Another layout this build can translate: translated, then decoded.
    Translate(Translation),
    /// Another layout, not translatable: counted as lost (reason upgrade).
    CountLost,
}

impl PrevRead {
    /// How to read a buffer of `info`'s layout, given this build's.
    fn choose(info: &PrevEvents, ours: Option<&Layout>) -> PrevRead {
        if info.decodable {
            return PrevRead::Decode;
        }
        let theirs = match (&info.layout, ours) {
            (Ok(theirs), Some(_)) => theirs,
            (Err(why), _) => {
                warn!(reason = %why, "the previous execwatch's record layout is unknown: its records cannot be translated");
                return PrevRead::CountLost;
            }
            (_, None) => return PrevRead::CountLost, // said at load
        };
        // The layout map describes this very buffer: a stale one (left by
        // a daemon before) is never applied to another layout's records.
        if theirs.events_map_id == 0 || info.events_map_id != Some(theirs.events_map_id) {
            warn!(
                described = theirs.events_map_id,
                buffer = ?info.events_map_id,
                "the previous execwatch's layout map is not that of its ring buffer: its records are not translated"
            );
            return PrevRead::CountLost;
        }
        // The meta map and the layout map come from the same daemon.
        if info.layout_version.is_some_and(|v| v != theirs.version) {
            warn!(
                meta = ?info.layout_version,
                layout = theirs.version,
                "the previous execwatch's layout map and meta map disagree: its records are not translated"
            );
            return PrevRead::CountLost;
        }
        match Translation::new(theirs, ours.expect("matched above")) {
            Ok(t) => PrevRead::Translate(t),
            Err(e) => {
                warn!(error = %e, "the previous execwatch's records cannot be translated into this build's layout");
                PrevRead::CountLost
            }
        }
    }
}

/// A previous daemon's ring buffer that this one does not continue
/// (another size or layout), to read before its own.
pub struct PreviousBuffer {
    pub info: PrevEvents,
    /// What becomes of its records.
    pub read: PrevRead,
    /// Its rings by CPU, or its one ring.
    rings: Vec<OwnedFd>,
}

impl PreviousBuffer {
    /// Hand its ring buffers to `read`, with what becomes of their records.
    pub fn open<R>(self, read: impl FnOnce(Vec<OwnedFd>, PrevRead) -> R) -> R {
        read(self.rings, self.read)
    }
}

/// When a previous buffer has been read to its end, and what was in it.
#[derive(Debug)]
pub struct PrevDrain {
    /// Its layout, when known.
    layout_version: Option<u32>,
    /// Decoded, translated, or counted as lost.
    how: How,
    attached_at: Instant,
    seq_at_swap: u64,
    start: Instant,
    last_record: Instant,
    /// When a record numbered after the swap was last read.
    last_late_record: Option<Instant>,
    /// Event records (forks not counted), and their sequence range.
    pub records: u64,
    first_seq: Option<u64>,
    last_seq: Option<u64>,
    /// Records read since the last [`PrevDrain::finished`].
    turn: u64,
    /// Given up on: still written to past `PREV_MAX`.
    gave_up: bool,
}

/// What [`PrevDrain`] reports, from [`PrevRead`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum How {
    Decode,
    Translate,
    CountLost,
}

impl PrevDrain {
    /// Says what it is about to read.
    pub fn start(handover: &Handover, prev: &PreviousBuffer) -> PrevDrain {
        let layout_version = prev.info.layout_version;
        let how = match &prev.read {
            PrevRead::Decode => {
                info!(
                    "draining the previous execwatch's ring buffer first (another size, same layout)"
                );
                How::Decode
            }
            PrevRead::Translate(t) => {
                info!(
                    layout = t.from_version,
                    this_build = LAYOUT_VERSION,
                    zero_filled = %t.zero_filled.join(","),
                    dropped = %t.dropped.join(","),
                    "reading the previous execwatch's ring buffer first (layout {}, translated into this build's by field name)",
                    t.from_version
                );
                How::Translate
            }
            PrevRead::CountLost => {
                warn!(
                    layout = ?layout_version,
                    this_build = LAYOUT_VERSION,
                    "draining the previous execwatch's ring buffer first: its record layout is not this build's, so its records are counted as lost (reason upgrade), by sequence number"
                );
                How::CountLost
            }
        };
        PrevDrain::new(
            layout_version,
            how,
            handover.attached_at,
            handover.seq_at_swap,
            Instant::now(),
        )
    }

    fn new(
        layout_version: Option<u32>,
        how: How,
        attached_at: Instant,
        seq_at_swap: u64,
        now: Instant,
    ) -> PrevDrain {
        PrevDrain {
            layout_version,
            how,
            attached_at,
            seq_at_swap,
            start: now,
            last_record: now,
            last_late_record: None,
            records: 0,
            first_seq: None,
            last_seq: None,
            turn: 0,
            gave_up: false,
        }
    }

    /// The buffer was left because a writer this daemon did not replace
    /// still writes to it: what it holds is counted as lost.
    pub fn gave_up(&self) -> bool {
        self.gave_up
    }

    /// Note a record; whether it is an event (else a non-event record of
    /// another layout, sequence all ones).
    pub fn note(&mut self, record: &[u8]) -> bool {
        self.turn += 1;
        // A record too short for a sequence number is not a fork record of
        // any layout: an event, counted.
        if record.len() < 8 {
            self.records += 1;
            return true;
        }
        let Some(seq) = event_seq(record) else {
            return false;
        };
        self.records += 1;
        if seq >= self.seq_at_swap {
            self.last_late_record = Some(Instant::now());
        }
        self.first_seq = Some(self.first_seq.map_or(seq, |f| f.min(seq)));
        self.last_seq = Some(self.last_seq.map_or(seq, |l| l.max(seq)));
        true
    }

    /// After a turn of reading (one that did read, not one held back by a
    /// full output queue): whether the buffer is done with. Quiet long
    /// enough after the swap: read to its end. Records numbered after the
    /// swap still coming past the limit: a writer this daemon did not
    /// replace, left behind. A long backlog alone is read to its end.
    pub fn finished(&mut self) -> bool {
        let now = Instant::now();
        if std::mem::take(&mut self.turn) > 0 {
            self.last_record = now;
        }
        if now.duration_since(self.attached_at) >= PREV_SETTLE
            && now.duration_since(self.last_record) >= PREV_QUIET
        {
            return true;
        }
        let late = self
            .last_late_record
            .is_some_and(|t| now.duration_since(t) < PREV_QUIET);
        if late && now.duration_since(self.start) >= PREV_MAX {
            warn!("the previous ring buffer is still being written to after 5 s (by a writer this execwatch did not replace): left behind; what it holds now is counted as lost (reason upgrade), what is written to it later is not this execwatch's to count");
            self.gave_up = true;
            return true;
        }
        false
    }

    /// Says what was in it.
    pub fn report(&self) {
        if self.how == How::Translate {
            info!(
                records = self.records,
                first_seq = self.first_seq,
                last_seq = self.last_seq,
                layout = self.layout_version,
                "drained the previous execwatch's ring buffer: records of another layout translated and delivered"
            );
        } else if self.how == How::Decode {
            info!(
                records = self.records,
                first_seq = self.first_seq,
                last_seq = self.last_seq,
                "drained the previous execwatch's ring buffer"
            );
        } else {
            warn!(
                records = self.records,
                first_seq = self.first_seq,
                last_seq = self.last_seq,
                "drained the previous execwatch's ring buffer: records of another layout counted as lost (reason upgrade)"
            );
        }
    }
}

impl Handover {
    /// The previous daemon's ring buffer to read first, once.
    pub fn take_previous_buffer(&self) -> Option<PreviousBuffer> {
        let info = self.prev_events.clone()?;
        let rings = std::mem::take(&mut *self.prev_rings.lock().unwrap_or_else(|e| e.into_inner()));
        if rings.is_empty() {
            return None;
        }
        let read = PrevRead::choose(&info, self.own_layout.as_ref());
        Some(PreviousBuffer { info, read, rings })
    }
}

/// `execwatch detach --bpf-pin-dir DIR`: remove what daemons pinned there,
/// links first, so that nothing stays attached through it. Refuses while
/// a daemon uses the directory. Returns the names removed.
pub fn detach(dir: &Path) -> Result<Vec<String>, HandoverError> {
    if !dir.exists() {
        return Ok(Vec::new()); // nothing pinned, nothing attached through it
    }
    if !is_bpffs(dir) {
        return Err(HandoverError::NotBpffs {
            path: dir.display().to_string(),
        });
    }
    refuse_mount_root(dir)?;
    let handle = fs::File::open(dir).map_err(io_err(dir))?;
    let _lock = Flock::lock(handle, FlockArg::LockExclusiveNonblock).map_err(|(_, e)| {
        if e == nix::errno::Errno::EWOULDBLOCK {
            HandoverError::Busy {
                path: dir.display().to_string(),
            }
        } else {
            io_err(dir)(e.into())
        }
    })?;
    let mut names: Vec<String> = fs::read_dir(dir)
        .map_err(io_err(dir))?
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .collect();
    // Links first: the programs stop before the maps they write go.
    names.sort_by_key(|n| (!n.starts_with("link_"), n.clone()));
    for name in &names {
        fs::remove_file(dir.join(name)).map_err(io_err(dir))?;
    }
    fs::remove_dir(dir).map_err(io_err(dir))?;
    Ok(names)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn meta_round_trips_through_bytes() {
        let m = Meta {
            layout_version: 7,
            flags: CLEAN_EXIT,
            delivered: 1 << 40,
            decode_errors: 3,
            lost_ringbuf_full_reported: 5,
            lost_no_scratch_reported: 9,
            lost_output: 11,
            lost_shutdown: 13,
            lost_upgrade: 17,
            seen_upgrade: 19,
            lost_crash: 0, // kept in the progress map, not here
        };
        assert_eq!(Meta::from_bytes(&m.to_bytes()), Some(m));
        assert_eq!(Meta::from_bytes(&m.to_bytes()[..META_LEN - 1]), None);
    }

    #[test]
    fn carried_counts_start_this_daemons_and_say_what_was_consumed() {
        let m = Meta {
            delivered: 10,
            decode_errors: 1,
            lost_ringbuf_full_reported: 4,
            lost_output: 2,
            lost_shutdown: 3,
            lost_upgrade: 5,
            seen_upgrade: 5,
            ..Meta::default()
        };
        let c = m.carried_counts();
        assert_eq!(c.get(Counter::events_before), 10);
        assert_eq!(c.delivered(), 0, "delivered by this daemon: none yet");
        assert_eq!(c.lost(), 10);
        assert_eq!(c.get(Counter::lost_ringbuf_full), 0, "the kernel counts it");
        assert_eq!(m.reported_counts().get(Counter::lost_ringbuf_full), 4);
        // Upgrade losses were read from another buffer, not taken from this one.
        assert_eq!(m.consumed(), 10 + 1 + 2 + 3);
        assert!(!m.clean_exit());
    }

    #[test]
    fn translated_records_were_not_taken_from_the_kept_buffer() {
        // 5 records of another layout's buffer: 3 delivered translated, 2
        // counted lost; 10 more delivered from the kept buffer.
        let m = Meta {
            delivered: 13,
            seen_upgrade: 5,
            lost_upgrade: 2,
            ..Meta::default()
        };
        assert_eq!(m.consumed(), 10);
    }

    fn prev(layout: Result<Layout, String>, meta_version: Option<u32>) -> PrevEvents {
        PrevEvents {
            layout_version: meta_version,
            events_map_id: Some(77),
            decodable: false,
            layout,
        }
    }

    fn small_layout(version: u32, a_size: u32) -> Layout {
        use crate::layout::Field;
        Layout {
            events_map_id: 77,
            version,
            header_len: 16,
            fields: vec![
                Field {
                    name: "seq".into(),
                    offset: 0,
                    size: 8,
                },
                Field {
                    name: "a".into(),
                    offset: 8,
                    size: a_size,
                },
            ],
        }
    }

    #[test]
    fn the_previous_buffer_is_translated_only_with_a_layout_that_fits() {
        let ours = small_layout(1, 8);
        let choose = |p: &PrevEvents| PrevRead::choose(p, Some(&ours));
        let same = PrevEvents {
            decodable: true,
            ..prev(Err("none".into()), Some(1))
        };
        assert!(matches!(choose(&same), PrevRead::Decode));
        let good = prev(Ok(small_layout(2, 8)), Some(2));
        assert!(matches!(choose(&good), PrevRead::Translate(_)));
        assert!(matches!(
            choose(&prev(Ok(small_layout(2, 8)), None)),
            PrevRead::Translate(_)
        ));
        // No layout map (an older build), maps that disagree, a layout map
        // of another buffer or of none, a field that changed size, or none
        // of our own: counted as lost, as before.
        let stale = |id| {
            let mut l = small_layout(2, 8);
            l.events_map_id = id;
            prev(Ok(l), Some(2))
        };
        for p in [
            prev(Err("none".into()), Some(2)),
            prev(Ok(small_layout(2, 8)), Some(3)),
            stale(78),
            stale(0),
            PrevEvents {
                events_map_id: None,
                ..prev(Ok(small_layout(2, 8)), Some(2))
            },
            prev(Ok(small_layout(2, 4)), Some(2)),
        ] {
            assert!(matches!(choose(&p), PrevRead::CountLost), "{p:?}");
        }
        assert!(matches!(PrevRead::choose(&good, None), PrevRead::CountLost));
    }

    fn drain_started(ago: Duration) -> PrevDrain {
        let then = Instant::now() - ago;
        PrevDrain::new(Some(LAYOUT_VERSION), How::Decode, then, 100, then)
    }

    fn record(seq: u64) -> Vec<u8> {
        let mut r = vec![0u8; 16];
        r[..8].copy_from_slice(&seq.to_ne_bytes());
        r
    }

    #[test]
    fn a_previous_buffer_still_written_past_the_limit_is_given_up_and_a_quiet_one_is_not() {
        // Records numbered after the swap still coming after 5 s.
        let mut d = drain_started(PREV_MAX + Duration::from_millis(10));
        assert!(d.note(&record(150)));
        assert!(d.finished());
        assert!(d.gave_up(), "a writer this daemon did not replace");
        // Records from before the swap, read to the end: done, not given up.
        let mut d = drain_started(PREV_MAX + Duration::from_millis(10));
        assert!(d.note(&record(50)));
        assert!(!d.finished(), "it just read");
        d.last_record = Instant::now() - PREV_QUIET;
        assert!(d.finished());
        assert!(!d.gave_up());
        // Late records within the limit: read on.
        let mut d = drain_started(PREV_SETTLE);
        assert!(d.note(&record(150)));
        assert!(!d.finished());
        assert!(!d.gave_up());
    }

    #[test]
    fn fork_records_have_no_sequence_number() {
        let mut r = [0u8; 16];
        assert_eq!(event_seq(&r), Some(0));
        r[..8].copy_from_slice(&u64::MAX.to_ne_bytes());
        assert_eq!(event_seq(&r), None);
        assert_eq!(event_seq(&r[..7]), None);
    }

    #[test]
    fn every_hook_has_its_own_names() {
        let mut names: Vec<&str> = HOOKS
            .iter()
            .flat_map(|h| [h.array_name(), h.link_name()])
            .chain([EVENTS, STATS, SEQ, META, PROGRESS, CALLER_COMMS, LAYOUT])
            .collect();
        let n = names.len();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), n);
        // systemd's FDNAME: at most 255 bytes, no ':'.
        assert!(names.iter().all(|n| n.len() < 256 && !n.contains(':')));
    }

    #[test]
    fn detach_of_a_missing_directory_has_nothing_to_do() {
        assert!(detach(Path::new("/nonexistent/execwatch-pins"))
            .unwrap()
            .is_empty());
    }
}
