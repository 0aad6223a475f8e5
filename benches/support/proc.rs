//! What several benches read of their own process and environment: a figure from
//! `/proc/self/status` and a setting from an environment variable. Included by path
//! (`#[path = "support/proc.rs"] mod proc;`), not a bench.

/// `field` of `/proc/self/status` in KiB (`"VmHWM:"`: the peak resident set), 0 when unknown.
pub(crate) fn status_kib(field: &str) -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with(field))
        .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        .unwrap_or(0)
}

/// The environment variable `name` parsed, or `default` when unset or unparsable.
pub(crate) fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}
