//! The portal: server-rendered pages (maud) over the operations library,
//! served by the API's listener at `/`, for a browser session. Pages only
//! read; every change a page offers goes through the REST API from
//! `portal.js` (with the session's CSRF token), so it is checked and
//! audited exactly as an API call is. A button a role may not use is not
//! drawn, and the API refuses it anyway.
//!
//! Lists are pages with a cursor (never everything); a body preview is at
//! most [`PREVIEW`] bytes.

use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use maud::{DOCTYPE, Markup, html};
use serde::Deserialize;
use sluice_msgbox::SuspendedInfo;
use sluice_ops::access::{self, Permission, SessionCaller};
use sluice_ops::body::{self, BodyOf};
use sluice_ops::{OpsError, messages, ms_to_text, suspended};

use crate::auth::{SESSION_COOKIE, cookie};
use crate::{ApiState, DEFAULT_LIMIT};

/// Most bytes of a body a page shows.
pub const PREVIEW: usize = 4096;

const SCRIPT: &str = include_str!("portal/portal.js");
const STYLE: &str = include_str!("portal/portal.css");

/// The signed-in browser; a page without one is answered with the way
/// to the login form.
pub(crate) struct Viewer(SessionCaller);

impl axum::extract::FromRequestParts<ApiState> for Viewer {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut axum::http::request::Parts, state: &ApiState) -> Result<Self, Response> {
        let to_login = || {
            let mut r = StatusCode::SEE_OTHER.into_response();
            r.headers_mut()
                .insert(header::LOCATION, HeaderValue::from_static("/login"));
            r
        };
        let id = cookie(&parts.headers, SESSION_COOKIE).ok_or_else(to_login)?;
        match access::resume_session(&*state.b, id, state.clock.now_ms()).await {
            Ok(s) => Ok(Viewer(s)),
            Err(e) if e.error_code() == sluice_ops::ErrorCode::Unauthenticated => Err(to_login()),
            Err(e) => Err(error_page(&e)),
        }
    }
}

/// An HTML page of ours: no script or style from elsewhere, never framed.
pub(crate) fn html_response(status: StatusCode, markup: Markup) -> Response {
    let mut r = (status, markup.into_string()).into_response();
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static("default-src 'self'; frame-ancestors 'none'; form-action 'self'"),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    r
}

fn error_page(e: &OpsError) -> Response {
    let status = StatusCode::from_u16(e.http_status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    html_response(
        status,
        html! {
            (DOCTYPE)
            html lang="en" { head { meta charset="utf-8"; title { "Error · Sluice" } link rel="stylesheet" href="/static/portal.css"; }
            body { main { h1 { "Something is wrong" } p.error { code { (e.code()) } ": " (e.to_string()) } p { a href="/" { "Back to the dashboard" } } } } }
        },
    )
}

/// A page in the portal's frame: navigation, who is signed in, log out.
fn frame(v: &Viewer, title: &str, active: &str, content: Markup) -> Response {
    let p = &v.0.principal;
    let nav = [
        ("/", "Dashboard"),
        ("/messages", "Messages"),
        ("/suspended", "Suspended"),
        ("/ports", "Ports"),
        ("/hosts", "Hosts"),
        ("/audit", "Audit log"),
    ];
    html_response(
        StatusCode::OK,
        html! {
            (DOCTYPE)
            html lang="en" {
                head {
                    meta charset="utf-8";
                    meta name="viewport" content="width=device-width, initial-scale=1";
                    meta name="csrf" content=(v.0.csrf);
                    title { (title) " · Sluice" }
                    link rel="stylesheet" href="/static/portal.css";
                    script src="/static/portal.js" defer {}
                }
                body {
                    header {
                        strong.brand { "Sluice" }
                        nav {
                            @for (href, name) in nav {
                                a href=(href) class=[(active == name).then_some("active")] { (name) }
                            }
                            @if p.may(Permission::ManageUsers) {
                                a href="/users" class=[(active == "Users").then_some("active")] { "Users" }
                            }
                        }
                        span.who { span #user { (p.user) } " (" span #role { (p.role) } ")" }
                        form method="post" action="/logout" {
                            input type="hidden" name="csrf" value=(v.0.csrf);
                            button #logout type="submit" { "Log out" }
                        }
                    }
                    main {
                        h1 { (title) }
                        div #result role="status" {}
                        (content)
                    }
                }
            }
        },
    )
}

/// `GET /static/portal.js` and `/static/portal.css`.
pub(crate) async fn script() -> Response {
    let mut r = SCRIPT.into_response();
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/javascript; charset=utf-8"),
    );
    r
}

pub(crate) async fn style() -> Response {
    let mut r = STYLE.into_response();
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/css; charset=utf-8"),
    );
    r
}

