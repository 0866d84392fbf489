//! One ECS JSON object per exec. Field names are documented in docs/schema.md.

use super::clock::{write_rfc3339, Clock};
use super::escape::{json_base64, json_escape, json_string};
use super::write_args;
use crate::decode::ExecEvent;

/// ECS version the field names follow.
pub const ECS_VERSION: &str = "8.11.0";

/// Writes nested JSON objects into a buffer, keeping track of commas.
struct Obj<'a> {
    out: &'a mut Vec<u8>,
    need_comma: bool,
}

impl<'a> Obj<'a> {
    fn open(out: &'a mut Vec<u8>) -> Obj<'a> {
        out.push(b'{');
        Obj {
            out,
            need_comma: false,
        }
    }

    fn key(&mut self, k: &str) -> &mut Vec<u8> {
        if self.need_comma {
            self.out.push(b',');
        }
        self.need_comma = true;
        self.out.push(b'"');
        self.out.extend_from_slice(k.as_bytes());
        self.out.extend_from_slice(b"\":");
        self.out
    }

    fn str(&mut self, k: &str, v: &[u8]) {
        json_string(self.key(k), v);
    }

    fn num(&mut self, k: &str, v: u64) {
        let mut buf = itoa::Buffer::new();
        self.key(k).extend_from_slice(buf.format(v).as_bytes());
    }

    fn int(&mut self, k: &str, v: i64) {
        let mut buf = itoa::Buffer::new();
        self.key(k).extend_from_slice(buf.format(v).as_bytes());
    }

    /// ECS ids are keywords: the number as a string.
    fn id(&mut self, k: &str, v: u32) {
        let mut buf = itoa::Buffer::new();
        let out = self.key(k);
        out.push(b'"');
        out.extend_from_slice(buf.format(v).as_bytes());
        out.push(b'"');
    }

    fn bool(&mut self, k: &str, v: bool) {
        let lit: &[u8] = if v { b"true" } else { b"false" };
        self.key(k).extend_from_slice(lit);
    }

    fn raw(&mut self, k: &str, v: &[u8]) {
        self.key(k).extend_from_slice(v);
    }

    fn obj(&mut self, k: &str) -> Obj<'_> {
        let out = self.key(k);
        Obj::open(out)
    }

    fn close(self) {
        self.out.push(b'}');
    }
}

fn is_utf8(b: &[u8]) -> bool {
    std::str::from_utf8(b).is_ok()
}

