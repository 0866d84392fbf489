//! execwatch command line: parse flags, set up logging, run, exit code.

use std::io;
use std::mem::MaybeUninit;
use std::process::ExitCode;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use clap::Parser;
use execwatch::bpf_loader::{self, BpfLoader, FailedExecs, ARGS_MAX_LIMIT};
use execwatch::daemon::{self, LoopOptions};
use execwatch::metrics::{self, Metrics};
use execwatch::output::{journald, EventSink, Format};
use execwatch::preflight;
use execwatch::sd_notify::Notifier;
use tracing::info;

/// Record every program execution on this host.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Cli {
    /// Output format of exec events: text and json go to stdout, journald
    /// to the journal. Default: journald when stderr is the journal (a
    /// systemd service), else text.
    #[arg(long, value_enum)]
    format: Option<Format>,

    /// Bytes of argv captured per exec (suffixes K, KiB, M, MiB; at most 128KiB).
    #[arg(long, value_parser = parse_args_bytes, default_value = "16KiB")]
    max_args_bytes: u32,

    /// Ring buffer size (a power of two, 64KiB to 1GiB).
    #[arg(long, value_parser = parse_ring_size, default_value = "8MiB")]
    ring_buffer_size: u32,

    /// Longest time, in milliseconds, an exec waits before it is written.
    #[arg(long, value_name = "MS", default_value = "100",
          value_parser = clap::value_parser!(u64).range(1..=10_000))]
    poll_interval: u64,

    /// Seconds between reads of the loss counters.
    #[arg(long, value_name = "SECS", default_value = "1",
          value_parser = clap::value_parser!(u64).range(1..=3600))]
    stats_interval: u64,

    /// Hook for failed execs: auto picks tracepoints (mounting tracefs if
    /// needed), else sys-exit.
    #[arg(long, value_enum, default_value = "auto")]
    failed_execs: FailedExecs,

    /// Only execs by this real user (name or uid; repeatable).
    #[arg(long = "uid", value_name = "USER", value_parser = parse_uid)]
    uids: Vec<u32>,

    /// Only programs with this name (comm, 15 bytes at most; repeatable).
    #[arg(long = "comm", value_name = "NAME", value_parser = parse_comm)]
    comms: Vec<String>,

    /// Not programs with this name (repeatable).
    #[arg(long = "exclude-comm", value_name = "NAME", value_parser = parse_comm)]
    exclude_comms: Vec<String>,

    /// Only processes in this cgroup v2 directory or below (a path from the
    /// hierarchy's root, like /system.slice, or a full path under its mount).
    #[arg(long, value_name = "PATH", value_parser = parse_cgroup)]
    cgroup: Option<std::path::PathBuf>,

    /// Only processes in a container (outside the initial pid namespace).
    #[arg(long)]
    containers_only: bool,

    /// Only failed execs.
    #[arg(long)]
    failed_only: bool,

    /// Serve Prometheus metrics (events, losses, ...) on HOST:PORT at /metrics.
    #[arg(long, value_name = "HOST:PORT", value_parser = parse_metrics_addr)]
    metrics_addr: Option<String>,

    /// Log libbpf's messages and debug details to stderr.
    #[arg(short, long)]
    verbose: bool,

    /// Pin the BPF objects in this bpffs directory (e.g. /sys/fs/bpf/execwatch),
    /// so that a daemon started with the same directory takes them over with
    /// no gap; `execwatch detach --bpf-pin-dir DIR` removes them.
    #[arg(long, value_name = "DIR")]
    bpf_pin_dir: Option<std::path::PathBuf>,
}

/// `execwatch detach`: remove what daemons pinned with --bpf-pin-dir.
#[derive(Debug, Parser)]
#[command(name = "execwatch detach")]
struct DetachCli {
    /// The directory given to the daemons' --bpf-pin-dir.
    #[arg(long, value_name = "DIR")]
    bpf_pin_dir: std::path::PathBuf,
}

