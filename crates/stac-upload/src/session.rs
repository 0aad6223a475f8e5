//! The session state machine: digest -> create -> parts -> complete, and abort on the way out.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use futures_util::{StreamExt, TryStreamExt};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use super::compress;
use super::digest::{DigestError, DigestOptions, FileDigest, digest_file};
use super::error::{AbortOutcome, UploadError};
use super::objects::{NewObjects, ensure_objects};
use super::plan::PartPlan;
use super::transfer::PartContext;
use super::types::{
    CompressMode, DigestKey, Durable, FileSnapshot, UploadEvent, UploadObserver, UploadOptions,
    UploadReport, stat_file,
};
use stac_client::retry::{self, Action, Classified};
use stac_client::rules;
use stac_client::units::ByteSize;
use stac_client::{
    AssetInfo, AssetTarget, CompletedPart, ContentEncoding, CreateUpload, ErrorClass, Md5Part,
    Multihash, PartNumber, StacClient, StacError, Step, Upload, UploadId, UploadStatus,
};

/// Uploads `path` to `target`, which must exist: the whole protocol, with retries of transient
/// failures inside each step. An upload this session created is completed or aborted before it
/// returns, unless the abort itself fails (see [`UploadError::left_in_progress`]).
pub async fn upload_file(
    client: &StacClient,
    target: &AssetTarget,
    path: &Path,
    opts: &UploadOptions,
    observer: Arc<dyn UploadObserver>,
    cancel: &CancellationToken,
) -> Result<UploadReport, UploadError> {
    let nothing = NewObjects::default();
    publish_file(client, target, path, &nothing, opts, observer, cancel).await
}

