//! The daemon loop: poll the ring buffer, decode, write, watch the counters,
//! and on a stop signal detach, drain what is left and summarise.

use std::cell::RefCell;
use std::io::{self, Write};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use libbpf_rs::RingBufferBuilder;
use tracing::{info, warn};

use crate::bpf_loader::{BpfLoader, KernelStats};
use crate::cgroups::CgroupCache;
use crate::decode::ExecEvent;
use crate::metrics::Metrics;
use crate::output::journald::message_ids::{LOST, SUMMARY};
use crate::output::EventSink;
use crate::sd_notify::Notifier;

/// Timing of the loop.
#[derive(Debug, Clone)]
pub struct LoopOptions {
    /// Longest time a record waits in the ring buffer when the BPF side does
    /// not force a wakeup: the delivery latency bound.
    pub poll_interval: Duration,
    /// How often the kernel counters are read (and losses reported).
    pub stats_interval: Duration,
    /// Prometheus metrics to keep up to date, when served.
    pub metrics: Option<Arc<Metrics>>,
}

impl Default for LoopOptions {
    fn default() -> Self {
        LoopOptions {
            poll_interval: Duration::from_millis(100),
            stats_interval: Duration::from_secs(1),
            metrics: None,
        }
    }
}

/// What a run delivered and lost.
#[derive(Debug, Clone, Default)]
pub struct Summary {
    pub events: u64,
    pub decode_errors: u64,
    pub kernel: KernelStats,
}

/// Decode errors logged one by one before only the count is kept.
const DECODE_ERRORS_LOGGED: u64 = 10;

struct Consumer<W: Write> {
    sink: EventSink<W>,
    event: ExecEvent,
    cgroups: CgroupCache,
    /// execwatch's own pid namespace: "the host's" for the events.
    own_pidns: Option<u64>,
    metrics: Option<Arc<Metrics>>,
    events: u64,
    decode_errors: u64,
    io_error: Option<io::Error>,
}

impl<W: Write> Consumer<W> {
    fn on_record(&mut self, record: &[u8]) -> i32 {
        match self.event.decode_from(record) {
            Ok(()) => {
                self.events += 1;
                let ev = &mut self.event;
                ev.cgroup = self
                    .cgroups
                    .resolve(ev.cgroup_id, ev.cgroup_path.as_deref());
                ev.host_pid_ns = self.own_pidns.map(|ino| ino == u64::from(ev.pidns_ino));
                if let Some(m) = &self.metrics {
                    m.event(ev.succeeded());
                }
                if let Err(e) = self.sink.write_event(&self.event) {
                    self.io_error = Some(e);
                    return -1; // stop consuming: the output is gone
                }
            }
            Err(e) => {
                self.decode_errors += 1;
                if let Some(m) = &self.metrics {
                    m.decode_error();
                }
                if self.decode_errors <= DECODE_ERRORS_LOGGED {
                    warn!(error = %e, record_len = record.len(), "malformed record skipped");
                }
            }
        }
        0
    }
}

fn report_losses(prev: &KernelStats, now: &KernelStats) {
    if now.lost() > prev.lost() {
        warn!(
            message_id = LOST,
            lost_new = now.lost() - prev.lost(),
            lost_total = now.lost(),
            lost_ringbuf_full = now.lost_ringbuf_full,
            lost_no_scratch = now.lost_no_scratch,
            "exec events lost: the ring buffer was full (raise --ring-buffer-size, or the output is too slow)"
        );
    }
}

