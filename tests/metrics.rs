//! Prometheus metrics and the liveness endpoint over loopback, with a real
//! HTTP client and hostile ones written here: the counters move with real
//! execs, hostile clients cannot kill, stall or bloat the daemon, and a
//! wedged output fails the liveness probe.

mod common;
mod spawned;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{has_arg, marker, run_quiet, Daemon};
use spawned::{rss_kib, Flood, Spawned};

/// A connection to `addr` from the local address `src` (another address
/// of the loopback network: another client, as the server sees it).
fn connect_from(src: [u8; 4], addr: &str) -> std::io::Result<TcpStream> {
    use nix::sys::socket::{bind, connect, socket, AddressFamily, SockFlag, SockType, SockaddrIn};
    use std::os::fd::AsRawFd;
    let fd = socket(
        AddressFamily::Inet,
        SockType::Stream,
        SockFlag::SOCK_CLOEXEC,
        None,
    )?;
    let local = std::net::SocketAddrV4::new(src.into(), 0);
    bind(fd.as_raw_fd(), &SockaddrIn::from(local))?;
    let to: std::net::SocketAddrV4 = addr.parse().expect("an IPv4 address");
    connect(fd.as_raw_fd(), &SockaddrIn::from(to))?;
    Ok(TcpStream::from(fd))
}

/// Where the idle and slow clients connect from ([`connect_from`]).
const ATTACKER: [u8; 4] = [127, 0, 0, 3];

fn free_addr() -> String {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    format!("127.0.0.1:{port}")
}

