//! The cluster's store on a real PostgreSQL: leases, fencing tokens, claims, ownership and
//! takeover, between instances that share one database (each a `StateStore` of its own, as
//! each daemon has).

use std::collections::HashSet;
use std::path::PathBuf;
use std::time::Duration;

use chrono::Utc;
use stac_client::{AssetTarget, UploadId};
use stac_uploadd::state::{Claim, Creating, Holder, StateError, StateStore};

use crate::fixtures::Postgres;
use crate::state_suite::{run, upload};

/// A store of `instance` on the database `url`, its lease taken for `lease`.
async fn member(url: &str, instance: &str, lease: Duration) -> StateStore {
    let s = open(url).await;
    s.join(instance, &format!("host-{instance}"), lease)
        .await
        .unwrap();
    s
}

async fn open(url: &str) -> StateStore {
    let dir = tempfile::tempdir().unwrap().keep();
    StateStore::open_cluster(
        &dir,
        &stac_uploadd::state::PgTarget {
            url,
            ca_file: None,
            host: "test-host",
            call_limit: Duration::from_secs(10),
        },
    )
    .await
    .unwrap()
}

/// Waits (bounded) until `seer` finds the holder of `id` lapsed: a lease lapses by the
/// database's clock, which the test can only poll.
async fn lapse_seen_by(seer: &StateStore, id: &UploadId) {
    for _ in 0..200 {
        if matches!(seer.holder(id).await.unwrap(), Holder::Lapsed(_)) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("the holder of {id} never lapsed");
}

fn fenced(r: Result<(), StateError>) -> bool {
    matches!(r, Err(StateError::Fenced { .. }))
}

/// Two instances: each sees only its own uploads and markers, a claim is won once, tokens
/// grow, a live name cannot be taken twice, and an upload held by a live instance shows as
/// such to the other.
#[tokio::test]
async fn instances_own_their_records_and_claims_are_won_once() {
    let pg = Postgres::start().await;
    let a = member(&pg.url(), "a", Duration::from_secs(60)).await;
    let b = member(&pg.url(), "b", Duration::from_secs(60)).await;
    let (_, ta) = a.owner().unwrap();
    let (_, tb) = b.owner().unwrap();
    assert!(tb > ta, "fencing tokens grow: {ta} then {tb}");

    assert_eq!(a.claim("j", "fire x").await.unwrap(), Claim::Won);
    assert_eq!(
        b.claim("j", "fire x").await.unwrap(),
        Claim::Lost { by: "a".into() }
    );
    assert_eq!(
        a.claim("j", "fire x").await.unwrap(),
        Claim::Won,
        "held by a, unfinished: still a's to run"
    );
    a.finish_claim("j", "fire x").await.unwrap();
    assert_eq!(
        a.claim("j", "fire x").await.unwrap(),
        Claim::Lost { by: "a".into() },
        "a finished fire is not run again"
    );

    a.add_inflight(upload("u1", "x")).await.unwrap();
    let target = AssetTarget::item_asset("c", "i", "m");
    a.add_creating(Creating {
        target: target.clone(),
        multihash: "1220cd".into(),
        at: Utc::now(),
    })
    .await
    .unwrap();
    assert!(b.inflight().await.unwrap().is_empty(), "a's, not b's");
    assert!(b.creating().await.unwrap().is_empty());
    assert!(!b.is_ours(&UploadId("u1".into())).await.unwrap());
    assert_eq!(
        b.holder(&UploadId("u1".into())).await.unwrap(),
        Holder::Live("a".into())
    );
    assert_eq!(
        b.marker_holder(&target, "1220CD").await.unwrap(),
        Holder::Live("a".into())
    );
    assert_eq!(a.holder(&UploadId("u1".into())).await.unwrap(), Holder::Us);
    assert_eq!(
        b.holder(&UploadId("nobody".into())).await.unwrap(),
        Holder::Nobody
    );
    // b cannot remove what a holds.
    b.remove_inflight(&UploadId("u1".into())).await.unwrap();
    assert_eq!(a.inflight().await.unwrap(), vec![upload("u1", "x")]);

    let twin = open(&pg.url()).await;
    match twin.join("a", "elsewhere", Duration::from_secs(60)).await {
        Err(StateError::InstanceInUse { instance, .. }) => assert_eq!(instance, "a"),
        other => panic!("a second holder of a live name: {other:?}"),
    }
    // Each run says which instance ran it; every instance reads the history of all.
    a.record_run(run("j", 1)).await.unwrap();
    a.flush().await.unwrap();
    b.record_run(run("j", 2)).await.unwrap();
    b.flush().await.unwrap();
    let ran: Vec<Option<String>> = b.history().await.unwrap()["j"]
        .iter()
        .map(|r| r.instance.clone())
        .collect();
    assert_eq!(ran, [Some("a".to_owned()), Some("b".to_owned())]);
    let members = b.members().await.unwrap();
    let names: Vec<&str> = members.iter().map(|m| m.instance.as_str()).collect();
    assert_eq!(names, ["a", "b"]);
    assert!(members.iter().all(|m| m.live));
    assert_eq!(members[0].holds, 2, "a's upload and marker");
}

/// An instance whose lease lapses: another takes its uploads, markers and unfinished claims
/// (once), and every write of the lapsed one is refused from then on, its renewal too; it
/// joins again with a new token and finds nothing of its old work.
#[tokio::test]
async fn a_lapsed_instance_is_taken_over_and_fenced() {
    let pg = Postgres::start().await;
    let a = member(&pg.url(), "a", Duration::from_millis(1500)).await;
    let b = member(&pg.url(), "b", Duration::from_secs(60)).await;
    a.add_inflight(upload("u1", "x")).await.unwrap();
    a.add_creating(Creating {
        target: AssetTarget::item_asset("c", "i", "m"),
        multihash: "1220cd".into(),
        at: Utc::now(),
    })
    .await
    .unwrap();
    assert_eq!(a.claim("j", "fire 1").await.unwrap(), Claim::Won);
    assert_eq!(a.claim("j", "fire 2").await.unwrap(), Claim::Won);
    a.finish_claim("j", "fire 2").await.unwrap();
    assert!(
        b.take_over().await.unwrap().uploads.is_empty(),
        "a's lease is live: nothing to take"
    );

    let id = UploadId("u1".into());
    lapse_seen_by(&b, &id).await;
    let taken = b.take_over().await.unwrap();
    assert_eq!(taken.uploads, vec![upload("u1", "x")]);
    assert_eq!(
        taken.claims,
        vec![("j".to_owned(), "fire 1".to_owned())],
        "the unfinished claim only"
    );
    assert_eq!(taken.from, vec!["a".to_owned()]);
    assert_eq!(b.holder(&id).await.unwrap(), Holder::Us);
    assert_eq!(b.creating().await.unwrap().len(), 1, "the marker too");
    assert_eq!(
        b.claim("j", "fire 1").await.unwrap(),
        Claim::Won,
        "the taken claim is b's to run again"
    );
    let again = b.take_over().await.unwrap();
    assert!(again.uploads.is_empty() && again.claims.is_empty());

    // a, back: every write refused, its renewal too.
    assert!(!a.renew(Duration::from_secs(60)).await.unwrap());
    assert!(fenced(a.remove_inflight(&id).await));
    assert!(fenced(a.add_inflight(upload("u2", "y")).await));
    assert!(fenced(
        a.add_creating(Creating {
            target: AssetTarget::item_asset("c", "i", "n"),
            multihash: "1220ef".into(),
            at: Utc::now(),
        })
        .await
    ));
    assert!(matches!(
        a.claim("j", "fire 3").await,
        Err(StateError::Fenced { .. })
    ));
    assert_eq!(b.holder(&id).await.unwrap(), Holder::Us, "b's still");

    let (_, old) = a.owner().unwrap();
    let token = a
        .join("a", "host-a", Duration::from_secs(60))
        .await
        .unwrap();
    assert!(token > old, "a new token: {old} then {token}");
    assert!(a.inflight().await.unwrap().is_empty(), "taken by b");
}

/// Three instances claiming the same fires at once, and two taking over one lapsed instance at
/// once: each fire won once, each record taken once.
#[tokio::test]
async fn concurrent_claims_and_takeovers_each_win_once() {
    let pg = Postgres::start().await;
    let url = pg.url();
    let mut members = Vec::new();
    for name in ["a", "b", "c"] {
        members.push(std::sync::Arc::new(
            member(&url, name, Duration::from_secs(60)).await,
        ));
    }
    let mut tasks = tokio::task::JoinSet::new();
    for m in &members {
        let m = m.clone();
        tasks.spawn(async move {
            let mut won = Vec::new();
            for n in 0..50 {
                if m.claim("j", &format!("fire {n}")).await.unwrap() == Claim::Won {
                    won.push(n);
                }
            }
            won
        });
    }
    let mut all = Vec::new();
    while let Some(won) = tasks.join_next().await {
        all.extend(won.unwrap());
    }
    all.sort_unstable();
    assert_eq!(
        all,
        (0..50).collect::<Vec<_>>(),
        "each fire won exactly once"
    );

    // Runs of one job flushed by every member at once: none lost to a run number taken twice.
    let mut flushes = tokio::task::JoinSet::new();
    for (i, m) in members.iter().enumerate() {
        let m = m.clone();
        flushes.spawn(async move {
            for n in 0..5 {
                for k in 0..4 {
                    m.record_run(run("shared", (i * 100 + n * 4 + k) as u32))
                        .await
                        .unwrap();
                }
                m.flush().await.unwrap();
            }
        });
    }
    while let Some(done) = flushes.join_next().await {
        done.unwrap();
    }
    assert_eq!(
        pg.query_i64("SELECT COUNT(*) FROM runs WHERE job = 'shared'")
            .await,
        20,
        "60 runs written, the newest 20 kept"
    );
    assert_eq!(
        pg.query_i64("SELECT MAX(seq) FROM runs WHERE job = 'shared'")
            .await,
        60,
        "every run got its number"
    );
    let dying = member(&url, "dying", Duration::from_millis(1000)).await;
    for n in 0..40 {
        dying
            .add_inflight(upload(&format!("u{n}"), &format!("a{n}")))
            .await
            .unwrap();
    }
    lapse_seen_by(&members[0], &UploadId("u0".into())).await;
    let (x, y) = tokio::join!(members[1].take_over(), members[2].take_over());
    let (x, y) = (x.unwrap(), y.unwrap());
    let xs: HashSet<String> = x.uploads.iter().map(|u| u.upload_id.0.clone()).collect();
    let ys: HashSet<String> = y.uploads.iter().map(|u| u.upload_id.0.clone()).collect();
    assert!(
        xs.is_disjoint(&ys),
        "taken twice: {:?}",
        xs.intersection(&ys)
    );
    assert_eq!(xs.len() + ys.len(), 40, "every record taken");
}

/// Instances starting together on an empty database: the migrations run once, every start
/// succeeds, and the schema is the same as one start makes.
#[tokio::test]
async fn instances_starting_together_migrate_once() {
    let pg = Postgres::start().await;
    let url = pg.url();
    let opens = (0..4).map(|_| {
        let url = url.clone();
        tokio::spawn(async move { open(&url).await })
    });
    for o in futures_util::future::join_all(opens).await {
        o.unwrap();
    }
    let applied = pg
        .query_i64("SELECT COUNT(*) FROM _sqlx_migrations WHERE success")
        .await;
    assert_eq!(applied, 2, "each migration applied once");
}

/// TLS to PostgreSQL: with `ca_file`, the server's certificate is verified against it (a
/// certificate of another CA is refused); a server that requires TLS refuses a plain one.
#[tokio::test]
async fn tls_to_postgres_is_verified_with_the_ca_file() {
    let pg = Postgres::start().await;
    let dir = tempfile::tempdir().unwrap();
    let pki = crate::fixtures::test_pki(dir.path());
    pg.require_tls(&pki).await;
    let open_with = |ca: Option<PathBuf>, url: String| async move {
        StateStore::open_cluster(
            &tempfile::tempdir().unwrap().keep(),
            &stac_uploadd::state::PgTarget {
                url: &url,
                ca_file: ca.as_deref(),
                host: "test-host",
                call_limit: Duration::from_secs(10),
            },
        )
        .await
    };
    let s = open_with(Some(pki.ca.clone()), pg.url())
        .await
        .expect("verified with the test CA");
    s.join("tls", "host-tls", Duration::from_secs(60))
        .await
        .unwrap();
    assert_eq!(s.claim("j", "fire 1").await.unwrap(), Claim::Won);

    let other = tempfile::tempdir().unwrap();
    let stranger = crate::fixtures::test_pki(other.path());
    let refused = open_with(Some(stranger.ca.clone()), pg.url()).await;
    assert!(
        refused.is_err(),
        "a certificate of another CA must not be trusted"
    );
    let plain = open_with(None, format!("{}?sslmode=disable", pg.url())).await;
    let Err(e) = plain else {
        panic!("the server requires TLS, and let a plain connection in")
    };
    let e = e.to_string();
    assert!(
        e.contains("pg_hba.conf") || e.contains("no encryption"),
        "{e}"
    );
}

/// An instance that lost its lease and joined again under its name before anyone took its work
/// takes its own unfinished claims back (once), so that a fire it never finished is not lost.
#[tokio::test]
async fn an_instance_back_under_its_name_takes_its_own_unfinished_claims() {
    let pg = Postgres::start().await;
    let a = member(&pg.url(), "a", Duration::from_millis(1000)).await;
    let watcher = member(&pg.url(), "w", Duration::from_secs(60)).await;
    assert_eq!(a.claim("j", "fire 1").await.unwrap(), Claim::Won);
    a.add_inflight(upload("u1", "x")).await.unwrap();
    lapse_seen_by(&watcher, &UploadId("u1".into())).await;
    a.join("a", "host-a", Duration::from_secs(60))
        .await
        .unwrap();
    assert_eq!(
        a.inflight().await.unwrap(),
        vec![upload("u1", "x")],
        "its uploads are its own again"
    );
    let taken = a.take_over().await.unwrap();
    assert_eq!(taken.claims, vec![("j".to_owned(), "fire 1".to_owned())]);
    assert!(a.take_over().await.unwrap().claims.is_empty(), "once");
    assert_eq!(a.claim("j", "fire 1").await.unwrap(), Claim::Won);
    assert!(
        watcher.take_over().await.unwrap().uploads.is_empty(),
        "a is live again: nothing of it to take"
    );
}
