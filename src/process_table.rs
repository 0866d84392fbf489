//! The table of live processes: who is the parent of an exec, what it ran,
//! and the entity ids of the parent and the leaders.
//!
//! Fed by exec, fork and exit records, seeded from `/proc` at start. Keyed by
//! pid (the tgid); every entry carries the start time in clock ticks, so a
//! reused pid is told apart from the process that had it before. The table
//! does no I/O in its record handlers (`on_exec`, `on_fork`, `on_exit`); only
//! the seeding and liveness helpers read `/proc`.
//!
//! Memory bound: at most [`Limits::max_entries`] entries
//! ([`Limits::for_this_host`]: pid_max, capped at 65 536), each with at most
//! [`Limits::max_executable`] bytes of executable path,
//! [`Limits::max_args_bytes`] bytes of arguments (at most [`Limits::max_args`]
//! of them) and a 16-byte name. The whole table stays under
//! [`Limits::memory_bound`] = max_entries × (512 + max_executable +
//! max_args_bytes) bytes: 128 MiB with the default limits and 65 536 entries,
//! 64 MiB where pid_max is 32 768; the 512 bytes cover the entry, the hash
//! slots, the shared image header and the allocator's overhead
//! (tests/process_table.rs checks the RSS against this figure: worst-case
//! entries measured 1.9 KiB each of the 2 KiB allowed). Typical entries (a
//! 35-byte path, 4 args in 50 bytes) measured 340 bytes: 22 MiB when full.
//!
//! When full, the least recently used fork that never execed goes first (a
//! fork copy carries no image of its own), then the least recently used
//! process with an image; both are counted.

use std::fs::File;
use std::io::{self, Read};
use std::sync::Arc;

use lru::LruCache;

use crate::entity_id::{boot_ns_from_ticks, ticks_from_boot_ns, EntityId, EntityIds};
use crate::event::ExecEvent;

/// TASK_COMM_LEN: the kernel keeps 15 bytes of name plus a NUL.
pub const NAME_MAX: usize = 16;

/// Table bytes per entry on top of the executable and args bytes (see the
/// module documentation).
pub const ENTRY_OVERHEAD_BYTES: usize = 512;

/// Size limits of the table.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Entries kept; past this, one is evicted per insert.
    pub max_entries: usize,
    /// Bytes of executable path kept per process.
    pub max_executable: usize,
    /// Bytes of arguments kept per process (NUL separators included).
    pub max_args_bytes: usize,
    /// Arguments kept per process.
    pub max_args: usize,
}

impl Limits {
    pub const DEFAULT_MAX_ENTRIES: usize = 65_536;

    /// Defaults with `max_entries` = this host's pid_max (no more processes
    /// can be alive at once), capped at [`Self::DEFAULT_MAX_ENTRIES`].
    pub fn for_this_host() -> Limits {
        let pid_max = std::fs::read_to_string("/proc/sys/kernel/pid_max")
            .ok()
            .and_then(|s| s.trim().parse::<usize>().ok())
            .unwrap_or(Self::DEFAULT_MAX_ENTRIES);
        Limits {
            max_entries: pid_max.clamp(1, Self::DEFAULT_MAX_ENTRIES),
            ..Limits::default()
        }
    }

    /// The most bytes the table can hold with these limits.
    pub fn memory_bound(&self) -> usize {
        self.max_entries
            .saturating_mul(ENTRY_OVERHEAD_BYTES + self.max_executable + self.max_args_bytes)
    }
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            max_entries: Self::DEFAULT_MAX_ENTRIES,
            max_executable: 512,
            max_args_bytes: 1024,
            max_args: 64,
        }
    }
}

/// What a process runs: executable, arguments and name, bounded. Shared
/// between a process and the children it forks without exec.
#[derive(Clone, PartialEq, Eq)]
pub struct Image {
    /// The executable, then each argument followed by a NUL.
    bytes: Box<[u8]>,
    exe_len: u16,
    argc: u16,
    name: [u8; NAME_MAX],
    name_len: u8,
    pub executable_truncated: bool,
    pub args_truncated: bool,
    /// Every kept argument is plain printable ASCII (copied as it is by
    /// every format), checked once here rather than per event that shows it.
    args_plain: bool,
}

/// A process name as the table keeps it: up to the first NUL, at most
/// [`NAME_MAX`] bytes.
fn name_field(name: &[u8]) -> ([u8; NAME_MAX], u8) {
    let mut n = [0u8; NAME_MAX];
    let name = name.split(|&b| b == 0).next().unwrap_or_default();
    let len = name.len().min(NAME_MAX);
    n[..len].copy_from_slice(&name[..len]);
    (n, len as u8)
}