// ---- dashboard -------------------------------------------------------------

pub(crate) async fn dashboard(State(state): State<ApiState>, v: Viewer) -> Response {
    // The last sample's counts: counting a big box is a scan, done in the
    // background every `sample_every`, not for each page.
    let (as_of, status) = match state.history.latest() {
        Some(latest) => (latest.at, latest.status),
        None => match sluice_ops::status::status(&*state.b, &state.data_dir, state.clock.now_ms()).await {
            Ok(s) => (state.clock.now_ms(), s),
            Err(e) => return error_page(&e),
        },
    };
    let units = match &state.node {
        Some(n) => n
            .units(&status.counts)
            .await
            .map(|u| crate::units::with_rates(&state, u))
            .unwrap_or_default(),
        None => Vec::new(),
    };
    let c = &status.counts;
    frame(
        &v,
        "Dashboard",
        "Dashboard",
        html! {
            section.cards {
                div.card { span.figure #spool { (c.spool) } span.label { "messages in the box" } }
                div.card { a href="/suspended" { span.figure #suspended { (c.suspended) } } span.label { "suspended" } }
                div.card { span.figure { (c.queued.values().sum::<u64>()) } span.label { "queued for delivery" } }
                div.card { span.figure { (bytes(c.content_bytes)) } span.label { "of content" } }
            }
            p.note #as-of { "As of " (ms_to_text(as_of)) ", counted every " (state.history.every.as_secs()) " s." }
            h2 { "The last hour" }
            @let samples = state.history.samples();
            @if samples.len() < 2 {
                p.note { "The figures of the last hour appear here once the API has sampled twice (every " (state.history.every.as_secs()) " s)." }
            } @else {
                section.charts {
                    (chart("published-chart", "published per second", &samples, |s| s.published_per_second))
                    (chart("delivered-chart", "delivered per second", &samples, |s| s.delivered_per_second))
                    (chart("queued-chart", "queued", &samples, |s| Some(s.queued as f64)))
                    (chart("suspended-chart", "suspended", &samples, |s| Some(s.suspended as f64)))
                    (chart("throttled-chart", "hosts throttled", &samples, |s| Some(s.throttled.len() as f64)))
                }
            }
            @if let Some(node) = &status.node {
                h2 { "Hosts" }
                table {
                    thead { tr { th { "host" } th { "state" } th.num { "in flight" } th.num { "bytes in flight" } th.num { "waiting" } } }
                    tbody {
                        @for (name, h) in &node.hosts {
                            tr {
                                td { (name) }
                                td { @if h.throttled { span.bad { "throttled" } " " (h.now.detail.clone().unwrap_or_default()) } @else { span.good { "open" } } }
                                td.num { (h.now.in_flight) } td.num { (bytes(h.now.in_flight_bytes)) } td.num { (h.now.waiting) }
                            }
                        }
                    }
                }
                p.note { "Node process " (node.pid) ", resident memory " (bytes(node.rss)) "." }
            } @else {
                p.note { "No node report: the node is not running, or not reporting." }
            }
            h2 { "Send ports and receive locations" }
            (units_table(&v, &units))
        },
    )
}

/// One figure over the kept samples, drawn as an inline SVG line (no
/// script, a few hundred bytes): its latest value and its highest.
fn chart(
    id: &str,
    label: &str,
    samples: &[crate::history::Sample],
    figure: impl Fn(&crate::history::Sample) -> Option<f64>,
) -> Markup {
    let values: Vec<(i64, f64)> = samples.iter().filter_map(|s| figure(s).map(|v| (s.at, v))).collect();
    line_chart(id, label, &values, |v| v.to_string())
}

/// Values over time as an inline SVG line, with the latest and the
/// highest written out by `show`.
fn line_chart(id: &str, label: &str, values: &[(i64, f64)], show: impl Fn(f64) -> String) -> Markup {
    const W: f64 = 240.0;
    const H: f64 = 48.0;
    let (first, last) = match (values.first(), values.last()) {
        (Some(f), Some(l)) if l.0 > f.0 => (f.0, l.0),
        _ => return html! {},
    };
    let top = values.iter().map(|(_, v)| *v).fold(0.0, f64::max);
    let span = (last - first) as f64;
    let points: Vec<String> = values
        .iter()
        .map(|(at, v)| {
            let x = (*at - first) as f64 / span * W;
            let y = if top > 0.0 { H - v / top * H } else { H };
            format!("{x:.0},{y:.0}")
        })
        .collect();
    let now = values.last().map(|(_, v)| *v).unwrap_or(0.0);
    html! {
        figure.chart #(id) {
            svg viewBox=(format!("0 -2 {W} {}", H + 4.0)) width=(W) height=(H + 4.0) role="img" aria-label=(label) {
                polyline points=(points.join(" ")) fill="none" stroke="currentColor" stroke-width="1.5" {}
            }
            figcaption { span.figure-now { (show(now)) } " " (label) " (highest " (show(top)) ")" }
        }
    }
}

/// A name as one path segment (`.` and `..` included, which a browser
/// would otherwise fold away).
fn segment(name: &str) -> String {
    percent_encoding::utf8_percent_encode(name, percent_encoding::NON_ALPHANUMERIC).to_string()
}

fn bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = n as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{n} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

fn units_table(v: &Viewer, units: &[crate::units::UnitView]) -> Markup {
    use crate::units::UnitState;
    use sluice_msgbox::UnitKind;
    let operate = v.0.principal.may(Permission::Operate);
    html! {
        table #units {
            thead { tr { th { "name" } th { "kind" } th { "adapter" } th { "state" } th.num { "queued" } th.num { "messages" } th.num { "per second" } @if operate { th {} } } }
            tbody {
                @for u in units {
                    tr data-unit=(u.name) {
                        td { (u.name) }
                        td { @match u.kind { UnitKind::SendPort => "send port", UnitKind::ReceiveLocation => "receive location" } }
                        td { (u.adapter) }
                        td { @match u.state { UnitState::Running => span.good { "running" }, UnitState::Stopped => span.bad { "stopped" }, UnitState::Disabled => span.muted { "disabled in the file" } } }
                        td.num { (u.queued.map(|q| q.to_string()).unwrap_or_default()) }
                        td.num { (u.messages) }
                        td.num { (u.per_second.map(|r| r.to_string()).unwrap_or_default()) }
                        @if operate {
                            td {
                                @let (path, stop, start) = match u.kind {
                                    UnitKind::SendPort => ("send-ports", "stop", "start"),
                                    UnitKind::ReceiveLocation => ("receive-locations", "disable", "enable"),
                                };
                                @match u.state {
                                    UnitState::Running => button data-action="post" data-url=(format!("/api/v1/{path}/{}/{stop}", segment(&u.name))) { (stop) },
                                    UnitState::Stopped => button data-action="post" data-url=(format!("/api/v1/{path}/{}/{start}", segment(&u.name))) { (start) },
                                    UnitState::Disabled => {},
                                }
                            }
                        }
                    }
                }
            }
        }
    }
}

pub(crate) async fn ports(State(state): State<ApiState>, v: Viewer) -> Response {
    let units = match crate::units::all(&state).await {
        Ok(u) => u,
        Err(e) => return error_page(&e),
    };
    frame(&v, "Ports", "Ports", units_table(&v, &units))
}

// ---- hosts -----------------------------------------------------------------

pub(crate) async fn hosts(State(state): State<ApiState>, v: Viewer) -> Response {
    let Some(node) = &state.node else {
        return error_page(&OpsError::Unavailable("no node runs behind this API".into()));
    };
    let hosts = match node.hosts().await {
        Ok(h) => h,
        Err(e) => return error_page(&e),
    };
    let operate = v.0.principal.may(Permission::Operate);
    frame(
        &v,
        "Hosts",
        "Hosts",
        html! {
            table #hosts {
                thead { tr { th { "host" } th { "runs" } th { "state" } th.num { "pid" } th.num { "RSS" } th.num { "up" }
                    th.num { "handled" } th.num { "recycled" } th.num { "restarted" } th { "last instance" } @if operate { th {} } } }
                tbody {
                    @for h in &hosts {
                        @let isolated = h.host.isolation == "process";
                        @for i in &h.host.instances {
                            tr data-host=(h.host.name) {
                                td { (h.host.name) }
                                td { @if isolated { "own process" } @else { "in the node" } }
                                td { @if h.host.crash_loop { span.bad { "crash loop" } " " } @match i.state.as_str() {
                                    "running" => span.good { "running" },
                                    "crash-loop" | "failed" => span.bad { (i.state) },
                                    other => span.muted { (other) },
                                } }
                                td.num { @if i.pid > 0 { (i.pid) } }
                                td.num { (bytes(i.rss_bytes)) @if let Some(l) = h.host.memory_limit { " / " (bytes(l)) } }
                                td.num { (i.uptime_s) " s" }
                                td.num { (i.handled) }
                                td.num { (i.recycles) @if i.memory_recycles > 0 { " (" (i.memory_recycles) " over memory)" } }
                                td.num { (i.restarts) }
                                td.reason { (h.host.last_exit.as_deref().unwrap_or("")) }
                                @if operate { td { @if isolated {
                                    button data-action="post" data-url=(format!("/api/v1/hosts/{}/restart", segment(&h.host.name))) { "restart" }
                                } } }
                            }
                        }
                    }
                }
            }
            @for h in hosts.iter().filter(|h| h.rss.len() > 1) {
                @let values: Vec<(i64, f64)> = h.rss.iter().map(|s| (s.at, s.rss_bytes as f64)).collect();
                (line_chart(&format!("rss-{}", segment(&h.host.name)), &format!("RSS of host {}", h.host.name), &values, |b| bytes(b as u64)))
            }
        },
    )
}

