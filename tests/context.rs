//! Where an exec ran, on which binary, with which privileges: real
//! processes under the real BPF program, each fact checked in JSON, journald
//! and text (tests/common/formats.rs: which journald field and text label
//! carry a fact is read from the one declaration of each field).

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use common::formats::Formats;
use common::{marker, run_ok as run, Daemon};

const ENV_VAR: &str = "EXECWATCH_TEST_SECRET";
const PYTHON: &str = "/usr/bin/python3";

/// A fresh directory anyone may enter, removed at the end.
fn scratch_dir(name: &str) -> common::tempdir::TempDir {
    let d = common::tempdir::TempDir::new(name);
    std::fs::set_permissions(&d.0, std::fs::Permissions::from_mode(0o755)).unwrap();
    d
}

/// Directories `names` made in `dir`, in that order.
fn new_dirs<const N: usize>(dir: &Path, names: [&str; N]) -> [PathBuf; N] {
    names.map(|n| {
        let p = dir.join(n);
        std::fs::create_dir(&p).unwrap();
        p
    })
}

fn copy_exe(from: &str, to: &Path, mode: u32) {
    std::fs::copy(from, to).unwrap();
    std::fs::set_permissions(to, std::fs::Permissions::from_mode(mode)).unwrap();
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
    let f = Formats::start(&["--env", ENV_VAR, "--env", "LD_PRELOAD"]);
    let dir = scratch_dir("ctx");
    let d = dir.0.to_str().unwrap().to_string();

    // A relative exec from a temporary cwd, without a terminal.
    let m = marker("cwd");
    copy_exe("/bin/true", &dir.0.join("prog"), 0o755);
    let mut cmd = Command::new("./prog");
    cmd.arg(&m).current_dir(&dir.0).env_remove(ENV_VAR);
    // A session of its own: no terminal, whatever terminal runs the tests.
    common::in_new_session(&mut cmd);
    run(&mut cmd);
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
    let [lower, upper, work, merged] = new_dirs(&dir.0, ["lower", "upper", "work", "merged"]);
    copy_exe("/bin/true", &lower.join("from_image"), 0o755);
    let _unmount = mount_overlay(&lower, &upper, &work, &merged);
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

    // `link/../s.sh` through a link to `sub/inner`: the kernel runs
    // `sub/s.sh`, not the `s.sh` next to the link that the text suggests.
    let m = marker("dotdot");
    std::fs::create_dir_all(dir.0.join("sub/inner")).unwrap();
    let ran = dir.0.join("sub/s.sh");
    std::fs::write(&ran, "#!/bin/sh\ntrue\n").unwrap();
    std::fs::set_permissions(&ran, std::fs::Permissions::from_mode(0o755)).unwrap();
    std::os::unix::fs::symlink("sub/inner", dir.0.join("link")).unwrap();
    run(Command::new("./link/../s.sh").arg(&m).current_dir(&dir.0));
    let named = format!("{d}/link/../s.sh");
    f.exec_at(&m, 2)
        .has("execwatch.script", named.as_str().into())
        .lacks("execwatch.script_truncated");
    assert_eq!(std::fs::canonicalize(&named).unwrap(), ran);

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

    f.stop();
}

