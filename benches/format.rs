//! Daemon-side cost per event without the kernel: decode a typical record,
//! format it as JSON, as text, and as the terminal table. `cargo bench
//! --bench format`.

use std::hint::black_box;
use std::time::Instant;

use execwatch::decode::ExecEvent;
use execwatch::output::clock::Clock;
use execwatch::output::table::{Table, Zone};
use execwatch::output::{json, text};

#[allow(dead_code)]
mod record {
    use execwatch::bpf_loader::types;
    include!("../tests/common/record.rs");
}
use record::Record;

/// A record like the storm's: 16 x 64-byte arguments after a marker, with
/// the context a real exec carries (cwd, executable identity).
fn record(nargs: usize, arglen: usize) -> Vec<u8> {
    let arg = vec![b'a'; arglen];
    let mut argv: Vec<&[u8]> = vec![b"/usr/bin/noop", b"bench-marker"];
    argv.extend(std::iter::repeat_n(arg.as_slice(), nargs));
    let mut r = Record::exec(&argv);
    let h = &mut r.header;
    h.seq = 1;
    h.boot_ns = 123_456_789;
    h.start_ns = 123_000_000;
    h.pid = 4242;
    h.tid = 4242;
    h.ppid = 1;
    h.auid = 1000;
    h.sessionid = 3;
    h.sid = 4000;
    h.pgid = 4242;
    h.exe_ino = 1234;
    h.exe_size = 800_000;
    h.exe_dev = 254 << 20;
    h.exe_mode = 0o100755;
    h.exe_nlink = 1;
    r.filename = b"/usr/bin/noop\0".to_vec();
    r.exe = Record::path("/usr/bin/noop");
    r.cwd = Record::path("/home/user/work");
    r.encode()
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

/// The fields d301094 (the last build with hand-written writers) put in an
/// exec's JSON line: rendered from the field list, they show what the
/// table-driven writer costs against the hand-written one for the same
/// output (docs/performance.md, issue 10).
const D301094_FIELDS: &[&str] = &[
    "@timestamp",
    "event.kind",
    "event.category",
    "event.type",
    "event.action",
    "event.outcome",
    "event.sequence",
    "process.pid",
    "process.thread.id",
    "process.parent.pid",
    "process.name",
    "process.executable",
    "process.args",
    "process.args_count",
    "process.command_line",
    "user.id",
    "user.effective.id",
    "user.effective.group.id",
    "group.id",
    "user.audit.id",
    "execwatch.audit.session_id",
    "execwatch.caller.name",
    "execwatch.filename",
    "execwatch.args_bytes",
    "execwatch.args_truncated",
    "execwatch.cgroup.id",
    "execwatch.cgroup.path",
    "execwatch.cgroup.unresolved",
    "execwatch.pid_ns.inode",
    "execwatch.pid_ns.pid",
    "execwatch.pid_ns.host",
    "execwatch.mnt_ns.inode",
    "ecs.version",
];

fn main() {
    let clock = Clock::with_offset(1_700_000_000_000_000_000);
    for path in D301094_FIELDS {
        assert!(
            execwatch::fields::FIELDS.iter().any(|f| f.json == *path),
            "{path} is no longer a field: update D301094_FIELDS"
        );
    }
    let d301094 = json::Layout::only(D301094_FIELDS);
    let no_command_line = json::Layout::new(|f| f.json != "process.command_line");
    for (nargs, arglen) in [(1, 8), (16, 64), (64, 1024)] {
        if std::env::var("BENCH_ARGS").is_ok_and(|w| w != format!("{nargs}x{arglen}")) {
            continue;
        }
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
        if std::env::var("BENCH_PRINT").is_ok() {
            ev.decode_from(&rec).unwrap();
            json::write_fields(&mut buf, &ev, &clock, &d301094);
            print!("{}", String::from_utf8_lossy(&buf));
            buf.clear();
        }
        bench(
            &format!("decode+json, d301094's fields {nargs}x{arglen}"),
            200_000,
            || {
                ev.decode_from(black_box(&rec)).unwrap();
                json::write_fields(&mut buf, &ev, &clock, &d301094);
                black_box(&buf);
                buf.clear();
            },
        );
        // What --exclude-field process.command_line saves: argv once, not twice.
        bench(
            &format!("decode+json, no process.command_line {nargs}x{arglen}"),
            200_000,
            || {
                ev.decode_from(black_box(&rec)).unwrap();
                json::write_fields(&mut buf, &ev, &clock, &no_command_line);
                black_box(&buf);
                buf.clear();
            },
        );
        bench(&format!("decode+text {nargs}x{arglen}"), 200_000, || {
            ev.decode_from(black_box(&rec)).unwrap();
            text::write_event(&mut buf, &ev, &clock);
            black_box(&buf);
            buf.clear();
        });
        let mut table = Table::new(true, Zone::Local);
        bench(&format!("decode+table {nargs}x{arglen}"), 200_000, || {
            ev.decode_from(black_box(&rec)).unwrap();
            table.write_event(&mut buf, &ev, &clock);
            black_box(&buf);
            buf.clear();
        });
    }
}
