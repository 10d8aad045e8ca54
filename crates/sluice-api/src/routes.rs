//! The endpoints: each parses its request, checks the caller's role, and
//! calls the operations library. Lists answer `{"items": [...], "next":
//! CURSOR}` (`next` is absent on the last page; pass it back as `after`,
//! or `before` for the audit log).

use std::future::Future;

use axum::Json;
use axum::extract::rejection::{JsonRejection, PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::{Router, body::Body};
use serde::{Deserialize, Serialize};
use sluice_model::MessageId;
use sluice_msgbox::Role;
use sluice_ops::access::{self, Permission};
use sluice_ops::audit::{self, Actor};
use sluice_ops::suspended::Edit;
use sluice_ops::{ErrorCode, OpsError, messages, parse, suspended};

use crate::auth::{Administering, Caller, Operating};
use crate::openapi::{Acted, Removed, Revoked};
use crate::{ApiState, DEFAULT_LIMIT, MAX_JSON, MAX_LIMIT, Problem};

type Answer = Result<Response, Problem>;

/// The routes and, from the same registrations, the OpenAPI document:
/// a route cannot be served without being documented, nor documented
/// without being served.
pub(crate) fn parts() -> (Router<ApiState>, utoipa::openapi::OpenApi) {
    use crate::{body, bulk, openapi};
    use utoipa::OpenApi;
    use utoipa_axum::routes;
    utoipa_axum::router::OpenApiRouter::with_openapi(openapi::ApiDoc::openapi())
        .routes(routes!(healthz))
        .routes(routes!(crate::session::login_form, crate::session::login))
        .routes(routes!(crate::session::logout))
        .routes(routes!(crate::session::whoami))
        .routes(routes!(readyz))
        .routes(routes!(openapi::openapi_json))
        .routes(routes!(status))
        .routes(routes!(history))
        .routes(routes!(list_messages))
        .routes(routes!(show_message))
        .routes(routes!(body::message_part))
        .routes(routes!(tracking))
        .routes(routes!(list_suspended))
        .routes(routes!(suspended_groups))
        .routes(routes!(bulk::resume))
        .routes(routes!(bulk::terminate))
        .routes(routes!(show_suspended))
        .routes(routes!(body::suspended_part))
        .routes(routes!(resume))
        .routes(routes!(terminate))
        .routes(routes!(resubmit))
        .routes(routes!(list_audit))
        .routes(routes!(list_users, add_user))
        .routes(routes!(remove_user))
        .routes(routes!(create_token))
        .routes(routes!(revoke_token))
        .routes(routes!(crate::units::list))
        .routes(routes!(crate::units::stop_port))
        .routes(routes!(crate::units::start_port))
        .routes(routes!(crate::units::disable_location))
        .routes(routes!(crate::units::enable_location))
        .routes(routes!(crate::hosts::list))
        .routes(routes!(crate::hosts::restart))
        .split_for_parts()
}

pub fn router(state: ApiState) -> Router {
    use crate::portal;
    use axum::routing::get;
    // The portal's pages (HTML for a browser session; not the API, not in
    // its document).
    let pages = Router::new()
        .route("/", get(portal::dashboard))
        .route("/ports", get(portal::ports))
        .route("/hosts", get(portal::hosts))
        .route("/suspended", get(portal::suspended_list))
        .route("/suspended/{id}", get(portal::suspended_detail))
        .route("/messages", get(portal::messages_list))
        .route("/messages/{id}", get(portal::message_detail))
        .route("/audit", get(portal::audit_list))
        .route("/users", get(portal::users_list))
        .route("/static/portal.js", get(portal::script))
        .route("/static/portal.css", get(portal::style));
    parts()
        .0
        .merge(pages)
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(axum::extract::DefaultBodyLimit::max(MAX_JSON))
        .with_state(state)
}

async fn not_found() -> Problem {
    Problem::new(ErrorCode::NotFound, "no such endpoint (see /api/v1)")
}

async fn method_not_allowed() -> Response {
    let mut r = Problem::new(ErrorCode::InvalidArgument, "this endpoint does not take that method").into_response();
    *r.status_mut() = StatusCode::METHOD_NOT_ALLOWED;
    r
}

fn json<T: Serialize>(value: T) -> Answer {
    Ok(Json(value).into_response())
}

/// A page of a list and the cursor of the next.
#[derive(Serialize, utoipa::ToSchema)]
pub(crate) struct Page<T: Serialize, C: Serialize> {
    items: Vec<T>,
    /// The cursor of the next page; absent on the last one.
    #[serde(skip_serializing_if = "Option::is_none")]
    next: Option<C>,
}

fn page<T: Serialize, C: Serialize>(items: Vec<T>, limit: usize, cursor: impl Fn(&T) -> C) -> Answer {
    let next = (items.len() == limit).then(|| items.last().map(cursor)).flatten();
    json(Page { items, next })
}

fn limit(asked: Option<usize>) -> Result<usize, Problem> {
    match asked {
        None => Ok(DEFAULT_LIMIT),
        Some(n) if (1..=MAX_LIMIT).contains(&n) => Ok(n),
        Some(n) => Err(Problem::invalid(format!(
            "limit {n} is out of range (1 to {MAX_LIMIT})"
        ))),
    }
}

pub(crate) fn id_param(text: &str) -> Result<i64, Problem> {
    text.parse::<i64>().ok().filter(|id| *id > 0).ok_or_else(|| {
        Problem::invalid(format!(
            "`{}` is not a suspended entry id (a positive number)",
            text.escape_default()
        ))
    })
}

/// Run a change and record it in the audit log, in a task of its own: a
/// client that goes away does not cancel it half-way, nor leave it
/// unrecorded.
pub(crate) async fn audited<T, F>(
    state: &ApiState,
    actor: &Actor,
    action: &'static str,
    (target, detail): (String, Option<String>),
    f: F,
) -> Result<T, Problem>
where
    T: Send + Sync + 'static,
    F: Future<Output = Result<T, OpsError>> + Send + 'static,
{
    let (b, clock, actor) = (state.b.clone(), state.clock.clone(), actor.clone());
    state
        .work
        .spawn(async move {
            let outcome = f.await;
            let recorded = audit::record(&*b, &actor, action, &target, &outcome, detail, clock.now_ms()).await;
            match (outcome, recorded) {
                (Ok(v), Ok(_)) => Ok(v),
                (Err(e), _) => Err(Problem::from(e)),
                // Done, but not recorded: the operator must know.
                (Ok(_), Err(e)) => Err(Problem::new(
                    e.error_code(),
                    format!("{action} on {target} was done, but recording it in the audit log failed: {e}"),
                )),
            }
        })
        .await
        .map_err(|e| Problem::new(ErrorCode::Internal, format!("{action} stopped: {e}")))?
}

// ---- health ----------------------------------------------------------------

#[utoipa::path(get, path = "/healthz", tag = "health",
    responses((status = 200, description = "The node runs", body = String, content_type = "text/plain")))]
