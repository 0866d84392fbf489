//! Prometheus metrics of the daemon's own health and a liveness endpoint,
//! served over HTTP when `--metrics-addr` is given.
//!
//! The server is hyper's HTTP/1 server on a current-thread tokio runtime in
//! a thread of its own: hyper is the maintained Rust HTTP stack and has the
//! limits a port reachable from other pods needs (request head size, head
//! read timeout, no keep-alive, the body never read). The rest is here: a
//! cap on connections where a new one evicts the oldest of the client
//! address holding the most (idle or flooding connections cannot lock
//! scrapes out), a lifetime per connection (a client that does
//! not read the response cannot hold one), GET and HEAD only.

use std::collections::{BTreeMap, HashMap};
use std::convert::Infallible;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::{HeaderValue, ALLOW, CONTENT_TYPE};
use hyper::{Method, Request, Response, StatusCode};
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{prometheus_text, DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::{ConstGauge, Gauge};
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;
use tokio::sync::Notify;

use crate::counters::{Counts, FAMILIES};
use crate::liveness::Liveness;

type Labels = Vec<(&'static str, &'static str)>;

/// Limits of the HTTP server.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Open connections; one more evicts an old one ([`Connections::admit`]).
    pub max_connections: usize,
    /// The request line and headers must arrive within this time...
    pub head_timeout: Duration,
    /// ...and be at most this big (hyper answers 431 beyond it).
    pub max_head_bytes: usize,
    /// Longest life of a connection, response included.
    pub connection_timeout: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_connections: 64,
            head_timeout: Duration::from_secs(5),
            // hyper's smallest read buffer; a scrape's head is ~300 bytes.
            max_head_bytes: 8192,
            connection_timeout: Duration::from_secs(10),
        }
    }
}

/// The counters table as it was last published, encoded at each scrape.
#[derive(Debug, Default)]
struct Published {
    counts: Mutex<Counts>,
}

#[derive(Debug)]
struct TableCollector {
    published: Arc<Published>,
    liveness: Arc<Liveness>,
}

impl Collector for TableCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let counts = *self
            .published
            .counts
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        for (family, help) in FAMILIES {
            let members: Vec<_> = counts.iter().filter(|(d, _)| d.metric == *family).collect();
            let mut fam = encoder.encode_descriptor(family, help, None, MetricType::Counter)?;
            match members.as_slice() {
                [(def, value)] if def.label.is_none() => ConstCounter::new(*value).encode(fam)?,
                _ => {
                    for (def, value) in members {
                        let label = def.label.expect("members of a family are labelled");
                        ConstCounter::new(value).encode(fam.encode_family(&[label])?)?;
                    }
                }
            }
        }
        let age = ConstGauge::new(self.liveness.age().as_secs_f64());
        age.encode(encoder.encode_descriptor(
            "progress_age_seconds",
            "Seconds since the event loop or the output last made progress",
            None,
            age.metric_type(),
        )?)?;
        Ok(())
    }
}

#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    published: Arc<Published>,
    liveness: Arc<Liveness>,
}

impl Metrics {
    pub fn new(ring_buffer_bytes: u32, liveness: Arc<Liveness>) -> Arc<Metrics> {
        let mut registry = Registry::with_prefix("execwatch");
        let published = Arc::new(Published::default());
        registry.register_collector(Box::new(TableCollector {
            published: Arc::clone(&published),
            liveness: Arc::clone(&liveness),
        }));
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
        Arc::new(Metrics {
            registry,
            published,
            liveness,
        })
    }

    /// Make `counts` what the next scrape shows.
    pub fn publish(&self, counts: &Counts) {
        *self
            .published
            .counts
            .lock()
            .unwrap_or_else(|p| p.into_inner()) = *counts;
    }

    /// The Prometheus text exposition format (0.0.4).
    pub fn encode(&self) -> String {
        let mut out = String::new();
        prometheus_text::encode(&mut out, &self.registry).expect("writing to a String");
        out
    }
}

fn respond(status: StatusCode, body: impl Into<Bytes>) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(body.into()));
    *r.status_mut() = status;
    r
}

