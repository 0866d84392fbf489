//! Every counter of a run in one table: the kernel's `stat_index` counters
//! and the daemon's own (delivered, lost by reason, decode errors). The
//! summary, the loss warnings, sd_notify STATUS and the Prometheus metrics
//! are all rendered from this table, so a counter cannot reach one and miss
//! another.

use crate::bpf_loader::types::stat_index as S;
use crate::output::journald::message_ids::{LOST, SUMMARY};

/// Where a counter is counted.
#[derive(Debug, Clone, Copy)]
pub enum Source {
    /// A per-CPU slot of the BPF `stats` map.
    Kernel(S),
    /// The daemon.
    Daemon,
}

/// What a counter means for the run's arithmetic:
/// `seen = delivered + lost (every reason) + decode errors + before + pending`.
///
/// The kernel's counters (and the daemon's losses) count from when the
/// `stats` map was created, which may be by an earlier daemon that kept its
/// objects for the next one (crate::handover); `before` is what those earlier
/// daemons took from the ring buffer and delivered or rejected, `pending`
/// what this one leaves in a kept ring buffer for the next. Both are zero
/// in a run that keeps nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Class {
    /// Execs that reached a hook and passed the filters.
    Seen,
    /// Accepted by the output.
    Delivered,
    /// Never delivered, for the reason in the metric label.
    Lost,
    /// Records that could not be decoded.
    DecodeError,
    /// Delivered or rejected by earlier daemons on the same kept counters.
    Before,
    /// Left in a kept ring buffer for the next daemon, at stop.
    Pending,
    /// Facts that are not part of the arithmetic (degraded fields, wakeups,
    /// filtered execs, records written to the ring buffer).
    Detail,
}

/// One counter.
#[derive(Debug, Clone, Copy)]
pub struct Def {
    pub counter: Counter,
    /// Field name in the summary, the loss warning and STATUS.
    pub key: &'static str,
    pub source: Source,
    pub class: Class,
    /// Prometheus family: `execwatch_<metric>_total`.
    pub metric: &'static str,
    /// The label that tells the members of a family apart.
    pub label: Option<(&'static str, &'static str)>,
}

/// Help text of each Prometheus family named in [`TABLE`].
pub const FAMILIES: &[(&str, &str)] = &[
    (
        "seen",
        "Exec and exit events that reached a hook and passed the filters",
    ),
    (
        "seen_upgrade",
        "Records read from the ring buffer of a previous execwatch of another record layout, whose counters were not taken over (each is then delivered translated, a decode error, or lost)",
    ),
    ("submitted", "Records the kernel wrote into the ring buffer"),
    (
        "events",
        "Events accepted by the output (stdout or journald), by outcome (exits count as success)",
    ),
    (
        "events_before",
        "Events delivered by earlier daemons on the same kept counters (restart without a gap)",
    ),
    ("lost", "Exec events never delivered, by reason"),
    ("decode_errors", "Malformed ring-buffer records skipped"),
    (
        "decode_errors_before",
        "Malformed records skipped by earlier daemons on the same kept counters",
    ),
    (
        "pending",
        "Records left in the kept ring buffer for the next daemon (set at stop)",
    ),
    (
        "read_failed",
        "Events delivered with a field whose memory could not be read",
    ),
    (
        "caller_comm_missing",
        "Events delivered without the caller's task name",
    ),
    (
        "wakeups_forced",
        "Records that woke the reader (ring buffer past the threshold, or a new cgroup's first record)",
    ),
    (
        "filtered",
        "Execs dropped by the in-kernel filters (no record made)",
    ),
];

