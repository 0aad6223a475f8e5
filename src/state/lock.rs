//! The state folder's lock: one process at a time uses a state folder (the daemon, `run
//! --once`, `uploads --abort`); the others are told who holds it.

use std::path::Path;

use anyhow::Context as _;

/// Holds the state folder for this process; released on drop (and by the kernel on a crash).
#[derive(Debug)]
pub struct StateLock(#[allow(dead_code)] std::fs::File);

/// Takes the state folder's lock, so two daemons never share one state.
pub fn lock_state(dir: &Path) -> anyhow::Result<StateLock> {
    std::fs::create_dir_all(dir)
        .with_context(|| format!("cannot create the state folder {}", dir.display()))?;
    let path = dir.join("lock");
    let f = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .with_context(|| format!("cannot open {}", path.display()))?;
    // std's lock is flock(2) on Linux: released by the kernel when the process dies, however.
    match f.try_lock() {
        Ok(()) => {}
        Err(std::fs::TryLockError::Error(e)) => {
            return Err(e).with_context(|| format!("cannot lock {}", path.display()));
        }
        Err(std::fs::TryLockError::WouldBlock) => {
            let holder = match state_holder(dir) {
                Some(pid) if pid != 0 => format!(" (pid {pid})"),
                _ => String::new(),
            };
            anyhow::bail!(
                "another stac-uploadd{holder} is already using the state folder {}",
                dir.display()
            );
        }
    }
    // Who holds it, for `status`; the lock, not this text, is what keeps a second daemon out.
    let mut f = f;
    let _ = f.set_len(0).and_then(|()| {
        use std::io::Write as _;
        write!(f, "{}", std::process::id())
    });
    Ok(StateLock(f))
}

/// The process id of the daemon that holds the state folder `dir` now, if one does.
pub fn state_holder(dir: &Path) -> Option<u32> {
    let f = std::fs::File::open(dir.join("lock")).ok()?;
    // Only "held by another" says a daemon is there; a lock we could take, or could not try,
    // says nothing is.
    let free = !matches!(f.try_lock_shared(), Err(std::fs::TryLockError::WouldBlock));
    if free {
        // Released when `f` closes: nobody held it.
        return None;
    }
    // The holder wrote its pid there: a few bytes, read as such whatever is in its place.
    let limit = stac_client::units::ByteSize(64);
    stac_client::localfile::read_bounded(
        &dir.join("lock"),
        limit,
        stac_client::localfile::Links::Refuse,
    )
    .ok()
    .and_then(|b| String::from_utf8(b).ok())
    .and_then(|t| t.trim().parse().ok())
    .or(Some(0))
}