impl Image {
    /// Keep what fits in `limits`; a cut argument is kept as a prefix.
    pub fn new<'a>(
        executable: &[u8],
        args: impl IntoIterator<Item = &'a [u8]>,
        name: &[u8],
        limits: &Limits,
    ) -> Image {
        thread_local! {
            /// Built here, then copied once at its final size: growing a
            /// fresh Vec per exec cost reallocs (seen in perf).
            static SCRATCH: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
        }
        SCRATCH.with_borrow_mut(|bytes| Self::build(bytes, executable, args, name, limits))
    }

    fn build<'a>(
        bytes: &mut Vec<u8>,
        executable: &[u8],
        args: impl IntoIterator<Item = &'a [u8]>,
        name: &[u8],
        limits: &Limits,
    ) -> Image {
        let max_exe = limits.max_executable.min(u16::MAX as usize);
        let exe = &executable[..executable.len().min(max_exe)];
        bytes.clear();
        bytes.extend_from_slice(exe);
        let mut argc = 0u16;
        let mut args_truncated = false;
        let mut args_plain = true;
        let max_args = limits.max_args.min(u16::MAX as usize);
        for arg in args {
            let used = bytes.len() - exe.len();
            if argc as usize == max_args || used >= limits.max_args_bytes {
                args_truncated = true;
                break;
            }
            // An argument holds no NUL when it comes from argv; cut at one so a
            // bad caller cannot shift the ones after it.
            let arg = &arg[..memchr::memchr(0, arg).unwrap_or(arg.len())];
            let room = limits.max_args_bytes - used - 1;
            let kept = arg.len().min(room);
            args_plain &= crate::output::escape::is_plain(&arg[..kept]);
            bytes.extend_from_slice(&arg[..kept]);
            bytes.push(0);
            argc += 1;
            if kept < arg.len() {
                args_truncated = true;
                break;
            }
        }
        let (name, name_len) = name_field(name);
        Image {
            bytes: Box::from(&bytes[..]),
            exe_len: exe.len() as u16,
            argc,
            name,
            name_len,
            executable_truncated: exe.len() < executable.len(),
            args_truncated,
            args_plain,
        }
    }

    /// An exec's image, from its event: the arguments that fit are copied
    /// in one piece, found from their ends without scanning them again.
    /// Gives what [`Image::new`] gives for the same arguments.
    pub fn of_exec(ev: &ExecEvent, limits: &Limits) -> Image {
        if !ev.args_plain() {
            // Rare; the argument-by-argument path checks each one.
            return Image::new(&ev.executable, ev.args(), &ev.comm, limits);
        }
        let (area, ends) = ev.args_area();
        let max_exe = limits.max_executable.min(u16::MAX as usize);
        let exe = &ev.executable[..ev.executable.len().min(max_exe)];
        let max_args = limits.max_args.min(u16::MAX as usize);
        let max_bytes = limits.max_args_bytes;
        // Whole arguments that fit, each with its NUL.
        let whole = ends
            .iter()
            .take(max_args)
            .take_while(|&&end| end < max_bytes)
            .count();
        let used = whole.checked_sub(1).map_or(0, |last| ends[last] + 1);
        // The next one, if any and if there is room, cut to the room left.
        let cut = (whole < ends.len() && whole < max_args && used < max_bytes)
            .then(|| &area[used..used + (ends[whole] - used).min(max_bytes - used - 1)]);
        let mut bytes = Vec::with_capacity(exe.len() + used + cut.map_or(0, |c| c.len() + 1));
        bytes.extend_from_slice(exe);
        if used > 0 {
            // The last argument of a cut capture has no NUL of its own.
            bytes.extend_from_slice(&area[..used - 1]);
            bytes.push(0);
        }
        if let Some(cut) = cut {
            bytes.extend_from_slice(cut);
            bytes.push(0);
        }
        let (name, name_len) = name_field(&ev.comm);
        Image {
            bytes: bytes.into_boxed_slice(),
            exe_len: exe.len() as u16,
            argc: (whole + usize::from(cut.is_some())) as u16,
            name,
            name_len,
            executable_truncated: exe.len() < ev.executable.len(),
            args_truncated: whole < ends.len(),
            args_plain: true,
        }
    }

    /// Bytes it takes in memory.
    pub fn held_bytes(&self) -> usize {
        std::mem::size_of::<Self>() + self.bytes.len()
    }

    pub fn executable(&self) -> &[u8] {
        &self.bytes[..self.exe_len as usize]
    }

    /// The arguments, `argv[0]` first.
    pub fn args(&self) -> impl ExactSizeIterator<Item = &[u8]> + '_ {
        let mut rest = &self.bytes[self.exe_len as usize..];
        (0..self.argc as usize).map(move |_| {
            let end = memchr::memchr(0, rest).unwrap_or(rest.len());
            let arg = &rest[..end];
            rest = rest.get(end + 1..).unwrap_or_default();
            arg
        })
    }

    pub fn argc(&self) -> usize {
        self.argc as usize
    }

    /// Whether every argument is plain printable ASCII.
    pub fn args_plain(&self) -> bool {
        self.args_plain
    }

    /// The task name (`comm`).
    pub fn name(&self) -> &[u8] {
        &self.name[..self.name_len as usize]
    }
}

impl std::fmt::Debug for Image {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Image")
            .field("executable", &String::from_utf8_lossy(self.executable()))
            .field(
                "args",
                &self.args().map(String::from_utf8_lossy).collect::<Vec<_>>(),
            )
            .field("name", &String::from_utf8_lossy(self.name()))
            .finish()
    }
}

/// How an entry came into the table.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Origin {
    /// Read from `/proc` at start.
    Seeded,
    /// Seen exec at least once.
    Exec,
    /// Seen fork, never exec: it runs a copy of its parent's image.
    Fork,
}

/// One live process.
#[derive(Clone, Debug)]
pub struct Entry {
    pub pid: u32,
    /// Start time in clock ticks since boot (`/proc/PID/stat` field 22): what
    /// tells processes with the same pid apart.
    pub start_ticks: u64,
    /// Start time in CLOCK_BOOTTIME ns: exact when a record gave it, the start
    /// of the tick for a process seeded from `/proc`.
    pub start_boot_ns: u64,
    pub entity_id: EntityId,
    /// None for a fork whose parent the table did not know.
    pub image: Option<Arc<Image>>,
    pub ppid: u32,
    pub parent_entity_id: Option<EntityId>,
    /// Session id (the session leader's pid) and process group id, as of the
    /// last exec or fork record.
    pub session_leader: u32,
    pub group_leader: u32,
    /// Execs seen for this process (a seeded process counts its current image).
    pub exec_count: u32,
    pub origin: Origin,
    pub kernel_thread: bool,
    /// CLOCK_BOOTTIME ns when `/proc` was read for a seeded entry, else 0: an
    /// exec record from before then made the image that was read.
    seeded_at_ns: u64,
}

impl Entry {
    /// Whether this process's exit makes an event: it execed, or it was
    /// running when the table was seeded. A fork that never execs does not.
    pub fn reports_exit(&self) -> bool {
        self.origin != Origin::Fork
    }
}

