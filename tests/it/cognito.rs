//! Cognito login (the v1 production scheme) against a real Cognito API: moto's server. The
//! emulator checks every Bearer token with that Cognito's `GetUser`, and a counting pass-through
//! in front of moto shows what the client asked Cognito for.
//!
//! moto comes from `pip install 'moto[server]'`; .ci/run starts it and sets MOTO_ENDPOINT, and
//! without that variable the tests start `moto_server` themselves (and fail if it is missing).

use std::time::Duration;

use crate::fixtures::*;
use secrecy::SecretString;
use stac_client::retry::Classified;
use stac_client::{Auth, ErrorClass};
use stac_uploadd_emulator::{CallKind, EmulatorConfig, FaultAction, UploadState};

const USER: &str = "machine-publisher";

/// A pool with one ready user, an emulator that checks tokens with it, and a client that logs
/// in through a counting front.
struct Setup {
    pool: CognitoPool,
    front: CognitoFront,
    env: Env,
}

async fn setup_with(margin: Option<Duration>, password: &str) -> Setup {
    let pool = CognitoPool::new().await;
    pool.user(USER, COGNITO_PASSWORD).await;
    let front = CognitoFront::start(&pool.endpoint).await;
    let mut auth = pool.auth(USER, password, &front.url);
    if let Some(margin) = margin {
        auth = auth.with_renew_margin(margin);
    }
    let config = EmulatorConfig {
        auth: stac_uploadd_emulator::EmulatorAuth::Cognito {
            endpoint: pool.endpoint.clone(),
        },
        ..EmulatorConfig::default()
    };
    let env = start_with_auth(config, Auth::Cognito(auth)).await;
    Setup { pool, front, env }
}

async fn setup() -> Setup {
    setup_with(None, COGNITO_PASSWORD).await
}

#[tokio::test]
async fn upload_with_a_cognito_token() {
    let s = setup().await;
    let target = s.env.item_asset("cognito.zip");
    let (path, sha) = s.env.file("cognito.zip", 12 * MIB + 7);
    let report = s.env.upload(&target, &path).await.expect("upload");
    assert_eq!(report.parts, 3);
    s.env.assert_holds(&target, &sha);
    s.env.assert_nothing_in_progress();
    // One login for the whole upload; the emulator asked Cognito about the token once (it
    // remembers valid tokens briefly).
    assert_eq!(s.front.calls(), ["InitiateAuth:USER_PASSWORD_AUTH"]);

    // The emulator really checks tokens with Cognito: a made-up one and none at all fail.
    for auth in [
        Auth::Bearer(SecretString::from("eyJ.not-a-cognito-token.x")),
        Auth::None,
    ] {
        let client = client_for(&s.env.emu.base_url(), stac_client::ApiVersion::V1, auth);
        let err = upload_file_with(&client, &target, &path).await;
        assert_eq!(err.map(|e| e.class), Some(ErrorClass::Auth));
    }
    assert_eq!(s.env.count(&target, UploadState::Completed), 1);
}

/// Sends `path` with `client` and returns the API error it ended with, if any.
async fn upload_file_with(
    client: &stac_client::StacClient,
    target: &stac_client::AssetTarget,
    path: &std::path::Path,
) -> Option<stac_client::StacError> {
    // Forced: the asset may already hold the file, and this is about what the API says to a send.
    let forced = stac_upload::UploadOptions {
        skip_unchanged: false,
        ..opts()
    };
    let result = stac_upload::upload_file(
        client,
        target,
        path,
        &forced,
        std::sync::Arc::new(()),
        &tokio_util::sync::CancellationToken::new(),
    )
    .await;
    match result {
        Ok(_) => None,
        Err(e) => Some(match e {
            stac_upload::UploadError::Stac(s) => s,
            other => panic!("not an API error: {other}"),
        }),
    }
}

