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
    ProgramMut, RingBuffer, RingBufferBuilder,
};
use nix::fcntl::{Flock, FlockArg};
use tracing::{info, warn};

use libbpf_rs::skel::{OpenSkel, SkelBuilder};

use crate::bpf_loader::skel::{ExecveSkel, ExecveSkelBuilder, OpenExecveSkel};
use crate::bpf_loader::{types, BpfLoader, KernelStats};

/// Layout of the kept maps this build reads and writes (`EVENT_LAYOUT_VERSION`).
pub const LAYOUT_VERSION: u32 = types::event_layout::EVENT_LAYOUT_VERSION.0;

// Names of the kept objects: fd names in systemd's store, files in the pin
// directory. Hook arrays and links are named by `Hook`.
const EVENTS: &str = "events";
const STATS: &str = "stats";
const SEQ: &str = "seq";
const META: &str = "meta";
const CALLER_COMMS: &str = "caller_comms";

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
    /// `--bpf-pin-dir` when given, else the fd store under systemd, else nothing.
    pub fn choose(pin_dir: Option<&Path>) -> Result<Keep, HandoverError> {
        if let Some(dir) = pin_dir {
            return Ok(Keep::PinDir(PinDir::open(dir)?));
        }
        if std::env::var_os("NOTIFY_SOCKET").is_some() {
            return Ok(Keep::FdStore);
        }
        Ok(Keep::Nothing)
    }

    fn keeps(&self) -> bool {
        !matches!(self, Keep::Nothing)
    }
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

/// The kept `meta` map's value (`struct handover_meta`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Meta {
    pub layout_version: u32,
    /// Records decoded and written by all daemons on these maps.
    pub delivered: u64,
    /// Records rejected by all daemons on these maps.
    pub decode_errors: u64,
    /// Loss counters as the last daemon reported them.
    pub lost_ringbuf_full_reported: u64,
    pub lost_no_scratch_reported: u64,
}

const META_LEN: usize = std::mem::size_of::<types::handover_meta>();

impl Meta {
    fn from_bytes(b: &[u8]) -> Option<Meta> {
        use std::mem::offset_of;
        use types::handover_meta as M;
        let u64_at = |off: usize| -> Option<u64> {
            Some(u64::from_ne_bytes(b.get(off..off + 8)?.try_into().ok()?))
        };
        let version = b.get(offset_of!(M, layout_version)..)?.get(..4)?;
        Some(Meta {
            layout_version: u32::from_ne_bytes(version.try_into().ok()?),
            delivered: u64_at(offset_of!(M, delivered))?,
            decode_errors: u64_at(offset_of!(M, decode_errors))?,
            lost_ringbuf_full_reported: u64_at(offset_of!(M, lost_ringbuf_full_reported))?,
            lost_no_scratch_reported: u64_at(offset_of!(M, lost_no_scratch_reported))?,
        })
    }

    fn to_bytes(self) -> [u8; META_LEN] {
        use std::mem::offset_of;
        use types::handover_meta as M;
        let mut b = [0u8; META_LEN];
        let mut put = |off: usize, v: &[u8]| b[off..off + v.len()].copy_from_slice(v);
        put(
            offset_of!(M, layout_version),
            &self.layout_version.to_ne_bytes(),
        );
        put(offset_of!(M, delivered), &self.delivered.to_ne_bytes());
        put(
            offset_of!(M, decode_errors),
            &self.decode_errors.to_ne_bytes(),
        );
        put(
            offset_of!(M, lost_ringbuf_full_reported),
            &self.lost_ringbuf_full_reported.to_ne_bytes(),
        );
        put(
            offset_of!(M, lost_no_scratch_reported),
            &self.lost_no_scratch_reported.to_ne_bytes(),
        );
        b
    }
}

