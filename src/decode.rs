//! Raw ring-buffer record -> owned [`ExecEvent`], with every length checked.

use crate::bpf_loader::{types, HEADER_LEN};
pub use crate::event::{Action, ExecEvent, Syscall};
use crate::event::{ExeIdentity, OldCreds};

// SAFETY: `types::event` is the skeleton's `#[repr(C)]` copy of `struct
// event`: integers and integer arrays only, so every bit pattern is valid.
unsafe impl plain::Plain for types::event {}

/// Why a record was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("record of {0} bytes is shorter than the {HEADER_LEN}-byte header")]
    Short(usize),
    #[error("record kind {0} is unknown")]
    UnknownKind(u32),
    #[error("record declares {declared} data bytes ({parts}) but carries {available}")]
    Lengths {
        parts: String,
        declared: usize,
        available: usize,
    },
}

impl ExecEvent {
    /// Decode a record into a new event.
    pub fn decode(record: &[u8]) -> Result<ExecEvent, DecodeError> {
        let mut ev = ExecEvent::default();
        ev.decode_from(record)?;
        Ok(ev)
    }

    /// Decode a record into `self`, reusing its buffers. On error `self` is
    /// left in an unspecified but valid state.
    pub fn decode_from(&mut self, record: &[u8]) -> Result<(), DecodeError> {
        let header_bytes = record
            .get(..HEADER_LEN)
            .ok_or(DecodeError::Short(record.len()))?;
        let mut h = types::event::default();
        plain::copy_from_bytes(&mut h, header_bytes)
            .map_err(|_| DecodeError::Short(record.len()))?;
        use types::event_kind as K;
        self.action = match h.kind {
            k if k == K::EVENT_KIND_EXEC.0 => Action::Exec,
            k if k == K::EVENT_KIND_EXIT.0 => Action::Exit,
            k => return Err(DecodeError::UnknownKind(k)),
        };
        let data = &record[HEADER_LEN..];
        let lens = [
            usize::from(h.filename_len),
            usize::from(h.exe_len),
            usize::from(h.cgroup_len),
            usize::from(h.cwd_len),
            usize::from(h.script_len),
            h.args_len as usize,
            h.env_len as usize,
        ];
        let declared: usize = lens.iter().sum();
        if declared > data.len() {
            return Err(DecodeError::Lengths {
                parts: format!(
                    "filename {}, exe {}, cgroup {}, cwd {}, script {}, args {}, env {}",
                    lens[0], lens[1], lens[2], lens[3], lens[4], lens[5], lens[6]
                ),
                declared,
                available: data.len(),
            });
        }
        let mut rest = data;
        let mut part = |len: usize| {
            let (p, r) = rest.split_at(len);
            rest = r;
            p
        };
        let (filename, exe, cgroup, cwd, script, args, env) = (
            part(lens[0]),
            part(lens[1]),
            part(lens[2]),
            part(lens[3]),
            part(lens[4]),
            part(lens[5]),
            part(lens[6]),
        );

        let flag = |f: types::event_flag| h.flags & f.0 != 0;
        use types::event_flag as F;

        self.seq = h.seq;
        self.boot_ns = h.boot_ns;
        self.cgroup_id = h.cgroup_id;
        self.errno = (h.retval < 0).then(|| h.retval.saturating_neg());
        self.syscall = match (self.errno, flag(F::EVENT_FLAG_SYSCALL_EXECVEAT)) {
            (None, _) => None,
            (Some(_), true) => Some(Syscall::Execveat),
            (Some(_), false) => Some(Syscall::Execve),
        };
        self.pid = h.pid;
        self.tid = h.tid;
        self.ppid = h.ppid;
        self.uid = h.uid;
        self.gid = h.gid;
        self.euid = h.euid;
        self.egid = h.egid;
        self.auid = (h.auid != u32::MAX).then_some(h.auid);
        self.session_id = (h.sessionid != u32::MAX).then_some(h.sessionid);
        self.pidns_ino = h.pidns_ino;
        self.ns_pid = h.ns_pid;
        self.mntns_ino = h.mntns_ino;
        self.argc = h.argc;
        self.args_size = h.args_size;
        self.dirfd = h.dirfd;
        self.at_flags = h.at_flags;
        self.args_truncated = flag(F::EVENT_FLAG_ARGS_TRUNCATED);
        self.filename_truncated = flag(F::EVENT_FLAG_FILENAME_TRUNCATED);
        self.exe_truncated = flag(F::EVENT_FLAG_EXE_TRUNCATED);
        self.args_read_failed = flag(F::EVENT_FLAG_ARGS_READ_FAILED);
        self.exe_read_failed = flag(F::EVENT_FLAG_EXE_READ_FAILED);
        self.start_ns = h.start_ns;
        self.parent_start_ns = h.parent_start_ns;
        self.image_ancestor = (h.image_pid != 0).then_some((h.image_pid, h.image_start_ns));
        self.exit_status = h.exit_status;
        self.lineage = None;
        self.hash = None;
        self.sid = h.sid;
        self.pgid = h.pgid;
        self.tty = (h.tty_major != 0 || h.tty_minor != 0).then_some((h.tty_major, h.tty_minor));
        self.cwd_truncated = flag(F::EVENT_FLAG_CWD_TRUNCATED);
        assemble_path(&mut self.cwd, cwd, self.cwd_truncated);
        if self.cwd.is_empty() && !self.cwd_truncated && self.action == Action::Exec {
            self.cwd.push(b'/'); // the walk stopped at the root at once
        }
        self.script_truncated = flag(F::EVENT_FLAG_SCRIPT_TRUNCATED);
        self.exe_outside_root = flag(F::EVENT_FLAG_EXE_OUTSIDE_ROOT);
        self.cwd_outside_root = flag(F::EVENT_FLAG_CWD_OUTSIDE_ROOT);
        self.script_outside_root = flag(F::EVENT_FLAG_SCRIPT_OUTSIDE_ROOT);
        assemble_path(&mut self.script, script, self.script_truncated);
        self.exe_pseudo = flag(F::EVENT_FLAG_EXE_PSEUDO);
        self.exe_upper_layer = flag(F::EVENT_FLAG_EXE_UPPER_LAYER);
        self.exe_fuse = flag(F::EVENT_FLAG_EXE_FUSE);
        let ran = self.errno.is_none() && self.action == Action::Exec;
        self.exe_identity = ran.then_some(ExeIdentity {
            dev: h.exe_dev,
            ino: h.exe_ino,
            size: h.exe_size,
            nlink: h.exe_nlink,
            uid: h.exe_uid,
            gid: h.exe_gid,
            mode: h.exe_mode,
            mtime: (h.exe_mtime_sec, h.exe_mtime_nsec),
            ctime: (h.exe_ctime_sec, h.exe_ctime_nsec),
        });
        self.old_creds = flag(F::EVENT_FLAG_OLD_CREDS).then_some(OldCreds {
            euid: h.old_euid,
            egid: h.old_egid,
            cap_permitted: h.old_cap_permitted,
        });
        self.cap_permitted = h.cap_permitted;
        self.secureexec = flag(F::EVENT_FLAG_SECUREEXEC);
        self.env_truncated = flag(F::EVENT_FLAG_ENV_TRUNCATED);
        self.env_area.clear();
        self.env_area.extend_from_slice(env);
        self.env_vars.clear();

        set_cstr(&mut self.comm, &h.comm);
        if flag(F::EVENT_FLAG_CALLER_COMM_MISSING) {
            self.caller_comm.clear();
        } else {
            set_cstr(&mut self.caller_comm, &h.caller_comm);
        }
        self.filename.clear();
        self.filename.extend_from_slice(until_nul(filename));
        if self.script.is_empty() && flag(F::EVENT_FLAG_SCRIPT) {
            // The script's file is closed by the time of the record: its
            // name as passed, made absolute against the cwd.
            self.script_truncated = !absolute_path(
                &mut self.script,
                &self.filename,
                &self.cwd,
                self.cwd_truncated || self.filename_truncated,
            );
        }
        // A pseudo file's one component is a name (`memfd:x`), not a path.
        assemble_path(
            &mut self.executable,
            exe,
            self.exe_truncated || flag(F::EVENT_FLAG_EXE_PSEUDO),
        );
        self.cgroup_path_truncated = flag(F::EVENT_FLAG_CGROUP_TRUNCATED);
        if flag(F::EVENT_FLAG_CGROUP_PATH) {
            let path = self.cgroup_path.get_or_insert_with(Vec::new);
            assemble_path(path, cgroup, self.cgroup_path_truncated);
            if path.is_empty() && !self.cgroup_path_truncated {
                path.push(b'/'); // the root cgroup has no components
            }
        } else {
            self.cgroup_path = None;
        }
        self.cgroup = None;
        self.host_pid_ns = None;
        self.split_args(args);
        Ok(())
    }
}

