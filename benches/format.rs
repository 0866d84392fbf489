//! Daemon-side cost per event without the kernel: decode a typical record,
//! format it as JSON and as text. `cargo bench --bench format`.

use std::hint::black_box;
use std::time::Instant;

use execwatch::bpf_loader::types;
use execwatch::decode::ExecEvent;
use execwatch::output::clock::Clock;
use execwatch::output::{json, text};

/// A record like the storm's: 16 x 64-byte arguments after a marker.
fn record(nargs: usize, arglen: usize) -> Vec<u8> {
    let mut args = b"/usr/bin/noop\0bench-marker\0".to_vec();
    for _ in 0..nargs {
        args.extend(std::iter::repeat_n(b'a', arglen));
        args.push(0);
    }
    let filename = b"/usr/bin/noop\0";
    let exe = b"noop\0bin\0usr\0";
    let h = types::event {
        seq: 1,
        boot_ns: 123_456_789,
        kind: types::event_kind::EVENT_KIND_EXEC.0,
        pid: 4242,
        tid: 4242,
        ppid: 1,
        auid: 1000,
        sessionid: 3,
        argc: nargs as u32 + 2,
        args_size: args.len() as u32,
        args_len: args.len() as u32,
        filename_len: filename.len() as u16,
        exe_len: exe.len() as u16,
        ..Default::default()
    };
    // SAFETY: `types::event` is plain old data (integers and arrays).
    let mut out = unsafe { plain::as_bytes(&h) }.to_vec();
    out.extend_from_slice(filename);
    out.extend_from_slice(exe);
    out.extend_from_slice(&args);
    out
}

fn bench(name: &str, iters: u32, mut f: impl FnMut()) {
    for _ in 0..iters / 10 {
        f();
    }
    let t = Instant::now();
    for _ in 0..iters {
        f();
    }
    let ns = t.elapsed().as_nanos() as f64 / f64::from(iters);
    println!("{name:<40} {ns:>8.0} ns/event");
}

fn main() {
    let clock = Clock::with_offset(1_700_000_000_000_000_000);
    for (nargs, arglen) in [(1, 8), (16, 64), (64, 1024)] {
        let rec = record(nargs, arglen);
        let mut ev = ExecEvent::default();
        let mut buf = Vec::with_capacity(1 << 20);
        bench(&format!("decode {nargs}x{arglen}"), 200_000, || {
            ev.decode_from(black_box(&rec)).unwrap();
        });
        bench(&format!("decode+json {nargs}x{arglen}"), 200_000, || {
            ev.decode_from(black_box(&rec)).unwrap();
            json::write_event(&mut buf, &ev, &clock);
            black_box(&buf);
            buf.clear();
        });
        bench(&format!("decode+text {nargs}x{arglen}"), 200_000, || {
            ev.decode_from(black_box(&rec)).unwrap();
            text::write_event(&mut buf, &ev, &clock);
            black_box(&buf);
            buf.clear();
        });
    }
}
