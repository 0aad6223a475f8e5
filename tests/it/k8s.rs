//! The Kubernetes cluster variant (deploy/k8s/cluster) agrees with itself: the job file's
//! `[cluster]` table names the environment variable the Deployment sets from the Secret and a CA
//! file under the Secret's mount, `expected_members` is the Deployment's `replicas`, the pods get
//! longer to stop than the daemon's shutdown grace, and the state is not on a volume claim.
//! Schema validity is checked by hand (`kubernetes-validate --strict`, docs/deployment.md):
//! that tool is not a dependency of the test command.
//!
//! The manifests are read with line lookups of the keys they are written with, not a YAML
//! crate (none is a dependency, see dashboard.rs); each lookup fails loudly when its key is
//! missing or written otherwise, so a reshaped manifest breaks this test rather than passing it.

use std::path::Path;

const KUSTOMIZATION: &str = include_str!("../../deploy/k8s/cluster/kustomization.yaml");
const CONFIGMAP: &str = include_str!("../../deploy/k8s/cluster/configmap.yaml");
const DEPLOYMENT: &str = include_str!("../../deploy/k8s/cluster/deployment.yaml");
const PDB: &str = include_str!("../../deploy/k8s/cluster/pdb.yaml");
const SECRET: &str = include_str!("../../deploy/k8s/cluster/secret.yaml");

/// The daemon's default `--shutdown-grace` (src/cli/mod.rs), in seconds.
const SHUTDOWN_GRACE_SECS: u64 = 30;

/// The values of every `key: value` line (comments and quotes stripped), in file order.
fn values<'a>(text: &'a str, key: &str) -> Vec<&'a str> {
    text.lines()
        .filter(|l| !l.trim_start().starts_with('#'))
        .filter_map(|l| {
            let rest = l.trim_start().trim_start_matches("- ");
            let value = rest.strip_prefix(key)?.strip_prefix(':')?;
            Some(
                value
                    .split(" #")
                    .next()
                    .unwrap_or_default()
                    .trim()
                    .trim_matches('"'),
            )
        })
        .collect()
}

/// The one value of `key` in `text`.
fn value<'a>(text: &'a str, file: &str, key: &str) -> &'a str {
    match values(text, key).as_slice() {
        [v] => v,
        found => panic!("{file}: one {key:?} expected, found {found:?}"),
    }
}