/// `name` made absolute against `cwd`, without following links: `.` and
/// repeated `/` dropped, and a leading `..` taken off the cwd (a path the
/// kernel resolved, so its parent is exact). A `..` after one of `name`'s
/// own components is kept as it is: that component may be a link, whose
/// parent is not the one its text suggests. False when the path cannot be
/// made absolute (the cwd is only a tail): `dst` then holds `name` as it is.
fn absolute_path(dst: &mut Vec<u8>, name: &[u8], cwd: &[u8], cwd_partial: bool) -> bool {
    dst.clear();
    if !name.starts_with(b"/") && (cwd_partial || !cwd.starts_with(b"/")) {
        dst.extend_from_slice(name);
        return false;
    }
    let mut parts: Vec<&[u8]> = Vec::new();
    if !name.starts_with(b"/") {
        parts.extend(cwd.split(|&b| b == b'/').filter(|c| !c.is_empty()));
    }
    // Components of `name` pushed so far: a `..` can only go back over the
    // cwd's until one is.
    let mut named = false;
    for c in name.split(|&b| b == b'/') {
        match c {
            b"" | b"." => {}
            b".." if !named => {
                parts.pop();
            }
            c => {
                named = true;
                parts.push(c);
            }
        }
    }
    for p in parts {
        dst.push(b'/');
        dst.extend_from_slice(p);
    }
    if dst.is_empty() {
        dst.push(b'/');
    }
    true
}

