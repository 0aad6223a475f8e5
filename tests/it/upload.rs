//! The upload engine against the emulator over real HTTP: sizes, targets, API versions, and every
//! fault the emulator can inject, each checked by what the server holds afterwards.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use crate::fixtures::*;
use stac_client::retry::Classified;
use stac_client::{ApiVersion, AssetTarget, Auth, ErrorClass, UploadStatus};
use stac_upload::{self, AbortOutcome, UploadError, UploadEvent, UploadObserver, UploadOptions};
use stac_uploadd_emulator::{CallKind, EmulatorConfig, FaultAction, FaultTrigger, UploadState};
use tokio_util::sync::CancellationToken;

#[tokio::test]
async fn sizes_around_the_part_limits() {
    let env = start().await;
    for (name, len, parts) in [
        ("one-byte.zip", 1, 1),
        ("empty.zip", 0, 1),
        ("exactly-5mib.zip", 5 * MIB, 1),
        ("5mib-plus-1.zip", 5 * MIB + 1, 2),
        ("multi.zip", 23 * MIB + 12_345, 5),
    ] {
        let target = env.item_asset(name);
        let (path, sha) = env.file(name, len);
        let report = env
            .upload(&target, &path)
            .await
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(report.parts, parts, "{name}");
        assert_eq!(report.bytes, len);
        env.assert_holds(&target, &sha);
        assert_eq!(env.count(&target, UploadState::Completed), 1);
    }
    env.assert_nothing_in_progress();
}

#[tokio::test]
async fn parts_really_go_in_parallel() {
    for parallel in [1, 4] {
        let env = start().await;
        // Each part PUT waits on the server, so the client's parts overlap there if it sends them at once.
        env.fault(
            CallKind::PutPart,
            FaultAction::Delay(Duration::from_millis(150)),
            8,
        );
        let (target, path, sha) = env.asset_with_file("parallel.zip", 36 * MIB);
        let report = env
            .upload_with(&target, &path, &UploadOptions { parallel, ..opts() })
            .await
            .unwrap();
        assert_eq!(report.parts, 8);
        assert_eq!(
            env.emu.max_concurrent_part_puts(),
            parallel as u64,
            "parts at once on the server"
        );
        env.assert_holds(&target, &sha);
    }
}

#[tokio::test]
async fn collection_asset_uses_the_same_path() {
    let env = start().await;
    let target = AssetTarget::collection_asset("ch.test.collection", "overview.zip");
    env.emu
        .create_asset(&key(&target), "application/zip")
        .unwrap();
    let (path, sha) = env.file("overview.zip", 6 * MIB);
    env.upload(&target, &path).await.unwrap();
    env.assert_holds(&target, &sha);
    let info = env.client.read_asset(&target).await.unwrap();
    assert_eq!(info.checksum, Some(format!("1220{sha}")));
    assert!(info.href.is_some(), "href is set after the first upload");
}

#[tokio::test]
async fn api_v09_uses_checksum_multihash() {
    let env = start_with(EmulatorConfig::default(), ApiVersion::V09).await;
    let (target, path, sha) = env.asset_with_file("old.zip", 7 * MIB);
    env.upload(&target, &path).await.unwrap();
    env.assert_holds(&target, &sha);
    assert_eq!(
        env.client.read_asset(&target).await.unwrap().checksum,
        Some(format!("1220{sha}"))
    );
}

#[tokio::test]
async fn transient_part_failures_are_resent() {
    let env = start().await;
    let f = env.emu.faults();
    f.fault(CallKind::PutPart, FaultAction::Status(502), 1);
    f.fault(CallKind::PutPart, FaultAction::Status(503), 1);
    f.fault(CallKind::PutPart, FaultAction::Status(504), 1);
    f.fault(CallKind::PutPart, FaultAction::Drop, 1);
    let (target, path, sha) = env.asset_with_file("flaky.zip", 16 * MIB);
    let report = env.upload(&target, &path).await.unwrap();
    assert_eq!(
        report.part_retries, 4,
        "each injected fault costs one resend"
    );
    assert_eq!(f.injected(CallKind::PutPart), 4);
    env.assert_holds(&target, &sha);
    env.assert_nothing_in_progress();
}

