//! `process.hash.sha256`: the executable's SHA-256, computed off the event
//! path by worker threads and cached by the file's identity.
//!
//! A hash is reported only when the bytes hashed are provably those of the
//! file that ran: the worker opens `/proc/PID/exe` (the very file the process
//! maps) while the process lives, else the path, and hashes only if the opened
//! file's device, inode, size, mtime and ctime equal the identity the exec
//! record carried, before and after reading. Otherwise the outcome says why
//! not ([`SkipReason`]).
//!
//! The daemon keeps event order and holds no event longer than the hold time:
//! [`Hasher::lookup`] answers from the cache at once, [`Hasher::request`]
//! starts a job and gives a [`Ticket`], and [`OrderedHold`] keeps events in
//! arrival order until the hash at the front is ready or its deadline passed.
//!
//! Cost of a first exec of a large binary: one read of the file by a worker
//! (benches/lineage.rs measures it); the event waits for it up to the hold time
//! and goes out with `busy` if it takes longer; the next exec hits the cache.

use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::fs::File;
use std::io::{self, Read};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Receiver, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use lru::LruCache;
use sha2::{Digest, Sha256};

/// Default `--hash-max-size`: 64 MiB.
pub const DEFAULT_MAX_SIZE: u64 = 64 << 20;

/// Bytes read per call: large enough that syscalls cost little next to the
/// hashing, small enough to stay in L2.
const READ_CHUNK: usize = 256 << 10;

/// Multigrain timestamps (Linux 6.13+) keep a flag in bit 31 of the inode's
/// ctime nanoseconds; stat() never shows it.
const CTIME_NSEC_MASK: u32 = !(1 << 31);

/// What identifies one version of a file: any write changes size, mtime or
/// ctime; a replacement changes device or inode.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct FileIdentity {
    /// Device as stat() shows it (`st_dev`); see [`dev_from_kernel`].
    pub dev: u64,
    pub ino: u64,
    pub size: u64,
    pub mtime_sec: i64,
    pub mtime_nsec: u32,
    pub ctime_sec: i64,
    pub ctime_nsec: u32,
}

impl FileIdentity {
    /// From the inode fields an exec record carries (`s_dev` as the kernel
    /// keeps it, raw `i_ctime_nsec` allowed).
    pub fn from_kernel(
        s_dev: u32,
        ino: u64,
        size: u64,
        mtime: (i64, u32),
        ctime: (i64, u32),
    ) -> FileIdentity {
        FileIdentity {
            dev: dev_from_kernel(s_dev),
            ino,
            size,
            mtime_sec: mtime.0,
            mtime_nsec: mtime.1,
            ctime_sec: ctime.0,
            ctime_nsec: ctime.1 & CTIME_NSEC_MASK,
        }
    }

    pub fn from_metadata(m: &std::fs::Metadata) -> FileIdentity {
        FileIdentity {
            dev: m.dev(),
            ino: m.ino(),
            size: m.size(),
            mtime_sec: m.mtime(),
            mtime_nsec: m.mtime_nsec() as u32,
            ctime_sec: m.ctime(),
            ctime_nsec: m.ctime_nsec() as u32,
        }
    }

    /// stat() of a path (follows symlinks, as exec does).
    pub fn of_path(path: &Path) -> io::Result<FileIdentity> {
        Ok(FileIdentity::from_metadata(&std::fs::metadata(path)?))
    }
}

/// The kernel's internal `dev_t` (`MKDEV`: major in the top 12 bits, minor in
/// the low 20), as in `inode->i_sb->s_dev`, to the `st_dev` that stat() gives.
pub fn dev_from_kernel(s_dev: u32) -> u64 {
    libc::makedev(s_dev >> 20, s_dev & 0xf_ffff)
}

/// A SHA-256 digest.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Sha256Digest(pub [u8; 32]);

impl Sha256Digest {
    /// Lowercase hex, as `sha256sum` prints it.
    pub fn hex(&self) -> [u8; 64] {
        const HEX: &[u8; 16] = b"0123456789abcdef";
        let mut out = [0u8; 64];
        for (i, b) in self.0.iter().enumerate() {
            out[2 * i] = HEX[(b >> 4) as usize];
            out[2 * i + 1] = HEX[(b & 15) as usize];
        }
        out
    }
}

impl fmt::Display for Sha256Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(std::str::from_utf8(&self.hex()).expect("hex is ASCII"))
    }
}

impl fmt::Debug for Sha256Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Sha256Digest({self})")
    }
}

/// Why an event carries no hash (`execwatch.hash.skipped`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum SkipReason {
    /// Larger than `--hash-max-size`.
    TooLarge,
    /// Neither the process nor the path exists any more.
    Gone,
    /// What could be opened is not the file that ran (replaced or rewritten).
    Changed,
    /// Open or read refused (permissions, not a regular file, I/O error).
    Unreadable,
    /// The hasher had more work than it could do within the hold time: the
    /// event went out without waiting longer. The job, if queued, still fills
    /// the cache for the next exec.
    Busy,
    /// A FUSE server gives the file's bytes (the kernel says so at exec):
    /// not read, since the server may answer the daemon with other bytes
    /// than it gave the exec, or never answer.
    Fuse,
}

