//! Wire types of the service-stac upload API, and the small value types that give them meaning.

use std::fmt;

use base64::Engine as _;
use serde::{Deserialize, Serialize};

/// The id the server gave a multipart upload.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct UploadId(pub String);

impl fmt::Display for UploadId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A part number, 1-based as on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct PartNumber(pub u32);

impl fmt::Display for PartNumber {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// A sha2-256 multihash in hex, as the API stores it: `1220` + 64 hex digits.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Multihash(String);

impl Multihash {
    /// The multihash of a raw sha256 digest.
    pub fn from_sha256(digest: &[u8; 32]) -> Self {
        Self(format!("1220{}", hex::encode(digest)))
    }

    /// A multihash as stored (e.g. in the state store), taken as is.
    pub fn from_hex(hex: &str) -> Self {
        Self(hex.to_ascii_lowercase())
    }

    /// The hex form sent on the wire.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Compares with a checksum the server returned, ignoring hex case.
    pub fn matches(&self, other: &str) -> bool {
        self.0.eq_ignore_ascii_case(other)
    }
}

impl fmt::Display for Multihash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// An MD5 digest, shown as the API and S3 want it: standard base64 of the 16 raw bytes.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Md5(pub [u8; 16]);

impl Md5 {
    /// Base64 for `md5_parts` and the `Content-MD5` header.
    pub fn to_base64(&self) -> String {
        base64::engine::general_purpose::STANDARD.encode(self.0)
    }

    /// The quoted hex ETag S3 answers for a part with this body.
    pub fn to_etag(&self) -> String {
        format!("\"{}\"", hex::encode(self.0))
    }
}

impl fmt::Debug for Md5 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Md5({})", self.to_base64())
    }
}

/// API generation: v1 calls the checksum `file:checksum`, v0.9 `checksum:multihash`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "clap", derive(clap::ValueEnum))]
pub enum ApiVersion {
    #[default]
    #[serde(rename = "v1")]
    #[cfg_attr(feature = "clap", value(name = "v1"))]
    V1,
    #[serde(rename = "v0.9")]
    #[cfg_attr(feature = "clap", value(name = "v0.9"))]
    V09,
}

impl ApiVersion {
    /// The JSON field holding the multihash in this generation.
    pub fn checksum_field(self) -> &'static str {
        match self {
            ApiVersion::V1 => "file:checksum",
            ApiVersion::V09 => "checksum:multihash",
        }
    }
}

/// Content encodings the API accepts for a stored object.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ContentEncoding {
    Gzip,
    Br,
}

/// Status of an upload as the server reports it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum UploadStatus {
    InProgress,
    Completed,
    Aborted,
    #[serde(other)]
    Unknown,
}

impl UploadStatus {
    /// The value of the `status` query filter.
    pub fn as_query(&self) -> &'static str {
        match self {
            UploadStatus::InProgress => "in-progress",
            UploadStatus::Completed => "completed",
            UploadStatus::Aborted => "aborted",
            UploadStatus::Unknown => "unknown",
        }
    }
}

/// One entry of `md5_parts`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Md5Part {
    pub part_number: PartNumber,
    pub md5: String,
}

/// One presigned part URL.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PresignedUrl {
    pub url: String,
    pub part: PartNumber,
    #[serde(default)]
    pub expires: Option<chrono::DateTime<chrono::Utc>>,
}

impl fmt::Debug for PresignedUrl {
    // The query string is a bearer secret for that part: never print it.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PresignedUrl")
            .field("url", &crate::redact_url(&self.url))
            .field("part", &self.part)
            .field("expires", &self.expires)
            .finish()
    }
}

/// An upload object as returned by create, get and list. The checksum field name depends on the
/// API version, so it is read by the client from the raw JSON and stored here.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Upload {
    pub upload_id: UploadId,
    pub status: UploadStatus,
    #[serde(default)]
    pub number_parts: Option<u32>,
    #[serde(default)]
    pub created: Option<chrono::DateTime<chrono::Utc>>,
    #[serde(default)]
    pub completed: Option<chrono::DateTime<chrono::Utc>>,
    #[serde(default)]
    pub aborted: Option<chrono::DateTime<chrono::Utc>>,
    #[serde(default)]
    pub urls: Vec<PresignedUrl>,
    /// The MD5 declared for each part at create (what the presigned URLs are signed for).
    #[serde(default)]
    pub md5_parts: Vec<Md5Part>,
    #[serde(default)]
    pub content_encoding: Option<String>,
    /// `file:checksum` (v1) or `checksum:multihash` (v0.9).
    #[serde(skip)]
    pub checksum: Option<String>,
}

/// The body of `POST A/uploads`.
#[derive(Debug, Clone)]
pub struct CreateUpload {
    pub md5_parts: Vec<Md5Part>,
    pub checksum: Multihash,
    pub content_encoding: Option<ContentEncoding>,
}

/// One part the server says it holds.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct UploadedPart {
    pub etag: String,
    pub part_number: PartNumber,
    #[serde(default)]
    pub size: Option<u64>,
    #[serde(default)]
    pub modified: Option<chrono::DateTime<chrono::Utc>>,
}

/// One entry of the complete body.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CompletedPart {
    pub etag: String,
    pub part_number: PartNumber,
}

/// The asset as `GET A` shows it: what the last completed upload declared.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct AssetInfo {
    pub checksum: Option<String>,
    pub href: Option<String>,
    pub size: Option<u64>,
    pub media_type: Option<String>,
}

/// A STAC `links` entry, followed for pagination.
#[derive(Debug, Clone, Deserialize)]
pub struct Link {
    pub rel: String,
    pub href: String,
}