pub(crate) async fn healthz() -> &'static str {
    "ok\n"
}

/// Ready when the box answers.
#[utoipa::path(get, path = "/readyz", tag = "health",
    responses((status = 200, description = "The message box answers", body = String, content_type = "text/plain"),
        (status = 503, description = "The message box does not answer", body = crate::openapi::ErrorBody)))]
pub(crate) async fn readyz(State(state): State<ApiState>) -> Response {
    // Asked of the box at most once a second, however often it is asked
    // here (no credentials needed): the answer is remembered meanwhile.
    let now = state.clock.now_ms();
    let last = state.ready.load(std::sync::atomic::Ordering::Relaxed);
    let ready = if last != 0 && now.saturating_sub(last.abs()) < 1000 {
        last > 0
    } else {
        let ok = state.b.counts().await.is_ok();
        let stamp = now.max(1);
        state
            .ready
            .store(if ok { stamp } else { -stamp }, std::sync::atomic::Ordering::Relaxed);
        ok
    };
    if ready {
        "ready\n".into_response()
    } else {
        Problem::new(
            ErrorCode::StorageUnavailable,
            "the message box does not answer (see the node's log)",
        )
        .into_response()
    }
}

// ---- status, messages, tracking -------------------------------------------

#[utoipa::path(get, path = "/api/v1/status", tag = "status", security(("token" = [])),
    responses((status = 200, description = "The box's counts and the node's report", body = sluice_ops::status::Status), crate::openapi::Errors))]
