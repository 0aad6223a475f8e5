//! What a reload compares: a fingerprint of everything in the job file that makes up a job's
//! spec, so that a job whose inputs did not change keeps running untouched.
//!
//! Taken from the file's text rather than from the checked spec: the spec holds compiled globs
//! and schedules that have no stable equality, while the inputs are plain TOML. A job's inputs
//! are its own `[[job]]` table, `[defaults]` (inherited settings), `[server]` (the limits and
//! settings jobs share) and the top-level keys; a change to any of them counts as a change of
//! the job. Credentials read from files or the environment are not compared: a reload gives every
//! job a client built afresh from the new file anyway.

use std::collections::HashMap;
use std::hash::{DefaultHasher, Hash, Hasher};

/// Each job's fingerprint, by job name, for a job file that [`super::parse`] accepted.
pub fn job_fingerprints(text: &str) -> HashMap<String, u64> {
    let Ok(doc) = text.parse::<toml::Table>() else {
        return HashMap::new();
    };
    let mut shared = DefaultHasher::new();
    for (key, value) in canonical_entries(&doc) {
        if key != "job" {
            key.hash(&mut shared);
            hash_value(value, &mut shared);
        }
    }
    let shared = shared.finish();
    let jobs = doc
        .get("job")
        .and_then(toml::Value::as_array)
        .map_or(&[][..], Vec::as_slice);
    jobs.iter()
        .filter_map(|job| {
            let name = job.get("name")?.as_str()?.to_owned();
            let mut h = DefaultHasher::new();
            shared.hash(&mut h);
            hash_value(job, &mut h);
            Some((name, h.finish()))
        })
        .collect()
}

/// A table's entries sorted by key: the order keys are written in means nothing.
fn canonical_entries(table: &toml::Table) -> Vec<(&String, &toml::Value)> {
    let mut entries: Vec<_> = table.iter().collect();
    entries.sort_by(|a, b| a.0.cmp(b.0));
    entries
}

fn hash_value(value: &toml::Value, h: &mut DefaultHasher) {
    match value {
        toml::Value::String(s) => (0u8, s).hash(h),
        toml::Value::Integer(i) => (1u8, i).hash(h),
        toml::Value::Float(f) => (2u8, f.to_bits()).hash(h),
        toml::Value::Boolean(b) => (3u8, b).hash(h),
        toml::Value::Datetime(d) => (4u8, d.to_string()).hash(h),
        toml::Value::Array(a) => {
            (5u8, a.len()).hash(h);
            for v in a {
                hash_value(v, h);
            }
        }
        toml::Value::Table(t) => {
            (6u8, t.len()).hash(h);
            for (k, v) in canonical_entries(t) {
                k.hash(h);
                hash_value(v, h);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FILE: &str = r#"
[server]
url = "http://127.0.0.1:9/api/stac/v1"
[defaults]
retries = 2
[[job]]
name = "a"
schedule = "0 3 * * *"
file = "a.zip"
[[job]]
name = "b"
every = "5m"
file = "b.zip"
"#;

    #[test]
    fn a_job_changes_with_its_table_its_defaults_and_the_server_only() {
        let before = job_fingerprints(FILE);
        assert_eq!(before.len(), 2);
        // Only job a's table changes: b keeps its fingerprint.
        let after = job_fingerprints(&FILE.replace("0 3 * * *", "0 4 * * *"));
        assert_ne!(before["a"], after["a"]);
        assert_eq!(before["b"], after["b"]);
        // Shared inputs change every job.
        let after = job_fingerprints(&FILE.replace("retries = 2", "retries = 3"));
        assert!(before["a"] != after["a"] && before["b"] != after["b"]);
        // Order, spacing and comments mean nothing.
        let reordered = FILE.replace(
            "name = \"a\"\nschedule = \"0 3 * * *\"",
            "schedule = \"0 3 * * *\" # nightly\nname   =   \"a\"",
        );
        assert_eq!(job_fingerprints(&reordered), before);
    }
}