// ---- suspended -------------------------------------------------------------

/// Filters' values in a form, kept empty when not set.
fn value(v: &Option<String>) -> &str {
    v.as_deref().unwrap_or("")
}

pub(crate) async fn suspended_list(
    State(state): State<ApiState>,
    v: Viewer,
    q: Result<Query<crate::routes::SuspendedListQuery>, QueryRejection>,
) -> Response {
    let Ok(Query(mut q)) = q else {
        return error_page(&OpsError::InvalidArgument("the filters do not parse".into()));
    };
    blank_is_none([
        &mut q.port,
        &mut q.location,
        &mut q.stage,
        &mut q.error,
        &mut q.since,
        &mut q.until,
        &mut q.context,
    ]);
    let query = match q.query(state.clock.now_ms()) {
        Ok(query) => query,
        Err(p) => return error_page(&OpsError::InvalidArgument(p.message)),
    };
    let limit = q.limit.unwrap_or(DEFAULT_LIMIT).clamp(1, crate::MAX_LIMIT);
    let entries = match suspended::page(&*state.b, &query, q.after, limit).await {
        Ok(e) => e,
        Err(e) => return error_page(&e),
    };
    let next = (entries.len() == limit).then(|| entries.last().map(|e| e.id)).flatten();
    // The last sample's groups (counting them reads every entry).
    let groups = match crate::routes::suspended_groups_now(&state).await {
        Ok((_, mut g)) => {
            g.truncate(GROUPS_SHOWN);
            g
        }
        Err(e) => return error_page(&e),
    };
    let operate = v.0.principal.may(Permission::Operate);
    let next_link = query_string([
        ("port", &q.port),
        ("location", &q.location),
        ("stage", &q.stage),
        ("error", &q.error),
        ("since", &q.since),
        ("until", &q.until),
        ("where", &q.context),
    ]);
    frame(
        &v,
        "Suspended messages",
        "Suspended",
        html! {
            @if !groups.is_empty() {
                details #groups open {
                    summary { "By port and error" }
                    table { thead { tr { th { "port or location" } th { "error" } th.num { "entries" } th { "first" } th { "last" } } }
                        tbody { @for g in &groups { tr {
                            td { (g.port.as_deref().map(|p| format!("send port {p}")).or_else(|| g.location.as_deref().map(|l| format!("receive location {l}"))).unwrap_or_default()) }
                            td.reason { a href=(format!("/suspended?{}", group_link(g))) { (g.error) } }
                            td.num { (g.count) } td { (ms_to_text(g.first)) } td { (ms_to_text(g.last)) }
                        } } } }
                }
            }
            form.filters method="get" action="/suspended" {
                label { "Send port " input name="port" value=(value(&q.port)); }
                label { "Location " input name="location" value=(value(&q.location)); }
                label { "Error contains " input name="error" value=(value(&q.error)); }
                label { "Since " input name="since" placeholder="2h or RFC 3339" value=(value(&q.since)); }
                label { "Context filter " input name="where" placeholder="order.priority > 3" value=(value(&q.context)); }
                button #filter type="submit" { "Filter" }
            }
            @if entries.is_empty() {
                p #empty { "No suspended message matches." }
            } @else {
                @if operate {
                    div.actions {
                        button data-action="bulk" data-op="resume" data-dry="true" { "Preview resume" }
                        button data-action="bulk" data-op="resume" { "Resume selected" }
                        button data-action="bulk" data-op="terminate" data-dry="true" { "Preview terminate" }
                        button.danger data-action="bulk" data-op="terminate" { "Terminate selected" }
                    }
                }
                table #suspended-list {
                    thead { tr {
                        @if operate { th { input type="checkbox" data-select-all; } }
                        th { "#" } th { "suspended at" } th { "port or location" } th { "stage" } th.num { "attempts" } th { "resumable" } th { "error" }
                    } }
                    tbody {
                        @for e in &entries { (suspended_row(e, operate)) }
                    }
                }
                @if let Some(next) = next {
                    p { a #next href=(format!("/suspended?{next_link}after={next}")) { "Next page" } }
                }
            }
        },
    )
}