impl SkipReason {
    pub fn as_str(self) -> &'static str {
        match self {
            SkipReason::TooLarge => "too_large",
            SkipReason::Gone => "gone",
            SkipReason::Changed => "changed",
            SkipReason::Unreadable => "unreadable",
            SkipReason::Busy => "busy",
            SkipReason::Fuse => "fuse",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HashOutcome {
    Hash(Sha256Digest),
    Skipped(SkipReason),
}

/// Which file to hash: the process that ran it (0: none to ask), its path
/// if it is worth looking for ([`reachable_path`]), and the identity the
/// exec record saw.
#[derive(Clone, Debug)]
pub struct HashRequest {
    pub pid: u32,
    pub path: Option<PathBuf>,
    pub identity: FileIdentity,
}

/// The executable's path as the daemon may look for it once the process is
/// gone: an absolute path, whole (not a truncated tail, not a pseudo name
/// like `memfd:`). It is resolved in the daemon's own mount namespace, where
/// a container's or a chrooted process's path may name another file: the
/// identity check then says `changed`. The daemon's namespace is not
/// compared with the process's: the shipped unit gives the daemon one of its
/// own (`PrivateMounts=`), a copy of the host's, and cannot read PID 1's.
pub fn reachable_path(ev: &crate::event::ExecEvent) -> Option<PathBuf> {
    use std::os::unix::ffi::OsStrExt;
    let whole = !(ev.exe_truncated || ev.exe_read_failed || ev.exe_pseudo);
    (whole && ev.executable.first() == Some(&b'/'))
        .then(|| PathBuf::from(std::ffi::OsStr::from_bytes(&ev.executable)))
}

/// A pending hash; events waiting for the same file share one.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Ticket(u64);

/// Answer to [`Hasher::request`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Requested {
    /// Known now (cache hit, too large, or no room in the queue).
    Ready(HashOutcome),
    /// A worker will answer; collect with [`HashResults::take`].
    Pending(Ticket),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HashConfig {
    /// Larger files are not hashed (`too_large`).
    pub max_size: u64,
    /// Hashes kept, least recently used dropped first.
    pub cache_entries: usize,
    /// Worker threads.
    pub workers: usize,
    /// Distinct files queued before requests are answered `busy`.
    pub queue_len: usize,
    /// A job running longer is stuck (a FUSE server that stopped answering
    /// holds its open, stat or read for ever): another worker takes over,
    /// and the stuck file's device is not hashed while it stays stuck.
    pub stuck_after: Duration,
}

/// Most workers started in place of stuck ones: each stuck one costs an
/// unanswering file system of its own, on a device not tried again.
const REPLACEMENTS_MAX: usize = 16;

impl Default for HashConfig {
    fn default() -> HashConfig {
        HashConfig {
            max_size: DEFAULT_MAX_SIZE,
            cache_entries: 8192,
            workers: 1,
            queue_len: 256,
            // Slow storage reads 64 MiB well within it.
            stuck_after: Duration::from_secs(30),
        }
    }
}

/// Counters for metrics and the summary.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct HashStats {
    pub cache_hits: u64,
    pub cache_misses: u64,
    /// Files hashed by the workers.
    pub hashed: u64,
    pub bytes_hashed: u64,
    pub too_large: u64,
    pub gone: u64,
    pub changed: u64,
    pub unreadable: u64,
    /// Requests refused because the queue was full.
    pub busy: u64,
    /// Executables a FUSE server gives, not read.
    pub fuse: u64,
}

struct Job {
    ticket: u64,
    req: HashRequest,
}

struct JobDone {
    ticket: u64,
    identity: FileIdentity,
    outcome: HashOutcome,
    bytes: u64,
}

/// Collects worker answers for tickets; [`OrderedHold`] uses it.
pub trait HashResults {
    /// The outcome for `ticket` if it is known; each waiter takes it once.
    fn take(&mut self, ticket: Ticket) -> Option<HashOutcome>;
    /// A waiter gives up on `ticket` (its event went out without it).
    fn abandon(&mut self, ticket: Ticket);
}

/// The daemon's handle on the hashing workers and the cache. Owned by the
/// daemon thread; the workers only read files.
pub struct Hasher {
    cfg: HashConfig,
    cache: LruCache<FileIdentity, Sha256Digest>,
    jobs: Option<SyncSender<Job>>,
    results: Receiver<JobDone>,
    /// Ticket -> events waiting for it.
    pending: HashMap<u64, u32>,
    by_identity: HashMap<FileIdentity, u64>,
    done: HashMap<u64, (HashOutcome, u32)>,
    next_ticket: u64,
    stop: Arc<AtomicBool>,
    workers: Vec<Worker>,
    /// Kept to start a worker in place of a stuck one.
    job_rx: Arc<Mutex<Receiver<Job>>>,
    done_tx: mpsc::Sender<JobDone>,
    /// Devices of files workers are stuck on, and how many: not hashed.
    stuck_devices: HashMap<u64, u32>,
    stats: HashStats,
}

/// A worker thread, since when and on which device it runs a job, and the
/// device it is stuck on.
struct Worker {
    handle: JoinHandle<()>,
    busy: Arc<Mutex<Option<(Instant, u64)>>>,
    stuck_on: Option<u64>,
}

fn spawn_worker(
    n: usize,
    job_rx: &Arc<Mutex<Receiver<Job>>>,
    done_tx: &mpsc::Sender<JobDone>,
    stop: &Arc<AtomicBool>,
    max_size: u64,
) -> io::Result<Worker> {
    let (job_rx, done_tx, stop) = (Arc::clone(job_rx), done_tx.clone(), Arc::clone(stop));
    let busy = Arc::new(Mutex::new(None));
    let slot = Arc::clone(&busy);
    let handle = std::thread::Builder::new()
        .name(format!("exe-hash-{n}"))
        .spawn(move || worker(&job_rx, &done_tx, &stop, max_size, &slot))?;
    Ok(Worker {
        handle,
        busy,
        stuck_on: None,
    })
}

impl Hasher {
    pub fn new(cfg: HashConfig) -> io::Result<Hasher> {
        let cache_entries =
            std::num::NonZeroUsize::new(cfg.cache_entries.max(1)).expect("max(1) is non-zero");
        let (job_tx, job_rx) = mpsc::sync_channel::<Job>(cfg.queue_len.max(1));
        let (done_tx, done_rx) = mpsc::channel();
        let job_rx = Arc::new(Mutex::new(job_rx));
        let stop = Arc::new(AtomicBool::new(false));
        let workers = (0..cfg.workers.max(1))
            .map(|n| spawn_worker(n, &job_rx, &done_tx, &stop, cfg.max_size))
            .collect::<io::Result<Vec<_>>>()?;
        Ok(Hasher {
            cfg,
            cache: LruCache::new(cache_entries),
            jobs: Some(job_tx),
            results: done_rx,
            pending: HashMap::new(),
            by_identity: HashMap::new(),
            done: HashMap::new(),
            next_ticket: 0,
            stop,
            workers,
            job_rx,
            done_tx,
            stuck_devices: Default::default(),
            stats: HashStats::default(),
        })
    }