pub(crate) async fn status(caller: Caller, State(state): State<ApiState>) -> Answer {
    caller.require(Permission::Read)?;
    json(sluice_ops::status::status(&*state.b, &state.data_dir, state.clock.now_ms()).await?)
}

/// The samples of `GET /api/v1/history`.
#[derive(Serialize, utoipa::ToSchema)]
pub(crate) struct History {
    /// Every sample kept (the last hour), oldest first.
    items: Vec<crate::history::Sample>,
    /// Seconds between samples.
    every_seconds: u64,
}

#[utoipa::path(get, path = "/api/v1/history", tag = "status", security(("token" = [])),
    responses((status = 200, description = "The dashboard's figures over the last hour", body = History), crate::openapi::Errors))]
pub(crate) async fn history(caller: Caller, State(state): State<ApiState>) -> Answer {
    caller.require(Permission::Read)?;
    json(History {
        items: state.history.samples(),
        every_seconds: state.history.every.as_secs(),
    })
}

/// A message search (see the box's `MessageQuery`): every condition given
/// must hold. A search examines a bounded number of messages per request:
/// a page may be short, or empty, with `next` set; go on with `after`.
#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub(crate) struct MessagesQuery {
    /// A filter on the context (every property, promoted or not), e.g.
    /// `order.id == "A1"`; fast on the keys `[box] index` names.
    #[serde(rename = "where")]
    #[param(min_length = 1)]
    pub(crate) context: Option<String>,
    /// Published at or after: RFC 3339, or a duration ago (`2h`).
    pub(crate) since: Option<String>,
    /// Published before.
    pub(crate) until: Option<String>,
    /// Queued for or suspended at this send port.
    pub(crate) port: Option<String>,
    pub(crate) after: Option<String>,
    #[param(minimum = 1, maximum = 1000)]
    pub(crate) limit: Option<usize>,
}

impl MessagesQuery {
    /// The box's search, and the cursor to go on from.
    pub(crate) fn search(
        &self,
        now: sluice_msgbox::Millis,
    ) -> Result<(sluice_msgbox::MessageQuery, Option<MessageId>), Problem> {
        let search = sluice_msgbox::MessageQuery {
            context: self.context.as_deref().map(parse::parse_filter).transpose()?,
            since: time_param(&self.since, now)?,
            until: time_param(&self.until, now)?,
            port: self.port.clone(),
        };
        Ok((search, self.after.as_deref().map(parse::parse_message_id).transpose()?))
    }
}

/// Parse an API time (RFC 3339, or a duration ago).
pub(crate) fn time_param(
    text: &Option<String>,
    now: sluice_msgbox::Millis,
) -> Result<Option<sluice_msgbox::Millis>, Problem> {
    Ok(text.as_deref().map(|t| parse::parse_time(t, now)).transpose()?)
}

#[utoipa::path(get, path = "/api/v1/messages", tag = "messages", security(("token" = [])), params(MessagesQuery),
    responses((status = 200, description = "Messages in the box the search selects, oldest first", body = Page<sluice_msgbox::MessageSummary, String>), crate::openapi::Errors))]
pub(crate) async fn list_messages(
    caller: Caller,
    State(state): State<ApiState>,
    q: Result<Query<MessagesQuery>, QueryRejection>,
) -> Answer {
    caller.require(Permission::Read)?;
    let Query(q) = q?;
    let limit = limit(q.limit)?;
    let (search, after) = q.search(state.clock.now_ms())?;
    let found = messages::list(&*state.b, &search, after, limit).await?;
    json(Page {
        items: found.items,
        next: found.next,
    })
}

fn message_param(text: &str) -> Result<MessageId, Problem> {
    Ok(parse::parse_message_id(text)?)
}