/// [`upload_file`], creating the target's item and asset from `objects` when they are missing.
/// Nothing is created before the file has been read, digested and found unchanged since: a file
/// that cannot be read leaves the server as it was.
pub async fn publish_file(
    client: &StacClient,
    target: &AssetTarget,
    path: &Path,
    objects: &NewObjects,
    opts: &UploadOptions,
    observer: Arc<dyn UploadObserver>,
    cancel: &CancellationToken,
) -> Result<UploadReport, UploadError> {
    let started = Instant::now();
    check_target(target, objects)?;
    let meta = stat_file(path).await?;
    let snapshot = FileSnapshot::of(&meta);
    // What the server holds: for skip-unchanged, and the media type for `auto` compression. An
    // asset we are to create may be missing; then there is nothing to compare with.
    let asset = if opts.skip_unchanged || opts.compress == CompressMode::Auto {
        read_asset(client, target, opts, objects.asset.is_some()).await?
    } else {
        None
    };
    let encoding = match opts.compress {
        CompressMode::None => None,
        CompressMode::Gzip => Some(ContentEncoding::Gzip),
        CompressMode::Br => Some(ContentEncoding::Br),
        CompressMode::Auto => {
            let to_create = objects.asset.as_ref().and_then(|a| a["type"].as_str());
            let media_type = asset
                .as_ref()
                .and_then(|a| a.media_type.as_deref())
                .or(to_create)
                .unwrap_or("");
            (meta.len() > AUTO_COMPRESS_ABOVE && !compress::is_compressed_media_type(media_type))
                .then_some(ContentEncoding::Gzip)
        }
    };
    let unchanged = |multihash: &Multihash| {
        opts.skip_unchanged
            && asset
                .as_ref()
                .and_then(|a| a.checksum.as_deref())
                .is_some_and(|c| multihash.matches(c))
    };
    let skipped = |multihash: Multihash, digest_time: Duration| {
        // Debug: the run logs its outcome at info, once (the README, "Logs").
        debug!(multihash = %multihash, "unchanged: the asset already holds this file");
        observer.on_event(&UploadEvent::Unchanged {
            multihash: &multihash,
        });
        UploadReport {
            upload_id: None,
            unchanged: true,
            multihash,
            bytes: meta.len(),
            parts: 0,
            part_size: 0,
            part_retries: 0,
            adopted: false,
            digest_time,
            send_time: Duration::ZERO,
            total_time: started.elapsed(),
            href: asset.as_ref().and_then(|a| a.href.clone()),
            replaced: false,
            content_encoding: None,
        }
    };

    let digest_started = Instant::now();
    let (send_path, plan, digest, _compressed) = match encoding {
        None => {
            let plan = PartPlan::new(meta.len(), opts.part_size).map_err(|source| {
                UploadError::TooLarge {
                    path: path.to_owned(),
                    source,
                }
            })?;
            let key = DigestKey::new(&snapshot, plan.part_size());
            let cached = match &opts.digest_cache {
                Some(c) => c.get(&key).await,
                None => None,
            };
            let digest = match cached {
                Some(d) if d.part_md5s.len() == plan.count() => d,
                _ => {
                    observer.on_event(&UploadEvent::Planned {
                        size: plan.file_size(),
                        parts: plan.count(),
                        part_size: plan.part_size(),
                    });
                    let d = digest(path, &plan, opts.digest, observer.clone(), cancel).await?;
                    snapshot.check(path, "while it was hashed").await?;
                    if let Some(c) = &opts.digest_cache {
                        c.put(key, &d);
                    }
                    d
                }
            };
            if unchanged(&digest.multihash) {
                return Ok(skipped(digest.multihash, digest_started.elapsed()));
            }
            (path.to_owned(), plan, digest, None)
        }
        Some(enc) => {
            // The multihash is the uncompressed file's: a cached one decides skipping without
            // compressing at all.
            let key = DigestKey::new(&snapshot, 0);
            let cached = match &opts.digest_cache {
                Some(c) => c.get(&key).await,
                None => None,
            };
            if let Some(d) = cached
                && unchanged(&d.multihash)
            {
                return Ok(skipped(d.multihash, digest_started.elapsed()));
            }
            observer.on_event(&UploadEvent::Planned {
                size: meta.len(),
                parts: 0,
                part_size: 0,
            });
            let compressed = compress_to_temp(path, enc, opts, observer.clone(), cancel).await?;
            snapshot.check(path, "while it was compressed").await?;
            if let Some(c) = &opts.digest_cache {
                c.put(
                    key,
                    &FileDigest {
                        multihash: compressed.multihash.clone(),
                        part_md5s: Vec::new(),
                        size: meta.len(),
                    },
                );
            }
            if unchanged(&compressed.multihash) {
                return Ok(skipped(compressed.multihash, digest_started.elapsed()));
            }
            let plan = PartPlan::new(compressed.size, opts.part_size).map_err(|source| {
                UploadError::TooLarge {
                    path: path.to_owned(),
                    source,
                }
            })?;
            let mut d = digest(compressed.path(), &plan, opts.digest, Arc::new(()), cancel).await?;
            // `file:checksum` declares the uncompressed bytes; the MD5s are of what is sent.
            d.multihash = compressed.multihash.clone();
            info!(
                encoding = ?enc,
                bytes = meta.len(),
                compressed = compressed.size,
                "compressed"
            );
            (compressed.path().to_owned(), plan, d, Some(compressed))
        }
    };
    let digest_time = digest_started.elapsed();
    observer.on_event(&UploadEvent::Digested {
        multihash: &digest.multihash,
        elapsed: digest_time,
    });
    debug!(multihash = %digest.multihash, parts = plan.count(), part_size = plan.part_size(), "digested");
    // As late as possible before the upload exists: what was hashed must be what is sent.
    snapshot.check(path, "after it was hashed").await?;
    if !objects.is_empty() {
        tokio::select! {
            r = ensure_objects(client, target, objects) => { r?; }
            () = cancel.cancelled() => return Err(UploadError::Cancelled),
        }
    }

    let request = CreateUpload {
        md5_parts: digest
            .part_md5s
            .iter()
            .enumerate()
            .map(|(i, m)| Md5Part {
                part_number: PartNumber(i as u32 + 1),
                md5: m.to_base64(),
            })
            .collect(),
        checksum: digest.multihash.clone(),
        content_encoding: encoding,
    };
    // Before the request: if its answer is lost, this is how the upload is known to be ours. A
    // create that cannot be recorded is not sent.
    observer
        .record(Durable::Creating {
            multihash: &digest.multihash,
        })
        .await
        .map_err(|source| UploadError::NotRecorded {
            what: "the create, before sending it",
            source,
        })?;
    observer.on_event(&UploadEvent::Creating {
        multihash: &digest.multihash,
    });
    // A stop while the create is on the wire must not drop it: the server may already have made
    // the upload, and an upload nobody knows of blocks the asset. The request is seen through
    // (bounded by its own timeouts and retries) and what it made is aborted by `finish` below.
    let creating = create(client, target, &request, opts);
    tokio::pin!(creating);
    let (stopped, created) = tokio::select! {
        r = &mut creating => (false, r),
        () = cancel.cancelled() => (true, creating.await),
    };
    let (upload, adopted) = created?;
    let created_at = Instant::now();
    let upload_id = upload.upload_id.clone();
    // An answer without a usable URL for every part still created the upload: it goes through
    // `finish` like any failure after create, which aborts it.
    let unusable = usable_urls(&upload, plan.count()).map_err(|why| {
        let url = client.asset_call_url(target, &["uploads"]);
        UploadError::Stac(StacError::bad_answer(
            Step::CreateUpload,
            "POST",
            url.as_str(),
            reqwest::StatusCode::CREATED,
            why,
        ))
    });
    // No part is sent before the upload is recorded: one that cannot be is aborted at once.
    let recorded = observer
        .record(Durable::Created {
            upload: &upload,
            multihash: &digest.multihash,
            part_size: plan.part_size(),
            file: &snapshot,
        })
        .await
        .map_err(|source| UploadError::NotRecorded {
            what: "the upload, before sending its parts",
            source,
        });
    if recorded.is_ok() {
        observer.on_event(&UploadEvent::Created {
            upload: &upload,
            multihash: &digest.multihash,
            part_size: plan.part_size(),
            file: &snapshot,
        });
        info!(upload_id = %upload_id, parts = plan.count(), bytes = plan.file_size(), adopted, "upload created");
    }

    let send_started = Instant::now();
    let retries = AtomicU32::new(0);
    let stored = AtomicU64::new(0);
    let ctx = PartContext {
        client,
        path: &send_path,
        source: path,
        snapshot: &snapshot,
        opts,
        observer: &observer,
        retries: &retries,
        stored: &stored,
    };
    let nothing_on_server = HashMap::new();
    // An adopted upload was created by an earlier try: its URLs are older than our clock knows.
    let created_here = (!adopted).then_some(created_at);
    let outcome = match unusable.and(recorded) {
        Err(e) => Err(e),
        Ok(()) if stopped => Err(UploadError::Cancelled),
        Ok(()) => tokio::select! {
            r = send_and_complete(&ctx, target, &upload, &plan, &digest, &nothing_on_server, created_here) => r,
            () = cancel.cancelled() => Err(UploadError::Cancelled),
        },
    };
    finish(
        client,
        target,
        &upload_id,
        outcome,
        observer,
        opts,
        Finished {
            digest,
            plan,
            retries,
            adopted,
            digest_time,
            send_started,
            started,
        },
    )
    .await
    .map(|report| UploadReport {
        href: asset.as_ref().and_then(|a| a.href.clone()),
        replaced: asset.as_ref().is_some_and(|a| a.checksum.is_some()),
        content_encoding: encoding,
        ..report
    })
}

