//! Attribution to containers, pods, systemd units and pid namespaces, with
//! real OCI containers (runc, podman), real cgroups and real namespaces; and
//! the in-kernel filters.
//!
//! Containers run with runc under each runtime's own state root (`--root`)
//! and cgroup naming, their bundles carrying the annotations containerd or
//! CRI-O write: the daemon confirms them from that state, as on a real node.
//! What the events say about containers is checked in JSON, journald and
//! text (tests/common/formats.rs).
//! Containers run with crun too (its `status` and config.json copy).
//! State roots runc and crun create here (/run/docker/runtime-runc/moby,
//! /run/containerd/runc/k8s.io, /run/crun) are left in place, empty: /run
//! is a tmpfs.

mod common;

use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::formats::{Formats, Seen};
use common::{busybox_rootfs, has_arg, marker, podman, run_quiet, Daemon, KillOnDrop, PodmanImage};
use execwatch::cgroups::{parse, CgroupCache};
use execwatch::containers::{Layout, Resolver, StateRoot};
use serde_json::{json, Value};

const WAIT: Duration = Duration::from_secs(30);
const POD_A: &str = "8a3b2c1d-1234-4abc-9def-0123456789ab";
const POD_B: &str = "1f2e3d4c-5b6a-4789-8abc-def012345678";

const DOCKER_ROOT: &str = "/run/docker/runtime-runc/moby";
const CONTAINERD_ROOT: &str = "/run/containerd/runc/k8s.io";
const RUNC_ROOT: &str = "/run/runc";
const CRUN_ROOT: &str = "/run/crun";

fn hex64(seed: &str) -> String {
    // A deterministic 64-hex id from the marker (no rand dependency).
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    let mut out = String::new();
    for round in 0..4u64 {
        for b in seed.bytes().chain(round.to_le_bytes()) {
            h = (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3);
        }
        out.push_str(&format!("{h:016x}"));
    }
    out
}

/// A runc (or crun) container from a busybox bundle, its state under
/// `root`. Deleted (state and bundle) on drop.
struct Runc {
    /// `runc` or `crun`.
    bin: &'static str,
    root: String,
    name: String,
    bundle: PathBuf,
}

impl Runc {
    fn bundle(
        root: &str,
        name: &str,
        cgroups_path: &str,
        script: &str,
        annotations: &[(&str, &str)],
    ) -> Runc {
        let bundle = std::env::temp_dir().join(format!("execwatch-bundle-{name}"));
        let _ = std::fs::remove_dir_all(&bundle);
        busybox_rootfs(&bundle.join("rootfs"));
        let st = Command::new("runc")
            .arg("spec")
            .current_dir(&bundle)
            .status()
            .expect("runc is installed by scripts/install-deps");
        assert!(st.success());
        let cfg_path = bundle.join("config.json");
        let mut cfg: Value = serde_json::from_slice(&std::fs::read(&cfg_path).unwrap()).unwrap();
        cfg["process"]["terminal"] = false.into();
        cfg["process"]["args"] = json!(["/bin/sh", "-c", script]);
        cfg["linux"]["cgroupsPath"] = cgroups_path.into();
        let ann: serde_json::Map<String, Value> = annotations
            .iter()
            .map(|(k, v)| (k.to_string(), Value::from(*v)))
            .collect();
        cfg["annotations"] = Value::Object(ann);
        std::fs::write(&cfg_path, serde_json::to_vec(&cfg).unwrap()).unwrap();
        Runc {
            bin: "runc",
            root: root.into(),
            name: name.into(),
            bundle,
        }
    }

    /// The same container run by crun instead.
    fn crun(mut self) -> Runc {
        self.bin = "crun";
        self
    }

    fn runc(&self) -> Command {
        let mut c = Command::new(self.bin);
        c.arg("--root").arg(&self.root);
        c
    }

    /// The command that creates the container. crun refuses a hybrid cgroup
    /// host whose v2 hierarchy holds any controller (this test host's has
    /// hugetlb): it is shown an empty `cgroup.controllers`, in a mount
    /// namespace of its own, so that it still places the container in the
    /// real v2 cgroup the daemon sees.
    fn creator(&self) -> Command {
        let controllers = Path::new("/sys/fs/cgroup/unified/cgroup.controllers");
        let busy = std::fs::read(controllers).is_ok_and(|c| !c.trim_ascii().is_empty());
        if self.bin != "crun" || !busy {
            return self.runc();
        }
        let empty = self.bundle.join("no-controllers");
        std::fs::write(&empty, "").unwrap();
        let mut c = Command::new("unshare");
        c.args(["-m", "--propagation", "private", "sh", "-c"])
            .arg(format!(
                "mount --bind {} {} && exec crun --root \"$0\" \"$@\"",
                empty.display(),
                controllers.display()
            ))
            .arg(&self.root);
        c
    }

    /// `runc run -d`: returns once the container runs; its state stays
    /// until drop.
    fn detached(self) -> Runc {
        // The container inherits runc's stdio: a pipe would stay open as
        // long as it runs, so errors go to a file.
        let log = self.bundle.join("runc.stderr");
        let st = self
            .creator()
            .args(["run", "-d", "--bundle"])
            .arg(&self.bundle)
            .arg(&self.name)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .status()
            .unwrap();
        assert!(
            st.success(),
            "{} run -d {}: {}",
            self.bin,
            self.name,
            std::fs::read_to_string(&log).unwrap_or_default()
        );
        self
    }