/// Bytes before the first NUL (all of them if there is none).
fn until_nul(b: &[u8]) -> &[u8] {
    memchr::memchr(0, b).map_or(b, |p| &b[..p])
}

fn set_cstr(dst: &mut Vec<u8>, src: &[i8]) {
    dst.clear();
    dst.extend(src.iter().map(|&c| c as u8).take_while(|&c| c != 0));
}

/// Components arrive leaf first, each NUL-ended; build `/a/b/leaf`. A path cut
/// short at the top (too deep) gets no leading `/`, so it cannot pass for an
/// absolute one.
fn assemble_path(dst: &mut Vec<u8>, components: &[u8], truncated: bool) {
    dst.clear();
    if components.is_empty() {
        return;
    }
    let body = components.strip_suffix(&[0]).unwrap_or(components);
    for (i, c) in body.rsplit(|&b| b == 0).enumerate() {
        if i > 0 || !truncated {
            dst.push(b'/');
        }
        dst.extend_from_slice(c);
    }
}

#[cfg(test)]
pub(crate) mod record {
    use crate::bpf_loader::types;
    include!("../tests/common/record.rs");
}

#[cfg(test)]
mod tests {
    use super::record::Record;
    use super::*;

    /// A well-formed record with the given data parts.
    fn record(filename: &[u8], exe: &[u8], args: &[u8], argc: u32, flags: u32) -> Vec<u8> {
        let mut r = Record::exec(&[]);
        r.header.seq = 7;
        r.header.boot_ns = 1_000;
        r.header.flags = flags;
        r.header.pid = 10;
        r.header.tid = 11;
        r.header.sessionid = 3;
        r.header.argc = argc;
        r.header.args_size = args.len() as u32;
        for (d, s) in r.header.comm.iter_mut().zip(b"ls") {
            *d = *s as i8;
        }
        for (d, s) in r.header.caller_comm.iter_mut().zip(b"bash") {
            *d = *s as i8;
        }
        r.filename = filename.to_vec();
        r.exe = exe.to_vec();
        r.args = args.to_vec();
        r.encode()
    }

