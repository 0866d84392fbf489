//! Owns the BPF skeleton: configures it before load, loads, attaches, and
//! reads the kernel-side counters.

use std::mem::MaybeUninit;

use libbpf_rs::skel::{OpenSkel, SkelBuilder};
use libbpf_rs::{ErrorKind, MapCore, MapFlags, OpenObject};

#[allow(clippy::all, clippy::pedantic, unused_imports)]
pub(crate) mod skel {
    include!(concat!(env!("OUT_DIR"), "/execve.skel.rs"));
}

pub use skel::types;
use skel::{ExecveSkel, ExecveSkelBuilder};

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
    /// Ring buffer size in bytes: a power of two, a multiple of the page size.
    pub ring_buffer_bytes: u32,
    /// The BPF side wakes the reader once this many bytes are waiting.
    pub wakeup_bytes: u64,
    /// How failed execs are captured.
    pub failed_execs: FailedExecs,
    /// In-kernel filters.
    pub filters: Filters,
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
pub const FILTER_LIST_MAX: usize = 64;

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
        let ring_buffer_bytes = 8 << 20;
        Config {
            max_args_bytes: ARGS_DEFAULT_LIMIT,
            ring_buffer_bytes,
            wakeup_bytes: u64::from(ring_buffer_bytes / 4),
            failed_execs: FailedExecs::Auto,
            filters: Filters::default(),
        }
    }
}

/// Why the program could not be loaded or attached.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error(
        "the kernel refused the BPF program (EPERM/EACCES): the verifier rejected it, or a \
         security policy (lockdown, an LSM, missing CAP_BPF/CAP_PERFMON) forbids it; \
         run with --verbose to see libbpf's log"
    )]
    Refused,
    #[error("--failed-only with --failed-execs off records nothing")]
    NothingToRecord,
    #[error("more than {FILTER_LIST_MAX} values for one filter")]
    TooManyFilterValues,
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
            LoadError::Refused
        } else {
            LoadError::Libbpf { what, source }
        }
    }
}

/// Kernel-side counters, summed over CPUs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct KernelStats {
    /// Execs that reached a hook: submitted + lost.
    pub seen: u64,
    pub submitted: u64,
    pub lost_ringbuf_full: u64,
    pub lost_no_scratch: u64,
    pub args_read_failed: u64,
    pub filename_read_failed: u64,
    pub exe_read_failed: u64,
    pub caller_comm_missing: u64,
    pub wakeups_forced: u64,
    /// Execs the filters dropped before making a record.
    pub filtered: u64,
}

impl KernelStats {
    pub fn lost(&self) -> u64 {
        self.lost_ringbuf_full + self.lost_no_scratch
    }
}

/// The loaded and attached BPF program.
pub struct BpfLoader<'obj> {
    skel: ExecveSkel<'obj>,
    failed_execs: FailedExecs,
    handover: crate::handover::Handover,
}