/// The server starts listening just after "execwatch attached" is logged.
fn wait_listening(addr: &str) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while TcpStream::connect(addr).is_err() {
        assert!(Instant::now() < deadline, "nothing listens on {addr}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// GET `path` with a 1 s budget: (status, body, time taken).
fn get(addr: &str, path: &str) -> (u16, String, Duration) {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .timeout_global(Some(Duration::from_secs(1)))
        .http_status_as_error(false)
        .build()
        .into();
    let t0 = Instant::now();
    let mut resp = agent
        .get(&format!("http://{addr}{path}"))
        .call()
        .unwrap_or_else(|e| panic!("GET {path} within 1 s: {e}"));
    let body = resp.body_mut().read_to_string().unwrap();
    (resp.status().as_u16(), body, t0.elapsed())
}

fn scrape(addr: &str) -> String {
    let (status, body, _) = get(addr, "/metrics");
    assert_eq!(status, 200, "{body}");
    body
}

fn value(text: &str, series: &str) -> u64 {
    text.lines()
        .find_map(|l| l.strip_prefix(series).and_then(|v| v.strip_prefix(' ')))
        .unwrap_or_else(|| panic!("no {series} in:\n{text}"))
        .trim()
        .parse::<f64>()
        .unwrap() as u64
}

/// A raw request; the status line of the answer, or the read error.
fn raw(addr: &str, request: &[u8]) -> String {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
    let _ = s.write_all(request); // the server may close mid-way
    let mut buf = Vec::new();
    match s.read_to_end(&mut buf) {
        Ok(_) => String::from_utf8_lossy(&buf)
            .lines()
            .next()
            .unwrap_or("")
            .to_string(),
        Err(e) => format!("error: {:?}: {e}", e.kind()),
    }
}

#[test]
fn metrics_count_real_execs() {
    let addr = free_addr();
    let d = Daemon::start(&["--metrics-addr", &addr]);
    wait_listening(&addr);
    let before = scrape(&addr);
    let m = marker("metrics");
    for _ in 0..20 {
        assert!(run_quiet(Command::new("/bin/true").arg(&m)).success());
    }
    assert!(Command::new(format!("/nonexistent/{m}"))
        .arg(&m)
        .status()
        .is_err());
    d.wait_for(21, Duration::from_secs(20), |v| has_arg(v, &m));
    let ok = r#"execwatch_events_total{outcome="success"}"#;
    let failed = r#"execwatch_events_total{outcome="failure"}"#;
    // Counters are published at each --stats-interval (1 s).
    let deadline = Instant::now() + Duration::from_secs(10);
    let after = loop {
        let t = scrape(&addr);
        if value(&t, ok) >= value(&before, ok) + 20 && value(&t, failed) > value(&before, failed) {
            break t;
        }
        assert!(Instant::now() < deadline, "counters did not move:\n{t}");
        std::thread::sleep(Duration::from_millis(200));
    };
    for series in [
        r#"execwatch_lost_total{reason="ringbuf_full"}"#,
        r#"execwatch_lost_total{reason="output"}"#,
        r#"execwatch_lost_total{reason="shutdown"}"#,
    ] {
        assert_eq!(value(&after, series), 0, "{series}");
    }
    // Counters read from the kernel and shown nowhere before.
    for series in [
        "execwatch_seen_total",
        "execwatch_submitted_total",
        "execwatch_caller_comm_missing_total",
        r#"execwatch_read_failed_total{field="filename"}"#,
    ] {
        value(&after, series);
    }
    assert!(value(&after, "execwatch_seen_total") >= 21);
    assert_eq!(value(&after, "execwatch_ring_buffer_bytes"), 8 << 20);
    assert!(after.contains("execwatch_build_info{version=\""));
    assert_eq!(get(&addr, "/other").0, 404);
    assert_eq!(get(&addr, "/healthz").0, 200);
    // GET and HEAD only; HEAD has no body.
    let post = raw(
        &addr,
        b"POST /metrics HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabc",
    );
    assert!(post.starts_with("HTTP/1.1 405"), "{post}");
    let head = ureq::head(&format!("http://{addr}/metrics"))
        .call()
        .unwrap();
    assert_eq!(head.status().as_u16(), 200);
    let stopped = d.stop();
    assert!(stopped.status.success(), "{}", stopped.stderr);
}

#[test]
fn a_bad_metrics_address_is_a_usage_error() {
    let o = Command::new(common::BIN)
        .args(["--metrics-addr", "nonsense"])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("is not HOST:PORT"));
}

/// RSS growth allowed while the hostile clients run: 64 connections at
/// most, each with an 8 KiB head buffer.
const HOSTILE_RSS_GROWTH_KIB: u64 = 8 * 1024;

#[test]
fn hostile_clients_cannot_kill_stall_or_bloat_the_daemon() {
    let addr = free_addr();
    // Only one user's execs: the other tests' exec floods, recorded, would
    // grow the daemon's memory and blur what the attack costs.
    let d = Daemon::start(&["--metrics-addr", &addr, "--uid", "4242"]);
    wait_listening(&addr);
    scrape(&addr);
    let rss_before = rss_kib(d.pid());

    // A Content-Length of i64::MAX: answered without reading a body.
    let huge = raw(
        &addr,
        b"GET /metrics HTTP/1.1\r\nHost: x\r\nContent-Length: 9223372036854775807\r\n\r\n",
    );
    assert!(huge.starts_with("HTTP/1.1 200"), "{huge}");
    let huge_post = raw(
        &addr,
        b"POST /metrics HTTP/1.1\r\nHost: x\r\nContent-Length: 9223372036854775807\r\n\r\n",
    );
    assert!(huge_post.starts_with("HTTP/1.1 405"), "{huge_post}");
    // A 1 MB header: refused (431) or cut off, never buffered.
    let mut big = b"GET /metrics HTTP/1.1\r\nHost: x\r\nX-Big: ".to_vec();
    big.extend(std::iter::repeat_n(b'a', 1 << 20));
    big.extend_from_slice(b"\r\n\r\n");
    let t0 = Instant::now();
    let big_answer = raw(&addr, &big);
    // Answered or closed at once: a read timeout would be a server that
    // waited, or buffered.
    assert!(
        big_answer.starts_with("HTTP/1.1 431")
            || (big_answer.starts_with("error:")
                && !big_answer.contains("WouldBlock")
                && !big_answer.contains("TimedOut")),
        "{big_answer}"
    );
    assert!(t0.elapsed() < Duration::from_secs(1), "{:?}", t0.elapsed());

    // The attackers connect from other addresses than the scraper, as a
    // hostile pod would: from the scraper's own address, an attacker could
    // only evict its connections as the oldest, and a flood would.
    // 500 idle connections, held open.
    let idle: Vec<TcpStream> = (0..500)
        .map(|_| connect_from(ATTACKER, &addr).unwrap())
        .collect();
    // Slowloris: 50 connections, a byte of a request head every 100 ms.
    let stop = Arc::new(AtomicBool::new(false));
    let slow = {
        let (stop, addr) = (Arc::clone(&stop), addr.clone());
        std::thread::spawn(move || {
            let head = b"GET /metrics HTTP/1.1\r\nHost: x\r\nX-Slow: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
            let mut conns: Vec<(TcpStream, usize)> = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                // Reconnect what the server closed, as a real attacker would.
                while conns.len() < 50 {
                    conns.push((connect_from(ATTACKER, &addr).unwrap(), 0));
                }
                conns.retain_mut(|(s, i)| {
                    let ok = s.write_all(&head[*i % head.len()..][..1]).is_ok();
                    *i += 1;
                    ok
                });
                std::thread::sleep(Duration::from_millis(100));
            }
            conns.len()
        })
    };

    // A connection flood from another client, 200 held at a time: it may
    // evict only its own.
    let flood = {
        let (stop, addr) = (Arc::clone(&stop), addr.clone());
        std::thread::spawn(move || {
            let mut conns = std::collections::VecDeque::new();
            let mut opened = 0u64;
            while !stop.load(Ordering::Relaxed) {
                if let Ok(c) = connect_from([127, 0, 0, 2], &addr) {
                    conns.push_back(c);
                    opened += 1;
                }
                if conns.len() > 200 {
                    conns.pop_front();
                }
                // About 1000 a second, 15 times the cap: faster, it fills
                // the kernel's accept queue, which no server policy helps.
                std::thread::sleep(Duration::from_millis(1));
            }
            opened
        })
    };

    // While they run, scrapes are answered within a second, and so is the
    // liveness probe.
    let mut worst = Duration::ZERO;
    let mut rss_peak = 0;
    for _ in 0..20 {
        let (status, body, took) = get(&addr, "/metrics");
        assert_eq!(status, 200);
        assert!(body.contains("execwatch_events_total"));
        let (hz, _, hz_took) = get(&addr, "/healthz");
        assert_eq!(hz, 200);
        worst = worst.max(took).max(hz_took);
        rss_peak = rss_peak.max(rss_kib(d.pid()));
        std::thread::sleep(Duration::from_millis(200));
    }
    stop.store(true, Ordering::Relaxed);
    slow.join().unwrap();
    let flooded = flood.join().unwrap();
    // Past the whole cap (64), many times.
    assert!(flooded > 200, "the flood opened {flooded} connections");
    drop(idle);
    assert!(worst < Duration::from_secs(1), "slowest answer {worst:?}");
    assert!(
        rss_peak < rss_before + HOSTILE_RSS_GROWTH_KIB,
        "RSS {rss_before} KiB before, {rss_peak} KiB under attack"
    );
    eprintln!(
        "metrics under attack: slowest answer {worst:?}, RSS {rss_before} -> {rss_peak} KiB, {flooded} flood connections"
    );

    // Still recording.
    let m = marker("after-attack");
    assert!(run_quiet(
        Command::new("setpriv")
            .args([
                "--reuid",
                "4242",
                "--regid",
                "4242",
                "--clear-groups",
                "/bin/true"
            ])
            .arg(&m)
    )
    .success());
    d.wait_for(1, Duration::from_secs(10), |v| has_arg(v, &m));
    let stopped = d.stop();
    assert!(stopped.status.success(), "{}", stopped.stderr);
}