    #[test]
    fn header_has_no_padding() {
        // The BPF side and Rust must agree byte for byte: no compiler holes.
        assert_eq!(HEADER_LEN % 8, 0);
        let h = types::event::default();
        // SAFETY: plain old data, see the Plain impl.
        let bytes = unsafe { plain::as_bytes(&h) };
        assert_eq!(bytes.len(), HEADER_LEN);
    }

    #[test]
    fn new_regions_decode_in_order() {
        let mut r = Record::exec(&[b"sh", b"/tmp/s.sh"]);
        r.filename = b"/tmp/s.sh\0".to_vec();
        r.exe = Record::path("/usr/bin/dash");
        r.cwd = Record::path("/tmp/work dir");
        r.script = Record::path("/tmp/s.sh");
        r.env = b"A=1\0LD_PRELOAD=/x.so\0B=2\0".to_vec();
        r.header.tty_major = 136;
        r.header.exe_mode = 0o104755;
        r.header.exe_dev = 8 << 20 | 3;
        let mut ev = ExecEvent::decode(&r.encode()).unwrap();
        assert_eq!(ev.executable, b"/usr/bin/dash");
        assert_eq!(ev.cwd, b"/tmp/work dir");
        assert_eq!(ev.script, b"/tmp/s.sh");
        assert_eq!(ev.tty, Some((136, 0)));
        assert!(ev.interactive());
        let id = ev.exe_identity.unwrap();
        assert_eq!((id.dev_major(), id.dev_minor()), (8, 3));
        assert_eq!(ev.args().collect::<Vec<_>>(), [&b"sh"[..], b"/tmp/s.sh"]);
        ev.select_env(&[b"LD_PRELOAD".to_vec(), b"ABSENT".to_vec()]);
        assert_eq!(ev.env_vars, [b"LD_PRELOAD=/x.so".to_vec()]);
    }

    #[test]
    fn scripts_are_made_absolute() {
        let mut out = Vec::new();
        assert!(absolute_path(&mut out, b"./s.sh", b"/tmp/a", false));
        assert_eq!(out, b"/tmp/a/s.sh");
        assert!(absolute_path(&mut out, b"../b//s.sh", b"/tmp/a", false));
        assert_eq!(out, b"/tmp/b/s.sh");
        assert!(absolute_path(&mut out, b"/x/./y/../s", b"/ignored", true));
        assert_eq!(out, b"/x/y/../s", "y may be a link: its .. is kept");
        // A link `d` to a deep directory: `d/../..` is not the cwd's parent.
        assert!(absolute_path(
            &mut out,
            b"d/../../../usr/local/bin/backup.sh",
            b"/home/u",
            false
        ));
        assert_eq!(out, b"/home/u/d/../../../usr/local/bin/backup.sh");
        assert!(absolute_path(&mut out, b"../../../s", b"/a", false));
        assert_eq!(out, b"/s", "no parent above the root");
        assert!(!absolute_path(&mut out, b"s.sh", b"a/b", true));
        assert_eq!(out, b"s.sh");
        let mut r = Record::exec(&[b"/bin/sh", b"./s.sh"]);
        r.filename = b"./s.sh\0".to_vec();
        r.cwd = Record::path("/home/u");
        r.flag(types::event_flag::EVENT_FLAG_SCRIPT);
        assert_eq!(
            ExecEvent::decode(&r.encode()).unwrap().script,
            b"/home/u/s.sh"
        );
    }

    #[test]
    fn a_cwd_at_the_root_is_slash() {
        let r = Record::exec(&[b"x"]);
        assert_eq!(ExecEvent::decode(&r.encode()).unwrap().cwd, b"/");
    }

    #[test]
    fn a_memfd_is_named_not_pathed() {
        let mut r = Record::exec(&[b"x"]);
        r.exe = b"memfd:payload\0".to_vec();
        r.flag(types::event_flag::EVENT_FLAG_EXE_PSEUDO);
        let ev = ExecEvent::decode(&r.encode()).unwrap();
        assert_eq!(ev.executable, b"memfd:payload");
        assert!(ev.exe_memfd());
        assert!(!ev.exe_deleted());
    }