/// Another process as seen from an event: the parent or a leader.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Related {
    pub pid: u32,
    pub entity_id: EntityId,
    pub start_ticks: u64,
    /// See [`Entry::start_boot_ns`]: `process.parent.start`.
    pub start_boot_ns: u64,
    pub image: Option<Arc<Image>>,
}

impl From<&Entry> for Related {
    fn from(e: &Entry) -> Related {
        Related {
            pid: e.pid,
            entity_id: e.entity_id,
            start_ticks: e.start_ticks,
            start_boot_ns: e.start_boot_ns,
            image: e.image.clone(),
        }
    }
}

/// An exec record, as the table needs it.
#[derive(Clone, Copy, Debug)]
pub struct ExecRecord<'a> {
    pub pid: u32,
    pub ppid: u32,
    /// `group_leader->start_boottime`, CLOCK_BOOTTIME ns.
    pub start_boot_ns: u64,
    /// The parent's start (ns) when the record carries it: pins the parent
    /// exactly and gives its entity id even when the table lacks it.
    pub parent_start_boot_ns: Option<u64>,
    pub session_leader: u32,
    pub group_leader: u32,
    /// When the exec happened, CLOCK_BOOTTIME ns (the record's timestamp).
    pub boot_ns: u64,
    pub executable: &'a [u8],
    pub name: &'a [u8],
}

/// What the table knows for an exec event.
#[derive(Clone, Debug)]
pub struct ExecContext {
    pub entity_id: EntityId,
    pub parent: Option<Related>,
    /// The parent's entity id, also when only the record's parent start gave it.
    pub parent_entity_id: Option<EntityId>,
    pub session_leader: Option<Related>,
    pub group_leader: Option<Related>,
    /// The image this process had before, when this is its second (or later)
    /// exec: ECS `process.previous`.
    pub previous: Option<Arc<Image>>,
    pub exec_count: u32,
}

/// Counters of the table's life, for metrics and the summary.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    pub entries: usize,
    /// Forks never execed, evicted because the table was full.
    pub evicted_forks: u64,
    /// Processes with an image, evicted because the table was full.
    pub evicted_execs: u64,
    /// Entries replaced because their pid came back with another start time
    /// (the old process's exit was missed).
    pub replaced_stale: u64,
    /// Exits of processes the table did not have.
    pub exits_unknown: u64,
}

/// Outcome of seeding from `/proc`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SeedReport {
    pub seeded: usize,
    /// Processes that exited (or were replaced) while being read: normal.
    pub vanished: usize,
    /// Already in the table (a record came first): kept as they were.
    pub already_known: usize,
}

/// The table; see the module documentation.
pub struct ProcessTable {
    ids: EntityIds,
    limits: Limits,
    /// Processes with an image of their own (exec or seeded).
    execed: LruCache<u32, Entry>,
    /// Forks that never execed: evicted first.
    forks: LruCache<u32, Entry>,
    stats: Stats,
}

impl ProcessTable {
    pub fn new(ids: EntityIds, limits: Limits) -> ProcessTable {
        assert!(limits.max_entries > 0, "a table needs room for one entry");
        ProcessTable {
            ids,
            limits,
            execed: LruCache::unbounded(),
            forks: LruCache::unbounded(),
            stats: Stats::default(),
        }
    }

    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    pub fn ids(&self) -> &EntityIds {
        &self.ids
    }

    pub fn len(&self) -> usize {
        self.execed.len() + self.forks.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn stats(&self) -> Stats {
        Stats {
            entries: self.len(),
            ..self.stats
        }
    }

    /// The entry for `pid`, without marking it used.
    pub fn get(&self, pid: u32) -> Option<&Entry> {
        self.execed.peek(&pid).or_else(|| self.forks.peek(&pid))
    }

    /// A successful exec. Returns the event's lineage; records the new image.
    /// Call it for successful execs only: a failed exec changes nothing.
    pub fn on_exec<'a>(
        &mut self,
        rec: &ExecRecord<'_>,
        args: impl IntoIterator<Item = &'a [u8]>,
    ) -> ExecContext {
        let image = Image::new(rec.executable, args, rec.name, &self.limits);
        self.on_exec_image(rec, image)
    }

    /// [`ProcessTable::on_exec`] for a decoded exec event: its image is
    /// built by [`Image::of_exec`], within the table's limits.
    pub fn on_exec_event(&mut self, rec: &ExecRecord<'_>, ev: &ExecEvent) -> ExecContext {
        let image = Image::of_exec(ev, &self.limits);
        self.on_exec_image(rec, image)
    }

    fn on_exec_image(&mut self, rec: &ExecRecord<'_>, image: Image) -> ExecContext {
        let image = Arc::new(image);
        let start_ticks = ticks_from_boot_ns(rec.start_boot_ns);
        let parent_start = rec.parent_start_boot_ns.map(ticks_from_boot_ns);
        let parent = self.related(rec.ppid, start_ticks, parent_start);
        let parent_entity_id = parent
            .as_ref()
            .map(|p| p.entity_id)
            .or_else(|| parent_start.map(|s| self.ids.from_ticks(rec.ppid, s)));

        let old = self.take_same(rec.pid, start_ticks);
        let (entity_id, exec_count, previous) = match old {
            Some(old) if old.origin == Origin::Fork => (old.entity_id, 1, None),
            Some(old) => {
                // Seeding races with records already in the ring: an exec from
                // before the /proc read is the one that made the image read.
                if old.origin == Origin::Seeded && rec.boot_ns <= old.seeded_at_ns {
                    (old.entity_id, old.exec_count, None)
                } else {
                    (old.entity_id, old.exec_count.saturating_add(1), old.image)
                }
            }
            None => (self.ids.from_ticks(rec.pid, start_ticks), 1, None),
        };
        let entry = Entry {
            pid: rec.pid,
            start_ticks,
            start_boot_ns: rec.start_boot_ns,
            entity_id,
            image: Some(image),
            ppid: rec.ppid,
            parent_entity_id,
            session_leader: rec.session_leader,
            group_leader: rec.group_leader,
            exec_count,
            origin: Origin::Exec,
            kernel_thread: false,
            seeded_at_ns: 0,
        };
        self.insert(entry);
        // Leaders after the insert: a process can lead its own session/group.
        let session_leader = self.related(rec.session_leader, start_ticks, None);
        let group_leader = self.related(rec.group_leader, start_ticks, None);
        ExecContext {
            entity_id,
            parent,
            parent_entity_id,
            session_leader,
            group_leader,
            previous,
            exec_count,
        }
    }

