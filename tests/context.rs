//! Where an exec ran, on which binary, with which privileges: real
//! processes under the real BPF program, each fact checked in JSON, journald
//! and text. Which journald field and text label carry a fact is read from
//! the one declaration of each field (`execwatch::fields::FIELDS`).

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use common::{journal_bytes, journal_entries, marker, Daemon};
use execwatch::fields::{Journald, Text, FIELDS};
use serde_json::Value;

const ENV_VAR: &str = "EXECWATCH_TEST_SECRET";
const PYTHON: &str = "/usr/bin/python3";

/// The three daemons, one per format, watching the same execs.
struct Formats {
    json: Daemon,
    text: Daemon,
    journald: Daemon,
}

/// One exec as each format shows it.
struct Seen {
    json: Value,
    journal: Value,
    text: String,
}

impl Formats {
    fn start() -> Formats {
        let args = ["--env", ENV_VAR, "--env", "LD_PRELOAD"];
        Formats {
            json: Daemon::start_format("json", &args),
            text: Daemon::start_format("text", &args),
            journald: Daemon::start_format("journald", &args),
        }
    }

    /// The successful exec whose argv[1] is `m`, in each format.
    fn exec_with(&self, m: &str) -> Seen {
        self.exec_at(m, 1)
    }

    /// The successful exec whose argv[i] is `m`, in each format.
    fn exec_at(&self, m: &str, i: usize) -> Seen {
        let json = self
            .json
            .wait_for(1, Duration::from_secs(10), |v| {
                v["process"]["args"][i] == m && v["event"]["outcome"] == "success"
            })
            .remove(0);
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        let text = loop {
            let quoted = format!("\"{m}\"");
            let pid = format!(" pid={} ", json["process"]["pid"]);
            // argv[i] is the marker (no argument holds a quote in these tests).
            let second_is_m = |l: &String| {
                l.split_once(" argv=[")
                    .and_then(|(_, rest)| rest.split(' ').nth(i))
                    .is_some_and(|a| a.trim_end_matches(']') == quoted)
            };
            let ok =
                |l: &String| l.contains(&pid) && !l.contains(" exec failure ") && second_is_m(l);
            if let Some(l) = self.text.lines_with(m).into_iter().find(ok) {
                break l;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "no text line with {m}"
            );
            std::thread::sleep(Duration::from_millis(50));
        };
        let journal = loop {
            // Each daemon numbers on its own: match by argv.
            let found = journal_entries(&[
                format!("EXECWATCH_ARGV_{i}={m}"),
                format!("EXECWATCH_PID={}", json["process"]["pid"]),
                "EXECWATCH_OUTCOME=success".into(),
            ]);
            if let Some(e) = found.into_iter().next() {
                break e;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "no journal entry with {m}"
            );
            std::thread::sleep(Duration::from_millis(100));
        };
        Seen {
            json,
            journal,
            text,
        }
    }
}

fn json_at<'v>(v: &'v Value, path: &str) -> Option<&'v Value> {
    path.split('.').try_fold(v, |cur, seg| cur.get(seg))
}

impl Seen {
    /// `path` has `want` in JSON, and the same value in journald and on the
    /// text line under the field's declared name and label.
    fn has(&self, path: &str, want: Value) -> &Seen {
        let f = FIELDS
            .iter()
            .find(|f| f.json == path)
            .unwrap_or_else(|| panic!("{path} is not a declared field"));
        assert_eq!(
            json_at(&self.json, path),
            Some(&want),
            "JSON {path} in {}",
            self.json
        );
        if let Journald::Field(name) = f.journald {
            let journal = |n: &str| self.journal.get(n).map(journal_bytes);
            match &want {
                Value::Array(items) => {
                    for (i, item) in items.iter().enumerate() {
                        assert_eq!(
                            journal(&format!("{name}_{i}")),
                            Some(item.as_str().unwrap().as_bytes().to_vec()),
                            "journald {name}_{i}"
                        );
                    }
                }
                Value::Bool(b) => assert_eq!(
                    journal(name),
                    Some(if *b { b"1".to_vec() } else { b"0".to_vec() }),
                    "journald {name}"
                ),
                Value::String(s) => {
                    assert_eq!(
                        journal(name),
                        Some(s.as_bytes().to_vec()),
                        "journald {name}"
                    )
                }
                other => assert_eq!(
                    journal(name),
                    Some(other.to_string().into_bytes()),
                    "journald {name}"
                ),
            }
        }
        // A conditional label (shown only when it adds something) is checked
        // when it is on the line.
        let label = match f.text {
            Text::Label(l) => Some(l),
            Text::LabelIf(l, _) if self.text.contains(&format!(" {l}=")) => Some(l),
            _ => None,
        };
        if let Some(l) = label {
            let ok = match &want {
                Value::Bool(true) => self.text.split(' ').any(|t| t == l),
                Value::Bool(false) => !self.text.split(' ').any(|t| t == l),
                Value::String(s) => {
                    self.text.contains(&format!(" {l}=\"{s}\""))
                        || self.text.contains(&format!(" {l}={s}"))
                }
                Value::Array(items) => {
                    let inner: Vec<String> = items
                        .iter()
                        .map(|i| format!("\"{}\"", i.as_str().unwrap()))
                        .collect();
                    self.text.contains(&format!(" {l}=[{}]", inner.join(" ")))
                }
                other => self.text.contains(&format!(" {l}={other}")),
            };
            assert!(ok, "text {l} = {want} in: {}", self.text);
        }
        self
    }