#[tokio::test]
async fn an_injected_401_renews_the_token_and_replays_the_request_once() {
    let s = setup().await;
    let target = s.env.item_asset("replayed.zip");
    let (path, sha) = s.env.file("replayed.zip", 6 * MIB);
    s.env
        .emu
        .fault(CallKind::CreateUpload, FaultAction::Status(401), 1);
    s.env
        .upload(&target, &path)
        .await
        .expect("upload after one 401");
    s.env.assert_holds(&target, &sha);
    assert_eq!(s.env.emu.faults().injected(CallKind::CreateUpload), 1);
    assert_eq!(
        s.env.emu.call_count(CallKind::CreateUpload),
        2,
        "one replay"
    );
    // Cognito saw a second InitiateAuth: the refresh token renewed the refused access token.
    assert_eq!(
        s.front.calls(),
        [
            "InitiateAuth:USER_PASSWORD_AUTH",
            "InitiateAuth:REFRESH_TOKEN_AUTH"
        ]
    );

    // Refused twice in a row: one replay only, then an Auth error, and create is not retried.
    let target = s.env.item_asset("refused.zip");
    let (path, _) = s.env.file("refused.zip", 1000);
    let creates = s.env.emu.call_count(CallKind::CreateUpload);
    s.env
        .emu
        .fault(CallKind::CreateUpload, FaultAction::Status(401), 2);
    let err = s.env.upload(&target, &path).await.unwrap_err();
    let e = stac_error(&err).expect("an API error");
    assert_eq!(e.class, ErrorClass::Auth, "{e}");
    assert_eq!(e.status.map(|s| s.as_u16()), Some(401), "{e}");
    assert_eq!(s.env.emu.call_count(CallKind::CreateUpload), creates + 2);
    assert_eq!(s.front.initiate_auths(), 3);
    assert_eq!(s.env.count(&target, UploadState::InProgress), 0);
}

#[tokio::test]
async fn a_revoked_token_is_refused_by_the_api_and_the_client_logs_in_again() {
    let s = setup().await;
    let target = s.env.item_asset("revoked.zip");
    let (path, sha) = s.env.file("revoked.zip", 1000);
    // A read logs in (reads carry the token, but the emulator, like the API, does not check
    // them: the token is not in its cache yet).
    s.env.client.read_asset(&target).await.expect("read");
    assert_eq!(s.front.calls(), ["InitiateAuth:USER_PASSWORD_AUTH"]);
    // The administrator signs the user out everywhere: access and refresh tokens are revoked.
    s.pool.sign_out(USER).await;
    s.env
        .upload(&target, &path)
        .await
        .expect("upload after re-login");
    s.env.assert_holds(&target, &sha);
    // Create answered 401 (GetUser refused the token), the refresh token was refused too, and a
    // password login gave the token the replay succeeded with.
    assert_eq!(
        s.front.calls(),
        [
            "InitiateAuth:USER_PASSWORD_AUTH",
            "InitiateAuth:REFRESH_TOKEN_AUTH",
            "InitiateAuth:USER_PASSWORD_AUTH"
        ]
    );
    assert_eq!(s.env.emu.call_count(CallKind::CreateUpload), 2);
}

#[tokio::test]
async fn tokens_are_renewed_with_the_refresh_token_before_they_expire() {
    // moto's tokens live an hour; a renewal margin of an hour makes every token due at once,
    // which is what an hour of real time would do to a production token.
    let s = setup_with(Some(Duration::from_secs(3600)), COGNITO_PASSWORD).await;
    let target = s.env.item_asset("renewed.zip");
    let (path, sha) = s.env.file("renewed.zip", 11 * MIB);
    s.env.upload(&target, &path).await.expect("upload");
    s.env.assert_holds(&target, &sha);
    let calls = s.front.calls();
    assert_eq!(calls[0], "InitiateAuth:USER_PASSWORD_AUTH");
    // create and complete each needed a renewed token; every renewed token was accepted.
    let refreshes = s.front.count("InitiateAuth:REFRESH_TOKEN_AUTH");
    assert!(refreshes >= 1, "{calls:?}");
    assert_eq!(
        s.front.count("InitiateAuth:USER_PASSWORD_AUTH"),
        1,
        "{calls:?}"
    );

    // Once the refresh token is revoked, renewal falls back to a password login.
    s.pool.sign_out(USER).await;
    s.env.client.read_asset(&target).await.expect("read");
    let calls = s.front.calls();
    assert_eq!(
        &calls[calls.len() - 2..],
        [
            "InitiateAuth:REFRESH_TOKEN_AUTH",
            "InitiateAuth:USER_PASSWORD_AUTH"
        ]
    );
}