/// The only routes: GET or HEAD of /metrics and /healthz. The request body,
/// whatever its announced length, is never read.
fn route(req: &Request<Incoming>, metrics: &Metrics) -> Response<Full<Bytes>> {
    if req.method() != Method::GET && req.method() != Method::HEAD {
        let mut r = respond(StatusCode::METHOD_NOT_ALLOWED, "GET or HEAD only\n");
        r.headers_mut()
            .insert(ALLOW, HeaderValue::from_static("GET, HEAD"));
        return r;
    }
    match req.uri().path() {
        "/metrics" => {
            let mut r = respond(StatusCode::OK, metrics.encode());
            r.headers_mut().insert(
                CONTENT_TYPE,
                HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
            );
            r
        }
        "/healthz" => {
            let age = metrics.liveness.age();
            if metrics.liveness.is_alive() {
                respond(StatusCode::OK, "ok\n")
            } else {
                respond(
                    StatusCode::SERVICE_UNAVAILABLE,
                    format!(
                        "stalled: no progress of the event loop or the output for {}s (limit {}s)\n",
                        age.as_secs(),
                        metrics.liveness.limit().as_secs()
                    ),
                )
            }
        }
        _ => respond(StatusCode::NOT_FOUND, "see /metrics and /healthz\n"),
    }
}

/// Who a peer address counts as: an IPv6 address by its /64, which one
/// host usually holds whole (so a flood from many of its addresses is one
/// client's); an IPv4-mapped one as the IPv4 address.
fn client_of(peer: IpAddr) -> IpAddr {
    match peer {
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6((u128::from(v6) & !((1u128 << 64) - 1)).into()),
        },
        v4 => v4,
    }
}

/// Open connections by age (ids grow), each with its client (see
/// [`client_of`]) and eviction signal.
#[derive(Default)]
struct Connections {
    next_id: u64,
    open: BTreeMap<u64, (IpAddr, Arc<Notify>)>,
}

impl Connections {
    /// Admit a connection from `peer`; its id and eviction signal. When
    /// all are taken, the peer holding the most gives up its oldest: one
    /// client flooding connections evicts its own, never the scraper's or
    /// the kubelet's probe (from one client, the oldest goes).
    fn admit(&mut self, peer: IpAddr, max: usize) -> (u64, Arc<Notify>) {
        let peer = client_of(peer);
        let victim = if self.open.len() >= max {
            let mut held: HashMap<IpAddr, usize> = HashMap::new();
            for (p, _) in self.open.values() {
                *held.entry(*p).or_default() += 1;
            }
            let most = held.values().copied().max().unwrap_or(0);
            // The oldest connection of a peer holding the most.
            self.open
                .iter()
                .find(|(_, (p, _))| held.get(p) == Some(&most))
                .map(|(id, _)| *id)
        } else {
            None
        };
        if let Some((_, evicted)) = victim.and_then(|id| self.open.remove(&id)) {
            evicted.notify_one();
        }
        let id = self.next_id;
        self.next_id += 1;
        let evicted = Arc::new(Notify::new());
        self.open.insert(id, (peer, Arc::clone(&evicted)));
        (id, evicted)
    }
}

async fn serve_connection(
    stream: tokio::net::TcpStream,
    metrics: Arc<Metrics>,
    limits: Limits,
    evicted: Arc<Notify>,
) {
    use hyper::server::conn::http1;
    use hyper_util::rt::{TokioIo, TokioTimer};

    let service = hyper::service::service_fn(move |req: Request<Incoming>| {
        let resp = route(&req, &metrics);
        async move { Ok::<_, Infallible>(resp) }
    });
    let conn = http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.head_timeout)
        .max_buf_size(limits.max_head_bytes)
        .keep_alive(false)
        .serve_connection(TokioIo::new(stream), service);
    tokio::select! {
        _ = tokio::time::timeout(limits.connection_timeout, conn) => {}
        () = evicted.notified() => {}
    }
}