    /// `path` is absent from JSON and journald, and its label from the text.
    fn lacks(&self, path: &str) -> &Seen {
        let f = FIELDS.iter().find(|f| f.json == path).unwrap();
        assert_eq!(json_at(&self.json, path), None, "JSON {path}");
        if let Journald::Field(name) = f.journald {
            assert!(self.journal.get(name).is_none(), "journald {name}");
            assert!(
                self.journal.get(format!("{name}_0")).is_none(),
                "journald {name}_0"
            );
        }
        if let Text::Label(l) | Text::LabelIf(l, _) = f.text {
            assert!(
                !self.text.contains(&format!(" {l}=")) && !self.text.split(' ').any(|t| t == l),
                "text {l} in: {}",
                self.text
            );
        }
        self
    }

    fn pid(&self) -> u64 {
        self.json["process"]["pid"].as_u64().unwrap()
    }
}

/// A fresh directory anyone may enter, removed at the end.
fn scratch_dir(name: &str) -> common::tempdir::TempDir {
    let d = common::tempdir::TempDir::new(name);
    std::fs::set_permissions(&d.0, std::fs::Permissions::from_mode(0o755)).unwrap();
    d
}

fn copy_exe(from: &str, to: &Path, mode: u32) {
    std::fs::copy(from, to).unwrap();
    std::fs::set_permissions(to, std::fs::Permissions::from_mode(mode)).unwrap();
}