#[tokio::test]
async fn transient_failures_of_api_calls_are_retried() {
    let env = start().await;
    let f = env.emu.faults();
    f.fault(CallKind::CreateUpload, FaultAction::Status(503), 1);
    f.fault(CallKind::Complete, FaultAction::Status(502), 1);
    let (target, path, sha) = env.asset_with_file("api-flaky.zip", 3 * MIB);
    env.upload(&target, &path).await.unwrap();
    env.assert_holds(&target, &sha);
    assert_eq!(env.count(&target, UploadState::Completed), 1);
    assert_eq!(env.count(&target, UploadState::Aborted), 0);
}

#[tokio::test]
async fn a_part_that_keeps_failing_aborts_the_upload() {
    let env = start().await;
    env.fault(CallKind::PutPart, FaultAction::Status(503), 100);
    let (target, path, _) = env.asset_with_file("down.zip", 2 * MIB);
    let err = env
        .upload_with(
            &target,
            &path,
            &UploadOptions {
                part_retries: 2,
                ..opts()
            },
        )
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            UploadError::AfterCreate {
                abort: AbortOutcome::Aborted,
                ..
            }
        ),
        "{err}"
    );
    assert!(
        err.is_retryable(),
        "a gateway error is worth a later run: {err}"
    );
    assert_eq!(
        env.emu.faults().injected(CallKind::PutPart),
        3,
        "one try and two retries"
    );
    assert_eq!(env.count(&target, UploadState::Aborted), 1);
    env.assert_nothing_in_progress();
    assert_eq!(env.emu.asset(&key(&target)).unwrap().checksum, None);
}

#[tokio::test]
async fn server_errors_are_not_retried_and_abort() {
    let env = start().await;
    env.fault(CallKind::PutPart, FaultAction::Status(500), 1);
    let (target, path, _) = env.asset_with_file("broken.zip", 1000);
    let err = env.upload(&target, &path).await.unwrap_err();
    assert_eq!(err.class(), Some(&ErrorClass::ServerBroken), "{err}");
    assert_eq!(env.emu.faults().injected(CallKind::PutPart), 1);
    env.assert_nothing_in_progress();
}

#[tokio::test]
async fn a_500_on_create_leaves_nothing_behind() {
    let env = start().await;
    env.fault(CallKind::CreateUpload, FaultAction::Status(500), 1);
    let (target, path, _) = env.asset_with_file("create500.zip", 1000);
    let err = env.upload(&target, &path).await.unwrap_err();
    assert!(
        matches!(&err, UploadError::Stac(e) if e.status.map(|s| s.as_u16()) == Some(500)),
        "{err}"
    );
    assert!(env.emu.uploads(&key(&target)).is_empty());
}

#[tokio::test]
async fn expired_urls_abort_the_upload() {
    let env = start().await;
    env.fault(CallKind::PutPart, FaultAction::ExpireUrl, 100);
    let (target, path, _) = env.asset_with_file("late.zip", 1000);
    let err = env.upload(&target, &path).await.unwrap_err();
    assert_eq!(
        err.class(),
        Some(&ErrorClass::UrlRejected { expired: true }),
        "{err}"
    );
    assert_eq!(
        env.emu.faults().injected(CallKind::PutPart),
        1,
        "an expired URL is not retried"
    );
    env.assert_nothing_in_progress();
}

#[tokio::test]
async fn a_complete_whose_answer_is_lost_is_recognised() {
    let env = start().await;
    env.fault(CallKind::Complete, FaultAction::DropAfterCommit, 1);
    let (target, path, sha) = env.asset_with_file("lost-complete.zip", 6 * MIB);
    env.upload(&target, &path)
        .await
        .expect("409 + completed with our checksum is success");
    env.assert_holds(&target, &sha);
    assert_eq!(env.count(&target, UploadState::Completed), 1);
}

/// The complete took effect, its answer was lost and every retry of it failed: the abort that
/// follows finds the upload completed, which is success, not a failure (found by the soak:
/// such runs were recorded failed, or unchanged on their next attempt).
#[tokio::test]
async fn a_complete_that_took_effect_is_success_even_when_its_retries_fail() {
    let env = start().await;
    let f = env.emu.faults();
    f.fault(CallKind::Complete, FaultAction::DropAfterCommit, 1);
    f.fault(CallKind::Complete, FaultAction::Status(503), 1_000);
    let (target, path, sha) = env.asset_with_file("complete-then-503.zip", 6 * MIB);
    let report = env
        .upload(&target, &path)
        .await
        .expect("our completed upload is success");
    assert!(!report.unchanged);
    assert!(
        f.injected(CallKind::Complete) >= 2,
        "the complete was retried before the abort"
    );
    assert_eq!(env.count(&target, UploadState::Aborted), 0);
    env.assert_holds(&target, &sha);
    assert_eq!(env.count(&target, UploadState::Completed), 1);
    env.assert_nothing_in_progress();
}