    pub fn config(&self) -> &HashConfig {
        &self.cfg
    }

    pub fn stats(&self) -> HashStats {
        self.stats
    }

    /// The cached hash of this version of a file, at once.
    pub fn lookup(&mut self, identity: &FileIdentity) -> Option<Sha256Digest> {
        let hit = self.cache.get(identity).copied();
        if hit.is_some() {
            self.stats.cache_hits += 1;
        }
        hit
    }

    /// An executable whose bytes a FUSE server gives: neither read nor
    /// looked up (its server chooses the identity it reports, so a cached
    /// hash of a file that once had it would be believed).
    pub fn refuse_fuse(&mut self) -> HashOutcome {
        self.stats.fuse += 1;
        HashOutcome::Skipped(SkipReason::Fuse)
    }

    /// The hash if known now, else a ticket for a worker's answer.
    pub fn request(&mut self, req: HashRequest) -> Requested {
        if let Some(h) = self.lookup(&req.identity) {
            return Requested::Ready(HashOutcome::Hash(h));
        }
        self.stats.cache_misses += 1;
        if req.identity.size > self.cfg.max_size {
            self.stats.too_large += 1;
            return Requested::Ready(HashOutcome::Skipped(SkipReason::TooLarge));
        }
        if self.stuck_devices.contains_key(&req.identity.dev) {
            self.stats.unreadable += 1;
            return Requested::Ready(HashOutcome::Skipped(SkipReason::Unreadable));
        }
        if let Some(&t) = self.by_identity.get(&req.identity) {
            if let Some(w) = self.pending.get_mut(&t) {
                *w += 1;
                return Requested::Pending(Ticket(t));
            }
        }
        let ticket = self.next_ticket;
        let identity = req.identity;
        let Some(jobs) = &self.jobs else {
            return Requested::Ready(HashOutcome::Skipped(SkipReason::Busy));
        };
        match jobs.try_send(Job { ticket, req }) {
            Ok(()) => {
                self.next_ticket += 1;
                self.pending.insert(ticket, 1);
                self.by_identity.insert(identity, ticket);
                Requested::Pending(Ticket(ticket))
            }
            Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => {
                self.stats.busy += 1;
                Requested::Ready(HashOutcome::Skipped(SkipReason::Busy))
            }
        }
    }

    /// Collect the workers' answers: hashes go into the cache, outcomes to
    /// their waiters. Returns how many jobs finished.
    pub fn poll_ready(&mut self) -> usize {
        self.replace_stuck();
        let mut n = 0;
        while let Ok(d) = self.results.try_recv() {
            n += 1;
            match d.outcome {
                HashOutcome::Hash(h) => {
                    self.stats.hashed += 1;
                    self.stats.bytes_hashed += d.bytes;
                    self.cache.put(d.identity, h);
                }
                HashOutcome::Skipped(r) => match r {
                    SkipReason::TooLarge => self.stats.too_large += 1,
                    SkipReason::Gone => self.stats.gone += 1,
                    SkipReason::Changed => self.stats.changed += 1,
                    SkipReason::Unreadable => self.stats.unreadable += 1,
                    SkipReason::Busy => self.stats.busy += 1,
                    SkipReason::Fuse => self.stats.fuse += 1,
                },
            }
            if self.by_identity.get(&d.identity) == Some(&d.ticket) {
                self.by_identity.remove(&d.identity);
            }
            if let Some(waiters) = self.pending.remove(&d.ticket) {
                if waiters > 0 {
                    self.done.insert(d.ticket, (d.outcome, waiters));
                }
            }
        }
        n
    }

    /// A worker whose job runs past `stuck_after` is left to it: its file's
    /// device is not tried while it stays stuck (a slow file system that
    /// does answer in the end gets its device back), and a new worker takes
    /// the queue.
    fn replace_stuck(&mut self) {
        let now = Instant::now();
        let mut newly = 0;
        for w in &mut self.workers {
            let busy = *w.busy.lock().unwrap_or_else(|p| p.into_inner());
            let stuck = busy
                .filter(|(since, _)| now.duration_since(*since) >= self.cfg.stuck_after)
                .map(|(_, dev)| dev);
            if stuck == w.stuck_on {
                continue;
            }
            if let Some(dev) = w.stuck_on.take() {
                // Another worker may be stuck on the same device still.
                if let Some(n) = self.stuck_devices.get_mut(&dev) {
                    *n -= 1;
                    if *n == 0 {
                        self.stuck_devices.remove(&dev);
                    }
                }
            }
            if let Some(dev) = stuck {
                w.stuck_on = Some(dev);
                newly += 1;
                *self.stuck_devices.entry(dev).or_default() += 1;
                tracing::warn!(
                    dev,
                    "an executable hasher is stuck on a file (a file system that does not answer?): its device is not hashed while it is"
                );
            }
        }
        for _ in 0..newly {
            // Workers beyond the configured ones are replacements.
            if self.workers.len() >= self.cfg.workers.max(1) + REPLACEMENTS_MAX {
                break;
            }
            let n = self.workers.len();
            match spawn_worker(
                n,
                &self.job_rx,
                &self.done_tx,
                &self.stop,
                self.cfg.max_size,
            ) {
                Ok(w) => self.workers.push(w),
                Err(e) => tracing::warn!(error = %e, "no new executable hasher"),
            }
        }
    }

