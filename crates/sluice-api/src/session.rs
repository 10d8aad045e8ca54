//! Browser sessions: `GET /login` (the form), `POST /login` (user name and
//! password; a session cookie), `POST /logout`, and `GET /api/v1/session`
//! (who the caller is, and the CSRF token a page's changes must send).
//!
//! The cookie is `HttpOnly`, `SameSite=Strict`, `Path=/`, `Secure` under
//! TLS; the box keeps only its SHA-256. A session ends after 12 hours, or
//! 30 minutes unused, or at logout, or with its user. Logins are limited
//! per client address and per user name (429 past the limit, whatever the
//! password), and a login form posted from another origin is refused: a
//! page elsewhere cannot log a browser in as someone else.

use std::net::IpAddr;

use axum::Form;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use sluice_msgbox::Role;
use sluice_ops::access::{self, Permission};
use sluice_ops::audit::{self, Actor};
use sluice_ops::{ErrorCode, OpsError};

use crate::auth::{Caller, Peer, SESSION_COOKIE, cookie, key};
use crate::{ApiState, Problem};

/// Failed logins one user name may take in a minute, from anywhere.
pub const LOGIN_FAILURES_PER_USER: u32 = 10;

/// The login form (maud escapes every value), saying why when it comes back.
fn login_page(status: StatusCode, error: Option<&str>, name: &str) -> Response {
    use maud::{DOCTYPE, html};
    crate::portal::html_response(
        status,
        html! {
            (DOCTYPE)
            html lang="en" {
                head {
                    meta charset="utf-8";
                    meta name="viewport" content="width=device-width, initial-scale=1";
                    title { "Log in · Sluice" }
                    link rel="stylesheet" href="/static/portal.css";
                }
                body { main.login {
                    h1 { "Sluice" }
                    @if let Some(e) = error { p.error role="alert" { (e) } }
                    form method="post" action="/login" {
                        label for="username" { "User name" }
                        input #username name="username" autocomplete="username" value=(name) required;
                        label for="password" { "Password" }
                        input #password name="password" type="password" autocomplete="current-password" required;
                        button type="submit" { "Log in" }
                    }
                } }
            }
        },
    )
}

/// `GET /login`: the form.
#[utoipa::path(get, path = "/login", tag = "session",
    responses((status = 200, description = "The login form", body = String, content_type = "text/html")))]
pub(crate) async fn login_form() -> Response {
    login_page(StatusCode::OK, None, "")
}

#[derive(Deserialize, utoipa::ToSchema)]
pub(crate) struct LoginForm {
    username: String,
    password: String,
}

/// Whether a form came from our own pages: its `Origin` (sent with every
/// form a browser posts) is the scheme and host it was posted to (the
/// `Host` header, or HTTP/2's `:authority`). No `Origin`: not a browser's
/// cross-site post (a script, curl).
fn same_origin(headers: &HeaderMap, uri: &axum::http::Uri, tls: bool) -> bool {
    let Some(origin) = headers.get(header::ORIGIN).and_then(|v| v.to_str().ok()) else {
        return true;
    };
    let host = headers
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .or_else(|| uri.authority().map(|a| a.as_str()))
        .unwrap_or("");
    let ours = format!("{}://{host}", if tls { "https" } else { "http" });
    !host.is_empty() && origin.eq_ignore_ascii_case(&ours)
}

fn cookie_header(state: &ApiState, value: &str, max_age: i64) -> Result<HeaderValue, Problem> {
    let secure = if state.tls { "; Secure" } else { "" };
    HeaderValue::from_str(&format!(
        "{SESSION_COOKIE}={value}; HttpOnly; SameSite=Strict; Path=/; Max-Age={max_age}{secure}"
    ))
    .map_err(|e| Problem::new(ErrorCode::Internal, e.to_string()))
}

fn see_other(to: &'static str) -> Response {
    let mut r = StatusCode::SEE_OTHER.into_response();
    r.headers_mut().insert(header::LOCATION, HeaderValue::from_static(to));
    r
}

/// `POST /login`: a session, or the form again saying why not.
#[utoipa::path(post, path = "/login", tag = "session",
    request_body(content = LoginForm, content_type = "application/x-www-form-urlencoded"),
    responses((status = 303, description = "Logged in: the session cookie is set; on to /"),
        (status = 400, description = "The form does not parse", body = String, content_type = "text/html"),
        (status = 401, description = "Wrong user name or password", body = String, content_type = "text/html"),
        (status = 403, description = "Posted from another origin", body = String, content_type = "text/html"),
        (status = 429, description = "Too many failed logins for this user or from this address", body = String, content_type = "text/html"),
        (status = 500, description = "A bug", body = crate::openapi::ErrorBody),
        (status = 503, description = "The box does not answer", body = crate::openapi::ErrorBody)))]
