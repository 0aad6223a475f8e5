//! The S3 side: presigned part URLs, part PUTs and downloads of completed objects.

use std::fmt;

use axum::body::Body;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use chrono::{DateTime, Utc};
use futures_util::StreamExt;
use hmac::{Hmac, KeyInit, Mac};
use md5::{Digest, Md5};
use serde::Deserialize;
use sha2::Sha256;

use super::error::S3Error;
use super::faults::{self, CallKind, FaultAction};
use super::request::{Ctx, P};
use super::state::{Part, UploadState};
use super::{AssetKey, storage};

/// S3's largest part.
const MAX_PART_SIZE: u64 = 5 * 1024 * 1024 * 1024;

/// Signs part URLs with a key drawn at start, so that URLs cannot be forged or altered and die
/// with the server.
pub(crate) struct Signer {
    key: [u8; 32],
}

impl fmt::Debug for Signer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Signer(<redacted>)")
    }
}

impl Signer {
    pub(crate) fn new() -> Self {
        let mut key = [0u8; 32];
        rand::fill(&mut key);
        Signer { key }
    }

    /// The signature covers the declared md5, as S3's covers the Content-MD5 header.
    fn mac(&self, upload_id: &str, part: &str, md5: &str, expires: i64) -> Hmac<Sha256> {
        let mut mac =
            Hmac::<Sha256>::new_from_slice(&self.key).expect("HMAC accepts keys of any length");
        mac.update(format!("{upload_id}|{part}|{md5}|{expires}").as_bytes());
        mac
    }

    pub(crate) fn url(
        &self,
        origin: &str,
        upload_id: &str,
        part: &str,
        md5: &str,
        expires: i64,
    ) -> String {
        let signature = hex::encode(
            self.mac(upload_id, part, md5, expires)
                .finalize()
                .into_bytes(),
        );
        format!(
            "{origin}/_s3/{upload_id}/{part}?X-Amz-Expires={expires}&X-Amz-Signature={signature}"
        )
    }

    fn verify(
        &self,
        upload_id: &str,
        part: &str,
        md5: &str,
        expires: i64,
        signature: &str,
    ) -> bool {
        hex::decode(signature).is_ok_and(|sig| {
            self.mac(upload_id, part, md5, expires)
                .verify_slice(&sig)
                .is_ok()
        })
    }
}

#[derive(Debug, Deserialize)]
pub(crate) struct PartPath {
    upload_id: String,
    /// Parsed by hand: a bad number is a bad signature, not a routing error.
    part: String,
}

/// `PUT /_s3/{upload_id}/{part}`: one part body, checked in S3's order.
pub(crate) async fn put_part(ctx: Ctx, P(path): P<PartPath>, body: Body) -> Response {
    let mut entry =
        faults::PartEntry::start(&ctx.shared, &path.upload_id, &path.part, &ctx.headers);
    let response = put_part_logged(ctx, path, body).await;
    entry.answered(response.status().as_u16());
    response
}

