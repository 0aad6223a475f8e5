//! The two error dialects of the emulated server: service-stac's JSON and S3's XML.

use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Map, Value, json};

/// A service-stac error answer: `{"code": N, "description": ...}`.
#[derive(Debug)]
pub(crate) struct ApiError {
    status: StatusCode,
    description: Value,
    upload_id: Option<String>,
}

impl ApiError {
    pub(crate) fn new(status: StatusCode, description: impl Into<Value>) -> Self {
        ApiError {
            status,
            description: description.into(),
            upload_id: None,
        }
    }

    pub(crate) fn bad_request(description: impl Into<Value>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, description)
    }

    pub(crate) fn not_found(description: impl Into<Value>) -> Self {
        Self::new(StatusCode::NOT_FOUND, description)
    }

    /// What the real server answers when an S3 error leaks through (second abort, parts of
    /// a finished upload).
    /// S3's NoSuchUpload, which the server does not catch on abort and parts listing: its
    /// handler of unexpected exceptions answers 500 with the exception's repr.
    pub(crate) fn no_such_upload(operation: &str) -> Self {
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!(
                "ClientError('An error occurred (NoSuchUpload) when calling the {operation} operation: The specified upload does not exist. The upload ID may be invalid, or the upload may have been aborted or completed.')"
            ),
        )
    }

    pub(crate) fn internal() -> Self {
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, "Internal server error")
    }

    pub(crate) fn unauthorized(description: &str) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, description)
    }

    /// DRF's shape for field validation errors: `{"field": ["message"]}`.
    pub(crate) fn field(field: &str, message: impl Into<String>) -> Self {
        Self::bad_request(json!({ field: [message.into()] }))
    }

    /// The answer's status.
    pub(crate) fn status(&self) -> StatusCode {
        self.status
    }

    /// What the answer's `description` holds.
    pub(crate) fn description(&self) -> &Value {
        &self.description
    }

    pub(crate) fn with_upload_id(mut self, upload_id: &str) -> Self {
        self.upload_id = Some(upload_id.to_owned());
        self
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut body = Map::new();
        body.insert("code".into(), self.status.as_u16().into());
        body.insert("description".into(), self.description);
        if let Some(id) = self.upload_id {
            body.insert("upload_id".into(), id.into());
        }
        let mut response = (self.status, axum::Json(Value::Object(body))).into_response();
        if self.status == StatusCode::UNAUTHORIZED {
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                header::HeaderValue::from_static("Bearer"),
            );
        }
        response
    }
}

/// Field validation errors collected over a whole body, as DRF reports them all at once.
#[derive(Debug, Default)]
pub(crate) struct FieldErrors(Map<String, Value>);

impl FieldErrors {
    pub(crate) fn add(&mut self, field: &str, message: impl Into<String>) {
        let entry = self
            .0
            .entry(field.to_owned())
            .or_insert_with(|| Value::Array(Vec::new()));
        if let Value::Array(list) = entry {
            list.push(Value::String(message.into()));
        }
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub(crate) fn into_value(self) -> Value {
        Value::Object(self.0)
    }

    pub(crate) fn into_result(self) -> Result<(), ApiError> {
        if self.0.is_empty() {
            Ok(())
        } else {
            Err(ApiError::bad_request(Value::Object(self.0)))
        }
    }
}

/// An S3 error answer, XML as S3 sends it.
#[derive(Debug)]
pub(crate) struct S3Error {
    status: StatusCode,
    code: &'static str,
    message: &'static str,
}

impl S3Error {
    const fn new(status: StatusCode, code: &'static str, message: &'static str) -> Self {
        S3Error {
            status,
            code,
            message,
        }
    }

    pub(crate) const SIGNATURE: S3Error = S3Error::new(
        StatusCode::FORBIDDEN,
        "SignatureDoesNotMatch",
        "The request signature we calculated does not match the signature you provided. \
         Check your key and signing method.",
    );
    pub(crate) const EXPIRED: S3Error =
        S3Error::new(StatusCode::FORBIDDEN, "AccessDenied", "Request has expired");
    pub(crate) const NO_SUCH_UPLOAD: S3Error = S3Error::new(
        StatusCode::NOT_FOUND,
        "NoSuchUpload",
        "The specified upload does not exist. The upload ID may be invalid, or the upload may \
         have been aborted or completed.",
    );
    pub(crate) const NO_SUCH_KEY: S3Error = S3Error::new(
        StatusCode::NOT_FOUND,
        "NoSuchKey",
        "The specified key does not exist.",
    );
    pub(crate) const BAD_DIGEST: S3Error = S3Error::new(
        StatusCode::BAD_REQUEST,
        "BadDigest",
        "The Content-MD5 you specified did not match what we received.",
    );
    pub(crate) const INVALID_DIGEST: S3Error = S3Error::new(
        StatusCode::BAD_REQUEST,
        "InvalidDigest",
        "The Content-MD5 you specified was invalid.",
    );
    pub(crate) const INCOMPLETE_BODY: S3Error = S3Error::new(
        StatusCode::BAD_REQUEST,
        "IncompleteBody",
        "You did not provide the number of bytes specified by the Content-Length HTTP header",
    );
    pub(crate) const TOO_LARGE: S3Error = S3Error::new(
        StatusCode::BAD_REQUEST,
        "EntityTooLarge",
        "Your proposed upload exceeds the maximum allowed size",
    );
    pub(crate) const NOT_IMPLEMENTED: S3Error = S3Error::new(
        StatusCode::NOT_IMPLEMENTED,
        "NotImplemented",
        "A header you provided implies functionality that is not implemented",
    );
    pub(crate) const INTERNAL: S3Error = S3Error::new(
        StatusCode::INTERNAL_SERVER_ERROR,
        "InternalError",
        "We encountered an internal error. Please try again.",
    );
    pub(crate) const SLOW_DOWN: S3Error = S3Error::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "SlowDown",
        "Please reduce your request rate.",
    );

    /// An S3-flavoured answer for an arbitrary injected status.
    pub(crate) fn for_status(status: StatusCode) -> Response {
        let base = match status.as_u16() {
            403 => S3Error::EXPIRED,
            404 => S3Error::NO_SUCH_UPLOAD,
            503 => S3Error::SLOW_DOWN,
            _ => S3Error::INTERNAL,
        };
        S3Error { status, ..base }.into_response()
    }
}

impl IntoResponse for S3Error {
    fn into_response(self) -> Response {
        let request_id = format!("{:016X}", rand::random::<u64>());
        let body = format!(
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>{}</Code><Message>{}\
             </Message><RequestId>{request_id}</RequestId></Error>",
            self.code,
            quick_xml::escape::escape(self.message),
        );
        (
            self.status,
            [
                (header::CONTENT_TYPE, "application/xml"),
                (
                    header::HeaderName::from_static("x-amz-request-id"),
                    request_id.as_str(),
                ),
            ],
            body,
        )
            .into_response()
    }
}