#[tokio::test]
async fn a_complete_refused_with_400_is_aborted() {
    let env = start().await;
    env.fault(CallKind::Complete, FaultAction::Status(400), 1);
    let (target, path, _) = env.asset_with_file("refused.zip", 1000);
    let err = env.upload(&target, &path).await.unwrap_err();
    assert_eq!(err.class(), Some(&ErrorClass::RequestWrong), "{err}");
    assert!(
        matches!(
            err,
            UploadError::AfterCreate {
                abort: AbortOutcome::Aborted,
                ..
            }
        ),
        "{err}"
    );
    env.assert_nothing_in_progress();
}

#[tokio::test]
async fn an_abort_whose_answer_is_lost_is_read_back() {
    let env = start().await;
    let f = env.emu.faults();
    f.fault(CallKind::PutPart, FaultAction::Status(500), 1);
    f.fault(CallKind::Abort, FaultAction::DropAfterCommit, 1);
    let (target, path, _) = env.asset_with_file("lost-abort.zip", 1000);
    let err = env.upload(&target, &path).await.unwrap_err();
    // The retried abort meets 500 (already aborted); reading the upload shows it is.
    assert!(
        matches!(
            err,
            UploadError::AfterCreate {
                abort: AbortOutcome::AlreadyFinished(UploadStatus::Aborted),
                ..
            }
        ),
        "{err}"
    );
    assert!(err.left_in_progress().is_none());
    env.assert_nothing_in_progress();
}

#[tokio::test]
async fn a_lost_create_answer_is_adopted_not_reported_as_a_blocker() {
    let env = start().await;
    env.fault(CallKind::CreateUpload, FaultAction::DropAfterCommit, 1);
    let (target, path, sha) = env.asset_with_file("lost-create.zip", 6 * MIB);
    let report = env.upload(&target, &path).await.unwrap();
    assert!(report.adopted);
    env.assert_holds(&target, &sha);
    assert_eq!(
        env.emu.uploads(&key(&target)).len(),
        1,
        "one upload only: the lost one, carried on"
    );
}

#[tokio::test]
async fn slow_answers_hit_the_deadline_and_are_retried() {
    let env = start().await;
    env.fault(
        CallKind::PutPart,
        FaultAction::Delay(Duration::from_secs(5)),
        1,
    );
    let (target, path, sha) = env.asset_with_file("slow.zip", 1000);
    let o = UploadOptions {
        part_base_timeout: Duration::from_millis(500),
        ..opts()
    };
    let report = env.upload_with(&target, &path, &o).await.unwrap();
    assert_eq!(report.part_retries, 1);
    env.assert_holds(&target, &sha);
}

#[tokio::test]
async fn another_upload_in_progress_is_reported_with_its_id_and_age() {
    for legacy in [false, true] {
        let env = start_with(
            EmulatorConfig {
                legacy_in_progress_400: legacy,
                ..EmulatorConfig::default()
            },
            ApiVersion::V1,
        )
        .await;
        let target = env.item_asset("busy.zip");
        let created = chrono::Utc::now() - chrono::Duration::minutes(90);
        let blocker = env.emu.plant_upload(&key(&target), created);
        let (path, sha) = env.file("busy.zip", 1000);
        let err = env.upload(&target, &path).await.unwrap_err();
        let UploadError::InProgress { upload, .. } = &err else {
            panic!("legacy={legacy}: {err}")
        };
        assert_eq!(upload.upload_id.0, blocker, "legacy={legacy}");
        assert_eq!(
            upload.created.map(|c| c.timestamp()),
            Some(created.timestamp())
        );
        assert!(
            err.to_string().contains(&blocker) && err.to_string().contains("90 min ago"),
            "{err}"
        );
        // What --abort-in-progress does: abort it, then upload.
        let outcome =
            stac_upload::abort_upload(&env.client, &target, &upload.upload_id, &opts()).await;
        assert!(matches!(outcome, AbortOutcome::Aborted), "{outcome}");
        env.upload(&target, &path).await.unwrap();
        env.assert_holds(&target, &sha);
        env.assert_nothing_in_progress();
    }
}

