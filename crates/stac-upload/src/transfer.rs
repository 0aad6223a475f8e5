//! Sending parts: each streamed from disk with its exact length, retried from a fresh read,
//! bounded by a deadline sized from its length and by a stall watchdog.

use std::io::{self, SeekFrom};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::Duration;

use futures_util::StreamExt;
use tokio::io::{AsyncReadExt, AsyncSeekExt};
use tokio_util::io::ReaderStream;
use tracing::debug;

use super::UploadError;
use super::plan::PartRange;
use super::types::{FileSnapshot, UploadEvent, UploadObserver, UploadOptions};
use stac_client::retry;
use stac_client::{Md5, PresignedUrl, StacClient, StacError, Step};

/// What every part of one session shares.
pub(crate) struct PartContext<'a> {
    pub client: &'a StacClient,
    /// Where the bytes are read from (the file, or its compressed copy).
    pub path: &'a Path,
    /// The file the user gave, which must not change while it is sent.
    pub source: &'a Path,
    pub snapshot: &'a FileSnapshot,
    pub opts: &'a UploadOptions,
    pub observer: &'a Arc<dyn UploadObserver>,
    pub retries: &'a AtomicU32,
    /// Bytes of the parts the server has acknowledged so far.
    pub stored: &'a AtomicU64,
}

impl PartContext<'_> {
    /// The total deadline for one attempt at a part: a base plus the time the part takes at the
    /// slowest rate we accept.
    fn deadline(&self, len: u64) -> Duration {
        // A bandwidth limit shared by the parts in flight may be slower than the rate we would
        // otherwise call too slow: the deadline must allow for it.
        let now = chrono::Utc::now();
        let parallel = self.opts.parallel.max(1) as u64;
        let limited = self
            .opts
            .bandwidth
            .iter()
            .filter_map(|b| b.limit().rate_at(now))
            .map(|r| r.get() / parallel)
            .min();
        let rate = limited
            .map_or(self.opts.min_part_rate.get(), |l| {
                l.min(self.opts.min_part_rate.get())
            })
            .max(1);
        self.opts.part_base_timeout + Duration::from_secs_f64(len as f64 / rate as f64)
    }

    /// Sends one part, retrying transient failures from a fresh read of the file.
    pub(crate) async fn send_part(
        &self,
        url: &PresignedUrl,
        part: PartRange,
        md5: Md5,
    ) -> Result<String, UploadError> {
        let attempt = AtomicU32::new(0);
        retry::call_notify(
            Step::PutPart(part.number),
            self.opts.call_backoff(),
            || async {
                attempt.fetch_add(1, Ordering::Relaxed);
                if !self.observer.may_send() {
                    return Err(UploadError::Fenced);
                }
                self.snapshot
                    .check(self.source, "before a part was sent")
                    .await?;
                self.attempt(url, part, md5).await
            },
            |e, _| {
                self.retries.fetch_add(1, Ordering::Relaxed);
                debug!(
                    part = part.number.0,
                    attempt = attempt.load(Ordering::Relaxed),
                    "part sent again"
                );
                self.observer.on_event(&UploadEvent::PartRetry {
                    part: part.number,
                    error: e,
                });
            },
        )
        .await
    }

    async fn attempt(
        &self,
        url: &PresignedUrl,
        part: PartRange,
        md5: Md5,
    ) -> Result<String, UploadError> {
        let io_err = |action, source| UploadError::File {
            path: self.path.to_owned(),
            action,
            source,
        };
        let mut file = tokio::fs::File::open(self.path)
            .await
            .map_err(|e| io_err("open", e))?;
        file.seek(SeekFrom::Start(part.offset))
            .await
            .map_err(|e| io_err("seek", e))?;
        let sent = Arc::new(AtomicU64::new(0));
        let observer = self.observer.clone();
        let gate = self.observer.clone();
        let counter = sent.clone();
        let limiters = self.opts.bandwidth.clone();
        let stream = ReaderStream::with_capacity(file.take(part.len), self.opts.send_buffer)
            .then(move |chunk| {
                let limiters = limiters.clone();
                let gate = gate.clone();
                async move {
                    if let Ok(b) = &chunk {
                        for l in &limiters {
                            l.acquire(b.len() as u64).await;
                        }
                    }
                    // Asked after the wait for bandwidth, just before the bytes go: a body cut
                    // short is refused by the server, so no part of it is stored.
                    if chunk.is_ok() && !gate.may_send() {
                        return Err(io::Error::other(
                            "this instance no longer holds its lease: the part is not sent",
                        ));
                    }
                    chunk
                }
            })
            .inspect(move |chunk| {
                if let Ok(b) = chunk {
                    counter.fetch_add(b.len() as u64, Ordering::Relaxed);
                    observer.on_event(&UploadEvent::Sent {
                        bytes: b.len() as u64,
                    });
                }
            });
        let body = reqwest::Body::wrap_stream(stream);
        let put = self
            .client
            .put_part(url, &md5, part.len, body, self.deadline(part.len));
        let result = tokio::select! {
            r = put => r.map_err(UploadError::from),
            () = stall_watch(&sent, part.len, self.opts.stall_timeout) => Err(UploadError::Stac(StacError::deadline(
                Step::PutPart(part.number),
                "PUT",
                &url.url,
                format!("no progress for {}", humantime::format_duration(self.opts.stall_timeout)),
            ))),
        };
        if result.is_err() && !self.observer.may_send() {
            let n = sent.load(Ordering::Relaxed);
            if n > 0 {
                self.observer.on_event(&UploadEvent::Unsent { bytes: n });
            }
            return Err(UploadError::Fenced);
        }
        if result.is_err() {
            // Those bytes will be sent again: keep progress honest.
            let n = sent.load(Ordering::Relaxed);
            if n > 0 {
                self.observer.on_event(&UploadEvent::Unsent { bytes: n });
            }
        }
        result
    }
}

/// Resolves when the body has made no progress for `limit` while not yet fully sent.
async fn stall_watch(sent: &AtomicU64, len: u64, limit: Duration) {
    let tick = (limit / 4).max(Duration::from_millis(10));
    let mut last = sent.load(Ordering::Relaxed);
    let mut still = Duration::ZERO;
    loop {
        tokio::time::sleep(tick).await;
        let now = sent.load(Ordering::Relaxed);
        if now != last || now >= len {
            // Once the body is out, the request deadline covers waiting for the answer.
            last = now;
            still = Duration::ZERO;
            continue;
        }
        still += tick;
        if still >= limit {
            return;
        }
    }
}