async fn put_part_logged(ctx: Ctx, path: PartPath, body: Body) -> Response {
    let shared = &ctx.shared;
    shared.calls.incr(CallKind::PutPart);
    shared.requests.record(CallKind::PutPart, &ctx.headers);
    let _in_flight = shared.parts_in_flight.enter();
    // Never the query: it is the URL's secret.
    tracing::debug!(upload_id = %path.upload_id, part = %path.part, "part PUT");
    if !shared.latency.is_zero() {
        tokio::time::sleep(shared.latency).await;
    }
    let mut drop_mid_body = false;
    let mut drop_after_commit = false;
    let mut slow_answer = None;
    match shared.faults.take(CallKind::PutPart) {
        None => {}
        Some(FaultAction::SlowAnswer(delay)) => slow_answer = Some(delay),
        Some(FaultAction::Delay(delay)) => tokio::time::sleep(delay).await,
        Some(action @ (FaultAction::Status(_) | FaultAction::StatusRetryAfter { .. })) => {
            let (code, retry_after) = match action {
                FaultAction::StatusRetryAfter {
                    status,
                    retry_after,
                } => (status, Some(retry_after)),
                FaultAction::Status(code) => (code, None),
                _ => (500, None),
            };
            // An injected status answers a part that arrived: the body is read first, so the
            // client always gets this answer (answered before the body, it may meet a reset
            // connection instead, which is the `drop` fault's case).
            drain(body).await;
            let mut response = match StatusCode::from_u16(code) {
                Ok(status) if !matches!(code, 502 | 504) => S3Error::for_status(status),
                _ => faults::status_response(code),
            };
            faults::mark_injected(&mut response);
            if let Some(v) = retry_after {
                response = faults::with_retry_after(response, &v);
            }
            return response;
        }
        Some(FaultAction::ExpireUrl) => {
            drain(body).await;
            let mut response = S3Error::EXPIRED.into_response();
            faults::mark_injected(&mut response);
            return response;
        }
        Some(FaultAction::Drop) => drop_mid_body = true,
        Some(FaultAction::DropAfterCommit) => drop_after_commit = true,
        // Create-only and API-only faults: a part PUT is answered as usual.
        Some(
            FaultAction::NoPartUrls
            | FaultAction::HtmlBody
            | FaultAction::StalePublic
            | FaultAction::MissingPublic,
        ) => {}
    }
    let response = receive_part(&ctx, &path, body, drop_mid_body)
        .await
        .unwrap_or_else(IntoResponse::into_response);
    if drop_after_commit {
        return ctx.conn.kill().await;
    }
    if let Some(delay) = slow_answer {
        tokio::time::sleep(delay).await;
    }
    response
}

/// Reads a body to its end, keeping nothing.
async fn drain(body: Body) {
    let mut stream = body.into_data_stream();
    while let Some(Ok(_)) = stream.next().await {}
}

async fn receive_part(
    ctx: &Ctx,
    path: &PartPath,
    body: Body,
    drop_mid_body: bool,
) -> Result<Response, S3Error> {
    let headers = &ctx.headers;
    // S3 needs the length up front.
    if headers.contains_key(header::TRANSFER_ENCODING) {
        return Err(S3Error::NOT_IMPLEMENTED);
    }
    let length: u64 = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
        .ok_or(S3Error::NOT_IMPLEMENTED)?;

    let query: Vec<(String, String)> =
        url::form_urlencoded::parse(ctx.raw_query().unwrap_or_default().as_bytes())
            .into_owned()
            .collect();
    let param = |name: &str| {
        query
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    };
    let expires = param("X-Amz-Expires").and_then(|e| e.parse::<i64>().ok());
    let signature = param("X-Amz-Signature");
    let part = path
        .part
        .parse::<u32>()
        .ok()
        .filter(|n| (1..=100).contains(n));

    // The md5s declared for this URL's part (more than one when the create listed the part
    // twice); the signature tells which one the URL was made for.
    let (declared, in_progress) = {
        let state = ctx.shared.lock();
        let upload = state
            .upload_by_id(&path.upload_id)
            .ok_or(S3Error::NO_SUCH_UPLOAD)?;
        let declared: Vec<String> = upload
            .url_parts
            .iter()
            .filter(|(_, n, _)| Some(*n) == part)
            .map(|(_, _, md5)| md5.clone())
            .collect();
        let in_s3 = !state.lost_in_s3.contains(&path.upload_id);
        (declared, upload.status == UploadState::InProgress && in_s3)
    };
    let (Some(part), Some(expires), Some(signature)) = (part, expires, signature) else {
        return Err(S3Error::SIGNATURE);
    };
    let Some(md5) = declared.into_iter().find(|md5| {
        ctx.shared
            .signer
            .verify(&path.upload_id, &path.part, md5, expires, signature)
    }) else {
        return Err(S3Error::SIGNATURE);
    };
    let expiry = DateTime::from_timestamp(expires, 0).unwrap_or(DateTime::<Utc>::MAX_UTC);
    if ctx.shared.now() >= expiry {
        return Err(S3Error::EXPIRED);
    }
    let content_md5 = headers.get("content-md5").and_then(|v| v.to_str().ok());
    if content_md5 != Some(md5.as_str()) {
        return Err(S3Error::SIGNATURE);
    }
    if !in_progress {
        return Err(S3Error::NO_SUCH_UPLOAD);
    }
    if length > MAX_PART_SIZE {
        return Err(S3Error::TOO_LARGE);
    }
    // A declared md5 the server took (Python's lenient base64, e.g. "!!!!") but that is not
    // the base64 of 16 bytes is S3's to refuse.
    let expected_digest = STANDARD
        .decode(&md5)
        .ok()
        .filter(|d| d.len() == 16)
        .ok_or(S3Error::INVALID_DIGEST)?;

    let internal = |e: std::io::Error| {
        tracing::warn!(error = %e, "cannot store a part");
        S3Error::INTERNAL
    };
    let mut sink = ctx
        .shared
        .store
        .sink(&path.upload_id, part, length)
        .await
        .map_err(internal)?;
    let mut hasher = Md5::new();
    let mut received = 0u64;
    let mut stream = body.into_data_stream();
    loop {
        if drop_mid_body && received >= length / 2 {
            // Nothing of this attempt is kept.
            drop(sink);
            return Ok(ctx.conn.kill().await);
        }
        let Some(chunk) = stream.next().await else {
            break;
        };
        let chunk = chunk.map_err(|_| S3Error::INCOMPLETE_BODY)?;
        hasher.update(&chunk);
        received += chunk.len() as u64;
        sink.write(&chunk).await.map_err(internal)?;
    }
    if received != length {
        return Err(S3Error::INCOMPLETE_BODY);
    }
    let digest = hasher.finalize();
    if digest.as_slice() != expected_digest.as_slice() {
        return Err(S3Error::BAD_DIGEST);
    }
    let blob = sink.finish().await.map_err(internal)?;
    let md5_hex = hex::encode(digest);

    let replaced = {
        let now = ctx.shared.now();
        let mut state = ctx.shared.lock();
        // Aborted or completed while the body was on its way.
        let upload = state
            .upload_by_id_mut(&path.upload_id)
            .filter(|u| u.status == UploadState::InProgress)
            .ok_or(S3Error::NO_SUCH_UPLOAD)?;
        upload.parts.insert(
            part,
            Part {
                md5_hex: md5_hex.clone(),
                modified: now,
                blob,
            },
        )
    };
    // A replaced part's file is deleted outside the lock.
    drop(replaced);
    let etag = HeaderValue::from_str(&format!("\"{md5_hex}\"")).map_err(|_| S3Error::INTERNAL)?;
    Ok((StatusCode::OK, [(header::ETAG, etag)]).into_response())
}

