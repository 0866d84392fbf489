//! Progress of the daemon: touched when the event loop turns with room in
//! the output, and when the output accepts bytes. The liveness endpoint and
//! the systemd watchdog both read it, so a wedged daemon fails both.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// No progress for this long and the daemon is reported as wedged.
pub const STALL_LIMIT: Duration = Duration::from_secs(10);

#[derive(Debug)]
pub struct Liveness {
    start: Instant,
    /// Milliseconds after `start` of the last progress.
    last_ms: AtomicU64,
    limit: Duration,
}

impl Liveness {
    pub fn new(limit: Duration) -> Liveness {
        Liveness {
            start: Instant::now(),
            last_ms: AtomicU64::new(0),
            limit,
        }
    }

    fn now_ms(&self) -> u64 {
        u64::try_from(self.start.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    /// Progress was made now.
    pub fn touch(&self) {
        self.last_ms.store(self.now_ms(), Ordering::Relaxed);
    }

    /// Time since the last progress.
    pub fn age(&self) -> Duration {
        let last = self.last_ms.load(Ordering::Relaxed);
        Duration::from_millis(self.now_ms().saturating_sub(last))
    }

    pub fn limit(&self) -> Duration {
        self.limit
    }

    /// Progress within the limit.
    pub fn is_alive(&self) -> bool {
        self.age() <= self.limit
    }
}

impl Default for Liveness {
    fn default() -> Self {
        Liveness::new(STALL_LIMIT)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn goes_stale_without_progress() {
        let l = Liveness::new(Duration::from_millis(30));
        assert!(l.is_alive());
        std::thread::sleep(Duration::from_millis(60));
        assert!(!l.is_alive(), "age {:?}", l.age());
        l.touch();
        assert!(l.is_alive());
        assert!(l.age() < Duration::from_millis(30));
    }
}
