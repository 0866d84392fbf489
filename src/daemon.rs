//! The daemon loop: take a bounded batch of records from the ring buffer,
//! decode and format them, then check the stop flag, the output, the
//! counters and the watchdog. On a stop signal or an error: detach, deliver
//! what is left until the drain deadline, count the rest as lost (or, when
//! the objects are kept for the next daemon, leave it to that one), and
//! summarise. Before the loop: what a previous daemon left (crate::handover).

use std::cell::RefCell;
use std::fs::File;
use std::io::{self, IsTerminal};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use tracing::warn;

use crate::bpf_loader::BpfLoader;
use crate::cgroups::CgroupCache;
use crate::counters::{loss_hint, Counter, Counts};
use crate::decode::ExecEvent;
use crate::entity_id::{ticks_from_boot_ns, EntityIds};
use crate::event::{Action, Lineage};
use crate::exe_hash::{
    HashConfig, HashOutcome, HashRequest, HashResults, Hasher, OrderedHold, Requested,
};
use crate::fields::Exclusions;
use crate::handover::{Meta, PrevDrain, PrevRead};
use crate::layout::Translation;
use crate::liveness::Liveness;
use crate::metrics::Metrics;
use crate::output::journald::Journal;
use crate::output::table::Table;
use crate::output::{EventSink, Format};
use crate::process_table::{ExecRecord, Limits, ProcessTable, Related};
use crate::progress::Progress;
use crate::ring_reader::{Next, Rings};
use crate::sd_notify::Notifier;
use crate::writer_thread::{
    OutcomeNotes, Output, OutputQueue, QueueWriter, WriterThread, QUEUE_BUDGET,
};

/// Longest an event waits for its executable's hash.
const HASH_HOLD_MAX: Duration = Duration::from_secs(1);
/// Most events held, whatever they wait for.
const HOLD_EVENTS: usize = 65_536;
/// ... and at most this many bytes of them: a process that keeps a hash
/// or a container's state pending must not make the daemon hold its
/// traffic (or everyone's) in memory without bound. Past it, the oldest go
/// out without waiting, in order.
const HOLD_BYTES: usize = 8 << 20;
/// Longest an event in a new container's cgroup waits for the runtime's
/// state (crun, and runc under podman, write it after the first exec).
const STATE_HOLD_MAX: Duration = Duration::from_millis(500);
/// The poll timeout while events wait for a hash or a runtime's state.
const HOLD_POLL: Duration = Duration::from_millis(5);

/// Longest the drain of a taken-over ring buffer delays READY.
const TAKEOVER_DRAIN_MAX: Duration = Duration::from_secs(10);

/// Reads of the kernel counters at a kept stop, 5 ms apart, until they
/// agree: the programs stay attached and may be half-way through a record.
const KEPT_SETTLE_TRIES: usize = 400;

/// The kernel's counters agree: every exec seen was written or dropped (no
/// program was half-way through a record when they were read).
fn kernel_settled(kernel: &Counts) -> bool {
    kernel.get(Counter::seen)
        == kernel.get(Counter::submitted)
            + kernel.get(Counter::lost_ringbuf_full)
            + kernel.get(Counter::lost_no_scratch)
}

/// Records taken from the ring buffer in one turn of the loop, at most:
/// the stop flag, the output and the counters are checked between turns.
pub const RECORDS_PER_TURN: usize = 256;

/// Timing of the loop.
#[derive(Debug, Clone)]
pub struct LoopOptions {
    /// Longest time a record waits in the ring buffer when the BPF side does
    /// not force a wakeup: the delivery latency bound.
    pub poll_interval: Duration,
    /// How often the kernel counters are read (and losses reported).
    pub stats_interval: Duration,
    /// After a stop signal, how long records still in the ring buffer or
    /// the output queue may take to be written; the rest is lost
    /// (`shutdown`).
    pub drain_timeout: Duration,
    /// Prometheus metrics to keep up to date, when served.
    pub metrics: Option<Arc<Metrics>>,
    /// Environment variables to pick from each record (`--env`).
    pub env_names: Vec<Vec<u8>>,
    /// Hash executables up to this size (`None`: `--no-hash`).
    pub hash_max_size: Option<u64>,
    /// Progress, for the watchdog and the liveness endpoint.
    pub liveness: Arc<Liveness>,
    /// Fields no format shows (`--exclude-field`).
    pub excluded: Exclusions,
}

impl Default for LoopOptions {
    fn default() -> Self {
        LoopOptions {
            poll_interval: Duration::from_millis(100),
            stats_interval: Duration::from_secs(1),
            drain_timeout: Duration::from_secs(10),
            metrics: None,
            env_names: Vec::new(),
            hash_max_size: Some(HashConfig::default().max_size),
            liveness: Arc::default(),
            excluded: Exclusions::default(),
        }
    }
}

/// What a run delivered and lost.
#[derive(Debug, Clone, Default)]
pub struct Summary {
    pub counts: Counts,
}

/// Decode errors logged one by one before only the count is kept.
const DECODE_ERRORS_LOGGED: u64 = 10;

/// What the ring-buffer callback does with a record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Deliver,
    /// Count it as lost for this reason (shutdown, or a failed output).
    Discard(Counter),
}

