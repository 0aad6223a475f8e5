//! Retention (`keep`) and `prune`: the real binary, and the library's prune, against the emulator
//! over HTTP. What is deleted is exactly the job's own old items (assets first: the emulator, as
//! the server, refuses to delete an item that still has assets), and nothing else.

use std::path::{Path, PathBuf};

use chrono::{Duration as Days, Utc};
use serde_json::json;
use stac_client::StacClient;
use stac_uploadd::retention::{self, Deleted, MAX_DELETIONS_PER_RUN, Retention};
use stac_uploadd_emulator::{AssetKey, Emulator};
use tokio::process::Command;

use crate::fixtures::*;

const COLLECTION: &str = "ch.test.collection";

/// An item with one asset per name, made in the emulator (its collection too).
fn item_with_assets(emu: &Emulator, item: &str, assets: &[&str]) {
    for asset in assets {
        emu.create_asset(
            &AssetKey {
                collection: COLLECTION.into(),
                item: Some(item.into()),
                asset: (*asset).into(),
            },
            "application/zip",
        )
        .expect("the emulator creates the asset");
    }
}

fn asset_key(item: &str, asset: &str) -> AssetKey {
    AssetKey {
        collection: COLLECTION.into(),
        item: Some(item.into()),
        asset: asset.into(),
    }
}

async fn exists(client: &StacClient, item: &str) -> bool {
    client
        .get_item(COLLECTION, item)
        .await
        .expect("the emulator answers")
        .is_some()
}

/// The ids the `s2` job writes today and tomorrow (UTC): a run near midnight writes one of them.
fn current_ids() -> [String; 2] {
    let now = Utc::now();
    [now, now + Days::days(1)].map(|t| t.format("s2-%Y-%m-%d").to_string())
}

/// A job file with the `s2` job (`keep` as given, a daily item, its asset `s2.zip`) and the
/// `radar` job, another template in the same collection, with its own `keep`.
fn job_file(dir: &Path, url: &str, keep: &str) -> PathBuf {
    let file = dir.join("s2.zip");
    write_file(&file, 1024, 7);
    JobFile::new(dir, url)
        .defaults(FAST_RETRIES)
        .lines(&format!(
            "[[job]]\nname = \"s2\"\ncollection = \"{COLLECTION}\"\nitem = \"s2-%Y-%m-%d\"\nasset = \"s2.zip\"\nfile = \"{}\"\nschedule = \"0 5 * * *\"\ntimezone = \"UTC\"\nkeep = {keep}\n",
            file.display()
        ))
        .lines(&format!(
            "[[job]]\nname = \"radar\"\ncollection = \"{COLLECTION}\"\nitem = \"radar-%Y%m%d\"\nasset = \"r.zip\"\nfile = \"{}\"\nschedule = \"0 6 * * *\"\ntimezone = \"UTC\"\nkeep = 1000\n",
            file.display()
        ))
        .write()
}

/// The collection as the tests lay it out: three old `s2` items (two with two assets), the
/// current ones, an old item of the radar job and a hand-made one.
fn lay_out(emu: &Emulator) {
    item_with_assets(emu, "s2-2020-01-01", &["a.zip", "b.zip"]);
    item_with_assets(emu, "s2-2020-01-02", &["a.zip", "b.zip"]);
    item_with_assets(emu, "s2-2020-01-03", &["a.zip"]);
    for id in current_ids() {
        item_with_assets(emu, &id, &["s2.zip"]);
    }
    item_with_assets(emu, "radar-20200101", &["r.zip"]);
    item_with_assets(emu, "notes", &["n.zip"]);
}

const OLD: [&str; 3] = ["s2-2020-01-01", "s2-2020-01-02", "s2-2020-01-03"];
const OTHERS: [&str; 2] = ["radar-20200101", "notes"];

fn ok(out: &Out) -> bool {
    out.code == Some(0)
}

fn text(out: &Out) -> String {
    format!(
        "exit {:?}\nstdout:\n{}\nstderr:\n{}",
        out.code, out.stdout, out.stderr
    )
}

async fn prune_command(config: &Path, args: &[&str]) -> Out {
    let out = Command::new(BIN)
        .arg("prune")
        .arg("--config")
        .arg(config)
        .args(args)
        .env("TEST_STAC_PASSWORD", PASSWORD)
        .output()
        .await
        .expect("the binary runs");
    Out::from(out)
}

#[tokio::test]
async fn a_successful_run_deletes_exactly_its_own_old_items_assets_first() {
    let emu = basic_emulator().await;
    let dir = tempfile::tempdir().unwrap();
    let client = client_for(&emu.base_url(), stac_client::ApiVersion::V1, basic());
    lay_out(&emu);
    let config = job_file(dir.path(), &emu.base_url(), "\"30d\"");

    let out = Out::from(
        once_command(&["--job", "s2"], &config)
            .output()
            .await
            .expect("the binary runs"),
    );
    assert!(ok(&out), "{}", text(&out));

    for id in OLD {
        assert!(
            !exists(&client, id).await,
            "{id} should be gone\n{}",
            text(&out)
        );
        assert!(emu.asset(&asset_key(id, "a.zip")).is_none(), "{id}/a.zip");
    }
    for id in current_ids().iter().map(String::as_str).chain(OTHERS) {
        assert!(
            exists(&client, id).await,
            "{id} should survive\n{}",
            text(&out)
        );
    }
    assert!(emu.asset(&asset_key("radar-20200101", "r.zip")).is_some());
    assert!(emu.asset(&asset_key("notes", "n.zip")).is_some());
}

