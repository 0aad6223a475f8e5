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

/// What [`crate::StacClient::create_item`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ItemCreate {
    /// The item did not exist: this call created it.
    Created,
    /// The item exists already (made by another creator, or by an earlier try of this create
    /// whose answer was lost); it was left as it is.
    AlreadyExists,
}

/// The `Idempotency-Key` of one logical create of an item: a random UUID, made once and sent
/// again on each retry of that create.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct IdempotencyKey(String);

impl IdempotencyKey {
    /// A fresh random key.
    #[allow(clippy::new_without_default)]
    pub fn new() -> Self {
        Self(uuid::Uuid::new_v4().to_string())
    }

    /// The key as sent in the header.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for IdempotencyKey {
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
    /// The current API, with `file:checksum`; the default.
    #[default]
    #[serde(rename = "v1")]
    #[cfg_attr(feature = "clap", value(name = "v1"))]
    V1,
    /// The older API, with `checksum:multihash`.
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
    /// gzip.
    Gzip,
    /// Brotli.
    Br,
}

impl ContentEncoding {
    /// As the API and the `Content-Encoding` header spell it.
    pub fn as_str(self) -> &'static str {
        match self {
            ContentEncoding::Gzip => "gzip",
            ContentEncoding::Br => "br",
        }
    }
}

/// Status of an upload as the server reports it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum UploadStatus {
    /// Created, not yet completed or aborted: it blocks the asset.
    InProgress,
    /// Completed: the asset holds its file.
    Completed,
    /// Aborted: gone, it blocks nothing.
    Aborted,
    /// A status this client does not know (a newer server's).
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
    /// The part it is for, from 1.
    pub part_number: PartNumber,
    /// The part's MD5, base64-encoded (as `Content-MD5` carries it).
    pub md5: String,
}

/// One presigned part URL.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PresignedUrl {
    /// Where to `PUT` the part; its query string is a secret (see the `Debug` impl).
    pub url: String,
    /// The part it is for.
    pub part: PartNumber,
    /// When the URL stops working, if the server says.
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
    /// The server's id of the upload.
    pub upload_id: UploadId,
    /// Where it stands.
    pub status: UploadStatus,
    /// Number of parts declared at create.
    #[serde(default)]
    pub number_parts: Option<u32>,
    /// When it was created.
    #[serde(default)]
    pub created: Option<chrono::DateTime<chrono::Utc>>,
    /// When it was completed, if it was.
    #[serde(default)]
    pub completed: Option<chrono::DateTime<chrono::Utc>>,
    /// When it was aborted, if it was.
    #[serde(default)]
    pub aborted: Option<chrono::DateTime<chrono::Utc>>,
    /// The presigned part URLs, where the answer carries them.
    #[serde(default)]
    pub urls: Vec<PresignedUrl>,
    /// The MD5 declared for each part at create (what the presigned URLs are signed for).
    #[serde(default)]
    pub md5_parts: Vec<Md5Part>,
    /// The `Content-Encoding` the parts are stored with, as the server spells it.
    #[serde(default)]
    pub content_encoding: Option<String>,
    /// `file:checksum` (v1) or `checksum:multihash` (v0.9).
    #[serde(skip)]
    pub checksum: Option<String>,
}

/// The body of `POST A/uploads`.
#[derive(Debug, Clone)]
pub struct CreateUpload {
    /// The MD5 of each part, in part order.
    pub md5_parts: Vec<Md5Part>,
    /// The multihash of the file, stored as the asset's checksum at complete.
    pub checksum: Multihash,
    /// The encoding the parts are sent in, if any.
    pub content_encoding: Option<ContentEncoding>,
}

/// One part the server says it holds.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct UploadedPart {
    /// The part's ETag, as S3 answers it (quotes and all).
    pub etag: String,
    /// The part's number, from 1.
    pub part_number: PartNumber,
    /// Its size in bytes, if the server says.
    #[serde(default)]
    pub size: Option<u64>,
    /// When S3 stored it, if the server says.
    #[serde(default)]
    pub modified: Option<chrono::DateTime<chrono::Utc>>,
}

/// One entry of the complete body.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CompletedPart {
    /// The ETag the part's `PUT` answered.
    pub etag: String,
    /// The part's number, from 1.
    pub part_number: PartNumber,
}

/// The asset as `GET A` shows it: what the last completed upload declared.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct AssetInfo {
    /// The multihash as the server spells it (`file:checksum` or `checksum:multihash`).
    pub checksum: Option<String>,
    /// Where the asset's file is served.
    pub href: Option<String>,
    /// The file's size in bytes (`file:size`).
    pub size: Option<u64>,
    /// The media type (`type`).
    pub media_type: Option<String>,
}

/// A STAC `links` entry, followed for pagination.
#[derive(Debug, Clone, Deserialize)]
pub struct Link {
    /// The relation (`next` is the one paginating).
    pub rel: String,
    /// The target URL.
    pub href: String,
}
