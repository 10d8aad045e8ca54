//! Every error answer: `{"error": {"code": "<stable code>", "message":
//! "..."}}` with the code's HTTP status (`sluice_ops::ErrorCode`).

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use sluice_ops::{ErrorCode, OpsError};

/// An error as the API answers it.
#[derive(Debug)]
pub struct Problem {
    pub code: ErrorCode,
    pub message: String,
    /// Seconds for `Retry-After` (429 and 503 say 10 without it).
    pub retry_after: Option<u64>,
}

impl Problem {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Problem {
        Problem {
            code,
            message: message.into(),
            retry_after: None,
        }
    }

    /// Say when to try again (`Retry-After`).
    pub fn retry_after(mut self, secs: u64) -> Problem {
        self.retry_after = Some(secs);
        self
    }

    pub fn invalid(message: impl Into<String>) -> Problem {
        Problem::new(ErrorCode::InvalidArgument, message)
    }
}

impl From<OpsError> for Problem {
    fn from(e: OpsError) -> Problem {
        let mut message = e.to_string();
        if let Some(hint) = e.hint() {
            message = format!("{message} ({hint})");
        }
        Problem::new(e.error_code(), message)
    }
}

impl IntoResponse for Problem {
    fn into_response(self) -> Response {
        let status = StatusCode::from_u16(self.code.http_status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        if status.is_server_error() {
            tracing::warn!(code = %self.code, message = %self.message, "API request failed");
        }
        let body = serde_json::json!({"error": {"code": self.code, "message": self.message}});
        let mut response = (status, axum::Json(body)).into_response();
        let headers = response.headers_mut();
        match self.code {
            ErrorCode::Unauthenticated => {
                headers.insert(
                    header::WWW_AUTHENTICATE,
                    HeaderValue::from_static("Bearer realm=\"sluice\""),
                );
            }
            ErrorCode::RateLimited | ErrorCode::StorageUnavailable => {
                let secs = self.retry_after.unwrap_or(10).max(1);
                if let Ok(v) = HeaderValue::from_str(&secs.to_string()) {
                    headers.insert(header::RETRY_AFTER, v);
                }
            }
            _ => {}
        }
        response
    }
}

/// Requests whose parts do not parse (a query, a path, a JSON body): 400
/// `invalid_argument`, saying what did not parse.
macro_rules! rejections {
    ($($rejection:ty),*) => {$(
        impl From<$rejection> for Problem {
            fn from(r: $rejection) -> Problem {
                let status = r.status();
                let code = if status == StatusCode::PAYLOAD_TOO_LARGE { ErrorCode::TooLarge } else { ErrorCode::InvalidArgument };
                Problem::new(code, r.body_text())
            }
        }
    )*};
}

rejections!(
    axum::extract::rejection::QueryRejection,
    axum::extract::rejection::PathRejection,
    axum::extract::rejection::JsonRejection
);
