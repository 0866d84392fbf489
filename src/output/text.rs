//! One line per exec for people. Every string is quoted and escaped, so no
//! argument can split the line, forge another, or drive the terminal.

use super::clock::{write_rfc3339, Clock};
use super::escape::text_quoted;
use crate::decode::ExecEvent;

fn kv_num(out: &mut Vec<u8>, k: &str, v: u64) {
    out.push(b' ');
    out.extend_from_slice(k.as_bytes());
    out.push(b'=');
    out.extend_from_slice(itoa::Buffer::new().format(v).as_bytes());
}

fn kv_str(out: &mut Vec<u8>, k: &str, v: &[u8]) {
    out.push(b' ');
    out.extend_from_slice(k.as_bytes());
    out.push(b'=');
    text_quoted(out, v);
}

/// Append one line (with its newline) for `ev`.
pub fn write_event(out: &mut Vec<u8>, ev: &ExecEvent, clock: &Clock) {
    write_rfc3339(out, clock.unix_ns(ev.boot_ns));
    out.push(b' ');
    write_message(out, ev);
    out.push(b'\n');
}

/// The line without timestamp and newline (journald's MESSAGE).
pub fn write_message(out: &mut Vec<u8>, ev: &ExecEvent) {
    match ev.errno {
        None => out.extend_from_slice(b"exec"),
        Some(e) => {
            out.extend_from_slice(b"exec-failed error=");
            out.extend_from_slice(super::errno_name(e).as_bytes());
        }
    }
    kv_num(out, "seq", ev.seq);
    kv_num(out, "pid", u64::from(ev.pid));
    if ev.tid != ev.pid {
        kv_num(out, "tid", u64::from(ev.tid));
    }
    kv_num(out, "ppid", u64::from(ev.ppid));
    kv_num(out, "uid", u64::from(ev.uid));
    if ev.euid != ev.uid {
        kv_num(out, "euid", u64::from(ev.euid));
    }
    if let Some(a) = ev.auid {
        kv_num(out, "auid", u64::from(a));
    }
    kv_str(out, "comm", &ev.comm);
    if !ev.caller_comm.is_empty() && ev.caller_comm != ev.comm {
        kv_str(out, "caller", &ev.caller_comm);
    }
    if ev.succeeded() {
        kv_str(out, "exe", &ev.executable);
    }
    if ev.filename != ev.executable {
        kv_str(out, "filename", &ev.filename);
    }
    out.extend_from_slice(b" argv=");
    super::write_args(out, ev, b' ', text_quoted);
    if ev.args_truncated || ev.captured_args() != ev.argc as usize {
        kv_num(out, "argc", u64::from(ev.argc));
        out.extend_from_slice(b" args-truncated");
    }
    match ev.cgroup.as_deref() {
        Some(cg) => {
            if let Some(id) = &cg.container_id {
                kv_str(out, "container", id.as_bytes());
                if let Some(rt) = cg.runtime {
                    kv_str(out, "runtime", rt.as_bytes());
                }
            }
            if let Some(pod) = &cg.pod_uid {
                kv_str(out, "pod", pod.as_bytes());
            }
            if let Some(unit) = &cg.unit {
                kv_str(out, "unit", unit.as_bytes());
            }
            kv_str(out, "cgroup", &cg.path);
        }
        None => kv_num(out, "cgroup", ev.cgroup_id),
    }
    if ev.ns_pid != ev.pid {
        kv_num(out, "nspid", u64::from(ev.ns_pid));
    }
}