/// Changes the file when a given event arrives.
struct Meddler {
    on_created: bool,
    path: std::path::PathBuf,
    done: AtomicBool,
}

impl UploadObserver for Meddler {
    fn on_event(&self, event: &UploadEvent<'_>) {
        let now = match event {
            UploadEvent::Digested { .. } => !self.on_created,
            UploadEvent::Created { .. } => self.on_created,
            _ => false,
        };
        if now && !self.done.swap(true, Ordering::SeqCst) {
            use std::io::Write;
            let mut f = std::fs::OpenOptions::new()
                .append(true)
                .open(&self.path)
                .unwrap();
            f.write_all(b"late line\n").unwrap();
        }
    }
}

#[tokio::test]
async fn a_file_that_changes_is_not_sent() {
    let env = start().await;
    for on_created in [false, true] {
        let target = env.item_asset(if on_created {
            "changes-late.zip"
        } else {
            "changes-early.zip"
        });
        let (path, _) = env.file(&target.asset, 6 * MIB);
        let m = Arc::new(Meddler {
            on_created,
            path: path.clone(),
            done: AtomicBool::new(false),
        });
        let err = stac_upload::upload_file(
            &env.client,
            &target,
            &path,
            &opts(),
            m,
            &CancellationToken::new(),
        )
        .await
        .unwrap_err();
        let cause = match &err {
            UploadError::AfterCreate { cause, abort, .. } => {
                assert!(
                    on_created,
                    "changed before create, yet an upload was created: {err}"
                );
                assert!(matches!(abort, AbortOutcome::Aborted), "{err}");
                cause.as_ref()
            }
            other => other,
        };
        assert!(matches!(cause, UploadError::FileChanged { .. }), "{err}");
        assert_eq!(env.emu.asset(&key(&target)).unwrap().checksum, None);
    }
    env.assert_nothing_in_progress();
}

/// Cancels the session once its upload exists.
struct CancelOnCreate(CancellationToken);

impl UploadObserver for CancelOnCreate {
    fn on_event(&self, event: &UploadEvent<'_>) {
        if matches!(event, UploadEvent::Created { .. }) {
            self.0.cancel();
        }
    }
}

#[tokio::test]
async fn cancelling_aborts_what_was_created() {
    let env = start().await;
    env.fault(
        CallKind::PutPart,
        FaultAction::Delay(Duration::from_secs(2)),
        10,
    );
    let (target, path, _) = env.asset_with_file("cancel.zip", 1000);
    let token = CancellationToken::new();
    let obs = Arc::new(CancelOnCreate(token.clone()));
    let err = stac_upload::upload_file(&env.client, &target, &path, &opts(), obs, &token)
        .await
        .unwrap_err();
    assert!(
        matches!(&err, UploadError::AfterCreate { cause, abort: AbortOutcome::Aborted, .. } if matches!(**cause, UploadError::Cancelled)),
        "{err}"
    );
    env.assert_nothing_in_progress();
}

#[tokio::test]
async fn wrong_credentials_and_unknown_assets_are_clear() {
    let env = start().await;
    let (target, path, _) = env.asset_with_file("auth.zip", 10);
    let wrong = client_for(
        &env.emu.base_url(),
        ApiVersion::V1,
        Auth::Basic {
            username: USER.into(),
            password: "wrong".to_owned().into(),
        },
    );
    let err = stac_upload::upload_file(
        &wrong,
        &target,
        &path,
        &opts(),
        Arc::new(()),
        &CancellationToken::new(),
    )
    .await
    .unwrap_err();
    assert_eq!(err.class(), Some(&ErrorClass::Auth), "{err}");
    assert!(err.to_string().contains("HTTP 401"), "{err}");
    assert!(
        !err.to_string().contains("wrong"),
        "no secret in messages: {err}"
    );

    let missing = AssetTarget::item_asset("ch.test.collection", "item-1", "nope.zip");
    let err = env.upload(&missing, &path).await.unwrap_err();
    assert_eq!(err.class(), Some(&ErrorClass::RequestWrong), "{err}");
    assert!(err.to_string().contains("HTTP 404"), "{err}");
}

