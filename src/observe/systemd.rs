//! The systemd notify protocol (sd_notify(3)): one datagram of `KEY=VALUE` lines to the socket
//! named by `$NOTIFY_SOCKET`, and the watchdog period from `$WATCHDOG_USEC`.
//!
//! Written by hand rather than with the `sd-notify` crate: its 0.5 connects to `$NOTIFY_SOCKET`
//! as a file path, so the abstract socket names (`@...`) that systemd and container runtimes
//! hand out are not reached; with std's `SocketAddrExt` the whole protocol is a few lines.

use std::ffi::OsStr;
use std::io;
use std::os::linux::net::SocketAddrExt as _;
use std::os::unix::ffi::OsStrExt as _;
use std::os::unix::net::{SocketAddr, UnixDatagram};
use std::time::Duration;

use tracing::{debug, warn};

/// Talks to the service manager, or does nothing when not started by one.
#[derive(Debug, Default)]
pub(super) struct Notifier {
    socket: Option<(UnixDatagram, SocketAddr)>,
    watchdog: Option<Duration>,
}

impl Notifier {
    /// From `$NOTIFY_SOCKET`, `$WATCHDOG_USEC` and `$WATCHDOG_PID`.
    pub(super) fn from_env() -> Self {
        let var = |name| std::env::var_os(name);
        Self::new(
            var("NOTIFY_SOCKET").as_deref(),
            var("WATCHDOG_USEC").as_deref(),
            var("WATCHDOG_PID").as_deref(),
            std::process::id(),
        )
    }

    /// From the values of those variables, for process `pid`.
    pub(super) fn new(
        notify_socket: Option<&OsStr>,
        watchdog_usec: Option<&OsStr>,
        watchdog_pid: Option<&OsStr>,
        pid: u32,
    ) -> Self {
        let socket = notify_socket
            .filter(|s| !s.is_empty())
            .and_then(|s| match connect(s) {
                Ok(socket) => Some(socket),
                Err(e) => {
                    warn!(socket = %s.to_string_lossy(), error = %e, "cannot use NOTIFY_SOCKET; not notifying systemd");
                    None
                }
            });
        // WATCHDOG_PID, when set, names the process the watchdog is meant for (not a child
        // that inherited the environment).
        let for_us = watchdog_pid
            .and_then(|p| p.to_str())
            .is_none_or(|p| p.parse::<u32>().is_ok_and(|p| p == pid));
        let watchdog = watchdog_usec
            .filter(|_| for_us)
            .and_then(|v| v.to_str())
            .and_then(|v| v.parse::<u64>().ok())
            .filter(|&us| us > 0)
            .map(Duration::from_micros);
        Self { socket, watchdog }
    }

    /// Whether a service manager listens.
    pub(super) fn enabled(&self) -> bool {
        self.socket.is_some()
    }

    /// The watchdog period systemd expects pings within, if it watches us.
    pub(super) fn watchdog(&self) -> Option<Duration> {
        self.watchdog.filter(|_| self.enabled())
    }

    /// Sends `lines` (`KEY=VALUE`, one per line). Never blocks: a notification that does not
    /// fit in the socket's queue right now is dropped (and logged), since a stuck service
    /// manager must not stall the daemon.
    pub(super) fn send(&self, lines: &[&str]) {
        let Some((sock, addr)) = &self.socket else {
            return;
        };
        let msg = lines.join("\n");
        match sock.send_to_addr(msg.as_bytes(), addr) {
            Ok(_) => debug!(msg = %msg.replace('\n', " "), "systemd notified"),
            Err(e) => warn!(msg = %msg.replace('\n', " "), error = %e, "cannot notify systemd"),
        }
    }

    /// `READY=1`, with a status line for `systemctl status`.
    pub(super) fn ready(&self, status: &str) {
        self.send(&["READY=1", &format!("STATUS={status}")]);
    }

    /// `RELOADING=1`, with the monotonic time that `Type=notify-reload` requires.
    pub(super) fn reloading(&self) {
        let now = format!("MONOTONIC_USEC={}", monotonic_usec());
        self.send(&["RELOADING=1", &now, "STATUS=reloading the job file"]);
    }

    /// `STOPPING=1`.
    pub(super) fn stopping(&self, status: &str) {
        self.send(&["STOPPING=1", &format!("STATUS={status}")]);
    }

