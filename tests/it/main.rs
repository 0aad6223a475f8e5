//! The integration tests of stac-uploadd, as one test binary with a module per area.
//!
//! One binary, not a file per area: each test binary links the whole library and its ~226-crate
//! graph, and linking 25 of them was most of the test command's time. The cost is that every test
//! shares one process with the others, on parallel threads: whatever is process-wide (the metrics
//! recorder, the watch hub and `/readyz` boards, the resident set) is set up once in [`fixtures`]
//! or measured in a process of its own ([`fixtures::alone_in_process`]).

// A test binary has no public surface: `pub` here only shares fixtures between its modules.
#![allow(unreachable_pub)]

mod fixtures;

mod bounds;
mod browser;
mod bundles;
mod check_online;
mod cli;
mod cluster;
mod cluster_fence;
mod cluster_soak;
mod cluster_store;
mod cognito;
mod config;
mod crash_matrix;
mod daemon;
mod dashboard;
mod digest;
mod inspect;

mod from_file;
mod items;
mod items_api;
mod k8s;
mod layers;
mod media_types;
mod name_pattern;
mod notify;
mod objects;
mod observe;
mod pg_fixture;
mod properties;
mod proxy;
mod publisher;
mod reload;
mod retention;
mod run_once;
mod schedules;
mod secrets;
mod sidecar;
mod soak;
mod state;
mod state_suite;
mod status_page;
mod systemd;
mod tls;
mod upload;
mod uploads_cmd;
mod verify_public;
mod watch;