#[tokio::test]
async fn a_persistent_gateway_page_is_reported_readably() {
    let env = start().await;
    env.fault(CallKind::CreateUpload, FaultAction::Status(502), 100);
    let (target, path, _) = env.asset_with_file("gateway.zip", 10);
    let err = env
        .upload_with(
            &target,
            &path,
            &UploadOptions {
                part_retries: 1,
                ..opts()
            },
        )
        .await
        .unwrap_err();
    let text = err.to_string();
    assert!(
        text.contains("create upload failed (POST")
            && text.contains("HTTP 502")
            && text.contains("Bad Gateway"),
        "{text}"
    );
    assert!(err.is_retryable());
    assert!(env.emu.uploads(&key(&target)).is_empty());
}

#[tokio::test]
async fn part_urls_and_secrets_stay_out_of_errors() {
    let env = start().await;
    env.fault(CallKind::PutPart, FaultAction::Status(403), 1);
    let (target, path, _) = env.asset_with_file("secret.zip", 10);
    let err = env.upload(&target, &path).await.unwrap_err();
    let text = format!("{err} {err:?}");
    assert!(!text.contains("X-Amz-Signature"), "{text}");
    assert!(!text.contains(PASSWORD), "{text}");
}

#[tokio::test]
async fn the_server_holds_the_same_bytes_with_a_bandwidth_limit() {
    // The throughput effect is measured by the benchmark; here, correctness under throttling.
    let env = start().await;
    env.emu.faults().set_bandwidth_limit(Some(40 * MIB));
    let (target, path, sha) = env.asset_with_file("limited.zip", 11 * MIB);
    env.upload(&target, &path).await.unwrap();
    env.assert_holds(&target, &sha);
}

/// Found by the fault soak: a create whose answer is lost, then a lookup of the blocking upload
/// that keeps failing, left our own upload blocking the asset as if it were someone else's.
#[tokio::test]
async fn our_upload_whose_create_answer_was_lost_is_carried_on_by_the_next_run() {
    for legacy in [false, true] {
        let env = start_with(
            EmulatorConfig {
                legacy_in_progress_400: legacy,
                ..EmulatorConfig::default()
            },
            ApiVersion::V1,
        )
        .await;
        let f = env.emu.faults();
        f.fault(CallKind::CreateUpload, FaultAction::DropAfterCommit, 1);
        let lookup = if legacy {
            CallKind::ListUploads
        } else {
            CallKind::GetUpload
        };
        f.fault(lookup, FaultAction::Status(502), 100);
        let (target, path, sha) = env.asset_with_file("orphan.zip", 6 * MIB);
        let err = env.upload(&target, &path).await.unwrap_err();
        assert!(err.is_retryable(), "legacy={legacy}: {err}");
        assert_eq!(
            env.emu.in_progress_uploads().len(),
            1,
            "the lost create's upload is in progress"
        );
        f.clear();
        let report = env.upload(&target, &path).await.unwrap();
        assert!(
            report.adopted,
            "legacy={legacy}: the next run recognises the upload by its content"
        );
        env.assert_holds(&target, &sha);
        env.assert_nothing_in_progress();
        assert_eq!(
            env.emu.uploads(&key(&target)).len(),
            1,
            "no second upload was needed"
        );
    }
}

/// Someone else's upload of different bytes is never taken over, however recent.
#[tokio::test]
async fn a_foreign_upload_of_other_bytes_is_not_taken_over() {
    let env = start().await;
    let target = env.item_asset("foreign.zip");
    env.emu.plant_upload(&key(&target), chrono::Utc::now());
    let (path, _) = env.file("foreign.zip", 1000);
    let err = env.upload(&target, &path).await.unwrap_err();
    assert!(matches!(err, UploadError::InProgress { .. }), "{err}");
}

/// A server whose part URLs live `ttl`.
async fn short_urls(ttl: Duration) -> Env {
    start_with(
        EmulatorConfig {
            url_ttl: ttl,
            ..EmulatorConfig::default()
        },
        ApiVersion::V1,
    )
    .await
}

