//! Owns the BPF skeleton: configures it before load, loads, attaches, and
//! reads the kernel-side counters.

use std::mem::MaybeUninit;

use libbpf_rs::skel::{OpenSkel, SkelBuilder};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};

use libbpf_rs::{ErrorKind, MapCore, MapFlags, MapHandle, MapType, OpenObject};

#[allow(clippy::all, clippy::pedantic, unused_imports)]
pub(crate) mod skel {
    include!(concat!(env!("OUT_DIR"), "/execve.skel.rs"));
}

pub use skel::types;
use skel::{ExecveSkel, ExecveSkelBuilder};

use crate::output::clock::boot_ns_now;

/// Bytes of the fixed record header (`struct event`).
pub const HEADER_LEN: usize = std::mem::size_of::<types::event>();
/// Hard upper bound of `max_args_bytes`.
pub const ARGS_MAX_LIMIT: u32 = types::event_limits::ARGS_MAX_LIMIT.0;
/// Default of `max_args_bytes`.
pub const ARGS_DEFAULT_LIMIT: u32 = types::event_limits::ARGS_DEFAULT_LIMIT.0;
/// Largest record the BPF side can write.
pub const RECORD_MAX_LEN: usize = HEADER_LEN + types::event_limits::EVENT_DATA_MAX.0 as usize;

/// What the loader sets in the program before load.
#[derive(Debug, Clone)]
pub struct Config {
    /// Bytes of argv captured per exec (at most [`ARGS_MAX_LIMIT`]).
    pub max_args_bytes: u32,
    /// Ring buffer bytes, shared by the CPUs' ring buffers: a power of two.
    pub ring_buffer_bytes: u32,
    /// The BPF side wakes the reader once this many bytes are waiting, in
    /// all of the CPUs' ring buffers (each gets its share).
    pub wakeup_bytes: u64,
    /// How failed execs are captured.
    pub failed_execs: FailedExecs,
    /// In-kernel filters.
    pub filters: Filters,
    /// Copy the environment into successful exec records (`--env`).
    pub capture_env: bool,
    /// Exit events (`--no-exits` turns the hook off in the kernel).
    pub exits: bool,
}

/// Filters applied in the kernel before a record is made. Empty lists mean
/// no filter.
#[derive(Debug, Clone, Default)]
pub struct Filters {
    /// Only these real uids.
    pub uids: Vec<u32>,
    /// Only these task names (comm after exec; the caller's for a failed exec).
    pub comms: Vec<String>,
    /// Not these task names.
    pub exclude_comms: Vec<String>,
    /// Only processes in this cgroup v2 directory or below.
    pub cgroup: Option<std::path::PathBuf>,
    /// Only processes outside the initial pid namespace.
    pub containers_only: bool,
    /// Only failed execs (no success hooks at all).
    pub failed_only: bool,
}

/// At most this many entries per filter list (the BPF maps' size).
pub const FILTER_LIST_MAX: usize = types::event_limits::FILTER_LIST_MAX.0 as usize;
/// Longest task name the kernel keeps (without its NUL).
pub const COMM_MAX: usize = types::event_limits::EVENT_COMM_LEN.0 as usize - 1;
/// Slots of the kernel's table of cgroups the daemon knows (also the
/// daemon's own cache's bound, crate::cgroups).
pub const KNOWN_CGROUPS_MAX: usize = types::event_limits::KNOWN_CGROUPS_MAX.0 as usize;
const KNOWN_CGROUPS_BITS: u32 = types::event_limits::KNOWN_CGROUPS_BITS.0;

/// The two `known_cgroups` slots a cgroup id may sit in, as the BPF side
/// computes them (`known_slot` in execve.bpf.c).
pub fn known_slots(id: u64) -> [u32; 2] {
    let folded = (id ^ (id >> 32)) as u32;
    let slot = |m: u32| folded.wrapping_mul(m) >> (32 - KNOWN_CGROUPS_BITS);
    [
        slot(types::event_limits::KNOWN_CGROUPS_HASH_A.0),
        slot(types::event_limits::KNOWN_CGROUPS_HASH_B.0),
    ]
}
/// Longest cgroup path a record carries.
pub const CGROUP_PATH_MAX_LEN: usize = types::event_limits::CGROUP_PATH_MAX_LEN.0 as usize;
/// Smallest and largest ring buffer (a power of two in between).
pub const RING_BUFFER_MIN: u32 = 64 << 10;
pub const RING_BUFFER_MAX: u32 = 1 << 30;
/// The default ring buffer, raised so that each CPU's ring holds a record.
pub const RING_BUFFER_DEFAULT: u32 = 8 << 20;

