//! One binary on every supported kernel: boot Debian's 6.1 and 6.12 kernels
//! under qemu (TCG), tracefs not mounted, start execwatch from a minimal
//! initramfs, run marked execs (success, failure, execveat) and check the
//! JSON events on the serial console. About 10 s per kernel; ignored by a
//! plain `cargo test`, run by scripts/test with `--ignored`.

mod common;

use std::process::Command;

use serde_json::Value;

struct Boot {
    kernel: String,
    tracefs_at_boot: String,
    overlay: String,
    exit: String,
    events: Vec<Value>,
    diag: Vec<Value>,
}

fn boot(package_pattern: &str, ew_args: &str) -> Boot {
    common::require_root();
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/vm-boot");
    let out = Command::new(script)
        .arg(package_pattern)
        .arg(common::BIN)
        .env("EW_ARGS", ew_args)
        .output()
        .expect("run scripts/vm-boot (qemu-system-x86 and cpio come from scripts/install-deps)");
    let console = String::from_utf8_lossy(&out.stdout).replace('\r', "");
    assert!(
        out.status.success(),
        "vm-boot failed: {}\n{console}",
        String::from_utf8_lossy(&out.stderr)
    );
    let line_after = |tag: &str| {
        console
            .lines()
            // The firmware's escape codes may precede the first line.
            .find_map(|l| l.split_once(tag).map(|(_, rest)| rest))
            .unwrap_or_else(|| panic!("no {tag} on the console:\n{console}"))
            .trim()
            .to_string()
    };
    let section = |begin: &str, end: &str| -> Vec<Value> {
        let start = console
            .find(begin)
            .unwrap_or_else(|| panic!("no {begin}:\n{console}"))
            + begin.len();
        let stop = console[start..].find(end).unwrap() + start;
        console[start..stop]
            .lines()
            .filter(|l| !l.trim().is_empty())
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
            .collect()
    };
    Boot {
        kernel: line_after("EW-KERNEL "),
        tracefs_at_boot: line_after("EW-TRACEFS "),
        overlay: line_after("EW-OVERLAY "),
        exit: line_after("EW-EXIT "),
        events: section("EW-EVENTS-BEGIN", "EW-EVENTS-END"),
        diag: section("EW-DIAG-BEGIN", "EW-DIAG-END"),
    }
}

