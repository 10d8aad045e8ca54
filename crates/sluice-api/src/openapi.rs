//! The OpenAPI 3.1 document, generated from the handlers' `utoipa::path`
//! attributes and the answer types' `ToSchema` (never written by hand):
//! `GET /api/openapi.json`. CI checks the API against it with a
//! schema-based fuzzer (schemathesis): no 5xx, every answer as documented.

use serde::Serialize;
use sluice_msgbox::Routed;
use sluice_ops::ErrorCode;
use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityScheme};
use utoipa::{Modify, OpenApi, ToSchema};

/// Every error answer.
#[derive(Serialize, ToSchema)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

#[derive(Serialize, ToSchema)]
pub struct ErrorDetail {
    /// Stable: never renamed, never reused.
    pub code: ErrorCode,
    pub message: String,
}

/// The errors any endpoint may answer (each with [`ErrorBody`]).
#[derive(utoipa::IntoResponses)]
#[allow(dead_code)]
pub enum Errors {
    /// A parameter, the path or the body does not parse, or is out of range.
    #[response(status = 400)]
    BadRequest(ErrorBody),
    /// No valid token.
    #[response(status = 401)]
    Unauthenticated(ErrorBody),
    /// The token's role does not allow it.
    #[response(status = 403)]
    Forbidden(ErrorBody),
    /// No such entry, message, part, user, token or endpoint; or nothing matches.
    #[response(status = 404)]
    NotFound(ErrorBody),
    /// The endpoint does not take this method.
    #[response(status = 405)]
    MethodNotAllowed(ErrorBody),
    /// The box refused the change in the state it is in.
    #[response(status = 409)]
    Conflict(ErrorBody),
    /// Too many failed attempts from this address; see `Retry-After`.
    #[response(status = 429)]
    RateLimited(ErrorBody),
    /// A bug, or stored content that fails its check.
    #[response(status = 500)]
    Internal(ErrorBody),
    /// The box's storage failed or it is closed; see `Retry-After`.
    #[response(status = 503)]
    Unavailable(ErrorBody),
}

/// What an action on one suspended entry did.
#[derive(Serialize, ToSchema)]
pub struct Acted {
    pub id: i64,
    /// `resumed`, `resubmitted` or `terminated`.
    pub outcome: &'static str,
    /// Where the message (or its new copy) went.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub routed: Option<Routed>,
    /// The new message a resubmission published.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message_id: Option<String>,
}

#[derive(Serialize, ToSchema)]
pub struct Removed {
    pub name: String,
    pub removed: bool,
    pub tokens_revoked: u64,
}

#[derive(Serialize, ToSchema)]
pub struct Revoked {
    pub id: String,
    pub revoked: bool,
}

#[derive(OpenApi)]
#[openapi(
    info(title = "Sluice REST API", description = "The operations of a Sluice node: status, messages, tracking, suspended messages (resume, resubmit, terminate, one by one or in bulk), the audit log, users and API tokens. Every endpoint but /healthz and /readyz needs `Authorization: Bearer <token>`."),
    components(schemas(ErrorBody, ErrorDetail, sluice_ops::ContextProperty, sluice_ops::PartView)),
    modifiers(&Token)
)]
pub struct ApiDoc;

/// The bearer token scheme every API path names.
struct Token;

impl Modify for Token {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme("token", SecurityScheme::Http(Http::new(HttpAuthScheme::Bearer)));
    }
}

/// `GET /api/openapi.json`: this document.
#[utoipa::path(get, path = "/api/openapi.json", tag = "status", security(("token" = [])),
    responses((status = 200, description = "The OpenAPI 3.1 document of this API", body = Object), Errors))]
pub(crate) async fn openapi_json(
    caller: crate::auth::Caller,
) -> Result<axum::Json<utoipa::openapi::OpenApi>, crate::Problem> {
    caller.require(sluice_ops::access::Permission::Read)?;
    Ok(axum::Json(document().clone()))
}

/// The document of every route [`crate::routes::parts`] registers (made once).
pub fn document() -> &'static utoipa::openapi::OpenApi {
    static DOC: std::sync::OnceLock<utoipa::openapi::OpenApi> = std::sync::OnceLock::new();
    DOC.get_or_init(|| crate::routes::parts().1)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The document names every route the router serves, each API path
    /// with the token scheme, and is OpenAPI 3.1.
    #[test]
    fn the_document_covers_every_endpoint() {
        let doc = serde_json::to_value(document()).unwrap();
        assert!(
            doc["openapi"].as_str().unwrap().starts_with("3.1"),
            "{}",
            doc["openapi"]
        );
        let paths = doc["paths"].as_object().unwrap();
        for (path, method) in [
            ("/healthz", "get"),
            ("/readyz", "get"),
            ("/api/openapi.json", "get"),
            ("/api/v1/status", "get"),
            ("/api/v1/history", "get"),
            ("/api/v1/messages", "get"),
            ("/api/v1/messages/{id}", "get"),
            ("/api/v1/messages/{id}/parts/{n}", "get"),
            ("/api/v1/tracking", "get"),
            ("/api/v1/suspended", "get"),
            ("/api/v1/suspended/groups", "get"),
            ("/api/v1/suspended/resume", "post"),
            ("/api/v1/suspended/terminate", "post"),
            ("/api/v1/suspended/{id}", "get"),
            ("/api/v1/suspended/{id}/parts/{n}", "get"),
            ("/api/v1/suspended/{id}/resume", "post"),
            ("/api/v1/suspended/{id}/terminate", "post"),
            ("/api/v1/suspended/{id}/resubmit", "post"),
            ("/api/v1/audit", "get"),
            ("/api/v1/users", "get"),
            ("/api/v1/users", "post"),
            ("/api/v1/users/{name}", "delete"),
            ("/api/v1/users/{name}/tokens", "post"),
            ("/api/v1/tokens/{id}", "delete"),
            ("/api/v1/ports", "get"),
            ("/login", "get"),
            ("/login", "post"),
            ("/logout", "post"),
            ("/api/v1/session", "get"),
            ("/api/v1/send-ports/{name}/stop", "post"),
            ("/api/v1/send-ports/{name}/start", "post"),
            ("/api/v1/receive-locations/{name}/disable", "post"),
            ("/api/v1/receive-locations/{name}/enable", "post"),
            ("/api/v1/hosts", "get"),
            ("/api/v1/hosts/{name}/restart", "post"),
        ] {
            let op = &paths.get(path).unwrap_or_else(|| panic!("{path} missing"))[method];
            assert!(op.is_object(), "{method} {path} missing");
            if path.starts_with("/api/v1/") || path == "/api/openapi.json" {
                assert_eq!(op["security"], serde_json::json!([{"token": []}]), "{path}");
                assert!(op["responses"]["401"].is_object(), "{path}");
            }
        }
        assert_eq!(
            paths.len(),
            33,
            "a route the test does not list: {:?}",
            paths.keys().collect::<Vec<_>>()
        );
    }
}