/// Groups of suspended entries the suspended page shows.
const GROUPS_SHOWN: usize = 20;

/// The suspended list's filters that select one group's entries.
fn group_link(g: &sluice_msgbox::SuspendedGroup) -> String {
    query_string([
        ("port", &g.port),
        ("location", &g.location),
        ("error", &Some(g.error.clone())),
    ])
}

/// A field a form left empty is no condition.
fn blank_is_none<const N: usize>(fields: [&mut Option<String>; N]) {
    for field in fields {
        if field.as_deref().is_some_and(|v| v.trim().is_empty()) {
            *field = None;
        }
    }
}

/// `k=v&` for each field set, percent-encoded: a link that keeps a form's
/// conditions.
fn query_string<const N: usize>(fields: [(&str, &Option<String>); N]) -> String {
    let mut link = String::new();
    for (k, val) in fields {
        if let Some(val) = val {
            let val = percent_encoding::utf8_percent_encode(val, percent_encoding::NON_ALPHANUMERIC);
            link.push_str(&format!("{k}={val}&"));
        }
    }
    link
}

fn suspended_row(e: &SuspendedInfo, operate: bool) -> Markup {
    html! {
        tr data-id=(e.id) {
            @if operate { td { input type="checkbox" name="id" value=(e.id); } }
            td { a href=(format!("/suspended/{}", e.id)) { (e.id) } }
            td { (ms_to_text(e.suspended_at)) }
            td { (e.subscriber.clone().or_else(|| e.location.clone()).unwrap_or_default()) }
            td { (e.stage) "/" (e.component) }
            td.num { (e.attempts) }
            td { @if e.resumable { "yes" } @else { "no" } }
            td.reason { (e.reason) }
        }
    }
}

