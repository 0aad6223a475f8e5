//! The emulator through real HTTP, as a client sees it.

use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use md5::{Digest, Md5};
use reqwest::{Client, StatusCode};
use serde_json::{Value, json};
use sha2::Sha256;

use super::*;

const MIB: usize = 1024 * 1024;

async fn start(config: EmulatorConfig) -> Emulator {
    Emulator::start("127.0.0.1:0".parse().unwrap(), config)
        .await
        .unwrap()
}

fn client() -> Client {
    Client::builder().no_proxy().build().unwrap()
}

fn md5_b64(data: &[u8]) -> String {
    STANDARD.encode(Md5::digest(data))
}

fn md5_hex(data: &[u8]) -> String {
    hex::encode(Md5::digest(data))
}

fn multihash(data: &[u8]) -> String {
    format!("1220{}", hex::encode(Sha256::digest(data)))
}

fn item_key() -> AssetKey {
    AssetKey::item_asset("coll", "item-1", "data.zip")
}

/// An emulator with one item asset, and a client.
async fn setup(config: EmulatorConfig) -> (Emulator, Client, AssetKey) {
    let emu = start(config).await;
    let key = item_key();
    emu.create_asset(&key, "application/zip").unwrap();
    (emu, client(), key)
}

fn create_body(parts: &[&[u8]], whole: &[u8]) -> Value {
    let md5_parts: Vec<Value> = parts
        .iter()
        .enumerate()
        .map(|(i, p)| json!({"part_number": i + 1, "md5": md5_b64(p)}))
        .collect();
    json!({
        "number_parts": parts.len(),
        "md5_parts": md5_parts,
        "file:checksum": multihash(whole),
    })
}

async fn create(http: &Client, asset_url: &str, body: &Value) -> reqwest::Response {
    http.post(format!("{asset_url}/uploads"))
        .json(body)
        .send()
        .await
        .unwrap()
}

async fn create_ok(http: &Client, asset_url: &str, parts: &[&[u8]]) -> Value {
    let whole = parts.concat();
    let response = create(http, asset_url, &create_body(parts, &whole)).await;
    assert_eq!(response.status(), StatusCode::CREATED);
    response.json().await.unwrap()
}

fn part_url(upload: &Value, part: usize) -> String {
    upload["urls"][part - 1]["url"].as_str().unwrap().to_owned()
}

async fn put_part(http: &Client, url: &str, data: &[u8]) -> reqwest::Response {
    http.put(url)
        .header("Content-MD5", md5_b64(data))
        .body(data.to_vec())
        .send()
        .await
        .unwrap()
}

async fn complete(http: &Client, asset_url: &str, id: &str, parts: &[&[u8]]) -> reqwest::Response {
    let parts: Vec<Value> = parts
        .iter()
        .enumerate()
        .map(|(i, p)| json!({"etag": format!("\"{}\"", md5_hex(p)), "part_number": i + 1}))
        .collect();
    post(
        http,
        &format!("{asset_url}/uploads/{id}/complete"),
        json!({"parts": parts}),
    )
    .await
}

async fn post(http: &Client, url: &str, body: Value) -> reqwest::Response {
    http.post(url).json(&body).send().await.unwrap()
}

async fn abort(http: &Client, asset_url: &str, id: &str) -> reqwest::Response {
    post(http, &format!("{asset_url}/uploads/{id}/abort"), json!({})).await
}

async fn s3_code(response: reqwest::Response) -> (StatusCode, String) {
    let status = response.status();
    assert_eq!(
        response.headers()["content-type"],
        "application/xml",
        "S3 errors are XML"
    );
    let body = response.text().await.unwrap();
    let code = body
        .split("<Code>")
        .nth(1)
        .and_then(|rest| rest.split("</Code>").next())
        .unwrap_or_default()
        .to_owned();
    (status, code)
}

