//! systemd's notification protocol: READY, STATUS, WATCHDOG, STOPPING.
//! A no-op when NOTIFY_SOCKET is unset.

use std::os::unix::net::{SocketAddr, UnixDatagram};
use std::time::{Duration, Instant};

pub struct Notifier {
    sock: Option<(UnixDatagram, SocketAddr)>,
    /// Ping interval: half of WATCHDOG_USEC, when the watchdog is for us.
    watchdog: Option<Duration>,
    last_ping: Instant,
}

fn socket_addr(path: &str) -> std::io::Result<SocketAddr> {
    match path.strip_prefix('@') {
        Some(abstract_name) => {
            use std::os::linux::net::SocketAddrExt;
            SocketAddr::from_abstract_name(abstract_name.as_bytes())
        }
        None => SocketAddr::from_pathname(path),
    }
}

impl Notifier {
    /// From the environment systemd gives a `Type=notify` service.
    pub fn from_env() -> Notifier {
        let sock = std::env::var("NOTIFY_SOCKET").ok().and_then(|p| {
            let addr = socket_addr(&p).ok()?;
            Some((UnixDatagram::unbound().ok()?, addr))
        });
        let for_us = std::env::var("WATCHDOG_PID")
            .ok()
            .is_none_or(|p| p.parse::<u32>().ok() == Some(std::process::id()));
        let watchdog = std::env::var("WATCHDOG_USEC")
            .ok()
            .and_then(|v| v.parse::<u64>().ok())
            .filter(|&us| us > 0 && for_us)
            .map(|us| Duration::from_micros(us / 2));
        Notifier {
            sock,
            watchdog,
            last_ping: Instant::now(),
        }
    }

    pub fn enabled(&self) -> bool {
        self.sock.is_some()
    }

    /// The longest the daemon loop may sleep between watchdog pings.
    pub fn watchdog_interval(&self) -> Option<Duration> {
        self.watchdog
    }

    fn send(&self, msg: &str) {
        if let Some((sock, addr)) = &self.sock {
            if let Err(e) = sock.send_to_addr(msg.as_bytes(), addr) {
                tracing::debug!(error = %e, "sd_notify failed");
            }
        }
    }

    pub fn ready(&self, status: &str) {
        self.send(&format!(
            "READY=1\nSTATUS={status}\nMAINPID={}",
            std::process::id()
        ));
    }

    pub fn status(&self, status: &str) {
        self.send(&format!("STATUS={status}"));
    }

    pub fn stopping(&self) {
        self.send("STOPPING=1\nSTATUS=stopping: draining the ring buffer");
    }

    /// Ping the watchdog when half its timeout has passed since the last ping.
    pub fn watchdog_tick(&mut self) {
        if let Some(every) = self.watchdog {
            if self.last_ping.elapsed() >= every {
                self.send("WATCHDOG=1");
                self.last_ping = Instant::now();
            }
        }
    }
}

/// The fd-store side of the protocol (`FDSTORE=1`): hands `fd` to systemd
/// under `name`, not polled (`FDPOLL=0`: BPF links cannot be). systemd keeps
/// it while the unit is active or restarting, and passes it back in
/// `LISTEN_FDS`; it needs `FileDescriptorStoreMax=` in the unit.
pub fn store_fd(name: &str, fd: std::os::fd::BorrowedFd<'_>) -> std::io::Result<()> {
    use std::os::fd::AsRawFd;
    let msg = format!("FDSTORE=1\nFDNAME={name}\nFDPOLL=0");
    let raw = [fd.as_raw_fd()];
    send_with_fds(&msg, &[nix::sys::socket::ControlMessage::ScmRights(&raw)])
}

/// Drop every fd stored under `name` (`FDSTOREREMOVE=1`).
pub fn remove_fds(name: &str) -> std::io::Result<()> {
    send_with_fds(&format!("FDSTOREREMOVE=1\nFDNAME={name}"), &[])
}

fn send_with_fds(msg: &str, cmsgs: &[nix::sys::socket::ControlMessage<'_>]) -> std::io::Result<()> {
    use nix::sys::socket::{self, AddressFamily, MsgFlags, SockFlag, SockType, UnixAddr};
    use std::os::fd::AsRawFd;
    let path = std::env::var("NOTIFY_SOCKET")
        .map_err(|_| std::io::Error::other("NOTIFY_SOCKET is not set"))?;
    let addr = match path.strip_prefix('@') {
        Some(name) => UnixAddr::new_abstract(name.as_bytes()),
        None => UnixAddr::new(path.as_str()),
    }?;
    let sock = socket::socket(
        AddressFamily::Unix,
        SockType::Datagram,
        SockFlag::SOCK_CLOEXEC,
        None,
    )?;
    let iov = [std::io::IoSlice::new(msg.as_bytes())];
    socket::sendmsg(
        sock.as_raw_fd(),
        &iov,
        cmsgs,
        MsgFlags::empty(),
        Some(&addr),
    )?;
    Ok(())
}