#[utoipa::path(get, path = "/api/v1/messages/{id}", tag = "messages", security(("token" = [])),
    params(("id" = String, Path, description = "A message id (ULID)", pattern = "^[0-9A-HJKMNP-TV-Za-hjkmnp-tv-z]{26}$")),
    responses((status = 200, description = "One message in full", body = messages::MessageDetail), crate::openapi::Errors))]
pub(crate) async fn show_message(
    caller: Caller,
    State(state): State<ApiState>,
    id: Result<Path<String>, PathRejection>,
) -> Answer {
    caller.require(Permission::Read)?;
    let Path(id) = id?;
    json(messages::show(&*state.b, message_param(&id)?).await?)
}

/// Which tracking events: every condition given must hold. As a message
/// search, a bounded number of events is examined per request.
#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub(crate) struct TrackingQuery {
    /// One message's events (its whole path).
    message: Option<String>,
    /// One kind: received, suspended, resumed, delivered, terminated,
    /// resubmitted, completed.
    event: Option<String>,
    /// The send port where it happened.
    port: Option<String>,
    /// The receive location where it happened.
    location: Option<String>,
    /// At or after: RFC 3339, or a duration ago (`2h`).
    since: Option<String>,
    until: Option<String>,
    /// A filter on the context of the messages as they left the box (only
    /// `completed` events carry it, so only they match).
    #[serde(rename = "where")]
    #[param(min_length = 1)]
    context: Option<String>,
    after: Option<i64>,
    #[param(minimum = 1, maximum = 1000)]
    limit: Option<usize>,
}

