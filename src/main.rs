//! execwatch command line: parse flags, set up logging, run, exit code.

use std::io;
use std::mem::MaybeUninit;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use clap::{Args, CommandFactory, FromArgMatches, Parser, Subcommand};
use execwatch::bpf_loader::{self, BpfLoader, FailedExecs, ARGS_MAX_LIMIT, COMM_MAX};
use execwatch::daemon::{self, LoopOptions};
use execwatch::liveness::Liveness;
use execwatch::metrics::{self, Metrics};
use execwatch::output::{journald, Format};
use execwatch::preflight;
use execwatch::sd_notify::Notifier;
use tracing::{info, warn};

/// `0.1.0 (git 1a2b3c4)`; build.rs finds the commit ("unknown" outside git).
const VERSION: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    " (git ",
    env!("EXECWATCH_GIT_COMMIT"),
    ")"
);

/// Record every program execution on this host.
///
/// Without a subcommand, execwatch runs the daemon: `execwatch --format json`
/// is `execwatch run --format json`.
#[derive(Debug, Parser)]
#[command(name = "execwatch", version = VERSION, about, args_conflicts_with_subcommands = true)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,

    #[command(flatten)]
    run: RunArgs,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Record every exec until SIGINT or SIGTERM (the default).
    Run(Box<RunArgs>),
    /// Check whether this host can run execwatch: one line per requirement,
    /// ok or missing and what to do; exit status 0 when it can run.
    Check,
    /// Remove the BPF objects daemons pinned with --bpf-pin-dir DIR: their
    /// programs stop recording. Refused while a daemon uses DIR.
    Detach(DetachArgs),
}

/// scripts/package's subcommand: writes the man pages and completions. Added
/// to the parser at run time, not to `Cli`, so that the man pages and
/// completions made from `Cli` do not offer it.
const GEN_PACKAGE_FILES: &str = "gen-package-files";

fn command_with_packaging() -> clap::Command {
    Cli::command().subcommand(
        clap::Command::new(GEN_PACKAGE_FILES)
            .hide(true)
            .about("Write the man pages and shell completions into DIR (for packaging)")
            .arg(
                clap::Arg::new("dir")
                    .value_name("DIR")
                    .required(true)
                    .value_parser(clap::value_parser!(PathBuf)),
            ),
    )
}

/// The daemon's flags.
#[derive(Debug, Args)]
struct RunArgs {
    /// Output format of exec events: text and json go to stdout, journald
    /// to the journal. Default: journald when stderr is the journal (a
    /// systemd service), else text.
    #[arg(long, value_enum)]
    format: Option<Format>,

    /// Bytes of argv captured per exec (suffixes K, KiB, M, MiB; at most 128KiB).
    #[arg(long, value_parser = parse_args_bytes, default_value = "16KiB")]
    max_args_bytes: u32,

    /// Ring buffer size (a power of two, 64KiB to 1GiB), shared by the
    /// CPUs' ring buffers [default: 8MiB, or more when each possible CPU's
    /// share would not hold one record]
    #[arg(long, value_parser = parse_ring_size)]
    ring_buffer_size: Option<u32>,

