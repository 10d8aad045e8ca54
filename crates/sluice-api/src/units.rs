//! Send ports and receive locations: `GET /api/v1/ports` lists them with
//! their state, queue depth and messages handled; an operator stops and
//! starts a send port (its messages queue in the box meanwhile) and
//! disables and enables a receive location. The node keeps the operator's
//! choice in the box, so it holds across restarts and reloads, whatever
//! the configuration file says (a unit the file disables stays disabled).

use axum::Json;
use axum::extract::rejection::PathRejection;
use axum::extract::{Path, State};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use sluice_msgbox::UnitKind;
use sluice_ops::access::Permission;
use sluice_ops::{ErrorCode, OpsError};
use utoipa::ToSchema;

use crate::auth::Caller;
use crate::{ApiState, Problem};

/// What the API asks of the running node.
#[async_trait::async_trait]
pub trait NodeControl: Send + Sync {
    /// Every send port and receive location of the configuration, a send
    /// port's queue depth from `counts` (the caller's: counting the box is
    /// a scan, done once per page).
    async fn units(&self, counts: &sluice_msgbox::Counts) -> Result<Vec<UnitView>, OpsError>;
    /// Run (start, enable) or stop (stop, disable) one; `not_found` if the
    /// configuration has no such unit, `conflict` to run one the
    /// configuration file disables.
    async fn set_running(&self, kind: UnitKind, name: &str, run: bool) -> Result<UnitView, OpsError>;
    /// Every host, where it runs and its instances.
    async fn hosts(&self) -> Result<Vec<crate::hosts::HostDetail>, OpsError>;
    /// Drain an isolated host's instance and start another (asked by
    /// `who`); `not_found` if there is no such host, `conflict` for a host
    /// in the node's process.
    async fn restart_host(&self, name: &str, who: &str) -> Result<crate::hosts::HostDetail, OpsError>;
}

/// Whether a unit runs, and if not, who stopped it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum UnitState {
    Running,
    /// Stopped (a send port) or disabled (a receive location) by an operator.
    Stopped,
    /// `enabled = false` in the configuration file.
    Disabled,
}

/// A send port or a receive location.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct UnitView {
    pub kind: UnitKind,
    pub name: String,
    /// A receive location's receive port.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub receive_port: Option<String>,
    /// The adapter's type (`file`, `http`...).
    pub adapter: String,
    /// The host whose throttle it shares.
    pub host: String,
    pub state: UnitState,
    /// A send port's queue entries in the box (waiting, leased, or waiting
    /// for a retry).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub queued: Option<u64>,
    /// Messages published (a location) or delivered (a port) since the
    /// node started.
    pub messages: u64,
    /// Of those, per second over the API's last sample interval (absent
    /// until it has two samples; see `GET /api/v1/history`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub per_second: Option<f64>,
}

#[derive(Serialize, ToSchema)]
pub struct Units {
    pub items: Vec<UnitView>,
}

/// Every unit, with the queues counted now (none without a node).
pub(crate) async fn all(state: &ApiState) -> Result<Vec<UnitView>, OpsError> {
    let Some(node) = &state.node else {
        return Err(OpsError::Unavailable("no node runs behind this API".into()));
    };
    let counts = state.b.counts().await.map_err(|error| OpsError::Read {
        doing: "counting queue entries".into(),
        error,
    })?;
    Ok(with_rates(state, node.units(&counts).await?))
}

/// `units` with each one's rate from the API's history.
pub(crate) fn with_rates(state: &ApiState, mut units: Vec<UnitView>) -> Vec<UnitView> {
    let rates = state.history.rates();
    for u in &mut units {
        u.per_second = rates.get(&(u.kind, u.name.clone())).copied();
    }
    units
}

#[utoipa::path(get, path = "/api/v1/ports", tag = "ports", security(("token" = [])),
    responses((status = 200, description = "Send ports and receive locations", body = Units), crate::openapi::Errors))]
pub(crate) async fn list(caller: Caller, State(state): State<ApiState>) -> Result<Response, Problem> {
    caller.require(Permission::Read)?;
    let items = all(&state).await?;
    Ok(Json(Units { items }).into_response())
}

async fn set(
    caller: Caller,
    state: ApiState,
    kind: UnitKind,
    name: Result<Path<String>, PathRejection>,
    run: bool,
) -> Result<Response, Problem> {
    caller.require(Permission::Operate)?;
    let Path(name) = name?;
    let control = state
        .node
        .clone()
        .ok_or_else(|| Problem::new(ErrorCode::StorageUnavailable, "no node runs behind this API"))?;
    let action = match (kind, run) {
        (UnitKind::SendPort, true) => "send_port.start",
        (UnitKind::SendPort, false) => "send_port.stop",
        (UnitKind::ReceiveLocation, true) => "receive_location.enable",
        (UnitKind::ReceiveLocation, false) => "receive_location.disable",
    };
    let target = format!("{} {name}", kind.as_str().replace('_', " "));
    let view = crate::routes::audited(&state, &caller.actor, action, (target, None), async move {
        control.set_running(kind, &name, run).await
    })
    .await?;
    Ok(Json(view).into_response())
}

#[utoipa::path(post, path = "/api/v1/send-ports/{name}/stop", tag = "ports", security(("token" = [])),
    params(("name" = String, Path, description = "A send port")),
    responses((status = 200, description = "Stopped: its messages queue in the box", body = UnitView), crate::openapi::Errors))]
pub(crate) async fn stop_port(
    caller: Caller,
    State(state): State<ApiState>,
    name: Result<Path<String>, PathRejection>,
) -> Result<Response, Problem> {
    set(caller, state, UnitKind::SendPort, name, false).await
}

#[utoipa::path(post, path = "/api/v1/send-ports/{name}/start", tag = "ports", security(("token" = [])),
    params(("name" = String, Path, description = "A send port")),
    responses((status = 200, description = "Started", body = UnitView), crate::openapi::Errors))]
pub(crate) async fn start_port(
    caller: Caller,
    State(state): State<ApiState>,
    name: Result<Path<String>, PathRejection>,
) -> Result<Response, Problem> {
    set(caller, state, UnitKind::SendPort, name, true).await
}

#[utoipa::path(post, path = "/api/v1/receive-locations/{name}/disable", tag = "ports", security(("token" = [])),
    params(("name" = String, Path, description = "A receive location")),
    responses((status = 200, description = "Disabled: it takes nothing", body = UnitView), crate::openapi::Errors))]
pub(crate) async fn disable_location(
    caller: Caller,
    State(state): State<ApiState>,
    name: Result<Path<String>, PathRejection>,
) -> Result<Response, Problem> {
    set(caller, state, UnitKind::ReceiveLocation, name, false).await
}

#[utoipa::path(post, path = "/api/v1/receive-locations/{name}/enable", tag = "ports", security(("token" = [])),
    params(("name" = String, Path, description = "A receive location")),
    responses((status = 200, description = "Enabled", body = UnitView), crate::openapi::Errors))]
pub(crate) async fn enable_location(
    caller: Caller,
    State(state): State<ApiState>,
    name: Result<Path<String>, PathRejection>,
) -> Result<Response, Problem> {
    set(caller, state, UnitKind::ReceiveLocation, name, true).await
}