#[utoipa::path(get, path = "/api/v1/tracking", tag = "messages", security(("token" = [])), params(TrackingQuery),
    responses((status = 200, description = "Tracking events, oldest first", body = Page<messages::Tracked<'static>, i64>), crate::openapi::Errors))]
pub(crate) async fn tracking(
    caller: Caller,
    State(state): State<ApiState>,
    q: Result<Query<TrackingQuery>, QueryRejection>,
) -> Answer {
    caller.require(Permission::Read)?;
    let Query(q) = q?;
    let limit = limit(q.limit)?;
    let now = state.clock.now_ms();
    let query = sluice_msgbox::TrackingQuery {
        message: q.message.as_deref().map(message_param).transpose()?,
        event: q.event,
        port: q.port,
        location: q.location,
        since: time_param(&q.since, now)?,
        until: time_param(&q.until, now)?,
        context: q.context.as_deref().map(parse::parse_filter).transpose()?,
    };
    let found = state
        .b
        .tracking(&query, q.after, limit)
        .await
        .map_err(|error| OpsError::Read {
            doing: "reading tracking events".into(),
            error,
        })?;
    json(Page {
        items: found.items.iter().map(messages::Tracked::new).collect(),
        next: found.next,
    })
}

// ---- suspended -------------------------------------------------------------

/// A struct of the CLI's suspended filters (as query parameters, or a bulk
/// action's JSON keys) and `$extra` fields; unknown keys are refused
/// (serde cannot both flatten and refuse them).
macro_rules! with_filters {
    ($(#[$meta:meta])* $name:ident { $($(#[$fmeta:meta])* $field:ident: $ty:ty,)* }) => {
        $(#[$meta])*
        #[derive(Debug, Default, serde::Deserialize, utoipa::IntoParams, utoipa::ToSchema)]
        #[into_params(parameter_in = Query)]
        #[serde(deny_unknown_fields)]
        pub(crate) struct $name {
            pub port: Option<String>,
            pub location: Option<String>,
            pub stage: Option<String>,
            /// Text the error contains (case-insensitive).
            pub error: Option<String>,
            /// RFC 3339, or a duration ago (`2h`).
            pub since: Option<String>,
            pub until: Option<String>,
            /// A filter on the message's context (fault messages left out
            /// unless `include_faults`).
            #[serde(rename = "where")]
            #[param(min_length = 1)]
            #[schema(min_length = 1)]
            pub context: Option<String>,
            #[serde(default)]
            pub include_faults: bool,
            pub resumable: Option<bool>,
            $($(#[$fmeta])* pub $field: $ty,)*
        }

        impl $name {
            pub(crate) fn query(&self, now: sluice_msgbox::Millis) -> Result<sluice_msgbox::SuspendedQuery, $crate::Problem> {
                use sluice_ops::{parse, suspended};
                let time = |t: &Option<String>| $crate::routes::time_param(t, now);
                let context = self.context.as_deref().map(parse::parse_filter).transpose()?;
                Ok(sluice_msgbox::SuspendedQuery {
                    port: self.port.clone(),
                    location: self.location.clone(),
                    stage: self.stage.clone(),
                    error_contains: self.error.clone(),
                    since: time(&self.since)?,
                    until: time(&self.until)?,
                    context: match context {
                        Some(f) if !self.include_faults => Some(suspended::without_faults(f)),
                        f => f,
                    },
                    resumable: self.resumable,
                })
            }
        }
    };
}
pub(crate) use with_filters;

with_filters!(SuspendedListQuery {
    after: Option<i64>,
    #[param(minimum = 1, maximum = 1000)]
    limit: Option<usize>,
});

#[utoipa::path(get, path = "/api/v1/suspended", tag = "suspended", security(("token" = [])), params(SuspendedListQuery),
    responses((status = 200, description = "Suspended entries, in id order", body = Page<sluice_msgbox::SuspendedInfo, i64>), crate::openapi::Errors))]
pub(crate) async fn list_suspended(
    caller: Caller,
    State(state): State<ApiState>,
    q: Result<Query<SuspendedListQuery>, QueryRejection>,
) -> Answer {
    caller.require(Permission::Read)?;
    let Query(q) = q?;
    let limit = limit(q.limit)?;
    let query = q.query(state.clock.now_ms())?;
    let items = suspended::page(&*state.b, &query, q.after, limit).await?;
    page(items, limit, |e| e.id)
}

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub(crate) struct GroupsQuery {
    #[param(minimum = 1, maximum = 1000)]
    limit: Option<usize>,
}

/// The groups of `GET /api/v1/suspended/groups`.
#[derive(Serialize, utoipa::ToSchema)]
pub(crate) struct Groups {
    items: Vec<sluice_msgbox::SuspendedGroup>,
    /// When they were counted (RFC 3339): the API counts them with its
    /// samples (`sample_every`), as counting reads every entry.
    as_of: String,
}

/// The groups as of the last sample (counted now before the first).
pub(crate) async fn suspended_groups_now(
    state: &ApiState,
) -> Result<(sluice_msgbox::Millis, Vec<sluice_msgbox::SuspendedGroup>), OpsError> {
    match state.history.latest() {
        Some(latest) => Ok((latest.at, latest.groups)),
        None => Ok((
            state.clock.now_ms(),
            suspended::groups(&*state.b, crate::history::GROUPS_KEPT).await?,
        )),
    }
}

#[utoipa::path(get, path = "/api/v1/suspended/groups", tag = "suspended", security(("token" = [])), params(GroupsQuery),
    responses((status = 200, description = "Suspended entries counted by send port or receive location and error (its first 120 characters), the largest groups first (at most 100), as of the API's last sample", body = Groups), crate::openapi::Errors))]
pub(crate) async fn suspended_groups(
    caller: Caller,
    State(state): State<ApiState>,
    q: Result<Query<GroupsQuery>, QueryRejection>,
) -> Answer {
    caller.require(Permission::Read)?;
    let Query(q) = q?;
    let limit = limit(q.limit)?;
    let (at, mut items) = suspended_groups_now(&state).await?;
    items.truncate(limit);
    json(Groups {
        items,
        as_of: sluice_ops::ms_to_text(at),
    })
}

#[utoipa::path(get, path = "/api/v1/suspended/{id}", tag = "suspended", security(("token" = [])),
    params(("id" = i64, Path, description = "A suspended entry id", minimum = 1)),
    responses((status = 200, description = "The entry: where and why it failed, every attempt, its message's context and parts", body = suspended::SuspendedDetail), crate::openapi::Errors))]