    /// Longest time, in milliseconds (1 to 10000), an exec waits before it
    /// is written.
    #[arg(long, value_name = "MS", default_value = "100",
          value_parser = clap::value_parser!(u64).range(1..=10_000))]
    poll_interval: u64,

    /// At shutdown, seconds (0 to 3600) to write what is still buffered;
    /// the rest is counted as lost (reason `shutdown`). Below the unit's
    /// TimeoutStopSec.
    #[arg(long, value_name = "SECS", default_value = "10",
          value_parser = clap::value_parser!(u64).range(0..=3600))]
    drain_timeout: u64,

    /// Seconds (1 to 3600) between reads of the loss counters.
    #[arg(long, value_name = "SECS", default_value = "1",
          value_parser = clap::value_parser!(u64).range(1..=3600))]
    stats_interval: u64,

    /// Hook for failed execs: auto picks tracepoints (mounting tracefs if
    /// needed), else sys-exit.
    #[arg(long, value_enum, default_value = "auto")]
    failed_execs: FailedExecs,

    /// Only execs by this real user (name or uid; repeatable, up to 64).
    #[arg(long = "uid", value_name = "USER", value_parser = parse_uid)]
    uids: Vec<u32>,

    /// Only programs with this name (comm, 15 bytes at most; repeatable, up
    /// to 64).
    #[arg(long = "comm", value_name = "NAME", value_parser = parse_comm)]
    comms: Vec<String>,

    /// Not programs with this name (repeatable, up to 64).
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

    /// No exit events (the exit hook is not attached).
    #[arg(long)]
    no_exits: bool,

    /// Do not hash executables (process.hash.sha256).
    #[arg(long)]
    no_hash: bool,

    /// Largest executable hashed; larger ones get execwatch.hash.skipped
    /// too_large (suffixes K, KiB, M, MiB, G, GiB).
    #[arg(long, value_name = "SIZE", value_parser = parse_size, default_value = "64MiB")]
    hash_max_size: u64,

    /// Copy this environment variable into process.env_vars (repeatable, up
    /// to 16; e.g. LD_PRELOAD). Without it nothing of the environment is read.
    #[arg(long = "env", value_name = "NAME", value_parser = parse_env_name)]
    env: Vec<String>,

    /// Leave this field out of every format: its JSON path, or a prefix
    /// that drops every field under it (repeatable or comma-separated; e.g.
    /// process.command_line, process.parent). Its execwatch.raw.* copy goes
    /// with it. What identifies an event cannot be left out: @timestamp,
    /// ecs.version, event.kind, category, type, action, outcome and
    /// sequence, process.pid and process.entity_id.
    #[arg(
        long = "exclude-field",
        value_name = "FIELD",
        value_delimiter = ',',
        value_parser = ExcludedField,
        hide_possible_values = true
    )]
    exclude_fields: Vec<String>,

    /// Serve Prometheus metrics (events, losses, ...) on HOST:PORT at
    /// /metrics, and liveness at /healthz.
    #[arg(long, value_name = "HOST:PORT", value_parser = parse_metrics_addr)]
    metrics_addr: Option<String>,

    /// Debug logs, with libbpf's warnings (the verifier log on a load
    /// failure); EXECWATCH_LOG=libbpf=trace shows all of libbpf's messages.
    #[arg(short, long)]
    verbose: bool,

    /// Pin the BPF objects in this bpffs directory (e.g. /sys/fs/bpf/execwatch),
    /// so that a daemon started with the same directory takes them over with
    /// no gap; `execwatch detach --bpf-pin-dir DIR` removes them.
    #[arg(long, value_name = "DIR")]
    bpf_pin_dir: Option<PathBuf>,
}

/// `execwatch detach`'s flags.
#[derive(Debug, Args)]
struct DetachArgs {
    /// The directory given to the daemons' --bpf-pin-dir.
    #[arg(long, value_name = "DIR")]
    bpf_pin_dir: PathBuf,
}

