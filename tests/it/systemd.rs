//! The real daemon binary under the systemd notify protocol: the test plays the service manager
//! on a unix datagram socket named by NOTIFY_SOCKET, with a 500 ms watchdog.

use std::os::linux::net::SocketAddrExt as _;
use std::os::unix::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use crate::fixtures::{JobFile, daemon_command, signal, write_file};
use tokio::net::UnixDatagram;
use tokio::process::Child;

use crate::fixtures::basic_emulator as emulator;

fn job_file(dir: &Path, url: &str) -> PathBuf {
    let file = dir.join("small.zip");
    write_file(&file, 1000, 3);
    JobFile::new(dir, url)
        .cron("every-second", "small.zip", &file, "* * * * * *")
        .lines("policy = \"cancel\"")
        .write()
}

fn spawn(config: &Path, notify_socket: &str) -> Child {
    daemon_command(&["run"], config)
        .env("NOTIFY_SOCKET", notify_socket)
        .env("WATCHDOG_USEC", "500000")
        .env_remove("WATCHDOG_PID")
        .stderr(Stdio::null())
        .spawn()
        .expect("the daemon starts")
}

/// What the service manager hears: one entry per datagram.
struct Manager {
    socket: UnixDatagram,
    heard: Vec<String>,
}

impl Manager {
    fn new(socket: UnixDatagram) -> Self {
        Self {
            socket,
            heard: Vec::new(),
        }
    }

    /// Reads datagrams until one has the line `line`; returns that datagram.
    async fn until(&mut self, line: &str, limit: Duration) -> String {
        let deadline = tokio::time::Instant::now() + limit;
        let mut buf = vec![0u8; 4096];
        loop {
            let n = tokio::time::timeout_at(deadline, self.socket.recv(&mut buf))
                .await
                .unwrap_or_else(|_| panic!("no {line} within {limit:?}; heard {:?}", self.heard))
                .expect("recv");
            let msg = String::from_utf8_lossy(&buf[..n]).into_owned();
            self.heard.push(msg.clone());
            if msg.lines().any(|l| l == line) {
                return msg;
            }
        }
    }
}

#[tokio::test]
async fn ready_watchdog_reload_and_stop_are_notified() {
    let emu = emulator().await;
    let dir = tempfile::tempdir().unwrap();
    let config = job_file(dir.path(), &emu.base_url());
    let path = dir.path().join("notify.sock");
    let mut manager = Manager::new(UnixDatagram::bind(&path).unwrap());
    let mut daemon = spawn(&config, path.to_str().unwrap());

    let ready = manager.until("READY=1", Duration::from_secs(30)).await;
    assert!(
        ready.lines().any(|l| l.starts_with("STATUS=running 1 job")),
        "{ready}"
    );
    // Half the watchdog period: about 4 pings a second. Waits for three more pings, each within
    // a bound far above its period, rather than counting them in one wall-clock second, which a
    // loaded machine can stretch.
    for _ in 0..3 {
        manager.until("WATCHDOG=1", Duration::from_secs(10)).await;
    }

    signal(&daemon, libc::SIGHUP);
    let reloading = manager.until("RELOADING=1", Duration::from_secs(10)).await;
    assert!(
        reloading.lines().any(|l| l.starts_with("MONOTONIC_USEC=")),
        "{reloading}"
    );
    manager.until("READY=1", Duration::from_secs(30)).await;

    signal(&daemon, libc::SIGTERM);
    manager.until("STOPPING=1", Duration::from_secs(10)).await;
    let status = tokio::time::timeout(Duration::from_secs(30), daemon.wait())
        .await
        .expect("stops on SIGTERM")
        .unwrap();
    assert_eq!(status.code(), Some(0));
    assert!(
        emu.in_progress_uploads().is_empty(),
        "nothing left in progress"
    );
}

#[tokio::test]
async fn an_abstract_notify_socket_is_reached() {
    let emu = emulator().await;
    let dir = tempfile::tempdir().unwrap();
    let config = job_file(dir.path(), &emu.base_url());
    let name = format!("stac-uploadd-test-{}", uuid::Uuid::new_v4());
    let std_socket = std::os::unix::net::UnixDatagram::bind_addr(
        &SocketAddr::from_abstract_name(&name).unwrap(),
    )
    .unwrap();
    std_socket.set_nonblocking(true).unwrap();
    let mut manager = Manager::new(UnixDatagram::from_std(std_socket).unwrap());
    let mut daemon = spawn(&config, &format!("@{name}"));

    manager.until("READY=1", Duration::from_secs(30)).await;
    manager.until("WATCHDOG=1", Duration::from_secs(2)).await;
    signal(&daemon, libc::SIGTERM);
    manager.until("STOPPING=1", Duration::from_secs(10)).await;
    let status = tokio::time::timeout(Duration::from_secs(30), daemon.wait())
        .await
        .expect("stops on SIGTERM")
        .unwrap();
    assert_eq!(status.code(), Some(0));
}