struct Consumer<'a> {
    sink: EventSink<QueueWriter>,
    notes: OutcomeNotes,
    queue: Arc<OutputQueue>,
    event: ExecEvent,
    cgroups: CgroupCache,
    /// execwatch's own pid namespace: "the host's" for the events.
    own_pidns: Option<u64>,
    env_names: Vec<Vec<u8>>,
    /// Live processes, for lineage and exits.
    table: ProcessTable,
    hasher: Option<Hasher>,
    /// Events waiting for their executable's hash or their container's
    /// state, and those after them, in order.
    hold: OrderedHold<ExecEvent>,
    mode: Mode,
    /// The daemon's counters kept here (the writer thread keeps its own).
    counts: Counts,
    /// Records taken from the ring buffer, whatever became of them.
    consumed: u64,
    /// Of those, records of another layout's buffer (translated): not
    /// counted by this daemon's kernel counters (`seen_upgrade` instead).
    foreign: u64,
    /// The translated record, reused.
    scratch: Vec<u8>,
    output_error: Option<io::Error>,
    stop: &'a AtomicBool,
    /// While draining: past it, stop delivering.
    deadline: Option<Instant>,
    /// Handing on ended early (a full queue, the deadline, a stop).
    paused: bool,
    /// While a previous daemon's buffer is read: what becomes of its
    /// records, and how far it is read.
    previous: Option<(PrevRead, PrevDrain)>,
    /// Kept objects: what this daemon took and counted, where its death
    /// cannot take it.
    progress: Option<ProgressLog>,
}

/// The `progress` map (crate::progress), with what this daemon started from.
struct ProgressLog {
    progress: Progress,
    /// Records taken from the kept rings by the daemons before this one.
    taken_before: u64,
    /// Their daemon-side counts.
    carried: Counts,
}