/// A file whose bytes a FUSE server gives is flagged and never read by the
/// daemon: on a FUSE mount (bindfs here), and through an overlayfs whose
/// lower layer is that mount, which any user may build in a user
/// namespace. A plain overlayfs file is neither flagged nor left unhashed.
#[test]
fn an_executable_a_fuse_server_gives_is_flagged_and_not_read() {
    let bindfs = Path::new("/usr/bin/bindfs");
    assert!(
        bindfs.exists(),
        "this test needs bindfs (a FUSE file system): run scripts/install-deps --test"
    );
    let f = Formats::start(&[]);
    let dir = scratch_dir("fuse");
    let [src, fuse, upper, work, merged, plain_lower, plain_upper, plain_work, plain] = new_dirs(
        &dir.0,
        [
            "src", "fuse", "upper", "work", "merged", "plower", "pupper", "pwork", "plain",
        ],
    );
    copy_exe("/bin/true", &src.join("served"), 0o755);
    copy_exe("/bin/true", &plain_lower.join("plain"), 0o755);
    run(Command::new(bindfs).args([src.to_str().unwrap(), fuse.to_str().unwrap()]));
    let _unmount_fuse = Unmount(fuse.clone());
    let _unmount_merged = mount_overlay(&fuse, &upper, &work, &merged);
    let _unmount_plain = mount_overlay(&plain_lower, &plain_upper, &plain_work, &plain);
    // FUSE as the second of two lower layers: the file comes from the
    // first, yet the overlayfs as a whole may give a FUSE server's bytes.
    let [up2, work2, mixed, up3, work3, nested, up4, work4, nested_plain] = new_dirs(
        &dir.0,
        [
            "up2", "work2", "mixed", "up3", "work3", "nested", "up4", "work4", "nplain",
        ],
    );
    let two_lowers = PathBuf::from(format!("{}:{}", plain_lower.display(), fuse.display()));
    let _unmount_mixed = mount_overlay(&two_lowers, &up2, &work2, &mixed);
    // An overlayfs over an overlayfs: its layer's own layers are checked.
    let _unmount_nested = mount_overlay(&merged, &up3, &work3, &nested);
    let _unmount_nested_plain = mount_overlay(&plain, &up4, &work4, &nested_plain);

    let m = marker("fuse");
    run(Command::new(fuse.join("served")).arg(&m));
    f.exec_with(&m)
        .has("execwatch.executable.fuse", true.into())
        .has("execwatch.hash.skipped", "fuse".into())
        .lacks("process.hash.sha256");

    let m = marker("overfuse");
    run(Command::new(merged.join("served")).arg(&m));
    f.exec_with(&m)
        .has("execwatch.executable.fuse", true.into())
        .has("execwatch.hash.skipped", "fuse".into())
        .lacks("process.hash.sha256")
        .lacks("execwatch.executable.upper_layer");

    for (name, exe) in [
        ("mixed", mixed.join("plain")),
        ("nested", nested.join("served")),
    ] {
        let m = marker(name);
        run(Command::new(exe).arg(&m));
        f.exec_with(&m)
            .has("execwatch.executable.fuse", true.into())
            .has("execwatch.hash.skipped", "fuse".into());
    }
    let m = marker("nestedplain");
    run(Command::new(nested_plain.join("plain")).arg(&m));
    f.exec_with(&m).lacks("execwatch.executable.fuse");

    let m = marker("plainoverlay");
    run(Command::new(plain.join("plain")).arg(&m));
    f.exec_with(&m).lacks("execwatch.executable.fuse").has(
        "process.hash.sha256",
        common::sha256sum(Path::new("/bin/true")).into(),
    );

    f.stop();
}

