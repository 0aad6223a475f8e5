//! stac-uploadd: publish files to a service-stac STAC API (data.geo.admin.ch), once or on a schedule.
//!
//! Layers, one direction of dependency: `upload` (one file to one asset) calls `stac` (the wire
//! protocol); the `emulator` is an independent server implementation of the same protocol used by
//! the tests, the demo and users who want to try a job safely.

pub mod cli;
pub mod config;
pub mod daemon;
pub mod demo;
pub mod emulator;
#[doc(hidden)]
pub mod fuzzing;
pub mod observe;
pub mod progress;
pub mod retry;
pub mod stac;
pub mod state;
pub mod supervisor;
pub mod trigger;
pub mod units;
pub mod upload;