async fn accept_loop(listener: tokio::net::TcpListener, metrics: Arc<Metrics>, limits: Limits) {
    let conns = Arc::new(Mutex::new(Connections::default()));
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok((s, peer)) => (s, peer.ip()),
            Err(e) => {
                // Out of fds or memory: back off rather than spin.
                tracing::debug!(error = %e, "metrics: accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let (id, evicted) = conns
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .admit(peer, limits.max_connections);
        let (m, l, c) = (Arc::clone(&metrics), limits.clone(), Arc::clone(&conns));
        tokio::spawn(async move {
            serve_connection(stream, m, l, evicted).await;
            c.lock().unwrap_or_else(|p| p.into_inner()).open.remove(&id);
        });
    }
}

/// Serve `/metrics` and `/healthz` on `addr` from a thread of their own.
/// Binding happens here, so a bad or busy address is reported at once.
pub fn serve(addr: &str, metrics: Arc<Metrics>, limits: Limits) -> std::io::Result<SocketAddr> {
    let listener = std::net::TcpListener::bind(addr)?;
    listener.set_nonblocking(true)?;
    let local = listener.local_addr()?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .enable_time()
        .build()?;
    std::thread::Builder::new()
        .name("metrics".into())
        .spawn(move || {
            runtime.block_on(async move {
                match tokio::net::TcpListener::from_std(listener) {
                    Ok(l) => accept_loop(l, metrics, limits).await,
                    Err(e) => tracing::error!(error = %e, "metrics: cannot serve"),
                }
            });
        })?;
    Ok(local)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::counters::{Counter, TABLE};

    #[test]
    fn a_connection_flood_evicts_only_its_own_connections() {
        let (scraper, flood, other): (IpAddr, IpAddr, IpAddr) = (
            "10.0.0.1".parse().unwrap(),
            "10.0.0.66".parse().unwrap(),
            "10.0.0.2".parse().unwrap(),
        );
        let mut c = Connections::default();
        let (scrape_id, scrape_evicted) = c.admit(scraper, 64);
        let mut flood_signals = Vec::new();
        for _ in 0..1000 {
            flood_signals.push(c.admit(flood, 64));
        }
        // The flood holds the rest of the cap; the scrape stays open.
        assert!(c.open.contains_key(&scrape_id));
        assert_eq!(c.open.values().filter(|(p, _)| *p == flood).count(), 63);
        let evicted = |n: &Arc<Notify>| {
            let f = n.notified();
            tokio::pin!(f);
            f.as_mut().enable()
        };
        assert!(!evicted(&scrape_evicted), "the scraper was not evicted");
        assert!(evicted(&flood_signals[0].1), "the flood's oldest was");
        assert!(!evicted(&flood_signals[999].1));

        // Full of many peers' connections: the one holding the most gives
        // up its oldest.
        let mut c = Connections::default();
        for i in 0..64u8 {
            let peer = if i < 10 {
                other
            } else {
                IpAddr::from([10, 1, 0, i])
            };
            c.admit(peer, 64);
        }
        assert_eq!(c.open.len(), 64);
        c.admit(scraper, 64);
        assert_eq!(c.open.len(), 64);
        assert_eq!(c.open.values().filter(|(p, _)| *p == other).count(), 9);
        assert_eq!(c.open.values().filter(|(p, _)| *p == scraper).count(), 1);

        // A flood from every address of one IPv6 /64 is one client's.
        let mut c = Connections::default();
        let scraper: IpAddr = "fd00::1".parse().unwrap();
        let (scrape_id, _) = c.admit(scraper, 64);
        for i in 0..1000u128 {
            let addr = u128::from("fd00:0:0:66::".parse::<std::net::Ipv6Addr>().unwrap()) + i;
            c.admit(IpAddr::V6(addr.into()), 64);
        }
        assert!(c.open.contains_key(&scrape_id), "the scraper was evicted");
        assert_eq!(c.open.len(), 64);
    }

    #[test]
    fn every_counter_of_the_table_is_exposed() {
        let m = Metrics::new(65536, Arc::new(Liveness::default()));
        let mut c = Counts::default();
        c.set(Counter::events_success, 2);
        c.set(Counter::events_failure, 1);
        c.set(Counter::lost_ringbuf_full, 3);
        c.set(Counter::lost_shutdown, 4);
        c.set(Counter::filtered, 5);
        c.set(Counter::caller_comm_missing, 6);
        m.publish(&c);
        let text = m.encode();
        for line in [
            r#"execwatch_events_total{outcome="success"} 2"#,
            r#"execwatch_events_total{outcome="failure"} 1"#,
            r#"execwatch_lost_total{reason="ringbuf_full"} 3"#,
            r#"execwatch_lost_total{reason="no_scratch"} 0"#,
            r#"execwatch_lost_total{reason="shutdown"} 4"#,
            r#"execwatch_lost_total{reason="output"} 0"#,
            "execwatch_filtered_total 5",
            "execwatch_caller_comm_missing_total 6",
            "execwatch_ring_buffer_bytes 65536",
            "execwatch_decode_errors_total 0",
        ] {
            assert!(
                text.lines().any(|l| l == line),
                "{line} missing in:\n{text}"
            );
        }
        // Every entry of the table, under its family and label.
        for (def, _) in c.iter() {
            let series = match def.label {
                Some((k, v)) => format!("execwatch_{}_total{{{k}=\"{v}\"}} ", def.metric),
                None => format!("execwatch_{}_total ", def.metric),
            };
            assert!(
                text.lines().any(|l| l.starts_with(&series)),
                "{} missing: {series}\n{text}",
                def.key
            );
        }
        assert_eq!(
            text.lines()
                .filter(|l| l.starts_with("# HELP execwatch_lost"))
                .count(),
            1
        );
        assert!(text.contains("execwatch_build_info{version="));
        assert!(text.contains("execwatch_start_time_seconds "));
        assert!(text.contains("execwatch_progress_age_seconds "));
        assert_eq!(TABLE.len(), c.iter().count());
    }
}