macro_rules! counters {
    ($( $(#[$doc:meta])* $key:ident: $source:expr, $class:ident, $metric:literal
        $(, $lk:literal = $lv:literal)?; )+) => {
        /// Every counter, in the order the summary lists them.
        #[derive(Debug, Clone, Copy, PartialEq, Eq)]
        #[allow(non_camel_case_types)]
        pub enum Counter {
            $( $(#[$doc])* $key, )+
        }

        /// The table.
        pub const TABLE: &[Def] = &[
            $( Def {
                counter: Counter::$key,
                key: stringify!($key),
                source: $source,
                class: Class::$class,
                metric: $metric,
                label: counters!(@label $($lk, $lv)?),
            }, )+
        ];

        impl Counts {
            /// The run's totals, one diagnostic with a field per counter.
            pub fn log_summary(&self) {
                tracing::info!(
                    message_id = SUMMARY,
                    events = self.delivered(),
                    lost_total = self.lost(),
                    $( $key = self.get(Counter::$key), )+
                    "summary"
                );
            }

            /// A loss warning: `new` more lost since the last one.
            pub fn log_losses(&self, new: u64, hint: &str) {
                tracing::warn!(
                    message_id = LOST,
                    lost_new = new,
                    lost_total = self.lost(),
                    $( $key = self.get(Counter::$key), )+
                    "exec events lost: {hint}"
                );
            }
        }
    };
    (@label) => { None };
    (@label $k:literal, $v:literal) => { Some(($k, $v)) };
}

counters! {
    seen: Source::Kernel(S::STAT_SEEN), Seen, "seen";
    /// Records of a previous build's ring buffer of another layout: seen by
    /// its counters, which this daemon could not take over. Each is also
    /// delivered (translated), a decode error, or lost (`upgrade` when not
    /// translatable).
    seen_upgrade: Source::Daemon, Seen, "seen_upgrade";
    submitted: Source::Kernel(S::STAT_SUBMITTED), Detail, "submitted";
    events_success: Source::Daemon, Delivered, "events", "outcome" = "success";
    events_failure: Source::Daemon, Delivered, "events", "outcome" = "failure";
    /// Delivered by the daemons before this one on the kept counters.
    events_before: Source::Daemon, Before, "events_before";
    /// The ring buffer was full.
    lost_ringbuf_full: Source::Kernel(S::STAT_LOST_RINGBUF_FULL), Lost, "lost", "reason" = "ringbuf_full";
    /// No scratch record (should never happen).
    lost_no_scratch: Source::Kernel(S::STAT_LOST_NO_SCRATCH), Lost, "lost", "reason" = "no_scratch";
    /// The output failed (a write error).
    lost_output: Source::Daemon, Lost, "lost", "reason" = "output";
    /// Not written before the drain deadline at shutdown.
    lost_shutdown: Source::Daemon, Lost, "lost", "reason" = "shutdown";
    /// In a previous build's ring buffer of another record layout that
    /// could not be translated into this build's.
    lost_upgrade: Source::Daemon, Lost, "lost", "reason" = "upgrade";
    /// Taken from the ring buffer by a daemon that died (SIGKILL, the
    /// watchdog) before it delivered them or counted them.
    lost_crash: Source::Daemon, Lost, "lost", "reason" = "crash";
    decode_errors: Source::Daemon, DecodeError, "decode_errors";
    decode_errors_before: Source::Daemon, Before, "decode_errors_before";
    /// Left in the kept ring buffer at stop: the next daemon delivers them.
    pending: Source::Daemon, Pending, "pending";
    args_read_failed: Source::Kernel(S::STAT_ARGS_READ_FAILED), Detail, "read_failed", "field" = "args";
    filename_read_failed: Source::Kernel(S::STAT_FILENAME_READ_FAILED), Detail, "read_failed", "field" = "filename";
    exe_read_failed: Source::Kernel(S::STAT_EXE_READ_FAILED), Detail, "read_failed", "field" = "exe";
    path_read_failed: Source::Kernel(S::STAT_PATH_READ_FAILED), Detail, "read_failed", "field" = "path";
    caller_comm_missing: Source::Kernel(S::STAT_CALLER_COMM_MISSING), Detail, "caller_comm_missing";
    wakeups_forced: Source::Kernel(S::STAT_WAKEUPS_FORCED), Detail, "wakeups_forced";
    filtered: Source::Kernel(S::STAT_FILTERED), Detail, "filtered";
}

/// Number of counters.
pub const COUNTERS: usize = TABLE.len();

impl Counter {
    pub fn def(self) -> &'static Def {
        &TABLE[self as usize]
    }
}

/// A value for every counter of [`TABLE`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Counts([u64; COUNTERS]);

impl Default for Counts {
    fn default() -> Self {
        Counts([0; COUNTERS])
    }
}

impl Counts {
    pub fn get(&self, c: Counter) -> u64 {
        self.0[c as usize]
    }

    pub fn set(&mut self, c: Counter, v: u64) {
        self.0[c as usize] = v;
    }

    pub fn add(&mut self, c: Counter, v: u64) {
        self.0[c as usize] += v;
    }

    /// Every counter with its value, in table order.
    pub fn iter(&self) -> impl Iterator<Item = (&'static Def, u64)> + '_ {
        TABLE.iter().zip(self.0.iter().copied())
    }

    fn total(&self, class: Class) -> u64 {
        self.iter()
            .filter(|(d, _)| d.class == class)
            .map(|(_, v)| v)
            .sum()
    }

    pub fn delivered(&self) -> u64 {
        self.total(Class::Delivered)
    }

    /// Lost, every reason.
    pub fn lost(&self) -> u64 {
        self.total(Class::Lost)
    }

    /// Add `other` counter by counter: kernel and daemon counts are kept
    /// apart (each has zeros for the other side's entries) and summed here.
    pub fn merge(&mut self, other: &Counts) {
        for (a, b) in self.0.iter_mut().zip(other.0.iter()) {
            *a += b;
        }
    }

    /// `seen - (delivered + lost + decode errors + before + pending)`: zero
    /// once every record has been delivered, counted, or left for the next
    /// daemon; records still on their way make it positive during the run.
    pub fn unaccounted(&self) -> i128 {
        i128::from(self.total(Class::Seen))
            - i128::from(self.delivered())
            - i128::from(self.lost())
            - i128::from(self.total(Class::DecodeError))
            - i128::from(self.total(Class::Before))
            - i128::from(self.total(Class::Pending))
    }

    /// The reasons whose counters grew since `prev`, with how many.
    pub fn new_losses(&self, prev: &Counts) -> Vec<(&'static str, u64)> {
        self.iter()
            .zip(prev.0.iter())
            .filter(|((d, now), then)| d.class == Class::Lost && now > *then)
            .map(|((d, now), then)| (d.label.map_or(d.key, |(_, v)| v), now - then))
            .collect()
    }

    /// sd_notify STATUS: the totals, then every counter that is not zero.
    pub fn status_line(&self) -> String {
        let mut s = format!(
            "recording: {} events, {} lost;",
            self.delivered(),
            self.lost()
        );
        for (d, v) in self.iter().filter(|(_, v)| *v > 0) {
            s.push_str(&format!(" {}={v}", d.key));
        }
        s
    }
}

/// What to do about each loss reason, for the warning.
pub fn loss_hint(reason: &str) -> &'static str {
    match reason {
        "ringbuf_full" => {
            "the ring buffer was full (raise --ring-buffer-size, or the output is too slow)"
        }
        "no_scratch" => "no scratch record (a bug: please report it)",
        "output" => "the output failed (see the error)",
        "shutdown" => {
            "not written before the drain deadline at shutdown (raise --drain-timeout, or the output is too slow)"
        }
        "upgrade" => {
            "left by a previous execwatch with another record layout that this one cannot translate (their sequence numbers and the reason are in the log)"
        }
        _ => "see the lost_* counters",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn every_stat_index_has_exactly_one_entry() {
        for i in 0..S::STAT_MAX.0 {
            let n = TABLE
                .iter()
                .filter(|d| matches!(d.source, Source::Kernel(s) if s.0 == i))
                .count();
            assert_eq!(
                n, 1,
                "stat_index {i} has {n} entries in counters::TABLE: add one"
            );
        }
        for d in TABLE {
            if let Source::Kernel(s) = d.source {
                assert!(s.0 < S::STAT_MAX.0, "{} is not a stat_index", d.key);
            }
        }
    }

    #[test]
    fn table_is_consistent() {
        for (i, d) in TABLE.iter().enumerate() {
            assert_eq!(d.counter as usize, i, "{} out of order", d.key);
            assert!(
                FAMILIES.iter().any(|(m, _)| *m == d.metric),
                "{}: no help for family {}",
                d.key,
                d.metric
            );
        }
        let keys: HashSet<_> = TABLE.iter().map(|d| d.key).collect();
        assert_eq!(keys.len(), TABLE.len(), "duplicate keys");
        let series: HashSet<_> = TABLE.iter().map(|d| (d.metric, d.label)).collect();
        assert_eq!(series.len(), TABLE.len(), "duplicate series");
        // A family is either one unlabelled counter or labelled members.
        for (m, _) in FAMILIES {
            let members: Vec<_> = TABLE.iter().filter(|d| d.metric == *m).collect();
            assert!(!members.is_empty(), "family {m} has no counter");
            let labelled = members.iter().filter(|d| d.label.is_some()).count();
            assert!(labelled == 0 || labelled == members.len(), "family {m}");
            assert!(labelled > 0 || members.len() == 1, "family {m}");
        }
        // The daemon's reasons are there.
        for reason in [
            "output",
            "shutdown",
            "ringbuf_full",
            "no_scratch",
            "upgrade",
        ] {
            assert!(TABLE
                .iter()
                .any(|d| d.class == Class::Lost && d.label == Some(("reason", reason))));
        }
    }

    #[test]
    fn arithmetic_and_status() {
        let mut c = Counts::default();
        c.set(Counter::seen, 10);
        c.set(Counter::events_success, 5);
        c.set(Counter::events_failure, 1);
        c.set(Counter::lost_ringbuf_full, 2);
        assert_eq!(c.unaccounted(), 2);
        let prev = c;
        c.add(Counter::lost_output, 1);
        c.add(Counter::decode_errors, 1);
        assert_eq!(c.unaccounted(), 0);
        assert_eq!(c.delivered(), 6);
        assert_eq!(c.lost(), 3);
        assert_eq!(c.new_losses(&prev), vec![("output", 1)]);
        let s = c.status_line();
        assert!(s.starts_with("recording: 6 events, 3 lost;"), "{s}");
        assert!(
            s.contains(" lost_output=1") && !s.contains("filtered"),
            "{s}"
        );
    }

    #[test]
    fn a_takeover_adds_up_with_what_came_before_and_what_is_left() {
        // Kernel counters kept from an earlier daemon: 10 seen, of which it
        // delivered 4; this one delivered 3 and left 2 in the buffer.
        let mut c = Counts::default();
        c.set(Counter::seen, 10);
        c.set(Counter::events_before, 4);
        c.set(Counter::events_success, 3);
        c.set(Counter::decode_errors_before, 1);
        assert_eq!(c.unaccounted(), 2);
        c.set(Counter::pending, 2);
        assert_eq!(c.unaccounted(), 0);
        assert_eq!(c.delivered(), 3, "this daemon's deliveries only");
        // An older layout's buffer: its records were seen by its counters.
        c.add(Counter::lost_upgrade, 5);
        assert_eq!(c.unaccounted(), -5);
        c.add(Counter::seen_upgrade, 5);
        assert_eq!(c.unaccounted(), 0);
        assert_eq!(c.lost(), 5);
    }

    #[test]
    fn merge_adds_each_counter() {
        let mut kernel = Counts::default();
        kernel.set(Counter::seen, 7);
        let mut daemon = Counts::default();
        daemon.set(Counter::events_success, 3);
        daemon.set(Counter::lost_output, 4);
        kernel.merge(&daemon);
        assert_eq!(kernel.get(Counter::seen), 7);
        assert_eq!(kernel.get(Counter::events_success), 3);
        assert_eq!(kernel.unaccounted(), 0);
    }
}