pub(crate) async fn show_suspended(
    caller: Caller,
    State(state): State<ApiState>,
    id: Result<Path<String>, PathRejection>,
) -> Answer {
    caller.require(Permission::Read)?;
    let Path(id) = id?;
    json(suspended::show(&*state.b, id_param(&id)?).await?)
}

#[utoipa::path(post, path = "/api/v1/suspended/{id}/resume", tag = "suspended", security(("token" = [])),
    params(("id" = i64, Path, description = "A suspended entry id", minimum = 1)),
    responses((status = 200, description = "Resumed: queued again", body = crate::openapi::Acted), crate::openapi::Errors))]
pub(crate) async fn resume(
    caller: Caller,
    State(state): State<ApiState>,
    id: Result<Path<String>, PathRejection>,
) -> Answer {
    caller.require(Permission::Operate)?;
    let id = id_param(&id?.0)?;
    let b = state.b.clone();
    let routed = audited(
        &state,
        &caller.actor,
        "suspended.resume",
        (format!("suspended {id}"), None),
        async move { suspended::resume(&*b, id).await },
    )
    .await?;
    json(Acted {
        id,
        outcome: "resumed",
        routed: Some(routed),
        message_id: None,
    })
}

#[utoipa::path(post, path = "/api/v1/suspended/{id}/terminate", tag = "suspended", security(("token" = [])),
    params(("id" = i64, Path, description = "A suspended entry id", minimum = 1)),
    responses((status = 200, description = "Terminated", body = crate::openapi::Acted), crate::openapi::Errors))]
pub(crate) async fn terminate(
    caller: Caller,
    State(state): State<ApiState>,
    id: Result<Path<String>, PathRejection>,
) -> Answer {
    caller.require(Permission::Operate)?;
    let id = id_param(&id?.0)?;
    let b = state.b.clone();
    audited(
        &state,
        &caller.actor,
        "suspended.terminate",
        (format!("suspended {id}"), None),
        async move { suspended::terminate(&*b, id).await },
    )
    .await?;
    json(Acted {
        id,
        outcome: "terminated",
        routed: None,
        message_id: None,
    })
}

/// A resubmission's edit: properties set (`KEY=TYPE:VALUE`, as the CLI's
/// `--set`) and removed (`KEY`).
#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct EditRequest {
    #[serde(default)]
    pub set: Vec<String>,
    #[serde(default)]
    pub remove: Vec<String>,
}

impl EditRequest {
    pub(crate) fn edit(&self) -> Result<Edit, Problem> {
        let set = self
            .set
            .iter()
            .map(|s| parse::parse_property(s))
            .collect::<Result<Vec<_>, _>>()?;
        let remove = self
            .remove
            .iter()
            .map(|k| parse::parse_key(k))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Edit::new(set, remove)?)
    }
}

#[utoipa::path(post, path = "/api/v1/suspended/{id}/resubmit", tag = "suspended", security(("token" = [])),
    params(("id" = i64, Path, description = "A suspended entry id", minimum = 1),
        ("set" = Option<Vec<String>>, Query, description = "With a new body: a property to set, KEY=TYPE:VALUE"),
        ("remove" = Option<Vec<String>>, Query, description = "With a new body: a property to remove")),
    request_body(content((EditRequest = "application/json"), (Vec<u8> = "application/octet-stream"))),
    responses((status = 200, description = "Resubmitted as a new message", body = crate::openapi::Acted), crate::openapi::Errors))]