#[tokio::test]
async fn a_wrong_password_is_an_auth_error_naming_cognito_and_is_not_retried() {
    let wrong = "Wrong-Password-123!";
    let s = setup_with(None, wrong).await;
    let target = s.env.item_asset("denied.zip");
    let (path, _) = s.env.file("denied.zip", 1000);
    let err = s.env.upload(&target, &path).await.unwrap_err();
    let e = stac_error(&err).expect("an API error");
    assert_eq!(e.class, ErrorClass::Auth, "{e}");
    let text = err.to_string();
    assert!(text.contains("Cognito"), "{text}");
    assert!(text.contains("NotAuthorizedException"), "{text}");
    assert!(!text.contains(wrong), "the password leaked: {text}");
    assert!(
        !format!("{err:?}").contains(wrong),
        "the password leaked: {err:?}"
    );
    assert_eq!(s.front.initiate_auths(), 1, "not retried");
    assert_eq!(s.env.emu.call_count(CallKind::CreateUpload), 0);
}

#[tokio::test]
async fn a_user_who_must_change_the_password_gets_the_challenge_error() {
    let pool = CognitoPool::new().await;
    let temporary = "Temp-Pass-42!";
    pool.user_with_temporary_password("new-user", temporary)
        .await;
    let front = CognitoFront::start(&pool.endpoint).await;
    let config = EmulatorConfig {
        auth: stac_uploadd_emulator::EmulatorAuth::Cognito {
            endpoint: pool.endpoint.clone(),
        },
        ..EmulatorConfig::default()
    };
    let env = start_with_auth(
        config,
        Auth::Cognito(pool.auth("new-user", temporary, &front.url)),
    )
    .await;
    let (target, path, _) = env.asset_with_file("challenge.zip", 1000);
    let err = env.upload(&target, &path).await.unwrap_err();
    let e = stac_error(&err).expect("an API error");
    assert_eq!(e.class, ErrorClass::Auth, "{e}");
    assert!(!e.is_retryable());
    let text = err.to_string();
    assert!(text.contains("NEW_PASSWORD_REQUIRED"), "{text}");
    assert!(!text.contains(temporary), "{text}");
    assert_eq!(front.initiate_auths(), 1, "not retried");
}

#[tokio::test]
async fn eight_concurrent_jobs_share_one_login() {
    let s = setup().await;
    let mut jobs = Vec::new();
    for i in 0..8 {
        let target = s.env.item_asset(&format!("job-{i}.zip"));
        let (path, sha) = s.env.file(&format!("job-{i}.zip"), 300_000 + i);
        // Each job holds its own clone, as the supervisor's jobs do.
        let client = s.env.client.clone();
        jobs.push(tokio::spawn(async move {
            let result = stac_upload::upload_file(
                &client,
                &target,
                &path,
                &opts(),
                std::sync::Arc::new(()),
                &tokio_util::sync::CancellationToken::new(),
            )
            .await;
            (target, sha, result.map(|_| ()).map_err(|e| e.to_string()))
        }));
    }
    for job in jobs {
        let (target, sha, result) = job.await.unwrap();
        result.unwrap_or_else(|e| panic!("{target}: {e}"));
        s.env.assert_holds(&target, &sha);
    }
    assert_eq!(s.front.initiate_auths(), 1, "{:?}", s.front.calls());
    s.env.assert_nothing_in_progress();
}
