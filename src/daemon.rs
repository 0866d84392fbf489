//! The daemon loop: take a bounded batch of records from the ring buffer,
//! decode and format them, then check the stop flag, the output, the
//! counters and the watchdog. On a stop signal or an error: detach, deliver
//! what is left until the drain deadline, count the rest as lost, and
//! summarise.

use std::cell::RefCell;
use std::fs::File;
use std::io::{self, IsTerminal};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use libbpf_rs::{RingBuffer, RingBufferBuilder};
use tracing::warn;

use crate::bpf_loader::BpfLoader;
use crate::cgroups::CgroupCache;
use crate::counters::{loss_hint, Counter, Counts};
use crate::decode::ExecEvent;
use crate::liveness::Liveness;
use crate::metrics::Metrics;
use crate::output::table::Table;
use crate::output::{EventSink, Format};
use crate::sd_notify::Notifier;
use crate::writer_thread::{OutcomeNotes, OutputQueue, QueueWriter, WriterThread, QUEUE_BUDGET};

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
    /// Progress, for the watchdog and the liveness endpoint.
    pub liveness: Arc<Liveness>,
}

impl Default for LoopOptions {
    fn default() -> Self {
        LoopOptions {
            poll_interval: Duration::from_millis(100),
            stats_interval: Duration::from_secs(1),
            drain_timeout: Duration::from_secs(10),
            metrics: None,
            env_names: Vec::new(),
            liveness: Arc::default(),
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
#[derive(Debug, Clone, Copy)]
enum Mode {
    Deliver,
    /// Count it as lost for this reason (shutdown, or a failed output).
    Discard(Counter),
}

struct Consumer<'a> {
    sink: EventSink<QueueWriter>,
    notes: OutcomeNotes,
    /// journald: each entry is sent by `write_event`, which is the delivery.
    /// Otherwise the writer thread delivers.
    direct: bool,
    queue: Arc<OutputQueue>,
    event: ExecEvent,
    cgroups: CgroupCache,
    /// execwatch's own pid namespace: "the host's" for the events.
    own_pidns: Option<u64>,
    env_names: Vec<Vec<u8>>,
    mode: Mode,
    /// The daemon's counters kept here (the writer thread keeps its own).
    counts: Counts,
    /// Records taken from the ring buffer, whatever became of them.
    consumed: u64,
    output_error: Option<io::Error>,
    stop: &'a AtomicBool,
    /// While draining: past it, stop delivering.
    deadline: Option<Instant>,
    /// The callback ended the batch early (not a libbpf error).
    paused: bool,
}

impl Consumer<'_> {
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
                );
                ev.host_pid_ns = self.own_pidns.map(|ino| ino == u64::from(ev.pidns_ino));
                ev.select_env(&self.env_names);
                let succeeded = ev.succeeded();
                if !self.direct {
                    self.notes.note(succeeded);
                }
                match self.sink.write_event(&self.event) {
                    Ok(()) if self.direct => self.counts.add(
                        if succeeded {
                            Counter::events_success
                        } else {
                            Counter::events_failure
                        },
                        1,
                    ),
                    Ok(()) => {}
                    Err(e) => {
                        // The output is gone: this record and the rest are lost.
                        self.counts.add(Counter::lost_output, 1);
                        self.output_error = Some(e);
                        self.mode = Mode::Discard(Counter::lost_output);
                        return self.pause();
                    }
                }
            }
            Err(e) => {
                self.counts.add(Counter::decode_errors, 1);
                if self.counts.get(Counter::decode_errors) <= DECODE_ERRORS_LOGGED {
                    warn!(error = %e, record_len = record.len(), "malformed record skipped");
                }
            }
        }
        let past_deadline = self.deadline.is_some_and(|d| Instant::now() >= d);
        let stopping = self.deadline.is_none() && self.stop.load(Ordering::Relaxed);
        if past_deadline || stopping || (!self.direct && self.queue.is_full()) {
            return self.pause();
        }
        0
    }

    fn pause(&mut self) -> i32 {
        self.paused = true;
        -1 // libbpf stops consuming; this record is consumed
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

/// Take at most `n` records; the number taken.
fn take_records(
    ring: &RingBuffer<'_>,
    consumer: &RefCell<Consumer<'_>>,
    n: usize,
    errors: &mut Errors,
) -> u64 {
    let before = consumer.borrow().consumed;
    consumer.borrow_mut().paused = false;
    let ret = ring.consume_raw_n(n);
    let mut c = consumer.borrow_mut();
    if ret < 0 && !c.paused && ret != -libc::EINTR {
        errors.set(
            anyhow::Error::new(io::Error::from_raw_os_error(-ret))
                .context("reading the ring buffer"),
        );
    }
    if let Err(e) = c.sink.flush() {
        errors.output(e);
    }
    if let Some(e) = c.output_error.take() {
        errors.output(e);
    }
    c.consumed - before
}

/// Sleep until the ring buffer signals records, or `timeout`. Records
/// written without a wakeup are found by the next turn's consume.
fn wait_for_records(ring: &RingBuffer<'_>, timeout: Duration) {
    let mut event = [libc::epoll_event { events: 0, u64: 0 }];
    let ms = i32::try_from(timeout.as_millis()).unwrap_or(i32::MAX);
    // SAFETY: the epoll fd belongs to `ring`, which outlives the call, and
    // `event` has room for the one event asked for. EINTR (a stop signal)
    // only ends the wait early.
    unsafe { libc::epoll_wait(ring.epoll_fd(), event.as_mut_ptr(), 1, ms) };
}

/// Kernel counts plus the daemon's.
fn gather(kernel: &Counts, consumer: &RefCell<Consumer<'_>>, queue: &OutputQueue) -> Counts {
    let mut c = *kernel;
    c.merge(&consumer.borrow().counts);
    c.merge(&queue.counts());
    c
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
    let mut sink = EventSink::new(format, queue_writer).context("opening the output")?;
    if format == Format::Text && io::stdout().is_terminal() {
        // A person reads it: aligned columns. Piped, the plain lines stay.
        sink.show_table(Table::for_terminal())
            .context("writing the table header")?;
    }
    let direct = format == Format::Journald;
    let writer = if direct {
        None
    } else {
        // A descriptor of its own: std's stdout lock is never held by a
        // writer that may be blocked at exit.
        let out = File::from(nix::unistd::dup(io::stdout()).context("duplicating stdout")?);
        Some(
            WriterThread::spawn(out, Arc::clone(&queue), Arc::clone(liveness))
                .context("starting the output thread")?,
        )
    };
    let consumer = RefCell::new(Consumer {
        sink,
        notes,
        direct,
        queue: Arc::clone(&queue),
        event: ExecEvent::default(),
        cgroups: CgroupCache::default(),
        own_pidns: std::fs::metadata("/proc/self/ns/pid")
            .ok()
            .map(|m| std::os::unix::fs::MetadataExt::ino(&m)),
        env_names: opts.env_names.clone(),
        mode: Mode::Deliver,
        counts: Counts::default(),
        consumed: 0,
        output_error: None,
        stop,
        deadline: None,
        paused: false,
    });
    let mut builder = RingBufferBuilder::new();
    builder
        .add(loader.events_map(), |record: &[u8]| {
            consumer.borrow_mut().on_record(record)
        })
        .context("setting up the ring buffer reader")?;
    let ring = builder
        .build()
        .context("setting up the ring buffer reader")?;
    // Attached and reading: an exec from now on is recorded.
    notifier.ready("recording");
    liveness.touch();
    let poll_timeout = match notifier.watchdog_interval() {
        Some(w) => opts.poll_interval.min(w / 2),
        None => opts.poll_interval,
    };

    // The kernel counters start at zero when the program loads: whatever was
    // lost before this loop runs is reported by the first check.
    let mut kernel = Counts::default();
    let mut reported = Counts::default();
    let mut last_stats_at = Instant::now();
    let mut errors = Errors::default();

    while !stop.load(Ordering::Relaxed) {
        let taken = if queue.is_full() {
            0
        } else {
            take_records(&ring, &consumer, RECORDS_PER_TURN, &mut errors)
        };
        if let Some(e) = queue.take_error() {
            errors.output(e);
        }
        if errors.is_set() {
            break;
        }
        {
            let mut c = consumer.borrow_mut();
            if let Some(forget) = c.cgroups.trim() {
                loader.forget_cgroups(&forget);
            }
            let new = c.cgroups.take_new();
            // A full kernel set only means those records keep carrying the path.
            if let Err(e) = loader.mark_cgroups_known(&new) {
                tracing::debug!(error = %e, "known-cgroups map not updated");
            }
        }
        if last_stats_at.elapsed() >= opts.stats_interval {
            last_stats_at = Instant::now();
            consumer.borrow_mut().sink.clock_mut().refresh();
            match loader.stats() {
                Ok(now) => kernel = now,
                Err(e) => {
                    errors.set(anyhow::Error::new(e).context("reading BPF counters"));
                    break;
                }
            }
            let counts = gather(&kernel, &consumer, &queue);
            report_losses(&reported, &counts);
            reported = counts;
            if let Some(m) = &opts.metrics {
                m.publish(&counts);
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
        } else if taken < RECORDS_PER_TURN as u64 {
            wait_for_records(&ring, poll_timeout);
        }
    }

    // Stop new records, then deliver what is already in the ring buffer and
    // the output queue, until the deadline.
    let deadline = Instant::now() + opts.drain_timeout;
    notifier.stopping();
    loader.detach();
    if !errors.output_failed {
        consumer.borrow_mut().deadline = Some(deadline);
        while Instant::now() < deadline {
            if queue.is_full() {
                queue.wait_for_room(Duration::from_millis(100).min(deadline - Instant::now()));
            } else if take_records(&ring, &consumer, RECORDS_PER_TURN, &mut errors) == 0
                && !consumer.borrow().paused
            {
                break; // empty
            }
            if let Some(e) = queue.take_error() {
                errors.output(e);
            }
            if errors.output_failed {
                break;
            }
            if liveness.is_alive() {
                notifier.watchdog_tick();
            }
        }
    }
    queue.close();
    if let Some(w) = writer {
        if !errors.output_failed {
            queue.wait_finished(deadline);
        }
        w.abandon();
    }
    if let Some(e) = queue.take_error() {
        errors.output(e);
    }

    // Whatever is still in the ring buffer is lost: count it.
    consumer.borrow_mut().mode = Mode::Discard(if errors.output_failed {
        Counter::lost_output
    } else {
        Counter::lost_shutdown
    });
    let _ = ring.consume_raw();
    // The kernel's final counts. A program that was running at detach may
    // still submit a record: take it until the counts agree.
    for _ in 0..20 {
        match loader.stats() {
            Ok(now) => kernel = now,
            Err(e) => {
                errors.set(anyhow::Error::new(e).context("reading BPF counters"));
                break;
            }
        }
        let settled = kernel.get(Counter::submitted) == consumer.borrow().consumed
            && kernel.get(Counter::seen)
                == kernel.get(Counter::submitted)
                    + kernel.get(Counter::lost_ringbuf_full)
                    + kernel.get(Counter::lost_no_scratch);
        if settled {
            break;
        }
        std::thread::sleep(Duration::from_millis(5));
        let _ = ring.consume_raw();
    }
    drop(ring);

    let counts = gather(&kernel, &consumer, &queue);
    report_losses(&reported, &counts);
    if let Some(m) = &opts.metrics {
        m.publish(&counts);
    }
    counts.log_summary();
    let unaccounted = counts.unaccounted();
    if unaccounted != 0 {
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