impl Consumer<'_> {
    /// A record in sequence order: this daemon's, or a previous one's.
    fn on_released(&mut self, record: &[u8]) -> i32 {
        let Some((read, mut drain)) = self.previous.take() else {
            return self.on_record(record);
        };
        let is_event = drain.note(record);
        let ret = match &read {
            PrevRead::Decode => self.on_record(record),
            PrevRead::Translate(t) if is_event => self.on_translated(t, record),
            PrevRead::CountLost if is_event => {
                // Seen by the previous build's counters, not this one's.
                self.counts.add(Counter::seen_upgrade, 1);
                self.counts.add(Counter::lost_upgrade, 1);
                0
            }
            // Not an event (no sequence number): nothing to count.
            _ => 0,
        };
        self.previous = Some((read, drain));
        ret
    }

    fn on_record(&mut self, record: &[u8]) -> i32 {
        self.consumed += 1;
        if let Mode::Discard(reason) = self.mode {
            self.counts.add(reason, 1);
            return 0;
        }
        match self.event.decode_from(record) {
            Ok(()) => {
                let ev = &mut self.event;
                ev.cgroup = self.cgroups.resolve(
                    ev.cgroup_id,
                    ev.cgroup_path.as_deref(),
                    ev.cgroup_path_truncated,
                    ev.boot_ns,
                );
                ev.host_pid_ns = self.own_pidns.map(|ino| ino == u64::from(ev.pidns_ino));
                ev.select_env(&self.env_names);
                self.attach_lineage();
                let hash = self.request_hash();
                // The event's own attribution first: no lookup for the
                // host's cgroups or a confirmed container.
                let claim = self.event.cgroup.as_ref().is_some_and(|c| c.wants_lookup());
                let unsettled = claim && self.cgroups.awaits_state(self.event.cgroup_id);
                if hash.is_some() || unsettled || !self.hold.is_empty() {
                    // Order is kept: everything queues behind a pending hash
                    // or a container's state.
                    let now = Instant::now();
                    let until = unsettled.then(|| now + STATE_HOLD_MAX);
                    self.hold
                        .push_unsettled(self.event.clone(), hash, until, now);
                } else if self.deliver_current().is_err() {
                    return self.pause();
                }
            }
            Err(e) => {
                self.counts.add(Counter::decode_errors, 1);
                if self.counts.get(Counter::decode_errors) <= DECODE_ERRORS_LOGGED {
                    warn!(error = %e, record_len = record.len(), "malformed record skipped");
                }
            }
        }
        if !self.hold.is_empty() && self.release_held(false).is_err() {
            return self.pause();
        }
        let past_deadline = self.deadline.is_some_and(|d| Instant::now() >= d);
        let stopping = self.deadline.is_none() && self.stop.load(Ordering::Relaxed);
        if past_deadline || stopping || self.queue.is_full() {
            return self.pause();
        }
        0
    }

    /// A record of another layout's buffer: translated into this build's,
    /// then as any record (delivered, or a decode error), in order.
    fn on_translated(&mut self, t: &Translation, record: &[u8]) -> i32 {
        // Seen by the previous build's counters, which were not taken over.
        self.counts.add(Counter::seen_upgrade, 1);
        self.foreign += 1;
        let mut scratch = std::mem::take(&mut self.scratch);
        let ret = match t.translate(record, &mut scratch) {
            Ok(translated) => self.on_record(translated),
            Err(e) => {
                self.consumed += 1;
                if let Mode::Discard(reason) = self.mode {
                    self.counts.add(reason, 1);
                } else {
                    self.counts.add(Counter::decode_errors, 1);
                    if self.counts.get(Counter::decode_errors) <= DECODE_ERRORS_LOGGED {
                        warn!(error = %e, record_len = record.len(), "malformed record of the previous layout skipped");
                    }
                }
                0
            }
        };
        self.scratch = scratch;
        ret
    }

    /// Write what was taken and counted so far, before the rings' space up
    /// to `rings`' positions is freed. Not while a previous buffer is read:
    /// its positions are another buffer's.
    fn log_progress(&self, rings: &Rings) {
        let Some(log) = &self.progress else {
            return;
        };
        if self.previous.is_some() {
            return;
        }
        let mut counts = log.carried;
        counts.merge(&self.counts);
        counts.merge(&self.queue.counts());
        let meta = Meta::of_counts(&counts, false);
        log.progress.write(
            log.taken_before + self.taken_here(),
            &meta,
            rings.positions(),
        );
    }

    /// Records taken from this daemon's kept ring buffers (not another
    /// layout's): what the kernel counters here counted as submitted.
    fn taken_here(&self) -> u64 {
        self.consumed - self.foreign
    }

    /// The process table's view: entity ids, parent, leaders, the previous
    /// image; for an exit, what the process ran.
    fn attach_lineage(&mut self) {
        let ev = &mut self.event;
        let table = &mut self.table;
        match ev.action {
            Action::Exec if ev.succeeded() => {
                if let Some((ancestor, ancestor_start)) = ev.image_ancestor {
                    // The parent is a fork that never exec'd (a subshell):
                    // it runs its ancestor's image (a no-op when known).
                    table.on_fork(ev.ppid, ancestor, ev.parent_start_ns, Some(ancestor_start));
                }
                if ev.ppid != 0 && table.get(ev.ppid).is_none() {
                    // A parent the table missed (evicted, or it predates the
                    // seeding): read it from /proc.
                    let _ = table.seed_pid(ev.ppid);
                }
                let rec = ExecRecord {
                    pid: ev.pid,
                    ppid: ev.ppid,
                    start_boot_ns: ev.start_ns,
                    parent_start_boot_ns: Some(ev.parent_start_ns),
                    session_leader: ev.sid,
                    group_leader: ev.pgid,
                    boot_ns: ev.boot_ns,
                    executable: &ev.executable,
                    name: &ev.comm,
                };
                let ctx = table.on_exec_event(&rec, ev);
                ev.lineage = Some(Lineage {
                    entity_id: ctx.entity_id,
                    parent_entity_id: ctx.parent_entity_id,
                    parent: ctx.parent,
                    session_leader: ctx.session_leader,
                    group_leader: ctx.group_leader,
                    previous: ctx.previous,
                });
            }
            Action::Exec | Action::Exit => {
                let gone = if ev.action == Action::Exit {
                    table.on_exit(ev.pid, ev.start_ns)
                } else {
                    None
                };
                let me = gone.as_ref().or_else(|| table.get(ev.pid));
                let entity_id = me
                    .map(|e| e.entity_id)
                    .unwrap_or_else(|| table.ids().from_boot_ns(ev.pid, ev.start_ns));
                if let (Action::Exit, Some(image)) = (ev.action, me.and_then(|e| e.image.as_ref()))
                {
                    ev.executable.clear();
                    ev.executable.extend_from_slice(image.executable());
                }
                let related = |pid: u32| table.get(pid).map(Related::from);
                let parent = related(ev.ppid);
                let parent_entity_id = if ev.parent_start_ns == 0 {
                    me.and_then(|e| e.parent_entity_id)
                } else {
                    // The table's entry is that parent when it started in
                    // the same tick: its id is then the same (no hashing).
                    let ticks = ticks_from_boot_ns(ev.parent_start_ns);
                    Some(match &parent {
                        Some(p) if p.start_ticks == ticks => p.entity_id,
                        _ => table.ids().from_ticks(ev.ppid, ticks),
                    })
                };
                ev.lineage = Some(Lineage {
                    entity_id,
                    parent_entity_id,
                    parent,
                    session_leader: related(ev.sid),
                    group_leader: related(ev.pgid),
                    previous: None,
                });
            }
        }
    }

    /// The executable's hash: known now, pending, or not asked for.
    fn request_hash(&mut self) -> Option<Requested> {
        let hasher = self.hasher.as_mut()?;
        let ev = &mut self.event;
        if !ev.is_exec() || !ev.succeeded() {
            return None;
        }
        if ev.exe_fuse {
            ev.hash = Some(hasher.refuse_fuse());
            return None;
        }
        let identity = ev.file_identity()?;
        if let Some(d) = hasher.lookup(&identity) {
            ev.hash = Some(HashOutcome::Hash(d));
            return None;
        }
        // A memfd's "path" is only a name: the hasher's /proc/PID/exe is
        // the only way to it.
        let req = HashRequest {
            pid: ev.pid,
            path: crate::exe_hash::reachable_path(ev),
            identity,
        };
        match hasher.request(req) {
            Requested::Ready(o) => {
                ev.hash = Some(o);
                None
            }
            pending => Some(pending),
        }
    }

    /// Write the current event; an output failure stops delivery.
    fn deliver_current(&mut self) -> Result<(), ()> {
        let ev = std::mem::take(&mut self.event);
        let r = self.deliver(&ev);
        self.event = ev;
        r
    }

    fn deliver(&mut self, ev: &ExecEvent) -> Result<(), ()> {
        self.notes.note(ev.succeeded());
        match self.sink.write_event(ev) {
            Ok(()) => Ok(()),
            Err(e) => {
                // The output is gone: this record and the rest are lost.
                self.counts.add(Counter::lost_output, 1);
                self.output_error = Some(e);
                self.mode = Mode::Discard(Counter::lost_output);
                Err(())
            }
        }
    }

    /// Deliver held events whose hash and container state are known or
    /// overdue (`all`: every one).
    fn release_held(&mut self, all: bool) -> Result<(), ()> {
        let cgroups = &mut self.cgroups;
        // Looks again when the cache's schedule (and budget) allows.
        let settle = |ev: &mut ExecEvent| {
            let id = ev.cgroup_id;
            if let Some(info) = cgroups.resolve(id, None, ev.cgroup_path_truncated, ev.boot_ns) {
                ev.cgroup = Some(info);
            }
            !cgroups.awaits_state(id)
        };
        let mut ready = Vec::new();
        let keep = |ev: ExecEvent, outcome: Option<HashOutcome>| {
            let mut ev = ev;
            if outcome.is_some() {
                ev.hash = outcome;
            }
            ready.push(ev);
        };
        let hold = &mut self.hold;
        match self.hasher.as_mut() {
            Some(hasher) => {
                hasher.poll_ready();
                release_from(hold, hasher, all, settle, keep);
            }
            None => release_from(hold, &mut NoHashes, all, settle, keep),
        }
        for (i, ev) in ready.iter().enumerate() {
            if self.mode != Mode::Deliver {
                // The output failed: the rest are lost with it.
                let n = (ready.len() - i) as u64;
                if let Mode::Discard(reason) = self.mode {
                    self.counts.add(reason, n);
                }
                return Err(());
            }
            if self.deliver(ev).is_err() {
                let n = (ready.len() - i - 1) as u64;
                self.counts.add(Counter::lost_output, n);
                return Err(());
            }
        }
        Ok(())
    }

    fn pause(&mut self) -> i32 {
        self.paused = true;
        -1 // the reading stops; this record is done with
    }

    /// Flush the output; a failed write, now or during the batch, is an
    /// output error.
    fn flush(&mut self, errors: &mut Errors) {
        if let Err(e) = self.sink.flush() {
            errors.output(e);
        }
        if let Some(e) = self.output_error.take() {
            errors.output(e);
        }
    }
}