/// `POST /api/v1/suspended/{id}/resubmit`: with a JSON body, an edit
/// (`{"set": [...], "remove": [...]}`, or nothing: the message as it
/// was); with `Content-Type: application/octet-stream`, a new body
/// (streamed into the box) and the edit in the query (`?set=..&remove=..`,
/// each repeatable).
pub(crate) async fn resubmit(
    Operating(caller): Operating,
    State(state): State<ApiState>,
    id: Result<Path<String>, PathRejection>,
    raw: Query<Vec<(String, String)>>,
    headers: HeaderMap,
    axum::Extension(fault): axum::Extension<crate::body::BodyFault>,
    body: Body,
) -> Answer {
    let id = id_param(&id?.0)?;
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    let new_body = content_type == "application/octet-stream";
    let (json_body, upload) = if new_body {
        (None, Some(body))
    } else {
        (Some(body), None)
    };
    let request = if let Some(body) = json_body {
        if !raw.0.is_empty() {
            return Err(Problem::invalid(
                "with a JSON body, the edit goes in the body, not the query",
            ));
        }
        let bytes = axum::body::to_bytes(body, MAX_JSON).await.map_err(|e| {
            fault.problem().unwrap_or_else(|| {
                if e.to_string().contains("length limit") {
                    Problem::new(ErrorCode::TooLarge, format!("the edit is over {MAX_JSON} bytes"))
                } else {
                    Problem::invalid(format!("reading the edit failed: {e}"))
                }
            })
        })?;
        if bytes.is_empty() {
            EditRequest::default()
        } else {
            let parsed: Result<Json<EditRequest>, JsonRejection> = Json::from_bytes(&bytes);
            let Json(r) = parsed?;
            r
        }
    } else {
        let mut r = EditRequest::default();
        for (k, v) in raw.0 {
            match k.as_str() {
                "set" => r.set.push(v),
                "remove" => r.remove.push(v),
                other => {
                    return Err(Problem::invalid(format!(
                        "unknown query parameter `{}`",
                        other.escape_default()
                    )));
                }
            }
        }
        r
    };
    let edit = request.edit()?;
    let detail = Some(if new_body {
        format!("{edit}; new body")
    } else {
        edit.to_string()
    });
    // The body streams in the task that records the change, so a client
    // that goes away mid-upload leaves the entry as it was (the partial
    // body is discarded) and the failure recorded.
    let mut reader = upload.map(|b| crate::body::reader(b, &fault, state.max_upload, state.stopping.clone()));
    let client = fault.clone();
    let b = state.b.clone();
    let target = (format!("suspended {id}"), detail);
    let done = audited(&state, &caller.actor, "suspended.resubmit", target, async move {
        let reader = reader
            .as_mut()
            .map(|r| r as &mut (dyn tokio::io::AsyncRead + Send + Unpin));
        // A body the client cut short, trickled or made too large is its
        // fault (`invalid_argument`, `too_large`), not the node's: so the
        // answer says, and so the audit log records.
        suspended::resubmit(&*b, id, &edit, reader)
            .await
            .map_err(|e| client.error().unwrap_or(e))
    })
    .await?;
    json(Acted {
        id,
        outcome: "resubmitted",
        routed: Some(done.routed),
        message_id: Some(done.message_id.to_string()),
    })
}

// ---- audit, users, tokens --------------------------------------------------

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub(crate) struct AuditQuery {
    before: Option<i64>,
    #[param(minimum = 1, maximum = 1000)]
    limit: Option<usize>,
}

#[utoipa::path(get, path = "/api/v1/audit", tag = "audit", security(("token" = [])), params(AuditQuery),
    responses((status = 200, description = "Recorded actions, newest first", body = Page<sluice_ops::audit::AuditView, i64>), crate::openapi::Errors))]
pub(crate) async fn list_audit(
    caller: Caller,
    State(state): State<ApiState>,
    q: Result<Query<AuditQuery>, QueryRejection>,
) -> Answer {
    caller.require(Permission::Read)?;
    let Query(q) = q?;
    let limit = limit(q.limit)?;
    let items = audit::list(&*state.b, q.before, limit).await?;
    page(items, limit, |e| e.id)
}

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub(crate) struct UsersQuery {
    after: Option<String>,
    #[param(minimum = 1, maximum = 1000)]
    limit: Option<usize>,
}

#[utoipa::path(get, path = "/api/v1/users", tag = "users", security(("token" = [])), params(UsersQuery),
    responses((status = 200, description = "Users in name order (admin)", body = Page<access::UserInfo, String>), crate::openapi::Errors))]
