//! A throw-away PostgreSQL server for the cluster bench: a copy of the essentials of
//! tests/it/fixtures/postgres.rs (a bench is another crate and cannot use the test fixtures):
//! initdb in a temp folder (as the `postgres` user when root: the server refuses to run as
//! root), a free port on 127.0.0.1, start, stop when dropped. Durability is off: the bench's
//! database dies with it. Included by path (`#[path = "support/pg.rs"] mod pg;`), not a bench.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{Context, bail};

/// A running server with trust authentication for `postgres` from 127.0.0.1.
pub(crate) struct Postgres {
    bin: PathBuf,
    run_as_postgres: bool,
    port: u16,
    folder: tempfile::TempDir,
}

impl Postgres {
    /// initdb, configure, start on a free port.
    pub(crate) fn start() -> anyhow::Result<Postgres> {
        let bin = bin_dir()?;
        let run_as_postgres = rustix::process::geteuid().is_root();
        let folder = tempfile::Builder::new()
            .prefix("stac-uploadd-bench-pg-")
            .tempdir()
            .context("a temp folder for PostgreSQL")?;
        if run_as_postgres {
            use std::os::unix::fs::PermissionsExt as _;
            let (uid, gid) = postgres_user()?;
            std::fs::set_permissions(folder.path(), std::fs::Permissions::from_mode(0o755))?;
            std::os::unix::fs::chown(folder.path(), Some(uid), Some(gid))
                .context("chown the PostgreSQL folder to postgres")?;
        }
        let mut pg = Postgres {
            bin,
            run_as_postgres,
            port: 0,
            folder,
        };
        let data = pg.data().to_string_lossy().into_owned();
        pg.run(
            "initdb",
            &[
                "-D",
                &data,
                "-A",
                "trust",
                "-U",
                "postgres",
                "-E",
                "UTF8",
                "--no-sync",
            ],
        )?;
        pg.port = free_port()?;
        let conf = pg.data().join("postgresql.conf");
        let mut text =
            std::fs::read_to_string(&conf).with_context(|| conf.display().to_string())?;
        text.push_str(&format!(
            "\nport = {}\nlisten_addresses = '127.0.0.1'\nunix_socket_directories = '{}'\n\
             max_connections = 200\nshared_buffers = 32MB\nfsync = off\nsynchronous_commit = off\n\
             full_page_writes = off\nlogging_collector = off\n",
            pg.port,
            pg.folder.path().display()
        ));
        std::fs::write(&conf, text).with_context(|| conf.display().to_string())?;
        let log = pg
            .folder
            .path()
            .join("server.log")
            .to_string_lossy()
            .into_owned();
        pg.run(
            "pg_ctl",
            &["-D", &data, "start", "-w", "-t", "60", "-l", &log],
        )?;
        Ok(pg)
    }

    /// The URL of database `db` (create it first with [`Postgres::create_database`]).
    pub(crate) fn url(&self, db: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{db}", self.port)
    }

    /// `CREATE DATABASE db`.
    pub(crate) async fn create_database(&self, db: &str) -> anyhow::Result<()> {
        self.execute(&format!("CREATE DATABASE {db}")).await
    }

    /// Runs `sql` in the database `postgres`.
    pub(crate) async fn execute(&self, sql: &str) -> anyhow::Result<()> {
        use sqlx::Connection as _;
        let mut conn = sqlx::PgConnection::connect(&self.url("postgres")).await?;
        sqlx::raw_sql(sql)
            .execute(&mut conn)
            .await
            .with_context(|| sql.to_owned())?;
        conn.close().await?;
        Ok(())
    }

    /// Transactions committed in database `db` so far (`pg_stat_database.xact_commit`; the
    /// server publishes a backend's counts within a second).
    pub(crate) async fn xact_commit(&self, db: &str) -> anyhow::Result<i64> {
        use sqlx::Connection as _;
        let mut conn = sqlx::PgConnection::connect(&self.url("postgres")).await?;
        // Without this the snapshot of the statistics would be this transaction's.
        sqlx::raw_sql("SELECT pg_stat_clear_snapshot()")
            .execute(&mut conn)
            .await?;
        let n: i64 =
            sqlx::query_scalar("SELECT xact_commit FROM pg_stat_database WHERE datname = $1")
                .bind(db)
                .fetch_one(&mut conn)
                .await?;
        conn.close().await?;
        Ok(n)
    }