/// Each CPU's ring buffer: the largest power of two in an even share of
/// `total` (the kernel wants a power of two of at least a page).
pub fn ring_per_cpu(total: u32, cpus: u32) -> u32 {
    let share = (total / cpus.max(1)).max(1);
    1 << share.ilog2()
}

/// The smallest ring a CPU may get: a power of two that holds one record of
/// `record` bytes, and at least [`RING_BUFFER_MIN`] (a page everywhere).
pub fn ring_per_cpu_min(record: usize) -> u32 {
    u32::try_from(record)
        .ok()
        .and_then(u32::checked_next_power_of_two)
        .unwrap_or(RING_BUFFER_MAX)
        .max(RING_BUFFER_MIN)
}

/// The default ring buffer size for `cpus` possible CPUs and records of at
/// most `record` bytes: 8 MiB, or more where each CPU's share would not
/// hold one record.
pub fn default_ring_buffer_bytes(cpus: u32, record: usize) -> u32 {
    let per_cpu = u64::from(ring_per_cpu_min(record)) * u64::from(cpus.max(1));
    let per_cpu = u32::try_from(per_cpu.next_power_of_two()).unwrap_or(RING_BUFFER_MAX);
    RING_BUFFER_DEFAULT.max(per_cpu).min(RING_BUFFER_MAX)
}

/// The number of possible CPUs: one ring buffer each.
pub fn possible_cpus() -> Result<u32, LoadError> {
    let n = libbpf_rs::num_possible_cpus()
        .map_err(|e| LoadError::from_libbpf("counting possible CPUs", e))?;
    Ok(u32::try_from(n).unwrap_or(u32::MAX))
}

/// The largest record the BPF side can write with this argv limit, with or
/// without the environment.
pub fn largest_record(max_args_bytes: u32, capture_env: bool) -> usize {
    use types::event_limits as L;
    let fixed = L::FILENAME_MAX_LEN.0 + 3 * L::EXE_PATH_MAX_LEN.0 + L::CGROUP_PATH_MAX_LEN.0;
    let env = if capture_env { L::ENV_MAX_LEN.0 } else { 0 };
    // The ring buffer adds an 8-byte header and rounds each record up to 8.
    (HEADER_LEN + (fixed + max_args_bytes.min(ARGS_MAX_LIMIT) + env) as usize + 8)
        .next_multiple_of(8)
}

/// A configuration the loader refuses, before any BPF work.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    #[error("--max-args-bytes must be between 1 and {ARGS_MAX_LIMIT} bytes, not {0}")]
    ArgsBytes(u32),
    #[error("--ring-buffer-size must be a power of two between 64KiB and 1GiB, not {0} bytes")]
    RingSize(u32),
    #[error(
        "--ring-buffer-size {ring} bytes, shared by {cpus} CPUs, gives each CPU {per_cpu} bytes: \
         too little for one record of {record} bytes (--max-args-bytes {args}{env}): raise \
         --ring-buffer-size to at least {need} bytes, or lower --max-args-bytes"
    )]
    RingTooSmall {
        ring: u32,
        cpus: u32,
        per_cpu: u32,
        record: usize,
        args: u32,
        env: &'static str,
        need: u32,
    },
    #[error("--failed-only with --failed-execs off records nothing")]
    NothingToRecord,
    #[error("more than {FILTER_LIST_MAX} values for one filter")]
    TooManyFilterValues,
}

impl Config {
    /// This configuration with its ring buffer sized: `requested` as given
    /// (checked by [`Config::validate`]), or else the default for `cpus`
    /// possible CPUs and this configuration's largest record. The reader is
    /// woken at a quarter full.
    pub fn with_ring_size(self, requested: Option<u32>, cpus: u32) -> Config {
        let ring_buffer_bytes = requested.unwrap_or_else(|| {
            default_ring_buffer_bytes(cpus, largest_record(self.max_args_bytes, self.capture_env))
        });
        Config {
            ring_buffer_bytes,
            wakeup_bytes: u64::from(ring_buffer_bytes / 4),
            ..self
        }
    }

