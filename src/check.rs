//! `execwatch check`: every requirement of this host, one line each, for
//! people. The checks themselves live in crate::preflight; this module runs
//! them all, says which ones execwatch cannot do without, and prints them.

use std::io::{self, Write};
use std::path::Path;

use crate::bpf_loader::FailedExecs;
use crate::mounts::MountTable;
use crate::preflight::{self, PreflightError, RingBufferEvidence, TracefsEvents};

/// Whether execwatch can run without a requirement.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Need {
    Required,
    /// It runs, without what this names.
    Optional(&'static str),
}

/// One requirement: ok (with what was found) or missing (what to do).
#[derive(Debug)]
pub struct Requirement {
    pub name: &'static str,
    pub need: Need,
    pub result: Result<String, PreflightError>,
    /// Said after the result, on the same line: how the packaged service
    /// would fare when that differs from the caller.
    pub note: Option<String>,
}

#[derive(Debug, Default)]
pub struct Report {
    pub requirements: Vec<Requirement>,
}

impl Report {
    /// Every required check passed.
    pub fn can_run(&self) -> bool {
        self.missing(true).next().is_none()
    }

    /// Names of the missing requirements that are (or are not) required.
    fn missing(&self, required: bool) -> impl Iterator<Item = &'static str> + '_ {
        self.requirements
            .iter()
            .filter(move |r| r.result.is_err() && (r.need == Need::Required) == required)
            .map(|r| r.name)
    }

    /// One line per requirement, then a verdict.
    pub fn write_to(&self, out: &mut impl Write) -> io::Result<()> {
        for r in &self.requirements {
            match (&r.result, r.need) {
                (Ok(found), _) => write!(out, "ok       {:<13} {found}", r.name)?,
                (Err(e), Need::Required) => write!(out, "missing  {:<13} {e}", r.name)?,
                (Err(e), Need::Optional(what)) => {
                    write!(out, "missing  {:<13} optional, for {what}: {e}", r.name)?
                }
            }
            match &r.note {
                Some(note) => writeln!(out, "; {note}")?,
                None => writeln!(out)?,
            }
        }
        let optional: Vec<&str> = self.missing(false).collect();
        if self.can_run() {
            write!(out, "execwatch can run on this host")?;
            if !optional.is_empty() {
                write!(out, " (without: {})", optional.join(", "))?;
            }
            writeln!(out)
        } else {
            let required: Vec<&str> = self.missing(true).collect();
            writeln!(
                out,
                "execwatch cannot run on this host: missing {}",
                required.join(", ")
            )
        }
    }
}

fn ring_buffer_found(evidence: RingBufferEvidence, release: &str) -> String {
    match evidence {
        RingBufferEvidence::Probed => "BPF_MAP_TYPE_RINGBUF supported (probed)".into(),
        RingBufferEvidence::KernelVersion => {
            format!("Linux {release} has BPF_MAP_TYPE_RINGBUF (not probed: that needs CAP_BPF)")
        }
    }
}

fn failed_execs_found(plan: &preflight::FailedExecsPlan) -> String {
    let at = plan
        .tracefs
        .as_deref()
        .unwrap_or(Path::new(preflight::TRACEFS_PATH))
        .display();
    if plan.will_mount {
        "not mounted: execwatch mounts a private instance for a moment at start, to read the \
         tracepoint ids; failed execs use the syscall exit tracepoints"
            .into()
    } else {
        format!("mounted at {at}: failed execs use the syscall exit tracepoints")
    }
}

/// The tracefs line: what `--failed-execs auto` picks for the caller (with
/// `caller_caps`) and, when the packaged unit (root with only UNIT_CAPS)
/// would pick another hook, what it would use.
fn failed_execs(
    release: &str,
    seen: Option<(&Path, TracefsEvents)>,
    caller_caps: Option<u64>,
) -> (Result<String, PreflightError>, Option<String>) {
    let can_mount = caller_caps.is_some_and(preflight::can_mount);
    let caller = preflight::plan_failed_execs(release, seen, can_mount);
    let hook = |r: &Result<preflight::FailedExecsPlan, PreflightError>| {
        r.as_ref().map_or(FailedExecs::SysExit, |p| p.hook)
    };
    // Events this user cannot read: what root sees there is not known.
    let unit = (!matches!(seen, Some((_, TracefsEvents::Unreadable))))
        .then(|| preflight::plan_failed_execs(release, seen, false))
        .filter(|u| hook(u) != hook(&caller));
    let units = format!(
        "the packaged unit ({} only) would use",
        preflight::UNIT_CAPS_NAMES
    );
    let note = unit.map(|u| match u {
        Ok(plan) => format!(
            "{units} the syscall exit tracepoints ({})",
            failed_execs_found(&plan)
        ),
        Err(PreflightError::NoSyscallTracepoints { why, fix }) => {
            format!("{units} the sys_exit hook: {why}; {fix}")
        }
        Err(e) => format!("{units} the sys_exit hook: {e}"),
    });
    (caller.map(|plan| failed_execs_found(&plan)), note)
}