    /// CPU seconds (user + system) of the server's processes: the postmaster, its live children,
    /// and (through the postmaster's `cutime`/`cstime`) the children it already reaped.
    pub(crate) fn cpu_seconds(&self) -> anyhow::Result<f64> {
        let pidfile = self.data().join("postmaster.pid");
        let text =
            std::fs::read_to_string(&pidfile).with_context(|| pidfile.display().to_string())?;
        let Some(pid) = text
            .lines()
            .next()
            .and_then(|l| l.trim().parse::<u32>().ok())
        else {
            bail!("{}: no pid on its first line", pidfile.display());
        };
        let mut ticks = 0u64;
        for entry in std::fs::read_dir("/proc")?.flatten() {
            let Some(p) = entry
                .file_name()
                .to_str()
                .and_then(|n| n.parse::<u32>().ok())
            else {
                continue;
            };
            let Some(stat) = proc_stat(p) else { continue };
            if p == pid {
                ticks += stat.utime + stat.stime + stat.cutime + stat.cstime;
            } else if stat.ppid == pid {
                ticks += stat.utime + stat.stime;
            }
        }
        Ok(ticks as f64 / USER_HZ)
    }

    fn data(&self) -> PathBuf {
        self.folder.path().join("data")
    }

    fn command(&self, tool: &str) -> Command {
        let exe = self.bin.join(tool);
        let mut c = if self.run_as_postgres {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(exe);
            c
        } else {
            Command::new(exe)
        };
        c.current_dir(self.folder.path())
            .env("LC_ALL", "C")
            .env_remove("PGDATA")
            .env_remove("PGPORT")
            .stdin(Stdio::null());
        c
    }

    fn run(&self, tool: &str, args: &[&str]) -> anyhow::Result<()> {
        let out = self
            .command(tool)
            .args(args)
            .output()
            .with_context(|| format!("running {tool}"))?;
        if !out.status.success() {
            bail!(
                "{tool} {}: {}\n{}{}",
                args.join(" "),
                out.status,
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(())
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        let data = self.data().to_string_lossy().into_owned();
        let _ = self
            .command("pg_ctl")
            .args(["-D", &data, "stop", "-m", "immediate", "-w", "-t", "30"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

/// `/proc/PID/stat` counts CPU time in USER_HZ, 100 on every Linux the daemon ships for.
const USER_HZ: f64 = 100.0;

struct Stat {
    ppid: u32,
    utime: u64,
    stime: u64,
    cutime: u64,
    cstime: u64,
}

fn proc_stat(pid: u32) -> Option<Stat> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may hold spaces and parentheses: split after its last `)`.
    let rest = &text[text.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    // Fields from 3 (state) on: ppid is 4, utime 14, stime 15, cutime 16, cstime 17.
    let n = |i: usize| f.get(i - 3)?.parse::<u64>().ok();
    Some(Stat {
        ppid: u32::try_from(n(4)?).ok()?,
        utime: n(14)?,
        stime: n(15)?,
        cutime: n(16)?,
        cstime: n(17)?,
    })
}

/// The folder of `initdb` and `pg_ctl`: the one on PATH, else the highest
/// /usr/lib/postgresql/*/bin.
fn bin_dir() -> anyhow::Result<PathBuf> {
    let complete = |d: &Path| {
        ["initdb", "pg_ctl", "postgres"]
            .iter()
            .all(|t| d.join(t).is_file())
    };
    let on_path = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .unwrap_or_default()
        .into_iter()
        .filter_map(|d| std::fs::canonicalize(d.join("initdb")).ok())
        .filter_map(|exe| exe.parent().map(Path::to_path_buf))
        .find(|d| complete(d));
    if let Some(d) = on_path {
        return Ok(d);
    }
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let v = e.file_name().to_str()?.split('.').next()?.parse().ok()?;
            Some((v, e.path().join("bin")))
        })
        .filter(|(_, b)| complete(b))
        .collect();
    versions.sort();
    match versions.pop() {
        Some((_, b)) => Ok(b),
        None => bail!("PostgreSQL is required: apt-get install postgresql (no initdb found)"),
    }
}

fn postgres_user() -> anyhow::Result<(u32, u32)> {
    let out = Command::new("getent")
        .args(["passwd", "postgres"])
        .output()?;
    let line = String::from_utf8_lossy(&out.stdout).into_owned();
    let f: Vec<&str> = line.trim().split(':').collect();
    match (
        f.get(2).and_then(|u| u.parse().ok()),
        f.get(3).and_then(|g| g.parse().ok()),
    ) {
        (Some(u), Some(g)) => Ok((u, g)),
        _ => bail!("running as root and there is no `postgres` user to run PostgreSQL as"),
    }
}

/// A port free on 127.0.0.1 now, below Linux's ephemeral range (nothing asking the kernel for
/// any port is handed it later).
fn free_port() -> anyhow::Result<u16> {
    for _ in 0..1000 {
        let port = rand::random_range(20_000..32_000);
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return Ok(port);
        }
    }
    bail!("no free port on 127.0.0.1 between 20000 and 32000")
}