    /// Check everything that needs no kernel, for a host of `cpus`
    /// possible CPUs. Pure: unit-tested below.
    pub fn validate(&self, cpus: u32) -> Result<(), ConfigError> {
        if self.max_args_bytes == 0 || self.max_args_bytes > ARGS_MAX_LIMIT {
            return Err(ConfigError::ArgsBytes(self.max_args_bytes));
        }
        let ring = self.ring_buffer_bytes;
        if !(RING_BUFFER_MIN..=RING_BUFFER_MAX).contains(&ring) || !ring.is_power_of_two() {
            return Err(ConfigError::RingSize(ring));
        }
        let record = largest_record(self.max_args_bytes, self.capture_env);
        let per_cpu = ring_per_cpu(ring, cpus);
        if per_cpu < ring_per_cpu_min(record) {
            return Err(ConfigError::RingTooSmall {
                ring,
                cpus,
                per_cpu,
                record,
                args: self.max_args_bytes,
                env: if self.capture_env { " with --env" } else { "" },
                need: ring_per_cpu_min(record)
                    .saturating_mul(cpus.max(1))
                    .checked_next_power_of_two()
                    .unwrap_or(u32::MAX),
            });
        }
        let f = &self.filters;
        if f.failed_only && self.failed_execs == FailedExecs::Off {
            return Err(ConfigError::NothingToRecord);
        }
        if [f.uids.len(), f.comms.len(), f.exclude_comms.len()]
            .iter()
            .any(|&n| n > FILTER_LIST_MAX)
        {
            return Err(ConfigError::TooManyFilterValues);
        }
        Ok(())
    }
}

/// Hook for failed execs (successful ones always use sched_process_exec).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum FailedExecs {
    /// `tracepoints` when tracefs is mounted or can be mounted (kernel 5.15+),
    /// else `sys-exit`.
    Auto,
    /// syscalls:sys_exit_execve/execveat: runs for exec syscalls only.
    Tracepoints,
    /// tp_btf/sys_exit: needs no tracefs, runs (briefly) for every syscall.
    SysExit,
    /// Do not record failed execs.
    Off,
}

impl FailedExecs {
    pub fn name(self) -> &'static str {
        match self {
            FailedExecs::Auto => "auto",
            FailedExecs::Tracepoints => "tracepoints",
            FailedExecs::SysExit => "sys-exit",
            FailedExecs::Off => "off",
        }
    }
}

impl Default for Config {
    fn default() -> Self {
        let ring_buffer_bytes = RING_BUFFER_DEFAULT;
        Config {
            max_args_bytes: ARGS_DEFAULT_LIMIT,
            ring_buffer_bytes,
            wakeup_bytes: u64::from(ring_buffer_bytes / 4),
            failed_execs: FailedExecs::Auto,
            filters: Filters::default(),
            capture_env: false,
            exits: true,
        }
    }
}

/// Why the program could not be loaded or attached.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error(
        "{what}: the kernel refused (EPERM/EACCES): the verifier rejected the program, or a \
         security policy (lockdown, an LSM, missing CAP_BPF/CAP_PERFMON) forbids it; \
         run with --verbose to see libbpf's log"
    )]
    Refused {
        what: &'static str,
        #[source]
        source: libbpf_rs::Error,
    },
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("--cgroup {path}: {source}")]
    CgroupFilter {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("--failed-execs tracepoints: {0}")]
    Tracefs(#[from] crate::tracefs::TracefsError),
    #[error("--failed-execs tracepoints needs Linux 5.15 or newer (bpf_task_pt_regs)")]
    TracepointsNeedNewerKernel,
    #[error(transparent)]
    Handover(#[from] crate::handover::HandoverError),
    #[error("{what} failed (run with --verbose to see libbpf's log)")]
    Libbpf {
        what: &'static str,
        #[source]
        source: libbpf_rs::Error,
    },
}

impl LoadError {
    fn from_libbpf(what: &'static str, source: libbpf_rs::Error) -> Self {
        if source.kind() == ErrorKind::PermissionDenied {
            LoadError::Refused { what, source }
        } else {
            LoadError::Libbpf { what, source }
        }
    }
}

/// The loaded and attached BPF program.
pub struct BpfLoader<'obj> {
    skel: ExecveSkel<'obj>,
    /// The CPUs' ring buffers, by CPU (those in `events`).
    rings: Vec<OwnedFd>,
    failed_execs: FailedExecs,
    handover: crate::handover::Handover,
}

/// The comm as the kernel stores it: at most [`COMM_MAX`] bytes, NUL-padded.
pub fn comm_key(name: &str) -> [u8; COMM_MAX + 1] {
    let mut key = [0u8; COMM_MAX + 1];
    let b = name.as_bytes();
    let n = b.len().min(COMM_MAX);
    key[..n].copy_from_slice(&b[..n]);
    key
}

