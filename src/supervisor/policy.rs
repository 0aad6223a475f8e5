//! The recurring-upload policy of docs/protocol.md: low-frequency jobs retry with exponential backoff,
//! high-frequency jobs give a failed run up and wait for the next. The settings are defined in
//! `config` (which reads them); this module keeps their old path.

pub use crate::config::{PolicyKind, PolicySpec};