    /// Jobs queued or running.
    pub fn in_flight(&self) -> usize {
        self.pending.len()
    }

    /// Wait (for tests and shutdown) until no job is in flight or `timeout`.
    pub fn wait_idle(&mut self, timeout: Duration) -> bool {
        let end = Instant::now() + timeout;
        loop {
            self.poll_ready();
            if self.pending.is_empty() {
                return true;
            }
            if Instant::now() >= end {
                return false;
            }
            std::thread::sleep(Duration::from_millis(1));
        }
    }
}

impl HashResults for Hasher {
    fn take(&mut self, ticket: Ticket) -> Option<HashOutcome> {
        if !self.done.contains_key(&ticket.0) {
            self.poll_ready();
        }
        let (outcome, left) = self.done.get_mut(&ticket.0)?;
        let outcome = *outcome;
        *left -= 1;
        if *left == 0 {
            self.done.remove(&ticket.0);
        }
        Some(outcome)
    }

    fn abandon(&mut self, ticket: Ticket) {
        if let Some(w) = self.pending.get_mut(&ticket.0) {
            *w = w.saturating_sub(1);
        } else if let Some((_, left)) = self.done.get_mut(&ticket.0) {
            *left -= 1;
            if *left == 0 {
                self.done.remove(&ticket.0);
            }
        }
    }
}

/// How long a stopping daemon waits for its workers. One stops within a
/// read chunk, unless a read never returns (a stalled FUSE server): that
/// one is left behind, not waited for, so that the daemon still stops.
const WORKER_STOP_WAIT: Duration = Duration::from_secs(1);

impl Drop for Hasher {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        self.jobs = None;
        let until = Instant::now() + WORKER_STOP_WAIT;
        while self.workers.iter().any(|w| !w.handle.is_finished()) && Instant::now() < until {
            std::thread::sleep(Duration::from_millis(5));
        }
        for w in self.workers.drain(..).map(|w| w.handle) {
            if w.is_finished() {
                let _ = w.join();
            } else {
                tracing::warn!(
                    thread = w.thread().name().unwrap_or("exe-hash"),
                    "an executable hasher is stuck in a read (a file system that does not answer?): left behind"
                );
            }
        }
    }
}

fn worker(
    jobs: &Mutex<Receiver<Job>>,
    done: &mpsc::Sender<JobDone>,
    stop: &AtomicBool,
    max_size: u64,
    busy: &Mutex<Option<(Instant, u64)>>,
) {
    let mut buf = vec![0u8; READ_CHUNK].into_boxed_slice();
    loop {
        // The lock is held only while waiting for the next job.
        let job = match jobs.lock() {
            Ok(rx) => rx.recv(),
            Err(_) => return,
        };
        let Ok(job) = job else { return };
        if stop.load(Ordering::Relaxed) {
            return;
        }
        let set = |v| *busy.lock().unwrap_or_else(|p| p.into_inner()) = v;
        set(Some((Instant::now(), job.req.identity.dev)));
        let (outcome, bytes) = hash_verified(&job.req, max_size, &mut buf, stop);
        set(None);
        let d = JobDone {
            ticket: job.ticket,
            identity: job.req.identity,
            outcome,
            bytes,
        };
        if done.send(d).is_err() {
            return;
        }
    }
}

/// Hash the file that ran, or say why not. Returns the bytes read too.
pub fn hash_verified(
    req: &HashRequest,
    max_size: u64,
    buf: &mut [u8],
    stop: &AtomicBool,
) -> (HashOutcome, u64) {
    if req.identity.size > max_size {
        return (HashOutcome::Skipped(SkipReason::TooLarge), 0);
    }
    let proc_exe = (req.pid != 0).then(|| PathBuf::from(format!("/proc/{}/exe", req.pid)));
    let mut changed = false;
    let mut unreadable = false;
    // /proc/PID/exe is a magic link to the very file; the path, one that
    // anyone who can write a directory on it may have swapped since.
    let tries = proc_exe
        .iter()
        .map(|p| (p, Follow::MagicLink))
        .chain(req.path.iter().map(|p| (p, Follow::Nothing)));
    for (path, follow) in tries {
        let file = match open_if_same(path, follow, &req.identity) {
            Ok(Some(f)) => f,
            Ok(None) => {
                changed = true;
                continue;
            }
            Err(e) => {
                match e.raw_os_error() {
                    Some(libc::ENOENT | libc::ESRCH | libc::ENOTDIR) => {}
                    // A symlink now on the path, or a user's FUSE mount:
                    // not the file that ran.
                    Some(libc::ELOOP | libc::EXDEV) => changed = true,
                    _ => unreadable = true,
                }
                continue;
            }
        };
        match hash_if_same(&file, &req.identity, buf, stop) {
            Ok(Some((h, n))) => return (HashOutcome::Hash(h), n),
            Ok(None) => changed = true,
            Err(_) => unreadable = true,
        }
    }
    let reason = if changed {
        SkipReason::Changed
    } else if unreadable {
        SkipReason::Unreadable
    } else {
        SkipReason::Gone
    };
    (HashOutcome::Skipped(reason), 0)
}

/// Which links a path to hash may go through.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Follow {
    /// `/proc/PID/exe`: its own magic link, nothing else is swappable.
    MagicLink,
    /// A path from the record: no symlink anywhere on it.
    Nothing,
}