/// Run every check against this host. Reads only: mounts nothing, loads
/// nothing but libbpf's ring buffer probe (when privileged).
pub fn host() -> Report {
    let release = preflight::kernel_release();
    let caps = preflight::cap_eff();
    let mounts = MountTable::read().unwrap_or_default();
    let privileged = caps.is_some_and(|c| preflight::check_caps(c).is_ok());

    let requirements = vec![
        Requirement {
            name: "kernel",
            need: Need::Required,
            note: None,
            result: preflight::check_kernel(&release).map(|()| {
                let (major, minor) = preflight::MIN_KERNEL;
                format!("Linux {release} ({major}.{minor} or newer needed)")
            }),
        },
        Requirement {
            name: "BTF",
            need: Need::Required,
            note: None,
            result: preflight::check_btf(Path::new(preflight::BTF_PATH))
                .map(|()| preflight::BTF_PATH.to_string()),
        },
        Requirement {
            name: "ring buffer",
            need: Need::Required,
            note: None,
            result: preflight::check_ring_buffer(
                privileged.then(preflight::probe_ring_buffer),
                &release,
            )
            .map(|e| ring_buffer_found(e, &release)),
        },
        Requirement {
            name: "capabilities",
            need: Need::Required,
            note: None,
            result: match caps {
                Some(c) => preflight::check_caps(c).map(|held| format!("{held} held")),
                None => Ok("not known (no CapEff in /proc/self/status)".into()),
            },
        },
        {
            let (result, note) = failed_execs(&release, preflight::tracefs_seen(), caps);
            Requirement {
                name: "tracefs",
                need: Need::Optional("the exec tracepoints"),
                result,
                note,
            }
        },
        Requirement {
            name: "cgroup v2",
            need: Need::Optional("naming containers and units, and --cgroup"),
            note: None,
            result: preflight::check_cgroup2(
                mounts
                    .first_of_type("cgroup2")
                    .map(std::path::Path::to_path_buf),
            )
            .map(|p| format!("mounted at {}", p.display())),
        },
        Requirement {
            name: "journald",
            need: Need::Optional("--format journald"),
            note: None,
            result: preflight::check_journald()
                .map(|()| format!("{} answers", crate::output::journald::SOCKET)),
        },
        Requirement {
            name: "bpffs",
            need: Need::Optional("pinning BPF objects"),
            note: None,
            result: preflight::check_bpffs(&mounts).map(|p| format!("mounted at {}", p.display())),
        },
    ];
    Report { requirements }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(results: Vec<(Need, Result<String, PreflightError>)>) -> (bool, String) {
        let names = ["a", "b", "c", "d"];
        let r = Report {
            requirements: results
                .into_iter()
                .zip(names)
                .map(|((need, result), name)| Requirement {
                    name,
                    need,
                    result,
                    note: None,
                })
                .collect(),
        };
        let mut out = Vec::new();
        r.write_to(&mut out).unwrap();
        (r.can_run(), String::from_utf8(out).unwrap())
    }

    #[test]
    fn all_ok_can_run() {
        let (ok, text) = report(vec![
            (Need::Required, Ok("found".into())),
            (Need::Optional("x"), Ok("there".into())),
        ]);
        assert!(ok);
        assert_eq!(
            text,
            "ok       a             found\n\
             ok       b             there\n\
             execwatch can run on this host\n"
        );
    }

    #[test]
    fn a_missing_optional_still_runs_and_is_named() {
        let (ok, text) = report(vec![
            (Need::Required, Ok("found".into())),
            (Need::Optional("pinning"), Err(PreflightError::NoBpffs)),
        ]);
        assert!(ok);
        let lines: Vec<&str> = text.lines().collect();
        assert!(
            lines[1]
                .starts_with("missing  b             optional, for pinning: bpffs is not mounted"),
            "{text}"
        );
        assert!(lines[1].contains("mount -t bpf bpf /sys/fs/bpf"), "{text}");
        assert_eq!(lines[2], "execwatch can run on this host (without: b)");
    }

    #[test]
    fn a_missing_requirement_cannot_run_and_says_what_to_do() {
        let (ok, text) = report(vec![
            (Need::Required, Err(PreflightError::NoBtf)),
            (
                Need::Required,
                Err(PreflightError::NotPrivileged {
                    missing: "CAP_BPF, CAP_PERFMON".into(),
                }),
            ),
            (Need::Optional("x"), Err(PreflightError::NoCgroup2)),
        ]);
        assert!(!ok);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 4, "{text}");
        assert!(lines[0].contains("CONFIG_DEBUG_INFO_BTF"), "{text}");
        assert!(
            lines[1].contains("grant it CAP_BPF and CAP_PERFMON"),
            "{text}"
        );
        assert_eq!(lines[3], "execwatch cannot run on this host: missing a, b");
    }

    const ROOT_CAPS: u64 = u64::MAX >> 23;

    #[test]
    fn tracefs_line_says_what_the_unit_would_use_when_it_differs() {
        let tracing = Path::new("/sys/kernel/tracing");
        // Not mounted, checked as root: root mounts a private instance for a
        // moment; the unit cannot, and falls back to sys_exit.
        let (result, note) = failed_execs("6.1.0", None, Some(ROOT_CAPS));
        let found = result.unwrap();
        assert!(found.contains("private instance"), "{found}");
        assert!(!found.contains("mounts it at"), "{found}");
        let note = note.expect("the unit differs");
        assert!(
            note.starts_with("the packaged unit (CAP_BPF and CAP_PERFMON only) would use the sys_exit hook: tracefs is not mounted"),
            "{note}"
        );
        assert!(note.contains("mount -t tracefs"), "{note}");
        // As the unit itself (or anyone without CAP_SYS_ADMIN): no note.
        let (result, note) = failed_execs("6.1.0", None, Some(preflight::UNIT_CAPS));
        assert!(result.is_err());
        assert_eq!(note, None);
        // Mounted: both use the tracepoints.
        let seen = Some((tracing, TracefsEvents::Present));
        for caps in [Some(ROOT_CAPS), Some(preflight::UNIT_CAPS), None] {
            let (result, note) = failed_execs("6.1.0", seen, caps);
            assert!(result
                .unwrap()
                .starts_with("mounted at /sys/kernel/tracing"));
            assert_eq!(note, None);
        }
        // Unreadable to this user: root's view is not guessed.
        let seen = Some((tracing, TracefsEvents::Unreadable));
        assert_eq!(failed_execs("6.1.0", seen, Some(0)).1, None);
        // Old kernels: sys_exit for everyone.
        assert_eq!(failed_execs("5.12.0", None, Some(ROOT_CAPS)).1, None);
    }

    #[test]
    fn a_note_stays_on_its_line() {
        let r = Report {
            requirements: vec![Requirement {
                name: "tracefs",
                need: Need::Optional("x"),
                result: Ok("found".into()),
                note: Some("the unit differs".into()),
            }],
        };
        let mut out = Vec::new();
        r.write_to(&mut out).unwrap();
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "ok       tracefs       found; the unit differs\nexecwatch can run on this host\n"
        );
    }

    #[test]
    fn every_line_is_one_line() {
        let r = host();
        let mut out = Vec::new();
        r.write_to(&mut out).unwrap();
        let text = String::from_utf8(out).unwrap();
        assert_eq!(text.lines().count(), r.requirements.len() + 1, "{text}");
        for name in [
            "kernel",
            "BTF",
            "ring buffer",
            "capabilities",
            "tracefs",
            "cgroup v2",
            "journald",
            "bpffs",
        ] {
            assert!(
                text.lines().any(|l| l[9..].starts_with(name)),
                "{name} missing from:\n{text}"
            );
        }
    }
}