/// journald drops, silently, an entry of more than 1024 fields: an exec
/// with many arguments and many `--env` matches (an environment may name a
/// variable again and again) still reaches the journal, each list cut and
/// counted, and JSON and text keep every element.
#[test]
fn an_exec_with_more_fields_than_journald_takes_still_reaches_it() {
    use std::ffi::CString;
    use std::os::unix::process::CommandExt;

    const N: usize = 700;
    let f = Formats::start(&["--env", ENV_VAR]);
    let m = marker("fields");
    let argv: Vec<CString> = ["/bin/true".to_owned(), m.clone()]
        .into_iter()
        .chain((2..N).map(|i| format!("a{i}")))
        .map(|a| CString::new(a).unwrap())
        .collect();
    let envp: Vec<CString> = (0..N)
        .map(|i| CString::new(format!("{ENV_VAR}={i}")).unwrap())
        .collect();
    // As addresses: the child must not allocate between fork and exec.
    let addrs = |v: &[CString]| -> Vec<usize> {
        v.iter().map(|c| c.as_ptr() as usize).chain([0]).collect()
    };
    let (argv_p, envp_p) = (addrs(&argv), addrs(&envp));
    let mut cmd = Command::new("/bin/true");
    // SAFETY: only execve runs between fork and exec, on NULL-ended arrays
    // of pointers into strings that outlive the spawn; if it fails, spawn's
    // own exec of /bin/true follows and the test finds no event.
    unsafe {
        cmd.pre_exec(move || {
            let at = |v: &Vec<usize>| v.as_ptr() as *const *const libc::c_char;
            libc::execve(argv_p[0] as *const libc::c_char, at(&argv_p), at(&envp_p));
            Ok(())
        });
    }
    run(&mut cmd);

    let s = f.exec_with(&m);
    let want_env: Vec<String> = (0..N).map(|i| format!("{ENV_VAR}={i}")).collect();
    s.has("process.args_count", N.into());
    // JSON and text keep every element; journald's lists are checked below.
    assert_eq!(s.json["process"]["env_vars"], serde_json::json!(want_env));
    assert_eq!(s.json["process"]["args"].as_array().unwrap().len(), N);
    let last = format!("\"{ENV_VAR}={}\"]", N - 1);
    assert!(s.text.contains(&last), "{}", s.text);
    let entry = s.journal.as_object().unwrap();
    assert!(entry.len() <= 1024, "{} fields", entry.len());
    let kept = |list: &str| {
        entry
            .keys()
            .filter(|k| {
                k.strip_prefix(list)
                    .and_then(|i| i.strip_prefix('_'))
                    .is_some_and(|i| i.bytes().all(|b| b.is_ascii_digit()))
            })
            .count()
    };
    let omitted = |list: &str| {
        entry
            .get(&format!("{list}_OMITTED"))
            .map_or(0, |v| v.as_str().unwrap().parse::<usize>().unwrap())
    };
    for list in ["EXECWATCH_ARGV", "EXECWATCH_ENV"] {
        assert_eq!(kept(list) + omitted(list), N, "{list}: {entry:?}");
    }
    assert!(omitted("EXECWATCH_ENV") > 0, "the entry needed no cut");
    f.stop();
}

/// Unmounts its path when dropped.
struct Unmount(PathBuf);

/// An overlayfs at `at`, unmounted when the guard goes.
fn mount_overlay(lower: &Path, upper: &Path, work: &Path, at: &Path) -> Unmount {
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
        at.to_str().unwrap(),
    ]));
    Unmount(at.to_path_buf())
}

impl Drop for Unmount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}

/// Paths are as the process sees them: inside a chroot, from the chroot
/// (docs/schema.md), also for a file on a mount below it.
#[test]
fn chrooted_exec_paths_are_from_its_root() {
    let f = Formats::start(&[]);
    let dir = scratch_dir("chroot");
    common::busybox_rootfs(&dir.0);
    std::fs::create_dir_all(dir.0.join("work/sub")).unwrap();
    let mnt = dir.0.join("mnt");
    std::fs::create_dir(&mnt).unwrap();
    run(Command::new("mount")
        .args(["-t", "tmpfs", "execwatch-test"])
        .arg(&mnt));
    let _unmount = Unmount(mnt.clone());
    copy_exe("/bin/busybox", &mnt.join("busybox"), 0o755);

    let m = marker("chroot");
    run(Command::new("chroot").arg(&dir.0).args([
        "/bin/sh",
        "-c",
        &format!("cd /work/sub && exec /bin/true {m}"),
    ]));
    f.exec_with(&m)
        .has("process.executable", "/bin/busybox".into())
        .has("process.working_directory", "/work/sub".into())
        .has("execwatch.filename", "/bin/true".into());

    let m = marker("chrootmnt");
    run(Command::new("chroot")
        .arg(&dir.0)
        .args(["/mnt/busybox", "true", &m]));
    f.exec_at(&m, 2)
        .has("process.executable", "/mnt/busybox".into())
        .has("process.working_directory", "/".into())
        .lacks("execwatch.executable_outside_root")
        .lacks("execwatch.working_directory_outside_root");

    // Outside the root: a chroot without a chdir keeps the old working
    // directory, and a file opened before the chroot runs through its fd.
    // Their paths are then from the namespace's root, and flagged.
    let outside = scratch_dir("outside");
    // Static: the chroot has no dynamic loader.
    let host_true = outside.0.join("busybox");
    copy_exe("/bin/busybox", &host_true, 0o755);
    let m = marker("outside");
    run(Command::new(PYTHON)
        .args([
            "-c",
            "import os, sys\n\
             fd = os.open(sys.argv[2], os.O_RDONLY)\n\
             os.chroot(sys.argv[1])\n\
             os.execve(fd, ['true', sys.argv[3]], {})",
        ])
        .arg(&dir.0)
        .arg(&host_true)
        .arg(&m)
        .current_dir(&outside.0));
    f.exec_with(&m)
        .has("process.executable", host_true.to_str().unwrap().into())
        .has("execwatch.executable_outside_root", true.into())
        .has(
            "process.working_directory",
            outside.0.to_str().unwrap().into(),
        )
        .has("execwatch.working_directory_outside_root", true.into());
    f.stop();
}