    /// A new process (not a thread): the child runs a copy of the parent's
    /// image until it execs, so its own children see that image as parent.
    /// A repeated record for a known child changes nothing.
    pub fn on_fork(
        &mut self,
        child: u32,
        parent: u32,
        child_start_boot_ns: u64,
        parent_start_boot_ns: Option<u64>,
    ) {
        if child == parent {
            return;
        }
        let child_start_ticks = ticks_from_boot_ns(child_start_boot_ns);
        let parent_start_ticks = parent_start_boot_ns.map(ticks_from_boot_ns);
        if self
            .get(child)
            .is_some_and(|e| e.start_ticks == child_start_ticks)
        {
            return;
        }
        let p = self.related(parent, child_start_ticks, parent_start_ticks);
        let (sid, pgid) = match self.get(parent) {
            Some(e) if p.is_some() => (e.session_leader, e.group_leader),
            _ => (0, 0),
        };
        let parent_entity_id = p
            .as_ref()
            .map(|p| p.entity_id)
            .or_else(|| parent_start_ticks.map(|s| self.ids.from_ticks(parent, s)));
        let entry = Entry {
            pid: child,
            start_ticks: child_start_ticks,
            start_boot_ns: child_start_boot_ns,
            entity_id: self.ids.from_ticks(child, child_start_ticks),
            image: p.and_then(|p| p.image),
            ppid: parent,
            parent_entity_id,
            session_leader: sid,
            group_leader: pgid,
            exec_count: 0,
            origin: Origin::Fork,
            kernel_thread: false,
            seeded_at_ns: 0,
        };
        self.remove_any(child, true);
        self.insert(entry);
    }

    /// A process exited: removes and returns its entry (for the exit event's
    /// entity id and whether to report it). An entry for the same pid with
    /// another start time is stale and goes too, but is not returned.
    pub fn on_exit(&mut self, pid: u32, start_boot_ns: u64) -> Option<Entry> {
        match self.take_same(pid, ticks_from_boot_ns(start_boot_ns)) {
            Some(e) => Some(e),
            None => {
                self.stats.exits_unknown += 1;
                None
            }
        }
    }

    /// The parent or leader `pid` of a process started at `child_start`, if the
    /// table has it and it can be that process: it must not have started after
    /// the child (else it reuses the pid of a parent that is gone), and must
    /// match `exact_start` when the record gives it.
    fn related(&mut self, pid: u32, child_start: u64, exact_start: Option<u64>) -> Option<Related> {
        if pid == 0 {
            return None;
        }
        let e = match self.execed.get(&pid) {
            Some(e) => e,
            None => self.forks.get(&pid)?,
        };
        let fits = match exact_start {
            Some(s) => e.start_ticks == s,
            None => e.start_ticks <= child_start,
        };
        fits.then(|| Related::from(e))
    }

    /// Remove and return the entry for `pid` if it has this start time; drop
    /// one with another start time (a missed exit).
    fn take_same(&mut self, pid: u32, start_ticks: u64) -> Option<Entry> {
        let e = self.remove_any(pid, false)?;
        if e.start_ticks == start_ticks {
            Some(e)
        } else {
            self.stats.replaced_stale += 1;
            None
        }
    }

    fn remove_any(&mut self, pid: u32, count_stale: bool) -> Option<Entry> {
        let e = self.execed.pop(&pid).or_else(|| self.forks.pop(&pid));
        if count_stale && e.is_some() {
            self.stats.replaced_stale += 1;
        }
        e
    }

    /// Insert an entry whose pid is not in the table, evicting if full.
    fn insert(&mut self, entry: Entry) {
        while self.len() >= self.limits.max_entries {
            if self.forks.pop_lru().is_some() {
                self.stats.evicted_forks += 1;
            } else if self.execed.pop_lru().is_some() {
                self.stats.evicted_execs += 1;
            } else {
                break;
            }
        }
        let pid = entry.pid;
        if entry.origin == Origin::Fork {
            self.forks.put(pid, entry);
        } else {
            self.execed.put(pid, entry);
        }
    }

    /// Read every process in `/proc`. Processes that exit meanwhile are
    /// skipped quietly; entries already in the table are kept (a record about
    /// them is newer than this read).
    pub fn seed_from_proc(&mut self) -> io::Result<SeedReport> {
        let mut report = SeedReport::default();
        let mut seeded = Vec::new();
        for pid in proc_pids()? {
            match self.seed_pid(pid) {
                SeedOne::Seeded => {
                    report.seeded += 1;
                    seeded.push(pid);
                }
                SeedOne::Vanished => report.vanished += 1,
                SeedOne::AlreadyKnown => report.already_known += 1,
            }
        }
        // Parents are known only once everyone is read.
        for pid in seeded {
            let Some(e) = self.execed.peek(&pid) else {
                continue;
            };
            let (ppid, start) = (e.ppid, e.start_ticks);
            let pe = self.related(ppid, start, None).map(|p| p.entity_id);
            if let Some(e) = self.execed.peek_mut(&pid) {
                e.parent_entity_id = pe;
            }
        }
        Ok(report)
    }

