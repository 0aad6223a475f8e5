//! Published means downloadable: after an upload, a `HEAD` of the asset's public `href`,
//! compared with what was sent (`verify_public`, docs/verify.md).

use tracing::{debug, info, warn};

use super::job::{Job, Uploader};
use crate::config::VerifyPublic;
use crate::observe::metrics;
use crate::state::PublicCheck;
use stac_client::{AssetTarget, PublicExpect};
use stac_upload::UploadReport;

/// The `error_class` of a run that `verify_public = "fail"` failed.
pub(super) const ERROR_CLASS: &str = "verify_public";

/// What the public URL should serve after the upload `report` made: the bytes sent (the
/// compressed size when compressed), the file's SHA-256 (the `file:checksum` digest, which the
/// server stores as the object's `sha256` metadata), and the encoding sent.
pub(crate) fn expected(report: &UploadReport) -> PublicExpect {
    PublicExpect {
        size: Some(report.bytes),
        sha256_hex: sha256_hex(report.multihash.as_str()),
        content_encoding: Some(report.content_encoding.map(|e| e.as_str().to_owned())),
    }
}

/// The SHA-256 hex digest inside a sha2-256 multihash (`1220` and 64 hex digits).
pub(crate) fn sha256_hex(multihash: &str) -> Option<String> {
    multihash
        .strip_prefix("1220")
        .filter(|h| h.len() == 64)
        .map(str::to_ascii_lowercase)
}

impl<U: Uploader> Job<U> {
    /// The public check of an asset a run uploaded to: `None` when the job's `verify_public` is
    /// `off`, the asset was unchanged (nothing new to serve), or the uploader has no public URLs
    /// (a test's). A problem is logged at warn and counted.
    pub(super) async fn verify_upload(
        &self,
        target: &AssetTarget,
        report: &UploadReport,
    ) -> Option<PublicCheck> {
        if self.spec.verify_public == VerifyPublic::Off || report.unchanged {
            return None;
        }
        let (url, answer) = self
            .shared
            .uploader()
            .public_answer(target, report.href.as_deref())
            .await?;
        let mismatch = answer.judge(&expected(report));
        let max_age = answer.max_age();
        match &mismatch {
            Some(m) => {
                warn!(
                    url = %url,
                    reason = m.problem.as_str(),
                    detail = %m.detail,
                    "the public link does not serve the uploaded file"
                );
                metrics::verify_public_failed(&self.spec.name, m.problem);
            }
            None => debug!(url = %url, "the public link serves the uploaded file"),
        }
        if report.replaced
            && let Some(age) = max_age
        {
            info!(
                url = %url,
                max_age_s = age,
                "the asset's earlier content was replaced: caches may serve the old bytes for up to {} (the object's Cache-Control max-age)",
                humantime::format_duration(std::time::Duration::from_secs(age))
            );
        }
        Some(PublicCheck {
            asset: target.asset.clone(),
            item: target.item.clone(),
            url,
            problem: mismatch.as_ref().map(|m| m.problem.as_str().to_owned()),
            detail: mismatch.map(|m| m.detail),
            max_age,
        })
    }

    /// Under `verify_public = "fail"`, the error that fails a run whose checks found a
    /// problem: each URL and why.
    pub(super) fn public_refusal(&self, checks: &[PublicCheck]) -> Option<String> {
        if self.spec.verify_public != VerifyPublic::Fail {
            return None;
        }
        let problems: Vec<String> = checks
            .iter()
            .filter_map(|c| {
                let problem = c.problem.as_deref()?;
                Some(format!(
                    "{} ({problem}: {})",
                    c.url,
                    c.detail.as_deref().unwrap_or("")
                ))
            })
            .collect();
        (!problems.is_empty()).then(|| {
            format!(
                "uploaded, but the public link does not serve the file (verify_public = \"fail\"): {}",
                problems.join("; ")
            )
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_sha256_is_the_multihash_digest() {
        let hex = "ab".repeat(32);
        assert_eq!(sha256_hex(&format!("1220{hex}")), Some(hex.clone()));
        assert_eq!(
            sha256_hex(&format!("1220{}", hex.to_uppercase())),
            Some(hex)
        );
        assert_eq!(sha256_hex("1114abcd"), None);
        assert_eq!(sha256_hex("1220abcd"), None);
    }
}