fn run(cmd: &mut Command) {
    let out = cmd.output().expect("run command");
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Run `prog m` as uid 65534 with no capabilities. setpriv keeps root's
/// permitted set across its setresuid; an exec through an unprivileged shell
/// drops it, as a real login would not have it.
fn as_nobody(prog: &Path, m: &str) -> Command {
    let mut c = Command::new("setpriv");
    c.args([
        "--reuid",
        "65534",
        "--regid",
        "65534",
        "--clear-groups",
        "--",
    ])
    .args(["/bin/sh", "-c", "exec \"$0\" \"$1\""])
    .arg(prog)
    .arg(m);
    c
}

#[test]
fn exec_context_in_every_format() {
    let f = Formats::start();
    let dir = scratch_dir("ctx");
    let d = dir.0.to_str().unwrap().to_string();

    // A relative exec from a temporary cwd, without a terminal.
    let m = marker("cwd");
    copy_exe("/bin/true", &dir.0.join("prog"), 0o755);
    run(Command::new("./prog")
        .arg(&m)
        .current_dir(&dir.0)
        .env_remove(ENV_VAR));
    let s = f.exec_with(&m);
    s.has("process.working_directory", d.clone().into())
        .has("process.executable", format!("{d}/prog").into())
        .has("execwatch.filename", "./prog".into())
        .has("process.interactive", false.into())
        .lacks("process.tty.char_device.major")
        .lacks("process.env_vars")
        .lacks("execwatch.privileges_raised")
        .lacks("execwatch.script");
    let meta = std::fs::metadata(dir.0.join("prog")).unwrap();
    {
        use std::os::unix::fs::MetadataExt;
        let dev = meta.dev();
        s.has(
            "execwatch.executable.device",
            format!(
                "{}:{}",
                nix::sys::stat::major(dev),
                nix::sys::stat::minor(dev)
            )
            .into(),
        )
        .has("execwatch.executable.inode", meta.ino().into())
        .has("execwatch.executable.size", meta.size().into())
        .has("execwatch.executable.nlink", 1.into())
        .has("execwatch.executable.uid", "0".into())
        .has("execwatch.executable.mode", "100755".into());
        let mtime = s.json["execwatch"]["executable"]["mtime"].as_str().unwrap();
        assert!(
            mtime.ends_with(&format!(".{:09}Z", meta.mtime_nsec())),
            "{mtime}"
        );
        let ctime = s.json["execwatch"]["executable"]["ctime"].as_str().unwrap();
        assert!(
            ctime.ends_with(&format!(".{:09}Z", meta.ctime_nsec())),
            "{ctime}"
        );
    }
    // The process started (forked) before it exec'd, within this test.
    let start = s.json["process"]["start"].as_str().unwrap();
    let ts = s.json["@timestamp"].as_str().unwrap();
    assert!(start <= ts, "start {start} after exec {ts}");

    // Under a pseudo-terminal: the kernel's device number, pts/N = 136:N.
    let m = marker("pty");
    run(Command::new("script").args(["-qec", &format!("/bin/true {m} $(tty)"), "/dev/null"]));
    let s = f.exec_with(&m);
    let tty = s.json["process"]["args"][2].as_str().unwrap().to_string();
    let n: u64 = tty
        .strip_prefix("/dev/pts/")
        .unwrap_or_else(|| panic!("script gave {tty}"))
        .parse()
        .unwrap();
    s.has("process.interactive", true.into())
        .has("process.tty.char_device.major", (136 + n / 256).into())
        .has("process.tty.char_device.minor", (n % 256).into());

    // setsid: a new session and group, led by the process itself.
    let m = marker("setsid");
    run(Command::new("setsid").args(["-w", "/bin/true", &m]));
    let s = f.exec_with(&m);
    let pid = s.pid();
    s.has("process.session_leader.pid", pid.into())
        .has("process.group_leader.pid", pid.into());

    // A memfd exec: no file on any disk.
    let m = marker("memfd");
    run(Command::new(PYTHON).args([
        "-c",
        "import os,sys; fd=os.memfd_create('payload'); \
         os.write(fd, open('/bin/true','rb').read()); \
         os.execve(fd, ['payload', sys.argv[1]], {})",
        &m,
    ]));
    f.exec_with(&m)
        .has("process.executable", "memfd:payload".into())
        .has("execwatch.executable.memfd", true.into())
        .lacks("execwatch.executable.deleted");

    // The exec of a deleted file (fexecve of an unlinked copy).
    let m = marker("deleted");
    let victim = dir.0.join("victim");
    copy_exe("/bin/true", &victim, 0o755);
    run(Command::new(PYTHON).args([
        "-c",
        "import os,sys; fd=os.open(sys.argv[2], os.O_RDONLY); os.unlink(sys.argv[2]); \
         os.execve(fd, ['victim', sys.argv[1]], {})",
        &m,
        victim.to_str().unwrap(),
    ]));
    f.exec_with(&m)
        .has("execwatch.executable.deleted", true.into())
        .has("execwatch.executable.nlink", 0.into())
        .lacks("execwatch.executable.memfd");

    // overlayfs: a file from the lower layer, and one written into the mount.
    let (lower, upper, work, merged) = (
        dir.0.join("lower"),
        dir.0.join("upper"),
        dir.0.join("work"),
        dir.0.join("merged"),
    );
    for p in [&lower, &upper, &work, &merged] {
        std::fs::create_dir(p).unwrap();
    }
    copy_exe("/bin/true", &lower.join("from_image"), 0o755);
    run(Command::new("mount").args([
        "-t",
        "overlay",
        "overlay",
        "-o",
        &format!(
            "lowerdir={},upperdir={},workdir={}",
            lower.display(),
            upper.display(),
            work.display()
        ),
        merged.to_str().unwrap(),
    ]));
    struct Unmount(PathBuf);
    impl Drop for Unmount {
        fn drop(&mut self) {
            let _ = Command::new("umount").arg(&self.0).status();
        }
    }
    let _unmount = Unmount(merged.clone());
    copy_exe("/bin/true", &merged.join("dropped"), 0o755);
    let m_lower = marker("lower");
    let m_upper = marker("upper");
    run(Command::new(merged.join("from_image")).arg(&m_lower));
    run(Command::new(merged.join("dropped")).arg(&m_upper));
    f.exec_with(&m_lower)
        .lacks("execwatch.executable.upper_layer")
        .has(
            "process.executable",
            format!("{}/from_image", merged.display()).into(),
        );
    f.exec_with(&m_upper)
        .has("execwatch.executable.upper_layer", true.into());

    // A setuid-root binary run by an unprivileged user.
    let m = marker("setuid");
    let suid = dir.0.join("suid");
    copy_exe("/bin/true", &suid, 0o4755);
    run(&mut as_nobody(&suid, &m));
    f.exec_with(&m)
        .has("execwatch.privileges_raised", serde_json::json!(["setuid"]))
        .has("user.id", "65534".into())
        .has("user.effective.id", "0".into())
        .has("execwatch.executable.mode", "104755".into());

    // A binary with file capabilities.
    let m = marker("caps");
    let capped = dir.0.join("capped");
    copy_exe("/bin/true", &capped, 0o755);
    run(Command::new("setcap").args(["cap_net_raw+ep", capped.to_str().unwrap()]));
    run(&mut as_nobody(&capped, &m));
    f.exec_with(&m)
        .has(
            "execwatch.privileges_raised",
            serde_json::json!(["file_caps"]),
        )
        .has("user.effective.id", "65534".into());

    // The same unprivileged user on a plain binary: nothing raised.
    let m = marker("plain");
    run(&mut as_nobody(&dir.0.join("prog"), &m));
    f.exec_with(&m).lacks("execwatch.privileges_raised");

    // A #! script: the interpreter runs, the script is named.
    let m = marker("script");
    let script = dir.0.join("s.sh");
    std::fs::write(&script, "#!/bin/sh\ntrue\n").unwrap();
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    run(Command::new(&script).arg(&m));
    let s = f.exec_at(&m, 2);
    let interp = std::fs::canonicalize("/bin/sh").unwrap();
    s.has("execwatch.script", script.to_str().unwrap().into())
        .has("process.executable", interp.to_str().unwrap().into());

    // --env: present, absent (above), and a value past the limit.
    let m = marker("env");
    run(Command::new("/bin/true")
        .arg(&m)
        .env(ENV_VAR, "s3cr3t value"));
    f.exec_with(&m)
        .has(
            "process.env_vars",
            serde_json::json!([format!("{ENV_VAR}=s3cr3t value")]),
        )
        .lacks("execwatch.env_value_truncated");
    let m = marker("envbig");
    let big = "v".repeat(10_000);
    run(Command::new("/bin/true").arg(&m).env(ENV_VAR, &big));
    let kept = format!("{ENV_VAR}={}", &big[..execwatch::event::ENV_VALUE_MAX]);
    f.exec_with(&m)
        .has("process.env_vars", serde_json::json!([kept]))
        .has("execwatch.env_value_truncated", true.into());
    // Variables not asked for are never shown.
    let s = f.exec_with(&m);
    assert!(!s.json.to_string().contains("PATH="), "{}", s.json);

    for d in [f.json, f.text, f.journald] {
        let stopped = d.stop();
        assert!(stopped.status.success(), "{}", stopped.stderr);
    }
}

#[test]
fn failed_exec_carries_cwd_and_session() {
    let d = Daemon::start(&[]);
    let dir = scratch_dir("failcwd");
    let m = marker("failcwd");
    let _ = Command::new("./missing")
        .arg(&m)
        .current_dir(&dir.0)
        .status();
    let ev = d
        .wait_for(1, Duration::from_secs(10), |v| {
            v["execwatch"]["filename"] == "./missing"
                && v["process"]["working_directory"] == dir.0.to_str().unwrap()
        })
        .remove(0);
    assert_eq!(ev["event"]["outcome"], "failure");
    assert!(
        ev["process"]["session_leader"]["pid"].as_u64().is_some(),
        "{ev}"
    );
    assert!(ev["execwatch"].get("executable").is_none(), "{ev}");
    let stopped = d.stop();
    assert!(stopped.status.success());
}
