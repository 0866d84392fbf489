//! The container image, built without a registry (deploy/image/build), run
//! rootful with podman: host pid and cgroup namespaces, only CAP_BPF and
//! CAP_PERFMON, not privileged. It must see host execs and other containers'
//! execs, with the right container ids; an exec in its own container (run
//! with `--name`) carries that name and the image's name and tag, in its
//! JSON and in three host daemons' JSON, journald and text. Needs podman;
//! run by scripts/test with the other slow tests (`--ignored`).

mod common;

use std::io::{BufRead, BufReader};
use std::os::unix::fs::DirBuilderExt;
use std::process::{Command, Stdio};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

use common::formats::Formats;
use common::{marker, podman, run_quiet, PodmanImage};
use serde_json::{json, Value};

const RUNC_ROOT: &str = "/run/runc";
const PODMAN_CONTAINERS: &str = "/var/lib/containers/storage/overlay-containers";

#[test]
#[ignore = "builds and runs a container image (slow): scripts/test runs it with --ignored"]
fn image_runs_with_two_capabilities_and_attributes_containers() {
    common::require_root();
    let dir = env!("CARGO_MANIFEST_DIR");
    let tag = format!("localhost/execwatch:test-{}", std::process::id());
    let built = Command::new(format!("{dir}/deploy/image/build"))
        .env(
            "CONTAINERS_CONF",
            format!("{dir}/deploy/image/containers.conf"),
        )
        .args([common::BIN, &tag])
        .output()
        .expect("podman is installed by scripts/install-deps");
    assert!(
        built.status.success(),
        "{}",
        String::from_utf8_lossy(&built.stderr)
    );
    let seccomp =
        std::env::temp_dir().join(format!("execwatch-seccomp-{}.json", std::process::id()));
    let profile = Command::new(format!("{dir}/deploy/image/seccomp-profile"))
        .output()
        .unwrap();
    assert!(profile.status.success());
    std::fs::write(&seccomp, &profile.stdout).unwrap();

    for dir in [RUNC_ROOT, PODMAN_CONTAINERS] {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .unwrap();
    }
    let name = format!("execwatch-test-{}", std::process::id());
    let mut tracer = podman()
        .args([
            "run",
            "--rm",
            "--name",
            &name,
            "--pid=host",
            "--cgroupns=host",
        ])
        .args(["--cap-drop=all", "--cap-add=BPF,PERFMON", "--read-only"])
        .args(["--security-opt=no-new-privileges"])
        .arg(format!("--security-opt=seccomp={}", seccomp.display()))
        .args(["-v", "/sys/kernel/btf:/sys/kernel/btf:ro"])
        // podman's runc state and container list: ids are confirmed from
        // them (created here if no container has run on this host yet).
        .arg(format!("--volume={RUNC_ROOT}:{RUNC_ROOT}:ro"))
        .arg(format!(
            "--volume={PODMAN_CONTAINERS}:{PODMAN_CONTAINERS}:ro"
        ))
        .args([&tag, "--format", "json"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let (tx, rx) = mpsc::channel();
    let err = tracer.stderr.take().unwrap();
    let err_reader = std::thread::spawn(move || {
        let mut all = String::new();
        for line in BufReader::new(err).lines().map_while(Result::ok) {
            if line.contains("execwatch attached") {
                let _ = tx.send(());
            }
            all.push_str(&line);
            all.push('\n');
        }
        all
    });
    let out = tracer.stdout.take().unwrap();
    let events = Arc::new(Mutex::new(Vec::new()));
    let written = Arc::clone(&events);
    let out_reader = std::thread::spawn(move || {
        for v in BufReader::new(out)
            .lines()
            .map_while(Result::ok)
            .filter_map(|l| serde_json::from_str::<Value>(&l).ok())
        {
            written.lock().unwrap().push(v);
        }
    });
    // The podman command itself carries the marker too: match by program.
    let exec_by = |e: &Value, m: &str, program: &str| {
        common::has_arg(e, m) && e["process"]["name"] == program
    };
    let exec_of = |e: &Value, m: &str| exec_by(e, m, "true");
    if rx.recv_timeout(Duration::from_secs(60)).is_err() {
        let _ = tracer.kill();
        panic!(
            "the containerized execwatch did not attach:\n{}",
            err_reader.join().unwrap()
        );
    }

    // The same execs seen from the host, in the three formats.
    let formats = Formats::start(&[]);

    // A host exec, and an exec in another container.
    let host_marker = marker("image-host");
    assert!(run_quiet(Command::new("/bin/true").arg(&host_marker)).success());
    // It lives a second: a container that exits at once can be gone (with
    // its runtime state) before its id is confirmed (docs/design.md).
    let ctr_marker = marker("image-ctr");
    let cidfile = std::env::temp_dir().join(format!("execwatch-cid-{}", std::process::id()));
    let _ = std::fs::remove_file(&cidfile);
    let busybox = PodmanImage::busybox(&format!(
        "localhost/execwatch-test-bb:i{}",
        std::process::id()
    ));
    let inner = podman()
        .args(["run", "--rm", "--cidfile"])
        .arg(&cidfile)
        .arg(&busybox.0)
        .args(["/bin/sh", "-c", &format!("/bin/true {ctr_marker}; sleep 1")])
        .output()
        .unwrap();
    assert!(
        inner.status.success(),
        "{}",
        String::from_utf8_lossy(&inner.stderr)
    );
    let cid = std::fs::read_to_string(&cidfile)
        .unwrap()
        .trim()
        .to_string();
    let _ = std::fs::remove_file(&cidfile);
    // An exec in the tracer's own container: the image from
    // deploy/image/build, named with --name. (execwatch rejects the marker
    // as a subcommand; the exec is what is recorded.)
    let own_marker = marker("image-own");
    let own = podman()
        .args(["exec", &name, "/usr/local/bin/execwatch", &own_marker])
        .output()
        .unwrap();
    assert_eq!(
        own.status.code(),
        Some(2),
        "{}",
        String::from_utf8_lossy(&own.stderr)
    );
    let own_of = |e: &Value| exec_by(e, &own_marker, "execwatch");
    // Until the tracer has written the three execs; if it never does,
    // `find` below fails with its stderr.
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline && {
        let events = events.lock().unwrap();
        ![&host_marker, &ctr_marker]
            .iter()
            .all(|m| events.iter().any(|e| exec_of(e, m)))
            || !events.iter().any(own_of)
    } {
        std::thread::sleep(Duration::from_millis(100));
    }
    let own_seen = formats.exec_with(&own_marker);
    formats.stop();

    assert!(podman()
        .args(["kill", "--signal", "TERM", &name])
        .status()
        .unwrap()
        .success());
    assert!(tracer.wait().unwrap().success());
    out_reader.join().unwrap();
    let events = events.lock().unwrap();
    let stderr = err_reader.join().unwrap();
    let _ = podman().args(["rmi", "-f", &tag]).output();
    let _ = std::fs::remove_file(&seccomp);

    let find = |m: &str| {
        events
            .iter()
            .find(|e| exec_of(e, m))
            .unwrap_or_else(|| panic!("no event for {m}; stderr:\n{stderr}"))
            .clone()
    };
    let host = find(&host_marker);
    assert!(host.get("container").is_none(), "{host}");
    assert_eq!(
        host["execwatch"]["pid_ns"]["host"], true,
        "--pid=host: the host's pids"
    );
    // The tracer's own container, by name and image (the tag is this
    // test's): from podman's metadata, which the DaemonSet mounts too.
    let own_json = events
        .iter()
        .find(|e| own_of(e))
        .unwrap_or_else(|| panic!("no event for {own_marker}; stderr:\n{stderr}"));
    let (image_name, image_tag) = tag.split_once(':').unwrap();
    for ctr in [own_json, &own_seen.json] {
        assert_eq!(ctr["container"]["name"], name.as_str(), "{ctr}");
        assert_eq!(ctr["container"]["image"]["name"], image_name, "{ctr}");
        assert_eq!(
            ctr["container"]["image"]["tag"],
            json!([image_tag]),
            "{ctr}"
        );
        assert_eq!(ctr["container"]["runtime"], "podman", "{ctr}");
        assert_eq!(ctr["process"]["executable"], "/usr/local/bin/execwatch");
    }
    own_seen
        .has("container.name", name.as_str().into())
        .has("container.image.name", image_name.into())
        .has("container.image.tag", json!([image_tag]))
        .has("container.runtime", "podman".into())
        .has("container.id", own_json["container"]["id"].clone())
        .lacks("execwatch.container.unconfirmed_id");

    let ctr = find(&ctr_marker);
    assert_eq!(ctr["container"]["id"], cid.as_str(), "{ctr}");
    assert_eq!(ctr["container"]["runtime"], "podman");
    assert_eq!(ctr["process"]["executable"], "/bin/busybox");
    assert_eq!(ctr["execwatch"]["pid_ns"]["host"], false);
}