/// Open `path` for reading only if it is a regular file with `identity`.
/// It is first taken as a bare reference (`O_PATH`), which runs no driver's
/// open and waits on no FIFO: a device or FIFO an attacker put in place of
/// the binary is never opened by the daemon, which runs as root. `Ok(None)`:
/// something else is there.
fn open_if_same(path: &Path, follow: Follow, identity: &FileIdentity) -> io::Result<Option<File>> {
    use nix::fcntl::OFlag;
    use std::os::fd::AsRawFd;
    let flags = OFlag::O_PATH | OFlag::O_CLOEXEC;
    let reference = match follow {
        Follow::MagicLink => nix::fcntl::open(path, flags, nix::sys::stat::Mode::empty()),
        // A user's FUSE mount on the path (`EXDEV`) serves another file
        // than the one that ran, which was not on FUSE (else not asked); a
        // mount table that cannot be read is `EIO`: unreadable.
        Follow::Nothing => crate::containers::trust::open_path_outside_users_fuse(path),
    }
    .map_err(io::Error::from)?;
    let reference = File::from(reference);
    if !is_the_file(&reference, identity)? {
        return Ok(None);
    }
    // Opened through the reference: the same inode, whatever the path
    // names now.
    std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY)
        .open(format!("/proc/self/fd/{}", reference.as_raw_fd()))
        .map(Some)
}

/// Whether `file` has this identity; an error if it does but is no regular
/// file (a directory with the identity of what ran cannot be read as it).
fn is_the_file(file: &File, identity: &FileIdentity) -> io::Result<bool> {
    let m = file.metadata()?;
    if FileIdentity::from_metadata(&m) != *identity {
        return Ok(false);
    }
    if !m.file_type().is_file() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "not a regular file",
        ));
    }
    Ok(true)
}

/// Hash `file` if it has this identity before and after the read and the read
/// gave exactly `size` bytes; Ok(None) if not; an error if it is no regular
/// file or cannot be read.
fn hash_if_same(
    file: &File,
    identity: &FileIdentity,
    buf: &mut [u8],
    stop: &AtomicBool,
) -> io::Result<Option<(Sha256Digest, u64)>> {
    if !is_the_file(file, identity)? {
        return Ok(None);
    }
    let mut h = Sha256::new();
    let mut n = 0u64;
    let mut reader = file;
    loop {
        if stop.load(Ordering::Relaxed) {
            return Err(io::Error::new(io::ErrorKind::Interrupted, "stopping"));
        }
        match reader.read(buf) {
            Ok(0) => break,
            Ok(k) => {
                n += k as u64;
                if n > identity.size {
                    return Ok(None);
                }
                h.update(&buf[..k]);
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        }
    }
    let after = FileIdentity::from_metadata(&file.metadata()?);
    if n != identity.size || after != *identity {
        return Ok(None);
    }
    Ok(Some((Sha256Digest(h.finalize().into()), n)))
}

/// Events held in arrival order until the hash they wait for is ready or
/// their deadline passes; nothing is dropped. Generic over the event. An
/// event may also wait to be settled by its owner (a new container's
/// runtime state), until a time of its own.
pub struct OrderedHold<E> {
    queue: VecDeque<Held<E>>,
    max_hold: Duration,
    max_len: usize,
    /// Bytes the held events may take ([`OrderedHold::with_max_bytes`]).
    max_bytes: usize,
    bytes: usize,
    weigh: fn(&E) -> usize,
    stats: HoldStats,
}

struct Held<E> {
    event: E,
    /// Its bytes, as `weigh` gave them when it came in.
    weight: usize,
    hash: HeldHash,
    deadline: Instant,
    /// Waits to be settled (see [`OrderedHold::release_settling`]) until then.
    unsettled_until: Option<Instant>,
}

enum HeldHash {
    Known(Option<HashOutcome>),
    Pending(Ticket),
}

/// How held events left.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct HoldStats {
    /// Released with their hash known (including events that needed none).
    pub ready: u64,
    /// Released without a hash at their deadline.
    pub deadline: u64,
    /// Released without a hash because too many events, or too many bytes
    /// of them, were held.
    pub overflow: u64,
    /// Released unsettled, at their settling deadline or by overflow.
    pub unsettled: u64,
}

impl<E> OrderedHold<E> {
    /// Hold events at most `max_hold`, and at most `max_len` of them (past
    /// that the oldest goes out without waiting for its hash).
    pub fn new(max_hold: Duration, max_len: usize) -> OrderedHold<E> {
        OrderedHold {
            queue: VecDeque::new(),
            max_hold,
            max_len: max_len.max(1),
            max_bytes: usize::MAX,
            bytes: 0,
            weigh: |_| 0,
            stats: HoldStats::default(),
        }
    }

    /// Also hold at most `max_bytes` of events, as `weigh` counts them: the
    /// events of a traced process can be large (argv, paths, environment),
    /// and it may keep a hash pending on purpose.
    pub fn with_max_bytes(mut self, max_bytes: usize, weigh: fn(&E) -> usize) -> OrderedHold<E> {
        self.max_bytes = max_bytes;
        self.weigh = weigh;
        self
    }

    /// Bytes of the events held, as `weigh` counts them.
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// Add an event: `hash` is None for an event that carries no hash (an
    /// exit, a failed exec, hashing off); it still keeps its place in order.
    pub fn push(&mut self, event: E, hash: Option<Requested>, now: Instant) {
        self.push_unsettled(event, hash, None, now);
    }

