//! How a command ends: its exit code, and the signals that stop a one-shot command (`upload`,
//! `demo`, `run --once`) after it cleaned up.

/// Exit codes: 0 success, 1 runtime failure, 2 bad usage, input or config, 3 the state folder
/// needs an operator (a corrupt record of uploads in flight), 128 + the signal's number for
/// `upload` stopped by a signal (the shell's convention). systemd restarts on 1 only.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExitCode {
    Success = 0,
    Failure = 1,
    Usage = 2,
    NeedsOperator = 3,
    /// Stopped by SIGHUP.
    Hangup = 129,
    /// Stopped by SIGINT.
    Interrupted = 130,
    /// Stopped by SIGTERM.
    Terminated = 143,
}

/// A signal that stops a one-shot command.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopSignal {
    Hangup,
    Interrupt,
    Terminate,
}

impl StopSignal {
    /// Its conventional name, for messages.
    pub fn name(self) -> &'static str {
        match self {
            StopSignal::Hangup => "SIGHUP",
            StopSignal::Interrupt => "SIGINT",
            StopSignal::Terminate => "SIGTERM",
        }
    }

    /// The exit code of a command it stopped.
    pub fn exit_code(self) -> ExitCode {
        match self {
            StopSignal::Hangup => ExitCode::Hangup,
            StopSignal::Interrupt => ExitCode::Interrupted,
            StopSignal::Terminate => ExitCode::Terminated,
        }
    }
}

/// A command stopped by a signal, after it cleaned up.
#[derive(Debug, thiserror::Error)]
#[error("stopped by {}", .0.name())]
pub struct Stopped(pub StopSignal);

/// Listens for SIGTERM, SIGINT and SIGHUP from now on (a signal between this call and the first
/// poll is not lost: the handlers are installed here); the future resolves with the first.
pub fn stop_signals()
-> anyhow::Result<impl std::future::Future<Output = StopSignal> + Send + 'static> {
    use anyhow::Context as _;
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).context("cannot listen for SIGTERM")?;
    let mut int = signal(SignalKind::interrupt()).context("cannot listen for SIGINT")?;
    let mut hup = signal(SignalKind::hangup()).context("cannot listen for SIGHUP")?;
    Ok(async move {
        tokio::select! {
            _ = term.recv() => StopSignal::Terminate,
            _ = int.recv() => StopSignal::Interrupt,
            _ = hup.recv() => StopSignal::Hangup,
        }
    })
}