    /// Read one process from `/proc` (for a parent the table misses, say).
    pub fn seed_pid(&mut self, pid: u32) -> SeedOne {
        let Some(p) = read_proc(pid, &self.limits) else {
            return SeedOne::Vanished;
        };
        if self
            .get(pid)
            .is_some_and(|e| e.start_ticks == p.stat.start_ticks)
        {
            return SeedOne::AlreadyKnown;
        }
        let parent_entity_id = self
            .related(p.stat.ppid, p.stat.start_ticks, None)
            .map(|r| r.entity_id);
        let entry = Entry {
            pid,
            start_ticks: p.stat.start_ticks,
            start_boot_ns: boot_ns_from_ticks(p.stat.start_ticks),
            entity_id: self.ids.from_ticks(pid, p.stat.start_ticks),
            image: Some(Arc::new(p.image)),
            ppid: p.stat.ppid,
            parent_entity_id,
            session_leader: p.stat.session,
            group_leader: p.stat.pgrp,
            exec_count: 1,
            origin: Origin::Seeded,
            kernel_thread: p.stat.kernel_thread(),
            seeded_at_ns: p.read_at_ns,
        };
        self.remove_any(pid, true);
        self.insert(entry);
        SeedOne::Seeded
    }
}

/// Outcome of [`ProcessTable::seed_pid`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SeedOne {
    Seeded,
    Vanished,
    AlreadyKnown,
}

/// The fields of `/proc/PID/stat` the table uses.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProcStat {
    pub pid: u32,
    pub comm: Vec<u8>,
    pub ppid: u32,
    pub pgrp: u32,
    pub session: u32,
    pub flags: u32,
    pub start_ticks: u64,
}

/// PF_KTHREAD in `/proc/PID/stat` field 9.
const PF_KTHREAD: u32 = 0x0020_0000;

impl ProcStat {
    pub fn kernel_thread(&self) -> bool {
        self.flags & PF_KTHREAD != 0
    }
}

/// Parse `/proc/PID/stat`. The name (field 2) may hold spaces and `)`, so the
/// fields after it are found from the last `)`.
pub fn parse_stat(bytes: &[u8]) -> Option<ProcStat> {
    let open = memchr::memchr(b'(', bytes)?;
    let close = memchr::memrchr(b')', bytes)?;
    if close < open {
        return None;
    }
    let pid = std::str::from_utf8(&bytes[..open])
        .ok()?
        .trim()
        .parse()
        .ok()?;
    let comm = bytes[open + 1..close].to_vec();
    let rest = std::str::from_utf8(bytes.get(close + 1..)?).ok()?;
    // Field N (1-based) is at index N - 3 after the name.
    let f: Vec<&str> = rest.split_ascii_whitespace().take(20).collect();
    let num = |field: usize| -> Option<u64> { f.get(field - 3)?.parse().ok() };
    Some(ProcStat {
        pid,
        comm,
        ppid: num(4)?.try_into().ok()?,
        pgrp: num(5)?.try_into().ok()?,
        session: num(6)?.try_into().ok()?,
        flags: num(9)?.try_into().ok()?,
        start_ticks: num(22)?,
    })
}

/// Read `/proc/PID/stat`; None if the process is gone.
pub fn read_stat(pid: u32) -> Option<ProcStat> {
    let bytes = std::fs::read(format!("/proc/{pid}/stat")).ok()?;
    parse_stat(&bytes)
}

struct ProcRead {
    stat: ProcStat,
    image: Image,
    /// CLOCK_BOOTTIME ns after the last read.
    read_at_ns: u64,
}

/// Read a process's image; None if it is gone or its pid was reused meanwhile.
fn read_proc(pid: u32, limits: &Limits) -> Option<ProcRead> {
    let stat = read_stat(pid)?;
    // A kernel thread has no exe link; a zombie lost it: both are fine empty.
    let exe = std::fs::read_link(format!("/proc/{pid}/exe"))
        .map(|p| p.into_os_string().into_encoded_bytes())
        .unwrap_or_default();
    let cmdline =
        read_bounded(format!("/proc/{pid}/cmdline"), limits.max_args_bytes + 1).unwrap_or_default();
    // The pid may have been reused between the reads: then they mix two
    // processes, so the whole read is void.
    if read_stat(pid)?.start_ticks != stat.start_ticks {
        return None;
    }
    let cmdline = cmdline.strip_suffix(&[0]).unwrap_or(&cmdline);
    let args = (!cmdline.is_empty()).then(|| cmdline.split(|&b| b == 0));
    let image = Image::new(&exe, args.into_iter().flatten(), &stat.comm, limits);
    Some(ProcRead {
        stat,
        image,
        read_at_ns: boot_ns_now(),
    })
}

use crate::output::clock::boot_ns_now;

/// The pids listed in `/proc` now (a process may be gone by the time it is read).
pub(crate) fn proc_pids() -> io::Result<impl Iterator<Item = u32>> {
    Ok(std::fs::read_dir("/proc")?.filter_map(|dirent| {
        dirent
            .ok()?
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<u32>().ok())
    }))
}