/// Whether an upload's answer gives exactly one URL that parses as http(s) for each of its
/// `parts`; `Err` says what is wrong, for an error naming the request.
fn usable_urls(upload: &Upload, parts: usize) -> Result<(), String> {
    if upload.urls.len() != parts {
        return Err(format!(
            "{} presigned URLs for {parts} parts",
            upload.urls.len()
        ));
    }
    let mut seen = vec![false; parts];
    for u in &upload.urls {
        let n = u.part.0 as usize;
        if n == 0 || n > parts {
            return Err(format!(
                "a presigned URL for part {}, out of 1..={parts}",
                u.part
            ));
        }
        if std::mem::replace(&mut seen[n - 1], true) {
            return Err(format!("two presigned URLs for part {}", u.part));
        }
        match url::Url::parse(&u.url) {
            Ok(parsed) if matches!(parsed.scheme(), "http" | "https") => {}
            Ok(parsed) => {
                return Err(format!(
                    "the presigned URL of part {} has scheme {:?}",
                    u.part,
                    parsed.scheme()
                ));
            }
            Err(e) => {
                return Err(format!(
                    "the presigned URL of part {} does not parse: {e}",
                    u.part
                ));
            }
        }
    }
    Ok(())
}

/// The target's ids as the server's rules allow them, before anything is read or sent: ids
/// rendered from a file name (`{stem}`, `{name}`) cannot be judged when the job file is checked.
/// An asset to be created must have an extension that fits its media type.
// The error is built at most once a run, before anything else: its size costs nothing here.
#[allow(clippy::result_large_err)]
fn check_target(target: &AssetTarget, objects: &NewObjects) -> Result<(), UploadError> {
    let bad = |what: &'static str, id: &str, problem: String| UploadError::InvalidTarget {
        what,
        id: id.to_owned(),
        problem,
    };
    rules::check_id(&target.collection).map_err(|p| bad("collection", &target.collection, p))?;
    if let Some(item) = &target.item {
        rules::check_id(item).map_err(|p| bad("item", item, p))?;
    }
    let media_type = objects.asset.as_ref().and_then(|a| a["type"].as_str());
    rules::check_asset_id(&target.asset, media_type).map_err(|p| bad("asset", &target.asset, p))?;
    rules::check_path(&target.collection, target.item.as_deref(), &target.asset)
        .map_err(|p| bad("asset", &target.asset, p))
}

/// `auto` compresses files larger than this (the API's documentation recommends compressing
/// files over 10 MB).
pub(crate) const AUTO_COMPRESS_ABOVE: u64 = 10_000_000;