#[test]
fn a_wedged_output_fails_the_liveness_probe_and_recovers() {
    let addr = free_addr();
    // stdout is a pipe nobody reads: once the output queue is full, neither
    // the loop nor the writer makes progress.
    let mut d = Spawned::start(&["--metrics-addr", &addr], Stdio::piped(), &[]);
    wait_listening(&addr);
    assert_eq!(get(&addr, "/healthz").0, 200);
    let mut out = d.child.stdout.take().unwrap();
    let m = marker("wedge");
    let flood = Flood::start(&m, 4000, 2);
    let t0 = Instant::now();
    let (status, body) = loop {
        let (s, b, _) = get(&addr, "/healthz");
        if s != 200 {
            break (s, b);
        }
        assert!(
            t0.elapsed() < Duration::from_secs(30),
            "/healthz still 200 after {:?} of a stalled output",
            t0.elapsed()
        );
        std::thread::sleep(Duration::from_millis(500));
    };
    flood.stop();
    assert_eq!(status, 503, "{body}");
    assert!(body.starts_with("stalled:"), "{body}");
    // /metrics still answers, and says how long it has been.
    let text = scrape(&addr);
    assert!(
        value(&text, "execwatch_progress_age_seconds") >= 10,
        "{text}"
    );

    // Read the pipe: progress resumes and the probe passes again.
    let reader = std::thread::spawn(move || {
        let mut all = Vec::new();
        let _ = out.read_to_end(&mut all);
        all
    });
    let t1 = Instant::now();
    while get(&addr, "/healthz").0 != 200 {
        assert!(
            t1.elapsed() < Duration::from_secs(10),
            "/healthz did not recover"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    d.sigterm();
    assert!(
        d.wait_exit(Duration::from_secs(30)).success(),
        "{}",
        d.stderr()
    );
    let written = reader.join().unwrap();
    let s = d.summary();
    spawned::assert_summary_adds_up(&s);
    assert_eq!(
        s["events"].as_u64().unwrap(),
        spawned::complete_lines(&written)
    );
}