/// The comm as the kernel stores it: at most 15 bytes, NUL-padded.
pub fn comm_key(name: &str) -> [u8; 16] {
    let mut key = [0u8; 16];
    let b = name.as_bytes();
    let n = b.len().min(15);
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
const TASK_PT_REGS_KERNEL: (u32, u32) = (5, 15);

fn kernel_version() -> Option<(u32, u32)> {
    let uts = nix::sys::utsname::uname().ok()?;
    crate::preflight::parse_release(&uts.release().to_string_lossy())
}

/// The syscall exit tracepoints are there (tracefs mounted now if needed,
/// and said so).
fn syscall_exit_events() -> Result<(), crate::tracefs::TracefsError> {
    if crate::tracefs::ensure_syscall_exit_events()? {
        tracing::info!(
            "mounted tracefs at /sys/kernel/tracing for the execve/execveat exit tracepoints"
        );
    }
    Ok(())
}

/// Pick the failed-exec hook; for `Auto`, prefer the syscall tracepoints and
/// say why when falling back.
fn resolve_failed_execs(wanted: FailedExecs) -> Result<FailedExecs, LoadError> {
    let new_enough = kernel_version().is_none_or(|v| v >= TASK_PT_REGS_KERNEL);
    match wanted {
        FailedExecs::Off | FailedExecs::SysExit => Ok(wanted),
        FailedExecs::Tracepoints => {
            if !new_enough {
                return Err(LoadError::TracepointsNeedNewerKernel);
            }
            syscall_exit_events()?;
            Ok(FailedExecs::Tracepoints)
        }
        FailedExecs::Auto => {
            if !new_enough {
                tracing::info!("failed execs: using sys_exit (kernel older than 5.15)");
                return Ok(FailedExecs::SysExit);
            }
            match syscall_exit_events() {
                Ok(()) => Ok(FailedExecs::Tracepoints),
                Err(e) => {
                    tracing::info!(reason = %e, "failed execs: using sys_exit, the syscall tracepoints are unavailable");
                    Ok(FailedExecs::SysExit)
                }
            }
        }
    }
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
        let mut open = ExecveSkelBuilder::default()
            .open(object)
            .map_err(|e| LoadError::from_libbpf("opening the BPF object", e))?;

        let rodata = open
            .maps
            .rodata_data
            .as_deref_mut()
            .expect("the BPF object has const volatile globals, so a rodata map");
        rodata.max_args_bytes = config.max_args_bytes.min(ARGS_MAX_LIMIT);
        rodata.wakeup_bytes = config.wakeup_bytes;
        let f = &config.filters;
        if [f.uids.len(), f.comms.len(), f.exclude_comms.len()]
            .iter()
            .any(|&n| n > FILTER_LIST_MAX)
        {
            return Err(LoadError::TooManyFilterValues);
        }
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

        let cpus = libbpf_rs::num_possible_cpus()
            .map_err(|e| LoadError::from_libbpf("counting possible CPUs", e))?;
        open.maps
            .scratch
            .set_max_entries(u32::try_from(cpus).unwrap_or(u32::MAX))
            .map_err(|e| LoadError::from_libbpf("sizing the scratch map", e))?;
        open.maps
            .events
            .set_max_entries(config.ring_buffer_bytes)
            .map_err(|e| LoadError::from_libbpf("sizing the ring buffer", e))?;

        if f.failed_only && config.failed_execs == FailedExecs::Off {
            return Err(LoadError::NothingToRecord);
        }
        if f.failed_only {
            open.progs.exec_success.set_autoload(false);
            open.progs.save_caller_comm.set_autoload(false);
        }
        let failed_execs = resolve_failed_execs(config.failed_execs)?;
        if failed_execs != FailedExecs::SysExit {
            open.progs.exec_failed.set_autoload(false);
        }
        if failed_execs != FailedExecs::Tracepoints {
            open.progs.exec_failed_execve.set_autoload(false);
            open.progs.exec_failed_execveat.set_autoload(false);
        }

        let plan = crate::handover::prepare(&mut open, keep)?;
        let skel = open
            .load()
            .map_err(|e| LoadError::from_libbpf("loading the BPF program", e))?;
        fill_filter_maps(&skel, f, cgroup_dir.as_ref())
            .map_err(|e| LoadError::from_libbpf("filling the filter maps", e))?;
        let handover = plan.attach(&skel).map_err(|e| match e {
            crate::handover::HandoverError::Libbpf { what, source } => {
                LoadError::from_libbpf(what, source)
            }
            e => e.into(),
        })?;
        Ok(BpfLoader {
            skel,
            failed_execs,
            handover,
        })
    }

    /// The failed-exec hook in use (never `Auto`).
    pub fn failed_execs(&self) -> FailedExecs {
        self.failed_execs
    }

    /// Tell the BPF side the daemon knows these cgroups: their records stop
    /// carrying the path.
    pub fn mark_cgroups_known(&self, ids: &[u64]) -> Result<(), libbpf_rs::Error> {
        for id in ids {
            self.skel
                .maps
                .known_cgroups
                .update(&id.to_ne_bytes(), &[1], MapFlags::ANY)?;
        }
        Ok(())
    }

    /// Undo [`Self::mark_cgroups_known`] (when the daemon's cache is emptied).
    pub fn forget_cgroups(&self, ids: &[u64]) {
        for id in ids {
            // Absent keys are fine: the kernel set may have been full.
            let _ = self.skel.maps.known_cgroups.delete(&id.to_ne_bytes());
        }
    }

    /// The ring buffer map the records arrive in.
    pub fn events_map(&self) -> &libbpf_rs::Map<'obj> {
        &self.skel.maps.events
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
        let known = &self.skel.maps.known_cgroups;
        for key in known.keys().collect::<Vec<_>>() {
            let _ = known.delete(&key);
        }
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

    /// Sum the per-CPU counters.
    pub fn stats(&self) -> Result<KernelStats, libbpf_rs::Error> {
        let map = &self.skel.maps.stats;
        let read = |idx: types::stat_index| -> Result<u64, libbpf_rs::Error> {
            let key = idx.0.to_ne_bytes();
            let per_cpu = map.lookup_percpu(&key, MapFlags::ANY)?.unwrap_or_default();
            Ok(per_cpu
                .iter()
                .filter_map(|v| v.get(..8))
                .map(|b| u64::from_ne_bytes(b.try_into().expect("8 bytes")))
                .sum())
        };
        use types::stat_index as S;
        Ok(KernelStats {
            seen: read(S::STAT_SEEN)?,
            submitted: read(S::STAT_SUBMITTED)?,
            lost_ringbuf_full: read(S::STAT_LOST_RINGBUF_FULL)?,
            lost_no_scratch: read(S::STAT_LOST_NO_SCRATCH)?,
            args_read_failed: read(S::STAT_ARGS_READ_FAILED)?,
            filename_read_failed: read(S::STAT_FILENAME_READ_FAILED)?,
            exe_read_failed: read(S::STAT_EXE_READ_FAILED)?,
            caller_comm_missing: read(S::STAT_CALLER_COMM_MISSING)?,
            wakeups_forced: read(S::STAT_WAKEUPS_FORCED)?,
            filtered: read(S::STAT_FILTERED)?,
        })
    }
}