/// The first [`PREVIEW`] bytes of a part, as text (lossy), and whether
/// there is more.
async fn preview(state: &ApiState, of: BodyOf) -> Result<(String, bool), OpsError> {
    let mut part = body::open(state.b.clone(), of, Some(0)).await?;
    let mut got = Vec::new();
    while got.len() < PREVIEW {
        match part.next().await? {
            Some(piece) => got.extend_from_slice(&piece[..piece.len().min(PREVIEW - got.len())]),
            None => break,
        }
    }
    let more = part.size > got.len() as u64;
    Ok((String::from_utf8_lossy(&got).into_owned(), more))
}

fn context_table(context: &sluice_model::Context) -> Markup {
    let rows = context.to_display_json();
    html! {
        table #context {
            thead { tr { th { "namespace" } th { "name" } th { "type" } th { "value" } th { "promoted" } } }
            tbody {
                @for p in rows.as_array().into_iter().flatten() {
                    tr {
                        td { (p["namespace"].as_str().unwrap_or_default()) }
                        td { (p["name"].as_str().unwrap_or_default()) }
                        td { (p["type"].as_str().unwrap_or_default()) }
                        td.value { (match &p["value"] { serde_json::Value::String(s) => s.clone(), other => other.to_string() }) }
                        td { @if p["promoted"].as_bool().unwrap_or(false) { "yes" } }
                    }
                }
            }
        }
    }
}