/// The meta value of a kept map of the right shape.
fn read_meta(fd: BorrowedFd<'_>) -> Option<Meta> {
    let key = 0u32;
    let mut value = [0u8; META_LEN];
    // SAFETY: the caller checked that the map's key is 4 bytes and its value
    // META_LEN bytes, so the kernel reads and writes inside these buffers.
    let ret = unsafe {
        libbpf_rs::libbpf_sys::bpf_map_lookup_elem(
            fd.as_raw_fd(),
            (&key as *const u32).cast(),
            value.as_mut_ptr().cast(),
        )
    };
    if ret == 0 {
        Meta::from_bytes(&value)
    } else {
        None
    }
}

/// One attach point: a dispatcher, its program array, the implementation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Hook {
    Rename,
    Exec,
    SysExit,
    FailedExecve,
    FailedExecveat,
}

const HOOKS: [Hook; 5] = [
    Hook::Rename,
    Hook::Exec,
    Hook::SysExit,
    Hook::FailedExecve,
    Hook::FailedExecveat,
];

impl Hook {
    fn tracepoint(self) -> &'static str {
        match self {
            Hook::Rename => "task_rename",
            Hook::Exec => "sched_process_exec",
            Hook::SysExit => "sys_exit",
            Hook::FailedExecve => "sys_exit_execve",
            Hook::FailedExecveat => "sys_exit_execveat",
        }
    }

    fn array_name(self) -> &'static str {
        match self {
            Hook::Rename => "hook_rename",
            Hook::Exec => "hook_exec",
            Hook::SysExit => "hook_sysexit",
            Hook::FailedExecve => "hook_fexecve",
            Hook::FailedExecveat => "hook_fexecat",
        }
    }

    fn link_name(self) -> &'static str {
        match self {
            Hook::Rename => "link_rename",
            Hook::Exec => "link_exec",
            Hook::SysExit => "link_sysexit",
            Hook::FailedExecve => "link_fexecve",
            Hook::FailedExecveat => "link_fexecat",
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
            imp: &mut p.save_caller_comm,
        },
        Hook::Exec => OpenHook {
            array: &mut m.hook_exec,
            dispatcher: &mut p.dispatch_exec,
            imp: &mut p.exec_success,
        },
        Hook::SysExit => OpenHook {
            array: &mut m.hook_sysexit,
            dispatcher: &mut p.dispatch_sysexit,
            imp: &mut p.exec_failed,
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
        Hook::Rename => (&m.hook_rename, &p.dispatch_rename, &p.save_caller_comm),
        Hook::Exec => (&m.hook_exec, &p.dispatch_exec, &p.exec_success),
        Hook::SysExit => (&m.hook_sysexit, &p.dispatch_sysexit, &p.exec_failed),
        Hook::FailedExecve => (&m.hook_fexecve, &p.dispatch_fexecve, &p.exec_failed_execve),
        Hook::FailedExecveat => (
            &m.hook_fexecat,
            &p.dispatch_fexecat,
            &p.exec_failed_execveat,
        ),
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
#[derive(Debug, Clone, Copy)]
pub struct PrevEvents {
    /// Its layout, when the previous daemon's meta map said.
    pub layout_version: Option<u32>,
    /// This build can decode its records (same layout, other size).
    pub decodable: bool,
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
    prev_events_fd: Option<OwnedFd>,
    carried: Option<Meta>,
    found_any: bool,
}

/// Before load: find what a previous daemon kept, check it against this
/// build and configuration, and make the skeleton reuse what fits.
/// Dispatchers and implementations are attached by [`Plan::attach`].
pub(crate) fn prepare(open: &mut OpenExecveSkel<'_>, keep: Keep) -> Result<Plan, HandoverError> {
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
    let same_layout = kept_layout == Some(LAYOUT_VERSION);
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

    let mut prev_events = None;
    let mut prev_events_fd = None;
    if let Some(fd) = found.objects.get(EVENTS) {
        let shape = Shape::of_fd(fd.as_fd());
        let ours = Shape::of_open(&open.maps.events);
        let continues = same_layout && shape.as_ref() == Some(&ours);
        // Read through a copy of this build's object: same name needed.
        if !continues
            && shape
                .as_ref()
                .is_some_and(|s| s.ty == MapType::RingBuf && s.name == ours.name)
        {
            // Drained (decoded or counted) once this daemon's programs run.
            prev_events = Some(PrevEvents {
                layout_version: kept_layout,
                decodable: same_layout,
            });
            prev_events_fd = Some(fd.try_clone().map_err(|err| HandoverError::Io {
                path: EVENTS.into(),
                err,
            })?);
        } else if !continues {
            warn!(kept = ?shape, "the previous ring buffer cannot be read by this build: what it still holds is lost (reason upgrade), shown by the gap in sequence numbers");
        }
        found.take_over(EVENTS, &mut open.maps.events, continues)?;
    }

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
        prev_events_fd,
        carried,
        found_any,
    })
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
    /// Its fd, until drained.
    prev_events_fd: std::sync::Mutex<Option<OwnedFd>>,
    /// The ring buffer was taken over: it holds records from before this start.
    pub continues_events: bool,
    /// What the daemons before this one delivered and reported (zero when
    /// the counters start here).
    pub carried: Meta,
    attached_at: Instant,
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
    pub(crate) fn attach(mut self, skel: &ExecveSkel<'_>) -> Result<Handover, HandoverError> {
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
                    let link = h
                        .dispatcher
                        .attach()
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
            Some(m) => m,
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
        let handover = Handover {
            continues_events: self.reused.contains(EVENTS),
            prev_events: self.prev_events,
            prev_events_fd: std::sync::Mutex::new(self.prev_events_fd.take()),
            keep: self.keep,
            links,
            carried,
            attached_at: Instant::now(),
        };
        handover.keep_objects(skel, &self.release)?;
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
        &self,
        skel: &ExecveSkel<'_>,
        release: &BTreeSet<String>,
    ) -> Result<(), HandoverError> {
        let m = &skel.maps;
        let mut current: Vec<(&str, BorrowedFd<'_>)> = vec![
            (EVENTS, m.events.as_fd()),
            (STATS, m.stats.as_fd()),
            (SEQ, m.seq.as_fd()),
            (META, m.meta.as_fd()),
            (CALLER_COMMS, m.caller_comms.as_fd()),
        ];
        for (&hook, attachment) in &self.links {
            current.push((hook.array_name(), loaded_hook(skel, hook).array.as_fd()));
            current.push((hook.link_name(), attachment.fd()));
        }
        match &self.keep {
            Keep::Nothing => {}
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
        Ok(())
    }
}