#[derive(Debug, Deserialize)]
pub(crate) struct DataPath {
    collection: String,
    item: Option<String>,
    asset: String,
}

/// `GET` and `HEAD /_data/...`: the asset's public object, streamed, with the headers the
/// bucket answers (docs/protocol.md, "The public object").
pub(crate) async fn download(ctx: Ctx, P(path): P<DataPath>) -> Response {
    ctx.call(CallKind::Download, async {
        let key = AssetKey {
            collection: path.collection,
            item: path.item,
            asset: path.asset,
        };
        let found = {
            let state = ctx.shared.lock();
            state
                .asset(&key)
                .ok()
                .and_then(|asset| asset.public.clone())
        };
        let Some(object) = found else {
            return Ok(S3Error::NO_SUCH_KEY.into_response());
        };
        // A HEAD reads no file.
        let body = if ctx.method == axum::http::Method::HEAD {
            Body::empty()
        } else {
            Body::from_stream(storage::stream(object.blobs))
        };
        let mut response = Response::new(body);
        let headers = response.headers_mut();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_str(&object.content_type)
                .unwrap_or(HeaderValue::from_static("application/octet-stream")),
        );
        headers.insert(header::CONTENT_LENGTH, HeaderValue::from(object.size));
        if let Some(encoding) = object
            .content_encoding
            .and_then(|e| HeaderValue::from_str(&e).ok())
        {
            headers.insert(header::CONTENT_ENCODING, encoding);
        }
        for (name, value) in [
            ("x-amz-meta-sha256", object.sha256_hex),
            ("cache-control", object.cache_control),
            ("etag", object.etag),
        ] {
            if let Ok(value) = HeaderValue::from_str(&value) {
                headers.insert(name, value);
            }
        }
        Ok(response)
    })
    .await
}