/// The first error ends the run and is the one reported; later ones are
/// logged, never put in its place.
#[derive(Default)]
struct Errors {
    first: Option<anyhow::Error>,
    output_failed: bool,
}

impl Errors {
    fn set(&mut self, e: anyhow::Error) {
        if self.first.is_none() {
            self.first = Some(e);
        } else {
            warn!(error = format!("{e:#}"), "a further error after the first");
        }
    }

    fn output(&mut self, e: io::Error) {
        self.output_failed = true;
        self.set(anyhow::Error::new(e).context("writing events"));
    }

    fn is_set(&self) -> bool {
        self.first.is_some()
    }
}

/// What a turn of reading found.
#[derive(Debug, Clone, Copy, Default)]
struct Taken {
    records: u64,
    /// A record was being written: the rest of the reading waits for it.
    busy: bool,
}

/// Take at most `n` records, in sequence order. None taken and not busy:
/// the ring buffers were empty.
fn take_records(
    rings: &mut Rings,
    consumer: &RefCell<Consumer<'_>>,
    n: usize,
    errors: &mut Errors,
) -> Taken {
    let mut c = consumer.borrow_mut();
    c.paused = false;
    let mut taken = Taken::default();
    rings.begin_batch();
    while taken.records < n as u64 {
        match rings.next(|record| c.on_released(record)) {
            Next::Record(ret) => {
                taken.records += 1;
                if ret != 0 {
                    break;
                }
            }
            Next::Later => rings.begin_batch(),
            Next::Empty => break,
            Next::Busy => {
                taken.busy = true;
                break;
            }
            Next::Corrupt => {
                errors.set(anyhow::anyhow!(
                    "reading the ring buffer: a record length or position the kernel cannot have written (the ring buffer is corrupt)"
                ));
                break;
            }
        }
    }
    c.log_progress(rings);
    rings.publish();
    // Queued once the buffer is drained (or the sink's own threshold is
    // reached), not after every turn: each chunk wakes the writer thread.
    if taken.records < n as u64 || c.paused || errors.is_set() {
        c.flush(errors);
    }
    taken
}

/// The hold's release, every event or those due.
fn release_from<R: HashResults>(
    hold: &mut OrderedHold<ExecEvent>,
    results: &mut R,
    all: bool,
    settle: impl FnMut(&mut ExecEvent) -> bool,
    keep: impl FnMut(ExecEvent, Option<HashOutcome>),
) {
    if all {
        hold.release_all(results, settle, keep);
    } else {
        hold.release_settling(results, Instant::now(), settle, keep);
    }
}

/// Hashing off: no hash is ever pending.
struct NoHashes;

impl HashResults for NoHashes {
    fn take(&mut self, _: crate::exe_hash::Ticket) -> Option<HashOutcome> {
        None
    }
    fn abandon(&mut self, _: crate::exe_hash::Ticket) {}
}

