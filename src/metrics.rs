//! Prometheus metrics of the daemon's own health, served over HTTP when
//! `--metrics-addr` is given.

use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use prometheus_client::encoding::prometheus_text;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use crate::bpf_loader::KernelStats;

type Labels = Vec<(&'static str, &'static str)>;

#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    events_success: Counter,
    events_failure: Counter,
    decode_errors: Counter,
    filtered: Counter,
    lost_ringbuf_full: Counter,
    lost_no_scratch: Counter,
}

impl Metrics {
    pub fn new(ring_buffer_bytes: u32) -> Arc<Metrics> {
        let mut registry = Registry::with_prefix("execwatch");
        let events = Family::<Labels, Counter>::default();
        registry.register(
            "events",
            "Exec events delivered, by outcome",
            events.clone(),
        );
        let lost = Family::<Labels, Counter>::default();
        registry.register(
            "lost",
            "Exec events the kernel could not deliver, by reason",
            lost.clone(),
        );
        let decode_errors = Counter::default();
        registry.register(
            "decode_errors",
            "Malformed ring-buffer records skipped",
            decode_errors.clone(),
        );
        let filtered = Counter::default();
        registry.register(
            "filtered",
            "Execs dropped by the in-kernel filters (no record made)",
            filtered.clone(),
        );
        let ring = Gauge::<i64, std::sync::atomic::AtomicI64>::default();
        ring.set(i64::from(ring_buffer_bytes));
        registry.register("ring_buffer_bytes", "Size of the BPF ring buffer", ring);
        let start = Gauge::<f64, AtomicU64>::default();
        start.set(
            SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0.0, |d| d.as_secs_f64()),
        );
        registry.register(
            "start_time_seconds",
            "When the daemon started, seconds since the Unix epoch",
            start,
        );
        let build = Family::<Labels, Gauge>::default();
        build
            .get_or_create(&vec![("version", env!("CARGO_PKG_VERSION"))])
            .set(1);
        registry.register("build_info", "execwatch version", build);

        let events_success = events.get_or_create(&vec![("outcome", "success")]).clone();
        let events_failure = events.get_or_create(&vec![("outcome", "failure")]).clone();
        let lost_ringbuf_full = lost
            .get_or_create(&vec![("reason", "ringbuf_full")])
            .clone();
        let lost_no_scratch = lost.get_or_create(&vec![("reason", "no_scratch")]).clone();
        Arc::new(Metrics {
            registry,
            events_success,
            events_failure,
            decode_errors,
            filtered,
            lost_ringbuf_full,
            lost_no_scratch,
        })
    }

    pub fn event(&self, succeeded: bool) {
        if succeeded {
            self.events_success.inc();
        } else {
            self.events_failure.inc();
        }
    }

    pub fn decode_error(&self) {
        self.decode_errors.inc();
    }

    /// Add what the kernel counted since the previous read.
    pub fn kernel(&self, prev: &KernelStats, now: &KernelStats) {
        let d = |a: u64, b: u64| a.saturating_sub(b);
        self.lost_ringbuf_full
            .inc_by(d(now.lost_ringbuf_full, prev.lost_ringbuf_full));
        self.lost_no_scratch
            .inc_by(d(now.lost_no_scratch, prev.lost_no_scratch));
        self.filtered.inc_by(d(now.filtered, prev.filtered));
    }

    /// The Prometheus text exposition format (0.0.4).
    pub fn encode(&self) -> String {
        let mut out = String::new();
        prometheus_text::encode(&mut out, &self.registry).expect("writing to a String");
        out
    }
}

/// Serve `/metrics` on `addr` from a background thread.
pub fn serve(addr: &str, metrics: Arc<Metrics>) -> std::io::Result<()> {
    let server = tiny_http::Server::http(addr).map_err(std::io::Error::other)?;
    std::thread::Builder::new()
        .name("metrics".into())
        .spawn(move || {
            let text_type = tiny_http::Header::from_bytes(
                &b"Content-Type"[..],
                &b"text/plain; version=0.0.4; charset=utf-8"[..],
            )
            .expect("a valid header");
            for req in server.incoming_requests() {
                let resp = if req.url() == "/metrics" {
                    tiny_http::Response::from_string(metrics.encode())
                        .with_header(text_type.clone())
                } else {
                    tiny_http::Response::from_string("see /metrics\n").with_status_code(404)
                };
                let _ = req.respond(resp);
            }
        })?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_and_gauges_are_exposed() {
        let m = Metrics::new(65536);
        m.event(true);
        m.event(true);
        m.event(false);
        let prev = KernelStats::default();
        let now = KernelStats {
            lost_ringbuf_full: 3,
            filtered: 5,
            ..Default::default()
        };
        m.kernel(&prev, &now);
        m.kernel(&now, &now); // no double counting
        let text = m.encode();
        for line in [
            r#"execwatch_events_total{outcome="success"} 2"#,
            r#"execwatch_events_total{outcome="failure"} 1"#,
            r#"execwatch_lost_total{reason="ringbuf_full"} 3"#,
            r#"execwatch_lost_total{reason="no_scratch"} 0"#,
            "execwatch_filtered_total 5",
            "execwatch_ring_buffer_bytes 65536",
            "execwatch_decode_errors_total 0",
        ] {
            assert!(
                text.lines().any(|l| l == line),
                "{line} missing in:\n{text}"
            );
        }
        assert!(text.contains("execwatch_build_info{version="));
        assert!(text.contains("execwatch_start_time_seconds "));
    }
}