/// Append one JSON line (with its newline) for `ev`.
pub fn write_event(out: &mut Vec<u8>, ev: &ExecEvent, clock: &Clock) {
    let command_line_truncated;
    let mut root = Obj::open(out);
    {
        let ts = root.key("@timestamp");
        ts.push(b'"');
        write_rfc3339(ts, clock.unix_ns(ev.boot_ns));
        ts.push(b'"');
    }

    {
        let mut e = root.obj("event");
        e.str("kind", b"event");
        e.raw("category", br#"["process"]"#);
        e.raw("type", br#"["start"]"#);
        e.str("action", b"exec");
        e.str(
            "outcome",
            if ev.succeeded() {
                b"success"
            } else {
                b"failure"
            },
        );
        e.num("sequence", ev.seq);
        e.close();
    }

    if let Some(errno) = ev.errno {
        let mut e = root.obj("error");
        e.str("code", super::errno_name(errno).as_bytes());
        e.str(
            "message",
            nix::errno::Errno::from_raw(errno).desc().as_bytes(),
        );
        e.close();
    }

    {
        let mut p = root.obj("process");
        p.num("pid", u64::from(ev.pid));
        {
            let mut t = p.obj("thread");
            t.num("id", u64::from(ev.tid));
            t.close();
        }
        {
            let mut pp = p.obj("parent");
            pp.num("pid", u64::from(ev.ppid));
            pp.close();
        }
        p.str("name", &ev.comm);
        if !ev.executable.is_empty() {
            p.str("executable", &ev.executable);
        }
        write_args(p.key("args"), ev, b',', json_string);
        p.num("args_count", u64::from(ev.argc));
        command_line_truncated = write_command_line(p.key("command_line"), ev);
        p.close();
    }

    {
        let mut u = root.obj("user");
        u.id("id", ev.uid);
        {
            let mut eff = u.obj("effective");
            eff.id("id", ev.euid);
            {
                let mut g = eff.obj("group");
                g.id("id", ev.egid);
                g.close();
            }
            eff.close();
        }
        if let Some(auid) = ev.auid {
            let mut a = u.obj("audit");
            a.id("id", auid);
            a.close();
        }
        u.close();
    }
    {
        let mut g = root.obj("group");
        g.id("id", ev.gid);
        g.close();
    }

    if let Some(cg) = ev.cgroup.as_deref() {
        if let Some(id) = &cg.container_id {
            let mut c = root.obj("container");
            c.str("id", id.as_bytes());
            if let Some(rt) = cg.runtime {
                c.str("runtime", rt.as_bytes());
            }
            c.close();
        }
        if let Some(uid) = &cg.pod_uid {
            let mut o = root.obj("orchestrator");
            o.str("type", b"kubernetes");
            o.close();
            let mut k = root.obj("kubernetes");
            let mut pod = k.obj("pod");
            pod.str("uid", uid.as_bytes());
            pod.close();
            k.close();
        }
    }

    {
        let mut x = root.obj("execwatch");
        if !ev.caller_comm.is_empty() {
            let mut c = x.obj("caller");
            c.str("name", &ev.caller_comm);
            c.close();
        }
        x.str("filename", &ev.filename);
        if let Some(sc) = ev.syscall {
            x.str("syscall", sc.name().as_bytes());
            if sc == crate::decode::Syscall::Execveat {
                x.int("dirfd", i64::from(ev.dirfd));
                x.num("at_flags", u64::from(ev.at_flags));
            }
        }
        if let Some(s) = ev.session_id {
            let mut a = x.obj("audit");
            a.num("session_id", u64::from(s));
            a.close();
        }
        x.num("args_bytes", u64::from(ev.args_size));
        x.bool("args_truncated", ev.args_truncated);
        if command_line_truncated {
            x.bool("command_line_truncated", true);
        }
        if ev.filename_truncated {
            x.bool("filename_truncated", true);
        }
        if ev.exe_truncated {
            x.bool("executable_truncated", true);
        }
        if ev.args_read_failed {
            x.bool("args_read_failed", true);
        }
        if ev.exe_read_failed {
            x.bool("executable_read_failed", true);
        }
        {
            let mut c = x.obj("cgroup");
            c.num("id", ev.cgroup_id);
            match ev.cgroup.as_deref() {
                Some(cg) => c.str("path", &cg.path),
                None => c.bool("unresolved", true),
            }
            if ev.cgroup_truncated {
                c.bool("path_truncated", true);
            }
            c.close();
        }
        if let Some(cg) = ev.cgroup.as_deref() {
            if cg.unit.is_some() || cg.slice.is_some() {
                let mut sd = x.obj("systemd");
                if let Some(u) = &cg.unit {
                    sd.str("unit", u.as_bytes());
                }
                if let Some(sl) = &cg.slice {
                    sd.str("slice", sl.as_bytes());
                }
                sd.close();
            }
        }
        {
            let mut n = x.obj("pid_ns");
            n.num("inode", u64::from(ev.pidns_ino));
            n.num("pid", u64::from(ev.ns_pid));
            if let Some(host) = ev.host_pid_ns {
                n.bool("host", host);
            }
            n.close();
        }
        {
            let mut n = x.obj("mnt_ns");
            n.num("inode", u64::from(ev.mntns_ino));
            n.close();
        }
        write_raw_fields(&mut x, ev);
        x.close();
    }
    {
        let mut e = root.obj("ecs");
        e.str("version", ECS_VERSION.as_bytes());
        e.close();
    }
    root.close();
    out.push(b'\n');
}

/// `process.command_line` is for display and search: at most this many
/// bytes of arguments (keyword fields are not indexed past ~1 KiB anyway);
/// `process.args` carries them all.
pub const COMMAND_LINE_MAX: usize = 4096;

/// The arguments joined by spaces, cut at [`COMMAND_LINE_MAX`] bytes (on a
/// UTF-8 boundary of the escaped output). Returns whether it was cut.
fn write_command_line(out: &mut Vec<u8>, ev: &ExecEvent) -> bool {
    out.push(b'"');
    let mut budget = COMMAND_LINE_MAX;
    let mut cut = false;
    for (i, arg) in ev.args().enumerate() {
        if i > 0 {
            if budget == 0 {
                cut = true;
                break;
            }
            out.push(b' ');
            budget -= 1;
        }
        let take = if arg.len() > budget {
            cut = true;
            // Do not split a UTF-8 sequence: back up to a char boundary.
            let mut t = budget;
            while t > 0 && t < arg.len() && (arg[t] & 0xC0) == 0x80 {
                t -= 1;
            }
            t
        } else {
            arg.len()
        };
        json_escape(out, &arg[..take]);
        budget -= take;
        if cut {
            break;
        }
    }
    out.push(b'"');
    cut
}

/// Fields that are not valid UTF-8 appear above with U+FFFD in place of the
/// bad bytes; their exact bytes follow here as base64, so nothing is lost and
/// a consumer can tell a real U+FFFD from a replaced byte.
fn write_raw_fields(x: &mut Obj<'_>, ev: &ExecEvent) {
    let args_ok = ev.args().all(is_utf8);
    let bad = [
        ("name", &ev.comm),
        ("executable", &ev.executable),
        ("filename", &ev.filename),
        ("caller_name", &ev.caller_comm),
    ];
    if args_ok && bad.iter().all(|(_, v)| is_utf8(v)) {
        return;
    }
    let mut r = x.obj("raw");
    for (k, v) in bad {
        if !is_utf8(v) {
            json_base64(r.key(k), v);
        }
    }
    if !args_ok {
        write_args(r.key("args"), ev, b',', json_base64);
    }
    r.close();
}

#[cfg(test)]
mod tests {
    use super::*;

    fn render(ev: &ExecEvent) -> serde_json::Value {
        let mut out = Vec::new();
        write_event(&mut out, ev, &Clock::with_offset(0));
        assert_eq!(out.iter().filter(|&&b| b == b'\n').count(), 1);
        serde_json::from_slice(&out).unwrap()
    }

    #[test]
    fn command_line_is_capped_but_args_are_whole() {
        let mut ev = ExecEvent::default();
        let long = "é".repeat(3000); // 6000 bytes, two-byte characters
        ev.set_args([&b"prog"[..], long.as_bytes(), b"tail"]);
        ev.argc = 3;
        let v = render(&ev);
        let cl = v["process"]["command_line"].as_str().unwrap();
        assert!(cl.len() <= COMMAND_LINE_MAX, "{}", cl.len());
        assert!(cl.starts_with("prog éé"));
        assert!(!cl.contains('\u{FFFD}'), "cut on a character boundary");
        assert_eq!(v["execwatch"]["command_line_truncated"], true);
        assert_eq!(v["process"]["args"][1].as_str().unwrap(), long);
        assert_eq!(v["process"]["args"][2], "tail");
    }

    #[test]
    fn short_command_line_is_whole_and_unflagged() {
        let mut ev = ExecEvent::default();
        ev.set_args([&b"ls"[..], b"-l", b""]);
        ev.argc = 3;
        let v = render(&ev);
        assert_eq!(v["process"]["command_line"], "ls -l ");
        assert!(v["execwatch"].get("command_line_truncated").is_none());
        assert!(v["execwatch"].get("raw").is_none());
    }

    #[test]
    fn ids_are_strings_and_counts_are_numbers() {
        let mut ev = ExecEvent::default();
        ev.uid = 1000;
        ev.auid = Some(1000);
        ev.pid = 42;
        let v = render(&ev);
        assert_eq!(v["user"]["id"], "1000");
        assert_eq!(v["user"]["audit"]["id"], "1000");
        assert_eq!(v["process"]["pid"], 42);
        assert_eq!(v["@timestamp"], "1970-01-01T00:00:00.000000000Z");
    }
}