/// Up to `max` bytes of a file: `/proc/PID/cmdline` can be megabytes.
pub(crate) fn read_bounded(path: impl AsRef<std::path::Path>, max: usize) -> io::Result<Vec<u8>> {
    let mut out = Vec::new();
    File::open(path)?.take(max as u64).read_to_end(&mut out)?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::entity_id::BootId;

    fn ids() -> EntityIds {
        EntityIds::new(BootId([7; 16]))
    }

    fn table(max_entries: usize) -> ProcessTable {
        ProcessTable::new(
            ids(),
            Limits {
                max_entries,
                ..Limits::default()
            },
        )
    }

    fn exec<'a>(pid: u32, ppid: u32, start: u64, exe: &'a str) -> ExecRecord<'a> {
        ExecRecord {
            pid,
            ppid,
            start_boot_ns: ns(start),
            parent_start_boot_ns: None,
            session_leader: 0,
            group_leader: 0,
            boot_ns: ns(start) + 1,
            executable: exe.as_bytes(),
            name: exe.rsplit('/').next().unwrap().as_bytes(),
        }
    }

    /// Ticks to ns, as a record would carry them.
    fn ns(ticks: u64) -> u64 {
        boot_ns_from_ticks(ticks) + 1234
    }

    fn args<'a>(a: &'a [&'a str]) -> impl Iterator<Item = &'a [u8]> {
        a.iter().map(|s| s.as_bytes())
    }

    fn strs(i: &Image) -> (String, Vec<String>, String) {
        (
            String::from_utf8_lossy(i.executable()).into(),
            i.args()
                .map(|a| String::from_utf8_lossy(a).into())
                .collect(),
            String::from_utf8_lossy(i.name()).into(),
        )
    }

    /// 8 bytes of executable, 10 of arguments, 3 arguments.
    fn small_limits() -> Limits {
        Limits {
            max_executable: 8,
            max_args_bytes: 10,
            max_args: 3,
            ..Limits::default()
        }
    }

    /// The one-copy path and the argument-by-argument path build the same
    /// image, whether the area fits the limits or not.
    #[test]
    fn image_of_an_exec_is_the_image_of_its_args() {
        let limits = [
            small_limits(),
            Limits {
                max_args: 0,
                ..small_limits()
            },
            Limits {
                max_args_bytes: 0,
                ..small_limits()
            },
            Limits {
                max_args_bytes: 1,
                ..small_limits()
            },
            Limits {
                max_executable: 0,
                ..small_limits()
            },
        ];
        let areas: [(&[u8], u32); 14] = [
            (b"abcd\0efghi\0", 2),  // one byte over: the NUL
            (b"abcdefgh\0ij\0", 2), // no room left but for a NUL
            (b"abcdefgh\0ij", 2),   // the same, the last piece cut
            (b"abcdefghi\0j\0", 2), // no room at all
            (b"abcdefghijk", 1),    // one cut piece, too long
            (b"", 0),
            (b"ab\0cd\0", 2),
            (b"ab\0cd", 2),          // the last piece cut, no NUL
            (b"\0b\0", 2),           // an empty argument
            (b"abcd\0efgh\0", 2),    // exactly the byte limit
            (b"abcd\0efgh\0i\0", 3), // one byte over
            (b"a\0b\0c\0d\0", 4),    // over the count
            (b"abcdefghijklmnop\0", 1),
            (b"q\"\x1b\0", 1), // not plain
        ];
        for (l, exe) in limits
            .iter()
            .flat_map(|l| [(l, &b"/bin/a"[..]), (l, b"/bin/toolong")])
        {
            for (area, argc) in areas {
                let mut ev = ExecEvent {
                    argc,
                    executable: exe.to_vec(),
                    comm: b"name\0\0".to_vec(),
                    ..Default::default()
                };
                ev.split_args(area);
                let want = Image::new(exe, ev.args(), &ev.comm, l);
                let got = Image::of_exec(&ev, l);
                assert!(
                    got == want,
                    "{:?} {:?}: {:?} != {:?}",
                    exe,
                    area,
                    strs(&got),
                    strs(&want)
                );
                assert_eq!(got.args_plain(), want.args_plain());
                assert_eq!(got.args_truncated, want.args_truncated);
            }
        }
    }

    #[test]
    fn image_keeps_what_fits() {
        let l = small_limits();
        let i = Image::new(b"/bin/true", args(&["ab", "cd"]), b"true", &l);
        assert_eq!(i.executable(), b"/bin/tru");
        assert!(i.executable_truncated);
        assert_eq!(i.args().collect::<Vec<_>>(), [b"ab", b"cd"]);
        assert!(!i.args_truncated);
        // 10 bytes: "abcd\0" + "efgh\0" fills it; the third is dropped.
        let i = Image::new(b"x", args(&["abcd", "efgh", "ij"]), b"x", &l);
        assert_eq!(i.args().collect::<Vec<_>>(), [b"abcd", b"efgh"]);
        assert!(i.args_truncated);
        // A long argument is cut to fit.
        let i = Image::new(b"x", args(&["abcdefghijklmnop"]), b"x", &l);
        assert_eq!(i.args().collect::<Vec<_>>(), [b"abcdefghi"]);
        assert!(i.args_truncated);
        // Count limit.
        let i = Image::new(b"x", args(&["a", "b", "c", "d"]), b"x", &l);
        assert_eq!(i.argc(), 3);
        assert!(i.args_truncated);
        // Empty args and an empty argument are kept apart.
        let i = Image::new(b"x", args(&["", "b"]), b"x", &l);
        assert_eq!(i.args().collect::<Vec<_>>(), [b"".as_slice(), b"b"]);
        assert_eq!(Image::new(b"x", args(&[]), b"x", &l).argc(), 0);
        // A NUL inside an argument cannot forge another one.
        let i = Image::new(b"x", [b"a\0b".as_slice(), b"c"], b"x", &l);
        assert_eq!(i.args().collect::<Vec<_>>(), [b"a", b"c"]);
        // Names longer than comm are cut at 16.
        let i = Image::new(b"x", args(&[]), b"0123456789abcdefXYZ", &l);
        assert_eq!(i.name(), b"0123456789abcdef");
    }

    #[test]
    fn exec_gives_the_parent_context() {
        let mut t = table(100);
        let ctx = t.on_exec(
            &exec(100, 1, 50, "/usr/bin/bash"),
            args(&["bash", "-c", "a; b"]),
        );
        assert!(ctx.parent.is_none());
        assert_eq!(ctx.entity_id, ids().from_ticks(100, 50));
        let ctx = t.on_exec(&exec(101, 100, 60, "/usr/bin/a"), args(&["a"]));
        let p = ctx.parent.unwrap();
        assert_eq!(p.pid, 100);
        assert_eq!(p.entity_id, ids().from_ticks(100, 50));
        assert_eq!(p.start_ticks, 50);
        assert_eq!(p.start_boot_ns, ns(50), "the record's exact start");
        let (exe, a, name) = strs(p.image.as_deref().unwrap());
        assert_eq!(exe, "/usr/bin/bash");
        assert_eq!(a, ["bash", "-c", "a; b"]);
        assert_eq!(name, "bash");
        assert_eq!(ctx.parent_entity_id, Some(p.entity_id));
        assert!(ctx.previous.is_none());
        assert_eq!(t.get(101).unwrap().parent_entity_id, Some(p.entity_id));
    }

    #[test]
    fn subshell_children_see_the_forked_shell_as_parent() {
        let mut t = table(100);
        t.on_exec(
            &exec(100, 1, 50, "/usr/bin/bash"),
            args(&["bash", "-c", "(a; b)"]),
        );
        t.on_fork(101, 100, ns(55), Some(ns(50)));
        let ctx = t.on_exec(&exec(102, 101, 56, "/usr/bin/a"), args(&["a"]));
        let p = ctx.parent.unwrap();
        assert_eq!(p.pid, 101);
        assert_eq!(p.entity_id, ids().from_ticks(101, 55));
        assert_ne!(p.entity_id, ids().from_ticks(100, 50));
        let (exe, a, _) = strs(p.image.as_deref().unwrap());
        assert_eq!(exe, "/usr/bin/bash");
        assert_eq!(a, ["bash", "-c", "(a; b)"]);
        // The fork's own parent link.
        assert_eq!(
            t.get(101).unwrap().parent_entity_id,
            Some(ids().from_ticks(100, 50))
        );
        // A fork that never execs does not report its exit.
        let e = t.on_exit(101, ns(55)).unwrap();
        assert!(!e.reports_exit());
        // The same record twice changes nothing.
        t.on_fork(103, 100, ns(57), None);
        t.on_fork(103, 100, ns(57), None);
        assert_eq!(t.stats().replaced_stale, 0);
    }

    #[test]
    fn double_exec_keeps_the_id_and_gives_the_previous_image() {
        let mut t = table(100);
        t.on_exec(&exec(100, 1, 50, "/usr/bin/bash"), args(&["bash"]));
        t.on_fork(200, 100, ns(60), None);
        let first = t.on_exec(
            &exec(200, 100, 60, "/usr/bin/env"),
            args(&["env", "sleep", "1"]),
        );
        assert!(
            first.previous.is_none(),
            "a fork's copy is not a previous exec"
        );
        assert_eq!(first.exec_count, 1);
        let second = t.on_exec(&exec(200, 100, 60, "/usr/bin/sleep"), args(&["sleep", "1"]));
        assert_eq!(second.entity_id, first.entity_id);
        assert_eq!(second.exec_count, 2);
        let (exe, a, _) = strs(second.previous.as_deref().unwrap());
        assert_eq!(exe, "/usr/bin/env");
        assert_eq!(a, ["env", "sleep", "1"]);
        // Exit gives back the same id.
        let e = t.on_exit(200, ns(60)).unwrap();
        assert_eq!(e.entity_id, first.entity_id);
        assert!(e.reports_exit());
        assert!(t.get(200).is_none());
    }

    #[test]
    fn reused_pid_is_a_new_process() {
        let mut t = table(100);
        let a = t.on_exec(&exec(300, 1, 10, "/bin/a"), args(&["a"]));
        // Exit missed; the pid comes back later.
        let b = t.on_exec(&exec(300, 1, 99, "/bin/b"), args(&["b"]));
        assert_ne!(a.entity_id, b.entity_id);
        assert!(b.previous.is_none());
        assert_eq!(b.exec_count, 1);
        assert_eq!(t.stats().replaced_stale, 1);
        // An exit for the old start removes the stale entry but returns nothing.
        assert!(t.on_exit(300, ns(10)).is_none());
        assert!(t.get(300).is_none());
        assert_eq!(t.stats().exits_unknown, 1);
    }

    #[test]
    fn a_parent_younger_than_its_child_is_not_its_parent() {
        let mut t = table(100);
        // pid 400 is a process started at tick 500; a child started at tick 100
        // names ppid 400: that was an earlier process with that pid.
        t.on_exec(&exec(400, 1, 500, "/bin/new"), args(&["new"]));
        let ctx = t.on_exec(&exec(401, 400, 100, "/bin/c"), args(&["c"]));
        assert!(ctx.parent.is_none());
        assert!(ctx.parent_entity_id.is_none());
        // The record's parent start pins it exactly and gives the id anyway.
        let mut r = exec(402, 400, 100, "/bin/c");
        r.parent_start_boot_ns = Some(ns(90));
        let ctx = t.on_exec(&r, args(&["c"]));
        assert!(ctx.parent.is_none());
        assert_eq!(ctx.parent_entity_id, Some(ids().from_ticks(400, 90)));
        r.parent_start_boot_ns = Some(ns(500));
        r.pid = 403;
        r.start_boot_ns = ns(600);
        assert_eq!(t.on_exec(&r, args(&["c"])).parent.unwrap().pid, 400);
    }

    #[test]
    fn leaders_are_looked_up() {
        let mut t = table(100);
        let mut r = exec(500, 1, 10, "/usr/sbin/sshd");
        r.session_leader = 500;
        r.group_leader = 500;
        let own = t.on_exec(&r, args(&["sshd"]));
        assert_eq!(
            own.session_leader.as_ref().unwrap().entity_id,
            own.entity_id
        );
        let mut r = exec(501, 500, 20, "/usr/bin/ls");
        r.session_leader = 500;
        r.group_leader = 501;
        let ctx = t.on_exec(&r, args(&["ls"]));
        assert_eq!(ctx.session_leader.unwrap().entity_id, own.entity_id);
        assert_eq!(ctx.group_leader.unwrap().entity_id, ctx.entity_id);
        // A fork inherits session and group.
        t.on_fork(502, 501, ns(30), Some(ns(20)));
        assert_eq!(t.get(502).unwrap().session_leader, 500);
        assert_eq!(t.get(502).unwrap().group_leader, 501);
    }

    #[test]
    fn full_table_evicts_forks_first_then_least_recently_used() {
        let mut t = table(4);
        t.on_exec(&exec(1, 0, 1, "/sbin/init"), args(&["init"]));
        t.on_exec(&exec(2, 1, 2, "/bin/a"), args(&["a"]));
        t.on_fork(3, 2, ns(3), None);
        t.on_exec(&exec(4, 1, 4, "/bin/b"), args(&["b"]));
        assert_eq!(t.len(), 4);
        // Full: the fork goes.
        t.on_exec(&exec(5, 1, 5, "/bin/c"), args(&["c"]));
        assert!(t.get(3).is_none());
        assert_eq!(t.stats().evicted_forks, 1);
        // Next: the least recently used with an image. pid 1 was used as the
        // parent of 4 and 5, so 2 is older in use.
        t.on_exec(&exec(6, 1, 6, "/bin/d"), args(&["d"]));
        assert!(t.get(2).is_none());
        assert!(t.get(1).is_some());
        assert_eq!(t.stats().evicted_execs, 1);
        assert_eq!(t.len(), 4);
    }

    #[test]
    fn parses_stat_with_a_hostile_name() {
        let line = b"4242 (a) b (c) R) S 1 4242 4242 0 -1 4194560 100 0 0 0 1 2 0 0 20 0 1 0 987654 1000 100\n";
        let s = parse_stat(line).unwrap();
        assert_eq!(s.pid, 4242);
        assert_eq!(s.comm, b"a) b (c) R");
        assert_eq!(s.ppid, 1);
        assert_eq!(s.pgrp, 4242);
        assert_eq!(s.session, 4242);
        assert_eq!(s.flags, 4194560);
        assert_eq!(s.start_ticks, 987654);
        assert!(!s.kernel_thread());
        let kthread = b"2 (kthreadd) S 0 0 0 0 -1 2129984 0 0 0 0 0 0 0 0 20 0 1 0 0 0 0\n";
        assert!(parse_stat(kthread).unwrap().kernel_thread());
        for bad in [
            &b""[..],
            b"4242 (x",
            b"4242 x) S 1",
            b"4242 (x) S 1 2 3",
            b"abc (x) S 1 4242 4242 0 -1 0 0 0 0 0 0 0 0 0 20 0 1 0 5",
            b"4242 (x) S -1 4242 4242 0 -1 0 0 0 0 0 0 0 0 0 20 0 1 0 5",
        ] {
            assert!(
                parse_stat(bad).is_none(),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    #[test]
    fn seeds_this_process_and_its_parent_from_proc() {
        let mut t = table(Limits::DEFAULT_MAX_ENTRIES);
        let report = t.seed_from_proc().unwrap();
        assert!(report.seeded > 1, "{report:?}");
        let me = std::process::id();
        let e = t.get(me).unwrap();
        let exe = std::env::current_exe().unwrap();
        let exe = exe.as_os_str().as_encoded_bytes();
        let image = e.image.as_deref().unwrap();
        assert_eq!(image.executable(), &exe[..exe.len().min(512)]);
        let argv0 = std::env::args_os().next().unwrap();
        assert_eq!(image.args().next().unwrap(), argv0.as_encoded_bytes());
        assert_eq!(e.origin, Origin::Seeded);
        assert!(e.reports_exit());
        let stat = read_stat(me).unwrap();
        assert_eq!(e.start_ticks, stat.start_ticks);
        assert_eq!(e.start_boot_ns, boot_ns_from_ticks(stat.start_ticks));
        assert_eq!(e.entity_id, ids().from_ticks(me, stat.start_ticks));
        let parent = t.get(stat.ppid).expect("the test runner's parent is alive");
        assert_eq!(e.parent_entity_id, Some(parent.entity_id));
        // Seeding again keeps what is there.
        assert_eq!(t.seed_pid(me), SeedOne::AlreadyKnown);
        // Kernel threads are marked (kthreadd is pid 2 in the root pid namespace).
        if let Some(k) = t
            .get(2)
            .filter(|k| k.image.as_ref().unwrap().name() == b"kthreadd")
        {
            assert!(k.kernel_thread);
        }
    }

    #[test]
    fn the_exec_that_made_a_seeded_image_is_not_a_second_exec() {
        let mut t = table(100);
        let before = boot_ns_now();
        assert_eq!(t.seed_pid(std::process::id()), SeedOne::Seeded);
        let e = t.get(std::process::id()).unwrap().clone();
        let image = e.image.clone().unwrap();
        let mut rec = ExecRecord {
            pid: e.pid,
            ppid: e.ppid,
            start_boot_ns: e.start_boot_ns,
            parent_start_boot_ns: None,
            session_leader: e.session_leader,
            group_leader: e.group_leader,
            boot_ns: before,
            executable: b"/bin/new",
            name: b"new",
        };
        // The record of an exec from before the /proc read, consumed after it.
        let ctx = t.on_exec(&rec, args(&["new"]));
        assert!(ctx.previous.is_none());
        assert_eq!(ctx.entity_id, e.entity_id);
        assert_eq!(ctx.exec_count, 1);
        // An exec after the read is a second one.
        let mut t = table(100);
        t.seed_pid(std::process::id());
        rec.boot_ns = boot_ns_now();
        let ctx = t.on_exec(&rec, args(&["new"]));
        assert_eq!(ctx.previous.as_deref(), Some(&*image));
        assert_eq!(ctx.exec_count, 2);
        assert_eq!(ctx.entity_id, e.entity_id);
    }
}