fn detach_main() -> ExitCode {
    let cli = DetachCli::parse_from(std::env::args_os().skip(1));
    match execwatch::handover::detach(&cli.bpf_pin_dir) {
        Ok(names) if names.is_empty() && !cli.bpf_pin_dir.exists() => {
            eprintln!(
                "execwatch: {} does not exist: nothing to detach",
                cli.bpf_pin_dir.display()
            );
            ExitCode::SUCCESS
        }
        Ok(names) => {
            eprintln!(
                "execwatch: removed {} pinned objects and the directory {}: nothing stays attached through it",
                names.len(),
                cli.bpf_pin_dir.display()
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("execwatch: error: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Parse `123`, `16K`, `16KiB`, `8M`, `8MiB` (binary units).
fn parse_size(s: &str) -> Result<u64, String> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: u64 = num
        .parse()
        .map_err(|_| format!("`{s}` is not a size (examples: 65536, 64KiB, 8MiB)"))?;
    let mult = match unit {
        "" | "B" => 1,
        "K" | "k" | "KiB" | "KB" => 1 << 10,
        "M" | "MiB" | "MB" => 1 << 20,
        "G" | "GiB" | "GB" => 1 << 30,
        _ => {
            return Err(format!(
                "unknown unit `{unit}` (use K, KiB, M, MiB, G or GiB)"
            ))
        }
    };
    n.checked_mul(mult)
        .ok_or_else(|| format!("`{s}` is too large"))
}

fn parse_args_bytes(s: &str) -> Result<u32, String> {
    let n = parse_size(s)?;
    if n == 0 || n > u64::from(ARGS_MAX_LIMIT) {
        return Err(format!(
            "must be between 1 and {ARGS_MAX_LIMIT} bytes (128KiB)"
        ));
    }
    Ok(n as u32)
}

fn parse_ring_size(s: &str) -> Result<u32, String> {
    let n = parse_size(s)?;
    if !(64 << 10..=1 << 30).contains(&n) || !n.is_power_of_two() {
        return Err("must be a power of two between 64KiB and 1GiB".into());
    }
    Ok(n as u32)
}

fn parse_metrics_addr(s: &str) -> Result<String, String> {
    use std::net::ToSocketAddrs;
    let resolves = s.to_socket_addrs().is_ok_and(|mut a| a.next().is_some());
    if resolves {
        Ok(s.to_string())
    } else {
        Err(format!("`{s}` is not HOST:PORT (example: 127.0.0.1:9464)"))
    }
}

fn parse_uid(s: &str) -> Result<u32, String> {
    if let Ok(n) = s.parse::<u32>() {
        return Ok(n);
    }
    match nix::unistd::User::from_name(s) {
        Ok(Some(u)) => Ok(u.uid.as_raw()),
        _ => Err(format!(
            "no user named `{s}` (give a name or a numeric uid)"
        )),
    }
}

fn parse_comm(s: &str) -> Result<String, String> {
    if s.is_empty() {
        return Err("a program name cannot be empty".into());
    }
    if s.len() > 15 {
        return Err(format!(
            "`{s}` is longer than 15 bytes, the kernel keeps only `{}`: give that",
            String::from_utf8_lossy(&s.as_bytes()[..15])
        ));
    }
    Ok(s.to_string())
}

fn parse_cgroup(s: &str) -> Result<std::path::PathBuf, String> {
    execwatch::cgroups::resolve_cgroup_arg(s)
}

/// Daemon diagnostics go where the events go: journal entries (with their
/// MESSAGE_IDs) for journald, JSON lines on stderr for json, text otherwise.
fn init_logging(format: Format, verbose: bool) -> Result<()> {
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;

    let filter = if verbose { "debug" } else { "info" };
    let filter = tracing_subscriber::EnvFilter::try_from_env("EXECWATCH_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(filter));
    match format {
        Format::Journald => {
            let layer = tracing_journald::layer()
                .context("connecting to journald for diagnostics")?
                .with_syslog_identifier("execwatch".into())
                .with_field_prefix(None);
            tracing_subscriber::registry()
                .with(filter)
                .with(layer)
                .init();
        }
        Format::Json => tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_writer(io::stderr)
            .with_target(false)
            .json()
            .flatten_event(true)
            .init(),
        Format::Text => tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_writer(io::stderr)
            .with_target(false)
            .init(),
    }
    Ok(())
}

fn libbpf_print(level: libbpf_rs::PrintLevel, msg: String) {
    let msg = msg.trim_end();
    match level {
        libbpf_rs::PrintLevel::Warn => tracing::debug!(target: "libbpf", "{msg}"),
        _ => tracing::trace!(target: "libbpf", "{msg}"),
    }
}

fn run(cli: &Cli, format: Format) -> Result<()> {
    preflight::check_host()?;
    libbpf_rs::set_print(Some((libbpf_rs::PrintLevel::Debug, libbpf_print)));

    let stop = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGTERM, signal_hook::consts::SIGINT] {
        signal_hook::flag::register(sig, Arc::clone(&stop))
            .context("installing signal handlers")?;
    }

    let config = bpf_loader::Config {
        max_args_bytes: cli.max_args_bytes,
        ring_buffer_bytes: cli.ring_buffer_size,
        wakeup_bytes: u64::from(cli.ring_buffer_size / 4),
        failed_execs: cli.failed_execs,
        filters: bpf_loader::Filters {
            uids: cli.uids.clone(),
            comms: cli.comms.clone(),
            exclude_comms: cli.exclude_comms.clone(),
            cgroup: cli.cgroup.clone(),
            containers_only: cli.containers_only,
            failed_only: cli.failed_only,
        },
    };
    let keep = execwatch::handover::Keep::choose(cli.bpf_pin_dir.as_deref())?;
    let mut object = MaybeUninit::uninit();
    let mut loader = BpfLoader::load_keeping(&config, &mut object, keep)?;
    info!(
        message_id = journald::message_ids::STARTED,
        max_args_bytes = config.max_args_bytes,
        ring_buffer_bytes = config.ring_buffer_bytes,
        poll_interval_ms = cli.poll_interval,
        failed_execs = loader.failed_execs().name(),
        "execwatch attached"
    );

    let sink = EventSink::new(format, io::stdout().lock()).context("opening the output")?;
    let metrics = match &cli.metrics_addr {
        Some(addr) => {
            let m = Metrics::new(config.ring_buffer_bytes);
            metrics::serve(addr, std::sync::Arc::clone(&m))
                .with_context(|| format!("serving metrics on {addr}"))?;
            info!(addr = %addr, "serving Prometheus metrics at /metrics");
            Some(m)
        }
        None => None,
    };
    let opts = LoopOptions {
        poll_interval: Duration::from_millis(cli.poll_interval),
        stats_interval: Duration::from_secs(cli.stats_interval),
        metrics,
    };
    let mut notifier = Notifier::from_env();
    daemon::run(&mut loader, sink, &stop, &opts, &mut notifier)?;
    Ok(())
}

fn main() -> ExitCode {
    if std::env::args_os().nth(1).is_some_and(|a| a == "detach") {
        return detach_main();
    }
    let cli = Cli::parse();
    let format = cli.format.unwrap_or_else(|| {
        if journald::stderr_is_journal() {
            Format::Journald
        } else {
            Format::Text
        }
    });
    if let Err(e) = init_logging(format, cli.verbose) {
        eprintln!("execwatch: error: {e:#}");
        return ExitCode::FAILURE;
    }
    match run(&cli, format) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("execwatch: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(parse_size("65536"), Ok(65536));
        assert_eq!(parse_size("16K"), Ok(16384));
        assert_eq!(parse_size("8MiB"), Ok(8 << 20));
        assert!(parse_size("8X").is_err());
        assert!(parse_size("").is_err());
        assert!(parse_size("99999999999999999999G").is_err());
        assert!(parse_args_bytes("0").is_err());
        assert!(parse_args_bytes("129K").is_err());
        assert_eq!(parse_args_bytes("128KiB"), Ok(131072));
        assert!(parse_ring_size("100K").is_err());
        assert!(parse_ring_size("32K").is_err());
        assert_eq!(parse_ring_size("64KiB"), Ok(65536));
    }

    #[test]
    fn cli_is_consistent() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }
}