fn fill_filter_maps(
    skel: &ExecveSkel<'_>,
    f: &Filters,
    cgroup_dir: Option<&std::fs::File>,
) -> Result<(), libbpf_rs::Error> {
    let maps = &skel.maps;
    for uid in &f.uids {
        maps.uid_filter
            .update(&uid.to_ne_bytes(), &[1], MapFlags::ANY)?;
    }
    for c in &f.comms {
        maps.comm_filter.update(&comm_key(c), &[1], MapFlags::ANY)?;
    }
    for c in &f.exclude_comms {
        maps.comm_exclude
            .update(&comm_key(c), &[1], MapFlags::ANY)?;
    }
    if let Some(dir) = cgroup_dir {
        use std::os::fd::AsRawFd;
        let fd = u32::try_from(dir.as_raw_fd()).expect("fds are non-negative");
        maps.cgroup_filter
            .update(&0u32.to_ne_bytes(), &fd.to_ne_bytes(), MapFlags::ANY)?;
    }
    Ok(())
}

/// Kernel with bpf_task_pt_regs, which the tracepoint programs use.
pub const TASK_PT_REGS_KERNEL: (u32, u32) = (5, 15);

fn kernel_version() -> Option<(u32, u32)> {
    let uts = nix::sys::utsname::uname().ok()?;
    crate::preflight::parse_release(&uts.release().to_string_lossy())
}

/// Pick the failed-exec hook; for `Auto`, prefer the syscall tracepoints and
/// say why when falling back. With the tracepoints, their ids.
fn resolve_failed_execs(
    wanted: FailedExecs,
) -> Result<(FailedExecs, Option<crate::tracefs::ExitEventIds>), LoadError> {
    let new_enough = kernel_version().is_none_or(|v| v >= TASK_PT_REGS_KERNEL);
    match wanted {
        FailedExecs::Off | FailedExecs::SysExit => Ok((wanted, None)),
        FailedExecs::Tracepoints => {
            if !new_enough {
                return Err(LoadError::TracepointsNeedNewerKernel);
            }
            Ok((
                FailedExecs::Tracepoints,
                Some(crate::tracefs::syscall_exit_event_ids()?),
            ))
        }
        FailedExecs::Auto => {
            if !new_enough {
                tracing::info!("failed execs: using sys_exit (kernel older than 5.15)");
                return Ok((FailedExecs::SysExit, None));
            }
            match crate::tracefs::syscall_exit_event_ids() {
                Ok(ids) => Ok((FailedExecs::Tracepoints, Some(ids))),
                Err(e) => {
                    tracing::info!(reason = %e, "failed execs: using sys_exit, the syscall tracepoints are unavailable");
                    Ok((FailedExecs::SysExit, None))
                }
            }
        }
    }
}

/// Attach `prog` to tracepoint `id` through a perf event of our own: libbpf
/// would look the id up in /sys/kernel/tracing, which may not be mounted.
pub(crate) fn attach_tracepoint(
    prog: &libbpf_rs::ProgramMut<'_>,
    id: u64,
) -> Result<libbpf_rs::Link, libbpf_rs::Error> {
    use std::os::fd::IntoRawFd;
    let fd = crate::tracefs::open_tracepoint_event(id).map_err(libbpf_rs::Error::from)?;
    // The link owns the perf event from here on and closes it on detach.
    let raw = fd.into_raw_fd();
    prog.attach_perf_event(raw).inspect_err(|_| {
        // SAFETY: the attach failed, so `raw` is still ours alone to close.
        drop(unsafe { <std::os::fd::OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(raw) });
    })
}

impl<'obj> BpfLoader<'obj> {
    /// Open, configure, load and attach. `object` backs the skeleton.
    pub fn load(
        config: &Config,
        object: &'obj mut MaybeUninit<OpenObject>,
    ) -> Result<Self, LoadError> {
        Self::load_keeping(config, object, crate::handover::Keep::Nothing)
    }