    #[test]
    fn the_kernels_fuse_flag_is_its_own_fact() {
        let mut r = Record::exec(&[b"x"]);
        assert!(!ExecEvent::decode(&r.encode()).unwrap().exe_fuse);
        r.flag(types::event_flag::EVENT_FLAG_EXE_FUSE);
        let ev = ExecEvent::decode(&r.encode()).unwrap();
        assert!(ev.exe_fuse);
        assert!(!ev.exe_upper_layer && !ev.exe_pseudo);
    }

    #[test]
    fn long_env_values_are_cut_and_flagged() {
        let mut r = Record::exec(&[b"x"]);
        let mut env = b"BIG=".to_vec();
        env.extend(std::iter::repeat_n(b'v', crate::event::ENV_VALUE_MAX + 10));
        env.push(0);
        r.env = env;
        let mut ev = ExecEvent::decode(&r.encode()).unwrap();
        ev.select_env(&[b"BIG".to_vec()]);
        assert_eq!(ev.env_vars[0].len(), 4 + crate::event::ENV_VALUE_MAX);
        assert!(ev.env_value_truncated);
    }

    #[test]
    fn decodes_a_full_record() {
        let r = record(b"ls\0", b"ls\0bin\0usr\0", b"ls\0-l\0\0x y\0", 4, 0);
        let ev = ExecEvent::decode(&r).unwrap();
        assert_eq!(ev.seq, 7);
        assert_eq!(ev.pid, 10);
        assert_eq!(ev.tid, 11);
        assert_eq!(ev.auid, None);
        assert_eq!(ev.session_id, Some(3));
        assert_eq!(ev.comm, b"ls");
        assert_eq!(ev.caller_comm, b"bash");
        assert_eq!(ev.filename, b"ls");
        assert_eq!(ev.executable, b"/usr/bin/ls");
        let args: Vec<&[u8]> = ev.args().collect();
        assert_eq!(args, [&b"ls"[..], b"-l", b"", b"x y"]);
        assert!(ev.succeeded());
        assert!(!ev.args_truncated);
    }

    #[test]
    fn keeps_a_trailing_empty_argument() {
        let r = record(b"a\0", b"", b"a\0\0", 2, 0);
        let ev = ExecEvent::decode(&r).unwrap();
        assert_eq!(ev.args().collect::<Vec<_>>(), [&b"a"[..], b""]);
    }

    #[test]
    fn truncated_argument_area_keeps_the_partial_argument() {
        let f = types::event_flag::EVENT_FLAG_ARGS_TRUNCATED.0;
        let r = record(b"x\0", b"", b"x\0abc", 5, f);
        let ev = ExecEvent::decode(&r).unwrap();
        assert!(ev.args_truncated);
        assert_eq!(ev.args().collect::<Vec<_>>(), [&b"x"[..], b"abc"]);
        assert_eq!(ev.argc, 5);
    }

    #[test]
    fn never_more_pieces_than_argc() {
        let r = record(b"x\0", b"", b"a\0b\0c\0", 2, 0);
        let ev = ExecEvent::decode(&r).unwrap();
        assert_eq!(ev.captured_args(), 2);
    }

    #[test]
    fn path_too_deep_is_not_absolute() {
        let f = types::event_flag::EVENT_FLAG_EXE_TRUNCATED.0;
        let r = record(b"x\0", b"c\0b\0", b"", 0, f);
        assert_eq!(ExecEvent::decode(&r).unwrap().executable, b"b/c");
    }

    #[test]
    fn failure_carries_errno_and_syscall() {
        let f = types::event_flag::EVENT_FLAG_SYSCALL_EXECVEAT.0;
        let mut r = record(b"/nope\0", b"", b"", 0, f);
        let off = std::mem::offset_of!(types::event, retval);
        r[off..off + 4].copy_from_slice(&(-2i32).to_ne_bytes());
        let ev = ExecEvent::decode(&r).unwrap();
        assert_eq!(ev.errno, Some(2));
        assert_eq!(ev.syscall, Some(Syscall::Execveat));
    }