fn limited(rate: u64) -> UploadOptions {
    use stac_upload::bandwidth::{Bandwidth, BandwidthLimit};
    UploadOptions {
        bandwidth: vec![Arc::new(Bandwidth::new(BandwidthLimit::constant(
            stac_client::units::ByteSize(rate),
        )))],
        ..opts()
    }
}

/// Found by a tester: with URLs that live 60 s or less every upload failed at once ("given up
/// before they expired"), the margin being a fixed minute. It now scales with the lifetime.
#[tokio::test]
async fn uploads_fit_in_urls_that_live_30_or_90_seconds() {
    for ttl in [30, 90] {
        let env = short_urls(Duration::from_secs(ttl)).await;
        let (target, path, sha) = env.asset_with_file("short.zip", 6 * MIB);
        // 6 MiB at 4 MB/s: about 1.6 s, well inside either lifetime.
        env.upload_with(&target, &path, &limited(4_000_000))
            .await
            .unwrap_or_else(|e| panic!("{ttl}s URLs: {e}"));
        env.assert_holds(&target, &sha);
    }
}

/// A file that cannot be sent before the URLs expire is refused before its first byte, with a
/// message that says how long the URLs live and what the upload needs.
#[tokio::test]
async fn a_file_too_large_for_the_url_lifetime_is_refused_with_what_it_needs() {
    for (ttl, len) in [(30, 80 * MIB), (90, 200 * MIB)] {
        let env = short_urls(Duration::from_secs(ttl)).await;
        let (target, path, _) = env.asset_with_file("long.zip", len);
        let err = env
            .upload_with(&target, &path, &limited(2_000_000))
            .await
            .unwrap_err();
        let message = err.to_string();
        assert!(
            message.contains(&format!(
                "part URLs live {}",
                humantime::format_duration(Duration::from_secs(ttl))
            )),
            "{message}"
        );
        assert!(message.contains("at the bandwidth limit of"), "{message}");
        assert!(message.contains("needs"), "{message}");
        assert_eq!(env.emu.call_count(CallKind::PutPart), 0, "nothing was sent");
        env.assert_nothing_in_progress();
    }
}

// --- issue 17 (wire): Retry-After, nothing created left behind, honest wire errors -----------

/// The instants at which the emulator received each request of `kind`.
fn arrivals(env: &Env, kind: CallKind) -> Vec<std::time::Instant> {
    env.emu
        .requests()
        .into_iter()
        .filter(|r| r.call == kind)
        .map(|r| r.at)
        .collect()
}

#[tokio::test]
async fn a_429_asking_retry_after_2s_is_retried_no_sooner_than_2s() {
    let env = start().await;
    env.emu.faults().inject(
        CallKind::CreateUpload,
        FaultAction::StatusRetryAfter {
            status: 429,
            retry_after: "2".into(),
        },
        FaultTrigger::Next(1),
    );
    let (target, path, sha) = env.asset_with_file("patient.zip", 1000);
    let o = UploadOptions {
        retry_max_delay: Duration::from_secs(10),
        ..opts()
    };
    env.upload_with(&target, &path, &o).await.unwrap();
    env.assert_holds(&target, &sha);
    let creates = arrivals(&env, CallKind::CreateUpload);
    assert_eq!(creates.len(), 2, "one 429, one retry");
    let waited = creates[1] - creates[0];
    // A lower bound only: a loaded machine can only make it later.
    assert!(
        waited >= Duration::from_secs(2),
        "the retry came {waited:?} after the 429"
    );
}

#[tokio::test]
async fn a_503_on_a_part_with_an_http_date_retry_after_is_waited_for() {
    let env = start().await;
    let at = std::time::SystemTime::now() + Duration::from_secs(2);
    env.emu.faults().inject(
        CallKind::PutPart,
        FaultAction::StatusRetryAfter {
            status: 503,
            retry_after: httpdate::fmt_http_date(at),
        },
        FaultTrigger::Next(1),
    );
    let (target, path, sha) = env.asset_with_file("dated.zip", 1000);
    let o = UploadOptions {
        retry_max_delay: Duration::from_secs(10),
        ..opts()
    };
    env.upload_with(&target, &path, &o).await.unwrap();
    env.assert_holds(&target, &sha);
    let parts = arrivals(&env, CallKind::PutPart);
    assert_eq!(parts.len(), 2);
    // The date has whole seconds: at least one full second, whatever the rounding.
    assert!(
        parts[1] - parts[0] >= Duration::from_secs(1),
        "{:?}",
        parts[1] - parts[0]
    );
}

