//! A NOTIFY_SOCKET to receive a daemon's sd_notify messages on (used by
//! tests/common and tests/spawned alike).

use std::os::unix::net::UnixDatagram;
use std::time::{Duration, Instant};

/// A NOTIFY_SOCKET to receive sd_notify messages on.
#[allow(dead_code)]
pub struct NotifySocket {
    sock: UnixDatagram,
    dir: std::path::PathBuf,
}

impl NotifySocket {
    pub fn new(name: &str) -> NotifySocket {
        let dir =
            std::env::temp_dir().join(format!("execwatch-notify-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let sock = UnixDatagram::bind(dir.join("notify")).unwrap();
        sock.set_read_timeout(Some(Duration::from_millis(50)))
            .unwrap();
        NotifySocket { sock, dir }
    }

    /// The directory holding the socket (removed on drop).
    pub fn dir(&self) -> &std::path::Path {
        &self.dir
    }

    pub fn path(&self) -> String {
        self.dir.join("notify").to_string_lossy().into_owned()
    }

    /// Messages until one satisfies `pred`; panics after `timeout`.
    pub fn until(&self, timeout: Duration, pred: impl Fn(&str) -> bool) -> Vec<String> {
        let deadline = Instant::now() + timeout;
        let mut got = Vec::new();
        let mut buf = [0u8; 4096];
        while Instant::now() < deadline {
            if let Ok(n) = self.sock.recv(&mut buf) {
                let m = String::from_utf8_lossy(&buf[..n]).into_owned();
                let done = pred(&m);
                got.push(m);
                if done {
                    return got;
                }
            }
        }
        panic!("timed out after {timeout:?}; received: {got:?}");
    }

    /// Every message received during `d`.
    pub fn collect(&self, d: Duration) -> Vec<String> {
        let deadline = Instant::now() + d;
        let mut got = Vec::new();
        let mut buf = [0u8; 4096];
        while Instant::now() < deadline {
            if let Ok(n) = self.sock.recv(&mut buf) {
                got.push(String::from_utf8_lossy(&buf[..n]).into_owned());
            }
        }
        got
    }
}

impl Drop for NotifySocket {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