pub(crate) async fn list_users(
    caller: Caller,
    State(state): State<ApiState>,
    q: Result<Query<UsersQuery>, QueryRejection>,
) -> Answer {
    caller.require(Permission::ManageUsers)?;
    let Query(q) = q?;
    let limit = limit(q.limit)?;
    let items = access::users(&*state.b, q.after.as_deref(), limit).await?;
    page(items, limit, |u| u.name.clone())
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct NewUser {
    /// 1 to 64 letters, digits, `.`, `_`, `-` or `@`, starting with a letter or digit.
    #[schema(pattern = "^[A-Za-z0-9][A-Za-z0-9._@-]{0,63}$")]
    name: String,
    role: Role,
    /// 8 to 1024 bytes; kept as an Argon2 hash, never shown.
    #[schema(min_length = 8, max_length = 1024)]
    password: String,
}

#[utoipa::path(post, path = "/api/v1/users", tag = "users", security(("token" = [])), request_body = NewUser,
    responses((status = 201, description = "Added (admin)", body = access::UserInfo), crate::openapi::Errors))]
pub(crate) async fn add_user(
    Administering(caller): Administering,
    State(state): State<ApiState>,
    body: Result<Json<NewUser>, JsonRejection>,
) -> Answer {
    let Json(u) = body?;
    let role = u.role;
    let (b, now) = (state.b.clone(), state.clock.now_ms());
    let target = format!("user {}", u.name);
    let added = audited(&state, &caller.actor, "users.add", (target, None), async move {
        access::add_user(&*b, &u.name, role, &u.password, now).await
    })
    .await?;
    Ok((StatusCode::CREATED, Json(added)).into_response())
}

#[utoipa::path(delete, path = "/api/v1/users/{name}", tag = "users", security(("token" = [])),
    params(("name" = String, Path, description = "A user name")),
    responses((status = 200, description = "Removed, with their tokens (admin)", body = crate::openapi::Removed), crate::openapi::Errors))]
pub(crate) async fn remove_user(
    caller: Caller,
    State(state): State<ApiState>,
    name: Result<Path<String>, PathRejection>,
) -> Answer {
    caller.require(Permission::ManageUsers)?;
    let Path(name) = name?;
    if name == caller.principal.user {
        return Err(Problem::new(
            ErrorCode::Conflict,
            format!("user `{name}` cannot remove themselves; another admin can"),
        ));
    }
    let b = state.b.clone();
    let target = format!("user {name}");
    let n = name.clone();
    let tokens = audited(&state, &caller.actor, "users.remove", (target, None), async move {
        access::remove_user(&*b, &n).await
    })
    .await?;
    json(Removed {
        name,
        removed: true,
        tokens_revoked: tokens,
    })
}

#[utoipa::path(post, path = "/api/v1/users/{name}/tokens", tag = "users", security(("token" = [])),
    params(("name" = String, Path, description = "A user name")),
    responses((status = 201, description = "The token, shown this once (admin)", body = access::CreatedToken), crate::openapi::Errors))]
pub(crate) async fn create_token(
    caller: Caller,
    State(state): State<ApiState>,
    name: Result<Path<String>, PathRejection>,
) -> Answer {
    caller.require(Permission::ManageUsers)?;
    let Path(name) = name?;
    let (b, now) = (state.b.clone(), state.clock.now_ms());
    let target = format!("user {name}");
    let made = audited(&state, &caller.actor, "tokens.create", (target, None), async move {
        access::create_token(&*b, &name, now).await
    })
    .await?;
    Ok((StatusCode::CREATED, Json(made)).into_response())
}

#[utoipa::path(delete, path = "/api/v1/tokens/{id}", tag = "users", security(("token" = [])),
    params(("id" = String, Path, description = "A token id")),
    responses((status = 200, description = "Revoked (admin)", body = crate::openapi::Revoked), crate::openapi::Errors))]
pub(crate) async fn revoke_token(
    caller: Caller,
    State(state): State<ApiState>,
    id: Result<Path<String>, PathRejection>,
) -> Answer {
    caller.require(Permission::ManageUsers)?;
    let Path(id) = id?;
    let b = state.b.clone();
    let i = id.clone();
    audited(
        &state,
        &caller.actor,
        "tokens.revoke",
        (format!("token {id}"), None),
        async move { access::revoke_token(&*b, &i).await },
    )
    .await?;
    json(Revoked { id, revoked: true })
}