#[tokio::test]
async fn prune_dry_run_deletes_nothing_and_prune_does_it() {
    let emu = basic_emulator().await;
    let dir = tempfile::tempdir().unwrap();
    let client = client_for(&emu.base_url(), stac_client::ApiVersion::V1, basic());
    lay_out(&emu);
    // keep = 2: the two current items are the newest; the old three go.
    let config = job_file(dir.path(), &emu.base_url(), "2");

    let out = prune_command(&config, &["--job", "s2", "--dry-run"]).await;
    assert!(ok(&out), "{}", text(&out));
    for id in OLD {
        assert!(
            out.stdout
                .contains(&format!("would delete {COLLECTION}/{id}: time ")),
            "{id}\n{}",
            text(&out)
        );
        assert!(exists(&client, id).await, "a dry run deleted {id}");
    }
    assert!(
        out.stdout.contains("not among the newest 2"),
        "{}",
        text(&out)
    );
    assert!(!out.stdout.contains("radar-"), "{}", text(&out));

    let out = prune_command(&config, &["--job", "s2"]).await;
    assert!(ok(&out), "{}", text(&out));
    for id in OLD {
        assert!(
            out.stdout.contains(&format!("deleted {COLLECTION}/{id}: ")),
            "{id}\n{}",
            text(&out)
        );
        assert!(!exists(&client, id).await, "{id}");
    }
    for id in current_ids().iter().map(String::as_str).chain(OTHERS) {
        assert!(
            exists(&client, id).await,
            "{id} should survive\n{}",
            text(&out)
        );
    }

    // A job the file does not have is a usage error.
    let out = prune_command(&config, &["--job", "nope"]).await;
    assert_eq!(out.code, Some(2), "{}", text(&out));
}

#[tokio::test]
async fn a_bounded_prune_leaves_the_rest_for_next_time() {
    let emu = basic_emulator().await;
    let dir = tempfile::tempdir().unwrap();
    let client = client_for(&emu.base_url(), stac_client::ApiVersion::V1, basic());
    let start = chrono::NaiveDate::from_ymd_opt(2020, 1, 1).unwrap();
    let extra = 5;
    let ids: Vec<String> = (0..MAX_DELETIONS_PER_RUN + extra)
        .map(|d| {
            (start + Days::days(d as i64))
                .format("s2-%Y-%m-%d")
                .to_string()
        })
        .collect();
    for id in &ids {
        item_with_assets(&emu, id, &["a.zip"]);
    }
    let config = job_file(dir.path(), &emu.base_url(), "\"30d\"");

    let out = prune_command(&config, &["--job", "s2"]).await;
    assert!(ok(&out), "{}", text(&out));
    assert!(
        out.stdout
            .contains(&format!("{extra} more left for the next run")),
        "{}",
        text(&out)
    );
    // Oldest first: the newest `extra` are what is left.
    let (gone, left) = ids.split_at(MAX_DELETIONS_PER_RUN);
    assert!(!exists(&client, &gone[0]).await);
    assert!(!exists(&client, gone.last().unwrap()).await);
    for id in left {
        assert!(exists(&client, id).await, "{id}");
    }

    let out = prune_command(&config, &["--job", "s2"]).await;
    assert!(ok(&out), "{}", text(&out));
    for id in left {
        assert!(!exists(&client, id).await, "{id}");
    }
}

#[tokio::test]
async fn the_alias_survives_even_where_the_template_could_produce_it() {
    let emu = basic_emulator().await;
    let dir = tempfile::tempdir().unwrap();
    let client = client_for(&emu.base_url(), stac_client::ApiVersion::V1, basic());
    emu.create_collection(COLLECTION);
    // A template without a date: the items' datetime decides.
    let geometry = json!({"type": "Polygon", "coordinates": [[[5.9, 45.8], [10.5, 45.8], [10.5, 47.8], [5.9, 47.8], [5.9, 45.8]]]});
    for (id, year) in [
        ("s2-current", 2019),
        ("s2-a", 2020),
        ("s2-b", 2021),
        ("s2-c", 2022),
    ] {
        client
            .put_item(
                COLLECTION,
                id,
                &json!({
                    "id": id,
                    "geometry": geometry,
                    "properties": {"datetime": format!("{year}-01-01T00:00:00Z")},
                    "links": [],
                }),
            )
            .await
            .unwrap_or_else(|e| panic!("the emulator creates {id}: {e}"));
    }
    let incoming = dir.path().join("incoming");
    std::fs::create_dir_all(&incoming).unwrap();
    let config = JobFile::new(dir.path(), &emu.base_url())
        .lines(&format!(
            "[[job]]\nname = \"s2\"\ncollection = \"{COLLECTION}\"\nitem = \"s2-{{stem}}\"\nasset = \"{{stem}}.zip\"\nkeep = 1\n[job.watch]\ndir = \"{}\"\npattern = \"*.zip\"\n{ZIP_TYPE}",
            incoming.display()
        ))
        .write();
    let text = std::fs::read_to_string(&config).unwrap();
    let env = |name: &str| (name == "TEST_STAC_PASSWORD").then(|| PASSWORD.to_owned());
    let mut spec = stac_uploadd::config::parse(&text, &config, &env)
        .expect("the job file loads")
        .jobs
        .remove(0);
    spec.alias = Some("s2-current".into());
    let rule = Retention::for_job(&spec).expect("the job has a rule");

    let mut seen = Vec::new();
    let done = retention::prune(&client, "s2", &rule, Utc::now(), &[], false, |d, o| {
        seen.push((d.id.clone(), matches!(o, Deleted::Done { .. })));
    })
    .await
    .expect("the emulator lists the items");
    assert_eq!(
        seen,
        [("s2-a".to_owned(), true), ("s2-b".to_owned(), true)],
        "{:?}",
        done.plan
    );
    assert!(exists(&client, "s2-current").await);
    assert!(exists(&client, "s2-c").await);
}