/// The `jobs.toml: |` block of the ConfigMap, unindented.
fn job_file() -> String {
    let mut lines = CONFIGMAP.lines().skip_while(|l| l.trim() != "jobs.toml: |");
    let header = lines
        .next()
        .expect("configmap.yaml: no `jobs.toml: |` block");
    let indent = header.len() - header.trim_start().len();
    let body: Vec<&str> = lines
        .take_while(|l| l.trim().is_empty() || l.len() - l.trim_start().len() > indent)
        .collect();
    let strip = body
        .iter()
        .filter(|l| !l.trim().is_empty())
        .map(|l| l.len() - l.trim_start().len())
        .min()
        .expect("configmap.yaml: an empty jobs.toml");
    body.iter()
        .map(|l| l.get(strip..).unwrap_or_default())
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn the_cluster_variant_agrees_with_its_job_file() {
    let jobs: toml::Table = toml::from_str(&job_file())
        .unwrap_or_else(|e| panic!("deploy/k8s/cluster/configmap.yaml: jobs.toml: {e}"));
    let cluster = jobs["cluster"]
        .as_table()
        .expect("jobs.toml: a [cluster] table");
    // Only the keys of the table, which has none for the URL itself: never inline.
    for key in cluster.keys() {
        assert!(
            [
                "url_env",
                "url_file",
                "ca_file",
                "instance",
                "lease",
                "heartbeat",
                "expected_members"
            ]
            .contains(&key.as_str()),
            "jobs.toml: [cluster] {key} is not a key of the table"
        );
    }
    assert!(
        !cluster.contains_key("instance"),
        "the pod's name is the instance"
    );

    // The URL's variable is set by the Deployment, from the Secret's `url`.
    let url_env = cluster["url_env"].as_str().expect("url_env, a string");
    let env = DEPLOYMENT
        .find(&format!("- name: {url_env}\n"))
        .unwrap_or_else(|| panic!("deployment.yaml: no env {url_env}"));
    let entry = &DEPLOYMENT[env + 2..];
    let entry = &entry[..entry.find("- ").unwrap_or(entry.len())];
    let secret = value(SECRET, "secret.yaml", "name");
    assert_eq!(
        (
            values(entry, "secretKeyRef").len(),
            values(entry, "name").get(1).copied(),
            values(entry, "key")
        ),
        (1, Some(secret), vec!["url"]),
        "deployment.yaml: {url_env} from the Secret's `url`: {entry}"
    );
    assert!(
        SECRET.contains("\n  url: postgres://"),
        "secret.yaml: a `url`"
    );

    // The CA file is the Secret's `ca.pem`, under the mount of the `database-ca` volume.
    let ca_file = Path::new(cluster["ca_file"].as_str().expect("ca_file, a string"));
    let ca_dir = ca_file.parent().expect("ca_file in a folder");
    let mount = DEPLOYMENT
        .find(&format!("mountPath: {}\n", ca_dir.display()))
        .unwrap_or_else(|| panic!("deployment.yaml: no mount at {}", ca_dir.display()));
    let volume_name = DEPLOYMENT[..mount]
        .rsplit_once("- name: ")
        .and_then(|(_, name)| name.lines().next())
        .expect("a named mount");
    let volume = DEPLOYMENT
        .rfind(&format!("- name: {volume_name}\n"))
        .filter(|&at| at > mount)
        .map(|at| &DEPLOYMENT[at + 2..])
        .unwrap_or_else(|| panic!("deployment.yaml: no volume {volume_name}"));
    let volume = &volume[..volume.find("\n        - ").unwrap_or(volume.len())];
    assert_eq!(
        (
            values(volume, "secretName"),
            values(volume, "key"),
            values(volume, "path")
        ),
        (
            vec![secret],
            vec!["ca.pem"],
            vec![
                ca_file
                    .file_name()
                    .and_then(|n| n.to_str())
                    .unwrap_or_default()
            ]
        ),
        "deployment.yaml: volume {volume_name} holds {} from the Secret's `ca.pem`: {volume}",
        ca_file.display()
    );
    assert!(SECRET.contains("\n  ca.pem: |"), "secret.yaml: a `ca.pem`");

    // Sized as the Deployment, which a PDB keeps from losing more than one at a time.
    let replicas: i64 = value(DEPLOYMENT, "deployment.yaml", "replicas")
        .parse()
        .expect("replicas, a number");
    assert!(replicas >= 2, "a cluster of {replicas}");
    assert_eq!(
        cluster["expected_members"].as_integer(),
        Some(replicas),
        "jobs.toml: expected_members is the Deployment's replicas"
    );
    assert_eq!(value(PDB, "pdb.yaml", "maxUnavailable"), "1");
    assert_eq!(
        values(DEPLOYMENT, "type")
            .iter()
            .filter(|t| ["RollingUpdate", "Recreate"].contains(t))
            .collect::<Vec<_>>(),
        [&"RollingUpdate"]
    );
    assert_eq!(value(DEPLOYMENT, "deployment.yaml", "maxUnavailable"), "1");
    assert_eq!(value(DEPLOYMENT, "deployment.yaml", "maxSurge"), "1");

    // Stopping: the grace, then the hand-over, before Kubernetes kills the pod.
    let stop: u64 = value(
        DEPLOYMENT,
        "deployment.yaml",
        "terminationGracePeriodSeconds",
    )
    .parse()
    .expect("terminationGracePeriodSeconds, a number");
    assert!(stop > SHUTDOWN_GRACE_SECS, "{stop} s to stop");

    // Probes, and no state claim (the state folder is an emptyDir).
    let probes: Vec<&str> = values(DEPLOYMENT, "path");
    assert!(
        probes.contains(&"/readyz") && probes.contains(&"/healthz"),
        "{probes:?}"
    );
    assert!(DEPLOYMENT.contains("- name: state\n          emptyDir:"));
    assert_eq!(values(DEPLOYMENT, "claimName"), ["geodata"]);

    // What kustomize applies: the three, and never the Secret's placeholder.
    assert_eq!(
        KUSTOMIZATION
            .lines()
            .filter(|l| !l.trim_start().starts_with('#'))
            .filter_map(|l| l.trim().strip_prefix("- ").filter(|r| r.ends_with(".yaml")))
            .collect::<Vec<_>>(),
        ["configmap.yaml", "deployment.yaml", "pdb.yaml"]
    );
}

/// The cluster's job file loads as the daemon loads it: the `[cluster]` table with the URL from
/// its variable, the CA file and the expected size (the Secrets' files replaced by local ones).
#[test]
fn the_cluster_job_file_loads_with_its_cluster_table() {
    let dir = tempfile::tempdir().unwrap();
    let password = dir.path().join("password");
    std::fs::write(&password, "secret\n").unwrap();
    let data = dir.path().join("data");
    std::fs::create_dir_all(data.join("radar")).unwrap();
    let text = job_file()
        .replace(
            "/etc/stac-uploadd/secret/password",
            &password.display().to_string(),
        )
        .replace("/data/", &format!("{}/", data.display()));
    let path = dir.path().join("jobs.toml");
    let env = |name: &str| match name {
        "STAC_UPLOADD_DATABASE_URL" => Some("postgres://stac:pw@db.example:5432/stac".to_owned()),
        _ => None,
    };
    let config = stac_uploadd::config::parse(&text, &path, &env)
        .unwrap_or_else(|e| panic!("deploy/k8s/cluster/configmap.yaml: jobs.toml: {e}"));
    let cluster = config.cluster.expect("a [cluster] table");
    assert_eq!(cluster.expected_members, Some(3));
    assert_eq!(
        cluster.ca_file.as_deref(),
        Some(std::path::Path::new("/etc/stac-uploadd/database/ca.pem"))
    );
    assert_eq!(cluster.instance, None, "each pod names itself");
    assert!(config.jobs.iter().all(|j| j.catch_up));
}
