//! Prometheus metrics over loopback, scraped with a real HTTP client, move
//! with real execs.

mod common;

use std::process::Command;
use std::time::Duration;

use common::{has_arg, marker, run_quiet, Daemon};

fn scrape(addr: &str) -> String {
    ureq::get(&format!("http://{addr}/metrics"))
        .call()
        .expect("scrape /metrics")
        .body_mut()
        .read_to_string()
        .unwrap()
}

fn value(text: &str, series: &str) -> u64 {
    text.lines()
        .find_map(|l| l.strip_prefix(series).and_then(|v| v.strip_prefix(' ')))
        .unwrap_or_else(|| panic!("no {series} in:\n{text}"))
        .trim()
        .parse::<f64>()
        .unwrap() as u64
}

#[test]
fn metrics_count_real_execs() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let addr = format!("127.0.0.1:{port}");
    let d = Daemon::start(&["--metrics-addr", &addr]);
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
    let after = scrape(&addr);
    let ok = r#"execwatch_events_total{outcome="success"}"#;
    let failed = r#"execwatch_events_total{outcome="failure"}"#;
    assert!(value(&after, ok) >= value(&before, ok) + 20, "{after}");
    assert!(value(&after, failed) > value(&before, failed));
    assert_eq!(
        value(&after, r#"execwatch_lost_total{reason="ringbuf_full"}"#),
        0
    );
    assert_eq!(value(&after, "execwatch_ring_buffer_bytes"), 8 << 20);
    assert!(after.contains("execwatch_build_info{version=\""));
    let resp = ureq::get(&format!("http://{addr}/other")).call();
    assert!(matches!(resp, Err(ureq::Error::StatusCode(404))));
    d.stop();
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