    /// [`OrderedHold::push`] for an event that also waits to be settled, at
    /// most until `until` (and never past the hold's own limit).
    pub fn push_unsettled(
        &mut self,
        event: E,
        hash: Option<Requested>,
        until: Option<Instant>,
        now: Instant,
    ) {
        let deadline = now + self.max_hold;
        let hash = match hash {
            None => HeldHash::Known(None),
            Some(Requested::Ready(o)) => HeldHash::Known(Some(o)),
            Some(Requested::Pending(t)) => HeldHash::Pending(t),
        };
        let weight = (self.weigh)(&event);
        self.bytes += weight;
        self.queue.push_back(Held {
            event,
            weight,
            hash,
            deadline,
            unsettled_until: until.map(|u| u.min(deadline)),
        });
    }

    /// Send out, in order, every event at the front whose hash is known, whose
    /// deadline is `now` or past, or that overflows the queue. Returns how
    /// many went out.
    pub fn release(
        &mut self,
        results: &mut impl HashResults,
        now: Instant,
        out: impl FnMut(E, Option<HashOutcome>),
    ) -> usize {
        self.release_settling(results, now, |_| true, out)
    }

    /// [`OrderedHold::release`], where an event that waits to be settled goes
    /// out once `settle` says it is (it may update the event), its settling
    /// deadline passed, or it overflows the queue.
    pub fn release_settling(
        &mut self,
        results: &mut impl HashResults,
        now: Instant,
        mut settle: impl FnMut(&mut E) -> bool,
        mut out: impl FnMut(E, Option<HashOutcome>),
    ) -> usize {
        let mut n = 0;
        loop {
            let overflow = self.queue.len() > self.max_len || self.bytes > self.max_bytes;
            let Some(front) = self.queue.front_mut() else {
                break;
            };
            if let Some(until) = front.unsettled_until {
                let settled = settle(&mut front.event);
                if !settled && now < until && !overflow {
                    break;
                }
                if !settled {
                    self.stats.unsettled += 1;
                }
                front.unsettled_until = None;
            }
            let outcome = match front.hash {
                HeldHash::Known(o) => {
                    self.stats.ready += 1;
                    o
                }
                HeldHash::Pending(t) => match results.take(t) {
                    Some(o) => {
                        self.stats.ready += 1;
                        Some(o)
                    }
                    None if now >= front.deadline || overflow => {
                        results.abandon(t);
                        if now >= front.deadline {
                            self.stats.deadline += 1;
                        } else {
                            self.stats.overflow += 1;
                        }
                        Some(HashOutcome::Skipped(SkipReason::Busy))
                    }
                    None => break,
                },
            };
            let held = self.queue.pop_front().expect("front exists");
            self.bytes -= held.weight;
            out(held.event, outcome);
            n += 1;
        }
        n
    }

    /// Send out everything now (at shutdown): hashes not ready are `busy`.
    pub fn release_all(
        &mut self,
        results: &mut impl HashResults,
        settle: impl FnMut(&mut E) -> bool,
        mut out: impl FnMut(E, Option<HashOutcome>),
    ) -> usize {
        // Every deadline, settling ones included, is at most the last one.
        let far = self
            .queue
            .back()
            .map(|h| h.deadline)
            .unwrap_or_else(Instant::now);
        let n = self.release_settling(results, far, settle, &mut out);
        debug_assert!(self.queue.is_empty());
        n
    }