/// `execwatch detach`: remove what daemons pinned with --bpf-pin-dir.
fn detach(args: &DetachArgs) -> ExitCode {
    let dir = &args.bpf_pin_dir;
    match execwatch::handover::detach(dir) {
        Ok(names) if names.is_empty() && !dir.exists() => {
            eprintln!(
                "execwatch: {} does not exist: nothing to detach",
                dir.display()
            );
            ExitCode::SUCCESS
        }
        Ok(names) => {
            eprintln!(
                "execwatch: removed {} pinned objects and the directory {}: nothing stays attached through it",
                names.len(),
                dir.display()
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
    let range = u64::from(bpf_loader::RING_BUFFER_MIN)..=u64::from(bpf_loader::RING_BUFFER_MAX);
    if !range.contains(&n) || !n.is_power_of_two() {
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
    if s.len() > COMM_MAX {
        return Err(format!(
            "`{s}` is longer than {COMM_MAX} bytes, the kernel keeps only `{}`: give that",
            String::from_utf8_lossy(&s.as_bytes()[..COMM_MAX])
        ));
    }
    Ok(s.to_string())
}

/// Most `--env` names.
const ENV_NAMES_MAX: usize = 16;

fn parse_env_name(s: &str) -> Result<String, String> {
    let valid = !s.is_empty() && !s.contains('=') && !s.contains('\0');
    if valid {
        Ok(s.to_string())
    } else {
        Err(format!(
            "`{s}` is not a variable name (give the name alone, like LD_PRELOAD)"
        ))
    }
}

/// The fields that show an executable's hash, or why there is none.
const HASH_FIELDS: &[&str] = &["process.hash.sha256", "execwatch.hash.skipped"];

/// `--exclude-field`'s values: checked by [`Exclusions::check`], and every
/// field that may be left out offered to shell completion (not listed in
/// --help: there are over a hundred).
///
/// [`Exclusions::check`]: execwatch::fields::Exclusions::check
#[derive(Clone)]
struct ExcludedField;

impl clap::builder::TypedValueParser for ExcludedField {
    type Value = String;

    fn parse_ref(
        &self,
        cmd: &clap::Command,
        arg: Option<&clap::Arg>,
        value: &std::ffi::OsStr,
    ) -> Result<String, clap::Error> {
        let s = clap::builder::StringValueParser::new().parse_ref(cmd, arg, value)?;
        execwatch::fields::Exclusions::check(&s).map_err(|e| {
            let arg = arg.map_or_else(|| "--exclude-field".to_string(), ToString::to_string);
            clap::Error::raw(
                clap::error::ErrorKind::ValueValidation,
                format!("invalid value '{s}' for '{arg}': {e}\n"),
            )
            .with_cmd(cmd)
        })?;
        Ok(s)
    }

    fn possible_values(
        &self,
    ) -> Option<Box<dyn Iterator<Item = clap::builder::PossibleValue> + '_>> {
        let fields = execwatch::fields::FIELDS.iter().map(|f| f.json);
        let allowed = fields.filter(|p| execwatch::fields::Exclusions::check(p).is_ok());
        Some(Box::new(allowed.map(clap::builder::PossibleValue::new)))
    }
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
            let layer = execwatch::journal_log::JournalLog::connect("execwatch")
                .context("connecting to journald for diagnostics")?;
            // Run by hand or by a supervisor that reads stderr, they show
            // there too (JSON lines); under systemd stderr is the journal.
            let stderr = (!execwatch::output::journald::stderr_is_journal()).then(|| {
                tracing_subscriber::fmt::layer()
                    .with_writer(io::stderr)
                    .with_target(false)
                    .json()
                    .flatten_event(true)
            });
            tracing_subscriber::registry()
                .with(filter)
                .with(layer)
                .with(stderr)
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

fn run(args: &RunArgs, format: Format) -> Result<()> {
    if args.env.len() > ENV_NAMES_MAX {
        anyhow::bail!(
            "--env given {} times: at most {ENV_NAMES_MAX}",
            args.env.len()
        );
    }
    let excluded =
        execwatch::fields::Exclusions::new(&args.exclude_fields).context("--exclude-field")?;
    if !args.env.is_empty() && excluded.drops_all(&["process.env_vars"]) {
        anyhow::bail!(
            "--env asks for variables that --exclude-field leaves out (process.env_vars): drop one of the two"
        );
    }
    preflight::check_host()?;
    libbpf_rs::set_print(Some((libbpf_rs::PrintLevel::Debug, libbpf_print)));

    let stop = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGTERM, signal_hook::consts::SIGINT] {
        signal_hook::flag::register(sig, Arc::clone(&stop))
            .context("installing signal handlers")?;
    }

    let config = bpf_loader::Config {
        max_args_bytes: args.max_args_bytes,
        failed_execs: args.failed_execs,
        filters: bpf_loader::Filters {
            uids: args.uids.clone(),
            comms: args.comms.clone(),
            exclude_comms: args.exclude_comms.clone(),
            cgroup: args.cgroup.clone(),
            containers_only: args.containers_only,
            failed_only: args.failed_only,
        },
        capture_env: !args.env.is_empty(),
        exits: !args.no_exits,
        ..bpf_loader::Config::default()
    }
    .with_ring_size(args.ring_buffer_size, bpf_loader::possible_cpus()?);
    // No hashing when no field would show its result.
    let hash_excluded = excluded.drops_all(HASH_FIELDS);
    let keep = execwatch::handover::Keep::choose(args.bpf_pin_dir.as_deref())?;
    let mut object = MaybeUninit::uninit();
    let mut loader = BpfLoader::load_keeping(&config, &mut object, keep)?;
    info!(
        message_id = journald::message_ids::STARTED,
        max_args_bytes = config.max_args_bytes,
        ring_buffer_bytes = config.ring_buffer_bytes,
        poll_interval_ms = args.poll_interval,
        failed_execs = loader.failed_execs().name(),
        "execwatch attached"
    );
    if !preflight::overlayfs_known() {
        warn!(
            "overlayfs was not loaded when execwatch started: until execwatch restarts, every file on an overlayfs counts as served by FUSE (not hashed) and none is marked upper_layer; load it before execwatch (modprobe overlay; the package and make install list it in modules-load.d)"
        );
    }
    if !excluded.is_empty() {
        info!(
            fields = %args.exclude_fields.join(","),
            hashing = !args.no_hash && !hash_excluded,
            "fields left out of every event"
        );
    }

    let liveness = Arc::new(Liveness::default());
    let metrics = match &args.metrics_addr {
        Some(addr) => {
            let m = Metrics::new(config.ring_buffer_bytes, Arc::clone(&liveness));
            metrics::serve(addr, Arc::clone(&m), metrics::Limits::default())
                .with_context(|| format!("serving metrics on {addr}"))?;
            info!(addr = %addr, "serving Prometheus metrics at /metrics");
            Some(m)
        }
        None => None,
    };
    let opts = LoopOptions {
        poll_interval: Duration::from_millis(args.poll_interval),
        stats_interval: Duration::from_secs(args.stats_interval),
        drain_timeout: Duration::from_secs(args.drain_timeout),
        metrics,
        env_names: args.env.iter().map(|n| n.as_bytes().to_vec()).collect(),
        hash_max_size: (!args.no_hash && !hash_excluded).then_some(args.hash_max_size),
        liveness,
        excluded,
    };
    let mut notifier = Notifier::from_env();
    daemon::run(&mut loader, format, &stop, &opts, &mut notifier)?;
    Ok(())
}

/// The daemon, in the foreground until SIGINT or SIGTERM.
fn run_daemon(args: &RunArgs) -> ExitCode {
    let format = args.format.unwrap_or_else(|| {
        if journald::stderr_is_journal() {
            Format::Journald
        } else {
            Format::Text
        }
    });
    if let Err(e) = init_logging(format, args.verbose) {
        eprintln!("execwatch: error: {e:#}");
        return ExitCode::FAILURE;
    }
    exit_code(run(args, format))
}

/// `execwatch check`: the report on stdout; 0 when execwatch can run here.
fn check() -> ExitCode {
    let report = execwatch::check::host();
    let mut out = io::stdout().lock();
    if let Err(e) = report.write_to(&mut out) {
        eprintln!("execwatch: error: writing the report: {e}");
        return ExitCode::FAILURE;
    }
    if report.can_run() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

/// Man pages (clap_mangen) and bash, zsh and fish completions
/// (clap_complete), from this very command definition, so that they cannot
/// drift from the binary they are packaged with.
fn gen_package_files(dir: &Path) -> Result<()> {
    use clap_complete::Shell;
    let man = dir.join("man");
    let completions = dir.join("completions");
    for d in [&man, &completions] {
        std::fs::create_dir_all(d).with_context(|| format!("creating {}", d.display()))?;
    }
    clap_mangen::generate_to(Cli::command(), &man)
        .with_context(|| format!("writing man pages into {}", man.display()))?;
    let mut cmd = Cli::command();
    for shell in [Shell::Bash, Shell::Zsh, Shell::Fish] {
        clap_complete::generate_to(shell, &mut cmd, "execwatch", &completions).with_context(
            || format!("writing {shell} completions into {}", completions.display()),
        )?;
    }
    Ok(())
}

fn exit_code(result: Result<()>) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("execwatch: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn main() -> ExitCode {
    let matches = command_with_packaging().get_matches();
    if let Some(m) = matches.subcommand_matches(GEN_PACKAGE_FILES) {
        let dir = m.get_one::<PathBuf>("dir").expect("dir is required");
        return exit_code(gen_package_files(dir));
    }
    let cli = Cli::from_arg_matches(&matches).unwrap_or_else(|e| e.exit());
    match cli.command {
        None => run_daemon(&cli.run),
        Some(Command::Run(args)) => run_daemon(&args),
        Some(Command::Check) => check(),
        Some(Command::Detach(args)) => detach(&args),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exclude_field_completes_what_may_be_left_out_and_takes_prefixes() {
        use clap::builder::TypedValueParser;
        let offered: Vec<String> = ExcludedField
            .possible_values()
            .unwrap()
            .map(|v| v.get_name().to_string())
            .collect();
        assert!(offered.iter().any(|v| v == "process.command_line"));
        assert!(offered.iter().any(|v| v == "execwatch.raw.args"));
        for required in execwatch::fields::REQUIRED {
            assert!(!offered.iter().any(|v| v == required), "{required}");
        }
        let cli = |args: &[&str]| Cli::try_parse_from([&["execwatch"], args].concat());
        let parsed = cli(&["--exclude-field", "process.parent,process.args"]).unwrap();
        assert_eq!(
            parsed.run.exclude_fields,
            ["process.parent", "process.args"]
        );
        let err = cli(&["--exclude-field", "process.pid"]).unwrap_err();
        assert_eq!(err.kind(), clap::error::ErrorKind::ValueValidation);
        assert_eq!(err.to_string().trim_end().lines().count(), 1, "{err}");
    }

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
        Cli::command().debug_assert();
        command_with_packaging().debug_assert();
    }

    #[test]
    fn packaging_subcommand_parses_but_is_not_in_the_public_cli() {
        let m = command_with_packaging()
            .try_get_matches_from(["execwatch", GEN_PACKAGE_FILES, "/tmp/x"])
            .unwrap();
        assert!(m.subcommand_matches(GEN_PACKAGE_FILES).is_some());
        assert!(Cli::command().find_subcommand(GEN_PACKAGE_FILES).is_none());
    }

    #[test]
    fn no_subcommand_is_run_with_the_same_flags() {
        let bare = Cli::try_parse_from(["execwatch", "--format", "json", "--uid", "0"]).unwrap();
        assert!(bare.command.is_none());
        assert_eq!(bare.run.format, Some(Format::Json));
        assert_eq!(bare.run.uids, [0]);
        let sub =
            Cli::try_parse_from(["execwatch", "run", "--format", "json", "--uid", "0"]).unwrap();
        let Some(Command::Run(args)) = sub.command else {
            panic!("`run` parses as Command::Run: {sub:?}");
        };
        assert_eq!(args.format, Some(Format::Json));
        assert_eq!(args.uids, [0]);
        assert_eq!(args.max_args_bytes, bare.run.max_args_bytes);
    }

    #[test]
    fn daemon_flags_do_not_mix_with_other_subcommands() {
        let e = Cli::try_parse_from(["execwatch", "--format", "json", "check"]).unwrap_err();
        assert_eq!(e.kind(), clap::error::ErrorKind::ArgumentConflict, "{e}");
        assert!(Cli::try_parse_from(["execwatch", "check", "--format", "json"]).is_err());
    }

    #[test]
    fn detach_is_a_subcommand_of_its_own() {
        let cli =
            Cli::try_parse_from(["execwatch", "detach", "--bpf-pin-dir", "/sys/fs/bpf/x"]).unwrap();
        let Some(Command::Detach(args)) = cli.command else {
            panic!("`detach` parses as Command::Detach: {cli:?}");
        };
        assert_eq!(args.bpf_pin_dir, Path::new("/sys/fs/bpf/x"));
        let run = Cli::try_parse_from(["execwatch", "--bpf-pin-dir", "/sys/fs/bpf/x"]).unwrap();
        assert_eq!(
            run.run.bpf_pin_dir.as_deref(),
            Some(Path::new("/sys/fs/bpf/x"))
        );
    }

    #[test]
    fn version_names_the_commit() {
        let commit = env!("EXECWATCH_GIT_COMMIT");
        assert!(
            commit == "unknown"
                || (commit.len() >= 7 && commit.bytes().all(|b| b.is_ascii_hexdigit())),
            "{commit}"
        );
        assert!(VERSION.starts_with(env!("CARGO_PKG_VERSION")));
        assert!(VERSION.contains(commit));
    }
}