pub(crate) async fn login(
    State(state): State<ApiState>,
    axum::Extension(Peer(peer)): axum::Extension<Peer>,
    uri: axum::http::Uri,
    headers: HeaderMap,
    form: Result<Form<LoginForm>, axum::extract::rejection::FormRejection>,
) -> Result<Response, Problem> {
    if !same_origin(&headers, &uri, state.tls) {
        return Ok(login_page(
            StatusCode::FORBIDDEN,
            Some("This form was posted from another site."),
            "",
        ));
    }
    let Ok(Form(form)) = form else {
        return Ok(login_page(
            StatusCode::BAD_REQUEST,
            Some("Give a user name and a password."),
            "",
        ));
    };
    let name = form.username.trim().to_string();
    let ip: IpAddr = key(peer.ip());
    let user_key = name.chars().take(access::NAME_MAX + 1).collect::<String>();
    let wait = state
        .failures
        .blocked(&ip)
        .or_else(|| state.user_failures.blocked(&user_key));
    if let Some(wait) = wait {
        let mut r = login_page(
            StatusCode::TOO_MANY_REQUESTS,
            Some("Too many failed logins; wait a minute and try again."),
            &name,
        );
        if let Ok(v) = HeaderValue::from_str(&(wait.as_secs() + 1).to_string()) {
            r.headers_mut().insert(header::RETRY_AFTER, v);
        }
        return Ok(r);
    }
    // Counted as failed before the password is checked (and forgiven if
    // it is right), so attempts sent all at once are limited as those sent
    // one after another: none waits for another's verdict to be counted.
    state.failures.failed(ip);
    state.user_failures.failed(user_key.clone());
    let actor = Actor {
        name: if access::check_name(&name).is_ok() {
            name.clone()
        } else {
            "-".into()
        },
        source: peer.ip().to_string(),
    };
    let now = state.clock.now_ms();
    let outcome = access::log_in(&*state.b, &name, &form.password).await;
    audit::record(
        &*state.b,
        &actor,
        "login",
        &format!("user {}", actor.name),
        &outcome,
        None,
        now,
    )
    .await?;
    let who = match outcome {
        Ok(who) => {
            state.failures.forgive(&ip);
            state.user_failures.forgive(&user_key);
            who
        }
        Err(e) if e.error_code() == ErrorCode::Unauthenticated => {
            return Ok(login_page(
                StatusCode::UNAUTHORIZED,
                Some("Wrong user name or password."),
                &name,
            ));
        }
        Err(e) => return Err(e.into()),
    };
    let started = access::start_session(&*state.b, &who, now).await?;
    let mut r = see_other("/");
    r.headers_mut().insert(
        header::SET_COOKIE,
        cookie_header(&state, &started.id, access::SESSION_TTL / 1000)?,
    );
    Ok(r)
}

/// The form of `POST /logout` (the CSRF token as a field).
#[derive(Deserialize, utoipa::ToSchema)]
pub(crate) struct LogoutForm {
    csrf: String,
}

/// `POST /logout`: the session ends; the cookie is cleared.
#[utoipa::path(post, path = "/logout", tag = "session",
    request_body(content = LogoutForm, content_type = "application/x-www-form-urlencoded"),
    responses((status = 303, description = "Logged out (or no session); on to /login"),
        (status = 400, description = "No form with the CSRF token", body = crate::openapi::ErrorBody),
        (status = 403, description = "The wrong CSRF token", body = crate::openapi::ErrorBody),
        (status = 500, description = "A bug", body = crate::openapi::ErrorBody),
        (status = 503, description = "The box does not answer", body = crate::openapi::ErrorBody)))]
pub(crate) async fn logout(
    State(state): State<ApiState>,
    axum::Extension(Peer(peer)): axum::Extension<Peer>,
    headers: HeaderMap,
    form: Result<Form<LogoutForm>, axum::extract::rejection::FormRejection>,
) -> Result<Response, Problem> {
    let Ok(Form(form)) = form else {
        return Err(Problem::invalid(
            "logging out takes the session's CSRF token as the form field `csrf`",
        ));
    };
    // No session (or one that has ended): nothing to end; the cookie is
    // cleared all the same. A box that does not answer is an error, not a
    // logout that did not happen.
    let cleared = || -> Result<Response, Problem> {
        let mut r = see_other("/login");
        r.headers_mut()
            .insert(header::SET_COOKIE, cookie_header(&state, "", 0)?);
        Ok(r)
    };
    let Some(id) = cookie(&headers, SESSION_COOKIE).map(str::to_string) else {
        return cleared();
    };
    let now = state.clock.now_ms();
    let session = match access::resume_session(&*state.b, &id, now).await {
        Ok(s) => s,
        Err(e) if e.error_code() == ErrorCode::Unauthenticated => return cleared(),
        Err(e) => return Err(e.into()),
    };
    if !access::same_secret(&form.csrf, &session.csrf) {
        return Err(Problem::from(OpsError::Forbidden(
            "logging out needs the session's CSRF token".into(),
        )));
    }
    access::end_session(&*state.b, &id).await?;
    let actor = Actor {
        name: session.principal.user.clone(),
        source: peer.ip().to_string(),
    };
    let target = format!("user {}", actor.name);
    audit::record(&*state.b, &actor, "logout", &target, &Ok::<(), OpsError>(()), None, now).await?;
    cleared()
}

/// Who the caller is.
#[derive(Serialize, utoipa::ToSchema)]
pub(crate) struct Whoami {
    user: String,
    role: Role,
    /// The session's CSRF token, for a browser session: send it as
    /// `X-CSRF-Token` with every change.
    #[serde(skip_serializing_if = "Option::is_none")]
    csrf: Option<String>,
    /// Whether the role may read bodies, and change things.
    may_read_bodies: bool,
    may_operate: bool,
    may_manage_users: bool,
}

#[utoipa::path(get, path = "/api/v1/session", tag = "session", security(("token" = [])),
    responses((status = 200, description = "Who the caller is", body = Whoami), crate::openapi::Errors))]
pub(crate) async fn whoami(caller: Caller) -> Result<Response, Problem> {
    caller.require(Permission::Read)?;
    let p = &caller.principal;
    Ok(axum::Json(Whoami {
        user: p.user.clone(),
        role: p.role,
        may_read_bodies: p.may(Permission::ReadBodies),
        may_operate: p.may(Permission::Operate),
        may_manage_users: p.may(Permission::ManageUsers),
        csrf: caller.csrf.clone(),
    })
    .into_response())
}