    /// `runc run` in the foreground: runc deletes the state when the
    /// container exits, like `docker run --rm`.
    fn foreground(self) {
        let out = self
            .runc()
            .args(["run", "--bundle"])
            .arg(&self.bundle)
            .arg(&self.name)
            .stdin(Stdio::null())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "runc run {}: {}",
            self.name,
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

impl Drop for Runc {
    fn drop(&mut self) {
        let _ = self
            .runc()
            .args(["delete", "-f", &self.name])
            .stderr(Stdio::null())
            .status();
        let _ = std::fs::remove_dir_all(&self.bundle);
    }
}

/// docker's metadata for container `id`, as dockerd writes it (root-only).
struct DockerMeta(PathBuf);

impl DockerMeta {
    fn write(id: &str, name: &str, image: &str) -> DockerMeta {
        let mut b = std::fs::DirBuilder::new();
        b.recursive(true).mode(0o710);
        b.create("/var/lib/docker/containers").unwrap();
        let dir = PathBuf::from(format!("/var/lib/docker/containers/{id}"));
        std::fs::DirBuilder::new().mode(0o700).create(&dir).unwrap();
        let doc = json!({"ID": id, "Name": format!("/{name}"), "Driver": "overlay2",
            "Config": {"Image": image, "Hostname": &id[..12]}, "State": {"Running": true}});
        std::fs::write(dir.join("config.v2.json"), doc.to_string()).unwrap();
        DockerMeta(dir)
    }
}

impl Drop for DockerMeta {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
        // Only if empty: nothing else on this host uses them.
        let _ = std::fs::remove_dir("/var/lib/docker/containers");
        let _ = std::fs::remove_dir("/var/lib/docker");
    }
}

/// The daemon's debug line attributing `cgroup_path` (`--verbose`).
fn attribution(stderr: &str, cgroup_path: &str) -> Value {
    stderr
        .lines()
        .rev()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .find(|v| v["cgroup_path"] == cgroup_path)
        .unwrap_or_else(|| panic!("no attribution line for {cgroup_path} in:\n{stderr}"))
}

fn containerd_annotations(pod: &str) -> Vec<(&str, &str)> {
    vec![
        ("io.kubernetes.cri.container-type", "container"),
        ("io.kubernetes.cri.container-name", "nginx"),
        ("io.kubernetes.cri.sandbox-name", "web-0"),
        ("io.kubernetes.cri.sandbox-namespace", "shop"),
        ("io.kubernetes.cri.sandbox-uid", pod),
        (
            "io.kubernetes.cri.image-name",
            "docker.io/library/nginx:1.25",
        ),
    ]
}

fn crio_annotations(pod: &str) -> Vec<(&str, &str)> {
    vec![
        ("io.container.manager", "cri-o"),
        ("io.kubernetes.cri-o.ContainerType", "container"),
        ("io.kubernetes.pod.name", "db-0"),
        ("io.kubernetes.pod.namespace", "data"),
        ("io.kubernetes.pod.uid", pod),
        ("io.kubernetes.container.name", "postgres"),
        ("io.kubernetes.cri-o.Image", "postgres:16"),
        (
            "io.kubernetes.cri-o.ImageName",
            "registry.local:5000/library/postgres:16",
        ),
    ]
}

struct Case {
    root: &'static str,
    /// `{ID}` is replaced by the container id.
    cgroup: String,
    annotations: Vec<(&'static str, &'static str)>,
    runtime: &'static str,
    pod_uid: Option<&'static str>,
    /// container.name, image name, image tag, (pod, namespace, k8s container)
    names: (&'static str, &'static str, &'static str),
    k8s: Option<(&'static str, &'static str, &'static str)>,
    docker: bool,
}

impl Case {
    /// A docker container (`names` in dockerd's metadata) in `cgroup`.
    fn docker(cgroup: &str, names: (&'static str, &'static str, &'static str)) -> Case {
        Case {
            root: DOCKER_ROOT,
            cgroup: cgroup.into(),
            annotations: vec![],
            runtime: "docker",
            pod_uid: None,
            names,
            k8s: None,
            docker: true,
        }
    }

    /// [`containerd_annotations`] of pod A, in `cgroup`.
    fn containerd(cgroup: String) -> Case {
        Case {
            root: CONTAINERD_ROOT,
            cgroup,
            annotations: containerd_annotations(POD_A),
            runtime: "containerd",
            pod_uid: Some(POD_A),
            names: ("nginx", "docker.io/library/nginx", "1.25"),
            k8s: Some(("web-0", "shop", "nginx")),
            docker: false,
        }
    }

    /// [`crio_annotations`] of pod B, in `cgroup`.
    fn crio(cgroup: String) -> Case {
        Case {
            root: RUNC_ROOT,
            cgroup,
            annotations: crio_annotations(POD_B),
            runtime: "cri-o",
            pod_uid: Some(POD_B),
            names: ("postgres", "registry.local:5000/library/postgres", "16"),
            k8s: Some(("db-0", "data", "postgres")),
            docker: false,
        }
    }
}

#[test]
fn containers_are_confirmed_from_their_runtimes_state_and_named() {
    let f = Formats::start(&[]);
    let systemd_pod = |uid: &str, qos: &str| {
        format!(
            "/kubepods.slice/kubepods-{qos}.slice/kubepods-{qos}-pod{}.slice",
            uid.replace('-', "_")
        )
    };
    let cases = [
        Case::docker(
            "/system.slice/docker-{ID}.scope",
            ("api-1", "registry.local:5000/team/api", "2.1"),
        ),
        Case::docker("/docker/{ID}", ("api-2", "ghcr.io/acme/api", "latest")),
        // containerd, systemd driver and cgroupfs driver.
        Case::containerd(format!(
            "{}/cri-containerd-{{ID}}.scope",
            systemd_pod(POD_A, "burstable")
        )),
        Case::containerd(format!("/kubepods/besteffort/pod{POD_A}/{{ID}}")),
        // CRI-O, systemd driver and cgroupfs driver (`<parent>/crio-<id>`).
        Case::crio(format!(
            "{}/crio-{{ID}}.scope",
            systemd_pod(POD_B, "besteffort")
        )),
        Case::crio(format!("/kubepods/burstable/pod{POD_B}/crio-{{ID}}")),
    ];
    let mut running = Vec::new();
    let mut expected = Vec::new();
    for (i, case) in cases.iter().enumerate() {
        let m = marker(&format!("ctr{i}"));
        let id = hex64(&m);
        let path = case.cgroup.replace("{ID}", &id);
        let meta = case.docker.then(|| {
            DockerMeta::write(
                &id,
                case.names.0,
                &format!("{}:{}", case.names.1, case.names.2),
            )
        });
        let c = Runc::bundle(
            case.root,
            &id,
            &path,
            &format!("/bin/true {m}"),
            &case.annotations,
        )
        .detached();
        running.push((c, meta));
        expected.push((m, id, path));
    }
    // A plain runc container, named by runc's own scope naming.
    let m = marker("runc");
    let name = format!("ew-{}-runc", std::process::id());
    let path = format!("/system.slice/runc-{name}.scope");
    running.push((
        Runc::bundle(RUNC_ROOT, &name, &path, &format!("/bin/true {m}"), &[]).detached(),
        None,
    ));

    let seen: Vec<Seen> = expected.iter().map(|(m, _, _)| f.exec_with(m)).collect();
    let plain = f.exec_with(&m);
    f.stop();
    drop(running);

    for (case, ((_, id, path), s)) in cases.iter().zip(expected.iter().zip(&seen)) {
        case.check(id, path, s);
    }
    // runc keeps no names.
    confirmed_without_names(&plain, &name, "runc", &path);
}

impl Case {
    /// The event `s` of a container `id` of this case in cgroup `path`, in
    /// every format.
    fn check(&self, id: &str, path: &str, s: &Seen) {
        let case = self;
        s.has("container.id", id.into())
            .has("container.runtime", case.runtime.into())
            .has("execwatch.cgroup.path", path.into())
            .has("execwatch.pid_ns.host", false.into())
            .has("process.executable", "/bin/busybox".into())
            .has("container.name", case.names.0.into())
            .has("container.image.name", case.names.1.into())
            .has("container.image.tag", json!([case.names.2]))
            .lacks("container.image.hash.all")
            .lacks("execwatch.systemd.unit")
            .lacks("execwatch.container.unconfirmed_id")
            .lacks("execwatch.container.rootless_uid");
        match (case.pod_uid, case.k8s) {
            (Some(uid), Some((pod, ns, ctr))) => {
                s.has("kubernetes.pod.uid", uid.into())
                    .has("orchestrator.type", "kubernetes".into())
                    .has("kubernetes.pod.name", pod.into())
                    .has("kubernetes.namespace", ns.into())
                    .has("kubernetes.container.name", ctr.into());
            }
            _ => {
                s.lacks("kubernetes.pod.uid")
                    .lacks("orchestrator.type")
                    .lacks("kubernetes.pod.name")
                    .lacks("kubernetes.namespace")
                    .lacks("kubernetes.container.name");
            }
        }
    }
}

#[test]
fn crun_containers_are_confirmed_from_its_status_and_config_copy() {
    // crun keeps `status` (not state.json) and its own copy of config.json,
    // where the annotations are: CRI-O's default runtime, and containerd's
    // runc shim run with crun (same state root).
    let f = Formats::start(&[]);
    let mut crio = Case::crio(format!("/kubepods/burstable/pod{POD_B}/crio-{{ID}}"));
    crio.root = CRUN_ROOT;
    let cases = [
        crio,
        Case::containerd(format!("/kubepods/besteffort/pod{POD_A}/{{ID}}")),
    ];
    let mut running = Vec::new();
    let mut expected = Vec::new();
    // crun writes `status` after the container's first process runs: the
    // marked exec comes a moment later, once it is there, so that what is
    // checked here is how crun's files are read. The race of a container's
    // first execs with its runtime's state is the_cache_retries_until_the_
    // runtime_writes_state's and state_written_after_the_first_exec_is_
    // picked_up's (about 1 run in 6 raced here, before and after the rings
    // per CPU).
    for (i, case) in cases.iter().enumerate() {
        let m = marker(&format!("crun{i}"));
        let id = hex64(&m);
        let path = case.cgroup.replace("{ID}", &id);
        let script = format!("sleep 0.3; /bin/true {m}; sleep 2");
        running.push(
            Runc::bundle(case.root, &id, &path, &script, &case.annotations)
                .crun()
                .detached(),
        );
        expected.push((m, id, path));
    }
    // A plain crun container, named by crun's own scope naming.
    let m = marker("crun-plain");
    let name = format!("ew-{}-crun", std::process::id());
    let path = format!("/system.slice/crun-{name}.scope");
    let script = format!("sleep 0.3; /bin/true {m}; sleep 2");
    running.push(
        Runc::bundle(CRUN_ROOT, &name, &path, &script, &[])
            .crun()
            .detached(),
    );
    assert!(
        Path::new(CRUN_ROOT).join(&name).join("status").exists(),
        "crun's own state layout"
    );

    let seen: Vec<Seen> = expected.iter().map(|(m, _, _)| f.exec_with(m)).collect();
    let plain = f.exec_with(&m);
    f.stop();
    drop(running);
    for (case, ((_, id, path), s)) in cases.iter().zip(expected.iter().zip(&seen)) {
        case.check(id, path, s);
    }
    confirmed_without_names(&plain, &name, "crun", &path);
}

/// A container confirmed by `runtime`'s state that carries no names
/// (no annotations, no engine metadata).
fn confirmed_without_names(s: &Seen, id: &str, runtime: &str, path: &str) {
    s.has("container.id", id.into())
        .has("container.runtime", runtime.into())
        .has("execwatch.cgroup.path", path.into())
        .lacks("container.name")
        .lacks("container.image.name")
        .lacks("kubernetes.pod.name")
        .lacks("execwatch.container.unconfirmed_id");
}

#[test]
fn a_container_that_lives_one_second_is_confirmed_and_named() {
    // `runc run` in the foreground deletes the state as the container
    // exits: each daemon must have read it within that second.
    let f = Formats::start(&[]);
    let m = marker("one-second");
    let id = hex64(&m);
    let path = format!("/system.slice/cri-containerd-{id}.scope");
    Runc::bundle(
        CONTAINERD_ROOT,
        &id,
        &path,
        &format!("/bin/true {m}; sleep 1"),
        &containerd_annotations(POD_A),
    )
    .foreground();
    assert!(
        !Path::new(CONTAINERD_ROOT).join(&id).exists(),
        "runc removed the state on exit"
    );
    let s = f.exec_with(&m);
    f.stop();
    s.has("container.id", id.as_str().into())
        .has("container.runtime", "containerd".into())
        .has("container.name", "nginx".into())
        .has("container.image.name", "docker.io/library/nginx".into())
        .has("container.image.tag", json!(["1.25"]))
        .has("kubernetes.pod.uid", POD_A.into())
        .has("kubernetes.pod.name", "web-0".into())
        .has("kubernetes.namespace", "shop".into())
        .has("kubernetes.container.name", "nginx".into())
        .lacks("execwatch.container.unconfirmed_id");
}

#[test]
fn state_written_after_the_first_exec_is_picked_up() {
    // The cgroup exists (and runs something) before the runtime writes its
    // state: the first attribution is unconfirmed, a later exec is confirmed.
    let d = Daemon::start(&[]);
    let name = format!("ew-{}-late", std::process::id());
    let path = format!("/system.slice/runc-{name}.scope");
    let early = marker("late-early");
    run_in_cgroup_keep(&path, &early);
    let e = d.wait_for(1, WAIT, |v| has_arg(v, &early)).remove(0);
    assert!(e.get("container").is_none(), "{e}");
    assert_eq!(
        e["execwatch"]["container"]["unconfirmed_id"],
        name.as_str(),
        "{e}"
    );
    // Retries back off (10 ms doubling to 250 ms): an exec a second after
    // the state appeared is confirmed, whenever the first one came.
    let late = marker("late-late");
    let script = format!("/bin/true {late}-0; sleep 1; /bin/true {late}");
    let c = Runc::bundle(RUNC_ROOT, &name, &path, &script, &[]).detached();
    let e = d.wait_for(1, WAIT, |v| has_arg(v, &late)).remove(0);
    d.stop();
    drop(c);
    let _ = std::fs::remove_dir(cgroup2_root().join(path.trim_start_matches('/')));
    assert_eq!(e["container"]["id"], name.as_str(), "{e}");
    assert_eq!(e["container"]["runtime"], "runc");
    assert!(e["execwatch"].get("container").is_none(), "{e}");
}

#[test]
fn a_first_exec_before_the_runtime_writes_its_state_waits_for_it_briefly() {
    // podman's runc and crun write their state after the container's first
    // process runs. An event of a claimed container not confirmed yet waits
    // (in order) up to 0.5 s for that state, so the first exec is named too.
    let name = format!("ew-{}-wait", std::process::id());
    let path = format!("/system.slice/runc-{name}.scope");
    let cgroup = Cgroup::create(&path);
    let bundle = Runc::bundle(RUNC_ROOT, &name, &path, "sleep 10", &[]);
    // With hashing (events already wait for hashes) and without.
    let daemons = [Daemon::start(&[]), Daemon::start(&["--no-hash"])];
    let early = marker("wait-early");
    let t = Instant::now();
    run_in_cgroup_keep(&path, &early);
    let c = bundle.detached();
    let state_after = t.elapsed();
    let events: Vec<Value> = daemons
        .iter()
        .map(|d| d.wait_for(1, WAIT, |v| has_arg(v, &early)).remove(0))
        .collect();
    for d in daemons {
        d.stop();
    }
    drop(c);
    drop(cgroup);
    assert!(
        state_after < Duration::from_millis(400),
        "runc took {state_after:?} to write its state: too slow for this test"
    );
    for e in events {
        assert_eq!(e["container"]["id"], name.as_str(), "{e}");
        assert_eq!(e["container"]["runtime"], "runc", "{e}");
        assert!(e["execwatch"].get("container").is_none(), "{e}");
    }
}

#[test]
fn a_claim_confirmed_after_its_cgroups_first_exec_wakes_the_daemon_again() {
    // podman's runc writes its state after `runc init` has run in the
    // cgroup: the first record finds no state. The cgroup is then not marked
    // known for its first second, so the next records carry the path and
    // wake the daemon again. A 10 s poll interval, a ring buffer whose
    // quarter no test fills, and only this cgroup's execs recorded: a
    // confirmed event within seconds was woken by this cgroup's own record.
    let name = format!("ew-{}-settle", std::process::id());
    let path = format!("/system.slice/runc-{name}.scope");
    let cgroup = Cgroup::create(&path);
    // Ready before the first exec: the container must start within the
    // cgroup's first second.
    let bundle = Runc::bundle(RUNC_ROOT, &name, &path, "sleep 10", &[]);
    let d = Daemon::start(&[
        "--poll-interval",
        "10000",
        "--ring-buffer-size",
        "64MiB",
        "--cgroup",
        &path,
    ]);
    let early = marker("settle-early");
    run_in_cgroup_keep(&path, &early);
    let e = d
        .wait_for(1, Duration::from_secs(5), |v| has_arg(v, &early))
        .remove(0);
    assert!(e.get("container").is_none(), "no state yet: {e}");
    let c = bundle.detached();
    let e = d
        .wait_for(1, Duration::from_secs(5), |v| {
            v["container"]["id"] == name.as_str()
        })
        .remove(0);
    assert_eq!(e["execwatch"]["cgroup"]["path"], path.as_str(), "{e}");
    d.stop();
    drop(c);
    drop(cgroup);
}

/// Like `run_in_cgroup`, but the cgroup stays.
fn run_in_cgroup_keep(rel: &str, m: &str) {
    let dir = cgroup2_root().join(rel.trim_start_matches('/'));
    std::fs::create_dir_all(&dir).unwrap();
    let script = format!(
        "echo $$ > {}/cgroup.procs && exec /bin/true {m}",
        dir.display()
    );
    assert!(run_quiet(Command::new("/bin/sh").arg("-c").arg(&script)).success());
}

/// A uid no account uses, per test process.
fn test_uid() -> u32 {
    60000 + std::process::id() % 5000
}

/// `/run/user/<uid>` as pam_systemd makes it: owned by the user, 0700.
struct UserRuntimeDir(PathBuf);

impl UserRuntimeDir {
    fn create(uid: u32) -> UserRuntimeDir {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o755)
            .create("/run/user")
            .unwrap();
        let dir = PathBuf::from(format!("/run/user/{uid}"));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::DirBuilder::new().mode(0o700).create(&dir).unwrap();
        std::os::unix::fs::chown(&dir, Some(uid), Some(uid)).unwrap();
        UserRuntimeDir(dir)
    }
}

impl Drop for UserRuntimeDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// `mkdir -p` in the cgroup v2 hierarchy, removed (leaf up) on drop.
struct Cgroup(Vec<PathBuf>);

impl Cgroup {
    fn create(rel: &str) -> Cgroup {
        let root = cgroup2_root();
        let mut made = Vec::new();
        let mut dir = root.clone();
        for comp in rel.trim_start_matches('/').split('/') {
            dir.push(comp);
            if !dir.exists() {
                std::fs::create_dir(&dir).unwrap();
                made.push(dir.clone());
            }
        }
        Cgroup(made)
    }
}

impl Drop for Cgroup {
    fn drop(&mut self) {
        for d in self.0.iter().rev() {
            let _ = std::fs::remove_dir(d);
        }
    }
}

/// Move into `rel` and exec `true M` as `uid`.
fn exec_in_cgroup_as(rel: &str, uid: u32, m: &str) {
    let procs = cgroup2_root()
        .join(rel.trim_start_matches('/'))
        .join("cgroup.procs");
    let script = format!(
        "echo $$ > {} && exec setpriv --reuid={uid} --regid={uid} --clear-groups /bin/true {m}",
        procs.display()
    );
    assert!(run_quiet(Command::new("/bin/sh").arg("-c").arg(&script)).success());
}

#[test]
fn the_exit_of_a_process_older_than_execwatch_names_its_cgroup() {
    // A cgroup nothing execs in while execwatch runs: exit records carry no
    // path, so only what the daemon learns from /proc at start can name it.
    let rel = format!("/{}", marker("older"));
    let cgroup = Cgroup::create(&rel);
    // Outlives any start-up; killed on drop should an assertion fail first,
    // before the cgroup is removed (declared after it: dropped before it).
    let mut sleeper = KillOnDrop(Command::new("sleep").arg("600").spawn().unwrap());
    let procs = cgroup2_root()
        .join(rel.trim_start_matches('/'))
        .join("cgroup.procs");
    std::fs::write(&procs, sleeper.0.id().to_string()).unwrap();
    let f = Formats::start(&[]);
    sleeper.0.kill().unwrap();
    sleeper.0.wait().unwrap();
    f.exit_of_pid(sleeper.0.id())
        .has("execwatch.cgroup.path", rel.as_str().into())
        .lacks("execwatch.cgroup.unresolved")
        .has("execwatch.exit.signal", "SIGKILL".into());
    f.stop();
    drop(sleeper);
    drop(cgroup);
}

#[test]
fn the_first_exec_in_a_new_cgroup_wakes_the_daemon_at_once() {
    // A 10 s poll interval, and a ring buffer whose wakeup threshold (a
    // quarter) the other tests cannot reach: only the forced wakeup of a new
    // cgroup's first record delivers it sooner (its runtime's state may go
    // with it).
    let d = Daemon::start(&["--poll-interval", "10000", "--ring-buffer-size", "64MiB"]);
    let m = marker("wake");
    let rel = format!("/{m}");
    let cgroup = Cgroup::create(&rel);
    run_in_cgroup_keep(&rel, &m);
    let e = d
        .wait_for(1, Duration::from_secs(5), |v| has_arg(v, &m))
        .remove(0);
    assert_eq!(e["execwatch"]["cgroup"]["path"], rel.as_str(), "{e}");
    let stopped = d.stop();
    assert!(stopped.status.success(), "{}", stopped.stderr);
    let s = stopped.summary();
    assert!(s["wakeups_forced"].as_u64() >= Some(1), "{s}");
    drop(cgroup);
}

#[test]
fn a_forged_container_cgroup_is_not_a_container() {
    // What issue 14 tried as a new user: a cgroup named like a docker
    // container in the subtree systemd delegates to the user, with and
    // without state the user wrote; and one in a system slice with no state.
    // --verbose: the JSON daemon's debug line says which runtime's state a
    // rootless container has, which no event field carries.
    let f = Formats::start(&["--verbose"]);
    let uid = test_uid();
    let user = format!("/user.slice/user-{uid}.slice/user@{uid}.service/app.slice");
    let runtime_dir = UserRuntimeDir::create(uid);

    let bare_m = marker("forged-bare");
    let bare_id = hex64(&bare_m);
    let bare = format!("{user}/docker-{bare_id}.scope");
    let stated_m = marker("forged-stated");
    let stated_id = hex64(&stated_m);
    let stated = format!("{user}/docker-{stated_id}.scope");
    let system_m = marker("forged-system");
    let system_id = hex64(&system_m);
    let system = format!("/system.slice/docker-{system_id}.scope");
    let cgroups: Vec<Cgroup> = [&bare, &stated, &system]
        .iter()
        .map(|p| Cgroup::create(p))
        .collect();

    // runc-shaped state, written by the user where rootless runc keeps it.
    let mount = cgroup2_root();
    let mut paths = serde_json::Map::new();
    paths.insert(String::new(), format!("{}{stated}", mount.display()).into());
    if mount.ends_with("unified") {
        paths.insert("cpu".into(), format!("/sys/fs/cgroup/cpu{stated}").into());
    }
    let state_dir = runtime_dir.0.join("runc").join(&stated_id);
    std::fs::create_dir_all(&state_dir).unwrap();
    let state = json!({"id": stated_id, "created": "2026-01-01T00:00:00Z",
        "cgroup_paths": paths, "config": {"labels": ["bundle=/home/u/b"]}});
    std::fs::write(state_dir.join("state.json"), state.to_string()).unwrap();
    for p in [
        runtime_dir.0.join("runc"),
        state_dir.clone(),
        state_dir.join("state.json"),
    ] {
        std::os::unix::fs::chown(&p, Some(uid), Some(uid)).unwrap();
    }

    exec_in_cgroup_as(&bare, uid, &bare_m);
    exec_in_cgroup_as(&stated, uid, &stated_m);
    exec_in_cgroup_as(&system, 0, &system_m);
    // argv[1] is the marker for `true` only (not for setpriv or sh).
    let (bare_s, stated_s, system_s) = (
        f.exec_with(&bare_m),
        f.exec_with(&stated_m),
        f.exec_with(&system_m),
    );
    let stopped = f.stop();
    drop(cgroups);

    for (s, path, id) in [
        (&bare_s, &bare, &bare_id),
        (&stated_s, &stated, &stated_id),
        (&system_s, &system, &system_id),
    ] {
        s.lacks("container.id")
            .lacks("container.runtime")
            .lacks("container.name")
            .lacks("container.image.name")
            .lacks("kubernetes.pod.uid")
            .has("execwatch.container.unconfirmed_id", id.as_str().into())
            .has("execwatch.cgroup.path", path.as_str().into());
        assert!(s.json.get("container").is_none(), "{}", s.json);
        assert!(
            !s.json.to_string().contains(&format!("\"id\":\"{id}\"")),
            "{}",
            s.json
        );
    }
    // No state at all: not a container, the cgroup is just what it is named.
    for (s, id) in [(&bare_s, &bare_id), (&system_s, &system_id)] {
        s.has(
            "execwatch.systemd.unit",
            format!("docker-{id}.scope").into(),
        )
        .lacks("execwatch.container.rootless_uid");
    }
    bare_s.has("user.id", uid.to_string().into());
    // The user's own state confirms a rootless container of that user only:
    // still no container.id, and the scope is the runtime's, not a unit.
    stated_s
        .has("execwatch.container.rootless_uid", uid.into())
        .lacks("execwatch.systemd.unit");
    let a = attribution(&stopped.stderr, &stated);
    assert_eq!(a["container_id"], stated_id.as_str(), "{a}");
    assert_eq!(a["runtime"], "runc", "{a}");
}

/// A scratch directory under /run (root-owned, 0755 all the way up).
struct Scratch(PathBuf);

impl Scratch {
    fn new(name: &str) -> Scratch {
        let dir = PathBuf::from(format!("/run/execwatch-test-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::DirBuilder::new().mode(0o755).create(&dir).unwrap();
        Scratch(dir)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn layout_with_root(dir: &Path) -> Layout {
    Layout {
        roots: vec![StateRoot {
            dir: dir.to_path_buf(),
            runtime: "runc",
            namespaced: false,
        }],
        user_runtime_dirs: "/nonexistent".into(),
        docker_containers: "/nonexistent".into(),
    }
}

/// A state root's name, whether it still confirms, and how it is changed
/// after runc wrote the state.
type Spoiler = (&'static str, bool, fn(&Path));

#[test]
fn state_that_others_could_write_confirms_nothing() {
    common::require_root();
    let scratch = Scratch::new("modes");
    let pid = std::process::id();
    let spoilers: [Spoiler; 7] = [
        ("good", true, |_| {}),
        // Like a container's /run tmpfs: others may add entries, not
        // replace the root-owned ones below.
        ("sticky-world-writable-parent", true, |root| {
            std::fs::set_permissions(
                root.parent().unwrap(),
                std::fs::Permissions::from_mode(0o1777),
            )
            .unwrap()
        }),
        ("world-writable", false, |root| {
            std::fs::set_permissions(root, std::fs::Permissions::from_mode(0o777)).unwrap()
        }),
        ("group-writable-parent", false, |root| {
            std::fs::set_permissions(
                root.parent().unwrap(),
                std::fs::Permissions::from_mode(0o775),
            )
            .unwrap()
        }),
        ("user-owned", false, |root| {
            std::os::unix::fs::chown(root, Some(test_uid()), None).unwrap()
        }),
        ("user-owned-state-dir-in-sticky-root", false, |root| {
            std::fs::set_permissions(root, std::fs::Permissions::from_mode(0o1777)).unwrap();
            for e in std::fs::read_dir(root).unwrap() {
                std::os::unix::fs::chown(e.unwrap().path(), Some(test_uid()), None).unwrap();
            }
        }),
        ("user-owned-state-file", false, |root| {
            for e in std::fs::read_dir(root).unwrap() {
                let f = e.unwrap().path().join("state.json");
                std::os::unix::fs::chown(&f, Some(test_uid()), None).unwrap();
            }
        }),
    ];
    for (kind, confirms, spoil) in spoilers {
        // Each root in its own parent, so a spoilt parent spoils one case.
        let parent = scratch.0.join(kind);
        std::fs::DirBuilder::new()
            .mode(0o755)
            .create(&parent)
            .unwrap();
        let root = parent.join("runc");
        let name = format!("ew-{pid}-{kind}");
        let path = format!("/system.slice/runc-{name}.scope");
        let c = Runc::bundle(root.to_str().unwrap(), &name, &path, "sleep 5", &[]).detached();
        spoil(&root);
        let mut r = Resolver::new(layout_with_root(&root));
        let got = r.resolve(&parse(path.as_bytes())).unwrap();
        drop(c);
        if confirms {
            assert_eq!(got.id.as_deref(), Some(name.as_str()), "{kind}: {got:?}");
            assert!(got.is_system());
        } else {
            assert_eq!(got.id, None, "{kind}: {got:?}");
            assert_eq!(got.unconfirmed_id.as_deref(), Some(name.as_str()));
        }
    }
    // A symbolic link in the chain is refused too.
    let real = scratch.0.join("good/runc");
    let link = scratch.0.join("link");
    std::os::unix::fs::symlink(&real, &link).unwrap();
    let name = format!("ew-{pid}-link");
    let path = format!("/system.slice/runc-{name}.scope");
    let c = Runc::bundle(real.to_str().unwrap(), &name, &path, "sleep 5", &[]).detached();
    let via_link = Resolver::new(layout_with_root(&link)).resolve(&parse(path.as_bytes()));
    let direct = Resolver::new(layout_with_root(&real)).resolve(&parse(path.as_bytes()));
    drop(c);
    assert_eq!(via_link.unwrap().id, None);
    assert_eq!(direct.unwrap().id.as_deref(), Some(name.as_str()));
}

#[test]
fn state_for_another_cgroup_confirms_nothing() {
    // Real state for container X confirms X only in X's own cgroup.
    common::require_root();
    let scratch = Scratch::new("cgroup");
    let root = scratch.0.join("runc");
    let name = format!("ew-{}-elsewhere", std::process::id());
    let path = format!("/system.slice/runc-{name}.scope");
    let c = Runc::bundle(root.to_str().unwrap(), &name, &path, "sleep 5", &[]).detached();
    let mut r = Resolver::new(layout_with_root(&root));
    let uid = test_uid();
    let user_copy = format!("/user.slice/user-{uid}.slice/user@{uid}.service/runc-{name}.scope");
    let inside = r.resolve(&parse(format!("{path}/sub").as_bytes())).unwrap();
    let elsewhere = r.resolve(&parse(user_copy.as_bytes())).unwrap();
    let truncated = r
        .resolve(&parse(path.trim_start_matches('/').as_bytes()))
        .unwrap();
    drop(c);
    assert_eq!(
        inside.id.as_deref(),
        Some(name.as_str()),
        "a sub-cgroup is inside"
    );
    assert_eq!(elsewhere.id, None, "{elsewhere:?}");
    assert_eq!(elsewhere.unconfirmed_id.as_deref(), Some(name.as_str()));
    assert_eq!(truncated.id, None, "a truncated path confirms nothing");
}

#[test]
fn a_rootless_container_is_reported_as_the_users() {
    common::require_root();
    let uid = test_uid();
    let runtime_dir = UserRuntimeDir::create(uid);
    let root = runtime_dir.0.join("runc");
    let name = format!("ew-{}-rootless", std::process::id());
    let path =
        format!("/user.slice/user-{uid}.slice/user@{uid}.service/user.slice/runc-{name}.scope");
    let c = Runc::bundle(root.to_str().unwrap(), &name, &path, "sleep 5", &[]).detached();
    let mut r = Resolver::default();
    let got = r.resolve(&parse(path.as_bytes())).unwrap();
    // The same id claimed outside that user's subtree is not looked up there.
    let system = format!("/system.slice/runc-{name}.scope");
    let other = r.resolve(&parse(system.as_bytes())).unwrap();
    drop(c);
    let cg = parse(path.as_bytes()).with_container(Some(got.clone()));
    assert_eq!(got.id.as_deref(), Some(name.as_str()), "{got:?}");
    assert_eq!(got.rootless_uid, Some(uid));
    assert!(!got.is_system());
    assert_eq!(cg.container_id, None, "never a system container id");
    assert_eq!(other.id, None);
}

#[test]
fn the_cache_retries_until_the_runtime_writes_state() {
    common::require_root();
    let name = format!("ew-{}-retry", std::process::id());
    let path = format!("/system.slice/runc-{name}.scope");
    let cg = Cgroup::create(&path);
    let mut cache = CgroupCache::default();
    let first = cache.resolve(1, Some(path.as_bytes()), false, 0).unwrap();
    assert_eq!(first.container_id, None);
    let c = Runc::bundle(RUNC_ROOT, &name, &path, "sleep 5", &[]).detached();
    let deadline = Instant::now() + Duration::from_secs(2);
    let confirmed = loop {
        let now = cache.resolve(1, None, false, 0).unwrap();
        if now.container_id.is_some() || Instant::now() > deadline {
            break now;
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    drop(c);
    drop(cg);
    assert_eq!(confirmed.container_id.as_deref(), Some(name.as_str()));
    assert_eq!(confirmed.runtime, Some("runc"));
}

#[test]
fn a_podman_container_is_confirmed_and_named() {
    let f = Formats::start(&[]);
    let pid = std::process::id();
    let image = PodmanImage::busybox(&format!("localhost/execwatch-test-bb:t{pid}"));
    let name = format!("execwatch-test-{pid}");
    let m = marker("podman");
    let out = podman()
        .args(["run", "-d", "--name", &name, &image.0])
        .args(["/bin/sh", "-c", &format!("/bin/true {m}; sleep 2")])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "podman run: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let id = String::from_utf8_lossy(&out.stdout).trim().to_string();
    // `true`'s argv[1] is the marker; sh has it inside argv[2].
    let s = f.exec_with(&m);
    f.stop();
    let _ = podman().args(["rm", "-f", &name]).output();
    s.has("container.id", id.as_str().into())
        .has("container.runtime", "podman".into())
        .has("container.name", name.as_str().into())
        .has("container.image.name", "localhost/execwatch-test-bb".into())
        .has("container.image.tag", json!([format!("t{pid}")]))
        .has("process.name", "true".into())
        .lacks("kubernetes.pod.uid")
        .lacks("kubernetes.pod.name")
        .lacks("execwatch.container.unconfirmed_id")
        .lacks("execwatch.systemd.unit");
    let path = s.json["execwatch"]["cgroup"]["path"].as_str().unwrap();
    assert!(
        path.contains(&id),
        "podman's cgroup names the container: {path}"
    );
}

/// Where this host mounts cgroup v2 (pure or hybrid).
fn cgroup2_root() -> PathBuf {
    execwatch::cgroups::cgroup2_mount().expect("a cgroup v2 mount")
}

/// Make `rel` under the cgroup v2 root and run `sh -c 'join; exec true M'`.
fn run_in_cgroup(rel: &str, m: &str, extra: &[&str]) {
    let dir = cgroup2_root().join(rel.trim_start_matches('/'));
    std::fs::create_dir_all(&dir).unwrap();
    let script = format!(
        "echo $$ > {}/cgroup.procs && exec /bin/true {m} {}",
        dir.display(),
        extra.join(" ")
    );
    assert!(run_quiet(Command::new("/bin/sh").arg("-c").arg(&script)).success());
    let _ = std::fs::remove_dir(&dir);
}

#[test]
fn a_host_service_carries_its_unit_and_no_container() {
    let d = Daemon::start(&[]);
    let m = marker("unit");
    let unit = format!("execwatch-test-{}.service", std::process::id());
    run_in_cgroup(&format!("system.slice/{unit}"), &m, &[]);
    let e = d.wait_for(1, WAIT, |v| has_arg(v, &m)).remove(0);
    d.stop();
    assert_eq!(e["execwatch"]["systemd"]["unit"], unit.as_str());
    assert_eq!(e["execwatch"]["systemd"]["slice"], "system.slice");
    assert!(e.get("container").is_none());
    assert_eq!(e["execwatch"]["pid_ns"]["host"], true);
    assert_eq!(
        e["execwatch"]["cgroup"]["path"],
        format!("/system.slice/{unit}")
    );
}

#[test]
fn a_new_pid_namespace_gives_the_inner_pid() {
    let d = Daemon::start(&[]);
    let m = marker("pidns");
    assert!(
        run_quiet(Command::new("unshare").args(["--pid", "--fork", "/bin/true", &m])).success()
    );
    // unshare's own exec carries the marker too: take the inner `true`.
    let e = d
        .wait_for(1, WAIT, |v| {
            has_arg(v, &m) && v["process"]["name"] == "true"
        })
        .remove(0);
    d.stop();
    assert_eq!(e["execwatch"]["pid_ns"]["pid"], 1);
    assert_ne!(e["process"]["pid"], 1);
    assert_eq!(e["execwatch"]["pid_ns"]["host"], false);
    let own = std::fs::read_link("/proc/self/ns/pid").unwrap();
    assert_ne!(
        own.to_string_lossy(),
        format!("pid:[{}]", e["execwatch"]["pid_ns"]["inode"])
    );
}

/// Run `f` under a daemon started with `args`, then return (our events, summary).
fn filtered(args: &[&str], last: &str, f: impl FnOnce()) -> (Vec<Value>, Value) {
    let d = Daemon::start(args);
    f();
    d.wait_for(1, WAIT, |v| has_arg(v, last));
    let stopped = d.stop();
    let s = stopped.summary();
    (stopped.events, s)
}

fn count(evs: &[Value], m: &str) -> usize {
    evs.iter().filter(|v| has_arg(v, m)).count()
}

#[test]
fn filter_by_uid_costs_no_record() {
    let (yes, no) = (marker("uid-yes"), marker("uid-no"));
    let (evs, s) = filtered(&["--uid", "nobody"], &yes, || {
        for _ in 0..20 {
            assert!(run_quiet(Command::new("/bin/true").arg(&no)).success());
        }
        assert!(run_quiet(std::os::unix::process::CommandExt::uid(
            Command::new("/bin/true").arg(&yes),
            65534
        ))
        .success());
    });
    assert_eq!(count(&evs, &no), 0);
    assert_eq!(count(&evs, &yes), 1);
    // The proof that filtered execs cost no record: the kernel saw (made
    // records for) exactly what was delivered, and counted the rest filtered.
    assert!(s["filtered"].as_u64().unwrap() >= 20, "{s}");
    assert_eq!(s["seen"], s["events"], "{s}");
    assert!(
        evs.iter().all(|v| v["user"]["id"] == "65534"),
        "only uid 65534"
    );
}

#[test]
fn filter_by_comm_and_exclude_comm() {
    let m = marker("comm");
    let last = marker("comm-last");
    let (evs, _) = filtered(&["--comm", "true"], &last, || {
        assert!(run_quiet(Command::new("/bin/echo").arg(&m)).success());
        assert!(run_quiet(Command::new("/bin/true").arg(&m)).success());
        assert!(run_quiet(Command::new("/bin/true").arg(&last)).success());
    });
    assert!(evs.iter().all(|v| v["process"]["name"] == "true"));
    assert_eq!(count(&evs, &m), 1);

    let m = marker("xcomm");
    let last = marker("xcomm-last");
    let (evs, s) = filtered(&["--exclude-comm", "echo"], &last, || {
        assert!(run_quiet(Command::new("/bin/echo").arg(&m)).success());
        assert!(run_quiet(Command::new("/bin/true").arg(&m)).success());
        assert!(run_quiet(Command::new("/bin/true").arg(&last)).success());
    });
    assert!(evs.iter().all(|v| v["process"]["name"] != "echo"));
    assert_eq!(count(&evs, &m), 1);
    assert!(s["filtered"].as_u64().unwrap() >= 1);
}

#[test]
fn filter_by_cgroup_subtree() {
    let base = format!("execwatch-filter-{}", std::process::id());
    let inside = marker("cg-in");
    let outside = marker("cg-out");
    std::fs::create_dir_all(cgroup2_root().join(&base)).unwrap();
    let (evs, _) = filtered(&["--cgroup", &format!("/{base}")], &inside, || {
        assert!(run_quiet(Command::new("/bin/true").arg(&outside)).success());
        run_in_cgroup(&format!("{base}/child"), &inside, &[]);
    });
    let _ = std::fs::remove_dir(cgroup2_root().join(&base));
    assert_eq!(count(&evs, &outside), 0);
    let e = evs.iter().find(|v| has_arg(v, &inside)).unwrap();
    assert_eq!(
        e["execwatch"]["cgroup"]["path"],
        format!("/{base}/child"),
        "subtree: a child cgroup is in"
    );
}

#[test]
fn containers_only_and_failed_only() {
    let host = marker("host");
    let inner = marker("inner");
    let (evs, s) = filtered(&["--containers-only"], &inner, || {
        assert!(run_quiet(Command::new("/bin/true").arg(&host)).success());
        assert!(
            run_quiet(Command::new("unshare").args(["--pid", "--fork", "/bin/true", &inner]))
                .success()
        );
    });
    assert_eq!(count(&evs, &host), 0);
    assert_eq!(count(&evs, &inner), 1);
    assert!(evs
        .iter()
        .all(|v| v["execwatch"]["pid_ns"]["host"] == false));
    assert!(s["filtered"].as_u64().unwrap() >= 1);

    let ok = marker("ok");
    let bad = marker("bad");
    let (evs, _) = filtered(&["--failed-only"], &bad, || {
        assert!(run_quiet(Command::new("/bin/true").arg(&ok)).success());
        assert!(Command::new(format!("/nonexistent/{bad}"))
            .arg(&bad)
            .status()
            .is_err());
    });
    assert_eq!(count(&evs, &ok), 0);
    assert!(evs.iter().all(|v| v["event"]["outcome"] == "failure"));
}

#[test]
fn filters_combine() {
    // uid AND comm: only nobody's `true` passes.
    let m = marker("combo");
    let last = marker("combo-last");
    let (evs, s) = filtered(&["--uid", "65534", "--comm", "true"], &last, || {
        use std::os::unix::process::CommandExt;
        assert!(run_quiet(Command::new("/bin/true").arg(&m)).success()); // root
        assert!(run_quiet(Command::new("/bin/echo").arg(&m).uid(65534)).success()); // echo
        assert!(run_quiet(Command::new("/bin/true").arg(&m).uid(65534)).success()); // passes
        assert!(run_quiet(Command::new("/bin/true").arg(&last).uid(65534)).success());
    });
    let ours: Vec<&Value> = evs.iter().filter(|v| has_arg(v, &m)).collect();
    assert_eq!(ours.len(), 1, "{ours:?}");
    assert_eq!(ours[0]["user"]["id"], "65534");
    assert_eq!(ours[0]["process"]["name"], "true");
    assert!(s["filtered"].as_u64().unwrap() >= 2);
}

#[test]
fn bad_filter_values_are_clear_errors() {
    for (args, want) in [
        (&["--uid", "no-such-user-xyz"][..], "no user named"),
        (
            &["--comm", "a-very-long-program-name"][..],
            "longer than 15 bytes",
        ),
        (
            &["--cgroup", "/no/such/cgroup"][..],
            "is not a cgroup v2 directory",
        ),
    ] {
        let o = Command::new(common::BIN).args(args).output().unwrap();
        assert_eq!(o.status.code(), Some(2), "{args:?}");
        assert!(
            String::from_utf8_lossy(&o.stderr).contains(want),
            "{args:?}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
    }
}

/// A cgroup made for one test, removed (once empty) on drop.
struct TestCgroup(PathBuf);

impl Drop for TestCgroup {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir(&self.0);
    }
}

/// In a cgroup namespace of its own with cgroup2 mounted there (as in a
/// Kubernetes pod), no mount shows the whole hierarchy: the daemon says at
/// start that it cannot learn the cgroups of processes older than itself,
/// and exec events still carry the whole path (the kernel walks it).
#[test]
fn in_a_cgroup_namespace_of_its_own_it_says_what_it_cannot_learn() {
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    let unified = mountinfo
        .lines()
        .find_map(|l| {
            let (left, right) = l.split_once(" - ")?;
            (right.split(' ').next() == Some("cgroup2")).then(|| left.split(' ').nth(4))?
        })
        .expect("a cgroup v2 mount");
    let cg = TestCgroup(PathBuf::from(format!(
        "{unified}/execwatch-test-cgns-{}",
        std::process::id()
    )));
    std::fs::create_dir(&cg.0).expect("make a cgroup");
    let script = format!(
        "echo $$ > {}/cgroup.procs && exec unshare --cgroup --mount sh -c \
         'umount -l {unified} && mount -t cgroup2 none {unified} && exec {} --format json'",
        cg.0.display(),
        common::BIN
    );
    let mut cmd = Command::new("sh");
    cmd.args(["-c", &script]);
    let d = Daemon::start_cmd(cmd);
    let m = marker("cgns");
    assert!(run_quiet(Command::new("/bin/true").arg(&m)).success());
    d.wait_for(1, WAIT, |v| has_arg(v, &m));
    let stopped = d.stop();
    assert!(
        stopped
            .stderr
            .contains("no cgroup v2 mount here shows the whole hierarchy"),
        "{}",
        stopped.stderr
    );
    // This test's own cgroup, as the host sees it.
    let own = std::fs::read_to_string("/proc/self/cgroup").unwrap();
    let own = own.lines().find_map(|l| l.strip_prefix("0::")).unwrap();
    let e = stopped.events.iter().find(|v| has_arg(v, &m)).unwrap();
    assert_eq!(e["execwatch"]["cgroup"]["path"], own, "{e}");
}

/// `f` on another thread; `None` if it is still waiting after 5 s.
fn within_5s<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> Option<T> {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(f());
    });
    rx.recv_timeout(Duration::from_secs(5)).ok()
}

/// A user may mount FUSE over their own runtime files (fusermount with
/// `allow_other`) and never answer: the walk refuses the mount before any
/// lookup or stat would wait on the server, and still crosses other mounts.
#[test]
fn a_users_fuse_mount_is_refused_without_asking_its_server() {
    use common::fuse::SilentFuse;
    use execwatch::containers::trust::{read_file, Owners, TrustError, TrustedDir};
    common::require_root();
    let uid = test_uid();
    let scratch = Scratch::new("fuse");
    let user = scratch.0.join("user");
    let mkdir = |p: &Path| {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(p)
            .unwrap();
        std::os::unix::fs::chown(p, Some(uid), Some(uid)).unwrap();
    };
    let state = |dir: &Path| {
        mkdir(dir);
        let f = dir.join("state.json");
        std::fs::write(&f, b"{}").unwrap();
        std::os::unix::fs::chown(&f, Some(uid), Some(uid)).unwrap();
    };
    let owners = Owners::RootOr(uid);
    // A tmpfs of the user's (as /run/user/<uid> is) is crossed.
    let tmpfs = user.join("tmpfs");
    mkdir(&tmpfs);
    nix::mount::mount(
        Some("tmpfs"),
        &tmpfs,
        Some("tmpfs"),
        nix::mount::MsFlags::empty(),
        Some(format!("mode=0700,uid={uid},gid={uid}").as_str()),
    )
    .unwrap();
    let _unmount = unmount_on_drop(tmpfs.clone());
    state(&tmpfs.join("runc/id"));
    assert_eq!(
        read_file(&tmpfs.join("runc/id"), "state.json", owners, 1 << 20).unwrap(),
        b"{}"
    );
    // A FUSE directory.
    let runc = user.join("runc");
    mkdir(&runc);
    let mut dir_fuse = SilentFuse::mount_on(&runc, 0o40000, uid);
    let at = runc.join("id");
    let Some(r) = within_5s(move || TrustedDir::open(&at, owners).map(|_| ())) else {
        dir_fuse.abort();
        panic!("the walk entered the FUSE directory and waited on its server");
    };
    match r {
        Err(TrustError::Untrusted { why, .. }) => assert!(why.contains("FUSE"), "{why}"),
        other => panic!("{other:?}"),
    }
    // A FUSE file mounted on the state file.
    let crun = user.join("crun/id");
    state(&crun);
    let mut file_fuse = SilentFuse::mount_on(&crun.join("state.json"), 0o100644, uid);
    let dir = crun.clone();
    let Some(r) = within_5s(move || read_file(&dir, "state.json", owners, 1 << 20)) else {
        file_fuse.abort();
        panic!("the read opened the FUSE file and waited on its server");
    };
    match r {
        Err(TrustError::Untrusted { why, .. }) => assert!(why.contains("FUSE"), "{why}"),
        other => panic!("{other:?}"),
    }
}

/// Unmounts its path (lazily) on drop.
fn unmount_on_drop(at: PathBuf) -> impl Drop {
    struct Unmount(PathBuf);
    impl Drop for Unmount {
        fn drop(&mut self) {
            let _ = nix::mount::umount2(&self.0, nix::mount::MntFlags::MNT_DETACH);
        }
    }
    Unmount(at)
}
