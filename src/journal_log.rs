//! The daemon's own diagnostics to journald (`--format journald`), sent
//! without blocking. tracing-journald sends on a blocking socket from the
//! thread that logs: a journald that stops reading would then stall the
//! event loop at its next warning, so SIGTERM, the watchdog and the drain
//! deadline would all wait on it. Here a full journald costs a diagnostic
//! at most `FULL_WAIT`; one it cannot take is dropped (on stderr too when
//! stderr is not the journal, see main.rs).

use std::fmt::{self, Write as _};
use std::io;
use std::os::fd::AsFd;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use tracing::field::{Field, Visit};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::layer::Context;

use crate::output::journald::{field, Journal};

/// How long a diagnostic waits for room in a full journald.
const FULL_WAIT: Duration = Duration::from_millis(100);

/// A tracing layer writing each event as one journal entry: PRIORITY,
/// SYSLOG_IDENTIFIER, TARGET, CODE_FILE, CODE_LINE, MESSAGE, and each field
/// by its name in capitals (`.` becomes `_`), as tracing-journald names them.
pub struct JournalLog {
    journal: Mutex<Journal>,
    identifier: String,
    dropped: AtomicU64,
}

impl JournalLog {
    pub fn connect(identifier: &str) -> io::Result<JournalLog> {
        JournalLog::connect_to(crate::output::journald::SOCKET.as_ref(), identifier)
    }

    pub fn connect_to(path: &std::path::Path, identifier: &str) -> io::Result<JournalLog> {
        let mut journal = Journal::connect_to(path)?;
        journal.set_nonblocking(true)?;
        Ok(JournalLog {
            journal: Mutex::new(journal),
            identifier: identifier.to_owned(),
            dropped: AtomicU64::new(0),
        })
    }

    /// Diagnostics journald could not take in time.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    /// One entry, as sent.
    pub fn entry(&self, event: &Event<'_>) -> Vec<u8> {
        let meta = event.metadata();
        let mut buf = Vec::with_capacity(256);
        let priority = match *meta.level() {
            Level::ERROR => b"3",
            Level::WARN => b"4",
            Level::INFO => b"5",
            Level::DEBUG => b"6",
            Level::TRACE => b"7",
        };
        field(&mut buf, "PRIORITY", priority);
        field(&mut buf, "SYSLOG_IDENTIFIER", self.identifier.as_bytes());
        field(&mut buf, "TARGET", meta.target().as_bytes());
        if let Some(file) = meta.file() {
            field(&mut buf, "CODE_FILE", file.as_bytes());
        }
        if let Some(line) = meta.line() {
            field(&mut buf, "CODE_LINE", line.to_string().as_bytes());
        }
        event.record(&mut Fields {
            buf: &mut buf,
            name: String::new(),
            value: String::new(),
        });
        buf
    }

    fn send(&self, entry: &[u8]) {
        let mut j = self.journal.lock().unwrap_or_else(|p| p.into_inner());
        let full = |e: &io::Error| e.kind() == io::ErrorKind::WouldBlock;
        let sent = match j.send(entry) {
            Err(e) if full(&e) => {
                let mut fds = [nix::poll::PollFd::new(
                    j.as_fd(),
                    nix::poll::PollFlags::POLLOUT,
                )];
                let _ = nix::poll::poll(
                    &mut fds,
                    nix::poll::PollTimeout::try_from(FULL_WAIT)
                        .unwrap_or(nix::poll::PollTimeout::ZERO),
                );
                j.send(entry)
            }
            r => r,
        };
        if sent.is_err() {
            self.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }
}

impl<S: Subscriber> tracing_subscriber::Layer<S> for JournalLog {
    fn on_event(&self, event: &Event<'_>, _ctx: Context<'_, S>) {
        let entry = self.entry(event);
        self.send(&entry);
    }
}

/// Writes each field of an event (`message` as MESSAGE).
struct Fields<'a> {
    buf: &'a mut Vec<u8>,
    name: String,
    value: String,
}

impl Fields<'_> {
    fn put(&mut self, f: &Field) {
        self.name.clear();
        let name = if f.name() == "message" {
            "MESSAGE"
        } else {
            f.name()
        };
        self.name.extend(
            name.chars()
                .map(|c| if c == '.' { '_' } else { c })
                .skip_while(|&c| c == '_')
                .filter(|&c| c == '_' || c.is_ascii_alphanumeric())
                .map(|c| c.to_ascii_uppercase()),
        );
        if !self.name.is_empty() {
            field(self.buf, &self.name, self.value.as_bytes());
        }
    }
}

impl Visit for Fields<'_> {
    fn record_str(&mut self, f: &Field, value: &str) {
        self.value.clear();
        self.value.push_str(value);
        self.put(f);
    }

    fn record_debug(&mut self, f: &Field, value: &dyn fmt::Debug) {
        self.value.clear();
        let _ = write!(self.value, "{value:?}");
        self.put(f);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::output::journald::parse;
    use std::os::unix::net::UnixDatagram;
    use std::sync::Arc;
    use tracing_subscriber::layer::SubscriberExt;

    /// The layer, still readable by the test.
    struct Shared(Arc<JournalLog>);

    impl<S: Subscriber> tracing_subscriber::Layer<S> for Shared {
        fn on_event(&self, event: &Event<'_>, ctx: Context<'_, S>) {
            tracing_subscriber::Layer::<S>::on_event(&*self.0, event, ctx)
        }
    }

    #[test]
    fn entries_carry_the_fields_by_name_and_a_full_journal_drops_them() {
        let path = std::env::temp_dir().join(format!("execwatch-log-{}", std::process::id()));
        let _ = std::fs::remove_file(&path);
        let sock = UnixDatagram::bind(&path).unwrap();
        let log = Arc::new(JournalLog::connect_to(&path, "execwatch").unwrap());
        let subscriber = tracing_subscriber::registry().with(Shared(Arc::clone(&log)));
        tracing::subscriber::with_default(subscriber, || {
            tracing::warn!(
                lost_total = 7u64,
                message_id = "abc",
                "exec events lost\nFORGED=1"
            );
        });
        let mut buf = vec![0u8; 4096];
        let n = sock.recv(&mut buf).unwrap();
        let f = parse(&buf[..n]);
        let get = |k: &str| f.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
        assert_eq!(get("PRIORITY").unwrap(), b"4");
        assert_eq!(get("SYSLOG_IDENTIFIER").unwrap(), b"execwatch");
        assert_eq!(get("MESSAGE").unwrap(), b"exec events lost\nFORGED=1");
        assert_eq!(get("LOST_TOTAL").unwrap(), b"7");
        assert_eq!(get("MESSAGE_ID").unwrap(), b"abc");
        assert!(get("FORGED").is_none());

        // Nobody reads: once the queue is full, diagnostics are dropped
        // within FULL_WAIT each, never blocking the caller for good.
        let subscriber = tracing_subscriber::registry().with(Shared(Arc::clone(&log)));
        let t0 = std::time::Instant::now();
        tracing::subscriber::with_default(subscriber, || {
            for i in 0..2000 {
                tracing::info!(i, "{}", "x".repeat(1000));
                if log.dropped() >= 3 {
                    break;
                }
            }
        });
        assert!(log.dropped() >= 3, "a full journal drops diagnostics");
        assert!(t0.elapsed() < Duration::from_secs(5), "{:?}", t0.elapsed());
        std::fs::remove_file(&path).unwrap();
    }
}