pub(crate) async fn suspended_detail(
    State(state): State<ApiState>,
    v: Viewer,
    id: Result<Path<String>, PathRejection>,
) -> Response {
    let Some(id) = id.ok().and_then(|Path(id)| id.parse::<i64>().ok()).filter(|id| *id > 0) else {
        return error_page(&OpsError::InvalidArgument("that is not a suspended entry id".into()));
    };
    let d = match suspended::show(&*state.b, id).await {
        Ok(d) => d,
        Err(e) => return error_page(&e),
    };
    let (operate, bodies) = (
        v.0.principal.may(Permission::Operate),
        v.0.principal.may(Permission::ReadBodies),
    );
    let shown = if bodies && !d.parts.is_empty() {
        Some(preview(&state, BodyOf::Suspended(id)).await)
    } else {
        None
    };
    let e = &d.entry;
    frame(
        &v,
        &format!("Suspended message #{id}"),
        "Suspended",
        html! {
            dl.facts {
                dt { "message" } dd #message-id { a href=(format!("/messages/{}", e.message_id)) { (e.message_id.to_string()) } }
                dt { "suspended at" } dd { (ms_to_text(e.suspended_at)) }
                dt { "where" } dd { (e.subscriber.clone().map(|s| format!("send port {s}")).or_else(|| e.location.clone().map(|l| format!("receive location {l}"))).unwrap_or_default()) " — " (e.stage) "/" (e.component) }
                dt { "error" } dd #reason { (e.reason) }
                dt { "resumable" } dd { @if e.resumable { "yes" } @else { "no: resubmit it (edited) or terminate it" } }
            }
            @if operate {
                div.actions {
                    @if e.resumable { button #resume data-action="post" data-url=(format!("/api/v1/suspended/{id}/resume")) { "Resume" } }
                    button.danger #terminate data-action="post" data-url=(format!("/api/v1/suspended/{id}/terminate")) data-then="/suspended" { "Terminate" }
                }
                form #resubmit data-url=(format!("/api/v1/suspended/{id}/resubmit")) {
                    h2 { "Resubmit" }
                    label { "Set properties (one per line, KEY=TYPE:VALUE)" textarea name="set" rows="2" placeholder="order.priority=int:5" {} }
                    label { "Remove properties (one key per line)" textarea name="remove" rows="1" {} }
                    label { "New body (optional: the message's parts are kept without one)" input #new-body type="file" name="body"; }
                    button #resubmit-button type="submit" { "Resubmit" }
                }
            }
            @if !e.history.is_empty() {
                h2 { "Attempts" }
                table { thead { tr { th.num { "#" } th { "at" } th { "transport" } th { "error" } } }
                    tbody { @for a in &e.history { tr { td.num { (a.attempt) } td { (ms_to_text(a.at)) } td { (a.transport.clone().unwrap_or_default()) } td { (a.error) } } } } }
            }
            h2 { "Context" }
            (context_table(&d.context))
            h2 { "Parts" }
            table { thead { tr { th.num { "#" } th { "name" } th.num { "size" } @if bodies { th {} } } }
                tbody { @for (n, p) in d.parts.iter().enumerate() { tr {
                    td.num { (n) } td { (p.name) } td.num { (p.size) }
                    @if bodies { td { a href=(format!("/api/v1/suspended/{id}/parts/{n}")) download { "download" } } }
                } } } }
            @match shown {
                Some(Ok((text, more))) => { h2 { "Body" } pre #body-preview { (text) } @if more { p.note { "The first " (PREVIEW) " bytes; download it for the rest." } } },
                Some(Err(err)) => { p.error { "The body cannot be read: " (err.to_string()) } },
                None => @if !bodies { p.note #no-bodies { "Your role does not show message bodies." } },
            }
        },
    )
}

// ---- messages, audit, users --------------------------------------------------

pub(crate) async fn messages_list(
    State(state): State<ApiState>,
    v: Viewer,
    q: Result<Query<crate::routes::MessagesQuery>, QueryRejection>,
) -> Response {
    let Ok(Query(mut q)) = q else {
        return error_page(&OpsError::InvalidArgument("the search does not parse".into()));
    };
    blank_is_none([&mut q.context, &mut q.since, &mut q.until, &mut q.port, &mut q.after]);
    let limit = q.limit.unwrap_or(DEFAULT_LIMIT).clamp(1, crate::MAX_LIMIT);
    let found = match q.search(state.clock.now_ms()) {
        Ok((search, after)) => messages::list(&*state.b, &search, after, limit).await,
        Err(p) => Err(OpsError::InvalidArgument(p.message)),
    };
    let found = match found {
        Ok(f) => f,
        Err(e) => return error_page(&e),
    };
    let next_link = query_string([
        ("where", &q.context),
        ("since", &q.since),
        ("until", &q.until),
        ("port", &q.port),
    ]);
    frame(
        &v,
        "Messages",
        "Messages",
        html! {
            form.filters method="get" action="/messages" {
                label { "Context filter " input name="where" placeholder="order.id == \"A1\"" value=(value(&q.context)); }
                label { "Since " input name="since" placeholder="2h or RFC 3339" value=(value(&q.since)); }
                label { "Until " input name="until" value=(value(&q.until)); }
                label { "Send port " input name="port" value=(value(&q.port)); }
                button #search type="submit" { "Search" }
            }
            @if found.items.is_empty() {
                p #empty { @if found.next.is_some() { "None in this stretch of the box; search on for more." } @else { "No message in the box matches." } }
            } @else {
                table #messages { thead { tr { th { "id" } th { "created" } th.num { "references" } th.num { "parts" } th.num { "bytes" } } }
                    tbody { @for m in &found.items { tr {
                        td { a href=(format!("/messages/{}", m.id)) { (m.id.to_string()) } }
                        td { (ms_to_text(m.created_at)) } td.num { (m.refs) } td.num { (m.parts) } td.num { (m.size) }
                    } } } }
            }
            @if let Some(next) = found.next { p { a #next href=(format!("/messages?{next_link}after={next}")) {
                @if found.items.is_empty() { "Search on" } @else { "Next page" }
            } } }
        },
    )
}

pub(crate) async fn message_detail(
    State(state): State<ApiState>,
    v: Viewer,
    id: Result<Path<String>, PathRejection>,
) -> Response {
    let id = match id
        .map_err(|_| OpsError::InvalidArgument("no id".into()))
        .and_then(|Path(id)| sluice_ops::parse::parse_message_id(&id))
    {
        Ok(id) => id,
        Err(e) => return error_page(&e),
    };
    let events = state
        .b
        .tracking(&sluice_msgbox::TrackingQuery::of_message(id), None, crate::MAX_LIMIT)
        .await
        .map(|p| p.items)
        .unwrap_or_default();
    let shown = messages::show(&*state.b, id).await;
    let bodies = v.0.principal.may(Permission::ReadBodies);
    let preview_of = match &shown {
        Ok(d) if bodies && !d.parts.is_empty() => Some(preview(&state, BodyOf::Message(id)).await),
        _ => None,
    };
    frame(
        &v,
        &format!("Message {id}"),
        "Messages",
        html! {
            @match &shown {
                Ok(d) => {
                    dl.facts { dt { "created" } dd { (ms_to_text(d.created_at)) } dt { "references" } dd { (d.refs) } }
                    h2 { "Context" }
                    (context_table(&d.context))
                    @match &preview_of {
                        Some(Ok((text, _))) => { h2 { "Body" } pre #body-preview { (text) } },
                        Some(Err(e)) => { p.error { (e.to_string()) } },
                        None => {},
                    }
                },
                Err(e) => { p.note { (e.to_string()) } },
            }
            h2 { "Tracking" }
            table #tracking { thead { tr { th { "at" } th { "event" } th { "where" } th { "detail" } } }
                tbody { @for e in &events { tr {
                    td { (ms_to_text(e.at)) } td { (e.event) }
                    td { (e.subscriber.clone().map(|s| format!("port {s}")).or_else(|| e.location.clone().map(|l| format!("location {l}"))).unwrap_or_default()) }
                    td { (e.detail.clone().unwrap_or_default()) }
                } } } }
        },
    )
}

/// The audit page's cursor (newest first: entries before it).
#[derive(Deserialize)]
pub(crate) struct BeforeQuery {
    before: Option<i64>,
}

pub(crate) async fn audit_list(
    State(state): State<ApiState>,
    v: Viewer,
    q: Result<Query<BeforeQuery>, QueryRejection>,
) -> Response {
    let before = q.ok().and_then(|Query(q)| q.before);
    let entries = match sluice_ops::audit::list(&*state.b, before, DEFAULT_LIMIT).await {
        Ok(e) => e,
        Err(e) => return error_page(&e),
    };
    let next = (entries.len() == DEFAULT_LIMIT)
        .then(|| entries.last().map(|e| e.id))
        .flatten();
    frame(
        &v,
        "Audit log",
        "Audit log",
        html! {
            table #audit { thead { tr { th { "at" } th { "who" } th { "from" } th { "action" } th { "on" } th { "result" } th { "detail" } } }
                tbody { @for e in &entries { tr {
                    td { (e.at) } td { (e.actor) } td { (e.source) } td { (e.action) } td { (e.target) }
                    td { @if e.result == "ok" { span.good { "ok" } } @else { span.bad { (e.result) } } }
                    td { (e.detail.clone().unwrap_or_default()) }
                } } } }
            @if let Some(next) = next { p { a href=(format!("/audit?before={next}")) { "Older" } } }
        },
    )
}

pub(crate) async fn users_list(State(state): State<ApiState>, v: Viewer) -> Response {
    if let Err(e) = v.0.principal.require(Permission::ManageUsers) {
        return error_page(&e);
    }
    let users = match access::users(&*state.b, None, crate::MAX_LIMIT).await {
        Ok(u) => u,
        Err(e) => return error_page(&e),
    };
    frame(
        &v,
        "Users",
        "Users",
        html! {
            table #users { thead { tr { th { "name" } th { "role" } th { "created" } th {} } }
                tbody { @for u in &users { tr {
                    td { (u.name) } td { (u.role) } td { (u.created_at) }
                    td { @if u.name != v.0.principal.user { button.danger data-action="delete" data-url=(format!("/api/v1/users/{}", segment(&u.name))) { "Remove" } } }
                } } } }
            p.note { "Add users with `sluice users add NAME --role ROLE` on the node's machine, or POST /api/v1/users." }
        },
    )
}
