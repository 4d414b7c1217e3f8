//! Errors as RFC 9457 problem details (`application/problem+json`): the
//! status, a title, what went wrong, the field or parameter at fault and the
//! fix. Internal details (paths on the server, source errors) are logged,
//! never sent.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use kiln_engine::KilnError;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// An RFC 9457 problem document.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema, PartialEq)]
#[schema(example = json!({
    "type": "https://kiln.dev/problems/invalid-parameter",
    "title": "Invalid parameter",
    "status": 422,
    "detail": "params.rows must be at most 100000000",
    "field": "params.rows",
    "fix": "ask for fewer rows"
}))]
pub struct Problem {
    /// A URI naming the kind of problem.
    #[serde(rename = "type")]
    pub kind: String,
    pub title: String,
    pub status: u16,
    pub detail: String,
    /// The request field, parameter or header at fault.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
    /// What to change.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fix: Option<String>,
}

/// An error of the API: becomes a [`Problem`] response.
#[derive(Debug, Clone)]
pub struct ApiError {
    pub status: StatusCode,
    pub kind: &'static str,
    pub detail: String,
    pub field: Option<String>,
    pub fix: Option<String>,
    /// Extra response headers (`WWW-Authenticate`, `Retry-After`).
    pub headers: Vec<(header::HeaderName, String)>,
}

pub type ApiResult<T> = std::result::Result<T, ApiError>;

impl ApiError {
    /// What a page shows: the detail, and the fix when there is one.
    pub fn message(&self) -> String {
        match &self.fix {
            Some(fix) => format!("{} (fix: {fix})", self.detail),
            None => self.detail.clone(),
        }
    }

    pub fn new(status: StatusCode, kind: &'static str, detail: impl Into<String>) -> Self {
        ApiError {
            status,
            kind,
            detail: detail.into(),
            field: None,
            fix: None,
            headers: Vec::new(),
        }
    }
    pub fn field(mut self, field: impl Into<String>) -> Self {
        self.field = Some(field.into());
        self
    }
    pub fn fix(mut self, fix: impl Into<String>) -> Self {
        self.fix = Some(fix.into());
        self
    }
    pub fn header(mut self, name: header::HeaderName, value: impl Into<String>) -> Self {
        self.headers.push((name, value.into()));
        self
    }

    pub fn bad_request(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "bad-request", detail)
    }
    /// A well-formed request whose values are wrong (422).
    pub fn invalid(field: impl Into<String>, detail: impl Into<String>) -> Self {
        Self::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid-parameter",
            detail,
        )
        .field(field)
    }
    pub fn unauthorized(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, "unauthorized", detail)
            .header(header::WWW_AUTHENTICATE, "Bearer")
            .fix("send `Authorization: Bearer <access token>` from the configured OIDC issuer")
    }
    pub fn forbidden(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, "forbidden", detail)
    }
    /// Also what another user's private resource looks like: its existence
    /// is not revealed.
    pub fn not_found(what: &str, id: &str) -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            "not-found",
            format!("no {what} '{id}' visible to you"),
        )
    }
    pub fn conflict(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::CONFLICT, "conflict", detail)
    }
    pub fn too_large(detail: impl Into<String>) -> Self {
        // The rest of the body is never read, so the connection cannot carry
        // another request: tell the client not to reuse it (a pooled client
        // would otherwise send its next request into a closing socket).
        Self::new(StatusCode::PAYLOAD_TOO_LARGE, "too-large", detail)
            .header(header::CONNECTION, "close")
    }
    pub fn unsupported_media(detail: impl Into<String>) -> Self {
        Self::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported-media-type",
            detail,
        )
    }
    pub fn too_many(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::TOO_MANY_REQUESTS, "too-many-requests", detail)
    }
    pub fn unavailable(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::SERVICE_UNAVAILABLE, "unavailable", detail)
    }
    /// A failure of the server itself: the cause goes to the log, the
    /// client gets an id to quote.
    pub fn internal(context: &str, cause: impl std::fmt::Display) -> Self {
        let incident = uuid::Uuid::new_v4().simple().to_string();
        tracing::error!(incident, "{context}: {cause}");
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            format!("the server failed while {context} (incident {incident})"),
        )
    }

    pub fn problem(&self) -> Problem {
        Problem {
            kind: format!("https://kiln.dev/problems/{}", self.kind),
            title: self
                .status
                .canonical_reason()
                .unwrap_or("Error")
                .to_string(),
            status: self.status.as_u16(),
            detail: self.detail.clone(),
            field: self.field.clone(),
            fix: self.fix.clone(),
        }
    }

    /// A user's data or parameters were wrong (422), or the server failed.
    /// Config and data errors keep their message and fix: they describe the
    /// user's input, not the server.
    pub fn from_kiln(field: &str, e: KilnError) -> Self {
        match e {
            KilnError::Config { message, fix } => {
                let mut err = Self::invalid(field, message);
                err.fix = fix;
                err
            }
            KilnError::Data {
                location,
                message,
                fix,
            } => {
                let mut err = Self::invalid(field, format!("{location}: {message}"));
                err.kind = "invalid-data";
                err.fix = fix;
                err
            }
            KilnError::Execution { context, source } => {
                // DataFusion's parse errors (a ragged CSV row, a corrupt
                // Parquet footer) are about the data.
                let mut err =
                    Self::invalid(field, format!("{context}: {}", source.strip_backtrace()));
                err.kind = "invalid-data";
                err
            }
            other => Self::internal("reading the data", other),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = serde_json::to_vec(&self.problem()).unwrap_or_default();
        let mut response = (self.status, body).into_response();
        let headers = response.headers_mut();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/problem+json"),
        );
        for (name, value) in self.headers {
            if let Ok(value) = HeaderValue::from_str(&value) {
                headers.insert(name, value);
            }
        }
        response
    }
}

impl From<crate::db::DbError> for ApiError {
    fn from(e: crate::db::DbError) -> Self {
        match e {
            crate::db::DbError::Unavailable(m) => {
                tracing::warn!("database unavailable: {m}");
                Self::unavailable("the database is unavailable; try again shortly")
                    .header(header::RETRY_AFTER, "5")
            }
            other => Self::internal("querying the database", other),
        }
    }
}