#[test]
fn failed_exec_carries_cwd_and_session() {
    let d = Daemon::start(&[]);
    let dir = scratch_dir("failcwd");
    let m = marker("failcwd");
    // A session of its own, so the leader is known whatever session runs the tests
    // (under some CI runners that is session 0, which has no leader to name).
    let mut cmd = Command::new("./missing");
    cmd.arg(&m).current_dir(&dir.0);
    common::in_new_session(&mut cmd);
    let _ = cmd.status();
    let ev = d
        .wait_for(1, Duration::from_secs(10), |v| {
            v["execwatch"]["filename"] == "./missing"
                && v["process"]["working_directory"] == dir.0.to_str().unwrap()
        })
        .remove(0);
    assert_eq!(ev["event"]["outcome"], "failure");
    assert_eq!(
        ev["process"]["session_leader"]["pid"], ev["process"]["pid"],
        "{ev}"
    );
    assert!(ev["execwatch"].get("executable").is_none(), "{ev}");
    let stopped = d.stop();
    assert!(stopped.status.success());
}

#[test]
fn excluded_fields_are_left_out_of_every_format() {
    // A field, a subtree, and both hash fields: hashing then stops too.
    let f = Formats::start(&[
        "--exclude-field",
        "process.command_line,process.parent",
        "--exclude-field",
        "process.hash,execwatch.hash,execwatch.executable",
    ]);
    let m = marker("excluded");
    run(Command::new("/bin/true").arg(&m).arg("two words"));
    let s = f.exec_with(&m);
    let real_true = std::fs::canonicalize("/bin/true").unwrap();
    let real_true = real_true.to_str().unwrap().to_string();
    s.lacks("process.command_line")
        .lacks("process.parent.args")
        .lacks("process.parent.pid")
        .lacks("process.parent.entity_id")
        .lacks("process.hash.sha256")
        .lacks("execwatch.hash.skipped")
        .lacks("execwatch.executable.inode")
        .has(
            "process.args",
            serde_json::json!(["/bin/true", m, "two words"]),
        )
        .has("process.executable", real_true.as_str().into());
    assert!(s.json["process"]["entity_id"].is_string(), "{}", s.json);
    assert!(s.json["process"].get("parent").is_none(), "{}", s.json);
    for d in [&f.json, &f.text, &f.journald] {
        let threads = std::fs::read_dir(format!("/proc/{}/task", d.pid())).unwrap();
        let hashing = threads.flatten().any(|t| {
            std::fs::read_to_string(t.path().join("comm")).is_ok_and(|c| c.starts_with("exe-hash"))
        });
        assert!(!hashing, "a hasher runs with no field to show its hash");
    }
    f.stop();
}