    /// [`Self::load`], taking over what a previous daemon kept in `keep`
    /// and keeping this daemon's objects there (crate::handover).
    pub fn load_keeping(
        config: &Config,
        object: &'obj mut MaybeUninit<OpenObject>,
        keep: crate::handover::Keep,
    ) -> Result<Self, LoadError> {
        let cpus = possible_cpus()?;
        config.validate(cpus)?;
        raise_fd_limit(cpus);
        let ring_bytes = ring_per_cpu(config.ring_buffer_bytes, cpus);
        let mut open = ExecveSkelBuilder::default()
            .open(object)
            .map_err(|e| LoadError::from_libbpf("opening the BPF object", e))?;

        let rodata = open
            .maps
            .rodata_data
            .as_deref_mut()
            .expect("the BPF object has const volatile globals, so a rodata map");
        rodata.max_args_bytes = config.max_args_bytes;
        rodata.wakeup_bytes = (config.wakeup_bytes / u64::from(cpus)).max(1);
        rodata.capture_env = u32::from(config.capture_env);
        // Processes already running get exit events even if they never exec.
        rodata.started_ns = boot_ns_now();
        let f = &config.filters;
        rodata.filter_uids = u32::from(!f.uids.is_empty());
        rodata.filter_comms = u32::from(!f.comms.is_empty());
        rodata.exclude_comms = u32::from(!f.exclude_comms.is_empty());
        rodata.filter_cgroup = u32::from(f.cgroup.is_some());
        rodata.containers_only = u32::from(f.containers_only);
        // Opened before load so that a bad path fails before any BPF work.
        let cgroup_dir = match &f.cgroup {
            Some(p) => Some(
                std::fs::File::open(p).map_err(|source| LoadError::CgroupFilter {
                    path: p.display().to_string(),
                    source,
                })?,
            ),
            None => None,
        };

        open.maps
            .scratch
            .set_max_entries(cpus)
            .map_err(|e| LoadError::from_libbpf("sizing the scratch map", e))?;
        open.maps
            .progress
            .set_max_entries(crate::progress::slots(cpus))
            .map_err(|e| LoadError::from_libbpf("sizing the progress map", e))?;
        // CPU 0's ring is also the map's template; the others are made
        // only if the kept ones (if any) are not continued.
        let template = make_ring(ring_bytes)
            .map_err(|e| LoadError::from_libbpf("making the ring buffers", e))?;
        open.maps
            .events
            .set_max_entries(cpus)
            .and_then(|()| open.maps.events.set_inner_map_fd(template.as_fd()))
            .map_err(|e| LoadError::from_libbpf("sizing the ring buffers", e))?;

        if f.failed_only {
            open.progs.exec_success.set_autoload(false);
            open.progs.save_caller.set_autoload(false);
        }
        if f.failed_only || !config.exits {
            open.progs.process_exit.set_autoload(false);
        }
        let (failed_execs, exit_event_ids) = resolve_failed_execs(config.failed_execs)?;
        if failed_execs != FailedExecs::SysExit {
            open.progs.exec_failed_sys_exit.set_autoload(false);
        }
        if failed_execs != FailedExecs::Tracepoints {
            open.progs.exec_failed_execve.set_autoload(false);
            open.progs.exec_failed_execveat.set_autoload(false);
        }

        let mut plan = crate::handover::prepare(&mut open, keep, ring_bytes)?;
        let skel = open
            .load()
            .map_err(|e| LoadError::from_libbpf("loading the BPF program", e))?;
        let rings = match plan.take_continued_rings() {
            // The kept rings, with what the previous daemon left in them.
            Some(rings) => rings,
            None => {
                let mut rings = vec![template];
                for _ in 1..cpus {
                    rings.push(
                        make_ring(ring_bytes)
                            .map_err(|e| LoadError::from_libbpf("making the ring buffers", e))?,
                    );
                }
                fill_rings(&skel.maps.events, &rings)
                    .map_err(|e| LoadError::from_libbpf("filling the ring buffer map", e))?;
                rings
            }
        };
        fill_filter_maps(&skel, f, cgroup_dir.as_ref())
            .map_err(|e| LoadError::from_libbpf("filling the filter maps", e))?;
        let handover = plan
            .attach(&skel, &rings, exit_event_ids)
            .map_err(|e| match e {
                crate::handover::HandoverError::Libbpf { what, source } => {
                    LoadError::from_libbpf(what, source)
                }
                e => e.into(),
            })?;
        Ok(BpfLoader {
            skel,
            rings,
            failed_execs,
            handover,
        })
    }

    /// The failed-exec hook in use (never `Auto`).
    pub fn failed_execs(&self) -> FailedExecs {
        self.failed_execs
    }

    /// Tell the BPF side the daemon knows these cgroups: their records stop
    /// carrying the path. An id takes the first of its two slots that is
    /// free, else the first, from the id there, which then carries its path
    /// again (and is written back when it does, crate::cgroups).
    pub fn mark_cgroups_known(&self, ids: &[u64]) -> Result<(), libbpf_rs::Error> {
        for &id in ids.iter().filter(|&&id| id != 0) {
            let slots = known_slots(id);
            let (a, b) = (self.slot_holder(slots[0])?, self.slot_holder(slots[1])?);
            if a == id || b == id {
                continue;
            }
            let slot = if a != 0 && b == 0 { slots[1] } else { slots[0] };
            self.skel.maps.known_cgroups.update(
                &slot.to_ne_bytes(),
                &id.to_ne_bytes(),
                MapFlags::ANY,
            )?;
        }
        Ok(())
    }

