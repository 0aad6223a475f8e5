//! Extra trusted root certificates (self-hosted servers, corporate TLS inspection) and how a
//! refused server certificate is told apart from a transient network failure.

use std::path::{Path, PathBuf};

use crate::localfile::{self, Links};
use crate::units::ByteSize;
use tokio_rustls::rustls;

/// Why a CA file cannot be used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CaFileError {
    /// The file could not be read: missing, unreadable, not a regular file, or over 4 MiB.
    #[error("cannot read the CA file {}: {source}", path.display())]
    Read {
        /// The CA file.
        path: PathBuf,
        /// Why it could not be read.
        #[source]
        source: std::io::Error,
    },
    /// The file holds no PEM certificate block.
    #[error(
        "the CA file {} holds no PEM certificate: expected one or more \"-----BEGIN CERTIFICATE-----\" blocks",
        path.display()
    )]
    Empty {
        /// The CA file.
        path: PathBuf,
    },
    /// A certificate in the file does not parse, or a TLS client refuses it as a trust anchor.
    #[error("the CA file {} holds a certificate that cannot be used: {detail}", path.display())]
    Invalid {
        /// The CA file.
        path: PathBuf,
        /// What is wrong with it, from the TLS library.
        detail: String,
    },
}

/// Reads the PEM certificates of `path`, checked to be usable as trust anchors.
pub fn load_ca_file(path: &Path) -> Result<Vec<reqwest::Certificate>, CaFileError> {
    // Debian's whole bundle of public roots is about 220 KB; 4 MiB leaves room for any real one.
    const MAX_CA_FILE: ByteSize = ByteSize(4 * ByteSize::MIB);
    let pem = localfile::read_bounded(path, MAX_CA_FILE, Links::Follow).map_err(|e| {
        CaFileError::Read {
            path: path.to_owned(),
            source: match e {
                localfile::ReadError::Io(e) => e,
                other => std::io::Error::other(other.to_string()),
            },
        }
    })?;
    let invalid = |e: reqwest::Error| CaFileError::Invalid {
        path: path.to_owned(),
        detail: cause(&e),
    };
    let certs = reqwest::Certificate::from_pem_bundle(&pem).map_err(invalid)?;
    if certs.is_empty() {
        return Err(CaFileError::Empty {
            path: path.to_owned(),
        });
    }
    // The DER inside the PEM is only parsed when a client is built: build one now, so that a
    // broken certificate is reported where it is configured rather than at the first request.
    reqwest::Client::builder()
        .tls_certs_merge(certs.clone())
        .build()
        .map_err(invalid)?;
    Ok(certs)
}

/// Whether a transport failure is the server's certificate being refused: sending again will
/// not help until the trusted roots (or the server) change.
pub(crate) fn is_certificate_refusal(err: &reqwest::Error) -> bool {
    // Depth-first over the cause chain. io::Error's `source` skips the error it wraps (and
    // hyper and tokio-rustls nest them), so the wrapped error is visited as well.
    let mut todo: Vec<&(dyn std::error::Error + 'static)> = vec![err];
    while let Some(e) = todo.pop() {
        if let Some(tls) = e.downcast_ref::<rustls::Error>()
            && matches!(
                tls,
                rustls::Error::InvalidCertificate(_)
                    | rustls::Error::NoCertificatesPresented
                    | rustls::Error::InvalidCertRevocationList(_)
            )
        {
            return true;
        }
        todo.extend(e.source());
        if let Some(inner) = e
            .downcast_ref::<std::io::Error>()
            .and_then(|io| io.get_ref())
        {
            todo.push(inner);
        }
    }
    false
}

fn cause(e: &reqwest::Error) -> String {
    let mut parts = vec![e.to_string()];
    let mut cur = std::error::Error::source(e);
    while let Some(c) = cur {
        parts.push(c.to_string());
        cur = c.source();
    }
    parts.join(": ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ca_files_must_hold_a_usable_certificate() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("missing.pem");
        assert!(matches!(
            load_ca_file(&missing),
            Err(CaFileError::Read { .. })
        ));
        let empty = dir.path().join("empty.pem");
        std::fs::write(&empty, "not a certificate\n").unwrap();
        let e = load_ca_file(&empty).unwrap_err();
        assert!(matches!(e, CaFileError::Empty { .. }), "{e}");
        let garbage = dir.path().join("garbage.pem");
        std::fs::write(
            &garbage,
            "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
        )
        .unwrap();
        let e = load_ca_file(&garbage).unwrap_err();
        assert!(matches!(e, CaFileError::Invalid { .. }), "{e}");
    }
}