    #[test]
    fn cgroup_path_sits_between_exe_and_args() {
        let mut r = record(
            b"ls\0",
            b"ls\0bin\0",
            b"",
            1,
            types::event_flag::EVENT_FLAG_CGROUP_PATH.0,
        );
        // Insert the cgroup region and fix the lengths in the header.
        let cg = b"a.service\0system.slice\0";
        let args = b"ls\0";
        r.extend_from_slice(cg);
        r.extend_from_slice(args);
        let off = std::mem::offset_of!(types::event, cgroup_len);
        r[off..off + 2].copy_from_slice(&(cg.len() as u16).to_ne_bytes());
        let off = std::mem::offset_of!(types::event, args_len);
        r[off..off + 4].copy_from_slice(&(args.len() as u32).to_ne_bytes());
        let ev = ExecEvent::decode(&r).unwrap();
        assert_eq!(ev.executable, b"/bin/ls");
        assert_eq!(
            ev.cgroup_path.as_deref(),
            Some(&b"/system.slice/a.service"[..])
        );
        assert_eq!(ev.args().collect::<Vec<_>>(), [&b"ls"[..]]);
        // Without the flag there is no path, and the root cgroup is "/".
        let r2 = record(
            b"ls\0",
            b"",
            b"",
            0,
            types::event_flag::EVENT_FLAG_CGROUP_PATH.0,
        );
        assert_eq!(
            ExecEvent::decode(&r2).unwrap().cgroup_path.as_deref(),
            Some(&b"/"[..])
        );
        let r3 = record(b"ls\0", b"", b"", 0, 0);
        assert_eq!(ExecEvent::decode(&r3).unwrap().cgroup_path, None);
    }

    #[test]
    fn rejects_short_records() {
        for len in [0, 1, HEADER_LEN - 1] {
            assert_eq!(
                ExecEvent::decode(&vec![0u8; len]),
                Err(DecodeError::Short(len))
            );
        }
    }

    #[test]
    fn rejects_lengths_past_the_record() {
        let mut r = record(b"ls\0", b"", b"ls\0", 1, 0);
        r.pop();
        assert!(matches!(
            ExecEvent::decode(&r),
            Err(DecodeError::Lengths { .. })
        ));
    }

    #[test]
    fn exit_records_decode_to_exit_events() {
        let mut r = Record::exec(&[]);
        r.header.kind = types::event_kind::EVENT_KIND_EXIT.0;
        r.header.exit_status = 9 | 0x80;
        r.header.start_ns = 1_000;
        r.header.boot_ns = 5_000;
        let ev = ExecEvent::decode(&r.encode()).unwrap();
        assert_eq!(ev.action, Action::Exit);
        assert_eq!(ev.exit_code(), Some(137));
        assert_eq!(ev.exit_signal().as_deref(), Some("SIGKILL"));
        assert!(ev.core_dumped());
        assert_eq!(ev.duration_ns(), Some(4_000));
        assert_eq!(ev.exe_identity, None);
        r.header.exit_status = 3 << 8;
        let ev = ExecEvent::decode(&r.encode()).unwrap();
        assert_eq!((ev.exit_code(), ev.exit_signal()), (Some(3), None));
    }

    #[test]
    fn rejects_unknown_kind() {
        let mut r = record(b"ls\0", b"", b"", 0, 0);
        let off = std::mem::offset_of!(types::event, kind);
        r[off..off + 4].copy_from_slice(&99u32.to_ne_bytes());
        assert_eq!(ExecEvent::decode(&r), Err(DecodeError::UnknownKind(99)));
    }

    #[test]
    fn garbage_never_panics() {
        // A cheap deterministic generator; the fuzz target goes further.
        let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
        let mut ev = ExecEvent::default();
        for i in 0..20_000 {
            let len = (i * 7) % (HEADER_LEN * 3);
            let mut buf = Vec::with_capacity(len);
            for _ in 0..len {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                buf.push(x as u8);
            }
            if buf.len() >= HEADER_LEN && i % 2 == 0 {
                // Valid kind so decoding goes past the header checks.
                let off = std::mem::offset_of!(types::event, kind);
                buf[off..off + 4].copy_from_slice(&1u32.to_ne_bytes());
            }
            let _ = ev.decode_from(&buf);
        }
    }