    /// Whether the BPF side takes `id` as known (its records carry no path).
    pub fn cgroup_known(&self, id: u64) -> bool {
        id != 0
            && known_slots(id)
                .iter()
                .any(|&slot| self.slot_holder(slot).is_ok_and(|held| held == id))
    }

    /// The id in a `known_cgroups` slot (0: none).
    fn slot_holder(&self, slot: u32) -> Result<u64, libbpf_rs::Error> {
        let value = self
            .skel
            .maps
            .known_cgroups
            .lookup(&slot.to_ne_bytes(), MapFlags::ANY)?;
        Ok(value
            .and_then(|v| v.try_into().ok().map(u64::from_ne_bytes))
            .unwrap_or(0))
    }

    /// Forget every cgroup: records carry their path again. One batch
    /// update (5.6 and later), else slot by slot.
    pub fn forget_all_cgroups(&self) {
        let keys: Vec<u8> = (0..KNOWN_CGROUPS_MAX as u32)
            .flat_map(u32::to_ne_bytes)
            .collect();
        let zeros = vec![0u8; KNOWN_CGROUPS_MAX * 8];
        let batch = self.skel.maps.known_cgroups.update_batch(
            &keys,
            &zeros,
            KNOWN_CGROUPS_MAX as u32,
            MapFlags::ANY,
            MapFlags::ANY,
        );
        if batch.is_err() {
            for slot in 0..KNOWN_CGROUPS_MAX as u32 {
                let _ = self.clear_known_slot(slot);
            }
        }
    }

    fn clear_known_slot(&self, slot: u32) -> Result<(), libbpf_rs::Error> {
        self.skel
            .maps
            .known_cgroups
            .update(&slot.to_ne_bytes(), &0u64.to_ne_bytes(), MapFlags::ANY)
    }

    /// The CPUs' ring buffers the records arrive in, for their reader
    /// (once: the store or the pins hold their own references).
    pub fn take_rings(&mut self) -> Vec<OwnedFd> {
        std::mem::take(&mut self.rings)
    }

    /// Detach every program: no new records arrive after this. When the
    /// objects are kept for the next daemon, leave them attached instead,
    /// and have records carry their cgroup path again: the next daemon
    /// starts with no cgroup known.
    pub fn detach(&mut self) {
        if !self.handover.keeps() {
            self.handover.drop_links();
            return;
        }
        self.forget_all_cgroups();
        tracing::info!(
            "leaving the programs attached for the next execwatch: records wait in the ring buffer"
        );
    }

    /// What a previous daemon left and this one took over.
    pub fn handover(&self) -> &crate::handover::Handover {
        &self.handover
    }

    pub(crate) fn meta_map(&self) -> &libbpf_rs::Map<'obj> {
        &self.skel.maps.meta
    }

    /// The `progress` map (crate::progress), to map.
    pub fn progress_map(&self) -> std::os::fd::BorrowedFd<'_> {
        self.skel.maps.progress.as_fd()
    }

    /// The kernel's counters (the `Source::Kernel` entries of the counter
    /// table), summed over CPUs; the daemon's entries are left at zero.
    pub fn stats(&self) -> Result<crate::counters::Counts, libbpf_rs::Error> {
        use crate::counters::{Counts, Source, TABLE};
        let map = &self.skel.maps.stats;
        let mut counts = Counts::default();
        for def in TABLE {
            let Source::Kernel(idx) = def.source else {
                continue;
            };
            let key = idx.0.to_ne_bytes();
            let per_cpu = map.lookup_percpu(&key, MapFlags::ANY)?.unwrap_or_default();
            let sum = per_cpu
                .iter()
                .filter_map(|v| v.get(..8))
                .map(|b| u64::from_ne_bytes(b.try_into().expect("8 bytes")))
                .sum();
            counts.set(def.counter, sum);
        }
        Ok(counts)
    }
}

/// Descriptors a daemon may need for `cpus` rings: its own, and a previous
/// daemon's as many again while they are read; 256 for everything else.
fn fds_needed(cpus: u32) -> u64 {
    2 * u64::from(cpus) + 256
}