#[tokio::test]
async fn a_retry_after_past_retry_max_delay_gives_up_saying_what_the_server_asked() {
    let env = start().await;
    env.emu.faults().inject(
        CallKind::CreateUpload,
        FaultAction::StatusRetryAfter {
            status: 429,
            retry_after: "120".into(),
        },
        FaultTrigger::Next(1),
    );
    let (target, path, _) = env.asset_with_file("impatient.zip", 1000);
    let err = env.upload(&target, &path).await.unwrap_err();
    let shown = err.to_string();
    assert!(
        shown.contains("the server asked to retry after 2m"),
        "{shown}"
    );
    assert!(shown.contains("retry_max_delay"), "{shown}");
    assert_eq!(arrivals(&env, CallKind::CreateUpload).len(), 1);
    env.assert_nothing_in_progress();
}

#[tokio::test]
async fn a_create_answer_without_part_urls_aborts_the_upload_it_created() {
    let env = start().await;
    env.fault(CallKind::CreateUpload, FaultAction::NoPartUrls, 1);
    let (target, path, _) = env.asset_with_file("urlless.zip", 1000);
    let err = env.upload(&target, &path).await.unwrap_err();
    let shown = err.to_string();
    assert!(
        matches!(
            err,
            UploadError::AfterCreate {
                abort: AbortOutcome::Aborted,
                ..
            }
        ),
        "{shown}"
    );
    assert!(
        shown.contains("create upload failed (POST ")
            && shown.contains("/uploads)")
            && shown.contains("0 presigned URLs for 1 parts"),
        "{shown}"
    );
    env.assert_nothing_in_progress();
    assert_eq!(env.count(&target, UploadState::Aborted), 1);
}

#[tokio::test]
async fn a_200_complete_with_an_html_body_is_resolved_by_reading_the_upload() {
    let env = start().await;
    env.fault(CallKind::Complete, FaultAction::HtmlBody, 1);
    let (target, path, sha) = env.asset_with_file("html.zip", 6 * MIB);
    env.upload(&target, &path).await.unwrap();
    env.assert_holds(&target, &sha);
    assert_eq!(env.count(&target, UploadState::Completed), 1);
    assert_eq!(env.count(&target, UploadState::Aborted), 0);
    assert_eq!(env.emu.call_count(CallKind::Abort), 0);
}

/// The error of uploading a small file to asset `c/i/a.zip` of a scripted server, without
/// credentials.
async fn upload_to_scripted(server: &Scripted) -> UploadError {
    let client = client_for(&server.base, ApiVersion::V1, Auth::None);
    let target = AssetTarget::item_asset("c", "i", "a.zip");
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("a.zip");
    write_file(&path, 10, 1);
    stac_upload::upload_file(
        &client,
        &target,
        &path,
        &opts(),
        Arc::new(()),
        &CancellationToken::new(),
    )
    .await
    .unwrap_err()
}

fn redirect_forever(_method: &str, path: &str) -> String {
    raw_answer(
        "302 Found",
        &[("Location", &format!("{path}?X-Amz-Signature=loop-secret"))],
        "",
    )
}

#[tokio::test]
async fn a_redirect_loop_is_not_retried_and_said_once() {
    let server = scripted(redirect_forever).await;
    let err = upload_to_scripted(&server).await;
    let shown = err.to_string();
    assert!(shown.contains("redirect loop"), "{shown}");
    assert!(!shown.contains("loop-secret"), "{shown}");
    assert_eq!(
        shown.matches("/collections/c/items/i/assets/a.zip").count(),
        1,
        "{shown}"
    );
    assert!(!err.is_retryable(), "{shown}");
    assert!(!&err.run_action().is_retry(), "{shown}");
    // One try: the first request and the client's own limit of redirects, not 44 of them.
    let asked = server.requests.lock().unwrap().len();
    assert!((2..=11).contains(&asked), "{asked} requests");
}