/// The counts carried from earlier daemons, and the progress map to write.
/// After a predecessor that died: what it had taken from the kept rings and
/// never counted (its copy in the progress map, less what is still in the
/// rings below its positions, less what it counted) is lost, reason crash.
fn take_progress(loader: &BpfLoader<'_>, rings: &Rings) -> (Meta, Option<ProgressLog>) {
    let handover = loader.handover();
    let mut carried = handover.carried;
    if !handover.keeps() {
        return (carried, None);
    }
    let progress = match Progress::map(loader.progress_map(), rings.len()) {
        Ok(p) => p,
        Err(e) => {
            warn!(error = %e, "no progress map: if this daemon dies, what it holds will not be counted as lost");
            return (carried, None);
        }
    };
    if let Some(snap) = progress.read() {
        // Counted by earlier daemons, whatever follows.
        carried.lost_crash = snap.meta.lost_crash;
        if handover.predecessor_unclean && !handover.continues_events {
            warn!("the previous execwatch died, and its ring buffer is not continued (another size): what it held when it died is not counted as lost");
        } else if handover.predecessor_unclean {
            let in_rings: Option<u64> = snap
                .rings
                .iter()
                .enumerate()
                .map(|(i, &to)| rings.records_up_to(i, to))
                .sum();
            match in_rings {
                Some(in_rings) => {
                    let lost = crate::progress::lost_in_crash(&snap, in_rings);
                    // Its last counts, newer than its last `meta`; the loss
                    // reports go on from what it last reported.
                    carried = Meta {
                        layout_version: carried.layout_version,
                        flags: carried.flags,
                        lost_ringbuf_full_reported: carried.lost_ringbuf_full_reported,
                        lost_no_scratch_reported: carried.lost_no_scratch_reported,
                        lost_crash: snap.meta.lost_crash + lost,
                        ..snap.meta
                    };
                    warn!(
                        lost,
                        "the previous execwatch died holding records it had taken from the ring buffer (queued, held or being written): counted as lost (reason crash)"
                    );
                }
                None => warn!(
                    "the progress the previous execwatch left does not match the ring buffers: what it held when it died is not counted as lost (it stays in pending)"
                ),
            }
        }
    } else if handover.predecessor_unclean {
        warn!("the previous execwatch kept no progress (a build from before the progress map, or it died before its first batch or while reading an older buffer): what it held when it died is not counted as lost (it stays in pending)");
    }
    let log = ProgressLog {
        progress,
        taken_before: carried.consumed(),
        carried: carried.carried_counts(),
    };
    (carried, Some(log))
}

/// A record still being written, at most this long, before what follows
/// it is left where it is.
const BUSY_WAIT_MAX: Duration = Duration::from_millis(50);

/// Take every record the ring buffers hold now, whatever each one's
/// handling says (the reading ends, or records are counted as lost). A
/// record still being written is waited for, a while.
fn take_all(rings: &mut Rings, consumer: &RefCell<Consumer<'_>>) {
    let until = Instant::now() + BUSY_WAIT_MAX;
    let mut c = consumer.borrow_mut();
    rings.begin_batch();
    loop {
        match rings.next(|record| c.on_released(record)) {
            Next::Record(_) => {}
            Next::Later => rings.begin_batch(),
            Next::Busy if Instant::now() < until => {
                std::thread::sleep(Duration::from_millis(1));
                rings.begin_batch();
            }
            Next::Empty | Next::Busy | Next::Corrupt => break,
        }
    }
    c.log_progress(rings);
    rings.publish();
}

/// The run's counts as they are put together: the kernel's as last read,
/// those carried from earlier daemons, and those last reported.
struct Tally {
    kernel: Counts,
    carried: Counts,
    reported: Counts,
}

impl Tally {
    /// Read the kernel's counters; false (the error kept) if they cannot be.
    fn read_kernel(&mut self, loader: &BpfLoader<'_>, errors: &mut Errors) -> bool {
        match loader.stats() {
            Ok(now) => {
                self.kernel = now;
                true
            }
            Err(e) => {
                errors.set(anyhow::Error::new(e).context("reading BPF counters"));
                false
            }
        }
    }

    /// Read the kernel's counters up to `tries` times, 5 ms apart, until
    /// `settled`; `between` runs after each wait.
    fn settle(
        &mut self,
        loader: &BpfLoader<'_>,
        errors: &mut Errors,
        tries: usize,
        settled: impl Fn(&Counts) -> bool,
        mut between: impl FnMut(),
    ) {
        for _ in 0..tries {
            if !self.read_kernel(loader, errors) || settled(&self.kernel) {
                break;
            }
            std::thread::sleep(Duration::from_millis(5));
            between();
        }
    }

    /// Kernel counts plus the daemon's and the carried ones.
    fn gather(&self, consumer: &RefCell<Consumer<'_>>, queue: &OutputQueue) -> Counts {
        let mut c = self.kernel;
        c.merge(&self.carried);
        c.merge(&consumer.borrow().counts);
        c.merge(&queue.counts());
        c
    }

    /// Log the losses since the last report, and publish the metrics.
    fn report(&mut self, counts: &Counts, metrics: Option<&Metrics>) {
        report_losses(&self.reported, counts);
        self.reported = *counts;
        if let Some(m) = metrics {
            m.publish(counts);
        }
    }
}

fn report_losses(prev: &Counts, now: &Counts) {
    let new = now.lost().saturating_sub(prev.lost());
    if new > 0 {
        let hint: Vec<&str> = now
            .new_losses(prev)
            .iter()
            .map(|(reason, _)| loss_hint(reason))
            .collect();
        now.log_losses(new, &hint.join("; "));
    }
}