/// Raise the soft limit on open files towards the hard one when the rings
/// need more (the soft limit is often 1024; systemd's hard one 524288). A
/// limit still too low shows as an error when a ring is opened.
fn raise_fd_limit(cpus: u32) {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes one rlimit into `lim`, which is valid.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0 {
        return;
    }
    let need = fds_needed(cpus);
    if lim.rlim_cur >= need {
        return;
    }
    lim.rlim_cur = need.min(lim.rlim_max);
    // SAFETY: setrlimit reads one valid rlimit; the soft limit stays at or
    // below the hard one.
    if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &lim) } != 0 {
        tracing::debug!("could not raise the open files limit");
    }
}

/// One CPU's ring buffer, of `bytes` (a power of two, at least a page).
fn make_ring(bytes: u32) -> Result<OwnedFd, libbpf_rs::Error> {
    let opts = libbpf_rs::libbpf_sys::bpf_map_create_opts {
        sz: std::mem::size_of::<libbpf_rs::libbpf_sys::bpf_map_create_opts>()
            as libbpf_rs::libbpf_sys::size_t,
        ..Default::default()
    };
    let ring = MapHandle::create(MapType::RingBuf, Some("ring"), 0, 0, bytes, &opts)?;
    Ok(ring.as_fd().try_clone_to_owned()?)
}

