//! stac-uploadd: publish files to a service-stac STAC API (data.geo.admin.ch), once or on a
//! schedule.
//!
//! The daemon's crate, the top of the workspace (ARCHITECTURE.md): it reads the job file
//! (`config`), fires runs (`trigger`), runs them under the recurring-upload policy
//! (`supervisor`), keeps what must survive a restart (`state`) and reports (`observe`). The
//! wire protocol is `stac-client`'s, one file to one asset is `stac-upload`'s; this crate adds
//! no protocol of its own. Inside it, the dependency runs one way too, checked by the test
//! `layers` (tests/it/layers.rs):
//!
//! ```text
//! cli ─► daemon, once, ops, demo ─► supervisor ─► config ─► trigger ─► observe ─► state
//!                                   └─► status ─┘ (the status page: config, trigger, state)
//! ```
//!
//! The public modules are what the binary, the benches and the integration tests use; the
//! commands behind `cli` are private.

pub mod cli;
pub mod cluster;
pub mod config;
pub mod exit;
pub mod geo;
pub mod memory;
pub mod observe;
pub mod retention;
pub mod state;
pub mod status;
pub mod supervisor;
pub mod trigger;

mod daemon;
#[cfg(feature = "emulator")]
mod demo;
mod notify;
mod once;
mod ops;
mod progress;
mod sample;

#[doc(hidden)]
pub mod fuzzing;

pub use sample::{cog_header, write_sample, write_sample_cog, write_sample_json, write_sample_zip};