/// Run until `stop` is set, then drain and return the summary. The writer's
/// errors end the run with an error.
pub fn run<W: Write>(
    loader: &mut BpfLoader<'_>,
    sink: EventSink<W>,
    stop: &AtomicBool,
    opts: &LoopOptions,
    notifier: &mut Notifier,
) -> Result<Summary> {
    let consumer = RefCell::new(Consumer {
        sink,
        event: ExecEvent::default(),
        cgroups: CgroupCache::default(),
        own_pidns: std::fs::metadata("/proc/self/ns/pid")
            .ok()
            .map(|m| std::os::unix::fs::MetadataExt::ino(&m)),
        metrics: opts.metrics.clone(),
        events: 0,
        decode_errors: 0,
        io_error: None,
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
    crate::handover::drain_previous(
        loader,
        &ring,
        |record: &[u8]| consumer.borrow_mut().on_record(record),
        || consumer.borrow().events + consumer.borrow().decode_errors,
    )
    .context("draining what the previous execwatch left")?;
    // Attached and reading: an exec from now on is recorded.
    notifier.ready("recording");
    let poll_timeout = match notifier.watchdog_interval() {
        Some(w) => opts.poll_interval.min(w / 2),
        None => opts.poll_interval,
    };

    // Whatever was lost and not yet reported (since load, or since the
    // previous daemon's last report) is reported by the first check.
    let mut last_stats = crate::handover::reported_stats(&loader.handover().carried);
    let mut last_stats_at = Instant::now();
    let mut result = Ok(());

    while !stop.load(Ordering::Relaxed) {
        // Records written without a wakeup are only seen by consume(); poll()
        // returns early when the BPF side forces a wakeup.
        notifier.watchdog_tick();
        if let Err(e) = ring.poll(poll_timeout).and_then(|()| ring.consume()) {
            if e.kind() != libbpf_rs::ErrorKind::Interrupted && consumer.borrow().io_error.is_none()
            {
                result = Err(anyhow::Error::new(e).context("reading the ring buffer"));
                break;
            }
        }
        let mut c = consumer.borrow_mut();
        if let Some(e) = c.io_error.take() {
            result = Err(anyhow::Error::new(e).context("writing events"));
            break;
        }
        if let Err(e) = c.sink.flush() {
            result = Err(anyhow::Error::new(e).context("writing events"));
            break;
        }
        if let Some(forget) = c.cgroups.trim() {
            loader.forget_cgroups(&forget);
        }
        let new = c.cgroups.take_new();
        // A full kernel set only means those records keep carrying the path.
        if let Err(e) = loader.mark_cgroups_known(&new) {
            tracing::debug!(error = %e, "known-cgroups map not updated");
        }
        if last_stats_at.elapsed() >= opts.stats_interval {
            last_stats_at = Instant::now();
            c.sink.clock_mut().refresh();
            let now = match loader.stats() {
                Ok(now) => now,
                Err(e) => {
                    // Leave through the detach and summary below.
                    result = Err(anyhow::Error::new(e).context("reading BPF counters"));
                    break;
                }
            };
            report_losses(&last_stats, &now);
            if let Some(m) = &opts.metrics {
                m.kernel(&last_stats, &now);
            }
            if notifier.enabled() {
                notifier.status(&format!(
                    "recording: {} events, {} lost, {} filtered",
                    c.events,
                    now.lost(),
                    now.filtered
                ));
            }
            last_stats = now;
            if let Err(e) =
                crate::handover::save_progress(loader, c.events, c.decode_errors, &last_stats)
            {
                tracing::debug!(error = %e, "meta map not updated");
            }
        }
    }

    // Stop new records, then drain everything already in the buffer.
    notifier.stopping();
    loader.detach();
    if result.is_ok() {
        let drained = ring.consume();
        let mut c = consumer.borrow_mut();
        if let Some(e) = c.io_error.take() {
            result = Err(anyhow::Error::new(e).context("writing events"));
        } else if let Err(e) = drained {
            result = Err(anyhow::Error::new(e).context("draining the ring buffer"));
        } else if let Err(e) = c.sink.flush() {
            result = Err(anyhow::Error::new(e).context("writing events"));
        }
    }
    drop(ring);

    let kernel = loader.stats().context("reading BPF counters")?;
    report_losses(&last_stats, &kernel);
    if let Some(m) = &opts.metrics {
        m.kernel(&last_stats, &kernel);
    }
    let c = consumer.into_inner();
    if let Err(e) = crate::handover::save_progress(loader, c.events, c.decode_errors, &kernel) {
        warn!(error = %e, "could not record this run's counts for the next execwatch");
    }
    let summary = Summary {
        events: c.events,
        decode_errors: c.decode_errors,
        kernel,
    };
    // Counters kept from earlier daemons: seen = events_before + events +
    // lost_total + decode_errors_before + decode_errors + pending, where
    // pending waits in the ring buffer for the next daemon.
    let before = loader.handover().carried;
    let pending = i128::from(kernel.seen)
        - i128::from(before.delivered + summary.events)
        - i128::from(kernel.lost())
        - i128::from(before.decode_errors + summary.decode_errors);
    info!(
        message_id = SUMMARY,
        events = summary.events,
        events_before = before.delivered,
        decode_errors_before = before.decode_errors,
        pending = pending as i64,
        seen = kernel.seen,
        lost_total = kernel.lost(),
        lost_ringbuf_full = kernel.lost_ringbuf_full,
        lost_no_scratch = kernel.lost_no_scratch,
        decode_errors = summary.decode_errors,
        args_read_failed = kernel.args_read_failed,
        exe_read_failed = kernel.exe_read_failed,
        wakeups_forced = kernel.wakeups_forced,
        filtered = kernel.filtered,
        "summary"
    );
    result.map(|()| summary)
}