/// Read to its end the ring buffer of a previous daemon that this one does
/// not continue (another size or layout), before this daemon's own: its
/// records are decoded when the layout is this build's, translated and
/// decoded when the previous daemon published its layout and every field
/// both have kept its size, else counted as lost (reason `upgrade`). A stop signal meanwhile gives it the drain
/// timeout, as the shutdown gives this daemon's own buffer (the deadline is
/// left in the consumer for the shutdown to keep); what it cannot deliver
/// by then, or after an error, is counted as lost.
fn drain_previous_buffer(
    loader: &BpfLoader<'_>,
    consumer: &RefCell<Consumer<'_>>,
    queue: &OutputQueue,
    stop: &AtomicBool,
    drain_timeout: Duration,
    errors: &mut Errors,
) -> Result<()> {
    let Some(prev) = loader.handover().take_previous_buffer() else {
        return Ok(());
    };
    let drain = PrevDrain::start(loader.handover(), &prev);
    prev.open(|maps, read| -> Result<()> {
        let mut ring = Rings::new(maps)?;
        consumer.borrow_mut().previous = Some((read, drain));
        while !stop.load(Ordering::Relaxed) {
            // A full queue holds the reading back: no turn to judge by.
            let read = if queue.is_full() {
                queue.wait_for_room(Duration::from_millis(100));
                false
            } else {
                take_records(&mut ring, consumer, RECORDS_PER_TURN, errors);
                true
            };
            if let Some(e) = queue.take_error() {
                errors.output(e);
            }
            let finished = read
                && consumer
                    .borrow_mut()
                    .previous
                    .as_mut()
                    .is_some_and(|(_, drain)| drain.finished());
            if errors.is_set() || finished {
                break;
            }
            if read {
                std::thread::sleep(Duration::from_millis(10));
            }
        }
        let stopped = stop.load(Ordering::Relaxed);
        let gave_up = consumer
            .borrow()
            .previous
            .as_ref()
            .is_some_and(|(_, drain)| drain.gave_up());
        if stopped && !errors.is_set() {
            // The shutdown's drain, with the deadline the shutdown keeps.
            let deadline = Instant::now() + drain_timeout;
            consumer.borrow_mut().deadline = Some(deadline);
            drain_ring(&mut ring, consumer, queue, deadline, errors, |e| {
                !e.is_set()
            });
        }
        // Only records of another layout: in `consumed` a loss with reason
        // upgrade stands for a record counted by `seen_upgrade` too. A
        // buffer of this layout (another size) keeps what it holds as
        // pending (docs/design.md).
        let foreign = consumer
            .borrow()
            .previous
            .as_ref()
            .is_some_and(|(read, _)| !matches!(read, PrevRead::Decode));
        if gave_up && foreign && !stopped && !errors.is_set() {
            // Left to a writer this daemon did not replace: what it holds
            // now is lost, counted; the writer may go on for ever, so the
            // rings are read once, not until they are empty.
            let mut c = consumer.borrow_mut();
            let mode = c.mode;
            c.mode = Mode::Discard(Counter::lost_upgrade);
            ring.take_present(|record| {
                c.on_released(record);
            });
            c.mode = mode;
        } else if stopped || errors.is_set() {
            // Ended early: what the old buffer still holds is lost, counted.
            let mode = consumer.borrow().mode;
            consumer.borrow_mut().mode = Mode::Discard(if errors.output_failed {
                Counter::lost_output
            } else {
                Counter::lost_shutdown
            });
            take_all(&mut ring, consumer);
            consumer.borrow_mut().mode = mode;
        }
        if let Some((_, drain)) = consumer.borrow_mut().previous.take() {
            drain.report();
        }
        Ok(())
    })
    .context("reading the previous execwatch's ring buffer")?;
    Ok(())
}

/// Take records until the ring buffer is empty, `until` has passed, or
/// `go_on` (asked before each turn) says stop. A full queue is waited on,
/// not read past.
fn drain_ring(
    ring: &mut Rings,
    consumer: &RefCell<Consumer<'_>>,
    queue: &OutputQueue,
    until: Instant,
    errors: &mut Errors,
    mut go_on: impl FnMut(&Errors) -> bool,
) {
    while go_on(errors) {
        let left = until.saturating_duration_since(Instant::now());
        if left.is_zero() {
            break;
        }
        if queue.is_full() {
            queue.wait_for_room(Duration::from_millis(100).min(left));
        } else {
            let taken = take_records(ring, consumer, RECORDS_PER_TURN, errors);
            if taken.busy {
                // A program is half-way through a record: it commits soon.
                std::thread::sleep(Duration::from_millis(1).min(left));
            } else if taken.records == 0 && !consumer.borrow().paused {
                break; // empty
            }
        }
        if let Some(e) = queue.take_error() {
            errors.output(e);
        }
    }
}

/// A ring buffer taken over holds what the previous daemon left: deliver
/// it before anything else is announced (READY).
fn drain_taken_over(
    ring: &mut Rings,
    consumer: &RefCell<Consumer<'_>>,
    queue: &OutputQueue,
    stop: &AtomicBool,
    errors: &mut Errors,
) {
    tracing::info!("taking over the ring buffer: draining what the previous execwatch left first");
    let before = consumer.borrow().consumed;
    // The main loop reads on from where this stops: the bound only keeps
    // READY from waiting on a backlog behind a slow output.
    let until = Instant::now() + TAKEOVER_DRAIN_MAX;
    drain_ring(ring, consumer, queue, until, errors, |errors| {
        !stop.load(Ordering::Relaxed) && !errors.is_set()
    });
    tracing::info!(
        records = consumer.borrow().consumed - before,
        "drained the records the previous execwatch left"
    );
}