    /// When the front event must go out at the latest: the daemon's poll
    /// timeout should not pass it.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.queue.front().map(|h| h.deadline)
    }

    pub fn len(&self) -> usize {
        self.queue.len()
    }

    pub fn is_empty(&self) -> bool {
        self.queue.is_empty()
    }

    pub fn stats(&self) -> HoldStats {
        self.stats
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_whole_absolute_path_is_looked_for() {
        let ev = crate::event::ExecEvent {
            executable: b"/usr/bin/tool".to_vec(),
            ..Default::default()
        };
        assert_eq!(reachable_path(&ev), Some(PathBuf::from("/usr/bin/tool")));
        let with = |f: fn(&mut crate::event::ExecEvent)| {
            let mut e = ev.clone();
            f(&mut e);
            reachable_path(&e)
        };
        assert_eq!(with(|e| e.exe_truncated = true), None);
        assert_eq!(with(|e| e.exe_read_failed = true), None);
        assert_eq!(with(|e| e.exe_pseudo = true), None);
        assert_eq!(with(|e| e.executable = b"memfd:x".to_vec()), None);
        assert_eq!(with(|e| e.executable = b"bin/tool".to_vec()), None);
        assert_eq!(with(|e| e.executable.clear()), None);
        // From the namespace's root, not the process's: as good as any here.
        assert!(with(|e| e.exe_outside_root = true).is_some());
    }

    #[test]
    fn hex_is_lowercase_like_sha256sum() {
        let d = Sha256Digest(Sha256::digest(b"abc").into());
        assert_eq!(
            d.to_string(),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    #[test]
    fn kernel_dev_maps_to_st_dev() {
        // sda1: major 8, minor 1.
        assert_eq!(dev_from_kernel(8 << 20 | 1), 0x801);
        // An anonymous device with a minor above 255 (overlayfs, tmpfs).
        assert_eq!(dev_from_kernel(0x123), 0x10_0023);
        // A major above 255 (device-mapper can be 253, nvme 259).
        assert_eq!(dev_from_kernel(259 << 20 | 2), libc::makedev(259, 2));
        assert_eq!(libc::major(dev_from_kernel(259 << 20 | 70_000)), 259);
        assert_eq!(libc::minor(dev_from_kernel(259 << 20 | 70_000)), 70_000);
    }

    #[test]
    fn multigrain_flag_is_not_part_of_the_identity() {
        let a = FileIdentity::from_kernel(1, 2, 3, (4, 5), (6, 7));
        let b = FileIdentity::from_kernel(1, 2, 3, (4, 5), (6, 7 | 1 << 31));
        assert_eq!(a, b);
        assert_eq!(b.ctime_nsec, 7);
    }

    #[test]
    fn skip_reasons_have_their_schema_names() {
        let all = [
            SkipReason::TooLarge,
            SkipReason::Gone,
            SkipReason::Changed,
            SkipReason::Unreadable,
            SkipReason::Busy,
            SkipReason::Fuse,
        ];
        let names: Vec<_> = all.iter().map(|r| r.as_str()).collect();
        assert_eq!(
            names,
            ["too_large", "gone", "changed", "unreadable", "busy", "fuse"]
        );
    }

    /// Results that become known at given times, for the hold's logic.
    struct Timed {
        now: Instant,
        ready_at: HashMap<u64, Instant>,
        taken: Vec<u64>,
        abandoned: Vec<u64>,
    }

    impl HashResults for Timed {
        fn take(&mut self, t: Ticket) -> Option<HashOutcome> {
            let at = *self.ready_at.get(&t.0)?;
            (self.now >= at).then(|| {
                self.taken.push(t.0);
                HashOutcome::Hash(Sha256Digest([t.0 as u8; 32]))
            })
        }
        fn abandon(&mut self, t: Ticket) {
            self.abandoned.push(t.0);
        }
    }

    proptest::proptest! {
        /// Any mix of events with no hash, known hashes and pending ones that
        /// finish late, early or never: all come out, in order, none after
        /// its deadline, and a waiter only gives up at the deadline.
        #[test]
        fn hold_keeps_order_and_deadlines(
            steps in proptest::collection::vec((0u8..4, 0u64..2_000, 0u64..50), 1..200),
            max_len in 1usize..300,
        ) {
            let hold_for = Duration::from_millis(1000);
            let start = Instant::now();
            let mut res = Timed { now: start, ready_at: HashMap::new(), taken: vec![], abandoned: vec![] };
            let mut hold = OrderedHold::new(hold_for, max_len);
            let mut pushed = Vec::new();
            let mut out: Vec<(usize, Instant, Option<HashOutcome>)> = Vec::new();
            let mut deadlines = Vec::new();
            for (i, (kind, finish_ms, advance_ms)) in steps.iter().copied().enumerate() {
                let hash = match kind {
                    0 => None,
                    1 => Some(Requested::Ready(HashOutcome::Skipped(SkipReason::TooLarge))),
                    _ => {
                        let t = i as u64;
                        if kind == 2 {
                            res.ready_at.insert(t, res.now + Duration::from_millis(finish_ms));
                        } // kind 3: never finishes
                        Some(Requested::Pending(Ticket(t)))
                    }
                };
                hold.push(i, hash, res.now);
                pushed.push(i);
                deadlines.push(res.now + hold_for);
                proptest::prop_assert!(hold.len() <= max_len + 1);
                let now = res.now;
                hold.release(&mut res, now, |e, o| out.push((e, now, o)));
                proptest::prop_assert!(hold.len() <= max_len);
                // The daemon polls no later than the next deadline.
                let mut next = res.now + Duration::from_millis(advance_ms);
                if let Some(d) = hold.next_deadline() {
                    next = next.min(d);
                }
                res.now = next;
                let now = res.now;
                hold.release(&mut res, now, |e, o| out.push((e, now, o)));
            }
            // No more events: the daemon wakes at each deadline.
            while let Some(d) = hold.next_deadline() {
                res.now = d;
                hold.release(&mut res, d, |e, o| out.push((e, d, o)));
            }
            let order: Vec<usize> = out.iter().map(|o| o.0).collect();
            proptest::prop_assert_eq!(order, pushed);
            for (e, at, o) in &out {
                proptest::prop_assert!(*at <= deadlines[*e], "event {} out late", e);
                let (kind, _, _) = steps[*e];
                match (kind, o) {
                    (0, None) => {}
                    (1, Some(HashOutcome::Skipped(SkipReason::TooLarge))) => {}
                    (2, Some(HashOutcome::Hash(_))) => {}
                    (2 | 3, Some(HashOutcome::Skipped(SkipReason::Busy))) => {
                        proptest::prop_assert!(res.abandoned.contains(&(*e as u64)));
                        // Given up only while the hash was not ready yet.
                        if let Some(ready) = res.ready_at.get(&(*e as u64)) {
                            proptest::prop_assert!(ready > at, "event {} ready but dropped", e);
                        }
                    }
                    _ => proptest::prop_assert!(false, "event {} kind {} got {:?}", e, kind, o),
                }
            }
            let s = hold.stats();
            proptest::prop_assert_eq!((s.ready + s.deadline + s.overflow) as usize, steps.len());
        }
    }

    #[test]
    fn the_hold_keeps_to_its_bytes_releasing_the_oldest_in_order() {
        let t0 = Instant::now();
        let mut res = Timed {
            now: t0,
            ready_at: HashMap::new(),
            taken: vec![],
            abandoned: vec![],
        };
        // Events weigh their number in KiB; the first one's hash never comes.
        let mut hold =
            OrderedHold::new(Duration::from_secs(1), 1000).with_max_bytes(10 << 10, |e| *e << 10);
        let mut out = Vec::new();
        hold.push(1usize, Some(Requested::Pending(Ticket(1))), t0);
        for e in 2..=6 {
            hold.push(e, None, t0);
            hold.release(&mut res, t0, |e, o| out.push((e, o)));
            assert!(hold.bytes() <= 10 << 10, "{} bytes held", hold.bytes());
        }
        // 1 + 2 + 3 + 4 = 10 KiB fit; with 5 the oldest went out, unhashed,
        // and all that waited only for it behind.
        let busy = Some(HashOutcome::Skipped(SkipReason::Busy));
        assert_eq!(
            out,
            [
                (1, busy),
                (2, None),
                (3, None),
                (4, None),
                (5, None),
                (6, None)
            ]
        );
        assert_eq!(res.abandoned, [1]);
        assert_eq!(hold.stats().overflow, 1);
        assert_eq!(hold.bytes(), 0);
    }

    #[test]
    fn an_unsettled_event_holds_those_after_it_until_settled_or_its_own_deadline() {
        let t0 = Instant::now();
        let ms = Duration::from_millis;
        let mut res = Timed {
            now: t0,
            ready_at: HashMap::new(),
            taken: vec![],
            abandoned: vec![],
        };
        let mut hold = OrderedHold::new(Duration::from_secs(1), 100);
        // (name, settled): settling may change the event.
        hold.push_unsettled(("a", false), None, Some(t0 + ms(500)), t0);
        hold.push(("b", false), None, t0);
        hold.push_unsettled(("c", false), None, Some(t0 + ms(500)), t0);
        hold.push_unsettled(("d", false), None, Some(t0 + ms(5000)), t0);
        let mut out = Vec::new();
        let state_of_a = std::cell::Cell::new(false);
        let mut settle = |e: &mut (&str, bool)| {
            if e.0 == "a" && state_of_a.get() {
                e.1 = true;
            }
            e.1
        };
        assert_eq!(
            hold.release_settling(&mut res, t0 + ms(10), &mut settle, |e, _| out.push(e)),
            0
        );
        state_of_a.set(true);
        // a settles; b waits for nothing; c is not settled before its time.
        assert_eq!(
            hold.release_settling(&mut res, t0 + ms(20), &mut settle, |e, _| out.push(e)),
            2
        );
        assert_eq!(out, [("a", true), ("b", false)]);
        assert_eq!(
            hold.release_settling(&mut res, t0 + ms(499), &mut settle, |e, _| out.push(e)),
            0
        );
        // c goes at its deadline, unsettled; d's own wait is capped by the
        // hold's limit (1 s), and release_all sends it whatever it waits for.
        assert_eq!(
            hold.release_settling(&mut res, t0 + ms(500), &mut settle, |e, _| out.push(e)),
            1
        );
        assert_eq!(hold.stats().unsettled, 1);
        assert_eq!(
            hold.release_settling(&mut res, t0 + ms(999), &mut settle, |e, _| out.push(e)),
            0
        );
        assert_eq!(
            hold.release_settling(&mut res, t0 + ms(1000), &mut settle, |e, _| out.push(e)),
            1
        );
        assert_eq!(out.len(), 4);
        hold.push_unsettled(("e", false), None, Some(t0 + ms(5000)), t0 + ms(1000));
        assert_eq!(hold.release_all(&mut res, |_| false, |e, _| out.push(e)), 1);
        assert_eq!(out.iter().map(|e| e.0).collect::<String>(), "abcde");
        assert_eq!(hold.stats().unsettled, 3);
    }

    #[test]
    fn hold_waits_for_the_front_and_releases_at_the_deadline() {
        let t0 = Instant::now();
        let mut res = Timed {
            now: t0,
            ready_at: HashMap::from([(0, t0 + Duration::from_millis(300))]),
            taken: vec![],
            abandoned: vec![],
        };
        let mut hold = OrderedHold::new(Duration::from_secs(1), 100);
        hold.push("a", Some(Requested::Pending(Ticket(0))), t0);
        hold.push("b", None, t0);
        hold.push("c", Some(Requested::Pending(Ticket(2))), t0);
        hold.push("d", None, t0);
        let mut out = Vec::new();
        assert_eq!(hold.release(&mut res, t0, |e, o| out.push((e, o))), 0);
        assert_eq!(hold.next_deadline(), Some(t0 + Duration::from_secs(1)));
        let now = t0 + Duration::from_millis(300);
        res.now = now;
        assert_eq!(hold.release(&mut res, now, |e, o| out.push((e, o))), 2);
        assert_eq!(out[0].0, "a");
        assert!(matches!(out[0].1, Some(HashOutcome::Hash(_))));
        assert_eq!(out[1], ("b", None));
        // "c" never finishes: out at its deadline, not a moment before.
        let now = t0 + Duration::from_millis(999);
        res.now = now;
        assert_eq!(hold.release(&mut res, now, |e, o| out.push((e, o))), 0);
        let now = t0 + Duration::from_secs(1);
        res.now = now;
        assert_eq!(hold.release(&mut res, now, |e, o| out.push((e, o))), 2);
        assert_eq!(out[2], ("c", Some(HashOutcome::Skipped(SkipReason::Busy))));
        assert_eq!(out[3], ("d", None));
        assert_eq!(res.abandoned, [2]);
        assert_eq!(hold.stats().deadline, 1);
    }

    #[test]
    fn release_all_sends_everything_at_shutdown() {
        let t0 = Instant::now();
        let mut res = Timed {
            now: t0,
            ready_at: HashMap::from([(1, t0)]),
            taken: vec![],
            abandoned: vec![],
        };
        let mut hold = OrderedHold::new(Duration::from_secs(1), 100);
        hold.push(0, Some(Requested::Pending(Ticket(0))), t0);
        hold.push(1, Some(Requested::Pending(Ticket(1))), t0);
        hold.push(2, None, t0);
        let mut out = Vec::new();
        assert_eq!(
            hold.release_all(&mut res, |_| true, |e, o| out.push((e, o))),
            3
        );
        assert!(hold.is_empty());
        assert_eq!(out[0], (0, Some(HashOutcome::Skipped(SkipReason::Busy))));
        assert!(matches!(out[1], (1, Some(HashOutcome::Hash(_)))));
        assert_eq!(out[2], (2, None));
        assert_eq!(res.abandoned, [0]);
        assert_eq!(res.taken, [1]);
    }
}