fn check(b: &Boot, want_kernel: &str, want_hook: &str) {
    assert!(b.kernel.starts_with(want_kernel), "booted {}", b.kernel);
    assert_eq!(b.tracefs_at_boot, "absent", "the VM starts without tracefs");
    assert_eq!(
        b.exit, "0",
        "execwatch exited 0 after SIGTERM; diag: {:?}",
        b.diag
    );
    let attached = b
        .diag
        .iter()
        .find(|d| d["message"] == "execwatch attached")
        .expect("attached");
    assert_eq!(attached["failed_execs"], want_hook);
    let has = |marker: &str, name: &str| {
        b.events
            .iter()
            .find(|e| {
                e["process"]["args"]
                    .as_array()
                    .is_some_and(|a| a.iter().any(|a| a == marker))
                    && e["process"]["name"] == name
            })
            .unwrap_or_else(|| {
                panic!(
                    "no event for {marker} ({name}) on {}: {:?}",
                    b.kernel, b.events
                )
            })
            .clone()
    };
    let ok = has("ew-marker-success", "true");
    assert_eq!(ok["event"]["outcome"], "success");
    assert_eq!(ok["process"]["executable"], "/bin/busybox");
    // Process context, read through the CO-RE shims on every kernel.
    assert_eq!(ok["process"]["working_directory"], "/", "{ok}");
    assert_eq!(ok["process"]["interactive"], false, "{ok}");
    // Lineage from the process table: /init (busybox sh) started it.
    assert_eq!(
        ok["process"]["parent"]["executable"], "/bin/busybox",
        "{ok}"
    );
    assert!(ok["process"]["entity_id"].is_string(), "{ok}");
    assert!(
        ok["process"]["start"]
            .as_str()
            .is_some_and(|s| s.starts_with("20")),
        "{ok}"
    );
    let exe = &ok["execwatch"]["executable"];
    assert_eq!(exe["mode"], "100755", "{ok}");
    assert!(exe["inode"].as_u64().is_some_and(|i| i > 0), "{ok}");
    assert!(
        exe["size"].as_u64().is_some_and(|n| n > 100_000),
        "busybox: {ok}"
    );
    // The initramfs files carry the time cpio gave them: not the epoch.
    assert!(exe["mtime"].as_str().is_some_and(|t| t > "2000"), "{ok}");
    assert!(exe["ctime"].as_str().is_some_and(|t| t > "2000"), "{ok}");
    let fail = has("ew-marker-fail", "init");
    assert_eq!(fail["error"]["code"], "ENOENT");
    assert_eq!(fail["process"]["working_directory"], "/", "{fail}");
    assert_eq!(fail["execwatch"]["filename"], "/nonexistent/ew-marker-fail");
    let at = has("ew-marker-execveat", "true");
    assert!(at["execwatch"]["filename"]
        .as_str()
        .unwrap()
        .starts_with("/dev/fd/"));
    assert_eq!(at["process"]["executable"], "/bin/busybox");
    // A stacked file: the kernel finds the file it maps (not FUSE), and
    // the overlay's upper layer through its module's types.
    assert_eq!(b.overlay, "mounted", "the VM mounts an overlayfs");
    let lower = has("ew-marker-lower", "true");
    assert_eq!(lower["process"]["executable"], "/ovl/merged/true");
    let exe = &lower["execwatch"]["executable"];
    assert!(exe.get("fuse").is_none(), "{lower}");
    assert!(exe.get("upper_layer").is_none(), "{lower}");
    let upper = has("ew-marker-upper", "false");
    assert_eq!(upper["process"]["executable"], "/ovl/merged/dropped");
    let exe = &upper["execwatch"]["executable"];
    assert_eq!(exe["upper_layer"], true, "{upper}");
    assert!(exe.get("fuse").is_none(), "{upper}");
    let summary = b
        .diag
        .iter()
        .find(|d| d["message"] == "summary")
        .expect("summary");
    assert_eq!(summary["lost_total"], 0);
    assert_eq!(summary["seen"], summary["events"]);
    // The exit hook runs through its dispatcher too (a tail call from a
    // tp_btf program).
    assert!(
        b.events.iter().any(|e| e["event"]["action"] == "exit"
            && e["process"]["entity_id"] == ok["process"]["entity_id"]),
        "no exit event for the exec on {} ({ok}); exits: {:?}",
        b.kernel,
        b.events
            .iter()
            .filter(|e| e["event"]["action"] == "exit")
            .collect::<Vec<_>>()
    );
}

#[test]
#[ignore = "boots kernels under qemu (slow): scripts/test runs it with --ignored"]
fn debian_6_1_kernel() {
    let b = boot("linux-image-6.1.0-*-cloud-amd64-unsigned", "");
    check(&b, "6.1.", "tracepoints");
    assert!(b.diag.iter().any(|d| d["message"]
        .as_str()
        .is_some_and(|m| m.starts_with("mounted tracefs"))));
    assert!(b.diag.iter().any(|d| d["message"]
        .as_str()
        .is_some_and(|m| m.starts_with("unmounted tracefs"))));
}

#[test]
#[ignore = "boots kernels under qemu (slow): scripts/test runs it with --ignored"]
fn debian_6_1_kernel_without_tracefs_hooks() {
    let b = boot(
        "linux-image-6.1.0-*-cloud-amd64-unsigned",
        "--failed-execs=sys-exit",
    );
    check(&b, "6.1.", "sys-exit");
}

#[test]
#[ignore = "boots kernels under qemu (slow): scripts/test runs it with --ignored"]
fn debian_6_12_kernel() {
    let b = boot("linux-image-6.12.*-cloud-amd64-unsigned", "");
    check(&b, "6.12.", "tracepoints");
}