/// Reads the asset, retrying transient failures like every other call of the session.
/// With `missing_ok`, an asset that does not exist (404) is `None` rather than an error.
async fn read_asset(
    client: &StacClient,
    target: &AssetTarget,
    opts: &UploadOptions,
    missing_ok: bool,
) -> Result<Option<AssetInfo>, UploadError> {
    let result = retry::call(Step::ReadAsset, opts.call_backoff(), || {
        client.read_asset(target)
    })
    .await;
    match result {
        Ok(a) => Ok(Some(a)),
        Err(e) if missing_ok && e.status == Some(reqwest::StatusCode::NOT_FOUND) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// Compresses into a temporary file (deleted when the handle drops), off the async threads.
async fn compress_to_temp(
    path: &Path,
    encoding: ContentEncoding,
    opts: &UploadOptions,
    observer: Arc<dyn UploadObserver>,
    cancel: &CancellationToken,
) -> Result<compress::Compressed, UploadError> {
    let dir = opts.temp_dir.clone().unwrap_or_else(std::env::temp_dir);
    let source = path.to_owned();
    let result = cancellable_blocking(cancel, move |flag| {
        compress::compress_file(&source, &dir, encoding, flag, &|n| {
            observer.on_event(&UploadEvent::Hashed { bytes: n })
        })
    })
    .await;
    match result {
        Ok(c) => Ok(c),
        Err(e) if e.kind() == std::io::ErrorKind::Interrupted => Err(UploadError::Cancelled),
        Err(source) => Err(UploadError::File {
            path: path.to_owned(),
            action: "cannot compress",
            source,
        }),
    }
}

/// Runs `work` on the blocking pool with a flag that turns true when `cancel` fires.
async fn cancellable_blocking<T: Send + 'static>(
    cancel: &CancellationToken,
    work: impl FnOnce(&AtomicBool) -> std::io::Result<T> + Send + 'static,
) -> std::io::Result<T> {
    let flag = Arc::new(AtomicBool::new(false));
    let watcher = {
        let (flag, cancel) = (flag.clone(), cancel.clone());
        tokio::spawn(async move {
            cancel.cancelled().await;
            flag.store(true, Ordering::Relaxed);
        })
    };
    let result = tokio::task::spawn_blocking(move || work(&flag)).await;
    watcher.abort();
    result.unwrap_or_else(|join| Err(std::io::Error::other(format!("worker task failed: {join}"))))
}

/// What a session knows when its sending ends.
struct Finished {
    digest: FileDigest,
    plan: PartPlan,
    retries: AtomicU32,
    adopted: bool,
    digest_time: Duration,
    send_started: Instant,
    started: Instant,
}

/// Reports success, or aborts the upload and reports why not.
async fn finish(
    client: &StacClient,
    target: &AssetTarget,
    upload_id: &UploadId,
    outcome: Result<(), UploadError>,
    observer: Arc<dyn UploadObserver>,
    opts: &UploadOptions,
    f: Finished,
) -> Result<UploadReport, UploadError> {
    let Finished {
        digest,
        plan,
        retries,
        adopted,
        digest_time,
        send_started,
        started,
    } = f;
    let upload_id = upload_id.clone();
    let outcome = match outcome {
        Ok(()) => Ok(()),
        Err(cause) if !observer.may_send() => {
            warn!(upload_id = %upload_id, error = %cause, "upload stopped: this instance no longer holds its lease, so the upload is left to the instance that takes over");
            Err((cause, AbortOutcome::Handed))
        }
        Err(cause) => {
            warn!(upload_id = %upload_id, error = %cause, "upload failed, aborting it");
            match abort_upload(client, target, &upload_id, opts).await {
                // Only our complete, with our parts' ETags, can have completed our upload: its
                // answer was lost and its retries failed, but the asset holds the file.
                AbortOutcome::AlreadyFinished(UploadStatus::Completed) => {
                    warn!(upload_id = %upload_id, "the upload is completed after all: a complete took effect and its answer was lost");
                    Ok(())
                }
                abort => Err((cause, abort)),
            }
        }
    };
    match outcome {
        Ok(()) => {
            observer.on_event(&UploadEvent::Completed {
                upload_id: &upload_id,
            });
            Ok(UploadReport {
                upload_id: Some(upload_id),
                unchanged: false,
                multihash: digest.multihash,
                bytes: plan.file_size(),
                parts: plan.count(),
                part_size: plan.part_size(),
                part_retries: retries.into_inner(),
                adopted,
                digest_time,
                send_time: send_started.elapsed(),
                total_time: started.elapsed(),
                href: None,
                replaced: false,
                content_encoding: None,
            })
        }
        Err((cause, abort)) => {
            if matches!(
                abort,
                AbortOutcome::Aborted | AbortOutcome::AlreadyFinished(UploadStatus::Aborted)
            ) {
                observer.on_event(&UploadEvent::Aborted {
                    upload_id: &upload_id,
                });
            }
            Err(UploadError::AfterCreate {
                target: target.clone(),
                upload_id,
                cause: Box::new(cause),
                abort,
            })
        }
    }
}

/// Carries on an upload a previous run of the daemon created and did not finish: the file is
/// digested again and must still be what was announced, the parts the server already holds with
/// our bytes are kept, the rest are sent, and the upload is completed. On any failure the upload
/// is aborted, as in [`upload_file`].
#[allow(clippy::too_many_arguments)]
pub async fn resume_upload(
    client: &StacClient,
    target: &AssetTarget,
    path: &Path,
    upload: &Upload,
    expected: &Multihash,
    part_size: u64,
    opts: &UploadOptions,
    observer: Arc<dyn UploadObserver>,
    cancel: &CancellationToken,
) -> Result<UploadReport, UploadError> {
    let started = Instant::now();
    let id = upload.upload_id.clone();
    let prepared = async {
        // The server answers an empty string for an upload sent as is (docs/protocol.md).
        if let Some(encoding) = upload
            .content_encoding
            .as_deref()
            .filter(|e| !e.trim().is_empty())
        {
            // Its parts are of a compressed copy, a temporary file of the run that created it
            // and gone with it; compressing again need not give the same bytes, whose MD5s were
            // announced at create. The file itself may well be unchanged.
            return Err(UploadError::NotResumable {
                path: path.to_owned(),
                reason: format!(
                    "its parts are of the file compressed with {encoding}, a temporary copy made by the run that created it and gone since, and compressing again need not give the same bytes; a new upload sends the file"
                ),
            });
        }
        let meta = stat_file(path).await?;
        let snapshot = FileSnapshot::of(&meta);
        let plan = PartPlan::new(meta.len(), ByteSize(part_size)).map_err(|source| {
            UploadError::TooLarge {
                path: path.to_owned(),
                source,
            }
        })?;
        if Some(plan.count() as u32) != upload.number_parts || plan.part_size() != part_size {
            return Err(UploadError::FileChanged {
                path: path.to_owned(),
                what: "since the upload was created (its parts no longer fit)".into(),
            });
        }
        let digest = digest(path, &plan, opts.digest, observer.clone(), cancel).await?;
        if &digest.multihash != expected {
            return Err(UploadError::FileChanged {
                path: path.to_owned(),
                what: "since the upload was created (other checksum)".into(),
            });
        }
        let on_server: HashMap<PartNumber, String> = client
            .list_parts(target, &id)
            .await?
            .into_iter()
            .map(|p| (p.part_number, p.etag))
            .collect();
        Ok((snapshot, plan, digest, on_server))
    }
    .await;
    let (snapshot, plan, digest, on_server) = match prepared {
        Ok(p) => p,
        Err(cause) => {
            let abort = abort_upload(client, target, &id, opts).await;
            return Err(UploadError::AfterCreate {
                target: target.clone(),
                upload_id: id,
                cause: Box::new(cause),
                abort,
            });
        }
    };
    let digest_time = started.elapsed();
    info!(upload_id = %id, parts_on_server = on_server.len(), parts = plan.count(), "resuming upload");
    let send_started = Instant::now();
    let retries = AtomicU32::new(0);
    let stored = AtomicU64::new(0);
    let ctx = PartContext {
        client,
        path,
        source: path,
        snapshot: &snapshot,
        opts,
        observer: &observer,
        retries: &retries,
        stored: &stored,
    };
    let outcome = tokio::select! {
        r = send_and_complete(&ctx, target, upload, &plan, &digest, &on_server, None) => r,
        () = cancel.cancelled() => Err(UploadError::Cancelled),
    };
    finish(
        client,
        target,
        &id,
        outcome,
        observer,
        opts,
        Finished {
            digest,
            plan,
            retries,
            adopted: true,
            digest_time,
            send_started,
            started,
        },
    )
    .await
}

async fn digest(
    path: &Path,
    plan: &PartPlan,
    opts: DigestOptions,
    observer: Arc<dyn UploadObserver>,
    cancel: &CancellationToken,
) -> Result<FileDigest, UploadError> {
    let owned: PathBuf = path.to_owned();
    let plan = *plan;
    let result = cancellable_blocking(cancel, move |flag| {
        let file = std::fs::File::open(&owned)?;
        digest_file(file, &plan, opts, flag, &|n| {
            observer.on_event(&UploadEvent::Hashed { bytes: n })
        })
        .map_err(|e| match e {
            DigestError::Io(e) => e,
            other => std::io::Error::other(other),
        })
    })
    .await;
    let io = |source| UploadError::File {
        path: path.to_owned(),
        action: "cannot read",
        source,
    };
    match result {
        Ok(d) => Ok(d),
        Err(e) => match e
            .get_ref()
            .and_then(|inner| inner.downcast_ref::<DigestError>())
        {
            Some(DigestError::Cancelled) => Err(UploadError::Cancelled),
            Some(DigestError::SizeChanged { .. }) => Err(UploadError::FileChanged {
                path: path.to_owned(),
                what: format!("while it was hashed: {e}"),
            }),
            _ => Err(io(e)),
        },
    }
}

/// Creates the upload. A create whose answer was lost may have started an upload on the server:
/// when a retry then meets "already in progress" with our exact checksum and parts, that upload
/// is ours, and it is adopted rather than reported as a blocker. When every try failed and one
/// of them may have reached the server, the in-progress uploads are looked up for ours; if the
/// server cannot be asked, the error says an upload of this file may be left in progress.
async fn create(
    client: &StacClient,
    target: &AssetTarget,
    request: &CreateUpload,
    opts: &UploadOptions,
) -> Result<(Upload, bool), UploadError> {
    let attempts = AtomicU32::new(0);
    // A try that failed without a clear answer (timeout, reset, gateway) may have taken effect.
    let maybe_sent = AtomicBool::new(false);
    let result = retry::call_notify(
        Step::CreateUpload,
        opts.call_backoff(),
        || async {
            attempts.fetch_add(1, Ordering::Relaxed);
            client.create_upload(target, request).await
        },
        |_, _| maybe_sent.store(true, Ordering::Relaxed),
    )
    .await;
    let err = match result {
        Ok(u) => return Ok((u, false)),
        Err(e) => e,
    };
    let action = err.action();
    let lost = maybe_sent.load(Ordering::Relaxed) || action.is_retry();
    let hint = match (&err.class, action) {
        (ErrorClass::AlreadyInProgress { upload_id }, Action::FindBlocker) => upload_id.clone(),
        _ if lost => None,
        _ => return Err(err.into()),
    };
    let maybe_in_progress = |cause: StacError| UploadError::MaybeInProgress {
        target: target.clone(),
        checksum: Box::new(request.checksum.clone()),
        upload_id: hint.clone(),
        cause: Box::new(cause),
    };
    let lookup_step = if hint.is_some() {
        Step::GetUpload
    } else {
        Step::ListUploads
    };
    let lookup = retry::call(lookup_step, opts.call_backoff(), || {
        find_blocking_upload(client, target, hint.as_ref())
    })
    .await;
    let blocking = match lookup {
        Ok(b) => b,
        Err(e) if lost || attempts.load(Ordering::Relaxed) > 1 => return Err(maybe_in_progress(e)),
        Err(e) => return Err(e.into()),
    };
    let Some(blocking) = blocking else {
        if action != Action::FindBlocker {
            // Nothing in progress: no try of ours took effect, and the create's own error stands.
            return Err(err.into());
        }
        // It finished between our create and the lookup: one more try is all it takes.
        return client
            .create_upload(target, request)
            .await
            .map(|u| (u, false))
            .map_err(Into::into);
    };
    if same_content(
        &blocking,
        request,
        lost || attempts.load(Ordering::Relaxed) > 1,
    ) {
        warn!(upload_id = %blocking.upload_id, "an upload of exactly this file is in progress (ours, from a create whose answer was lost); carrying on with it");
        return Ok((blocking, true));
    }
    if action != Action::FindBlocker {
        // Someone else's upload is in progress: ours never started. The create's error stands.
        return Err(err.into());
    }
    Err(UploadError::InProgress {
        target: target.clone(),
        upload: Box::new(blocking),
    })
}

/// Whether a blocking upload is for exactly the bytes we would send: the same multihash and the
/// same MD5 for every part. Carrying such an upload on is safe whoever started it (the same bytes
/// go to the same parts, and whoever completes it, the asset ends with this file), and it is how
/// an upload of ours whose create answer was lost is found again, in this run or a later one,
/// instead of blocking the asset until it goes stale. A server that does not list `md5_parts`
/// only gets the benefit within the create call that lost the answer (`retried_create`).
fn same_content(blocking: &Upload, request: &CreateUpload, retried_create: bool) -> bool {
    let checksum = blocking
        .checksum
        .as_deref()
        .is_some_and(|c| request.checksum.matches(c));
    let parts = blocking.number_parts == Some(request.md5_parts.len() as u32)
        && blocking.urls.len() == request.md5_parts.len();
    let md5s = if blocking.md5_parts.is_empty() {
        retried_create
    } else {
        let mut theirs = blocking.md5_parts.clone();
        theirs.sort_by_key(|p| p.part_number);
        theirs == request.md5_parts
    };
    checksum && parts && md5s
}

/// The upload that blocks `target`: read by id when the server named it (409), looked up among
/// the in-progress uploads otherwise (the legacy 400 answer). `None` if none is in progress now.
pub async fn find_blocking_upload(
    client: &StacClient,
    target: &AssetTarget,
    hint: Option<&UploadId>,
) -> Result<Option<Upload>, StacError> {
    if let Some(id) = hint {
        let u = client.get_upload(target, id).await?;
        return Ok((u.status == UploadStatus::InProgress).then_some(u));
    }
    let mut in_progress = client
        .list_uploads(target, Some(UploadStatus::InProgress))
        .await?;
    in_progress.retain(|u| u.status == UploadStatus::InProgress);
    in_progress.sort_by_key(|u| u.created);
    Ok(in_progress.into_iter().next())
}

/// How long before its presigned URLs expire an upload is given up, so that no part PUT or
/// complete starts just before and meets 403 half way: a tenth of the URLs' lifetime, between
/// 1 s and 60 s. A fixed minute made every upload fail at once where the server hands out URLs
/// that live a minute or less (the lifetime is a server setting, docs/protocol.md).
fn expiry_margin(lifetime: Duration) -> Duration {
    (lifetime / 10).clamp(Duration::from_secs(1), Duration::from_secs(60))
}

/// The time the upload's URLs give us, as the server sees it.
struct UrlLife {
    /// The earliest `expires` of its URLs.
    expires: chrono::DateTime<chrono::Utc>,
    /// From the upload's creation to `expires`, on the server's clock.
    lifetime: Duration,
    /// What is left of it now, less the margin.
    usable: Duration,
}

impl UrlLife {
    /// `created_here`: when our own create answered. Then the time left is measured from the
    /// server's `created` on our monotonic clock, so a local clock that is off from the
    /// server's does not matter; for an upload created earlier (resumed, adopted) the wall
    /// clock is all there is.
    fn of(upload: &Upload, created_here: Option<Instant>) -> Option<Self> {
        let expires = upload.urls.iter().filter_map(|u| u.expires).min()?;
        let lifetime = upload
            .created
            .and_then(|c| (expires - c).to_std().ok())
            .unwrap_or(Duration::from_secs(3600));
        let left = match (created_here, upload.created) {
            (Some(at), Some(_)) => lifetime.saturating_sub(at.elapsed()),
            _ => (expires - chrono::Utc::now()).to_std().unwrap_or_default(),
        };
        Some(UrlLife {
            expires,
            lifetime,
            usable: left.saturating_sub(expiry_margin(lifetime)),
        })
    }
}

/// The slowest bandwidth limit on the session now, if any.
fn limited_rate(opts: &UploadOptions) -> Option<u64> {
    let now = chrono::Utc::now();
    opts.bandwidth
        .iter()
        .filter_map(|b| b.limit().rate_at(now))
        .map(|r| r.get())
        .min()
}

async fn send_and_complete(
    ctx: &PartContext<'_>,
    target: &AssetTarget,
    upload: &Upload,
    plan: &PartPlan,
    digest: &FileDigest,
    on_server: &HashMap<PartNumber, String>,
    created_here: Option<Instant>,
) -> Result<(), UploadError> {
    let Some(life) = UrlLife::of(upload, created_here) else {
        return send_parts_and_complete(ctx, target, upload, plan, digest, on_server).await;
    };
    let to_send: u64 = plan
        .parts()
        .filter(|p| !on_server.contains_key(&p.number))
        .map(|p| p.len)
        .sum();
    // Under a bandwidth limit the time the parts need is known before the first byte.
    if let Some(rate) = limited_rate(ctx.opts).filter(|r| *r > 0) {
        let needs = Duration::from_secs_f64(to_send as f64 / rate as f64);
        if needs > life.usable {
            return Err(UploadError::UrlsTooShort {
                lifetime: life.lifetime,
                usable: life.usable,
                needs,
                bytes: to_send,
                rate,
            });
        }
    }
    let sent_before = ctx.stored.load(Ordering::Relaxed);
    let work = send_parts_and_complete(ctx, target, upload, plan, digest, on_server);
    tokio::select! {
        r = work => r,
        () = tokio::time::sleep(life.usable) => Err(UploadError::UrlsExpiring {
            expires: life.expires,
            lifetime: life.lifetime,
            sent: ctx.stored.load(Ordering::Relaxed).saturating_sub(sent_before),
            bytes: to_send,
        }),
    }
}

async fn send_parts_and_complete(
    ctx: &PartContext<'_>,
    target: &AssetTarget,
    upload: &Upload,
    plan: &PartPlan,
    digest: &FileDigest,
    on_server: &HashMap<PartNumber, String>,
) -> Result<(), UploadError> {
    let mut urls: Vec<_> = upload.urls.iter().collect();
    urls.sort_by_key(|u| u.part);
    let jobs = plan.parts().map(|part| {
        let url = urls.iter().find(|u| u.part == part.number).copied();
        let md5 = digest.part_md5s[part.number.0 as usize - 1];
        let already = on_server
            .get(&part.number)
            .filter(|etag| etag.trim_matches('"') == hex::encode(md5.0))
            .cloned();
        async move {
            if let Some(etag) = already {
                // Resuming: the server holds this part with our bytes already.
                ctx.observer
                    .on_event(&UploadEvent::Sent { bytes: part.len });
                return Ok(CompletedPart {
                    etag,
                    part_number: part.number,
                });
            }
            let url = url.ok_or_else(|| {
                UploadError::Stac(StacError::bad_answer(
                    stac_client::Step::CreateUpload,
                    "POST",
                    "uploads",
                    reqwest::StatusCode::CREATED,
                    format!("no presigned URL for part {}", part.number),
                ))
            })?;
            let etag = ctx.send_part(url, part, md5).await?;
            ctx.stored.fetch_add(part.len, Ordering::Relaxed);
            if etag.trim_matches('"') != hex::encode(md5.0) {
                // S3 answers the body's MD5 unless the bucket encrypts with KMS; keep its word.
                debug!(part = part.number.0, etag, "ETag is not the part's MD5");
            }
            Ok::<_, UploadError>(CompletedPart {
                etag,
                part_number: part.number,
            })
        }
    });
    // The first failure drops the other in-flight parts: their requests are cancelled.
    let mut parts: Vec<CompletedPart> = futures_util::stream::iter(jobs)
        .buffer_unordered(ctx.opts.parallel.max(1))
        .try_collect()
        .await?;
    parts.sort_by_key(|p| p.part_number);
    ctx.snapshot.check(ctx.source, "while it was sent").await?;
    if !ctx.observer.may_send() {
        return Err(UploadError::Fenced);
    }
    complete(
        ctx.client,
        target,
        &upload.upload_id,
        &parts,
        &digest.multihash,
        ctx.opts,
    )
    .await
}

/// Completes, treating "409 No upload in progress" as success when the server shows the upload
/// completed with our checksum (a complete that timed out on our side but succeeded there).
async fn complete(
    client: &StacClient,
    target: &AssetTarget,
    id: &UploadId,
    parts: &[CompletedPart],
    checksum: &Multihash,
    opts: &UploadOptions,
) -> Result<(), UploadError> {
    let mut rereads = 0;
    loop {
        let result = retry::call(Step::Complete, opts.call_backoff(), || {
            client.complete(target, id, parts)
        })
        .await;
        match result {
            // A success status whose body we cannot read (a proxy's page, a cut answer): the
            // complete may or may not have taken effect, and only the upload itself says which.
            Err(e) if e.is_unreadable_success() && rereads < UNREADABLE_COMPLETE_REREADS => {
                rereads += 1;
                let u = retry::call(Step::GetUpload, opts.call_backoff(), || {
                    client.get_upload(target, id)
                })
                .await?;
                let ours = u.checksum.as_deref().is_some_and(|c| checksum.matches(c));
                match u.status {
                    UploadStatus::Completed if ours => {
                        info!(upload_id = %id, "complete answered a body that is not JSON, but the upload is completed with our checksum");
                        return Ok(());
                    }
                    UploadStatus::InProgress => {
                        warn!(upload_id = %id, error = %e, "complete answered a body that is not JSON and the upload is still in progress; completing it again");
                        continue;
                    }
                    status => {
                        return Err(UploadError::Stac(StacError {
                            description: format!(
                                "{}; the upload is {} {} afterwards",
                                e.description,
                                status.as_query(),
                                if ours {
                                    "with our checksum"
                                } else {
                                    "without our checksum"
                                }
                            ),
                            ..e
                        }));
                    }
                }
            }
            other => return complete_answer(client, target, id, checksum, other).await,
        }
    }
}

/// How often an unreadable answer to complete is resolved by reading the upload and completing
/// it again: a server that never answers JSON is not asked for ever.
const UNREADABLE_COMPLETE_REREADS: u32 = 2;

/// What a complete's answer (after its retries) means: "409 No upload in progress" is success
/// when the server shows the upload completed with our checksum.
async fn complete_answer(
    client: &StacClient,
    target: &AssetTarget,
    id: &UploadId,
    checksum: &Multihash,
    result: Result<Upload, StacError>,
) -> Result<(), UploadError> {
    match result {
        Ok(_) => Ok(()),
        Err(e) if e.action() == Action::Reread => {
            let u = client.get_upload(target, id).await?;
            let ours = u.checksum.as_deref().is_some_and(|c| checksum.matches(c));
            if u.status == UploadStatus::Completed && ours {
                info!(upload_id = %id, "complete answered 409 but the upload is completed with our checksum");
                Ok(())
            } else {
                Err(e.into())
            }
        }
        Err(e) => Err(e.into()),
    }
}

/// Aborts an upload, retrying transient failures. A 409 or 500 answer may mean an earlier abort
/// (or complete) already went through with its answer lost, so the upload is read before
/// concluding anything.
pub async fn abort_upload(
    client: &StacClient,
    target: &AssetTarget,
    id: &UploadId,
    opts: &UploadOptions,
) -> AbortOutcome {
    let result = retry::call(Step::Abort, opts.call_backoff(), || {
        client.abort(target, id)
    })
    .await;
    let err = match result {
        Ok(_) => {
            info!(upload_id = %id, "upload aborted");
            return AbortOutcome::Aborted;
        }
        Err(e) => e,
    };
    if err.action() == Action::Reread {
        match client.get_upload(target, id).await {
            Ok(u) if u.status != UploadStatus::InProgress => {
                info!(upload_id = %id, status = u.status.as_query(), "abort: the upload is already finished");
                return AbortOutcome::AlreadyFinished(u.status);
            }
            Ok(_) => {}
            Err(e) => {
                warn!(upload_id = %id, error = %e, "could not read the upload after a failed abort")
            }
        }
    }
    AbortOutcome::Failed(err)
}

#[cfg(test)]
mod tests {
    use super::*;
    use stac_client::PresignedUrl;

    fn upload_with(urls: &[(u32, &str)]) -> Upload {
        Upload {
            upload_id: UploadId("u".into()),
            status: UploadStatus::InProgress,
            number_parts: Some(2),
            created: None,
            completed: None,
            aborted: None,
            urls: urls
                .iter()
                .map(|(part, url)| PresignedUrl {
                    url: (*url).to_owned(),
                    part: PartNumber(*part),
                    expires: None,
                })
                .collect(),
            md5_parts: Vec::new(),
            content_encoding: None,
            checksum: None,
        }
    }

    #[test]
    fn a_create_answer_is_usable_only_with_one_good_url_per_part() {
        let ok = upload_with(&[(2, "http://s3/b?sig"), (1, "https://s3/a?sig")]);
        assert_eq!(usable_urls(&ok, 2), Ok(()));
        let cases: [(&[(u32, &str)], &str); 5] = [
            (&[], "0 presigned URLs for 2 parts"),
            (
                &[(1, "http://s3/a"), (2, "http://s3/b"), (3, "http://s3/c")],
                "3 presigned URLs for 2 parts",
            ),
            (
                &[(1, "http://s3/a"), (3, "http://s3/c")],
                "a presigned URL for part 3, out of 1..=2",
            ),
            (
                &[(1, "http://s3/a"), (1, "http://s3/b")],
                "two presigned URLs for part 1",
            ),
            (
                &[(1, "http://s3/a"), (2, "not a url")],
                "the presigned URL of part 2 does not parse",
            ),
        ];
        for (urls, expected) in cases {
            let e = usable_urls(&upload_with(urls), 2).unwrap_err();
            assert!(e.starts_with(expected), "{e}");
        }
        let e = usable_urls(&upload_with(&[(1, "ftp://s3/a"), (2, "http://s3/b")]), 2).unwrap_err();
        assert!(e.contains("scheme \"ftp\""), "{e}");
    }
}