/// Loss counters as far as earlier daemons reported them: the start of this
/// daemon's loss reports.
pub fn reported_stats(carried: &Meta) -> KernelStats {
    KernelStats {
        lost_ringbuf_full: carried.lost_ringbuf_full_reported,
        lost_no_scratch: carried.lost_no_scratch_reported,
        ..KernelStats::default()
    }
}

/// Record in the kept meta map what all daemons so far delivered and
/// reported, for the next daemon's accounting.
pub fn save_progress(
    loader: &BpfLoader<'_>,
    events: u64,
    decode_errors: u64,
    reported: &KernelStats,
) -> Result<(), libbpf_rs::Error> {
    if !loader.handover().keeps() {
        return Ok(());
    }
    let carried = loader.handover().carried;
    let meta = Meta {
        layout_version: LAYOUT_VERSION,
        delivered: carried.delivered + events,
        decode_errors: carried.decode_errors + decode_errors,
        lost_ringbuf_full_reported: reported.lost_ringbuf_full,
        lost_no_scratch_reported: reported.lost_no_scratch,
    };
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

/// Seq range of records read from a previous buffer.
#[derive(Debug, Default)]
struct PrevRecords {
    count: u64,
    first_seq: Option<u64>,
    last_seq: Option<u64>,
}

/// Before the main loop: what the previous daemon left, first. A previous
/// ring buffer of another layout or size is read to its end (decoded when
/// this build knows its layout, else counted as lost, reason `upgrade`);
/// a ring buffer taken over is drained before anything else is read.
/// `on_record` is the daemon's record callback; `delivered` its count of
/// records handled so far.
pub fn drain_previous<'cb>(
    loader: &BpfLoader<'_>,
    ring: &RingBuffer<'_>,
    mut on_record: impl FnMut(&[u8]) -> i32 + 'cb,
    delivered: impl Fn() -> u64,
) -> Result<(), libbpf_rs::Error> {
    let handover = loader.handover();
    if let Some(prev) = handover.prev_events {
        if prev.decodable {
            info!(
                "draining the previous execwatch's ring buffer first (another size, same layout)"
            );
        } else {
            warn!(
                layout = ?prev.layout_version,
                this_build = LAYOUT_VERSION,
                "draining the previous execwatch's ring buffer first: its record layout is not this build's, so its records are counted as lost (reason upgrade), by sequence number"
            );
        }
        let Some(fd) = handover
            .prev_events_fd
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take()
        else {
            return Ok(());
        };
        // libbpf-rs reads a ring buffer from a map of an object only: a
        // second copy of this build's object, with no programs, whose
        // `events` is the previous buffer.
        let mut storage = std::mem::MaybeUninit::uninit();
        let mut open = ExecveSkelBuilder::default().open(&mut storage)?;
        for mut prog in open.open_object_mut().progs_mut() {
            prog.set_autoload(false);
        }
        open.maps.scratch.set_max_entries(1)?;
        open.maps.events.reuse_fd(fd.as_fd())?;
        drop(fd);
        let prev_obj = open.load()?;
        let records = std::cell::RefCell::new(PrevRecords::default());
        let mut builder = RingBufferBuilder::new();
        builder.add(&prev_obj.maps.events, |record: &[u8]| {
            let mut r = records.borrow_mut();
            r.count += 1;
            // Every layout starts with the u64 sequence number.
            if let Some(seq) = record.get(..8) {
                let seq = u64::from_ne_bytes(seq.try_into().expect("8 bytes"));
                r.first_seq = Some(r.first_seq.map_or(seq, |f| f.min(seq)));
                r.last_seq = Some(r.last_seq.map_or(seq, |l| l.max(seq)));
            }
            drop(r);
            if prev.decodable {
                on_record(record)
            } else {
                0
            }
        })?;
        let prev_ring = builder.build()?;
        let start = Instant::now();
        let mut last_record = start;
        loop {
            let n = prev_ring.consume_raw();
            if n < 0 {
                return Err(libbpf_rs::Error::from_raw_os_error(-n));
            }
            let now = Instant::now();
            if n > 0 {
                last_record = now;
            }
            if now.duration_since(handover.attached_at) >= PREV_SETTLE
                && now.duration_since(last_record) >= PREV_QUIET
            {
                break;
            }
            if now.duration_since(start) >= PREV_MAX {
                warn!("the previous ring buffer is still being written to after 5 s: left behind");
                break;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        drop(prev_ring);
        drop(prev_obj);
        let r = records.into_inner();
        if prev.decodable {
            info!(
                records = r.count,
                first_seq = r.first_seq,
                last_seq = r.last_seq,
                "drained the previous execwatch's ring buffer"
            );
        } else {
            warn!(
                message_id = crate::output::journald::message_ids::LOST,
                lost_upgrade = r.count,
                first_seq = r.first_seq,
                last_seq = r.last_seq,
                "drained the previous execwatch's ring buffer: records of another layout counted as lost (reason upgrade)"
            );
        }
    }
    if handover.continues_events {
        info!("taking over the ring buffer: draining what the previous execwatch left first");
        let before = delivered();
        ring.consume()?;
        info!(
            records = delivered() - before,
            "drained the records the previous execwatch left"
        );
    }
    Ok(())
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
            delivered: 1 << 40,
            decode_errors: 3,
            lost_ringbuf_full_reported: 5,
            lost_no_scratch_reported: 9,
        };
        assert_eq!(Meta::from_bytes(&m.to_bytes()), Some(m));
        assert_eq!(Meta::from_bytes(&m.to_bytes()[..META_LEN - 1]), None);
    }

    #[test]
    fn every_hook_has_its_own_names() {
        let mut names: Vec<&str> = HOOKS
            .iter()
            .flat_map(|h| [h.array_name(), h.link_name()])
            .chain([EVENTS, STATS, SEQ, META, CALLER_COMMS])
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