/// Put CPU i's ring buffer at index i of the ring buffer map.
fn fill_rings(map: &dyn MapCore, rings: &[OwnedFd]) -> Result<(), libbpf_rs::Error> {
    for (i, ring) in rings.iter().enumerate() {
        let fd = ring.as_raw_fd() as u32;
        map.update(&(i as u32).to_ne_bytes(), &fd.to_ne_bytes(), MapFlags::ANY)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The program's names in an opened (not loaded) object, sorted.
    fn program_names(obj: &libbpf_rs::OpenObject) -> Vec<String> {
        let mut names: Vec<String> = obj
            .progs()
            .map(|p| p.name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }

    #[test]
    fn the_program_builds_for_every_architecture_with_the_same_programs() {
        use libbpf_rs::skel::{OpenSkel, SkelBuilder};
        let mut storage = std::mem::MaybeUninit::uninit();
        let native = ExecveSkelBuilder::default()
            .open(&mut storage)
            .expect("opening the native object");
        let want = program_names(native.open_object());
        assert!(want.iter().any(|n| n == "exec_failed_sys_exit"), "{want:?}");
        let native_arch = std::env::consts::ARCH;
        let others: Vec<&str> = ["x86_64", "aarch64"]
            .into_iter()
            .filter(|a| *a != native_arch)
            .collect();
        assert!(!others.is_empty());
        for arch in others {
            // build.rs compiles it from vmlinux/<arch>/vmlinux.h, vendored.
            let path = std::path::Path::new(env!("OUT_DIR")).join(format!("execve.{arch}.bpf.o"));
            let obj = libbpf_rs::ObjectBuilder::default()
                .open_file(&path)
                .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            assert_eq!(program_names(&obj), want, "{arch}");
            // The sys_exit fallback uses that architecture's syscall numbers
            // and skips its 32-bit tasks (arm64: TIF_32BIT, bit 22 of the
            // thread flags).
            let (execve, execveat, compat) = match arch {
                "aarch64" => (221, 281, 1 << 22),
                _ => (59, 322, 2),
            };
            let prog = obj
                .progs()
                .find(|p| p.name() == "exec_failed_sys_exit")
                .expect("the sys_exit fallback");
            let imms: Vec<i32> = prog.insns().iter().map(|i| i.imm).collect();
            for want in [execve, execveat, compat] {
                assert!(
                    imms.contains(&want),
                    "{arch}: no {want} in the sys_exit fallback"
                );
            }
        }
    }

    #[test]
    fn defaults_are_valid() {
        assert_eq!(Config::default().validate(1), Ok(()));
        assert_eq!(Config::default().validate(64), Ok(()));
    }

    #[test]
    fn each_cpu_gets_a_power_of_two_within_its_share() {
        assert_eq!(ring_per_cpu(8 << 20, 1), 8 << 20);
        assert_eq!(ring_per_cpu(8 << 20, 2), 4 << 20);
        assert_eq!(ring_per_cpu(8 << 20, 3), 2 << 20);
        assert_eq!(ring_per_cpu(8 << 20, 64), 128 << 10);
        assert_eq!(ring_per_cpu(16 << 20, 256), 64 << 10);
        // The default grows with the CPUs, so that each CPU's part holds
        // the configuration's largest record.
        let record = largest_record(ARGS_DEFAULT_LIMIT, false);
        assert_eq!(default_ring_buffer_bytes(2, record), 8 << 20);
        assert_eq!(default_ring_buffer_bytes(256, record), 16 << 20);
        assert_eq!(default_ring_buffer_bytes(6, record), 8 << 20);
        let with_env = largest_record(ARGS_DEFAULT_LIMIT, true);
        assert_eq!(default_ring_buffer_bytes(256, with_env), 32 << 20);
        let configs = [
            (ARGS_DEFAULT_LIMIT, false),
            (ARGS_DEFAULT_LIMIT, true),
            (ARGS_MAX_LIMIT, true),
        ];
        for cpus in [1, 2, 3, 6, 33, 64, 65, 100, 256, 1000] {
            for (args, env) in configs {
                let c = Config {
                    max_args_bytes: args,
                    capture_env: env,
                    ..Config::default()
                }
                .with_ring_size(None, cpus);
                assert_eq!(
                    c.ring_buffer_bytes,
                    default_ring_buffer_bytes(cpus, largest_record(args, env))
                );
                assert_eq!(c.wakeup_bytes, u64::from(c.ring_buffer_bytes / 4));
                assert_eq!(c.validate(cpus), Ok(()), "{cpus} CPUs, {args}, {env}");
            }
        }
        // A size asked for is kept as it is, for validate to judge.
        let asked = Config::default().with_ring_size(Some(64 << 10), 256);
        assert_eq!(asked.ring_buffer_bytes, 64 << 10);
        assert_eq!(asked.wakeup_bytes, 16 << 10);
        assert!(asked.validate(256).is_err());
        // Never less than 64 KiB a CPU (a page, on every kernel).
        let c = Config {
            ring_buffer_bytes: 64 << 10,
            max_args_bytes: 1024,
            ..Config::default()
        };
        assert!(matches!(
            c.validate(2),
            Err(ConfigError::RingTooSmall { per_cpu: 32768, .. })
        ));
    }

    #[test]
    fn ring_must_hold_the_largest_record() {
        let mut c = Config {
            max_args_bytes: ARGS_MAX_LIMIT,
            ring_buffer_bytes: RING_BUFFER_MIN,
            ..Config::default()
        };
        let err = c.validate(1).unwrap_err();
        assert!(
            matches!(err, ConfigError::RingTooSmall { need: 262144, .. }),
            "{err}"
        );
        assert!(err
            .to_string()
            .contains("raise --ring-buffer-size to at least 262144"));
        c.ring_buffer_bytes = 256 << 10;
        assert_eq!(c.validate(1), Ok(()));
        // Shared by two CPUs: each needs the room.
        let err = c.validate(2).unwrap_err();
        assert!(
            err.to_string().contains(
                "shared by 2 CPUs, gives each CPU 131072 bytes: too little for one record"
            ) && err.to_string().contains("at least 524288"),
            "{err}"
        );
        c.ring_buffer_bytes = 512 << 10;
        assert_eq!(c.validate(2), Ok(()));
        c.ring_buffer_bytes = 128 << 10;
        c.max_args_bytes = 100 << 10;
        assert_eq!(c.validate(1), Ok(()));
        c.capture_env = true;
        assert!(c.validate(1).is_err(), "the environment needs room too");
    }

    #[test]
    fn bad_sizes_and_combinations_are_refused() {
        let bad = |f: fn(&mut Config)| {
            let mut c = Config::default();
            f(&mut c);
            c.validate(2).unwrap_err()
        };
        assert_eq!(bad(|c| c.max_args_bytes = 0), ConfigError::ArgsBytes(0));
        assert!(matches!(
            bad(|c| c.ring_buffer_bytes = 100_000),
            ConfigError::RingSize(_)
        ));
        assert!(matches!(
            bad(|c| c.ring_buffer_bytes = 32 << 10),
            ConfigError::RingSize(_)
        ));
        assert_eq!(
            bad(|c| {
                c.filters.failed_only = true;
                c.failed_execs = FailedExecs::Off;
            }),
            ConfigError::NothingToRecord
        );
        assert_eq!(
            bad(|c| c.filters.uids = (0..=FILTER_LIST_MAX as u32).collect()),
            ConfigError::TooManyFilterValues
        );
    }

    #[test]
    fn comm_key_keeps_what_the_kernel_keeps() {
        let k = comm_key("a-very-long-program-name");
        assert_eq!(&k[..COMM_MAX], b"a-very-long-pro");
        assert_eq!(k[COMM_MAX], 0);
    }
}