#[tokio::test]
async fn multipart_upload_round_trip() {
    let (emu, http, key) = setup(EmulatorConfig::default()).await;
    let url = emu.asset_url(&key);
    let first = vec![1u8; 5 * MIB];
    let second = b"tail".to_vec();
    let parts: [&[u8]; 2] = [&first, &second];
    let whole = parts.concat();

    let response = create(&http, &url, &create_body(&parts, &whole)).await;
    assert_eq!(response.status(), StatusCode::CREATED);
    let location = response.headers()["location"].to_str().unwrap().to_owned();
    let upload: Value = response.json().await.unwrap();
    let id = upload["upload_id"].as_str().unwrap().to_owned();
    assert_eq!(location, format!("{url}/uploads/{id}"));
    assert_eq!(upload["status"], "in-progress");
    assert_eq!(upload["urls"].as_array().unwrap().len(), 2);
    assert_eq!(upload["urls"][1]["part"], 2);
    assert!(upload["urls"][0]["expires"].is_string());

    for (i, part) in parts.iter().enumerate() {
        let response = put_part(&http, &part_url(&upload, i + 1), part).await;
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(
            response.headers()["etag"],
            format!("\"{}\"", md5_hex(part)).as_str()
        );
    }
    let listed: Value = http
        .get(format!("{url}/uploads/{id}/parts"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(listed["parts"][0]["size"], 5 * MIB);
    assert_eq!(listed["parts"][1]["part_number"], 2);

    let response = complete(&http, &url, &id, &parts).await;
    assert_eq!(response.status(), StatusCode::OK);
    let done: Value = response.json().await.unwrap();
    assert_eq!(done["status"], "completed");
    // serializers/upload.py leaves `urls` out once the upload is finished.
    assert!(done.get("urls").is_none(), "{done}");
    assert!(done["completed"].is_string());

    let asset = emu.asset(&key).unwrap();
    assert_eq!(asset.checksum.as_deref(), Some(multihash(&whole).as_str()));
    assert_eq!(asset.size, Some(whole.len() as u64));
    assert_eq!(emu.object_bytes(&key).unwrap(), whole);
    assert_eq!(
        emu.object_sha256_hex(&key).unwrap(),
        hex::encode(Sha256::digest(&whole))
    );
    let json: Value = http.get(&url).send().await.unwrap().json().await.unwrap();
    assert_eq!(json["file:checksum"], multihash(&whole));
    // The real server keeps the size to itself.
    assert!(json.get("file:size").is_none(), "{json}");
    let href = json["href"].as_str().unwrap();
    let downloaded = http.get(href).send().await.unwrap().bytes().await.unwrap();
    assert_eq!(downloaded.as_ref(), whole.as_slice());

    // The upload is finished: ETag caching, 500 on its parts, 409 on a second complete.
    let response = http
        .get(format!("{url}/uploads/{id}"))
        .send()
        .await
        .unwrap();
    let etag = response.headers()["etag"].clone();
    let response = http
        .get(format!("{url}/uploads/{id}"))
        .header("If-None-Match", etag)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::NOT_MODIFIED);
    let response = http
        .get(format!("{url}/uploads/{id}/parts"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::INTERNAL_SERVER_ERROR);
    let response = complete(&http, &url, &id, &parts).await;
    assert_eq!(response.status(), StatusCode::CONFLICT);
    let body: Value = response.json().await.unwrap();
    assert_eq!(
        body,
        json!({"code": 409, "description": "No upload in progress"})
    );
    assert!(emu.in_progress_uploads().is_empty());
    assert_eq!(emu.call_count(CallKind::PutPart), 2);
    emu.shutdown().await;
}

#[tokio::test]
async fn collection_asset_on_disk_with_content_encoding() {
    let dir = tempfile::tempdir().unwrap();
    let config = EmulatorConfig {
        storage: Storage::Dir(dir.path().to_owned()),
        ..Default::default()
    };
    let emu = start(config).await;
    let http = client();
    let key = AssetKey::collection_asset("coll", "table.csv");
    emu.create_asset(&key, "text/csv").unwrap();
    let url = emu.asset_url(&key);
    let data = b"pretend this is gzip".to_vec();
    let mut body = create_body(&[&data], b"uncompressed");
    body["content_encoding"] = json!("gzip");
    let response = create(&http, &url, &body).await;
    assert_eq!(response.status(), StatusCode::CREATED);
    let upload: Value = response.json().await.unwrap();
    assert_eq!(upload["content_encoding"], "gzip");
    let id = upload["upload_id"].as_str().unwrap();
    assert_eq!(
        put_part(&http, &part_url(&upload, 1), &data).await.status(),
        StatusCode::OK
    );
    assert_eq!(
        complete(&http, &url, id, &[&data]).await.status(),
        StatusCode::OK
    );

    assert_eq!(emu.object_bytes(&key).unwrap(), data);
    let asset = emu.asset(&key).unwrap();
    assert_eq!(asset.content_encoding.as_deref(), Some("gzip"));
    let response = http.get(asset.href.unwrap()).send().await.unwrap();
    assert_eq!(response.headers()["content-encoding"], "gzip");
    assert_eq!(response.headers()["content-type"], "text/csv");
    assert_eq!(response.bytes().await.unwrap().as_ref(), data.as_slice());
    emu.shutdown().await;
    assert_eq!(
        std::fs::read_dir(dir.path()).unwrap().count(),
        0,
        "the part files go with the emulator"
    );
}

#[tokio::test]
async fn second_create_conflicts_with_upload_id() {
    let (emu, http, key) = setup(EmulatorConfig::default()).await;
    let url = emu.asset_url(&key);
    let first = create_ok(&http, &url, &[b"a"]).await;
    let response = create(&http, &url, &create_body(&[b"b"], b"b")).await;
    assert_eq!(response.status(), StatusCode::CONFLICT);
    let body: Value = response.json().await.unwrap();
    assert_eq!(
        body,
        json!({"code": 409, "description": "Upload already in progress",
               "upload_id": first["upload_id"]})
    );
    let listed: Value = http
        .get(format!("{url}/uploads"))
        .query(&[("status", "in-progress")])
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(listed["uploads"][0]["upload_id"], first["upload_id"]);
    assert_eq!(listed["uploads"].as_array().unwrap().len(), 1);
    let delete = http.delete(&url).send().await.unwrap();
    assert_eq!(
        delete.status(),
        StatusCode::BAD_REQUEST,
        "an upload is in progress"
    );
    assert!(emu.asset(&key).is_some());
}

#[tokio::test]
async fn legacy_mode_answers_400_without_id() {
    let config = EmulatorConfig {
        legacy_in_progress_400: true,
        ..Default::default()
    };
    let (emu, http, key) = setup(config).await;
    let url = emu.asset_url(&key);
    let planted = emu.plant_upload(&key, chrono::Utc::now() - chrono::TimeDelta::days(2));
    let response = create(&http, &url, &create_body(&[b"b"], b"b")).await;
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    let body: Value = response.json().await.unwrap();
    assert_eq!(
        body,
        json!({"code": 400, "description": "Upload already in progress"})
    );
    assert_eq!(emu.in_progress_uploads()[0].1.id, planted);
}

#[tokio::test]
async fn concurrent_creates_have_one_winner() {
    let (emu, http, key) = setup(EmulatorConfig::default()).await;
    let url = emu.asset_url(&key);
    let body = create_body(&[b"x"], b"x");
    let attempts = (0..8).map(|_| create(&http, &url, &body));
    let statuses: Vec<StatusCode> = futures_util::future::join_all(attempts)
        .await
        .iter()
        .map(|r| r.status())
        .collect();
    assert_eq!(
        statuses
            .iter()
            .filter(|s| **s == StatusCode::CREATED)
            .count(),
        1
    );
    assert_eq!(
        statuses
            .iter()
            .filter(|s| **s == StatusCode::CONFLICT)
            .count(),
        7
    );
    assert_eq!(emu.uploads(&key).len(), 1);
}

#[tokio::test]
async fn refused_complete_leaves_upload_in_progress() {
    let (emu, http, key) = setup(EmulatorConfig::default()).await;
    let url = emu.asset_url(&key);
    let parts: [&[u8]; 2] = [b"too small", b"last"];
    let upload = create_ok(&http, &url, &parts).await;
    let id = upload["upload_id"].as_str().unwrap();
    for (i, part) in parts.iter().enumerate() {
        put_part(&http, &part_url(&upload, i + 1), part).await;
    }

    let response = complete(&http, &url, id, &parts).await;
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    let body = response.text().await.unwrap();
    assert!(body.contains("EntityTooSmall"), "{body}");

    let wrong = post(
        &http,
        &format!("{url}/uploads/{id}/complete"),
        json!({"parts": [{"etag": "\"00\"", "part_number": 1},
                         {"etag": format!("\"{}\"", md5_hex(b"last")), "part_number": 2}]}),
    )
    .await;
    assert!(wrong.text().await.unwrap().contains("InvalidPart"));
    let unordered = post(
        &http,
        &format!("{url}/uploads/{id}/complete"),
        json!({"parts": [{"etag": "a", "part_number": 2}, {"etag": "b", "part_number": 1}]}),
    )
    .await;
    assert!(unordered.text().await.unwrap().contains("InvalidPartOrder"));
    let too_few = post(
        &http,
        &format!("{url}/uploads/{id}/complete"),
        json!({"parts": [{"etag": "a", "part_number": 1}]}),
    )
    .await;
    assert_eq!(
        too_few.json::<Value>().await.unwrap()["description"],
        json!({"parts": ["Too few parts"]})
    );
    let missing = post(&http, &format!("{url}/uploads/{id}/complete"), json!({})).await;
    assert_eq!(
        missing.json::<Value>().await.unwrap()["description"],
        json!({"parts": "Missing required field"})
    );

    let in_progress = emu.in_progress_uploads();
    assert_eq!(in_progress.len(), 1);
    assert_eq!(in_progress[0].1.parts_received, 2);

    let response = abort(&http, &url, id).await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.json::<Value>().await.unwrap()["status"], "aborted");
    assert!(emu.in_progress_uploads().is_empty());
    assert_eq!(
        abort(&http, &url, id).await.status(),
        StatusCode::INTERNAL_SERVER_ERROR
    );
    // A part URL of an aborted upload is dead.
    let (status, code) = s3_code(put_part(&http, &part_url(&upload, 1), parts[0]).await).await;
    assert_eq!(
        (status, code.as_str()),
        (StatusCode::NOT_FOUND, "NoSuchUpload")
    );
    assert!(emu.asset(&key).unwrap().checksum.is_none());
}

#[tokio::test]
async fn part_put_is_checked_like_s3() {
    let (emu, http, key) = setup(EmulatorConfig::default()).await;
    let url = emu.asset_url(&key);
    let data = b"part body".to_vec();
    let upload = create_ok(&http, &url, &[&data]).await;
    let part = part_url(&upload, 1);

    let bad_digest = http
        .put(&part)
        .header("Content-MD5", md5_b64(&data))
        .body(b"other bytes".to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(
        s3_code(bad_digest).await,
        (StatusCode::BAD_REQUEST, "BadDigest".to_owned())
    );
    let no_md5 = http.put(&part).body(data.clone()).send().await.unwrap();
    assert_eq!(
        s3_code(no_md5).await,
        (StatusCode::FORBIDDEN, "SignatureDoesNotMatch".to_owned())
    );
    let other_md5 = http
        .put(&part)
        .header("Content-MD5", md5_b64(b"other bytes"))
        .body(b"other bytes".to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(s3_code(other_md5).await.1, "SignatureDoesNotMatch");
    let tampered = put_part(
        &http,
        &part.replace("X-Amz-Expires=", "X-Amz-Expires=1"),
        &data,
    )
    .await;
    assert_eq!(s3_code(tampered).await.1, "SignatureDoesNotMatch");
    let chunks = vec![Ok::<_, std::io::Error>(bytes::Bytes::from(data.clone()))];
    let chunked = http
        .put(&part)
        .header("Content-MD5", md5_b64(&data))
        .body(reqwest::Body::wrap_stream(futures_util::stream::iter(
            chunks,
        )))
        .send()
        .await
        .unwrap();
    assert_eq!(
        s3_code(chunked).await,
        (StatusCode::NOT_IMPLEMENTED, "NotImplemented".to_owned())
    );
    assert_eq!(emu.uploads(&key)[0].parts_received, 0);

    // Sent again, a part replaces the previous one.
    assert_eq!(put_part(&http, &part, &data).await.status(), StatusCode::OK);
    assert_eq!(put_part(&http, &part, &data).await.status(), StatusCode::OK);
    assert_eq!(emu.uploads(&key)[0].parts_received, 1);
}

#[tokio::test]
async fn expired_urls_are_refused() {
    let config = EmulatorConfig {
        url_ttl: Duration::ZERO,
        ..Default::default()
    };
    let (emu, http, key) = setup(config).await;
    let url = emu.asset_url(&key);
    let upload = create_ok(&http, &url, &[b"x"]).await;
    let (status, code) = s3_code(put_part(&http, &part_url(&upload, 1), b"x").await).await;
    assert_eq!(
        (status, code.as_str()),
        (StatusCode::FORBIDDEN, "AccessDenied")
    );

    let (emu, http, key) = setup(EmulatorConfig::default()).await;
    let url = emu.asset_url(&key);
    let upload = create_ok(&http, &url, &[b"x"]).await;
    emu.faults().inject(
        CallKind::PutPart,
        FaultAction::ExpireUrl,
        FaultTrigger::Next(1),
    );
    let response = put_part(&http, &part_url(&upload, 1), b"x").await;
    assert_eq!(response.status(), StatusCode::FORBIDDEN);
    assert!(
        response
            .text()
            .await
            .unwrap()
            .contains("Request has expired")
    );
    assert_eq!(
        put_part(&http, &part_url(&upload, 1), b"x").await.status(),
        StatusCode::OK
    );
    assert_eq!(emu.faults().injected(CallKind::PutPart), 1);
}

#[tokio::test]
async fn drop_fault_resets_the_connection_mid_body() {
    let (emu, http, key) = setup(EmulatorConfig::default()).await;
    let url = emu.asset_url(&key);
    let data = vec![9u8; 2 * MIB];
    let upload = create_ok(&http, &url, &[&data]).await;
    emu.faults()
        .inject(CallKind::PutPart, FaultAction::Drop, FaultTrigger::Next(1));
    let result = http
        .put(part_url(&upload, 1))
        .header("Content-MD5", md5_b64(&data))
        .body(data.clone())
        .send()
        .await;
    assert!(result.is_err(), "the client must see the connection die");
    assert_eq!(emu.uploads(&key)[0].parts_received, 0, "no effect on state");
    assert_eq!(emu.faults().injected(CallKind::PutPart), 1);

    assert_eq!(
        put_part(&http, &part_url(&upload, 1), &data).await.status(),
        StatusCode::OK
    );
    assert_eq!(emu.uploads(&key)[0].parts_received, 1);
}

#[tokio::test]
async fn lost_complete_answer_still_completes() {
    let (emu, http, key) = setup(EmulatorConfig::default()).await;
    let url = emu.asset_url(&key);
    let data = b"whole file".to_vec();
    let upload = create_ok(&http, &url, &[&data]).await;
    let id = upload["upload_id"].as_str().unwrap();
    put_part(&http, &part_url(&upload, 1), &data).await;
    emu.faults().inject(
        CallKind::Complete,
        FaultAction::DropAfterCommit,
        FaultTrigger::Next(1),
    );
    let parts = json!({"parts": [{"etag": md5_hex(&data), "part_number": 1}]});
    let lost = http
        .post(format!("{url}/uploads/{id}/complete"))
        .json(&parts)
        .send()
        .await;
    assert!(lost.is_err());
    assert_eq!(emu.uploads(&key)[0].status, UploadState::Completed);
    assert_eq!(emu.object_bytes(&key).unwrap(), data);

    let retry = post(&http, &format!("{url}/uploads/{id}/complete"), parts).await;
    assert_eq!(retry.status(), StatusCode::CONFLICT);
    let read: Value = http
        .get(format!("{url}/uploads/{id}"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(read["status"], "completed");
    assert_eq!(read["file:checksum"], multihash(&data));
}

#[tokio::test]
async fn status_faults_look_like_gateways_and_servers() {
    let (emu, http, key) = setup(EmulatorConfig::default()).await;
    let url = emu.asset_url(&key);
    let faults = emu.faults();
    faults.inject(
        CallKind::CreateUpload,
        FaultAction::Status(503),
        FaultTrigger::Next(1),
    );
    faults.inject(
        CallKind::CreateUpload,
        FaultAction::Status(500),
        FaultTrigger::Next(1),
    );
    faults.inject(
        CallKind::CreateUpload,
        FaultAction::Delay(Duration::from_millis(50)),
        FaultTrigger::Next(1),
    );
    let body = create_body(&[b"x"], b"x");

    let response = create(&http, &url, &body).await;
    assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(response.headers()["content-type"], "text/html");
    assert!(response.text().await.unwrap().contains("<title>503"));
    let response = create(&http, &url, &body).await;
    assert_eq!(response.status(), StatusCode::INTERNAL_SERVER_ERROR);
    assert_eq!(response.json::<Value>().await.unwrap()["code"], 500);
    assert!(emu.uploads(&key).is_empty(), "a status fault has no effect");

    let started = std::time::Instant::now();
    assert_eq!(
        create(&http, &url, &body).await.status(),
        StatusCode::CREATED
    );
    assert!(started.elapsed() >= Duration::from_millis(50));
    assert_eq!(emu.call_count(CallKind::CreateUpload), 3);
    assert_eq!(faults.injected(CallKind::CreateUpload), 3);
}

#[tokio::test]
async fn v09_names_the_checksum_differently() {
    let (emu, http, key) = setup(EmulatorConfig::default()).await;
    let url = format!("{}/{}", emu.base_url_v09(), key.api_path());
    let data = b"v0.9 data".to_vec();
    let v1_body = create_body(&[&data], &data);
    let response = create(&http, &url, &v1_body).await;
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    let body: Value = response.json().await.unwrap();
    assert_eq!(
        body["description"]["checksum:multihash"],
        json!(["This field is required."])
    );

    let mut v09_body = v1_body.clone();
    let checksum = v09_body
        .as_object_mut()
        .unwrap()
        .remove("file:checksum")
        .unwrap();
    v09_body["checksum:multihash"] = checksum;
    let response = create(&http, &url, &v09_body).await;
    assert_eq!(response.status(), StatusCode::CREATED);
    let upload: Value = response.json().await.unwrap();
    assert_eq!(upload["checksum:multihash"], multihash(&data));
    assert!(upload.get("file:checksum").is_none());
    let id = upload["upload_id"].as_str().unwrap();
    put_part(&http, &part_url(&upload, 1), &data).await;
    assert_eq!(
        complete(&http, &url, id, &[&data]).await.status(),
        StatusCode::OK
    );
    let asset: Value = http.get(&url).send().await.unwrap().json().await.unwrap();
    assert_eq!(asset["checksum:multihash"], multihash(&data));
}

#[tokio::test]
async fn writes_need_credentials() {
    let config = EmulatorConfig {
        auth: EmulatorAuth::Basic {
            username: "user".into(),
            password: "secret".into(),
        },
        ..Default::default()
    };
    let (emu, http, key) = setup(config).await;
    let url = format!("{}/uploads", emu.asset_url(&key));
    let body = create_body(&[b"x"], b"x");

    let response = http.post(&url).json(&body).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(response.headers()["www-authenticate"], "Bearer");
    assert_eq!(response.json::<Value>().await.unwrap()["code"], 401);
    let wrong = http
        .post(&url)
        .basic_auth("user", Some("wrong"))
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(wrong.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(
        http.get(&url).send().await.unwrap().status(),
        StatusCode::OK
    );
    let right = http
        .post(&url)
        .basic_auth("user", Some("secret"))
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(right.status(), StatusCode::CREATED);

    let config = EmulatorConfig {
        auth: EmulatorAuth::Bearer("tok".into()),
        ..Default::default()
    };
    let (emu, http, key) = setup(config).await;
    let url = format!("{}/uploads", emu.asset_url(&key));
    let token = http
        .post(&url)
        .header("Authorization", "Token tok")
        .json(&body);
    assert_eq!(
        token.send().await.unwrap().status(),
        StatusCode::UNAUTHORIZED
    );
    let bearer = http.post(&url).bearer_auth("tok").json(&body);
    assert_eq!(bearer.send().await.unwrap().status(), StatusCode::CREATED);
}

#[tokio::test]
async fn create_body_is_validated() {
    let (emu, http, key) = setup(EmulatorConfig::default()).await;
    let url = emu.asset_url(&key);
    let good = create_body(&[b"a", b"b"], b"ab");
    let mut cases = Vec::new();
    for (field, value) in [
        ("number_parts", json!(0)),
        ("number_parts", json!(101)),
        ("number_parts", json!(3)),
        ("file:checksum", json!(format!("1114{}", "00".repeat(20)))),
        ("content_encoding", json!("zstd")),
        ("update_interval", json!(3601)),
        (
            "md5_parts",
            json!([{"part_number": 1, "md5": md5_b64(b"a")}]),
        ),
    ] {
        let mut body = good.clone();
        body[field] = value;
        cases.push(body);
    }
    for body in cases {
        let response = create(&http, &url, &body).await;
        assert_eq!(response.status(), StatusCode::BAD_REQUEST, "{body}");
        assert_eq!(response.json::<Value>().await.unwrap()["code"], 400);
    }
    assert!(emu.uploads(&key).is_empty());

    let missing = AssetKey::item_asset("coll", "item-1", "nope.zip");
    let response = create(&http, &emu.asset_url(&missing), &good).await;
    assert_eq!(response.status(), StatusCode::NOT_FOUND);

    let external = AssetKey::item_asset("coll", "item-1", "ext.tif");
    emu.allow_external_assets("coll", &["https://example.com/"])
        .unwrap();
    let response = http
        .put(emu.asset_url(&external))
        .json(
            &json!({"id": "ext.tif", "type": "image/tiff; application=geotiff",
                      "href": "https://example.com/ext.tif"}),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::CREATED);
    let response = create(&http, &emu.asset_url(&external), &good).await;
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    assert_eq!(
        response.json::<Value>().await.unwrap()["description"],
        "Not allowed to create multipart uploads on external assets"
    );
}

#[tokio::test]
async fn stac_objects_are_put_and_read() {
    let emu = start(EmulatorConfig::default()).await;
    let http = client();
    let base = emu.base_url();
    let put = |url: String, body: Value| {
        let http = http.clone();
        async move { http.put(url).json(&body).send().await.unwrap() }
    };

    // The bodies the real server requires (tests_rules.rs has every refusal).
    let collection = json!({"id": "c", "description": "C", "license": "proprietary"});
    let item = json!({"id": "i", "geometry": {"type": "Point", "coordinates": [7.4, 46.9]},
                      "properties": {"datetime": "2024-05-01T12:00:00Z"}});
    let response = put(format!("{base}/collections/c"), collection.clone()).await;
    assert_eq!(response.status(), StatusCode::CREATED);
    let mut titled = collection.clone();
    titled["title"] = json!("C");
    let response = put(format!("{base}/collections/c"), titled).await;
    assert_eq!(response.status(), StatusCode::OK);
    let mut renamed = collection.clone();
    renamed["id"] = json!("d");
    let response = put(format!("{base}/collections/c"), renamed).await;
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    let response = put(format!("{base}/collections/x/items/i"), item.clone()).await;
    assert_eq!(response.status(), StatusCode::NOT_FOUND);
    let response = put(format!("{base}/collections/c/items/i"), item).await;
    assert_eq!(response.status(), StatusCode::CREATED);

    let asset_url = format!("{base}/collections/c/items/i/assets");
    // An id with an extension of no media type is a field error, one that fits another
    // media type an error of the whole body (the serializer's validate()).
    let refused = [
        ("a.bin", "application/zip", "id"),
        ("a.bin", "application/octet-stream", "type"),
        ("a.zip", "image/png", "non_field_errors"),
    ];
    for (id, media_type, field) in refused {
        let response = put(
            format!("{asset_url}/{id}"),
            json!({"id": id, "type": media_type}),
        )
        .await;
        assert_eq!(
            response.status(),
            StatusCode::BAD_REQUEST,
            "{id} {media_type}"
        );
        let body: Value = response.json().await.unwrap();
        assert!(body["description"][field].is_array(), "{body}");
    }
    let response = put(
        format!("{asset_url}/a.zip"),
        json!({"id": "a.zip", "type": "application/zip", "title": "A"}),
    )
    .await;
    assert_eq!(response.status(), StatusCode::CREATED);

    // An uploaded asset keeps its checksum through PATCH and PUT alike (it is read-only: the
    // server's upsert never touches it); PUT resets an item asset's size.
    let key = AssetKey::item_asset("c", "i", "a.zip");
    let upload = create_ok(&http, &emu.asset_url(&key), &[b"z"]).await;
    let id = upload["upload_id"].as_str().unwrap();
    put_part(&http, &part_url(&upload, 1), b"z").await;
    complete(&http, &emu.asset_url(&key), id, &[b"z"]).await;
    let patched = http
        .patch(format!("{asset_url}/a.zip"))
        .json(&json!({"title": "B"}))
        .send()
        .await
        .unwrap();
    assert_eq!(patched.status(), StatusCode::OK);
    let patched: Value = patched.json().await.unwrap();
    assert_eq!(patched["title"], "B");
    assert_eq!(patched["file:checksum"], multihash(b"z"));
    let response = put(
        format!("{asset_url}/a.zip"),
        json!({"id": "a.zip", "type": "application/zip"}),
    )
    .await;
    assert_eq!(response.status(), StatusCode::OK);
    let replaced = emu.asset(&key).unwrap();
    assert_eq!(
        (replaced.checksum.as_deref(), replaced.size),
        (Some(multihash(b"z").as_str()), None)
    );
    let shown: Value = http
        .get(format!("{asset_url}/a.zip"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(shown["file:checksum"], multihash(b"z"), "{shown}");
    let read: Value = http
        .get(format!("{base}/collections/c/items/i"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(read["id"], "i");
}

#[tokio::test]
async fn uploads_are_listed_page_by_page() {
    let (emu, http, key) = setup(EmulatorConfig::default()).await;
    let url = emu.asset_url(&key);
    for _ in 0..3 {
        let upload = create_ok(&http, &url, &[b"x"]).await;
        abort(&http, &url, upload["upload_id"].as_str().unwrap()).await;
    }
    let mut seen = Vec::new();
    let mut next = Some(format!("{url}/uploads?limit=2"));
    while let Some(page_url) = next.take() {
        let page: Value = http
            .get(&page_url)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        for upload in page["uploads"].as_array().unwrap() {
            seen.push(upload["upload_id"].as_str().unwrap().to_owned());
        }
        next = page["links"]
            .as_array()
            .unwrap()
            .iter()
            .find(|l| l["rel"] == "next")
            .map(|l| l["href"].as_str().unwrap().to_owned());
    }
    assert_eq!(seen.len(), 3);
    seen.dedup();
    assert_eq!(seen.len(), 3);
}

#[tokio::test]
async fn admin_api_drives_faults_and_shows_state() {
    let (emu, http, key) = setup(EmulatorConfig::default()).await;
    let admin = format!("http://{}/_emulator", emu.addr());
    let url = emu.asset_url(&key);
    let upload = create_ok(&http, &url, &[b"x"]).await;
    let id = upload["upload_id"].as_str().unwrap();

    let response = http
        .post(format!("{admin}/faults"))
        .json(&json!({"call": "get", "action": "status", "status": 502, "next": 1}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::CREATED);
    let bad = http
        .post(format!("{admin}/faults"))
        .json(&json!({"call": "get", "action": "explode"}))
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), StatusCode::BAD_REQUEST);
    let get = http
        .get(format!("{url}/uploads/{id}"))
        .send()
        .await
        .unwrap();
    assert_eq!(get.status(), StatusCode::BAD_GATEWAY);
    assert_eq!(
        http.get(format!("{url}/uploads/{id}"))
            .send()
            .await
            .unwrap()
            .status(),
        StatusCode::OK
    );

    http.post(format!("{admin}/faults"))
        .json(&json!({"call": "put_part", "action": "drop", "probability": 1.0}))
        .send()
        .await
        .unwrap();
    let response = http.delete(format!("{admin}/faults")).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::NO_CONTENT);
    assert!(emu.faults().pending().is_empty());

    let response = http
        .put(format!("{admin}/bandwidth"))
        .json(&json!({"bytes_per_second": 1_000_000}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(emu.faults().bandwidth_limit(), Some(1_000_000));

    let state: Value = http
        .get(format!("{admin}/state"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(state["assets"][0]["uploads"][0]["upload_id"], id);
    assert_eq!(state["assets"][0]["uploads"][0]["status"], "in-progress");
    assert_eq!(state["calls"]["get"], 2);
    assert_eq!(state["bytes_per_second"], 1_000_000);
}

#[tokio::test]
async fn bandwidth_limit_slows_part_bodies() {
    let (emu, http, key) = setup(EmulatorConfig::default()).await;
    let url = emu.asset_url(&key);
    let data = vec![3u8; 100_000];
    let upload = create_ok(&http, &url, &[&data]).await;
    emu.faults().set_bandwidth_limit(Some(400_000));
    let started = std::time::Instant::now();
    assert_eq!(
        put_part(&http, &part_url(&upload, 1), &data).await.status(),
        StatusCode::OK
    );
    // 100 kB at 400 kB/s: a quarter of a second, give or take the first read.
    assert!(
        started.elapsed() >= Duration::from_millis(200),
        "{:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn seed_file_creates_the_catalogue() {
    let dir = tempfile::tempdir().unwrap();
    let seed = dir.path().join("seed.json");
    std::fs::write(
        &seed,
        json!({"collections": [{"id": "c", "assets": [{"id": "c.zip", "type": "application/zip"}],
              "items": [{"id": "i", "assets": [{"id": "i.tif",
                         "type": "image/tiff; application=geotiff; profile=cloud-optimized"}]}]}]})
        .to_string(),
    )
    .unwrap();
    let config = EmulatorConfig {
        seed: Some(seed.clone()),
        ..Default::default()
    };
    let emu = start(config).await;
    assert!(
        emu.asset(&AssetKey::collection_asset("c", "c.zip"))
            .is_some()
    );
    let tif = emu.asset(&AssetKey::item_asset("c", "i", "i.tif")).unwrap();
    assert!(tif.media_type.contains("geotiff"));

    std::fs::write(
        &seed,
        r#"{"collections": [{"id": "c", "assets": [{"id": "x.bin", "type": "application/zip"}]}]}"#,
    )
    .unwrap();
    let config = EmulatorConfig {
        seed: Some(seed),
        ..Default::default()
    };
    let err = Emulator::start("127.0.0.1:0".parse().unwrap(), config)
        .await
        .unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::InvalidData);
}

#[tokio::test]
async fn a_seed_file_that_is_a_device_or_too_large_is_refused_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let huge = dir.path().join("huge.json");
    std::fs::File::create(&huge)
        .unwrap()
        .set_len(1 << 30)
        .unwrap();
    for (seed, said) in [
        (std::path::PathBuf::from("/dev/zero"), "not a regular file"),
        (huge, "the most a seed file may hold"),
    ] {
        let config = EmulatorConfig {
            seed: Some(seed.clone()),
            ..Default::default()
        };
        let err = Emulator::start("127.0.0.1:0".parse().unwrap(), config)
            .await
            .unwrap_err();
        assert!(err.to_string().contains(said), "{}: {err}", seed.display());
    }
}

#[tokio::test]
async fn an_injected_401_is_the_api_json_with_a_bearer_challenge() {
    let (emu, http, key) = setup(EmulatorConfig::default()).await;
    emu.faults().inject(
        CallKind::CreateUpload,
        FaultAction::Status(401),
        FaultTrigger::Next(1),
    );
    let response = create(&http, &emu.asset_url(&key), &create_body(&[b"x"], b"x")).await;
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(response.headers()["www-authenticate"], "Bearer");
    assert!(
        response.headers()["content-type"]
            .to_str()
            .unwrap()
            .contains("json")
    );
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["code"], 401);
    assert!(body["description"].is_string(), "{body}");
}

#[tokio::test]
async fn cognito_mode_asks_getuser_and_remembers_valid_tokens() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    // A stand-in Cognito: "good" is a valid access token, anything else is not.
    let asked = Arc::new(AtomicUsize::new(0));
    let counter = Arc::clone(&asked);
    let cognito = axum::Router::new().route(
        "/",
        axum::routing::post(move |headers: axum::http::HeaderMap, body: String| {
            let counter = Arc::clone(&counter);
            async move {
                counter.fetch_add(1, Ordering::SeqCst);
                assert_eq!(
                    headers["x-amz-target"],
                    "AWSCognitoIdentityProviderService.GetUser"
                );
                let token: Value = serde_json::from_str(&body).unwrap();
                if token["AccessToken"] == "good" {
                    (axum::http::StatusCode::OK, r#"{"Username":"u"}"#)
                } else {
                    (
                        axum::http::StatusCode::BAD_REQUEST,
                        r#"{"__type":"NotAuthorizedException","message":"Invalid token"}"#,
                    )
                }
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let endpoint = format!("http://{}/", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, cognito).await.unwrap() });

    let config = EmulatorConfig {
        auth: EmulatorAuth::Cognito { endpoint },
        ..Default::default()
    };
    let (emu, http, key) = setup(config).await;
    let url = format!("{}/uploads", emu.asset_url(&key));
    let body = create_body(&[b"x"], b"x");
    let bad = http.post(&url).bearer_auth("forged").json(&body);
    assert_eq!(bad.send().await.unwrap().status(), StatusCode::UNAUTHORIZED);
    let basic = http.post(&url).basic_auth("u", Some("p")).json(&body);
    assert_eq!(
        basic.send().await.unwrap().status(),
        StatusCode::UNAUTHORIZED
    );
    let good = http.post(&url).bearer_auth("good").json(&body);
    assert_eq!(good.send().await.unwrap().status(), StatusCode::CREATED);
    let id = emu.uploads(&key)[0].id.clone();
    let abort = http
        .post(format!("{url}/{id}/abort"))
        .bearer_auth("good")
        .send()
        .await
        .unwrap();
    assert_eq!(abort.status(), StatusCode::OK);
    // forged once, good once: the second use of "good" came from the cache.
    assert_eq!(asked.load(Ordering::SeqCst), 2);

    // Cognito away: the API cannot check tokens and says so with a 503.
    let config = EmulatorConfig {
        auth: EmulatorAuth::Cognito {
            endpoint: format!("http://127.0.0.1:{}/", {
                let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
                l.local_addr().unwrap().port()
            }),
        },
        ..Default::default()
    };
    let (emu, http, key) = setup(config).await;
    let url = format!("{}/uploads", emu.asset_url(&key));
    let down = http.post(&url).bearer_auth("good").json(&body);
    assert_eq!(
        down.send().await.unwrap().status(),
        StatusCode::SERVICE_UNAVAILABLE
    );
}

async fn answer(response: reqwest::Response) -> (StatusCode, Value) {
    let status = response.status();
    (status, response.json().await.unwrap_or(Value::Null))
}

fn bad_request(description: Value) -> (StatusCode, Value) {
    (
        StatusCode::BAD_REQUEST,
        json!({"code": 400, "description": description}),
    )
}

/// serializers/upload.py and validators.py `validate_md5_parts` take more than a careful client
/// sends: DRF's IntegerField takes `"1"`, Python counts `true` as the int 1, base64 is decoded
/// leniently, and duplicates pass when the distinct part numbers match. The emulator must not
/// refuse what the server takes (nor take what it refuses).
#[tokio::test]
async fn create_takes_what_the_servers_serializer_takes() {
    let (emu, http, key) = setup(EmulatorConfig::default()).await;
    let url = emu.asset_url(&key);
    let checksum = multihash(b"x");
    let body = |number_parts: Value, md5_parts: Value| json!({"number_parts": number_parts, "md5_parts": md5_parts, "file:checksum": checksum});

    // "!!!!" decodes (to nothing) with Python's non-validating b64decode; "1" is an integer.
    let sent = json!([{"part_number": 1, "md5": "!!!!", "note": "kept"}]);
    let (status, upload) = answer(create(&http, &url, &body(json!("1"), sent.clone())).await).await;
    assert_eq!(status, StatusCode::CREATED, "{upload}");
    assert_eq!(upload["number_parts"], 1);
    assert_eq!(upload["md5_parts"], sent, "stored and answered as sent");
    // S3 is the one to refuse a Content-MD5 that is no md5.
    let put = http
        .put(part_url(&upload, 1))
        .header("Content-MD5", "!!!!")
        .body(b"x".to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(
        s3_code(put).await,
        (StatusCode::BAD_REQUEST, "InvalidDigest".to_owned())
    );
    let id = upload["upload_id"].as_str().unwrap();
    assert_eq!(abort(&http, &url, id).await.status(), StatusCode::OK);

    // `true` is Python's 1: taken, answered as sent, in the URL list too. Listed with 1 as
    // well, it is the same part number: two URLs, one part.
    let md5 = md5_b64(b"x");
    let sent = json!([{"part_number": true, "md5": md5}, {"part_number": 1, "md5": md5}]);
    let (status, upload) = answer(create(&http, &url, &body(json!(1.0), sent.clone())).await).await;
    assert_eq!(status, StatusCode::CREATED, "{upload}");
    assert_eq!(upload["md5_parts"], sent);
    assert_eq!(upload["urls"][0]["part"], true);
    assert_eq!(upload["urls"][1]["part"], 1);
    assert_eq!(upload["urls"].as_array().unwrap().len(), 2);
    // The URL made for part 1 takes the part; completing it works.
    assert_eq!(
        put_part(&http, &part_url(&upload, 2), b"x").await.status(),
        StatusCode::OK
    );
    let id = upload["upload_id"].as_str().unwrap();
    assert_eq!(
        complete(&http, &url, id, &[b"x"]).await.status(),
        StatusCode::OK
    );

    // What the server refuses, in its words.
    let md5_entry = json!([{"part_number": 1, "md5": md5}]);
    let invalid_int = json!({"number_parts": ["A valid integer is required."]});
    for (number_parts, md5_parts, description) in [
        (json!(true), md5_entry.clone(), invalid_int.clone()),
        (json!(1.5), md5_entry.clone(), invalid_int.clone()),
        (json!("one"), md5_entry.clone(), invalid_int),
        (
            json!(null),
            md5_entry.clone(),
            json!({"number_parts": ["This field may not be null."]}),
        ),
        (
            json!(1),
            json!({"part_number": 1}),
            json!({"non_field_errors": [
                "Invalid md5_parts field: must be a list but is <class 'dict'>"]}),
        ),
        (
            json!(1),
            json!([{"part_number": 1.0, "md5": md5}]),
            json!({"non_field_errors": ["Invalid md5_parts[0].part_number value: part_number \
                                         field must be an int between 1 and 1"]}),
        ),
        // The server's message names the entry before the bad one.
        (
            json!(1),
            json!([{"part_number": 1, "md5": "AAA"}]),
            json!({"non_field_errors": ["Invalid md5_parts[-1].md5 value: md5 field must be a \
                                         non empty b64 encoded string"]}),
        ),
        (
            json!(2),
            json!([{"part_number": 1, "md5": md5}, {"part_number": true, "md5": md5}]),
            json!({"non_field_errors": ["Missing, too many or duplicate part_number in \
                                         md5_parts field list: list should have 2 item(s)."]}),
        ),
    ] {
        let sent = body(number_parts, md5_parts);
        assert_eq!(
            answer(create(&http, &url, &sent).await).await,
            bad_request(description),
            "{sent}"
        );
    }
    // Python cannot sort a string part number with an int one: the server answers 500.
    let sent = body(
        json!(2),
        json!([{"part_number": "1", "md5": md5}, {"part_number": 2, "md5": md5}]),
    );
    assert_eq!(
        create(&http, &url, &sent).await.status(),
        StatusCode::INTERNAL_SERVER_ERROR
    );
}

/// The complete view validates with partial=True, which DRF passes down to the part
/// serializer: a part without `etag` is not refused by the serializer but reaches S3, which
/// finds no such part.
#[tokio::test]
async fn a_complete_part_without_etag_goes_to_s3() {
    let (emu, http, key) = setup(EmulatorConfig::default()).await;
    let url = emu.asset_url(&key);
    let upload = create_ok(&http, &url, &[b"x"]).await;
    assert_eq!(
        put_part(&http, &part_url(&upload, 1), b"x").await.status(),
        StatusCode::OK
    );
    let id = upload["upload_id"].as_str().unwrap();
    let complete_url = format!("{url}/uploads/{id}/complete");

    let (status, body) =
        answer(post(&http, &complete_url, json!({"parts": [{"part_number": 1}]})).await).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    let said = body["description"][0].as_str().unwrap();
    assert!(said.contains("(InvalidPart)"), "{body}");

    let (status, body) = answer(
        post(
            &http,
            &complete_url,
            json!({"parts": [{"part_number": "1", "etag": null}]}),
        )
        .await,
    )
    .await;
    assert_eq!(
        (status, body),
        bad_request(json!({"parts": {"0": {"etag": ["This field may not be null."]}}}))
    );
    // Still in progress: a complete with the etag (and a string part number) works.
    let etag = format!("\"{}\"", md5_hex(b"x"));
    let done = post(
        &http,
        &complete_url,
        json!({"parts": [{"part_number": "1", "etag": etag}]}),
    )
    .await;
    assert_eq!(done.status(), StatusCode::OK);
}

/// pagination.py: `limit` on both lists and `offset` on the parts list are refused as a list
/// description, after the asset or upload is found.
#[tokio::test]
async fn list_paging_errors_are_the_paginators() {
    let (emu, http, key) = setup(EmulatorConfig::default()).await;
    let url = emu.asset_url(&key);
    let upload = create_ok(&http, &url, &[b"x"]).await;
    let id = upload["upload_id"].as_str().unwrap();
    let get = |u: String| {
        let http = http.clone();
        async move { answer(http.get(u).send().await.unwrap()).await }
    };
    for list in [
        format!("{url}/uploads"),
        format!("{url}/uploads/{id}/parts"),
    ] {
        assert_eq!(
            get(format!("{list}?limit=x")).await,
            bad_request(json!(["Invalid limit query parameter: must be an integer"]))
        );
        assert_eq!(
            get(format!("{list}?limit=0")).await,
            bad_request(json!([
                "limit query parameter too small, must be in range 1..100"
            ]))
        );
    }
    let parts = format!("{url}/uploads/{id}/parts");
    assert_eq!(
        get(format!("{parts}?offset=x")).await,
        bad_request(json!([
            "Invalid offset query parameter: must be an integer"
        ]))
    );
    assert_eq!(
        get(format!("{parts}?offset=-1")).await,
        bad_request(json!([
            "offset query parameter too small, must be positive"
        ]))
    );
    // The upload is looked up first: an unknown one is 404 whatever the query says.
    let (status, _) = get(format!("{url}/uploads/nope/parts?limit=x")).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let other = AssetKey::item_asset("coll", "item-1", "missing.zip");
    let (status, _) = get(format!("{}/uploads?limit=x", emu.asset_url(&other))).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

/// One whole upload of `data` as a single part; the asset's public URL.
async fn upload_whole(emu: &Emulator, http: &Client, key: &AssetKey, data: &[u8]) -> String {
    let url = emu.asset_url(key);
    let upload = create_ok(http, &url, &[data]).await;
    let id = upload["upload_id"].as_str().unwrap();
    assert_eq!(
        put_part(http, &part_url(&upload, 1), data).await.status(),
        StatusCode::OK
    );
    assert_eq!(
        complete(http, &url, id, &[data]).await.status(),
        StatusCode::OK
    );
    let json: Value = http.get(&url).send().await.unwrap().json().await.unwrap();
    json["href"].as_str().unwrap().to_owned()
}

#[tokio::test]
async fn the_public_object_answers_head_and_get_as_the_bucket_does() {
    let (emu, http, key) = setup(EmulatorConfig::default()).await;
    let data = b"published bytes".to_vec();
    let href = upload_whole(&emu, &http, &key, &data).await;

    let head = http.head(&href).send().await.unwrap();
    assert_eq!(head.status(), StatusCode::OK);
    let h = head.headers();
    assert_eq!(h["content-length"], data.len().to_string().as_str());
    assert_eq!(h["content-type"], "application/zip");
    assert_eq!(
        h["x-amz-meta-sha256"],
        hex::encode(Sha256::digest(&data)).as_str()
    );
    assert_eq!(h["cache-control"], "max-age=7200, public");
    // S3's multipart form: the MD5 of the parts' MD5s, and how many there were.
    let etag = format!("\"{}-1\"", md5_hex(&Md5::digest(&data)));
    assert_eq!(h["etag"], etag.as_str());
    assert!(h.get("content-encoding").is_none());
    assert!(head.bytes().await.unwrap().is_empty(), "a HEAD has no body");

    let get = http.get(&href).send().await.unwrap();
    assert_eq!(get.headers()["etag"], etag.as_str());
    assert_eq!(get.bytes().await.unwrap().as_ref(), data.as_slice());
    assert_eq!(emu.call_count(CallKind::Download), 2);

    // Nothing uploaded yet: S3's NoSuchKey.
    let other = AssetKey::item_asset("coll", "item-1", "other.zip");
    emu.create_asset(&other, "application/zip").unwrap();
    let json: Value = http
        .get(emu.asset_url(&other))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let (status, code) = s3_code(
        http.get(json["href"].as_str().unwrap())
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(
        (status, code.as_str()),
        (StatusCode::NOT_FOUND, "NoSuchKey")
    );
    emu.shutdown().await;
}

#[tokio::test]
async fn a_stale_public_object_keeps_serving_the_previous_upload() {
    let (emu, http, key) = setup(EmulatorConfig::default()).await;
    let old = b"version one".to_vec();
    let href = upload_whole(&emu, &http, &key, &old).await;
    emu.faults().add("complete:stale_public".parse().unwrap());
    let new = b"version two, longer".to_vec();
    upload_whole(&emu, &http, &key, &new).await;

    // The API declares the new file...
    let asset = emu.asset(&key).unwrap();
    assert_eq!(asset.checksum.as_deref(), Some(multihash(&new).as_str()));
    assert_eq!(emu.object_bytes(&key).unwrap(), new);
    // ...and the public URL serves the old one, headers included.
    let get = http.get(&href).send().await.unwrap();
    assert_eq!(
        get.headers()["x-amz-meta-sha256"],
        hex::encode(Sha256::digest(&old)).as_str()
    );
    assert_eq!(
        get.headers()["content-length"],
        old.len().to_string().as_str()
    );
    assert_eq!(get.bytes().await.unwrap().as_ref(), old.as_slice());

    // The next complete publishes again.
    let newest = b"version three".to_vec();
    upload_whole(&emu, &http, &key, &newest).await;
    let get = http.get(&href).send().await.unwrap();
    assert_eq!(get.bytes().await.unwrap().as_ref(), newest.as_slice());
    emu.shutdown().await;
}

#[tokio::test]
async fn a_missing_public_object_answers_404() {
    let (emu, http, key) = setup(EmulatorConfig::default()).await;
    let old = b"version one".to_vec();
    let href = upload_whole(&emu, &http, &key, &old).await;
    emu.faults().add("complete:missing_public".parse().unwrap());
    let new = b"version two".to_vec();
    upload_whole(&emu, &http, &key, &new).await;
    assert_eq!(
        emu.asset(&key).unwrap().checksum.as_deref(),
        Some(multihash(&new).as_str())
    );
    let head = http.head(&href).send().await.unwrap();
    assert_eq!(head.status(), StatusCode::NOT_FOUND);
    let (status, code) = s3_code(http.get(&href).send().await.unwrap()).await;
    assert_eq!(
        (status, code.as_str()),
        (StatusCode::NOT_FOUND, "NoSuchKey")
    );
    assert_eq!(emu.faults().injected(CallKind::Complete), 1);
    emu.shutdown().await;
}