    #[test]
    fn oversized_record_is_accepted_and_extra_ignored() {
        let mut r = record(b"ls\0", b"", b"ls\0", 1, 0);
        r.extend_from_slice(&[0xAA; 64]);
        let ev = ExecEvent::decode(&r).unwrap();
        assert_eq!(ev.args().collect::<Vec<_>>(), [&b"ls"[..]]);
    }
}

/// Property tests: the decoder's answer to arbitrary bytes is a value or an
/// error, never a panic; well-formed records round-trip. `PROPTEST_CASES`
/// raises the number of cases for a longer fuzzing run.
#[cfg(test)]
mod fuzz {
    use super::record::Record;
    use super::*;
    use proptest::prelude::*;

    fn header_bytes(h: &types::event) -> Vec<u8> {
        Record::default().encode_raw(h)
    }

    fn arb_header() -> impl Strategy<Value = types::event> {
        (
            any::<u64>(),
            any::<u32>(),
            any::<i32>(),
            any::<u32>(),
            any::<u32>(),
            (any::<u16>(), any::<u16>(), any::<u32>()),
            (any::<u16>(), any::<u16>(), any::<u32>()),
            any::<bool>(),
        )
            .prop_map(
                |(seq, flags, retval, argc, args_size, (fl, el, al), (cl, sl, envl), kind_ok)| {
                    let mut h = types::event {
                        seq,
                        flags,
                        retval,
                        argc,
                        args_size,
                        filename_len: fl % 600,
                        exe_len: el % 600,
                        args_len: al % 2000,
                        cwd_len: cl % 300,
                        script_len: sl % 300,
                        env_len: envl % 300,
                        kind: if kind_ok {
                            types::event_kind::EVENT_KIND_EXEC.0
                        } else {
                            flags
                        },
                        ..Default::default()
                    };
                    for (i, c) in h.comm.iter_mut().enumerate() {
                        *c = (seq >> (i % 8)) as i8;
                    }
                    h
                },
            )
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 3000, ..ProptestConfig::default() })]

        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
            let _ = ExecEvent::decode(&bytes);
        }

        #[test]
        fn arbitrary_headers_and_data_never_panic(
            h in arb_header(),
            data in proptest::collection::vec(any::<u8>(), 0..3000),
        ) {
            let mut rec = header_bytes(&h);
            rec.extend_from_slice(&data);
            if let Ok(ev) = ExecEvent::decode(&rec) {
                prop_assert!(ev.captured_args() <= ev.argc as usize);
                prop_assert!(!ev.filename.contains(&0));
                // Formatting a decoded event never panics either.
                let clock = crate::output::clock::Clock::with_offset(0);
                let mut out = Vec::new();
                crate::output::json::write_event(&mut out, &ev, &clock);
                let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
                prop_assert_eq!(v["event"]["sequence"].as_u64(), Some(ev.seq));
                out.clear();
                crate::output::text::write_event(&mut out, &ev, &clock);
                prop_assert_eq!(out.iter().filter(|&&b| b == b'\n').count(), 1);
            }
        }

        #[test]
        fn well_formed_records_round_trip(
            args in proptest::collection::vec(proptest::collection::vec(1u8..=255, 0..40), 1..20),
            comps in proptest::collection::vec(proptest::collection::vec(b'a'..=b'z', 1..12), 1..6),
        ) {
            let argv: Vec<&[u8]> = args.iter().map(Vec::as_slice).collect();
            let mut r = Record::exec(&argv);
            r.filename = b"f\0".to_vec();
            let path: String = comps.iter().map(|c| format!("/{}", String::from_utf8_lossy(c))).collect();
            r.exe = Record::path(&path);
            r.cwd = Record::path(&path);
            let rec = r.encode();
            let ev = ExecEvent::decode(&rec).unwrap();
            let got: Vec<Vec<u8>> = ev.args().map(<[u8]>::to_vec).collect();
            prop_assert_eq!(got, args);
            let want_path: Vec<u8> = comps.iter().flat_map(|c| std::iter::once(b'/').chain(c.iter().copied())).collect();
            prop_assert_eq!(&ev.executable, &want_path);
            prop_assert_eq!(&ev.cwd, &want_path);
        }
    }
}