    /// `WATCHDOG=1`, if the watchdog is on.
    pub(super) fn watchdog_ping(&self) {
        if self.watchdog().is_some() {
            self.send(&["WATCHDOG=1"]);
        }
    }

    /// Asks for `d` more before the start-up or reload timeout, as long as we keep asking.
    pub(super) fn extend_timeout(&self, d: Duration) {
        self.send(&[&format!("EXTEND_TIMEOUT_USEC={}", d.as_micros())]);
    }

    /// A status line for `systemctl status`.
    pub(super) fn status(&self, status: &str) {
        self.send(&[&format!("STATUS={status}")]);
    }
}

fn connect(name: &OsStr) -> io::Result<(UnixDatagram, SocketAddr)> {
    let bytes = name.as_bytes();
    let addr = match bytes.first() {
        Some(b'@') => SocketAddr::from_abstract_name(&bytes[1..])?,
        Some(b'/') => SocketAddr::from_pathname(name)?,
        _ => {
            return Err(io::Error::new(
                io::ErrorKind::Unsupported,
                "expected an absolute path or an abstract name starting with '@'",
            ));
        }
    };
    let sock = UnixDatagram::unbound()?;
    sock.set_nonblocking(true)?;
    Ok((sock, addr))
}

/// CLOCK_MONOTONIC in microseconds, the clock systemd compares reload times with.
fn monotonic_usec() -> u64 {
    let ts = rustix::time::clock_gettime(rustix::time::ClockId::Monotonic);
    u64::try_from(ts.tv_sec).unwrap_or(0) * 1_000_000
        + u64::try_from(ts.tv_nsec).unwrap_or(0) / 1_000
}

#[cfg(test)]
mod tests {
    use super::*;

    fn recv(sock: &UnixDatagram) -> String {
        let mut buf = [0u8; 512];
        let n = sock.recv(&mut buf).expect("a datagram");
        String::from_utf8_lossy(&buf[..n]).into_owned()
    }

    #[test]
    fn notifies_a_socket_path() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notify");
        let server = UnixDatagram::bind(&path).unwrap();
        let n = Notifier::new(Some(path.as_os_str()), Some(OsStr::new("500000")), None, 1);
        assert_eq!(n.watchdog(), Some(Duration::from_millis(500)));
        n.ready("running 1 job");
        assert_eq!(recv(&server), "READY=1\nSTATUS=running 1 job");
        n.watchdog_ping();
        assert_eq!(recv(&server), "WATCHDOG=1");
        n.reloading();
        let msg = recv(&server);
        assert!(msg.starts_with("RELOADING=1\nMONOTONIC_USEC="), "{msg}");
    }

    #[test]
    fn notifies_an_abstract_socket() {
        let name = format!("stac-uploadd-test-{}", uuid::Uuid::new_v4());
        let server =
            UnixDatagram::bind_addr(&SocketAddr::from_abstract_name(name.as_bytes()).unwrap())
                .unwrap();
        let n = Notifier::new(Some(OsStr::new(&format!("@{name}"))), None, None, 1);
        assert!(n.enabled());
        assert_eq!(n.watchdog(), None);
        n.stopping("stopping");
        assert_eq!(recv(&server), "STOPPING=1\nSTATUS=stopping");
    }

    #[test]
    fn the_watchdog_is_for_the_process_it_names() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notify");
        let _server = UnixDatagram::bind(&path).unwrap();
        let with = |usec: &str, pid: Option<&str>| {
            Notifier::new(
                Some(path.as_os_str()),
                Some(OsStr::new(usec)),
                pid.map(OsStr::new),
                42,
            )
            .watchdog()
        };
        assert_eq!(with("1000000", Some("42")), Some(Duration::from_secs(1)));
        assert_eq!(
            with("1000000", Some("41")),
            None,
            "another process's watchdog"
        );
        assert_eq!(with("0", None), None);
        assert_eq!(with("soon", None), None);
    }

    #[test]
    fn without_a_socket_nothing_happens() {
        let n = Notifier::new(None, Some(OsStr::new("1000000")), None, 1);
        assert!(!n.enabled());
        assert_eq!(n.watchdog(), None, "no socket to ping");
        n.ready("x");
        let bad = Notifier::new(Some(OsStr::new("vsock:2:1234")), None, None, 1);
        assert!(!bad.enabled());
    }
}