/// Run until `stop` is set or an error, then drain and summarise. Events
/// go to stdout (text, json) or the journal (journald). The first error is
/// returned, after the summary has been logged.
pub fn run(
    loader: &mut BpfLoader<'_>,
    format: Format,
    stop: &AtomicBool,
    opts: &LoopOptions,
    notifier: &mut Notifier,
) -> Result<Summary> {
    let liveness = &opts.liveness;
    let queue = OutputQueue::new(QUEUE_BUDGET);
    let (queue_writer, notes) = QueueWriter::new(Arc::clone(&queue));
    let mut sink = EventSink::new(format, queue_writer, &opts.excluded);
    if format == Format::Text && io::stdout().is_terminal() {
        // A person reads it: aligned columns. Piped, the plain lines stay.
        sink.show_table(Table::for_terminal())
            .context("writing the table header")?;
    }
    let out = if format == Format::Journald {
        Output::Journal(Journal::connect().context("opening the output")?)
    } else {
        // A descriptor of its own: std's stdout lock is never held by a
        // writer that may be blocked at exit.
        Output::Stream(File::from(
            nix::unistd::dup(io::stdout()).context("duplicating stdout")?,
        ))
    };
    let writer = WriterThread::spawn(out, Arc::clone(&queue), Arc::clone(liveness))
        .context("starting the output thread")?;
    let ids = EntityIds::for_this_boot().context("reading the boot id for entity ids")?;
    let mut table = ProcessTable::new(ids, Limits::for_this_host());
    // Before READY: processes already running get parents and exits too.
    let seeded = table
        .seed_from_proc()
        .context("reading /proc for running processes")?;
    tracing::debug!(seeded = seeded.seeded, "process table seeded from /proc");
    let hasher = match opts.hash_max_size {
        Some(max_size) => Some(
            Hasher::new(HashConfig {
                max_size,
                ..HashConfig::default()
            })
            .context("starting the executable hasher")?,
        ),
        None => None,
    };
    // Before READY too: exits of processes already running get their cgroup.
    let mut cgroups = CgroupCache::default();
    match cgroups.seed_from_proc() {
        Some(seeded) => {
            tracing::debug!(seeded, "cgroups of running processes learnt from /proc")
        }
        None => tracing::info!(
            "no cgroup v2 mount here shows the whole hierarchy (a cgroup namespace of its own?): \
             the exits of processes older than execwatch, in cgroups nothing has exec'd in since, \
             say execwatch.cgroup.unresolved"
        ),
    }
    let consumer = RefCell::new(Consumer {
        sink,
        notes,
        queue: Arc::clone(&queue),
        event: ExecEvent::default(),
        cgroups,
        own_pidns: std::fs::metadata("/proc/self/ns/pid")
            .ok()
            .map(|m| std::os::unix::fs::MetadataExt::ino(&m)),
        env_names: opts.env_names.clone(),
        table,
        hasher,
        hold: OrderedHold::new(HASH_HOLD_MAX, HOLD_EVENTS)
            .with_max_bytes(HOLD_BYTES, ExecEvent::held_bytes),
        mode: Mode::Deliver,
        counts: Counts::default(),
        consumed: 0,
        foreign: 0,
        scratch: Vec::new(),
        output_error: None,
        stop,
        deadline: None,
        paused: false,
        previous: None,
        progress: None,
    });
    let mut ring = Rings::new(loader.take_rings()).context("setting up the ring buffer reader")?;
    // Before anything is read: what a predecessor that died left.
    let (carried, progress) = take_progress(loader, &ring);
    consumer.borrow_mut().progress = progress;
    let mut errors = Errors::default();
    // What the previous daemon left comes first.
    drain_previous_buffer(
        loader,
        &consumer,
        &queue,
        stop,
        opts.drain_timeout,
        &mut errors,
    )?;
    if loader.handover().continues_events {
        drain_taken_over(&mut ring, &consumer, &queue, stop, &mut errors);
    }
    // Attached and reading: an exec from now on is recorded.
    notifier.ready("recording");
    liveness.touch();
    let poll_timeout = match notifier.watchdog_interval() {
        Some(w) => opts.poll_interval.min(w / 2),
        None => opts.poll_interval,
    };

    // Whatever was lost and not yet reported (since load, or since the
    // previous daemon's last report) is reported by the first check.
    let mut tally = Tally {
        kernel: Counts::default(),
        carried: carried.carried_counts(),
        reported: carried.reported_counts(),
    };
    let mut last_stats_at = Instant::now();

    while !stop.load(Ordering::Relaxed) {
        let taken = if queue.is_full() {
            Taken::default()
        } else {
            take_records(&mut ring, &consumer, RECORDS_PER_TURN, &mut errors)
        };
        if let Some(e) = queue.take_error() {
            errors.output(e);
        }
        if errors.is_set() {
            break;
        }
        {
            let mut c = consumer.borrow_mut();
            if !c.hold.is_empty() {
                let _ = c.release_held(false);
                c.flush(&mut errors);
            }
            if c.cgroups.trim().is_some() {
                loader.forget_all_cgroups();
            }
            let new = c.cgroups.take_new();
            // A failed write only means those records keep carrying the
            // path (and may force a wakeup, at most one per CPU per ms).
            if let Err(e) = loader.mark_cgroups_known(&new) {
                tracing::debug!(error = %e, "known-cgroups map not updated");
            }
        }
        if last_stats_at.elapsed() >= opts.stats_interval {
            last_stats_at = Instant::now();
            consumer.borrow_mut().sink.clock_mut().refresh();
            if !tally.read_kernel(loader, &mut errors) {
                break;
            }
            let counts = tally.gather(&consumer, &queue);
            tally.report(&counts, opts.metrics.as_deref());
            if let Err(e) = crate::handover::save_progress(loader, &counts, false) {
                tracing::debug!(error = %e, "meta map not updated");
            }
            if notifier.enabled() {
                notifier.status(&counts.status_line());
            }
        }
        // Progress: the loop turned and the output is not stuck behind.
        if !queue.is_full() {
            liveness.touch();
        }
        if liveness.is_alive() {
            notifier.watchdog_tick();
        }
        if stop.load(Ordering::Relaxed) {
            break;
        }
        if queue.is_full() {
            queue.wait_for_room(poll_timeout);
        } else if taken.busy {
            // Its ring stays readable (epoll would not wait): a short sleep.
            std::thread::sleep(Duration::from_millis(1));
        } else if taken.records < RECORDS_PER_TURN as u64 {
            let held = !consumer.borrow().hold.is_empty();
            ring.wait(if held { HOLD_POLL } else { poll_timeout });
        }
    }

    // Stop new records, then deliver what is already in the ring buffer and
    // the output queue, until the deadline. Kept objects stay attached: the
    // records that keep coming wait for the next daemon.
    let keeps = loader.handover().keeps();
    // Already set if a stop came while the previous buffer was drained.
    let deadline = consumer
        .borrow()
        .deadline
        .unwrap_or_else(|| Instant::now() + opts.drain_timeout);
    notifier.stopping();
    loader.detach();
    if !errors.output_failed {
        consumer.borrow_mut().deadline = Some(deadline);
        drain_ring(
            &mut ring,
            &consumer,
            &queue,
            deadline,
            &mut errors,
            |errors| {
                if liveness.is_alive() {
                    notifier.watchdog_tick();
                }
                !errors.output_failed
            },
        );
    }
    {
        let mut c = consumer.borrow_mut();
        if c.mode == Mode::Deliver {
            // Wait for no hash past its deadline: what is held goes out now.
            let _ = c.release_held(true);
            c.flush(&mut errors);
        } else {
            let n = c.hold.len() as u64;
            if let Mode::Discard(reason) = c.mode {
                c.counts.add(reason, n);
            }
        }
    }
    queue.close();
    if !errors.output_failed {
        queue.wait_finished(deadline);
    }
    writer.abandon();
    if let Some(e) = queue.take_error() {
        errors.output(e);
    }

    if keeps {
        // What is left waits in the kept buffer (`pending`), even after an
        // output failure: the next daemon delivers it. Only the kernel's
        // counts must agree with each other.
        tally.settle(
            loader,
            &mut errors,
            KEPT_SETTLE_TRIES,
            kernel_settled,
            || {},
        );
        // The final counts, with the crash losses the next daemon carries on.
        consumer.borrow().log_progress(&ring);
    } else {
        // Whatever is still in the ring buffer is lost: count it.
        consumer.borrow_mut().mode = Mode::Discard(if errors.output_failed {
            Counter::lost_output
        } else {
            Counter::lost_shutdown
        });
        take_all(&mut ring, &consumer);
        // The kernel's final counts. A program that was running at detach may
        // still submit a record: take it until the counts agree.
        let all_taken = |kernel: &Counts| {
            kernel.get(Counter::submitted) == consumer.borrow().taken_here()
                && kernel_settled(kernel)
        };
        tally.settle(loader, &mut errors, 20, all_taken, || {
            take_all(&mut ring, &consumer);
        });
    }
    drop(ring);

    let mut counts = tally.gather(&consumer, &queue);
    if keeps {
        let consumed = carried.consumed() + consumer.borrow().taken_here();
        counts.set(
            Counter::pending,
            tally
                .kernel
                .get(Counter::submitted)
                .saturating_sub(consumed),
        );
    }
    tally.report(&counts, opts.metrics.as_deref());
    if let Err(e) = crate::handover::save_progress(loader, &counts, true) {
        warn!(error = %e, "could not record this run's counts for the next execwatch");
    }
    counts.log_summary();
    let unaccounted = counts.unaccounted();
    if unaccounted != 0 && loader.handover().predecessor_unclean {
        warn!(
            unaccounted = unaccounted.to_string(),
            "the summary does not add up by the records the previous execwatch took after its last count: it did not exit cleanly"
        );
    } else if unaccounted != 0 {
        tracing::error!(
            unaccounted = unaccounted.to_string(),
            "the summary does not add up: seen != delivered + lost + decode errors"
        );
        errors.set(anyhow::anyhow!(
            "{unaccounted} exec events are neither delivered nor counted as lost (a bug: please report it)"
        ));
    }
    match errors.first {
        Some(e) => Err(e),
        None => Ok(Summary { counts }),
    }
}
