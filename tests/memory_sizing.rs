//! The DaemonSet's memory request and limit cover what execwatch really
//! takes: the BPF maps (charged to the pod's memory cgroup), measured from
//! the loaded maps' memlock, with the per-CPU scratch scaled to the number
//! of possible CPUs the manifest states, plus the daemon's own budget.

mod common;
mod spawned;

use common::Daemon;
use spawned::settled_anon_kib;

const MIB: f64 = 1024.0 * 1024.0;
/// The daemon's own memory: binary pages, heap, the output queue (1 MiB
/// budget plus chunks), the held events (8 MiB) and the metrics server (64
/// connections).
const DAEMON_MIB: f64 = 32.0;
/// Possible CPUs the manifest's request and limit are sized for.
const REQUEST_CPUS: f64 = 64.0;
const LIMIT_CPUS: f64 = 256.0;

/// BPF_MAP_TYPE_RINGBUF (uapi/linux/bpf.h).
const MAP_TYPE_RINGBUF: u64 = 27;

/// (memlock, value_size, map_type) of every BPF map the process holds.
fn maps_of(pid: u32) -> Vec<(u64, u64, u64)> {
    let mut maps = Vec::new();
    let mut ids = std::collections::HashSet::new();
    for fd in std::fs::read_dir(format!("/proc/{pid}/fdinfo")).unwrap() {
        let Ok(info) = std::fs::read_to_string(fd.unwrap().path()) else {
            continue;
        };
        let field = |name: &str| {
            info.lines()
                .find_map(|l| l.strip_prefix(name))
                .and_then(|v| v.trim().parse::<u64>().ok())
        };
        // A map open under two descriptors counts once.
        if field("map_type:").is_some() && ids.insert(field("map_id:").unwrap()) {
            maps.push((
                field("memlock:").unwrap(),
                field("value_size:").unwrap(),
                field("map_type:").unwrap(),
            ));
        }
    }
    maps
}

fn possible_cpus() -> f64 {
    // "0-1", "0-255", "0,2-3"
    let s = std::fs::read_to_string("/sys/devices/system/cpu/possible").unwrap();
    s.trim()
        .split(',')
        .map(|r| match r.split_once('-') {
            Some((a, b)) => b.parse::<f64>().unwrap() - a.parse::<f64>().unwrap() + 1.0,
            None => 1.0,
        })
        .sum()
}

fn mib_of(manifest: &str, key: &str) -> f64 {
    let v = manifest
        .split(key)
        .nth(1)
        .and_then(|r| r.split("memory: ").nth(1))
        .and_then(|r| r.split_whitespace().next())
        .unwrap_or_else(|| panic!("no {key} memory in the manifest"));
    v.strip_suffix("Mi")
        .unwrap_or_else(|| panic!("{v}: give memory in Mi"))
        .parse()
        .unwrap()
}

#[test]
fn daemonset_memory_covers_the_bpf_maps_and_the_daemon() {
    let d = Daemon::start(&[]);
    let anon_kib = settled_anon_kib(d.pid()) as f64;
    let maps = maps_of(d.pid());
    d.stop();

    // The scratch map is the one whose value is a whole record (and after
    // it the path walkers' running offset and the CPU's last new-cgroup
    // wakeup, 16 bytes with padding).
    let record = (std::mem::size_of::<execwatch::bpf_loader::types::event>()
        + execwatch::bpf_loader::types::event_limits::EVENT_DATA_MAX.0 as usize)
        as u64;
    let (scratch, _, _) = *maps
        .iter()
        .find(|(_, v, _)| (record..=record + 16).contains(v))
        .unwrap_or_else(|| panic!("no scratch map of {record} bytes: {maps:?}"));
    let total: u64 = maps.iter().map(|(m, _, _)| m).sum();
    let per_cpu = scratch as f64 / possible_cpus();
    // The ring buffers: the default size for this host's CPUs, measured
    // with their bookkeeping; another host's default scales the same way.
    let rings: u64 = maps
        .iter()
        .filter(|(_, _, t)| *t == MAP_TYPE_RINGBUF)
        .map(|(m, _, _)| m)
        .sum();
    // What the rings take: each CPU's share of the default.
    let default_rings = |cpus: f64| {
        use execwatch::bpf_loader as l;
        let record = l::largest_record(l::ARGS_DEFAULT_LIMIT, false);
        let total = l::default_ring_buffer_bytes(cpus as u32, record);
        f64::from(l::ring_per_cpu(total, cpus as u32)) * cpus
    };
    let ring_overhead = rings as f64 / default_rings(possible_cpus());
    assert!(
        (1.0..1.1).contains(&ring_overhead),
        "ring buffers {rings} bytes for a default of {}",
        default_rings(possible_cpus())
    );
    let fixed = (total - scratch - rings) as f64;
    assert!(
        per_cpu >= record as f64,
        "scratch {scratch} for {} CPUs",
        possible_cpus()
    );
    let need = |cpus: f64| {
        (fixed + per_cpu * cpus + default_rings(cpus) * ring_overhead) / MIB + DAEMON_MIB
    };

    let manifest = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/deploy/kubernetes/execwatch.yaml"
    ))
    .unwrap();
    let (request, limit) = (mib_of(&manifest, "requests:"), mib_of(&manifest, "limits:"));
    eprintln!(
        "maps: {:.1} MiB fixed + ring buffers + {:.1} KiB per possible CPU; daemon anon now {:.1} MiB; \
         need {:.0} MiB at {REQUEST_CPUS} CPUs (request {request}), {:.0} MiB at {LIMIT_CPUS} (limit {limit})",
        fixed / MIB,
        per_cpu / 1024.0,
        anon_kib / 1024.0,
        need(REQUEST_CPUS),
        need(LIMIT_CPUS)
    );
    assert!(request >= need(REQUEST_CPUS), "request {request} Mi");
    assert!(limit >= need(LIMIT_CPUS), "limit {limit} Mi");
    // The manifest says what it is sized for.
    assert!(manifest.contains(&format!("Request: {REQUEST_CPUS} possible CPUs")));
    assert!(manifest.contains(&format!("limit: {LIMIT_CPUS} possible CPUs")));
    assert!(anon_kib / 1024.0 < DAEMON_MIB / 2.0, "anon {anon_kib} KiB");
}