fn create_redirected_to_a_get(method: &str, path: &str) -> String {
    match (method, path) {
        (_, p) if p.ends_with("/assets/a.zip") => raw_answer(
            "200 OK",
            &[("Content-Type", "application/json")],
            r#"{"id":"a.zip","type":"application/zip"}"#,
        ),
        ("POST", p) if p.ends_with("/uploads") => raw_answer(
            "302 Found",
            &[("Location", "/login/?next=/uploads&token=secret-in-query")],
            "",
        ),
        _ => raw_answer(
            "200 OK",
            &[("Content-Type", "text/html")],
            "<html>login</html>",
        ),
    }
}

#[tokio::test]
async fn a_create_redirected_elsewhere_is_reported_as_redirected_not_as_200() {
    let server = scripted(create_redirected_to_a_get).await;
    let err = upload_to_scripted(&server).await;
    let shown = err.to_string();
    assert!(shown.contains("HTTP 302"), "{shown}");
    assert!(shown.contains("redirected to /login/"), "{shown}");
    assert!(!shown.contains("HTTP 200"), "{shown}");
    assert!(!shown.contains("secret-in-query"), "{shown}");
    let asked = server.requests.lock().unwrap().clone();
    assert!(
        !asked
            .iter()
            .any(|(m, p)| m == "GET" && p.starts_with("/login")),
        "the redirect was not followed: {asked:?}"
    );
}

fn asset_with_wrong_types(_method: &str, _path: &str) -> String {
    raw_answer(
        "200 OK",
        &[("Content-Type", "application/json")],
        r#"{"id":"a.zip","type":[],"file:checksum":5,"extra":"fine"}"#,
    )
}

#[tokio::test]
async fn an_asset_answer_with_a_wrongly_typed_field_names_the_request_and_the_field() {
    let server = scripted(asset_with_wrong_types).await;
    let client = client_for(&server.base, ApiVersion::V1, Auth::None);
    let target = AssetTarget::item_asset("c", "i", "a.zip");
    let err = client.read_asset(&target).await.unwrap_err();
    let shown = err.to_string();
    assert!(
        shown.starts_with("read asset failed (GET ")
            && shown.contains("/collections/c/items/i/assets/a.zip"),
        "{shown}"
    );
    assert!(shown.contains("\"file:checksum\" is 5"), "{shown}");
    assert_eq!(err.class, ErrorClass::ServerBroken);
}

#[tokio::test]
async fn a_compressed_upload_that_cannot_be_resumed_says_why_not_that_the_file_changed() {
    let env = start().await;
    let (target, path, sha) = env.asset_with_file("squeezed.zip", 1000);
    let multihash =
        stac_client::Multihash::from_sha256(&hex::decode(&sha).unwrap().try_into().unwrap());
    // What an interrupted gzip upload of this file left: its parts are of compressed bytes.
    let upload = env
        .client
        .create_upload(
            &target,
            &stac_client::CreateUpload {
                md5_parts: vec![stac_client::Md5Part {
                    part_number: stac_client::PartNumber(1),
                    md5: stac_client::Md5([3; 16]).to_base64(),
                }],
                checksum: multihash.clone(),
                content_encoding: Some(stac_client::ContentEncoding::Gzip),
            },
        )
        .await
        .unwrap();
    let err = stac_upload::resume_upload(
        &env.client,
        &target,
        &path,
        &upload,
        &multihash,
        5 * MIB,
        &opts(),
        Arc::new(()),
        &CancellationToken::new(),
    )
    .await
    .unwrap_err();
    let shown = err.to_string();
    assert!(!shown.contains("changed"), "{shown}");
    assert!(
        shown.contains("cannot be resumed") && shown.contains("compressed with gzip"),
        "{shown}"
    );
    assert!(
        &err.run_action().is_retry(),
        "a new upload is worth a run: {shown}"
    );
    env.assert_nothing_in_progress();
}

#[tokio::test]
async fn a_200_complete_that_did_not_take_effect_is_sent_again() {
    let env = start().await;
    // A 200 whose body is no upload object, from something in front of the API: the upload is
    // still in progress, which only reading it tells.
    env.fault(CallKind::Complete, FaultAction::Status(200), 1);
    let (target, path, sha) = env.asset_with_file("again.zip", 1000);
    env.upload(&target, &path).await.unwrap();
    env.assert_holds(&target, &sha);
    assert_eq!(env.emu.call_count(CallKind::Complete), 2);
    assert_eq!(env.emu.call_count(CallKind::Abort), 0);
}
