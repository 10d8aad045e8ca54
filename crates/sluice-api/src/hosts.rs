//! Hosts: `GET /api/v1/hosts` lists every host, where it runs (in the
//! node's process, or isolated in a host instance of its own) and its
//! instances, with an isolated host's resident memory over the last hour;
//! an operator restarts an isolated host's instance gracefully (`POST
//! /api/v1/hosts/{name}/restart`: it finishes what it holds, then a new one
//! starts).

use axum::Json;
use axum::extract::rejection::PathRejection;
use axum::extract::{Path, State};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use sluice_ops::access::Permission;
use sluice_ops::status::HostView;
use sluice_ops::{ErrorCode, OpsError};
use utoipa::ToSchema;

use crate::auth::Caller;
use crate::{ApiState, Problem};

/// A host, with its instances' resident memory over time.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct HostDetail {
    #[serde(flatten)]
    pub host: HostView,
    /// An isolated host's instances' RSS, sampled every `[api]
    /// sample_every` over the last hour, oldest first (empty for a host in the node's process: see
    /// the node's RSS in `GET /api/v1/status`).
    pub rss: Vec<RssSample>,
}

#[derive(Debug, Clone, Copy, Serialize, ToSchema)]
pub struct RssSample {
    /// When (Unix ms).
    pub at: i64,
    pub rss_bytes: u64,
}

#[derive(Serialize, ToSchema)]
pub struct Hosts {
    pub items: Vec<HostDetail>,
}

fn control(state: &ApiState) -> Result<std::sync::Arc<dyn crate::units::NodeControl>, OpsError> {
    state
        .node
        .clone()
        .ok_or_else(|| OpsError::Unavailable("no node runs behind this API".into()))
}

#[utoipa::path(get, path = "/api/v1/hosts", tag = "hosts", security(("token" = [])),
    responses((status = 200, description = "Every host and its instances", body = Hosts), crate::openapi::Errors))]
pub(crate) async fn list(caller: Caller, State(state): State<ApiState>) -> Result<Response, Problem> {
    caller.require(Permission::Read)?;
    let items = control(&state)?.hosts().await?;
    Ok(Json(Hosts { items }).into_response())
}

#[utoipa::path(post, path = "/api/v1/hosts/{name}/restart", tag = "hosts", security(("token" = [])),
    params(("name" = String, Path, description = "An isolated host")),
    responses((status = 200, description = "Its instance is draining; a new one starts when it has finished", body = HostDetail),
        crate::openapi::Errors))]
pub(crate) async fn restart(
    caller: Caller,
    State(state): State<ApiState>,
    name: Result<Path<String>, PathRejection>,
) -> Result<Response, Problem> {
    caller.require(Permission::Operate)?;
    let Path(name) = name?;
    let control = control(&state).map_err(|e| Problem::new(ErrorCode::StorageUnavailable, e.to_string()))?;
    let who = caller.actor.name.clone();
    let view = crate::routes::audited(
        &state,
        &caller.actor,
        "host.restart",
        (format!("host {name}"), None),
        async move { control.restart_host(&name, &who).await },
    )
    .await?;
    Ok(Json(view).into_response())
}
