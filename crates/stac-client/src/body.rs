//! Reading an answer's body within a size bound and a deadline: every answer, of the API and
//! of Cognito, is read here.

use std::time::Duration;

use bytes::Bytes;

use crate::units::ByteSize;

/// What was read of an answer body by [`read_body`].
pub(crate) struct Body {
    pub(crate) bytes: Bytes,
    /// `false`: the body went on past the limit, and `bytes` holds its first `limit` bytes.
    pub(crate) complete: bool,
}

/// Why an answer body could not be read to its end.
pub(crate) enum BodyCut {
    /// The request's deadline passed while the body was still coming; `partial` is what came.
    Deadline { within: Duration, partial: Bytes },
    /// The connection failed mid-body.
    Transport(reqwest::Error),
}

impl BodyCut {
    /// "answer not complete within 60 s (12.0KiB read)", or the transport failure.
    pub(crate) fn deadline_text(within: Duration, read: usize) -> String {
        format!(
            "answer not complete within {}: cut after {} of the body",
            duration(within),
            size(read)
        )
    }
}

/// Reads an answer body chunk by chunk into a buffer that never holds more than `limit` bytes,
/// until the body ends, the limit is passed (the rest is left unread: `complete` is `false`) or
/// `deadline` (`within` after the request was sent) passes. Every answer body is read here.
pub(crate) async fn read_body(
    resp: &mut reqwest::Response,
    limit: usize,
    deadline: tokio::time::Instant,
    within: Duration,
) -> Result<Body, BodyCut> {
    let expected = resp.content_length().unwrap_or(0).min(limit as u64) as usize;
    let mut buf = Vec::with_capacity(expected);
    loop {
        let chunk = match tokio::time::timeout_at(deadline, resp.chunk()).await {
            Ok(Ok(Some(chunk))) => chunk,
            Ok(Ok(None)) => {
                return Ok(Body {
                    bytes: buf.into(),
                    complete: true,
                });
            }
            Ok(Err(e)) if !e.is_timeout() => return Err(BodyCut::Transport(e)),
            // Our deadline, or reqwest's own total timeout (the same one): whichever fires first.
            Err(_) | Ok(Err(_)) => {
                return Err(BodyCut::Deadline {
                    within,
                    partial: buf.into(),
                });
            }
        };
        let room = limit - buf.len();
        if chunk.len() > room {
            buf.extend_from_slice(&chunk[..room]);
            return Ok(Body {
                bytes: buf.into(),
                complete: false,
            });
        }
        buf.extend_from_slice(&chunk);
    }
}

/// "4 MiB", "64 KiB", "1.50MiB".
pub(crate) fn size(n: usize) -> String {
    let n = n as u64;
    let (kib, mib) = (ByteSize::KIB, ByteSize::MIB);
    if n >= mib && n.is_multiple_of(mib) {
        format!("{} MiB", n / mib)
    } else if n >= kib && n.is_multiple_of(kib) {
        format!("{} KiB", n / kib)
    } else {
        ByteSize(n).to_string()
    }
}

/// "60 s", "1500 ms".
pub(crate) fn duration(d: Duration) -> String {
    if d.subsec_millis() == 0 {
        format!("{} s", d.as_secs())
    } else {
        format!("{} ms", d.as_millis())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{ERROR_BODY_PREFIX, JSON_ANSWER_LIMIT};

    #[test]
    fn sizes_and_durations_read_well() {
        assert_eq!(size(JSON_ANSWER_LIMIT), "4 MiB");
        assert_eq!(size(ERROR_BODY_PREFIX), "64 KiB");
        assert_eq!(size(1500), "1.5KiB");
        assert_eq!(duration(Duration::from_secs(30)), "30 s");
        assert_eq!(duration(Duration::from_millis(1500)), "1500 ms");
    }
}
