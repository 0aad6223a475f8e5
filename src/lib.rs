//! stac-uploadd: publish files to a service-stac STAC API (data.geo.admin.ch), once or on a schedule.
//!
//! Layers, one direction of dependency: `upload` (one file to one asset) calls `stac` (the wire
//! protocol); `supervisor` runs jobs when their `trigger` fires. The emulator, an independent server
//! implementation of the same protocol used by the tests, the demo and users who want to try a job
//! safely, is a crate of its own (`stac-uploadd-emulator`, in `emulator/`) that shares no type with
//! this one.

pub mod cli;
pub mod config;
pub mod daemon;
pub mod demo;
#[doc(hidden)]
pub mod fuzzing;
pub mod localfile;
pub mod observe;
pub mod once;
pub mod ops;
pub mod progress;
pub mod retry;
pub mod stac;
pub mod state;
pub mod supervisor;
pub mod trigger;
pub mod units;
pub mod upload;
